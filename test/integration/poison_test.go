package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/jetflow/jetflow/internal/natstest"
	"github.com/jetflow/jetflow/pkg/client"
	"github.com/jetflow/jetflow/pkg/dispatcher"
	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/replay"
	"github.com/jetflow/jetflow/pkg/telemetry"
	"github.com/jetflow/jetflow/pkg/worker"
)

// poisonStack runs a dispatcher and a worker hosting reg, with work given
// up on after 3 deliveries of 1 s each.
type poisonStack struct {
	srv     *natstest.Server
	js      jetstream.JetStream
	client  *client.Client
	metrics *prometheus.Registry
}

func startPoisonStack(t *testing.T, workers *worker.Registry) *poisonStack {
	t.Helper()
	srv := natstest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	var done []chan error
	t.Cleanup(func() {
		cancel()
		for _, d := range done {
			<-d
		}
	})
	nc, js := natstest.Connect(t, srv)
	reg := prometheus.NewRegistry()
	m := telemetry.NewMetrics(reg)
	d, err := dispatcher.New(ctx, nc, js, dispatcher.Options{Logger: zaptest.NewLogger(t).Named("dispatcher"), Metrics: m,
		Store: jetstore.Config{MaxDeliver: 3, OrchestratorAckWait: time.Second, ActivityAckWait: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	dd := make(chan error, 1)
	done = append(done, dd)
	go func() { dd <- d.Run(ctx) }()
	_, wjs := natstest.Connect(t, srv)
	w, err := worker.New(ctx, wjs, workers, worker.Options{Logger: zaptest.NewLogger(t).Named("worker"), DrainTimeout: time.Second, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	wd := make(chan error, 1)
	done = append(done, wd)
	go func() { wd <- w.Run(ctx) }()
	c, err := client.New(ctx, nc, js)
	if err != nil {
		t.Fatal(err)
	}
	return &poisonStack{srv: srv, js: js, client: c, metrics: reg}
}

func (p *poisonStack) run(t *testing.T, name, id string, input []byte) *messages.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	waitFor(t, 10*time.Second, name+" registered", func() bool {
		ok, err := p.client.Store().Registered(ctx, jetstore.KindOrchestrator, name)
		return err == nil && ok
	})
	if _, err := p.client.Start(ctx, name, id, input); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	st, err := p.client.WaitForCompletion(ctx, id)
	if err != nil {
		t.Fatalf("%s did not finish: %v", id, err)
	}
	return st
}

// deadLetters returns the messages in the dead-letter stream.
func (p *poisonStack) deadLetters(t *testing.T) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	s, err := p.js.Stream(ctx, messages.DeadLetterStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		if m, err := s.GetMsg(ctx, seq); err == nil {
			out = append(out, m)
		}
	}
	return out
}

func TestFailingCode(t *testing.T) {
	var failures atomic.Int32
	reg := worker.NewRegistry()
	retry := replay.WithRetry(messages.RetryPolicy{FirstInterval: 50 * time.Millisecond, BackoffCoefficient: 2, MaxAttempts: 3})
	must(t, reg.AddActivity("AlwaysFails", func(context.Context, worker.Input) (any, error) {
		failures.Add(1)
		return nil, errors.New("boom")
	}))
	must(t, reg.AddActivity("Panics", func(context.Context, worker.Input) (any, error) { panic("activity exploded") }))
	must(t, reg.AddActivity("Echo", func(_ context.Context, in worker.Input) (any, error) { return json.RawMessage(in.Raw()), nil }))
	must(t, reg.AddOrchestrator("Catches", func(ctx *replay.Context) (any, error) {
		err := ctx.CallActivity("AlwaysFails", nil, retry).Await(nil)
		var tf *replay.TaskFailedError
		if !errors.As(err, &tf) {
			return nil, errors.New("expected a task failure")
		}
		return "caught: " + tf.Failure.Message, nil
	}))
	must(t, reg.AddOrchestrator("Uncaught", func(ctx *replay.Context) (any, error) {
		return nil, ctx.CallActivity("AlwaysFails", nil, retry).Await(nil)
	}))
	must(t, reg.AddOrchestrator("CallsPanicky", func(ctx *replay.Context) (any, error) {
		return nil, ctx.CallActivity("Panics", nil).Await(nil)
	}))
	must(t, reg.AddOrchestrator("PanicsItself", func(ctx *replay.Context) (any, error) {
		var s string
		_ = ctx.CallActivity("Echo", "x").Await(&s)
		panic("orchestrator exploded")
	}))
	must(t, reg.AddOrchestrator("Fine", func(ctx *replay.Context) (any, error) {
		var s string
		err := ctx.CallActivity("Echo", "still working").Await(&s)
		return s, err
	}))
	p := startPoisonStack(t, reg)

	st := p.run(t, "Catches", "catches", nil)
	if st.RuntimeStatus != messages.StatusCompleted || string(st.Output) != `"caught: boom"` {
		t.Errorf("Catches: %s %s", st.RuntimeStatus, st.Output)
	}
	if n := failures.Load(); n != 3 {
		t.Errorf("AlwaysFails ran %d times, want 3 (its retry policy)", n)
	}
	st = p.run(t, "Uncaught", "uncaught", nil)
	if st.RuntimeStatus != messages.StatusFailed || !strings.Contains(string(st.Output), "boom") {
		t.Errorf("Uncaught: %s %s, want Failed with the message", st.RuntimeStatus, st.Output)
	}
	st = p.run(t, "CallsPanicky", "panicky-activity", nil)
	if st.RuntimeStatus != messages.StatusFailed || !strings.Contains(string(st.Output), "activity exploded") {
		t.Errorf("CallsPanicky: %s %s", st.RuntimeStatus, st.Output)
	}
	st = p.run(t, "PanicsItself", "panicky-orchestrator", nil)
	if st.RuntimeStatus != messages.StatusFailed || !strings.Contains(string(st.Output), "orchestrator exploded") {
		t.Errorf("PanicsItself: %s %s", st.RuntimeStatus, st.Output)
	}
	// The worker survived all of that.
	st = p.run(t, "Fine", "fine", nil)
	if st.RuntimeStatus != messages.StatusCompleted || string(st.Output) != `"still working"` {
		t.Errorf("Fine: %s %s", st.RuntimeStatus, st.Output)
	}
}

// TestPoisonWorkIsDeadLettered: work that fails on every delivery stops
// after MaxDeliver, is copied to the dead-letter stream with the reason
// and its original bytes, and its instance ends Failed with a clear reason.
func TestPoisonWorkIsDeadLettered(t *testing.T) {
	reg := worker.NewRegistry()
	// An activity that never finishes: every delivery times out, as if
	// its worker crashed each time.
	must(t, reg.AddActivity("Hangs", func(ctx context.Context, _ worker.Input) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	must(t, reg.AddOrchestrator("CallsHangs", func(ctx *replay.Context) (any, error) {
		return nil, ctx.CallActivity("Hangs", "payload").Await(nil)
	}))
	p := startPoisonStack(t, reg)
	ctx := context.Background()

	st := p.run(t, "CallsHangs", "hangs", nil)
	if st.RuntimeStatus != messages.StatusFailed || !strings.Contains(string(st.Output), "3 deliveries") {
		t.Errorf("CallsHangs: %s %s, want Failed naming the deliveries", st.RuntimeStatus, st.Output)
	}

	// An orchestrator that some worker registered once, but no running
	// worker hosts: its start fails on every delivery.
	if err := p.client.Store().Register(ctx, jetstore.KindOrchestrator, "Ghost"); err != nil {
		t.Fatal(err)
	}
	st = p.run(t, "Ghost", "ghost", []byte(`{"x":1}`))
	if st.RuntimeStatus != messages.StatusFailed || !strings.Contains(string(st.Output), messages.DeadLetterStream) || string(st.Input) != `{"x":1}` {
		t.Errorf("Ghost: %s %s input %s", st.RuntimeStatus, st.Output, st.Input)
	}

	// Undecodable work is dead-lettered at once.
	nc, _ := natstest.Connect(t, p.srv)
	garbage := []byte("\x93\x01\x02 not a work item")
	if err := nc.Publish(messages.OrchestratorSubject("nobody"), garbage); err != nil {
		t.Fatal(err)
	}
	var dl []*jetstream.RawStreamMsg
	waitFor(t, 20*time.Second, "three dead letters", func() bool { dl = p.deadLetters(t); return len(dl) >= 3 })
	found := map[string]bool{}
	for _, m := range dl {
		reason := m.Header.Get(messages.HeaderDLQReason)
		src := m.Header.Get(messages.HeaderDLQStream)
		switch {
		case src == messages.ActivityStream && strings.Contains(reason, "delivered 3 times"):
			task, err := messages.DecodeActivityTask(m.Data)
			if err != nil || task.Name != "Hangs" || string(task.Input) != `"payload"` {
				t.Errorf("dead-lettered activity is not the original task: %v %+v", err, task)
			}
			found["activity"] = true
		case src == messages.OrchestratorStream && strings.Contains(reason, "delivered 3 times"):
			w, err := messages.DecodeOrchestratorWork(m.Data)
			if err != nil || w.InstanceID != "ghost" {
				t.Errorf("dead-lettered work item is not the original: %v %+v", err, w)
			}
			found["orchestrator"] = true
		case src == messages.OrchestratorStream && strings.Contains(reason, "malformed"):
			if string(m.Data) != string(garbage) {
				t.Errorf("dead-lettered garbage is %q, want the original bytes", m.Data)
			}
			found["garbage"] = true
		}
	}
	if len(found) != 3 {
		for _, m := range dl {
			t.Logf("dead letter from %s: %s", m.Header.Get(messages.HeaderDLQStream), m.Header.Get(messages.HeaderDLQReason))
		}
		t.Fatalf("dead letters found: %v, want activity, orchestrator and garbage", found)
	}
	// Each was counted, by the stream it came from.
	counted := map[string]float64{}
	families, err := p.metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "jetflow_dead_lettered_messages_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "stream" {
					counted[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	if counted[messages.ActivityStream] != 1 || counted[messages.OrchestratorStream] != 2 {
		t.Errorf("jetflow_dead_lettered_messages_total by stream: %v, want 1 activity and 2 orchestrator", counted)
	}
	// Nothing is left to be redelivered.
	for _, name := range []string{messages.OrchestratorStream, messages.ActivityStream, messages.AdvisoryStream} {
		s, err := p.js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, name+" to empty", func() bool {
			info, err := s.Info(ctx)
			return err == nil && info.State.Msgs == 0
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestDeadLetteredChildStartFailsItsParent: a sub-orchestration whose
// start fails on every delivery never runs, so it cannot report back; the
// dispatcher tells the parent, which catches the failure and finishes.
func TestDeadLetteredChildStartFailsItsParent(t *testing.T) {
	reg := worker.NewRegistry()
	must(t, reg.AddOrchestrator("CallsGhostChild", func(ctx *replay.Context) (any, error) {
		err := ctx.CallSubOrchestrator("GhostChild", "in", replay.WithInstanceID("ghost-child")).Await(nil)
		var tf *replay.TaskFailedError
		if errors.As(err, &tf) {
			return "caught: " + tf.Failure.Message, nil
		}
		return nil, fmt.Errorf("the sub-orchestration ended with %v, want a TaskFailedError", err)
	}))
	p := startPoisonStack(t, reg)
	ctx := context.Background()
	// Registered once by some worker, hosted by none that runs.
	if err := p.client.Store().Register(ctx, jetstore.KindOrchestrator, "GhostChild"); err != nil {
		t.Fatal(err)
	}
	st := p.run(t, "CallsGhostChild", "ghost-parent", nil)
	if st.RuntimeStatus != messages.StatusCompleted || !strings.Contains(string(st.Output), "never started") ||
		!strings.Contains(string(st.Output), messages.DeadLetterStream) {
		t.Fatalf("parent: %s %s, want Completed with the caught failure of the child's start", st.RuntimeStatus, st.Output)
	}
	var found bool
	for _, m := range p.deadLetters(t) {
		if w, err := messages.DecodeOrchestratorWork(m.Data); err == nil && w.InstanceID == "ghost-child" {
			found = true
		}
	}
	if !found {
		t.Error("the child's start is not in the dead-letter stream")
	}
}
