package jetstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
)

var t0 = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// record returns a status record of instance id.
func record(id string, rs messages.RuntimeStatus, created time.Time, custom string) *messages.Status {
	st := &messages.Status{InstanceID: id, Name: "Orch", ExecutionID: "run-" + id, RuntimeStatus: rs,
		CreatedAt: created, LastUpdatedAt: created, Episode: 1}
	if custom != "" {
		st.CustomStatus = []byte(custom)
	}
	return st
}

// create stores a record as the dispatcher and a worker would: a Pending
// record, then the worker's record in its status.
func create(t testing.TB, s *jetstore.Store, st *messages.Status) uint64 {
	t.Helper()
	ctx := context.Background()
	pending := *st
	pending.RuntimeStatus, pending.Episode, pending.CustomStatus = messages.StatusPending, 0, nil
	rev, err := s.CreateStatus(ctx, &pending, 0)
	if err != nil {
		t.Fatalf("create %s: %v", st.InstanceID, err)
	}
	if st.RuntimeStatus == messages.StatusPending {
		return rev
	}
	if rev, err = s.PutStatus(ctx, st, rev); err != nil {
		t.Fatalf("put %s: %v", st.InstanceID, err)
	}
	return rev
}

// listAll pages through List and returns the IDs in order, failing on a
// repeated ID, and the number of pages.
func listAll(t testing.TB, s *jetstore.Store, f jetstore.ListFilter, pageSize int) ([]string, int) {
	t.Helper()
	var (
		ids   []string
		pages int
		token string
		seen  = map[string]bool{}
	)
	for {
		page, next, err := s.List(context.Background(), f, pageSize, token)
		if err != nil {
			t.Fatalf("list page %d: %v", pages+1, err)
		}
		pages++
		if len(page) > pageSize {
			t.Fatalf("page %d holds %d records, over the page size %d", pages, len(page), pageSize)
		}
		if next != "" && len(page) < pageSize {
			t.Errorf("page %d holds %d records and has a next page", pages, len(page))
		}
		for _, st := range page {
			if seen[st.InstanceID] {
				t.Errorf("%s listed twice", st.InstanceID)
			}
			seen[st.InstanceID] = true
			ids = append(ids, st.InstanceID)
		}
		if next == "" {
			return ids, pages
		}
		if pages > 1000 {
			t.Fatal("more than 1000 pages")
		}
		token = next
	}
}

func sorted(ids []string) []string {
	ids = slices.Clone(ids)
	sort.Strings(ids)
	return ids
}

var allStatuses = []messages.RuntimeStatus{messages.StatusPending, messages.StatusRunning, messages.StatusCompleted,
	messages.StatusContinuedAsNew, messages.StatusFailed, messages.StatusTerminated, messages.StatusSuspended}

// keyIn is the status whose index bucket holds the keys of status rs:
// Running instances are kept with the Pending ones.
func keyIn(rs messages.RuntimeStatus) string {
	if rs == messages.StatusRunning {
		return messages.StatusPending.String()
	}
	return rs.String()
}

