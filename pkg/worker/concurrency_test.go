package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/worker"
)

// commitLog records, through the StageAppended hook, every episode a
// worker committed: AppendEpisode returned without error.
type commitLog struct {
	mu sync.Mutex
	by map[string][]string // "<instance>/<exec>/<episode>" -> workers
}

func newCommitLog() *commitLog { return &commitLog{by: map[string][]string{}} }

func (c *commitLog) hook(name string, next func(worker.Stage, string, string, uint64) error) func(worker.Stage, string, string, uint64) error {
	return func(stage worker.Stage, id, exec string, ep uint64) error {
		if stage == worker.StageAppended {
			c.mu.Lock()
			k := fmt.Sprintf("%s/%s/%d", id, exec, ep)
			c.by[k] = append(c.by[k], name)
			c.mu.Unlock()
		}
		if next != nil {
			return next(stage, id, exec, ep)
		}
		return nil
	}
}

func (c *commitLog) workers(id, exec string, ep uint64) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.by[fmt.Sprintf("%s/%s/%d", id, exec, ep)]...)
}

// check fails the test for every episode committed more than once, and
// returns how many were committed.
func (c *commitLog) check(t testing.TB) int {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, ws := range c.by {
		if len(ws) != 1 {
			t.Errorf("episode %s committed %d times, by %v", k, len(ws), ws)
		}
	}
	return len(c.by)
}

// activityHost stands in for activity workers: it runs every E1_SayHello
// task and publishes each result twice, under two message IDs, so that
// two orchestrator work items race for every episode.
func (e *env) activityHost(tasks *counter) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cons, err := e.js.Consumer(ctx, messages.ActivityStream, jetstore.ActivityConsumer)
	if err != nil {
		e.t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		task, err := messages.DecodeActivityTask(m.Data())
		if err != nil {
			e.t.Errorf("activity task: %v", err)
			_ = m.Term()
			return
		}
		tasks.add(fmt.Sprintf("%s/%d", task.InstanceID, task.TaskID))
		var city string
		_ = json.Unmarshal(task.Input, &city)
		res := taskCompleted(task.InstanceID, task.ExecutionID, task.TaskID, "Hello "+city+"!")
		res.V = messages.SchemaVersion
		b, err := messages.Encode(res)
		if err != nil {
			e.t.Error(err)
			return
		}
		subj := messages.OrchestratorSubject(task.InstanceID)
		for _, copy := range []string{"x", "y"} {
			msgID := fmt.Sprintf("%s:%s:%d", copy, task.InstanceID, task.TaskID)
			if _, err := e.js.Publish(ctx, subj, b, jetstream.WithMsgID(msgID)); err != nil {
				_ = m.Nak()
				return
			}
		}
		_ = m.Ack()
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		cc.Stop()
		<-cc.Closed()
		cancel()
	})
}

