package client

import (
	"container/list"
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/pkg/messages"
)

// statusCache keeps the status records a client read recently, kept
// fresh by one watch of the whole status bucket, so that a record read
// again is served from memory instead of the bucket.
//
// A record read from the bucket at revision r may only be kept if no
// later revision of it has gone by on the watch, which skips records it
// does not hold. So every update the watch skips is remembered in a ring
// for a while: a record read at r is kept only if the ring covers every
// update since the read began and none of them is a later revision of
// that record. A record not refreshed for maxAge is read again, which
// bounds how stale a stalled watch could make it.
type statusCache struct {
	max    int
	maxAge time.Duration
	now    func() time.Time

	mu    sync.Mutex
	alive bool // the watch runs
	ll    *list.List
	items map[string]*list.Element
	seen  uint64 // the last stream sequence the watch delivered
	// ring holds the last updates of records not held: n of them, the
	// oldest at head. lost is the last sequence that fell out of it.
	ring    [ringSize]keyed
	head, n int
	lost    uint64
}

// cached is a record held, as of revision rev.
type cached struct {
	key string
	u   Update
	at  time.Time // when it was read or last updated
}

// keyed is an update of a record not held.
type keyed struct {
	key string
	rev uint64
}

// ringSize bounds the skipped updates remembered: a read that takes
// longer than this many updates to come back is not kept.
const ringSize = 4096

func newStatusCache(max int, maxAge time.Duration) *statusCache {
	return &statusCache{max: max, maxAge: maxAge, now: time.Now, ll: list.New(), items: map[string]*list.Element{}}
}

// run starts the watch; the cache serves nothing until it runs, and
// nothing after it ends (with ctx, or if the watch fails).
func (c *statusCache) run(ctx context.Context, kv jetstream.KeyValue) error {
	w, err := kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.alive = true
	c.mu.Unlock()
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				c.stop()
				return
			case e, ok := <-w.Updates():
				if !ok {
					c.stop()
					return
				}
				if e != nil {
					c.update(e.Key(), e.Revision(), e.Operation(), e.Value())
				}
			}
		}
	}()
	return nil
}

func (c *statusCache) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.alive = false
	c.ll.Init()
	clear(c.items)
	c.head, c.n = 0, 0
}

// update applies one update from the watch.
func (c *statusCache) update(key string, rev uint64, op jetstream.KeyValueOp, value []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rev > c.seen {
		c.seen = rev
	}
	el, held := c.items[key]
	if !held {
		if c.n == ringSize {
			c.lost = c.ring[c.head].rev
			c.ring[c.head] = keyed{key, rev}
			c.head = (c.head + 1) % ringSize
		} else {
			c.ring[(c.head+c.n)%ringSize] = keyed{key, rev}
			c.n++
		}
		return
	}
	ent := el.Value.(*cached)
	if rev <= ent.u.Revision {
		return
	}
	st, err := messages.DecodeStatus(value)
	if op != jetstream.KeyValuePut || err != nil {
		c.ll.Remove(el)
		delete(c.items, key)
		return
	}
	ent.u, ent.at = Update{Status: st, Revision: rev}, c.now()
}

// get returns the record held for key, if fresh, and the sequence to pass
// to put after reading it from the bucket otherwise.
func (c *statusCache) get(key string) (Update, bool, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.alive {
		return Update{}, false, 0
	}
	if el, ok := c.items[key]; ok {
		ent := el.Value.(*cached)
		if c.now().Sub(ent.at) < c.maxAge {
			c.ll.MoveToFront(el)
			st := *ent.u.Status // callers may change their copy
			return Update{Status: &st, Revision: ent.u.Revision}, true, 0
		}
		c.ll.Remove(el)
		delete(c.items, key)
	}
	return Update{}, false, c.seen
}

// put keeps u, read from the bucket for key after get returned since,
// unless the watch may have skipped a later revision meanwhile.
func (c *statusCache) put(key string, since uint64, u Update) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.alive || c.lost > since {
		return
	}
	for i := c.n - 1; i >= 0; i-- {
		k := c.ring[(c.head+i)%ringSize]
		if k.rev <= since {
			break
		}
		if k.key == key && k.rev > u.Revision {
			return
		}
	}
	if el, ok := c.items[key]; ok {
		if ent := el.Value.(*cached); ent.u.Revision >= u.Revision {
			return
		}
		c.ll.Remove(el)
	}
	st := *u.Status
	c.items[key] = c.ll.PushFront(&cached{key: key, u: Update{Status: &st, Revision: u.Revision}, at: c.now()})
	for c.ll.Len() > c.max {
		el := c.ll.Back()
		c.ll.Remove(el)
		delete(c.items, el.Value.(*cached).key)
	}
}

// forget drops the record of key, which this client has just changed
// through a command, so that the client reads its own writes.
func (c *statusCache) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.ll.Remove(el)
		delete(c.items, key)
	}
}

// forgetAll drops every record held.
func (c *statusCache) forgetAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ll.Init()
	clear(c.items)
}