// waitForMarkers waits until the purge markers in the index streams have
// expired (their time to live is one second), so that a listing sees
// only keys.
func waitForMarkers(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		markers := 0
		for _, rs := range allStatuses {
			kv, err := js.KeyValue(context.Background(), jetstore.IndexBucket(rs))
			if err != nil {
				t.Fatal(err)
			}
			st, err := kv.Status(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			keys, err := kv.ListKeys(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for range keys.Keys() {
				n++
			}
			markers += int(st.Values()) - n
		}
		if markers == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d index markers still there after 10 s", markers)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// indexKeys returns the keys of the index buckets, as <status>.<key>, and
// fails the test if an index stream holds anything but one message per
// subject: a key, or the purge marker of a key removed (which expires).
// An old version or a plain delete marker fails it.
func indexKeys(t testing.TB, js jetstream.JetStream) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	for _, rs := range allStatuses {
		kv, err := js.KeyValue(ctx, jetstore.IndexBucket(rs))
		if err != nil {
			t.Fatal(err)
		}
		w, err := kv.WatchAll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var keys, markers int
	read:
		for e := range w.Updates() {
			switch {
			case e == nil:
				break read
			case e.Operation() == jetstream.KeyValuePut:
				out = append(out, rs.String()+"."+e.Key())
				keys++
			case e.Operation() == jetstream.KeyValuePurge:
				markers++
			default:
				t.Errorf("index of %s: key %s is %s", rs, e.Key(), e.Operation())
			}
		}
		_ = w.Stop()
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Values() != uint64(keys+markers) {
			t.Errorf("index of %s holds %d messages for %d keys and %d markers", rs, st.Values(), keys, markers)
		}
	}
	sort.Strings(out)
	return out
}

// TestListPages: 75 of 250 instances are Running. Listed 30 at a time they
// come in three pages, each once; with no filter, all 250 in three pages of
// 100. A page that ends exactly at the last match is the last page.
func TestListPages(t *testing.T) {
	s, js := open(t)
	var running, all []string
	for i := range 250 {
		id := fmt.Sprintf("inst-%03d", i)
		rs := messages.StatusCompleted
		if i%10 < 3 {
			rs = messages.StatusRunning
			running = append(running, id)
		}
		create(t, s, record(id, rs, t0.Add(time.Duration(i)*time.Second), ""))
		all = append(all, id)
	}
	waitForMarkers(t, js)
	onlyRunning := jetstore.ListFilter{Statuses: []messages.RuntimeStatus{messages.StatusRunning}}
	ids, pages := listAll(t, s, onlyRunning, 30)
	if pages != 3 || !slices.Equal(sorted(ids), running) {
		t.Errorf("Running: %d pages, %d instances; want 3 pages, %d instances", pages, len(ids), len(running))
	}
	ids, pages = listAll(t, s, jetstore.ListFilter{}, 100)
	if pages != 3 || !slices.Equal(sorted(ids), all) {
		t.Errorf("all: %d pages, %d instances; want 3 pages, %d instances", pages, len(ids), len(all))
	}
	ids, pages = listAll(t, s, onlyRunning, 25)
	if pages != 3 || len(ids) != 75 {
		t.Errorf("Running by 25: %d pages, %d instances; want 3 pages, 75", pages, len(ids))
	}
	// A page that ends with the last Running instance, the later statuses
	// being empty, is the last page.
	runningOrFailed := jetstore.ListFilter{Statuses: []messages.RuntimeStatus{messages.StatusFailed, messages.StatusRunning}}
	for size, wantPages := range map[int]int{25: 3, 75: 1, 74: 2} {
		if ids, pages = listAll(t, s, runningOrFailed, size); pages != wantPages || len(ids) != 75 {
			t.Errorf("Running or Failed by %d: %d pages, %d instances; want %d pages, 75", size, pages, len(ids), wantPages)
		}
	}
	both := jetstore.ListFilter{Statuses: []messages.RuntimeStatus{messages.StatusRunning, messages.StatusCompleted, messages.StatusRunning}}
	if ids, _ = listAll(t, s, both, 100); !slices.Equal(sorted(ids), all) {
		t.Errorf("Running or Completed: %d instances, want %d", len(ids), len(all))
	}
	if ids, pages = listAll(t, s, jetstore.ListFilter{Statuses: []messages.RuntimeStatus{messages.StatusFailed}}, 10); len(ids) != 0 || pages != 1 {
		t.Errorf("Failed: %d instances in %d pages, want none in 1", len(ids), pages)
	}
	if _, _, err := s.List(context.Background(), onlyRunning, 10, "garbage"); !errors.Is(err, jetstore.ErrBadToken) {
		t.Errorf("bad token: %v, want ErrBadToken", err)
	}
	if _, _, err := s.List(context.Background(), jetstore.ListFilter{Statuses: []messages.RuntimeStatus{99}}, 10, ""); err == nil {
		t.Error("invalid status accepted")
	}
}

// TestListFollowsStatusChanges moves an instance through its statuses: it
// is listed under its current status only, and the index holds exactly one
// key for it. An index key whose record says otherwise (a crash between
// the index and the record) is skipped.
func TestListFollowsStatusChanges(t *testing.T) {
	s, js := open(t)
	ctx := context.Background()
	in := func(rs messages.RuntimeStatus) []string {
		t.Helper()
		ids, _ := listAll(t, s, jetstore.ListFilter{Statuses: []messages.RuntimeStatus{rs}}, 10)
		return ids
	}
	check := func(id string, want messages.RuntimeStatus) {
		t.Helper()
		for rs := messages.StatusPending; rs <= messages.StatusSuspended; rs++ {
			got := slices.Contains(in(rs), id)
			if got != (rs == want) {
				t.Errorf("%s listed under %s: %v, want %v", id, rs, got, rs == want)
			}
		}
		if keys := indexKeys(t, js); !slices.Equal(keys, []string{keyIn(want) + ".moving"}) {
			t.Errorf("index keys %v, want only %s.moving", keys, keyIn(want))
		}
	}
	st := record("moving", messages.StatusPending, t0, "")
	rev, err := s.CreateStatus(ctx, st, 0)
	if err != nil {
		t.Fatal(err)
	}
	check("moving", messages.StatusPending)
	for _, rs := range []messages.RuntimeStatus{messages.StatusRunning, messages.StatusRunning, messages.StatusSuspended,
		messages.StatusRunning, messages.StatusCompleted} {
		st.RuntimeStatus = rs
		st.Episode++
		if rev, err = s.PutStatus(ctx, st, rev); err != nil {
			t.Fatal(err)
		}
		check("moving", rs)
	}
	// Another Store, which knows nothing of this record's revisions.
	other, err := jetstore.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	st.RuntimeStatus = messages.StatusFailed
	st.Episode++
	if _, err := other.PutStatus(ctx, st, 0); err != nil {
		t.Fatal(err)
	}
	check("moving", messages.StatusFailed)
	// A new run of the same ID, over the finished one.
	cur, crev, err := other.GetStatus(ctx, "moving")
	if err != nil || cur.RuntimeStatus != messages.StatusFailed {
		t.Fatalf("%+v %v", cur, err)
	}
	next := record("moving", messages.StatusPending, t0.Add(time.Hour), "")
	next.ExecutionID = "run-2"
	if _, err := s.CreateStatus(ctx, next, crev); err != nil {
		t.Fatal(err)
	}
	check("moving", messages.StatusPending)

	// A stale key: the index says Running, the record does not.
	kv, err := js.KeyValue(ctx, jetstore.IndexBucket(messages.StatusRunning))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "moving", []byte{0x80}); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "ghost", []byte{0x80}); err != nil { // no record at all
		t.Fatal(err)
	}
	if ids := in(messages.StatusRunning); len(ids) != 0 {
		t.Errorf("stale index keys listed: %v", ids)
	}
	if ids, _ := listAll(t, s, jetstore.ListFilter{}, 10); !slices.Equal(ids, []string{"moving"}) {
		t.Errorf("all: %v, want [moving]", ids)
	}
	// DeleteStatus removes the record and its key.
	if err := s.DeleteStatus(ctx, "moving"); err != nil {
		t.Fatal(err)
	}
	if ids := in(messages.StatusPending); len(ids) != 0 {
		t.Errorf("deleted instance listed: %v", ids)
	}
}

