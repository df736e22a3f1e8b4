package worker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/worker"
)

// splitEpisodes cuts a history at each OrchestratorStarted.
func splitEpisodes(evs []messages.Event) [][]messages.Event {
	var eps [][]messages.Event
	for _, ev := range evs {
		if ev.Type == messages.EventOrchestratorStarted || len(eps) == 0 {
			eps = append(eps, nil)
		}
		eps[len(eps)-1] = append(eps[len(eps)-1], ev)
	}
	return eps
}

// TestLaggingHistoryReadKeepsWork shows that work is not dropped because a
// history read was behind. After a NATS fault a replica that lags the
// stream's leader may serve a history read; a completion then answers a
// task that history does not show yet, and the step changes nothing, like
// a redelivery. It was acknowledged and lost, and its instance waited for
// ever (found by the cluster test TestNATSLeaderKillAndPause). Now the
// worker asks the leader and tries again later. Work that answers a task
// the leader does not know either is dropped after a few deliveries.
func TestLaggingHistoryReadKeepsWork(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	// A real run's first two episodes (the second schedules task 1),
	// copied to an instance that no worker runs.
	w1 := e.newWorker(helloRegistry(t, true, newCounter()), worker.Options{})
	stop := e.run(w1, "E1_HelloSequence")
	e.start("E1_HelloSequence", "lag-src", nil)
	src := e.wait("lag-src", 30*time.Second)
	stop()
	evs, _ := e.history("lag-src", src.ExecutionID)
	eps := splitEpisodes(evs)
	if len(eps) != 4 {
		t.Fatalf("source run has %d episodes, want 4", len(eps))
	}
	const id = "lag-1"
	exec := src.ExecutionID
	for i, ep := range eps[:2] {
		for j := range ep {
			if ep[j].Type == messages.EventExecutionStarted {
				ep[j].InstanceID = id
			}
		}
		if err := e.store.AppendEpisode(ctx, id, exec, uint64(i+1), ep); err != nil {
			t.Fatal(err)
		}
	}
	completion := func(task int32) *messages.OrchestratorWork {
		return &messages.OrchestratorWork{V: messages.SchemaVersion, InstanceID: id, ExecutionID: exec,
			Events: []messages.Event{{Type: messages.EventTaskCompleted, TaskID: task, Result: []byte(`"Hello Seattle!"`)}}}
	}

	core, logs := observer.New(zap.WarnLevel)
	w2 := e.newWorker(helloRegistry(t, true, nil), worker.Options{Logger: zap.New(core)})
	// The replica serving w2 has only episode 1: task 1 is not scheduled.
	worker.SetHistoryLag(w2, func(_ string, h []messages.Event) []messages.Event {
		return splitEpisodes(h)[0]
	})
	for n := uint64(1); n <= 5; n++ {
		if err := worker.ProcessDelivered(ctx, w2, completion(1), n); !errors.Is(err, worker.ErrNotYet) {
			t.Fatalf("delivery %d of a completion the lagging read cannot place: %v, want %v (it would be acknowledged and lost)", n, err, worker.ErrNotYet)
		}
	}
	if _, n := e.history(id, exec); n != 2 {
		t.Fatalf("history has %d episodes after the refused completion, want 2", n)
	}

	// Once the read catches up, the same work commits episode 3.
	worker.SetHistoryLag(w2, nil)
	if err := worker.ProcessDelivered(ctx, w2, completion(1), 6); err != nil {
		t.Fatalf("completion after the read caught up: %v", err)
	}
	after, n := e.history(id, exec)
	if n != 3 {
		t.Fatalf("history has %d episodes, want 3", n)
	}
	last := splitEpisodes(after)[2]
	if last[1].Type != messages.EventTaskCompleted || last[1].TaskID != 1 {
		t.Fatalf("episode 3 starts with %s #%d, want TaskCompleted #1", last[1].Type, last[1].TaskID)
	}

	// A completion of a task that even the leader's history never
	// scheduled: tried again for the first deliveries, then dropped with
	// a warning, changing nothing.
	if err := worker.ProcessDelivered(ctx, w2, completion(9), 1); !errors.Is(err, worker.ErrNotYet) {
		t.Fatalf("first delivery of a completion of an unknown task: %v, want %v", err, worker.ErrNotYet)
	}
	if err := worker.ProcessDelivered(ctx, w2, completion(9), 3); err != nil {
		t.Fatalf("third delivery of a completion of an unknown task: %v, want it dropped", err)
	}
	if _, n := e.history(id, exec); n != 3 {
		t.Fatalf("history has %d episodes after the unknown completion, want 3", n)
	}
	if got := logs.FilterMessage("work answers an action its run never scheduled; dropped").Len(); got != 1 {
		t.Fatalf("%d warnings for the dropped completion, want 1", got)
	}
}
