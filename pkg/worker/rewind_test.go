package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/replay"
	"github.com/jetflow/jetflow/pkg/worker"
)

// rewind publishes what the dispatcher publishes for a rewind of run exec.
func (e *env) rewind(id, exec, reason string) {
	e.t.Helper()
	e.publishWork(&messages.OrchestratorWork{InstanceID: id, ExecutionID: exec, Events: []messages.Event{{
		Type: messages.EventExecutionRewound, Reason: reason, Timestamp: time.Now().UTC()}}},
		"rewind:"+id+":"+exec+":"+messages.NewID())
}

// waitRun waits until the status record names run exec in a terminal
// status and every work item is acknowledged.
func (e *env) waitRun(id, exec string) *messages.Status {
	e.t.Helper()
	e.eventually("run "+exec+" of "+id+" to finish", 30*time.Second, func() (bool, string) {
		st, _, err := e.store.GetStatus(context.Background(), id)
		if err != nil {
			return false, err.Error()
		}
		return st.ExecutionID == exec && st.RuntimeStatus.Terminal(), fmt.Sprintf("run %s is %s", st.ExecutionID, st.RuntimeStatus)
	})
	e.eventually("every work item acknowledged", 20*time.Second, e.orchDrained)
	return e.status(id)
}

func countEvents(evs []messages.Event) map[messages.EventType]int {
	n := map[messages.EventType]int{}
	for _, ev := range evs {
		n[ev.Type]++
	}
	return n
}