// TestListCreatedTimeAndPrefix filters by creation time (both bounds
// inclusive) and by ID prefix, also for IDs with escaped characters.
func TestListCreatedTimeAndPrefix(t *testing.T) {
	s, _ := open(t)
	ids := []string{"order-1", "order-2", "order-10", "orders", "ord:er", "ord:ex", "other", "Order-3"}
	for i, id := range ids {
		rs := messages.StatusRunning
		if i%2 == 1 {
			rs = messages.StatusCompleted
		}
		create(t, s, record(id, rs, t0.Add(time.Duration(i)*time.Minute), ""))
	}
	for _, c := range []struct {
		what string
		f    jetstore.ListFilter
		want []string
	}{
		{"prefix order-", jetstore.ListFilter{IDPrefix: "order-"}, []string{"order-1", "order-10", "order-2"}},
		{"prefix order", jetstore.ListFilter{IDPrefix: "order"}, []string{"order-1", "order-10", "order-2", "orders"}},
		{"prefix ord:", jetstore.ListFilter{IDPrefix: "ord:"}, []string{"ord:er", "ord:ex"}},
		{"prefix ord:e, Running", jetstore.ListFilter{IDPrefix: "ord:e", Statuses: []messages.RuntimeStatus{messages.StatusRunning}}, []string{"ord:er"}},
		{"prefix nothing", jetstore.ListFilter{IDPrefix: "zzz"}, nil},
		{"from minute 2", jetstore.ListFilter{CreatedFrom: t0.Add(2 * time.Minute)},
			[]string{"Order-3", "ord:er", "ord:ex", "order-10", "orders", "other"}},
		{"to minute 2", jetstore.ListFilter{CreatedTo: t0.Add(2 * time.Minute)}, []string{"order-1", "order-10", "order-2"}},
		{"minutes 2 to 4", jetstore.ListFilter{CreatedFrom: t0.Add(2 * time.Minute), CreatedTo: t0.Add(4 * time.Minute)},
			[]string{"ord:er", "order-10", "orders"}},
		{"minutes 2 to 4, Completed", jetstore.ListFilter{CreatedFrom: t0.Add(2 * time.Minute), CreatedTo: t0.Add(4 * time.Minute),
			Statuses: []messages.RuntimeStatus{messages.StatusCompleted}}, []string{"orders"}},
		{"minutes 2 to 4, prefix order", jetstore.ListFilter{CreatedFrom: t0.Add(2 * time.Minute), CreatedTo: t0.Add(4 * time.Minute),
			IDPrefix: "order"}, []string{"order-10", "orders"}},
		{"to before everything", jetstore.ListFilter{CreatedTo: t0.Add(-time.Second)}, nil},
	} {
		for _, size := range []int{1, 2, 100} {
			got, _ := listAll(t, s, c.f, size)
			if !slices.Equal(sorted(got), c.want) {
				t.Errorf("%s, pages of %d: %v, want %v", c.what, size, sorted(got), c.want)
			}
		}
	}
}

