package cluster

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
)

// Each fault test starts from a healthy topology, applies its fault while
// orchestrations run, and then checks that:
//   - every orchestration started completed, with the right output and
//     final custom status;
//   - every history holds exactly the events it should, none twice;
//   - activities ran again no more often than the tasks in flight at the
//     fault allow (at-least-once delivery), counting the re-runs.
//
// It leaves the topology healthy for the next test.

// loadRate is the starts per second of the background load in the tests
// that need one; modest, for a 2-core machine.
const loadRate = 4

// workerHolds is how many activity tasks one worker can hold at once:
// those running and as many again pulled and waiting.
func workerHolds() int {
	n, _ := strconv.Atoi(activityConcurrency)
	return 2 * n
}

// allHold is how many activity tasks the 3 workers can hold at once.
func allHold() int { return 3 * workerHolds() }

// TestWorkerKill kills a worker with SIGKILL while 500 E1_HelloSequence
// instances run. The others finish its work once the ack wait expires.
func TestWorkerKill(t *testing.T) {
	tp := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const n = 500
	prefix := "kw" + strconv.FormatInt(time.Now().Unix()%100000, 10)

	// Count completions as they happen, to kill the worker mid-run.
	var mu sync.Mutex
	completed := map[string]bool{}
	watch, err := tp.store.StatusKV().WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Stop()
	go func() {
		for e := range watch.Updates() {
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			if st, err := messages.DecodeStatus(e.Value()); err == nil && st.RuntimeStatus == messages.StatusCompleted && strings.HasPrefix(st.InstanceID, prefix) {
				mu.Lock()
				completed[st.InstanceID] = true
				mu.Unlock()
			}
		}
	}()
	done := func() int { mu.Lock(); defer mu.Unlock(); return len(completed) }

	before := tp.counters(t)
	sampler := tp.sampleInFlight(messages.ActivityStream, jetstore.ActivityConsumer)
	defer sampler.finish()
	idsCh := make(chan []string, 1)
	failedCh := make(chan []string, 1)
	go func() {
		ids, failed := tp.startMany(ctx, helloSequence, prefix, n)
		idsCh <- ids
		failedCh <- failed
	}()

	if err := retry(ctx, 20*time.Millisecond, func(ctx context.Context) error {
		if c := done(); c < 50 {
			return errorf("%d of %d completed", c, n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	victim := tp.workers[1]
	killAt := time.Now()
	if err := tp.kill(ctx, victim); err != nil {
		t.Fatal(err)
	}
	atKill := done()
	t.Logf("SIGKILL %s at %s with %d of %d instances completed", victim.name, killAt.Format("15:04:05.000"), atKill, n)
	if atKill >= n {
		t.Fatalf("every instance completed before the kill; the test did not exercise a crash")
	}
	ids := <-idsCh
	if failed := <-failedCh; len(failed) > 0 {
		t.Logf("%d starts failed; %d sent again", len(failed), tp.ensureStarted(t, helloSequence, failed))
	}
	statuses := tp.waitDone(t, ids, 3*time.Minute)
	tp.requireIdle(t, time.Minute)
	after := tp.counters(t)
	tasks := tp.verify(t, helloSequence, statuses)
	inflight, samples := sampler.max(killAt.Add(-time.Second), killAt.Add(200*time.Millisecond))
	t.Logf("activity tasks in flight cluster-wide around the kill: %d (%d samples)", inflight, samples)
	reruns(t, before, after, tasks, workerHolds(), "what the killed worker could hold: "+activityConcurrency+" running and "+activityConcurrency+" pulled", false)

	if err := tp.start(ctx, victim); err != nil {
		t.Fatal(err)
	}
	tp.requireHealthy(t, time.Minute)
}

// TestDispatcherKillTimersPending kills a dispatcher with SIGKILL while
// 50 ReserveTicket instances wait on 3-second timers. Every timer fires,
// once, from the other dispatcher.
func TestDispatcherKillTimersPending(t *testing.T) {
	tp := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const n = 50
	e := reserveTicket(3)
	prefix := "kd" + strconv.FormatInt(time.Now().Unix()%100000, 10)

	before := tp.counters(t)
	delayBefore, err := tp.workStats(ctx, messages.DelayStream, jetstore.DelayConsumer)
	if err != nil {
		t.Fatal(err)
	}
	sampler := tp.sampleInFlight(messages.ActivityStream, jetstore.ActivityConsumer)
	defer sampler.finish()
	ids, failed := tp.startMany(ctx, e, prefix, n)
	if len(failed) > 0 {
		t.Fatalf("%d starts failed with no fault yet: %v", len(failed), failed)
	}

	// Kill once most instances wait on their timer: the discount is shown
	// and the booking not yet timed out.
	waiting := func(ctx context.Context) (int, error) {
		c := 0
		for _, id := range ids {
			st, err := tp.client.Status(ctx, id)
			if err != nil {
				return 0, err
			}
			if st.RuntimeStatus == messages.StatusRunning && strings.Contains(string(st.CustomStatus), "discount") {
				c++
			}
		}
		return c, nil
	}
	if err := retry(ctx, 50*time.Millisecond, func(ctx context.Context) error {
		c, err := waiting(ctx)
		if err == nil && c < n*4/5 {
			err = errorf("%d of %d waiting on their timer", c, n)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	victim := tp.dispatchers[0]
	killAt := time.Now()
	if err := tp.kill(ctx, victim); err != nil {
		t.Fatal(err)
	}
	pending, _ := waiting(ctx)
	t.Logf("SIGKILL %s with %d of %d timers pending", victim.name, pending, n)
	if pending == 0 {
		t.Fatalf("no timer pending at the kill; the test did not exercise it")
	}
	statuses := tp.waitDone(t, ids, 3*time.Minute)
	t.Logf("last timer fired %s after the kill", time.Since(killAt).Round(100*time.Millisecond))
	tp.requireIdle(t, time.Minute)
	after := tp.counters(t)
	tasks := tp.verify(t, e, statuses)
	inflight, _ := sampler.max(killAt.Add(-time.Second), killAt.Add(200*time.Millisecond))
	t.Logf("activity tasks in flight around the kill: %d", inflight)
	reruns(t, before, after, tasks, 0, "a dispatcher holds no activity task", true)
	delayAfter, err := tp.workStats(ctx, messages.DelayStream, jetstore.DelayConsumer)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("delayed messages: %d published, %d deliveries (a timer not yet due is handed back and delivered again)",
		delayAfter.published-delayBefore.published, delayAfter.delivered-delayBefore.delivered)

	if err := tp.start(ctx, victim); err != nil {
		t.Fatal(err)
	}
	tp.requireHealthy(t, time.Minute)
}

// TestNATSLeaderKillAndPause kills the NATS node leading the orchestrator
// stream with SIGKILL and restarts it, then pauses another node for 30 s,
// all under a steady load of E1_HelloSequence instances.
func TestNATSLeaderKillAndPause(t *testing.T) {
	tp := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	prefix := "kn" + strconv.FormatInt(time.Now().Unix()%100000, 10)

	before := tp.counters(t)
	sampler := tp.sampleInFlight(messages.ActivityStream, jetstore.ActivityConsumer)
	defer sampler.finish()
	faultStart := time.Now()
	l := tp.startLoad(ctx, helloSequence, prefix, loadRate)
	time.Sleep(3 * time.Second)

	leader, err := tp.streamLeader(ctx, messages.OrchestratorStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.kill(ctx, leader); err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGKILL %s, leader of %s, after %d starts", leader.name, messages.OrchestratorStream, l.issued.Load())
	if err := retry(ctx, 250*time.Millisecond, func(ctx context.Context) error {
		n, err := tp.streamLeader(ctx, messages.OrchestratorStream)
		if err == nil && n == leader {
			err = errorf("%s still leads", leader.name)
		}
		if err == nil {
			t.Logf("%s now leads %s", n.name, messages.OrchestratorStream)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if err := tp.start(ctx, leader); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s restarted after %d starts", leader.name, l.issued.Load())
	tp.requireHealthy(t, 2*time.Minute)

	// Pause another node: the current orchestrator-stream leader unless
	// that is the node just restarted.
	other, err := tp.streamLeader(ctx, messages.OrchestratorStream)
	if err != nil {
		t.Fatal(err)
	}
	if other == leader {
		for _, n := range tp.nats {
			if n != leader {
				other = n
				break
			}
		}
	}
	if err := tp.pause(ctx, other); err != nil {
		t.Fatal(err)
	}
	t.Logf("paused %s for 30 s after %d starts", other.name, l.issued.Load())
	time.Sleep(30 * time.Second)
	if err := tp.unpause(ctx, other); err != nil {
		t.Fatal(err)
	}
	t.Logf("unpaused %s after %d starts", other.name, l.issued.Load())
	tp.requireHealthy(t, 2*time.Minute)
	time.Sleep(2 * time.Second)
	ids := l.finish(t, tp)
	faultEnd := time.Now()

	statuses := tp.waitDone(t, ids, 3*time.Minute)
	tp.requireIdle(t, time.Minute)
	after := tp.counters(t)
	tasks := tp.verify(t, helloSequence, statuses)
	inflight, samples := sampler.max(faultStart, faultEnd)
	t.Logf("activity tasks in flight during the faults: at most %d in %d samples", inflight, samples)
	reruns(t, before, after, tasks, 2*allHold(), "two faults, each at most every task the 3 workers held", true)
}

// TestRollingRestart restarts every worker and dispatcher in turn with
// SIGTERM under a steady load: each must exit 0 on its own.
func TestRollingRestart(t *testing.T) {
	tp := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	prefix := "rr" + strconv.FormatInt(time.Now().Unix()%100000, 10)

	before := tp.counters(t)
	sampler := tp.sampleInFlight(messages.ActivityStream, jetstore.ActivityConsumer)
	defer sampler.finish()
	faultStart := time.Now()
	l := tp.startLoad(ctx, helloSequence, prefix, loadRate)
	time.Sleep(2 * time.Second)
	for _, n := range append(append([]*node{}, tp.workers...), tp.dispatchers...) {
		stopAt := time.Now()
		code, err := tp.terminate(ctx, n, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		stopped := time.Since(stopAt)
		if code != 0 {
			t.Errorf("%s exited with %d after SIGTERM, want 0", n.name, code)
		}
		if err := tp.start(ctx, n); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: SIGTERM, exit %d after %s, ready again after %s", n.name, code, stopped.Round(10*time.Millisecond), time.Since(stopAt).Round(10*time.Millisecond))
		time.Sleep(time.Second)
	}
	time.Sleep(2 * time.Second)
	ids := l.finish(t, tp)
	faultEnd := time.Now()

	statuses := tp.waitDone(t, ids, 3*time.Minute)
	tp.requireIdle(t, time.Minute)
	after := tp.counters(t)
	tasks := tp.verify(t, helloSequence, statuses)
	inflight, samples := sampler.max(faultStart, faultEnd)
	t.Logf("activity tasks in flight during the restarts: at most %d in %d samples", inflight, samples)
	reruns(t, before, after, tasks, allHold(), "each restarted worker at most what it held", false)
	tp.requireHealthy(t, time.Minute)
}

// TestNATSNodeCutOff disconnects the NATS node leading the activity
// stream from the network for 15 s under a steady load, then reconnects it.
func TestNATSNodeCutOff(t *testing.T) {
	tp := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	prefix := "cn" + strconv.FormatInt(time.Now().Unix()%100000, 10)

	before := tp.counters(t)
	sampler := tp.sampleInFlight(messages.ActivityStream, jetstore.ActivityConsumer)
	defer sampler.finish()
	faultStart := time.Now()
	l := tp.startLoad(ctx, helloSequence, prefix, loadRate)
	time.Sleep(3 * time.Second)
	victim, err := tp.streamLeader(ctx, messages.ActivityStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.disconnect(ctx, victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("cut %s (leader of %s) off the network after %d starts", victim.name, messages.ActivityStream, l.issued.Load())
	time.Sleep(15 * time.Second)
	if err := tp.connect(ctx, victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("reconnected %s after %d starts", victim.name, l.issued.Load())
	tp.requireHealthy(t, 2*time.Minute)
	time.Sleep(2 * time.Second)
	ids := l.finish(t, tp)
	faultEnd := time.Now()

	statuses := tp.waitDone(t, ids, 3*time.Minute)
	tp.requireIdle(t, time.Minute)
	after := tp.counters(t)
	tasks := tp.verify(t, helloSequence, statuses)
	inflight, samples := sampler.max(faultStart, faultEnd)
	t.Logf("activity tasks in flight during the cut: at most %d in %d samples", inflight, samples)
	reruns(t, before, after, tasks, allHold(), "one fault, at most every task the 3 workers held", true)
}
