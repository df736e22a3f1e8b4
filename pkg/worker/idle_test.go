package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/samples"
	"github.com/jetflow/jetflow/pkg/worker"
)

// TestIdleInstancesAreParked: an instance waiting for an event stays in
// memory for the idle timeout only; then its goroutine is closed, and the
// event replays it from history. With a negative timeout it stays.
func TestIdleInstancesAreParked(t *testing.T) {
	for _, tc := range []struct {
		name   string
		idle   time.Duration
		parked bool
	}{
		{"idle timeout 200ms", 200 * time.Millisecond, true},
		{"no idle timeout", -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			reg := worker.NewRegistry()
			if err := reg.AddOrchestrator("CityRecommender", samples.CityRecommender); err != nil {
				t.Fatal(err)
			}
			w := e.newWorker(reg, worker.Options{IdleTimeout: tc.idle})
			e.run(w, "CityRecommender")
			e.start("CityRecommender", "parked", 2)
			e.eventually("waiting for CitySelected", 10*time.Second, func() (bool, string) {
				st, _, err := e.store.GetStatus(context.Background(), "parked")
				if err != nil {
					return false, err.Error()
				}
				return st.RuntimeStatus == messages.StatusRunning && st.Episode == 1, st.RuntimeStatus.String()
			})
			loads := worker.HistoryLoads(w)
			if n := worker.CacheLen(w); n != 1 {
				t.Fatalf("%d instances in memory while waiting, want 1", n)
			}
			time.Sleep(time.Second) // five idle timeouts
			n := worker.CacheLen(w)
			if tc.parked && n != 0 || !tc.parked && n != 1 {
				t.Fatalf("%d instances in memory after 1 s idle, want %d", n, map[bool]int{true: 0, false: 1}[tc.parked])
			}
			if err := e.client.RaiseEvent(context.Background(), "parked", "CitySelected", []byte(`"London"`)); err != nil {
				t.Fatal(err)
			}
			st := e.wait("parked", 10*time.Second)
			if st.RuntimeStatus != messages.StatusCompleted || string(st.Output) != `"London"` {
				t.Fatalf("ended %s with %s, want Completed with \"London\"", st.RuntimeStatus, st.Output)
			}
			replays := worker.HistoryLoads(w) - loads
			if tc.parked && replays != 1 || !tc.parked && replays != 0 {
				t.Fatalf("%d history reads for the event, want %d", replays, map[bool]int{true: 1, false: 0}[tc.parked])
			}
		})
	}
}