// TestListCustomStatus keeps instances whose custom status contains the
// filter's JSON.
func TestListCustomStatus(t *testing.T) {
	s, _ := open(t)
	for id, cs := range map[string]string{
		"a": `{"stage": "ship", "tags": ["red", "big"], "n": 1}`,
		"b": `{"stage": "ship", "tags": ["blue"], "n": 1.0}`,
		"c": `{"stage": "pack", "nested": {"x": 1, "y": 2}}`,
		"d": `"ship"`,
		"e": `["ship", "pack"]`,
		"f": "",
	} {
		create(t, s, record(id, messages.StatusRunning, t0, cs))
	}
	for _, c := range []struct {
		needle string
		want   []string
	}{
		{`{"stage": "ship"}`, []string{"a", "b"}},
		{`{"tags": ["red"]}`, []string{"a"}},
		{`{"n": 1}`, []string{"a", "b"}},
		{`{"nested": {"y": 2}}`, []string{"c"}},
		{`{}`, []string{"a", "b", "c"}},
		{`"ship"`, []string{"d", "e"}},
		{`["pack"]`, []string{"e"}},
		{`{"stage": "gone"}`, nil},
	} {
		got, _ := listAll(t, s, jetstore.ListFilter{CustomStatus: []byte(c.needle), Statuses: []messages.RuntimeStatus{messages.StatusRunning}}, 2)
		if !slices.Equal(sorted(got), c.want) {
			t.Errorf("custom status %s: %v, want %v", c.needle, sorted(got), c.want)
		}
	}
}

