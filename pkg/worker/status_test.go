package worker_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/worker"
)

// TestStatusNeverAheadOfHistory watches the status bucket while three
// workers run instances whose every step races with a duplicate. When a
// status record arrives, the history of its run must already hold at least
// the episodes the record claims.
func TestStatusNeverAheadOfHistory(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch, err := e.store.StatusKV().WatchAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = watch.Stop() }()
	history, err := e.js.KeyValue(ctx, messages.HistoryBucket)
	if err != nil {
		t.Fatal(err)
	}

	var (
		mu        sync.Mutex
		checked   int
		completed = map[string]bool{}
	)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for {
			var kve jetstream.KeyValueEntry
			select {
			case <-ctx.Done():
				return
			case kve = <-watch.Updates():
			}
			if kve == nil || kve.Operation() != jetstream.KeyValuePut {
				continue
			}
			st, err := messages.DecodeStatus(kve.Value())
			if err != nil {
				t.Errorf("status %s: %v", kve.Key(), err)
				continue
			}
			if st.Episode > 0 {
				// One read, so that the check runs as close as possible to
				// the status write: episode keys are <instance>.<run>.<n>.
				key := fmt.Sprintf("%s.%s.%d", messages.Token(st.InstanceID), messages.Token(st.ExecutionID), st.Episode)
				if _, err := history.Get(ctx, key); err != nil && ctx.Err() == nil {
					t.Errorf("status of %s (revision %d) claims episode %d, history has not: %v", st.InstanceID, kve.Revision(), st.Episode, err)
				}
			}
			mu.Lock()
			checked++
			if st.RuntimeStatus == messages.StatusCompleted {
				completed[st.InstanceID] = true
			}
			mu.Unlock()
		}
	}()

	// Just before an episode is appended, nothing may claim it yet: the
	// status record is behind it, unless the episode is in history already
	// (another worker committed it and this append will conflict).
	beforeAppend := func(stage worker.Stage, id, exec string, ep uint64) error {
		if stage != worker.StageBeforeAppend {
			return nil
		}
		st, _, err := e.store.GetStatus(ctx, id)
		if err != nil || st.ExecutionID != exec || st.Episode < ep {
			return nil
		}
		key := fmt.Sprintf("%s.%s.%d", messages.Token(id), messages.Token(exec), ep)
		if _, err := history.Get(ctx, key); err != nil {
			t.Errorf("before episode %d of %s is appended, its status record claims episode %d", ep, id, st.Episode)
		}
		return nil
	}
	for range 3 {
		w := e.newWorker(helloRegistry(t, true, nil), worker.Options{Logger: nopLogger})
		worker.SetHook(w, beforeAppend)
		e.run(w, "E1_HelloSequence")
	}
	e.activityHost(newCounter())
	const n = 30
	for i := range n {
		e.start("E1_HelloSequence", fmt.Sprintf("ahead-%02d", i), nil)
	}
	e.eventually("the watcher to see every instance complete", 60*time.Second, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(completed) == n, fmt.Sprintf("%d of %d complete", len(completed), n)
	})
	e.eventually("every work item acknowledged", 30*time.Second, e.orchDrained)
	cancel()
	<-watchDone
	// Pending, then one record per episode at least.
	if checked < 5*n {
		t.Errorf("checked %d status records, want at least %d", checked, 5*n)
	}
	for i := range n {
		id := fmt.Sprintf("ahead-%02d", i)
		st := e.status(id)
		checkCompleted(t, st)
		evs, eps := e.history(id, st.ExecutionID)
		checkHello(t, evs, eps)
	}
}