// TestRewindRerunsFailedActivity: an activity without retry fails its first
// two attempts, so the instance fails, and fails again after one rewind.
// After a second rewind it completes with the right output; the activity
// that had succeeded ran once; the history of the last run holds no
// failure. Rewinds that do not apply (a stale one, one of a Completed run)
// change nothing. The first rewind crashes between its commit and sending
// the task it re-runs.
func TestRewindRerunsFailedActivity(t *testing.T) {
	e := newEnv(t)
	calls := newCounter()
	reg := worker.NewRegistry()
	if err := reg.AddOrchestrator("FlakyFlow", func(ctx *replay.Context) (any, error) {
		var a, b string
		if err := ctx.CallActivity("Step", "a").Await(&a); err != nil {
			return nil, err
		}
		if err := ctx.CallActivity("Flaky", "b").Await(&b); err != nil {
			return nil, err
		}
		return []string{a, b}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := reg.AddActivity("Step", func(_ context.Context, in worker.Input) (any, error) {
		calls.add("Step")
		var s string
		err := in.Get(&s)
		return "step " + s, err
	}); err != nil {
		t.Fatal(err)
	}
	if err := reg.AddActivity("Flaky", func(_ context.Context, in worker.Input) (any, error) {
		if n := calls.add("Flaky"); n <= 2 {
			return nil, fmt.Errorf("flaky failure %d", n)
		}
		var s string
		err := in.Get(&s)
		return "flaky " + s, err
	}); err != nil {
		t.Fatal(err)
	}
	w := e.newWorker(reg, worker.Options{Logger: nopLogger})
	// The first rewind crashes after committing its episode, before sending
	// the task it re-runs: the redelivered rewind must send it.
	crashes := newCounter()
	worker.SetHook(w, func(stage worker.Stage, id, exec string, ep uint64) error {
		if stage == worker.StageAppended && exec != "" && exec[len(exec)-3:] == "_r1" && crashes.add(exec) == 1 {
			return errCrash
		}
		return nil
	})
	e.run(w, "FlakyFlow")

	const id = "rewind-flaky"
	e.start("FlakyFlow", id, nil)
	first := e.wait(id, 30*time.Second)
	if first.RuntimeStatus != messages.StatusFailed {
		t.Fatalf("instance %s, want Failed", first.RuntimeStatus)
	}
	exec0 := first.ExecutionID

	e.rewind(id, exec0, "try again")
	exec1 := jetstore.RewindExecutionID(exec0)
	st := e.waitRun(id, exec1)
	if st.RuntimeStatus != messages.StatusFailed || st.Failure == nil {
		t.Fatalf("after one rewind: %s %+v, want Failed again", st.RuntimeStatus, st.Failure)
	}

	e.rewind(id, exec1, "and again")
	exec2 := jetstore.RewindExecutionID(exec1)
	st = e.waitRun(id, exec2)
	if st.RuntimeStatus != messages.StatusCompleted || string(st.Output) != `["step a","flaky b"]` || st.Failure != nil {
		t.Fatalf("after two rewinds: %s output %s failure %+v, want Completed", st.RuntimeStatus, st.Output, st.Failure)
	}
	if !st.CreatedAt.Equal(first.CreatedAt) || st.InstanceID != id {
		t.Errorf("rewound record: instance %s created %v, want %s created %v", st.InstanceID, st.CreatedAt, id, first.CreatedAt)
	}
	// The rewind episode (crashed once) and the one the task failed in.
	if n := crashes.get(exec1); n != 2 {
		t.Errorf("%d episodes of the first rewound run committed, want 2", n)
	}
	if n := calls.get("Step"); n != 1 {
		t.Errorf("Step ran %d times, want 1", n)
	}
	if n := calls.get("Flaky"); n != 3 {
		t.Errorf("Flaky ran %d times, want 3", n)
	}
	evs, eps := e.history(id, exec2)
	n := countEvents(evs)
	if n[messages.EventTaskFailed] != 0 || n[messages.EventExecutionRewound] != 1 || n[messages.EventTaskScheduled] != 2 ||
		n[messages.EventTaskCompleted] != 2 || n[messages.EventExecutionCompleted] != 1 || n[messages.EventExecutionStarted] != 1 {
		t.Errorf("history of the last run: %v", n)
	}
	if st.Episode != eps {
		t.Errorf("status at episode %d, history has %d", st.Episode, eps)
	}
	for _, ev := range evs {
		if ev.Type == messages.EventExecutionStarted && ev.ExecutionID != exec2 {
			t.Errorf("ExecutionStarted names run %s, want %s", ev.ExecutionID, exec2)
		}
	}
	// The failed runs keep their history.
	for _, exec := range []string{exec0, exec1} {
		if evs, _ := e.history(id, exec); countEvents(evs)[messages.EventTaskFailed] != 1 {
			t.Errorf("run %s lost its history", exec)
		}
	}

	// A stale rewind (of the first run, redelivered late) and a rewind of
	// the Completed run are dropped.
	e.rewind(id, exec0, "stale")
	e.rewind(id, exec2, "not failed")
	e.eventually("every work item acknowledged", 20*time.Second, e.orchDrained)
	if got := e.status(id); got.ExecutionID != exec2 || got.RuntimeStatus != messages.StatusCompleted || got.Episode != st.Episode {
		t.Errorf("after rewinds that do not apply: run %s %s episode %d", got.ExecutionID, got.RuntimeStatus, got.Episode)
	}
	if _, n := e.history(id, jetstore.RewindExecutionID(exec2)); n != 0 {
		t.Errorf("a Completed run was rewound: %d episodes", n)
	}
	if _, n := e.history(id, exec2); n != eps {
		t.Errorf("the last run has %d episodes, had %d", n, eps)
	}
	if n := calls.get("Flaky"); n != 3 {
		t.Errorf("Flaky ran %d times, want 3", n)
	}
}

// TestRewindOrchestratorError: the orchestrator fails by its own error
// after a successful activity. Rewound, the code runs again, now succeeds,
// and the instance completes without running the activity again.
func TestRewindOrchestratorError(t *testing.T) {
	e := newEnv(t)
	calls := newCounter()
	var fixed atomic.Bool
	reg := worker.NewRegistry()
	if err := reg.AddOrchestrator("Picky", func(ctx *replay.Context) (any, error) {
		var a string
		if err := ctx.CallActivity("Step", "a").Await(&a); err != nil {
			return nil, err
		}
		if !fixed.Load() {
			return nil, errors.New("not today")
		}
		return a + " done", nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := reg.AddActivity("Step", func(_ context.Context, in worker.Input) (any, error) {
		calls.add("Step")
		var s string
		err := in.Get(&s)
		return "step " + s, err
	}); err != nil {
		t.Fatal(err)
	}
	w := e.newWorker(reg, worker.Options{Logger: nopLogger})
	e.run(w, "Picky")

	const id = "rewind-picky"
	e.start("Picky", id, "x")
	first := e.wait(id, 30*time.Second)
	if first.RuntimeStatus != messages.StatusFailed || first.Failure == nil || first.Failure.Type != "OrchestratorError" {
		t.Fatalf("instance %s %+v, want Failed by an OrchestratorError", first.RuntimeStatus, first.Failure)
	}
	fixed.Store(true)
	e.rewind(id, first.ExecutionID, "fixed")
	exec := jetstore.RewindExecutionID(first.ExecutionID)
	st := e.waitRun(id, exec)
	want, _ := json.Marshal("step a done")
	if st.RuntimeStatus != messages.StatusCompleted || string(st.Output) != string(want) {
		t.Fatalf("after rewind: %s output %s, want Completed %s", st.RuntimeStatus, st.Output, want)
	}
	if string(st.Input) != `"x"` || !st.CreatedAt.Equal(first.CreatedAt) {
		t.Errorf("rewound record: input %s created %v, want \"x\" created %v", st.Input, st.CreatedAt, first.CreatedAt)
	}
	if n := calls.get("Step"); n != 1 {
		t.Errorf("Step ran %d times, want 1", n)
	}
	evs, _ := e.history(id, exec)
	n := countEvents(evs)
	if n[messages.EventTaskScheduled] != 1 || n[messages.EventTaskCompleted] != 1 || n[messages.EventExecutionCompleted] != 1 || n[messages.EventExecutionRewound] != 1 {
		t.Errorf("history of the rewound run: %v", n)
	}
	for _, ev := range evs {
		if ev.Type == messages.EventExecutionCompleted && ev.Status != messages.StatusCompleted {
			t.Errorf("rewound run ends %s", ev.Status)
		}
	}
}
