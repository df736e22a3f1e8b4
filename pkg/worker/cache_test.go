package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/replay"
	"github.com/jetflow/jetflow/pkg/samples"
	"github.com/jetflow/jetflow/pkg/worker"
)

// longSequence calls Count n times in a row, n being its input.
func longSequence(ctx *replay.Context) (any, error) {
	var n int
	if err := ctx.GetInput(&n); err != nil {
		return nil, err
	}
	sum := 0
	for i := range n {
		var v int
		if err := ctx.CallActivity("Count", i).Await(&v); err != nil {
			return nil, err
		}
		sum += v
	}
	return sum, nil
}

// TestHotInstanceReadsNoHistory: while an instance stays in a worker's
// cache, its steps read no history, however long the history grows. The
// same work on a worker without a cache reads the history at every step,
// which shows that the count is live.
func TestHotInstanceReadsNoHistory(t *testing.T) {
	// No redelivery of slow steps: a duplicate would rightly cost a read.
	e := newEnvWith(t, jetstore.Config{Memory: true})
	reg := helloRegistry(t, true, newCounter())
	if err := reg.AddOrchestrator("LongSequence", longSequence); err != nil {
		t.Fatal(err)
	}
	if err := reg.AddActivity("Count", func(_ context.Context, in worker.Input) (any, error) {
		var i int
		err := in.Get(&i)
		return i, err
	}); err != nil {
		t.Fatal(err)
	}
	hot := e.newWorker(reg, worker.Options{Logger: nopLogger})
	stop := e.run(hot, "E1_HelloSequence", "LongSequence")

	const steps = 40
	e.start("LongSequence", "long", steps)
	for i := range 5 {
		e.start("E1_HelloSequence", fmt.Sprintf("hot-%d", i), nil)
	}
	st := e.wait("long", 60*time.Second)
	if st.RuntimeStatus != messages.StatusCompleted || string(st.Output) != fmt.Sprint(steps*(steps-1)/2) || st.Episode != steps+1 {
		t.Errorf("long: %s %s at episode %d", st.RuntimeStatus, st.Output, st.Episode)
	}
	for i := range 5 {
		checkCompleted(t, e.wait(fmt.Sprintf("hot-%d", i), 30*time.Second))
	}
	if n := worker.HistoryLoads(hot); n != 0 {
		t.Errorf("hot worker read history %d times over %d steps, want 0", n, steps+1+5*4)
	}
	stop()

	cold := e.newWorker(helloRegistry(t, true, newCounter()), worker.Options{Logger: nopLogger, CacheSize: -1})
	e.run(cold, "E1_HelloSequence")
	e.start("E1_HelloSequence", "cold", nil)
	checkCompleted(t, e.wait("cold", 30*time.Second))
	// The start needs no history; each of the three results does.
	if n := worker.HistoryLoads(cold); n != 3 {
		t.Errorf("worker without a cache read history %d times, want 3", n)
	}
}

// TestColdWorkerRebuildsFromHistory: worker 1 runs the first two episodes
// of an orchestration and stops; worker 2, with nothing in memory, rebuilds
// the instance from history and finishes it, running no activity again.
func TestColdWorkerRebuildsFromHistory(t *testing.T) {
	e := newEnv(t)
	acts := newCounter()
	gate := make(chan struct{})
	seattle := make(chan struct{}, 1)
	areg := worker.NewRegistry()
	if err := areg.AddActivity("E1_SayHello", func(ctx context.Context, in worker.Input) (any, error) {
		var city string
		_ = in.Get(&city)
		acts.add(city)
		if city == "Seattle" {
			seattle <- struct{}{}
			select {
			case <-gate:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return samples.SayHello(ctx, in)
	}); err != nil {
		t.Fatal(err)
	}
	e.run(e.newWorker(areg, worker.Options{Logger: nopLogger}))

	commits := newCommitLog()
	w1 := e.newWorker(helloRegistry(t, true, nil), worker.Options{Logger: nopLogger})
	worker.SetHook(w1, commits.hook("w1", nil))
	stop1 := e.run(w1, "E1_HelloSequence")

	const id = "cold"
	e.start("E1_HelloSequence", id, nil)
	select {
	case <-seattle:
	case <-time.After(30 * time.Second):
		t.Fatal("the second activity never started")
	}
	// The second task was published after episode 2 was committed; wait
	// for its status record too, then stop worker 1.
	e.eventually("episode 2", 10*time.Second, func() (bool, string) {
		st := e.status(id)
		return st.Episode == 2, fmt.Sprintf("status at episode %d", st.Episode)
	})
	stop1()
	if n := worker.HistoryLoads(w1); n != 0 {
		t.Errorf("worker 1 read history %d times, want 0", n)
	}

	w2 := e.newWorker(helloRegistry(t, true, nil), worker.Options{Logger: nopLogger})
	worker.SetHook(w2, commits.hook("w2", nil))
	e.run(w2, "E1_HelloSequence")
	close(gate)
	st := e.wait(id, 30*time.Second)
	checkCompleted(t, st)
	if n := worker.HistoryLoads(w2); n < 1 {
		t.Errorf("worker 2 read history %d times, want at least 1", n)
	}
	exec := st.ExecutionID
	for ep, want := range map[uint64]string{1: "w1", 2: "w1", 3: "w2", 4: "w2"} {
		if ws := commits.workers(id, exec, ep); len(ws) != 1 || ws[0] != want {
			t.Errorf("episode %d committed by %v, want %s", ep, ws, want)
		}
	}
	evs, n := e.history(id, exec)
	checkHello(t, evs, n)
	for _, city := range samples.Cities {
		if c := acts.get(city); c != 1 {
			t.Errorf("activity for %s ran %d times, want 1", city, c)
		}
	}
	var out []string
	if err := json.Unmarshal(st.Output, &out); err != nil || len(out) != 3 {
		t.Errorf("output %s", st.Output)
	}
}
