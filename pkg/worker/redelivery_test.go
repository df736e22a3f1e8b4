package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/worker"
)

// episodeTrigger returns the first event of episode ep (1-based) after its
// OrchestratorStarted: the event of the work item that caused it.
func episodeTrigger(evs []messages.Event, ep uint64) (messages.Event, bool) {
	var n uint64
	for i, ev := range evs {
		if ev.Type == messages.EventOrchestratorStarted {
			n++
			if n == ep && i+1 < len(evs) {
				return evs[i+1], true
			}
		}
	}
	return messages.Event{}, false
}

// streamHoldsWork reports whether the orchestrator work-queue stream still
// holds (that is, nobody acknowledged) a work item for instance id whose
// first event is like ev.
func (e *env) streamHoldsWork(id string, ev messages.Event) (bool, error) {
	ctx := context.Background()
	s, err := e.js.Stream(ctx, messages.OrchestratorStream)
	if err != nil {
		return false, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return false, err
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return false, err
		}
		w, err := messages.DecodeOrchestratorWork(m.Data)
		if err != nil || w.InstanceID != id {
			continue
		}
		if w.Events[0].Type == ev.Type && w.Events[0].TaskID == ev.TaskID {
			return true, nil
		}
	}
	return false, nil
}

// TestAckAfterCommit_RedeliveryAppendsNothing crashes every episode once,
// after its commit (history, actions, status) and before its ack. At that
// moment the work item must still be unacknowledged in the work-queue
// stream; its redelivery must then be acknowledged without appending
// anything or running any activity again.
func TestAckAfterCommit_RedeliveryAppendsNothing(t *testing.T) {
	e := newEnv(t)
	acts := newCounter()
	core, logs := observer.New(zap.ErrorLevel)
	w := e.newWorker(helloRegistry(t, true, acts), worker.Options{Logger: zap.New(core)})
	commits := newCounter()
	worker.SetHook(w, func(stage worker.Stage, id, exec string, ep uint64) error {
		if stage != worker.StageCommitted {
			return nil
		}
		evs, n, err := e.store.LoadHistory(context.Background(), id, exec)
		if err != nil || n < ep {
			t.Errorf("%s episode %d: committed but history has %d episodes (%v)", id, ep, n, err)
			return nil
		}
		trigger, _ := episodeTrigger(evs, ep)
		held, err := e.streamHoldsWork(id, trigger)
		if err != nil || !held {
			t.Errorf("%s episode %d: the work item (%s #%d) is no longer in the stream at commit: acked before commit? (%v)",
				id, ep, trigger.Type, trigger.TaskID, err)
		}
		if commits.add(fmt.Sprintf("%s/%d", id, ep)) == 1 {
			return errCrash // crash between commit and ack
		}
		return nil
	})
	e.run(w, "E1_HelloSequence")

	ids := []string{"ack-1", "ack-2", "ack-3"}
	for _, id := range ids {
		e.start("E1_HelloSequence", id, nil)
	}
	for _, id := range ids {
		checkCompleted(t, e.wait(id, 30*time.Second))
	}
	// The last episode's status is written before its crash: wait until its
	// redelivery too has been acknowledged.
	e.eventually("every work item acknowledged", 30*time.Second, e.orchDrained)

	for _, id := range ids {
		for ep := uint64(1); ep <= 4; ep++ {
			if n := commits.get(fmt.Sprintf("%s/%d", id, ep)); n != 1 {
				t.Errorf("%s episode %d committed %d times, want 1", id, ep, n)
			}
		}
		evs, n := e.history(id, e.status(id).ExecutionID)
		checkHello(t, evs, n)
		checkCompleted(t, e.status(id))
	}
	// Every episode crashed once, so every work item was redelivered once.
	if n := logs.FilterMessage("orchestrator step").Len(); n != 4*len(ids) {
		t.Errorf("%d crashed steps logged, want %d", n, 4*len(ids))
	}
	for _, city := range []string{"Tokyo", "Seattle", "London"} {
		if n := acts.get(city); n != len(ids) {
			t.Errorf("activity for %s ran %d times, want %d", city, n, len(ids))
		}
	}
	if st := e.streamState(messages.ActivityStream); st.LastSeq != uint64(3*len(ids)) {
		t.Errorf("activity stream received %d tasks, want %d", st.LastSeq, 3*len(ids))
	}
}

type storedTask struct {
	task  *messages.ActivityTask
	msgID string
}

