package client

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/internal/natstest"
	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
)

func statusAt(id string, rs messages.RuntimeStatus, episode uint64) *messages.Status {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return &messages.Status{InstanceID: id, Name: "Orch", ExecutionID: "run", RuntimeStatus: rs,
		CreatedAt: t0, LastUpdatedAt: t0, Episode: episode}
}

// held reports the revision of the record the cache holds for id, if any.
func (c *statusCache) held(id string) (uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[messages.Token(id)]
	if !ok {
		return 0, false
	}
	return el.Value.(*cached).u.Revision, true
}

// TestStatusCacheFollowsTheBucket: a record read once is then served from
// memory and follows every later write through the watch, without being
// read again (its maximum age is far away); a purge removes it.
func TestStatusCacheFollowsTheBucket(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.Connect(t, natstest.Start(t))
	if err := jetstore.Provision(ctx, js, jetstore.Config{Memory: true}); err != nil {
		t.Fatal(err)
	}
	store, err := jetstore.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c, err := New(cctx, js.Conn(), js, WithStatusCache(10, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	rev, err := store.CreateStatus(ctx, statusAt("cached", messages.StatusPending, 0), 0)
	if err != nil {
		t.Fatal(err)
	}
	if u, err := c.StatusRevision(ctx, "cached"); err != nil || u.Revision != rev {
		t.Fatalf("first read: %+v, %v; want revision %d", u, err, rev)
	}
	if r, ok := c.cache.held("cached"); !ok || r != rev {
		t.Fatalf("after the first read the cache holds revision %d (%v), want %d", r, ok, rev)
	}
	for ep := uint64(1); ep <= 5; ep++ {
		if rev, err = store.PutStatus(ctx, statusAt("cached", messages.StatusRunning, ep), rev); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			u, err := c.StatusRevision(ctx, "cached")
			if err != nil {
				t.Fatal(err)
			}
			if u.Revision == rev && u.Status.Episode == ep {
				break
			}
			if u.Revision > rev || time.Now().After(deadline) {
				t.Fatalf("episode %d: served revision %d (episode %d), want %d", ep, u.Revision, u.Status.Episode, rev)
			}
			time.Sleep(time.Millisecond)
		}
		if r, ok := c.cache.held("cached"); !ok || r != rev {
			t.Fatalf("episode %d: the cache holds revision %d (%v), want %d from the watch", ep, r, ok, rev)
		}
	}
	if err := store.DeleteStatus(ctx, "cached"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := c.StatusRevision(ctx, "cached")
		if errors.Is(err, ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the purge: %v, want ErrNotFound", err)
		}
		time.Sleep(time.Millisecond)
	}

	// When its context ends the cache stops serving.
	cancel()
	deadline = time.Now().Add(5 * time.Second)
	for {
		if _, ok, _ := c.cache.get(messages.Token("cached")); !ok && !c.cache.isAlive() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the cache still serves after its context ended")
		}
		time.Sleep(time.Millisecond)
	}
}

func (c *statusCache) isAlive() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.alive
}

// TestStatusCacheKeepsNoStaleRead: a record read from the bucket is not
// kept if a later revision of it went by on the watch while it was being
// read, nor if the skipped updates remembered no longer reach back to when
// the read began; a record past its maximum age is read again.
func TestStatusCacheKeepsNoStaleRead(t *testing.T) {
	c := newStatusCache(10, time.Minute)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c.now = func() time.Time { return now }
	c.alive = true
	enc := func(ep uint64) []byte {
		st := statusAt("k", messages.StatusRunning, ep)
		st.V = messages.SchemaVersion
		b, err := messages.Encode(st)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	read := func(rev uint64) Update {
		return Update{Status: statusAt("k", messages.StatusRunning, rev), Revision: rev}
	}

	// The read of revision 5 began; revision 7 went by meanwhile.
	c.update("other", 3, jetstream.KeyValuePut, enc(1))
	_, ok, since := c.get("k")
	if ok || since != 3 {
		t.Fatalf("get of a record not held: ok %v, since %d; want a miss since 3", ok, since)
	}
	c.update("k", 7, jetstream.KeyValuePut, enc(7))
	c.put("k", since, read(5))
	if r, ok := c.held("k"); ok {
		t.Fatalf("kept revision %d read while revision 7 went by", r)
	}
	// A read that returns the latest revision is kept.
	_, _, since = c.get("k")
	c.put("k", since, read(7))
	if r, ok := c.held("k"); !ok || r != 7 {
		t.Fatalf("holds %d (%v), want 7", r, ok)
	}
	// A held record follows the watch, and is dropped by a delete.
	c.update("k", 9, jetstream.KeyValuePut, enc(9))
	if u, ok, _ := c.get("k"); !ok || u.Revision != 9 || u.Status.Episode != 9 {
		t.Fatalf("after an update: %+v %v, want revision 9", u, ok)
	}
	c.update("k", 10, jetstream.KeyValueDelete, nil)
	if _, ok := c.held("k"); ok {
		t.Fatal("still held after a delete")
	}

	// More skipped updates than the ring remembers since the read began:
	// not kept, even though none of those seen was of this record.
	_, _, since = c.get("k")
	for i := uint64(0); i <= ringSize; i++ {
		c.update("other", 11+i, jetstream.KeyValuePut, enc(1))
	}
	c.put("k", since, read(10))
	if _, ok := c.held("k"); ok {
		t.Fatal("kept a read whose window the ring no longer covers")
	}

	// Past its maximum age a record is read again.
	_, _, since = c.get("k")
	c.put("k", since, read(12))
	if _, ok, _ := c.get("k"); !ok {
		t.Fatal("a fresh record is not served")
	}
	now = now.Add(time.Minute)
	if _, ok, _ := c.get("k"); ok {
		t.Fatal("a record past its maximum age is served")
	}
}