// TestPurgeInstances purges finished instances by filter: their history,
// status and index keys go; running instances and other instances stay.
func TestPurgeInstances(t *testing.T) {
	s, js := open(t)
	ctx := context.Background()
	statuses := []messages.RuntimeStatus{messages.StatusCompleted, messages.StatusFailed, messages.StatusTerminated, messages.StatusRunning}
	for i := range 40 {
		id := fmt.Sprintf("p-%02d", i)
		rs := statuses[i%4]
		created := t0
		if i >= 20 {
			created = t0.Add(time.Hour)
		}
		create(t, s, record(id, rs, created, ""))
		if err := s.AppendEpisode(ctx, id, "run-"+id, 1, episode(1, nil)); err != nil {
			t.Fatal(err)
		}
	}
	// Not finished: refused.
	if err := s.PurgeInstance(ctx, "p-03"); !errors.Is(err, jetstore.ErrNotFinished) {
		t.Errorf("purge of a Running instance: %v, want ErrNotFinished", err)
	}
	if err := s.PurgeInstance(ctx, "nobody"); !errors.Is(err, jetstore.ErrNotFound) {
		t.Errorf("purge of nothing: %v, want ErrNotFound", err)
	}
	// Asking for Running purges nothing.
	if n, err := s.PurgeInstances(ctx, jetstore.ListFilter{Statuses: []messages.RuntimeStatus{messages.StatusRunning}}); err != nil || n != 0 {
		t.Errorf("purge Running: %d, %v; want 0", n, err)
	}
	// The finished ones created in the first hour.
	n, err := s.PurgeInstances(ctx, jetstore.ListFilter{CreatedTo: t0.Add(time.Minute)})
	if err != nil || n != 15 {
		t.Fatalf("purged %d, %v; want 15", n, err)
	}
	for i := range 40 {
		id := fmt.Sprintf("p-%02d", i)
		gone := i < 20 && i%4 != 3
		_, _, err := s.GetStatus(ctx, id)
		if errors.Is(err, jetstore.ErrNotFound) != gone {
			t.Errorf("%s: status %v, gone %v", id, err, gone)
		}
		if _, eps, _ := s.LoadHistory(ctx, id, "run-"+id); (eps == 0) != gone {
			t.Errorf("%s: %d episodes, gone %v", id, eps, gone)
		}
	}
	if keys := indexKeys(t, js); len(keys) != 25 {
		t.Errorf("%d index keys left, want 25: %v", len(keys), keys)
	}
	// Then every finished one.
	if n, err := s.PurgeInstances(ctx, jetstore.ListFilter{}); err != nil || n != 15 {
		t.Errorf("purged %d, %v; want 15", n, err)
	}
	ids, _ := listAll(t, s, jetstore.ListFilter{}, 100)
	if len(ids) != 10 {
		t.Errorf("%d instances left, want the 10 Running", len(ids))
	}
}

// TestPurgeInstanceKeepsNewRun: a purge that finds the record changed
// since it checked (the instance was started again) leaves the new record
// and its history alone.
func TestPurgeInstanceKeepsNewRun(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	rev := create(t, s, record("again", messages.StatusCompleted, t0, ""))
	// Another Store starts a new run over the finished one; this Store's
	// purge reads the record after that, so it sees the new run.
	next := record("again", messages.StatusPending, t0.Add(time.Hour), "")
	next.ExecutionID = "run-2"
	if _, err := s.CreateStatus(ctx, next, rev); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendEpisode(ctx, "again", "run-2", 1, episode(1, nil)); err != nil {
		t.Fatal(err)
	}
	if err := s.PurgeInstance(ctx, "again"); !errors.Is(err, jetstore.ErrNotFinished) {
		t.Errorf("purge of a restarted instance: %v, want ErrNotFinished", err)
	}
	if _, n, _ := s.LoadHistory(ctx, "again", "run-2"); n != 1 {
		t.Errorf("new run has %d episodes, want 1", n)
	}
}

// TestProvisionBuildsIndex: provisioning next to status records written
// before the index existed indexes them.
func TestProvisionBuildsIndex(t *testing.T) {
	s, js := open(t)
	ctx := context.Background()
	for i := range 30 {
		rs := messages.StatusRunning
		if i%3 == 0 {
			rs = messages.StatusCompleted
		}
		create(t, s, record(fmt.Sprintf("old-%02d", i), rs, t0, ""))
	}
	for _, rs := range allStatuses {
		if err := js.DeleteKeyValue(ctx, jetstore.IndexBucket(rs)); err != nil {
			t.Fatal(err)
		}
	}
	if err := jetstore.Provision(ctx, js, testConfig); err != nil {
		t.Fatal(err)
	}
	s, err := jetstore.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := listAll(t, s, jetstore.ListFilter{Statuses: []messages.RuntimeStatus{messages.StatusRunning}}, 7)
	if len(ids) != 20 {
		t.Errorf("%d Running after reindexing, want 20", len(ids))
	}
	if keys := indexKeys(t, js); len(keys) != 30 {
		t.Errorf("%d index keys, want 30", len(keys))
	}
}