// TestLostStatusWriteIsRepaired loses the status write of the final
// episode (a crash after history and actions, before the status record):
// the redelivered work repairs it. Then the status record is deleted
// outright, and a duplicate work item brings it back, without adding history.
func TestLostStatusWriteIsRepaired(t *testing.T) {
	e := newEnv(t)
	acts := newCounter()
	w := e.newWorker(helloRegistry(t, true, acts), worker.Options{Logger: nopLogger})
	commits := newCommitLog()
	crashes := newCounter()
	worker.SetHook(w, commits.hook("w", func(stage worker.Stage, id, exec string, ep uint64) error {
		if stage == worker.StagePublished && ep == 4 && crashes.add(id) == 1 {
			// The final episode is in history and its actions are out, but
			// its status record is never written by this commit.
			st, _, err := e.store.GetStatus(context.Background(), id)
			if err != nil || st.Episode != 3 || st.RuntimeStatus != messages.StatusRunning {
				t.Errorf("status before the lost write: %+v, %v; want Running at episode 3", st, err)
			}
			return errCrash
		}
		return nil
	}))
	e.run(w, "E1_HelloSequence")

	const id = "repair"
	e.start("E1_HelloSequence", id, nil)
	checkCompleted(t, e.wait(id, 30*time.Second))
	e.eventually("every work item acknowledged", 20*time.Second, e.orchDrained)
	if c := crashes.get(id); c != 1 {
		t.Fatalf("status write lost %d times, want 1", c)
	}
	exec := e.status(id).ExecutionID
	if ws := commits.workers(id, exec, 4); len(ws) != 1 {
		t.Errorf("final episode committed %d times, want 1", len(ws))
	}

	// Lose the record altogether.
	if err := e.store.DeleteStatus(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.store.GetStatus(context.Background(), id); err == nil {
		t.Fatal("status record still there after delete")
	}
	e.publishWork(taskCompleted(id, exec, 2, "Hello London!"), "late-duplicate")
	e.eventually("status record repaired", 20*time.Second, func() (bool, string) {
		st, _, err := e.store.GetStatus(context.Background(), id)
		if err != nil {
			return false, err.Error()
		}
		return st.RuntimeStatus == messages.StatusCompleted, fmt.Sprintf("%s at episode %d", st.RuntimeStatus, st.Episode)
	})
	e.eventually("every work item acknowledged", 20*time.Second, e.orchDrained)
	checkCompleted(t, e.status(id))
	evs, n := e.history(id, exec)
	checkHello(t, evs, n)
	if got := commits.check(t); got != 4 {
		t.Errorf("%d episodes committed, want 4", got)
	}
	for _, city := range []string{"Tokyo", "Seattle", "London"} {
		if c := acts.get(city); c != 1 {
			t.Errorf("activity for %s ran %d times, want 1", city, c)
		}
	}
}

// TestLateWorkAfterPurgeDoesNotResurrect: an instance finishes, and the
// worker does not keep the finished run in memory. The instance is purged.
// A late duplicate of its last work item must not write back a status
// record claiming a history that no longer exists.
func TestLateWorkAfterPurgeDoesNotResurrect(t *testing.T) {
	e := newEnv(t)
	w := e.newWorker(helloRegistry(t, true, newCounter()), worker.Options{Logger: nopLogger})
	e.run(w, "E1_HelloSequence")
	const id = "purged"
	e.start("E1_HelloSequence", id, nil)
	st := e.wait(id, 30*time.Second)
	checkCompleted(t, st)
	e.eventually("every work item acknowledged", 20*time.Second, e.orchDrained)
	if n := worker.CacheLen(w); n != 0 {
		t.Fatalf("worker holds %d instances hot after the run finished, want 0", n)
	}
	if err := e.client.Purge(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	e.publishWork(taskCompleted(id, st.ExecutionID, 2, "Hello London!"), "late")
	e.eventually("the late work item acknowledged", 20*time.Second, e.orchDrained)
	if got, _, err := e.store.GetStatus(context.Background(), id); err == nil {
		t.Errorf("purged instance has a status record again: %s at episode %d", got.RuntimeStatus, got.Episode)
	}
	if _, n := e.history(id, st.ExecutionID); n != 0 {
		t.Errorf("purged instance has %d episodes again", n)
	}
}
