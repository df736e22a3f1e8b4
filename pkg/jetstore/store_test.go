package jetstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/internal/natstest"
	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
)

var testConfig = jetstore.Config{Memory: true, OrchestratorAckWait: 2 * time.Second, ActivityAckWait: 2 * time.Second}

// open starts a server, provisions it and opens a Store.
func open(t testing.TB) (*jetstore.Store, jetstream.JetStream) {
	t.Helper()
	return openWith(t, testConfig)
}

func openWith(t testing.TB, cfg jetstore.Config) (*jetstore.Store, jetstream.JetStream) {
	t.Helper()
	srv := natstest.Start(t)
	_, js := natstest.Connect(t, srv)
	ctx := context.Background()
	if err := jetstore.Provision(ctx, js, cfg); err != nil {
		t.Fatalf("provision: %v", err)
	}
	s, err := jetstore.Open(ctx, js)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return s, js
}

// episode returns the events of a small episode marked with mark.
func episode(mark int32, payload []byte) []messages.Event {
	ts := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	return []messages.Event{
		{Type: messages.EventOrchestratorStarted, Timestamp: ts},
		{Type: messages.EventTaskCompleted, Timestamp: ts, TaskID: mark, Result: payload},
		{Type: messages.EventOrchestratorCompleted, Timestamp: ts},
	}
}

func marks(t testing.TB, evs []messages.Event) []int32 {
	t.Helper()
	var out []int32
	for _, e := range evs {
		if e.Type == messages.EventTaskCompleted {
			out = append(out, e.TaskID)
		}
	}
	return out
}

// layout captures what provisioning made: the configuration and creation
// time of every stream (the buckets included) and consumer.
type layout map[string]any

func snapshot(t *testing.T, js jetstream.JetStream) layout {
	t.Helper()
	ctx := context.Background()
	l := layout{}
	for _, name := range []string{messages.OrchestratorStream, messages.ActivityStream, messages.DelayStream,
		"KV_" + messages.HistoryBucket, "KV_" + messages.StatusBucket, "KV_" + messages.RegistryBucket} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		l["stream "+name] = info.Config
		l["stream created "+name] = info.Created
	}
	for _, c := range []struct{ stream, name string }{
		{messages.OrchestratorStream, jetstore.OrchestratorConsumer},
		{messages.ActivityStream, jetstore.ActivityConsumer},
		{messages.DelayStream, jetstore.DelayConsumer},
	} {
		cons, err := js.Consumer(ctx, c.stream, c.name)
		if err != nil {
			t.Fatalf("consumer %s: %v", c.name, err)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		l["consumer "+c.name] = info.Config
		l["consumer created "+c.name] = info.Created
	}
	return l
}

// TestProvisionIdempotent provisions twice with the same configuration:
// no error, every stream, bucket and consumer keeps its configuration and
// creation time, and the data in them survives.
func TestProvisionIdempotent(t *testing.T) {
	for name, cfg := range map[string]jetstore.Config{"defaults": {}, "memory": testConfig} {
		t.Run(name, func(t *testing.T) { testProvisionIdempotent(t, cfg) })
	}
	// Dispatchers starting together provision together.
	t.Run("concurrent", func(t *testing.T) {
		srv := natstest.Start(t)
		var wg sync.WaitGroup
		for range 4 {
			_, js := natstest.Connect(t, srv)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := jetstore.Provision(context.Background(), js, testConfig); err != nil {
					t.Errorf("provision: %v", err)
				}
			}()
		}
		wg.Wait()
		_, js := natstest.Connect(t, srv)
		before := snapshot(t, js)
		if err := jetstore.Provision(context.Background(), js, testConfig); err != nil {
			t.Fatal(err)
		}
		if after := snapshot(t, js); !reflect.DeepEqual(before, after) {
			t.Errorf("provisioning again changed the layout:\nbefore %+v\nafter  %+v", before, after)
		}
	})
}