// TestHintedWritesKeepTheIndex: a status write told of the record it
// replaces (SawStatus, as a worker is by the start message) moves the
// instance's index key without reading the record or the old key, and
// leaves exactly one key, in the right bucket, through every transition.
// A hint that is stale costs a read and changes nothing else.
func TestHintedWritesKeepTheIndex(t *testing.T) {
	ctx := context.Background()
	disp, js := open(t)
	// The worker's Store is another one: it knows only what it is told.
	worker, err := jetstore.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	st := record("hinted", messages.StatusPending, t0, "")
	rev, err := disp.CreateStatus(ctx, st, 0)
	if err != nil {
		t.Fatal(err)
	}
	h := disp.Hint("hinted", rev)
	if h.Rev != rev || h.Status != messages.StatusPending || h.IndexRev == 0 {
		t.Fatalf("hint after CreateStatus: %+v, want revision %d, Pending and the index key's revision", h, rev)
	}
	worker.SawStatus("hinted", h)
	want := func(key string) {
		t.Helper()
		if got := indexKeys(t, js); !slices.Equal(got, []string{key}) {
			t.Fatalf("index keys %v, want [%s]", got, key)
		}
	}
	for i, rs := range []messages.RuntimeStatus{messages.StatusRunning, messages.StatusRunning, messages.StatusSuspended,
		messages.StatusRunning, messages.StatusCompleted} {
		st.RuntimeStatus, st.Episode = rs, uint64(i+1)
		if rev, err = worker.PutStatus(ctx, st, rev); err != nil {
			t.Fatalf("put %s: %v", rs, err)
		}
		want(keyIn(rs) + ".hinted")
	}

	// A stale hint (an old revision) on a third Store: the write is
	// refused as stale. Its index key, put before the refused write, may
	// stay: List checks it against the record and skips it.
	other, err := jetstore.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	other.SawStatus("hinted", h)
	old := *st
	old.RuntimeStatus, old.Episode = messages.StatusRunning, 1
	if _, err := other.PutStatus(ctx, &old, h.Rev); !errors.Is(err, jetstore.ErrStale) {
		t.Fatalf("write at a stale hinted revision: %v, want ErrStale", err)
	}
	for _, rs := range []messages.RuntimeStatus{messages.StatusRunning, messages.StatusCompleted} {
		ids, _ := listAll(t, disp, jetstore.ListFilter{Statuses: []messages.RuntimeStatus{rs}}, 10)
		if wantIDs := []string{"hinted"}; rs == messages.StatusRunning && len(ids) != 0 || rs == messages.StatusCompleted && !slices.Equal(ids, wantIDs) {
			t.Errorf("List %s after the stale write: %v", rs, ids)
		}
	}
}

// TestUnhintedWriteReadsFirst: a writer that knows nothing of a record of a
// run past its first episode (a worker that rebuilt the instance from
// history) reads the record and updates it, without a Create that fails
// or an index write when the runtime status stays the same.
func TestUnhintedWriteReadsFirst(t *testing.T) {
	ctx := context.Background()
	s, js := open(t)
	st := record("cold", messages.StatusRunning, t0, "")
	rev := create(t, s, st)
	stream, err := js.Stream(ctx, "KV_"+jetstore.IndexBucket(messages.StatusPending)) // Running keys are there
	if err != nil {
		t.Fatal(err)
	}
	last := func() uint64 {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.LastSeq
	}
	before := last()
	cold, err := jetstore.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	next := *st
	next.Episode = 2
	nrev, err := cold.PutStatus(ctx, &next, 0)
	if err != nil || nrev <= rev {
		t.Fatalf("unhinted write: revision %d, %v; want one after %d", nrev, err, rev)
	}
	if after := last(); after != before {
		t.Errorf("the Running index was written %d times for a record that stayed Running", after-before)
	}
	// An older record is still refused.
	old := *st
	if _, err := cold.PutStatus(ctx, &old, 0); !errors.Is(err, jetstore.ErrStale) {
		t.Errorf("episode 1 at revision 0 over episode 2: %v, want ErrStale", err)
	}
}