// TestConcurrentWorkersCommitOneEpisodePerSequence shows that two workers
// never both commit an episode of the same instance: every commit is
// recorded by a hook behind AppendEpisode, and every (instance, run,
// episode) may appear once.
func TestConcurrentWorkersCommitOneEpisodePerSequence(t *testing.T) {
	// Three workers, each with its own cache, run 100 instances; every
	// activity result is delivered twice, so duplicates race on every step.
	t.Run("duplicates", func(t *testing.T) {
		e := newEnv(t)
		commits := newCommitLog()
		var workers []*worker.Worker
		for i := range 3 {
			w := e.newWorker(helloRegistry(t, true, nil), worker.Options{Logger: nopLogger})
			worker.SetHook(w, commits.hook(fmt.Sprint("w", i), nil))
			e.run(w, "E1_HelloSequence")
			workers = append(workers, w)
		}
		tasks := newCounter()
		e.activityHost(tasks)

		const n = 100
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("conc-%03d", i)
			e.start("E1_HelloSequence", ids[i], nil)
		}
		for _, id := range ids {
			checkCompleted(t, e.wait(id, 60*time.Second))
		}
		e.eventually("every work item acknowledged", 30*time.Second, e.orchDrained)

		for _, id := range ids {
			exec := e.status(id).ExecutionID
			evs, eps := e.history(id, exec)
			checkHello(t, evs, eps)
			for ep := uint64(1); ep <= 4; ep++ {
				if ws := commits.workers(id, exec, ep); len(ws) != 1 {
					t.Errorf("%s episode %d committed by %v", id, ep, ws)
				}
			}
			for task := range 3 {
				if c := tasks.get(fmt.Sprintf("%s/%d", id, task)); c != 1 {
					t.Errorf("%s task %d delivered %d times", id, task, c)
				}
			}
		}
		if got := commits.check(t); got != 4*n {
			t.Errorf("%d episodes committed, want %d", got, 4*n)
		}
		// The history bucket keeps one value per key: a second write of a
		// key would have left a sequence behind.
		if st := e.streamState("KV_" + messages.HistoryBucket); st.Msgs != 4*n || st.LastSeq != 4*n {
			t.Errorf("history stream holds %d messages up to sequence %d, want %d", st.Msgs, st.LastSeq, 4*n)
		}
		if st := e.streamState(messages.ActivityStream); st.LastSeq != 3*n {
			t.Errorf("activity stream received %d tasks, want %d", st.LastSeq, 3*n)
		}
		var conflicts int64
		for _, w := range workers {
			conflicts += worker.Conflicts(w)
		}
		t.Logf("%d commits lost to another worker and retried", conflicts)
	})

	// Two workers hold the same work item and both reach AppendEpisode for
	// the same episode at once: one commits, the other loses, reloads, and
	// finds nothing left to do.
	t.Run("forced", func(t *testing.T) {
		e := newEnv(t)
		commits := newCommitLog()
		var (
			mu      sync.Mutex
			racing  bool
			arrived = map[uint64]int{}
			gate    = map[uint64]chan struct{}{}
		)
		barrier := func(stage worker.Stage, id, exec string, ep uint64) error {
			if stage != worker.StageBeforeAppend {
				return nil
			}
			mu.Lock()
			if !racing {
				mu.Unlock()
				return nil
			}
			arrived[ep]++
			ch := gate[ep]
			if ch == nil {
				ch = make(chan struct{})
				gate[ep] = ch
			}
			if arrived[ep] == 2 {
				close(ch)
			}
			mu.Unlock()
			select {
			case <-ch:
				return nil
			case <-time.After(10 * time.Second):
				return fmt.Errorf("episode %d: the other worker never arrived", ep)
			}
		}
		w1 := e.newWorker(helloRegistry(t, true, nil), worker.Options{Logger: nopLogger})
		w2 := e.newWorker(helloRegistry(t, true, nil), worker.Options{Logger: nopLogger})
		worker.SetHook(w1, commits.hook("w1", barrier))
		worker.SetHook(w2, commits.hook("w2", barrier))

		const id = "forced"
		exec := messages.NewID()
		ctx := context.Background()
		start := &messages.OrchestratorWork{V: messages.SchemaVersion, InstanceID: id, ExecutionID: exec,
			Events: []messages.Event{{Type: messages.EventExecutionStarted, Timestamp: time.Now().UTC(),
				Name: "E1_HelloSequence", Input: []byte("null"), InstanceID: id, ExecutionID: exec}}}
		if err := worker.Process(ctx, w1, start); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		racing = true
		mu.Unlock()
		for task, city := range []string{"Tokyo", "Seattle", "London"} {
			work := taskCompleted(id, exec, int32(task), "Hello "+city+"!")
			work.V = messages.SchemaVersion
			errs := make(chan error, 2)
			for _, w := range []*worker.Worker{w1, w2} {
				go func() { errs <- worker.Process(ctx, w, work) }()
			}
			for range 2 {
				if err := <-errs; err != nil {
					t.Fatalf("task %d: %v", task, err)
				}
			}
			ep := uint64(task + 2)
			mu.Lock()
			n := arrived[ep]
			mu.Unlock()
			if n != 2 {
				t.Fatalf("episode %d: %d workers reached AppendEpisode, want 2", ep, n)
			}
			if ws := commits.workers(id, exec, ep); len(ws) != 1 {
				t.Errorf("episode %d committed by %v, want exactly one worker", ep, ws)
			}
		}
		if c := worker.Conflicts(w1) + worker.Conflicts(w2); c != 3 {
			t.Errorf("%d conflicts, want 3 (one loser per race)", c)
		}
		commits.check(t)
		checkCompleted(t, e.status(id))
		evs, n := e.history(id, exec)
		checkHello(t, evs, n)
		// Both workers published the tasks they scheduled or owed; each is in
		// the activity stream once.
		if st := e.streamState(messages.ActivityStream); st.Msgs != 3 || st.LastSeq != 3 {
			t.Errorf("activity stream holds %d tasks up to sequence %d, want 3", st.Msgs, st.LastSeq)
		}
	})
}

// TestStaleCacheDoesNotDropWork: worker 1 keeps an instance hot while
// worker 2 commits the next episode. The result of the task scheduled in
// that episode then reaches worker 1, whose cached state has never heard of
// the task. It must not drop the result as a duplicate.
func TestStaleCacheDoesNotDropWork(t *testing.T) {
	e := newEnv(t)
	w1 := e.newWorker(helloRegistry(t, true, nil), worker.Options{Logger: nopLogger})
	w2 := e.newWorker(helloRegistry(t, true, nil), worker.Options{Logger: nopLogger})
	const id = "stale"
	exec := messages.NewID()
	ctx := context.Background()
	start := &messages.OrchestratorWork{V: messages.SchemaVersion, InstanceID: id, ExecutionID: exec,
		Events: []messages.Event{{Type: messages.EventExecutionStarted, Timestamp: time.Now().UTC(),
			Name: "E1_HelloSequence", Input: []byte("null"), InstanceID: id, ExecutionID: exec}}}
	step := func(w *worker.Worker, work *messages.OrchestratorWork, wantEpisode uint64) {
		t.Helper()
		work.V = messages.SchemaVersion
		if err := worker.Process(ctx, w, work); err != nil {
			t.Fatal(err)
		}
		if st := e.status(id); st.Episode != wantEpisode {
			t.Fatalf("status at episode %d, want %d", st.Episode, wantEpisode)
		}
	}
	step(w1, start, 1)                                        // w1: hot at episode 1
	step(w2, taskCompleted(id, exec, 0, "Hello Tokyo!"), 2)   // w2 commits episode 2
	step(w1, taskCompleted(id, exec, 1, "Hello Seattle!"), 3) // w1 is behind
	step(w2, taskCompleted(id, exec, 2, "Hello London!"), 4)  // so is w2 now
	step(w1, taskCompleted(id, exec, 2, "Hello London!"), 4)  // a duplicate changes nothing
	checkCompleted(t, e.status(id))
	evs, n := e.history(id, exec)
	checkHello(t, evs, n)
}