func testProvisionIdempotent(t *testing.T, cfg jetstore.Config) {
	s, js := openWith(t, cfg)
	ctx := context.Background()
	before := snapshot(t, js)
	if _, err := js.Publish(ctx, messages.OrchestratorSubject("x"), []byte("work")); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendEpisode(ctx, "x", "e", 1, episode(1, nil)); err != nil {
		t.Fatal(err)
	}
	if err := s.Register(ctx, jetstore.KindOrchestrator, "Orch"); err != nil {
		t.Fatal(err)
	}

	if err := jetstore.Provision(ctx, js, cfg); err != nil {
		t.Fatalf("second provision: %v", err)
	}
	after := snapshot(t, js)
	for k, v := range before {
		if !reflect.DeepEqual(v, after[k]) {
			t.Errorf("%s changed:\nbefore %+v\nafter  %+v", k, v, after[k])
		}
	}
	if len(after) != len(before) {
		t.Errorf("%d objects after, %d before", len(after), len(before))
	}
	if err := jetstore.Ready(ctx, js); err != nil {
		t.Errorf("ready: %v", err)
	}
	str, _ := js.Stream(ctx, messages.OrchestratorStream)
	if info, err := str.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Errorf("work stream lost its message: %+v %v", info.State, err)
	}
	if evs, n, err := s.LoadHistory(ctx, "x", "e"); err != nil || n != 1 || len(evs) != 3 {
		t.Errorf("history after second provision: %d episodes, %d events, %v", n, len(evs), err)
	}
	if ok, err := s.Registered(ctx, jetstore.KindOrchestrator, "Orch"); !ok || err != nil {
		t.Errorf("registry lost its name: %v %v", ok, err)
	}
}

// TestAppendEpisodeCreateConflict: a second AppendEpisode of the same
// (instance, run, episode) returns ErrConflict and leaves the first one as
// it was; other runs and instances are not affected.
func TestAppendEpisodeCreateConflict(t *testing.T) {
	s, js := open(t)
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, messages.HistoryBucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AppendEpisode(ctx, "inst", "run", 1, episode(1, []byte(`"first"`))); err != nil {
		t.Fatal(err)
	}
	before, err := kv.Get(ctx, "inst.run.1")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		err := s.AppendEpisode(ctx, "inst", "run", 1, episode(99, []byte(`"second"`)))
		if !errors.Is(err, jetstore.ErrConflict) {
			t.Fatalf("second append: %v, want ErrConflict", err)
		}
	}
	after, err := kv.Get(ctx, "inst.run.1")
	if err != nil {
		t.Fatal(err)
	}
	if after.Revision() != before.Revision() || !bytes.Equal(after.Value(), before.Value()) {
		t.Errorf("episode changed: revision %d -> %d", before.Revision(), after.Revision())
	}
	evs, n, err := s.LoadHistory(ctx, "inst", "run")
	if err != nil || n != 1 || !reflect.DeepEqual(marks(t, evs), []int32{1}) || string(evs[1].Result) != `"first"` {
		t.Errorf("history: %d episodes, marks %v, %v", n, marks(t, evs), err)
	}
	// The same episode number of another run or instance is another key.
	if err := s.AppendEpisode(ctx, "inst", "run2", 1, episode(2, nil)); err != nil {
		t.Errorf("other run: %v", err)
	}
	if err := s.AppendEpisode(ctx, "inst2", "run", 1, episode(3, nil)); err != nil {
		t.Errorf("other instance: %v", err)
	}
	if st, err := kv.Status(ctx); err != nil || st.Values() != 3 {
		t.Errorf("history bucket holds %v values (%v), want 3", st.Values(), err)
	}
}

// TestLoadHistoryOrder appends many episodes of a run, interleaved with
// episodes of another run of the instance and of an instance whose ID
// starts with the same characters: LoadHistory returns exactly the run's
// events, in episode order.
func TestLoadHistoryOrder(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	const n = 150
	for ep := uint64(1); ep <= n; ep++ {
		for _, r := range []struct{ id, exec string }{{"i1", "e1"}, {"i1", "e2"}, {"i10", "e1"}, {"i1-x", "e1"}} {
			mark := int32(ep)
			if r != (struct{ id, exec string }{"i1", "e1"}) {
				mark = -int32(ep)
			}
			if err := s.AppendEpisode(ctx, r.id, r.exec, ep, episode(mark, nil)); err != nil {
				t.Fatal(err)
			}
		}
	}
	evs, eps, err := s.LoadHistory(ctx, "i1", "e1")
	if err != nil {
		t.Fatal(err)
	}
	if eps != n || len(evs) != 3*n {
		t.Fatalf("%d episodes, %d events; want %d, %d", eps, len(evs), n, 3*n)
	}
	for i, m := range marks(t, evs) {
		if m != int32(i+1) {
			t.Fatalf("event of episode %d found at position %d", m, i+1)
		}
	}
	if evs, eps, err := s.LoadHistory(ctx, "nobody", "e1"); err != nil || eps != 0 || len(evs) != 0 {
		t.Errorf("unknown run: %d episodes, %d events, %v", eps, len(evs), err)
	}
}