// TestIndexRemovalLeavesAnExpiringMarker: a run's start (Pending to
// Running) leaves its index key where it is, in the Pending bucket. Its end
// removes that key with a purge marker, not a stream purge, and the marker
// is gone from the index stream within a few seconds (its time to live is
// one second), leaving the stream empty.
func TestIndexRemovalLeavesAnExpiringMarker(t *testing.T) {
	ctx := context.Background()
	s, js := open(t)
	st := record("marked", messages.StatusPending, t0, "")
	rev, err := s.CreateStatus(ctx, st, 0)
	if err != nil {
		t.Fatal(err)
	}
	pending, err := js.Stream(ctx, "KV_"+jetstore.IndexBucket(messages.StatusPending))
	if err != nil {
		t.Fatal(err)
	}
	info, err := pending.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	keyed := info.State.LastSeq
	st.RuntimeStatus, st.Episode = messages.StatusRunning, 1
	if rev, err = s.PutStatus(ctx, st, rev); err != nil {
		t.Fatal(err)
	}
	if info, err = pending.Info(ctx); err != nil {
		t.Fatal(err)
	}
	if info.State.LastSeq != keyed || info.State.Msgs != 1 {
		t.Fatalf("Pending index after the start: last sequence %d (was %d), %d messages; want the key untouched",
			info.State.LastSeq, keyed, info.State.Msgs)
	}
	st.RuntimeStatus, st.Episode = messages.StatusCompleted, 2
	if _, err := s.PutStatus(ctx, st, rev); err != nil {
		t.Fatal(err)
	}
	if info, err = pending.Info(ctx); err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("Pending index holds %d messages right after the run ended, want its marker", info.State.Msgs)
	}
	m, err := pending.GetLastMsgForSubject(ctx, "$KV."+jetstore.IndexBucket(messages.StatusPending)+".marked")
	if err != nil {
		t.Fatal(err)
	}
	if op := m.Header.Get("KV-Operation"); op != "PURGE" || m.Header.Get("Nats-TTL") == "" {
		t.Fatalf("Pending index message: KV-Operation %q, Nats-TTL %q; want a purge marker with a TTL", op, m.Header.Get("Nats-TTL"))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := pending.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Pending index still holds %d messages 10 s after the change", info.State.Msgs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if keys := indexKeys(t, js); !slices.Equal(keys, []string{"Completed.marked"}) {
		t.Errorf("index keys %v, want [Completed.marked]", keys)
	}
}