// activityTasks returns every task in the activity stream, which nobody
// consumes in the tests that call it.
func (e *env) activityTasks() []storedTask {
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
	if info.State.Msgs != info.State.LastSeq {
		e.t.Fatalf("activity stream has %d messages of %d", info.State.Msgs, info.State.LastSeq)
	}
	var out []storedTask
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			e.t.Fatalf("activity message %d: %v", seq, err)
		}
		task, err := messages.DecodeActivityTask(m.Data)
		if err != nil {
			e.t.Fatalf("activity message %d: %v", seq, err)
		}
		out = append(out, storedTask{task, m.Header.Get(jetstream.MsgIDHeader)})
	}
	return out
}

func taskCompleted(id, exec string, task int32, result string) *messages.OrchestratorWork {
	b, _ := json.Marshal(result)
	return &messages.OrchestratorWork{InstanceID: id, ExecutionID: exec,
		Events: []messages.Event{{Type: messages.EventTaskCompleted, TaskID: task, Result: b}}}
}

// TestRedeliveryResendsNoActivityTask plays the activity host itself and
// crashes the worker at every point of a commit in turn: before the actions
// are published, before the status is written, and before the ack. The
// activity stream must end up with each task exactly once, carrying its
// derived message ID, also when a task result arrives twice.
func TestRedeliveryResendsNoActivityTask(t *testing.T) {
	e := newEnv(t)
	w := e.newWorker(helloRegistry(t, true, nil), worker.Options{Logger: zaptest.NewLogger(t)})
	crashAt := map[uint64]worker.Stage{1: worker.StageAppended, 2: worker.StageCommitted, 3: worker.StagePublished}
	crashes := newCounter()
	worker.SetHook(w, func(stage worker.Stage, id, exec string, ep uint64) error {
		if s, ok := crashAt[ep]; ok && s == stage && crashes.add(fmt.Sprint(ep)) == 1 {
			return errCrash
		}
		return nil
	})
	e.run(w, "E1_HelloSequence")

	const id = "resend"
	e.start("E1_HelloSequence", id, nil)
	exec := e.status(id).ExecutionID
	wantTasks := func(n int, episode uint64) {
		t.Helper()
		e.eventually(fmt.Sprintf("episode %d acknowledged", episode), 20*time.Second, func() (bool, string) {
			ok, why := e.orchDrained()
			st, _, err := e.store.GetStatus(context.Background(), id)
			if err != nil {
				return false, err.Error()
			}
			return ok && st.Episode >= episode, fmt.Sprintf("%s; status at episode %d", why, st.Episode)
		})
		if st := e.status(id); st.Episode != episode {
			t.Fatalf("status at episode %d, want %d", st.Episode, episode)
		}
		tasks := e.activityTasks()
		if len(tasks) != n {
			t.Fatalf("activity stream holds %d tasks after episode %d, want %d: %+v", len(tasks), episode, n, tasks)
		}
		for i, st := range tasks {
			wantID := fmt.Sprintf("a:%s:%s:%d:1", id, exec, i)
			var city string
			_ = json.Unmarshal(st.task.Input, &city)
			if st.task.TaskID != int32(i) || city != []string{"Tokyo", "Seattle", "London"}[i] || st.msgID != wantID {
				t.Errorf("task %d is #%d %q with Nats-Msg-Id %q, want #%d with %q", i, st.task.TaskID, city, st.msgID, i, wantID)
			}
		}
	}
	// Episode 1 crashed before its task was published: the redelivery
	// publishes it, once.
	wantTasks(1, 1)
	// The result of task 0 arrives twice, and episode 2 crashes after
	// publishing task 1: still one task 1.
	e.publishWork(taskCompleted(id, exec, 0, "Hello Tokyo!"), "dup-a")
	e.publishWork(taskCompleted(id, exec, 0, "Hello Tokyo!"), "dup-b")
	wantTasks(2, 2)
	e.publishWork(taskCompleted(id, exec, 1, "Hello Seattle!"), "r1")
	wantTasks(3, 3)
	e.publishWork(taskCompleted(id, exec, 2, "Hello London!"), "r2")
	e.publishWork(taskCompleted(id, exec, 1, "Hello Seattle!"), "r1-again")
	wantTasks(3, 4)

	checkCompleted(t, e.status(id))
	evs, n := e.history(id, exec)
	checkHello(t, evs, n)
	for ep := range crashAt {
		if c := crashes.get(fmt.Sprint(ep)); c != 1 {
			t.Errorf("episode %d reached its crash point %d times, want 1", ep, c)
		}
	}
}
