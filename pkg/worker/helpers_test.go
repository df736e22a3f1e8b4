package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/jetflow/jetflow/internal/natstest"
	"github.com/jetflow/jetflow/pkg/client"
	"github.com/jetflow/jetflow/pkg/dispatcher"
	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/samples"
	"github.com/jetflow/jetflow/pkg/worker"
)

// testStore is the store configuration of every test: short ack waits so
// that redeliveries come quickly.
var testStore = jetstore.Config{
	Memory:              true,
	OrchestratorAckWait: 2 * time.Second,
	ActivityAckWait:     2 * time.Second,
}

// env is one embedded server with a dispatcher and a client.
type env struct {
	t      *testing.T
	nc     *nats.Conn
	js     jetstream.JetStream
	store  *jetstore.Store
	client *client.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, testStore)
}

func newEnvWith(t *testing.T, cfg jetstore.Config) *env {
	t.Helper()
	return newEnvOn(t, natstest.Start(t), cfg)
}

// newEnvOn is newEnvWith on a server the test started.
func newEnvOn(t *testing.T, srv *natstest.Server, cfg jetstore.Config) *env {
	t.Helper()
	nc, js := natstest.Connect(t, srv)
	ctx := context.Background()
	d, err := dispatcher.New(ctx, nc, js, dispatcher.Options{Store: cfg})
	if err != nil {
		t.Fatalf("dispatcher: %v", err)
	}
	dctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(dctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("dispatcher run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("dispatcher did not stop")
		}
	})
	store, err := jetstore.Open(ctx, js)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	c, err := client.New(ctx, nc, js)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	return &env{t: t, nc: nc, js: js, store: store, client: c}
}

// newWorker returns a worker that is not running yet.
func (e *env) newWorker(reg *worker.Registry, opts worker.Options) *worker.Worker {
	e.t.Helper()
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = 5 * time.Second
	}
	w, err := worker.New(context.Background(), e.js, reg, opts)
	if err != nil {
		e.t.Fatalf("worker: %v", err)
	}
	return w
}

// run runs w until the returned stop is called or the test ends. stop
// waits for Run to return.
func (e *env) run(w *worker.Worker, names ...string) (stop func()) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("worker run: %v", err)
				}
			case <-time.After(20 * time.Second):
				e.t.Errorf("worker did not stop")
			}
		})
	}
	e.t.Cleanup(stop)
	// Run registers its names before it pulls work; wait for that so that
	// the dispatcher accepts starts.
	for _, n := range names {
		e.eventually("orchestrator "+n+" registered", 10*time.Second, func() (bool, string) {
			ok, err := e.store.Registered(context.Background(), jetstore.KindOrchestrator, n)
			return ok, fmt.Sprint(err)
		})
	}
	return stop
}

// eventually polls cond until it holds or timeout passes; then it fails
// the test with cond's last explanation.
func (e *env) eventually(what string, timeout time.Duration, cond func() (bool, string)) {
	e.t.Helper()
	eventually(e.t, what, timeout, cond)
}

func eventually(t testing.TB, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %s", timeout, what, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) start(name, id string, input any) {
	e.t.Helper()
	b, err := json.Marshal(input)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.client.Start(context.Background(), name, id, b); err != nil {
		e.t.Fatalf("start %s: %v", id, err)
	}
}

func (e *env) wait(id string, timeout time.Duration) *messages.Status {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	st, err := e.client.WaitForCompletion(ctx, id)
	if err != nil {
		cur, _ := e.client.Status(context.Background(), id)
		e.t.Fatalf("wait for %s: %v (status now %+v)", id, err, cur)
	}
	return st
}

func (e *env) status(id string) *messages.Status {
	e.t.Helper()
	st, _, err := e.store.GetStatus(context.Background(), id)
	if err != nil {
		e.t.Fatalf("status of %s: %v", id, err)
	}
	return st
}

// streamState returns the state of a stream.
func (e *env) streamState(name string) jetstream.StreamState {
	e.t.Helper()
	s, err := e.js.Stream(context.Background(), name)
	if err != nil {
		e.t.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		e.t.Fatalf("stream %s info: %v", name, err)
	}
	return info.State
}

// orchDrained reports whether every orchestrator work item was acknowledged:
// the work-queue stream is empty and the consumer waits for no ack.
func (e *env) orchDrained() (bool, string) {
	st := e.streamState(messages.OrchestratorStream)
	c, err := e.js.Consumer(context.Background(), messages.OrchestratorStream, jetstore.OrchestratorConsumer)
	if err != nil {
		return false, err.Error()
	}
	ci, err := c.Info(context.Background())
	if err != nil {
		return false, err.Error()
	}
	why := fmt.Sprintf("stream holds %d messages, consumer: %d pending, %d unacked, %d redelivered",
		st.Msgs, ci.NumPending, ci.NumAckPending, ci.NumRedelivered)
	return st.Msgs == 0 && ci.NumPending == 0 && ci.NumAckPending == 0, why
}

