package worker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/replay"
	"github.com/jetflow/jetflow/pkg/worker"
)

// threeSteps calls the activity "Step" three times in a row.
func threeSteps(ctx *replay.Context) (any, error) {
	var out []string
	for i := range 3 {
		var s string
		if err := ctx.CallActivity("Step", i).Await(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// waitDedupWindowPassed publishes a probe to the activity stream, after
// everything the test published so far, and polls until the stream accepts
// the same message ID again: the server forgets IDs in the order it stored
// them, so by then every earlier ID is forgotten too.
func (e *env) waitDedupWindowPassed() {
	e.t.Helper()
	ctx := context.Background()
	probe := func() (*jetstream.PubAck, error) {
		return e.js.Publish(ctx, messages.ActivitySubject("probe"), []byte("probe"), jetstream.WithMsgID("probe"))
	}
	if _, err := probe(); err != nil {
		e.t.Fatal(err)
	}
	e.eventually("the duplicate window to pass", 20*time.Second, func() (bool, string) {
		ack, err := probe()
		if err != nil {
			return false, err.Error()
		}
		return !ack.Duplicate, "the probe's ID is still remembered"
	})
}

// instanceTasks returns the activity tasks of instance id in the activity
// stream, which nobody consumes in the tests that call it, in order.
func (e *env) instanceTasks(id string) []storedTask {
	e.t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, messages.ActivityStream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []storedTask
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			e.t.Fatal(err)
		}
		task, err := messages.DecodeActivityTask(m.Data)
		if err != nil || task.InstanceID != id {
			continue
		}
		out = append(out, storedTask{task, m.Header.Get(jetstream.MsgIDHeader)})
	}
	return out
}

// TestRedeliveryRepublishesOnlyItsEpisode: the streams' duplicate window is
// made tiny and let pass, so that a re-published activity task would be
// stored again. A redelivered work item of an old episode (the start, the
// result of the first task) must then not re-publish the activity that a
// later episode scheduled and that is still running. A redelivered result
// whose own episode scheduled it does re-publish it: that episode may have
// crashed before publishing.
func TestRedeliveryRepublishesOnlyItsEpisode(t *testing.T) {
	cfg := testStore
	cfg.DuplicateWindow = 200 * time.Millisecond
	e := newEnvWith(t, cfg)
	reg := worker.NewRegistry()
	if err := reg.AddOrchestrator("ThreeSteps", threeSteps); err != nil {
		t.Fatal(err)
	}
	// The worker hosts no activity: tasks stay in the activity stream,
	// where the test counts them.
	w := e.newWorker(reg, worker.Options{Logger: nopLogger})
	e.run(w, "ThreeSteps")

	const id = "precise"
	e.start("ThreeSteps", id, nil)
	st := e.status(id)
	exec := st.ExecutionID
	waitEpisode := func(ep uint64) {
		t.Helper()
		e.eventually(fmt.Sprintf("episode %d acknowledged", ep), 20*time.Second, func() (bool, string) {
			ok, why := e.orchDrained()
			st, _, err := e.store.GetStatus(context.Background(), id)
			if err != nil {
				return false, err.Error()
			}
			return ok && st.Episode == ep, fmt.Sprintf("%s; status at episode %d", why, st.Episode)
		})
	}
	wantTasks := func(what string, want ...int32) {
		t.Helper()
		tasks := e.instanceTasks(id)
		var got []int32
		for _, st := range tasks {
			got = append(got, st.task.TaskID)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: activity stream holds tasks %v, want %v", what, got, want)
		}
		for _, st := range tasks {
			if wantID := fmt.Sprintf("a:%s:%s:%d:1", id, exec, st.task.TaskID); st.msgID != wantID {
				t.Errorf("%s: task %d has Nats-Msg-Id %q, want %q", what, st.task.TaskID, st.msgID, wantID)
			}
		}
	}
	waitEpisode(1)
	e.publishWork(taskCompleted(id, exec, 0, "one"), "r0")
	waitEpisode(2)
	e.publishWork(taskCompleted(id, exec, 1, "two"), "r1")
	waitEpisode(3)
	wantTasks("after three episodes", 0, 1, 2)
	e.waitDedupWindowPassed()

	// The start again: episode 1 scheduled task 0, which has its result.
	e.publishWork(&messages.OrchestratorWork{InstanceID: id, ExecutionID: exec, Events: []messages.Event{{
		Type: messages.EventExecutionStarted, Timestamp: st.CreatedAt, Name: "ThreeSteps", Input: st.Input,
		InstanceID: id, ExecutionID: exec}}}, "start-again")
	waitEpisode(3)
	wantTasks("after the start was redelivered", 0, 1, 2)

	// The result of task 0 again, on a worker that holds the instance hot
	// and on one that rebuilds it: episode 2 scheduled task 1, also done.
	e.publishWork(taskCompleted(id, exec, 0, "one"), "r0-again")
	waitEpisode(3)
	cold := e.newWorker(reg, worker.Options{Logger: nopLogger, CacheSize: -1})
	work := taskCompleted(id, exec, 0, "one")
	work.V = messages.SchemaVersion
	if err := worker.Process(context.Background(), cold, work); err != nil {
		t.Fatal(err)
	}
	wantTasks("after the result of task 0 was redelivered", 0, 1, 2)

	// The result of task 1 again: its episode scheduled task 2, still
	// running, so it is sent again (the window has passed: a second copy).
	e.publishWork(taskCompleted(id, exec, 1, "two"), "r1-again")
	waitEpisode(3)
	wantTasks("after the result of task 1 was redelivered", 0, 1, 2, 2)

	if _, n := e.history(id, exec); n != 3 {
		t.Errorf("history has %d episodes, want 3", n)
	}
	if st := e.status(id); st.RuntimeStatus != messages.StatusRunning {
		t.Errorf("status %s, want Running", st.RuntimeStatus)
	}
}