// TestProvisionUpgradesIndexBuckets: index buckets made before removals
// left expiring markers (no LimitMarkerTTL) are updated in place by
// Provision, keeping their keys; a Store opened before the update still
// works, by stream purges.
func TestProvisionUpgradesIndexBuckets(t *testing.T) {
	_, js := open(t)
	ctx := context.Background()
	for _, rs := range allStatuses {
		if err := js.DeleteKeyValue(ctx, jetstore.IndexBucket(rs)); err != nil {
			t.Fatal(err)
		}
		if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: jetstore.IndexBucket(rs), History: 1,
			Storage: jetstream.MemoryStorage}); err != nil {
			t.Fatal(err)
		}
	}
	old, err := jetstore.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	create(t, old, record("before", messages.StatusRunning, t0, ""))
	if keys := indexKeys(t, js); !slices.Equal(keys, []string{"Pending.before"}) {
		t.Fatalf("index keys %v before the upgrade, want [Pending.before]", keys)
	}
	if err := jetstore.Provision(ctx, js, testConfig); err != nil {
		t.Fatalf("provision over old index buckets: %v", err)
	}
	for _, rs := range allStatuses {
		stream, err := js.Stream(ctx, "KV_"+jetstore.IndexBucket(rs))
		if err != nil {
			t.Fatal(err)
		}
		if cfg := stream.CachedInfo().Config; !cfg.AllowMsgTTL || cfg.SubjectDeleteMarkerTTL <= 0 {
			t.Errorf("index of %s after the upgrade: AllowMsgTTL %v, SubjectDeleteMarkerTTL %v", rs, cfg.AllowMsgTTL, cfg.SubjectDeleteMarkerTTL)
		}
	}
	if keys := indexKeys(t, js); !slices.Equal(keys, []string{"Pending.before"}) {
		t.Errorf("index keys %v after the upgrade, want [Pending.before]", keys)
	}
	s, err := jetstore.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	create(t, s, record("after", messages.StatusCompleted, t0, ""))
	// A Running instance indexed as before Running keys moved to the
	// Pending bucket: its key is in jetflow-index-Running, which List
	// still reads.
	create(t, s, record("legacy", messages.StatusRunning, t0, ""))
	pendingKV, err := js.KeyValue(ctx, jetstore.IndexBucket(messages.StatusPending))
	if err != nil {
		t.Fatal(err)
	}
	e, err := pendingKV.Get(ctx, "legacy")
	if err != nil {
		t.Fatal(err)
	}
	if err := pendingKV.Purge(ctx, "legacy"); err != nil {
		t.Fatal(err)
	}
	runningKV, err := js.KeyValue(ctx, jetstore.IndexBucket(messages.StatusRunning))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := runningKV.Put(ctx, "legacy", e.Value()); err != nil {
		t.Fatal(err)
	}
	ids, _ := listAll(t, s, jetstore.ListFilter{}, 1)
	if !slices.Equal(sorted(ids), []string{"after", "before", "legacy"}) {
		t.Errorf("listed %v after the upgrade, want [after before legacy]", ids)
	}
	ids, _ = listAll(t, s, jetstore.ListFilter{Statuses: []messages.RuntimeStatus{messages.StatusRunning}}, 1)
	if !slices.Equal(sorted(ids), []string{"before", "legacy"}) {
		t.Errorf("listed %v as Running, want [before legacy]", ids)
	}
}

// TestCreateNewStatus: a new ID gets its record and its index key without
// a read. An ID in use is a conflict that changes nothing: an active
// instance keeps its index entry (its own created time), and a finished
// one is left without a Pending key.
func TestCreateNewStatus(t *testing.T) {
	ctx := context.Background()
	s, js := open(t)
	fresh := record("fresh", messages.StatusPending, t0, "")
	rev, err := s.CreateNewStatus(ctx, fresh)
	if err != nil || rev == 0 {
		t.Fatalf("new ID: revision %d, %v", rev, err)
	}
	if h := s.Hint("fresh", rev); h.IndexRev == 0 || h.Status != messages.StatusPending {
		t.Errorf("hint after CreateNewStatus: %+v, want Pending with the index key's revision", h)
	}
	create(t, s, record("active", messages.StatusRunning, t0, ""))
	create(t, s, record("done", messages.StatusCompleted, t0, ""))
	waitForMarkers(t, js)
	for _, id := range []string{"fresh", "active", "done"} {
		again := record(id, messages.StatusPending, t0.Add(time.Hour), "")
		if _, err := s.CreateNewStatus(ctx, again); !errors.Is(err, jetstore.ErrConflict) {
			t.Errorf("%s again: %v, want ErrConflict", id, err)
		}
	}
	waitForMarkers(t, js)
	if keys := indexKeys(t, js); !slices.Equal(keys, []string{"Completed.done", "Pending.active", "Pending.fresh"}) {
		t.Errorf("index keys %v, want [Completed.done Pending.active Pending.fresh]", keys)
	}
	ids, _ := listAll(t, s, jetstore.ListFilter{CreatedTo: t0}, 10)
	if !slices.Equal(sorted(ids), []string{"active", "done", "fresh"}) {
		t.Errorf("listed by created time %v: a conflicting start changed an index entry", ids)
	}
	for _, id := range []string{"fresh", "active", "done"} {
		if st, _, err := s.GetStatus(ctx, id); err != nil || !st.CreatedAt.Equal(t0) {
			t.Errorf("%s after the conflicting start: %+v, %v", id, st, err)
		}
	}
}