// publishWork publishes an orchestrator work item with its own message ID.
func (e *env) publishWork(w *messages.OrchestratorWork, msgID string) {
	e.t.Helper()
	w.V = messages.SchemaVersion
	b, err := messages.Encode(w)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.js.Publish(context.Background(), messages.OrchestratorSubject(w.InstanceID), b, jetstream.WithMsgID(msgID)); err != nil {
		e.t.Fatalf("publish work: %v", err)
	}
}

func (e *env) history(id, exec string) ([]messages.Event, uint64) {
	e.t.Helper()
	evs, n, err := e.store.LoadHistory(context.Background(), id, exec)
	if err != nil {
		e.t.Fatalf("history of %s: %v", id, err)
	}
	return evs, n
}

// helloOutput is what E1_HelloSequence returns.
func helloOutput(t testing.TB) []byte {
	t.Helper()
	var out []string
	for _, c := range samples.Cities {
		out = append(out, "Hello "+c+"!")
	}
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// counter counts calls by key.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func newCounter() *counter { return &counter{n: map[string]int{}} }

func (c *counter) add(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[k]++
	return c.n[k]
}

func (c *counter) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[k]
}

func (c *counter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]int, len(c.n))
	for k, v := range c.n {
		m[k] = v
	}
	return m
}

// helloRegistry hosts E1_HelloSequence if orchestrator is set and, if acts
// is not nil, an E1_SayHello that counts its calls by city.
func helloRegistry(t testing.TB, orchestrator bool, acts *counter) *worker.Registry {
	t.Helper()
	reg := worker.NewRegistry()
	if orchestrator {
		if err := reg.AddOrchestrator("E1_HelloSequence", samples.HelloSequence); err != nil {
			t.Fatal(err)
		}
	}
	if acts != nil {
		err := reg.AddActivity("E1_SayHello", func(ctx context.Context, in worker.Input) (any, error) {
			var city string
			_ = in.Get(&city)
			acts.add(city)
			return samples.SayHello(ctx, in)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return reg
}

// checkHello checks the complete history of one E1_HelloSequence run:
// episodes 1..4 (LoadHistory refuses gaps), one start, each task scheduled
// once and completed once, one completion with the right output.
func checkHello(t testing.TB, evs []messages.Event, episodes uint64) {
	t.Helper()
	if episodes != 4 {
		t.Errorf("history has %d episodes, want 4", episodes)
	}
	count := map[string]int{}
	for _, ev := range evs {
		switch ev.Type {
		case messages.EventTaskScheduled, messages.EventTaskCompleted:
			count[fmt.Sprintf("%s#%d", ev.Type, ev.TaskID)]++
		case messages.EventExecutionStarted, messages.EventExecutionCompleted, messages.EventOrchestratorStarted, messages.EventOrchestratorCompleted:
			count[ev.Type.String()]++
			if ev.Type == messages.EventExecutionCompleted {
				if ev.Status != messages.StatusCompleted || string(ev.Result) != string(helloOutput(t)) {
					t.Errorf("completion %s %s, want Completed %s", ev.Status, ev.Result, helloOutput(t))
				}
			}
		default:
			t.Errorf("unexpected event %s", ev.Type)
		}
	}
	want := map[string]int{
		"ExecutionStarted": 1, "ExecutionCompleted": 1, "OrchestratorStarted": 4, "OrchestratorCompleted": 4,
		"TaskScheduled#0": 1, "TaskScheduled#1": 1, "TaskScheduled#2": 1,
		"TaskCompleted#0": 1, "TaskCompleted#1": 1, "TaskCompleted#2": 1,
	}
	for k, n := range want {
		if count[k] != n {
			t.Errorf("history has %d %s, want %d", count[k], k, n)
		}
	}
	for k, n := range count {
		if _, ok := want[k]; !ok {
			t.Errorf("history has %d unexpected %s", n, k)
		}
	}
}

// checkCompleted checks the final status record of an E1_HelloSequence run.
func checkCompleted(t testing.TB, st *messages.Status) {
	t.Helper()
	if st.RuntimeStatus != messages.StatusCompleted || string(st.Output) != string(helloOutput(t)) || st.Episode != 4 {
		t.Errorf("status %s output %s episode %d, want Completed %s episode 4", st.RuntimeStatus, st.Output, st.Episode, helloOutput(t))
	}
	if string(st.CustomStatus) != `"London"` {
		t.Errorf("custom status %s, want \"London\"", st.CustomStatus)
	}
}

var errCrash = errors.New("simulated crash")

// nopLogger is used where a test does not look at the log.
var nopLogger = zap.NewNop()