// TestLoadHistoryRefusesGaps: a history with a missing episode is an error,
// not a silently shorter history.
func TestLoadHistoryRefusesGaps(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	for _, ep := range []uint64{1, 3} {
		if err := s.AppendEpisode(ctx, "gap", "e", ep, episode(int32(ep), nil)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.LoadHistory(ctx, "gap", "e"); err == nil {
		t.Error("history with a gap loaded without error")
	}
}

// TestLoadHistoryLargerThanMaxPayload stores a history of about 1.5 MB, in
// episodes of about 100 KB: each value stays far below the 1 MB default
// message limit and the whole history loads intact.
func TestLoadHistoryLargerThanMaxPayload(t *testing.T) {
	s, js := open(t)
	ctx := context.Background()
	const n = 15
	payload := func(ep int) []byte {
		return []byte(`"` + string(bytes.Repeat([]byte{byte('a' + ep)}, 100<<10)) + `"`)
	}
	for ep := 1; ep <= n; ep++ {
		if err := s.AppendEpisode(ctx, "big", "e", uint64(ep), episode(int32(ep), payload(ep))); err != nil {
			t.Fatalf("episode %d: %v", ep, err)
		}
	}
	evs, eps, err := s.LoadHistory(ctx, "big", "e")
	if err != nil {
		t.Fatal(err)
	}
	if eps != n {
		t.Fatalf("%d episodes, want %d", eps, n)
	}
	total := 0
	for i, ep := 0, 1; i < len(evs); i++ {
		if evs[i].Type != messages.EventTaskCompleted {
			continue
		}
		if !bytes.Equal(evs[i].Result, payload(ep)) {
			t.Fatalf("episode %d payload differs", ep)
		}
		total += len(evs[i].Result)
		ep++
	}
	if total <= 1<<20 {
		t.Fatalf("history is only %d bytes", total)
	}
	kv, err := js.KeyValue(ctx, messages.HistoryBucket)
	if err != nil {
		t.Fatal(err)
	}
	for ep := 1; ep <= n; ep++ {
		e, err := kv.Get(ctx, fmt.Sprintf("big.e.%d", ep))
		if err != nil {
			t.Fatal(err)
		}
		if len(e.Value()) >= 1<<20 {
			t.Errorf("episode %d is stored as one value of %d bytes", ep, len(e.Value()))
		}
	}
}

func status(exec string, created time.Time, ep uint64, rs messages.RuntimeStatus) *messages.Status {
	return &messages.Status{InstanceID: "st", Name: "Orch", ExecutionID: exec, RuntimeStatus: rs,
		CreatedAt: created, LastUpdatedAt: created.Add(time.Duration(ep) * time.Second), Episode: ep}
}

// TestPutStatusRefusesToMoveBackwards: an older record (fewer episodes of
// the same run, or an earlier run) is refused with ErrStale whatever
// revision the writer last saw, and the stored record stays as it was.
func TestPutStatusRefusesToMoveBackwards(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

	rev1, err := s.PutStatus(ctx, status("run1", t0, 1, messages.StatusRunning), 0)
	if err != nil {
		t.Fatal(err)
	}
	rev3, err := s.PutStatus(ctx, status("run1", t0, 3, messages.StatusRunning), rev1)
	if err != nil {
		t.Fatal(err)
	}
	stored, _, err := s.GetStatus(ctx, "st")
	if err != nil || stored.Episode != 3 {
		t.Fatalf("stored %+v, %v", stored, err)
	}
	for _, c := range []struct {
		name string
		st   *messages.Status
		rev  uint64
	}{
		{"fewer episodes, unknown revision", status("run1", t0, 2, messages.StatusCompleted), 0},
		{"fewer episodes, old revision", status("run1", t0, 2, messages.StatusCompleted), rev1},
		{"earlier run", status("run0", t0.Add(-time.Hour), 9, messages.StatusCompleted), 0},
		{"earlier run, old revision", status("run0", t0.Add(-time.Hour), 9, messages.StatusCompleted), rev1},
	} {
		rev, err := s.PutStatus(ctx, c.st, c.rev)
		if !errors.Is(err, jetstore.ErrStale) {
			t.Errorf("%s: %v, want ErrStale", c.name, err)
		}
		if rev != rev3 {
			t.Errorf("%s: returned revision %d, want the stored %d", c.name, rev, rev3)
		}
		got, grev, err := s.GetStatus(ctx, "st")
		if err != nil || grev != rev3 || !reflect.DeepEqual(got, stored) {
			t.Errorf("%s: stored record changed to %+v (revision %d), %v", c.name, got, grev, err)
		}
	}
	// Not older: the same episode again, a later episode, a later run.
	rev, err := s.PutStatus(ctx, status("run1", t0, 3, messages.StatusSuspended), 0)
	if err != nil {
		t.Fatalf("same episode: %v", err)
	}
	if rev, err = s.PutStatus(ctx, status("run1", t0, 4, messages.StatusCompleted), rev1); err != nil {
		t.Fatalf("later episode with an old revision: %v", err)
	}
	if _, err = s.PutStatus(ctx, status("run2", t0.Add(time.Hour), 1, messages.StatusRunning), rev); err != nil {
		t.Fatalf("later run: %v", err)
	}
	if got, _, _ := s.GetStatus(ctx, "st"); got.ExecutionID != "run2" || got.Episode != 1 {
		t.Errorf("stored %s episode %d, want run2 episode 1", got.ExecutionID, got.Episode)
	}
	// A deleted record is written afresh.
	if err := s.DeleteStatus(ctx, "st"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.GetStatus(ctx, "st"); !errors.Is(err, jetstore.ErrNotFound) {
		t.Fatalf("deleted: %v, want ErrNotFound", err)
	}
	if _, err := s.PutStatus(ctx, status("run2", t0.Add(time.Hour), 2, messages.StatusRunning), rev); err != nil {
		t.Fatalf("after delete: %v", err)
	}
}

// TestPurgeHistory removes every run of one instance and nothing of an
// instance whose ID extends it.
func TestPurgeHistory(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	runs := []struct{ id, exec string }{{"a", "r1"}, {"a", "r2"}, {"ab", "r1"}, {"a-b", "r1"}, {"a_", "r1"}}
	for _, r := range runs {
		for ep := uint64(1); ep <= 3; ep++ {
			if err := s.AppendEpisode(ctx, r.id, r.exec, ep, episode(int32(ep), nil)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.PurgeHistory(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	for _, r := range runs {
		_, n, err := s.LoadHistory(ctx, r.id, r.exec)
		want := uint64(3)
		if r.id == "a" {
			want = 0
		}
		if err != nil || n != want {
			t.Errorf("%s/%s: %d episodes after purging a, want %d (%v)", r.id, r.exec, n, want, err)
		}
	}
	// A purged run can be written again from its first episode.
	if err := s.AppendEpisode(ctx, "a", "r1", 1, episode(1, nil)); err != nil {
		t.Errorf("append after purge: %v", err)
	}
	if err := s.PurgeRun(ctx, "ab", "r1"); err != nil {
		t.Fatal(err)
	}
	if _, n, _ := s.LoadHistory(ctx, "ab", "r1"); n != 0 {
		t.Errorf("ab/r1 has %d episodes after PurgeRun", n)
	}
	if _, n, _ := s.LoadHistory(ctx, "a-b", "r1"); n != 3 {
		t.Errorf("a-b/r1 has %d episodes after purging ab/r1", n)
	}
}

func BenchmarkAppendEpisode(b *testing.B) {
	s, _ := open(b)
	ctx := context.Background()
	evs := episode(1, []byte(`"Hello Tokyo!"`))
	var ep uint64
	for b.Loop() {
		ep++
		if err := s.AppendEpisode(ctx, "bench", "run", ep, evs); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLoadHistory(b *testing.B) {
	s, _ := open(b)
	ctx := context.Background()
	const n = 100
	for ep := uint64(1); ep <= n; ep++ {
		if err := s.AppendEpisode(ctx, "bench", "run", ep, episode(int32(ep), []byte(`"Hello Tokyo!"`))); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		if _, eps, err := s.LoadHistory(ctx, "bench", "run"); err != nil || eps != n {
			b.Fatalf("%d episodes, %v", eps, err)
		}
	}
}
