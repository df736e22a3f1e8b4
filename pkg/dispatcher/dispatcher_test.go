package dispatcher_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/jetflow/jetflow/internal/natstest"
	"github.com/jetflow/jetflow/pkg/client"
	"github.com/jetflow/jetflow/pkg/dispatcher"
	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/samples"
	"github.com/jetflow/jetflow/pkg/worker"
)

// runDispatcher starts a dispatcher on its own connection and returns a
// function that stops it and waits until it has.
func runDispatcher(t *testing.T, srv *natstest.Server, log *zap.Logger) (stop func()) {
	t.Helper()
	nc, js := natstest.Connect(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	d, err := dispatcher.New(ctx, nc, js, dispatcher.Options{Logger: log})
	if err != nil {
		t.Fatalf("dispatcher: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dispatcher Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func runWorker(t *testing.T, srv *natstest.Server) {
	t.Helper()
	_, js := natstest.Connect(t, srv)
	reg := worker.NewRegistry()
	if err := samples.Register(reg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := worker.New(ctx, js, reg, worker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	st, err := jetstore.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "registration", func() bool {
		ok, err := st.Registered(ctx, jetstore.KindOrchestrator, "ReserveTicket")
		return err == nil && ok
	})
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func request(t *testing.T, nc *nats.Conn, subject string, data []byte) *messages.Reply {
	t.Helper()
	m, err := nc.Request(subject, data, 5*time.Second)
	if err != nil {
		t.Fatalf("request on %s: %v", subject, err)
	}
	r, err := messages.DecodeReply(m.Data)
	if err != nil {
		t.Fatalf("reply on %s does not decode: %v", subject, err)
	}
	return r
}

func encode(t *testing.T, c messages.Command) []byte {
	t.Helper()
	if c.V == 0 {
		c.V = messages.SchemaVersion
	}
	b, err := messages.Encode(&c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBadCommandsGetErrorReplies: malformed, unknown-version and invalid
// commands get an error reply with a clear message and a log line; none
// stops the dispatcher from serving the next good command.
func TestBadCommandsGetErrorReplies(t *testing.T) {
	srv := natstest.Start(t)
	core, logs := observer.New(zap.InfoLevel)
	runDispatcher(t, srv, zap.New(core))
	runWorker(t, srv)
	nc, _ := natstest.Connect(t, srv)
	start := messages.CommandSubject(messages.CmdStart)
	raise := messages.CommandSubject(messages.CmdRaiseEvent)
	huge := []byte(`"` + strings.Repeat("x", int(nc.MaxPayload()/2)) + `"`)
	cases := []struct {
		name    string
		subject string
		data    []byte
		code    messages.ErrorCode
		mention string
	}{
		{"garbage", start, []byte("\xc1\xff not msgpack"), messages.CodeBadRequest, "malformed"},
		{"empty", raise, nil, messages.CodeBadRequest, "malformed"},
		{"unknown version", start, encode(t, messages.Command{V: 99, Kind: messages.CmdStart, Name: "E1_HelloSequence"}), messages.CodeBadRequest, "version"},
		{"kind on the wrong subject", raise, encode(t, messages.Command{Kind: messages.CmdStart, Name: "E1_HelloSequence"}), messages.CodeBadRequest, "subject"},
		{"unknown orchestrator", start, encode(t, messages.Command{Kind: messages.CmdStart, Name: "NoSuchThing"}), messages.CodeBadRequest, "NoSuchThing"},
		{"hostile ID", start, encode(t, messages.Command{Kind: messages.CmdStart, Name: "E1_HelloSequence", InstanceID: "a.>"}), messages.CodeBadRequest, "instance ID"},
		{"empty ID", raise, encode(t, messages.Command{Kind: messages.CmdRaiseEvent, Name: "E"}), messages.CodeBadRequest, "empty"},
		{"invalid JSON input", start, encode(t, messages.Command{Kind: messages.CmdStart, Name: "E1_HelloSequence", Input: []byte("{")}), messages.CodeBadRequest, "JSON"},
		{"oversized input", start, encode(t, messages.Command{Kind: messages.CmdStart, Name: "E1_HelloSequence", Input: huge}), messages.CodeTooLarge, "limit"},
		{"raise on unknown instance", raise, encode(t, messages.Command{Kind: messages.CmdRaiseEvent, InstanceID: "nobody", Name: "E"}), messages.CodeNotFound, "nobody"},
		{"unknown command subject", messages.SubjectPrefix + ".cmd.bogus", encode(t, messages.Command{Kind: messages.CmdStart}), messages.CodeBadRequest, "subject"},
	}
	for _, c := range cases {
		r := request(t, nc, c.subject, c.data)
		if r.Code != c.code || !strings.Contains(r.Error, c.mention) {
			t.Errorf("%s: reply code %d %q, want code %d mentioning %q", c.name, r.Code, r.Error, c.code, c.mention)
		}
	}
	// Without a reply subject there is nobody to answer, but a log line.
	before := logs.Len()
	if err := nc.Publish(start, []byte("junk")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a log line for junk without reply", func() bool { return logs.Len() > before })
	if n := logs.FilterMessage("rejected command").Len(); n < 8 {
		t.Errorf("%d rejected-command log lines, want one per bad request", n)
	}

	// The dispatcher still serves good commands.
	r := request(t, nc, start, encode(t, messages.Command{Kind: messages.CmdStart, Name: "E1_HelloSequence", InstanceID: "still-fine"}))
	if r.Code != messages.CodeOK || r.InstanceID != "still-fine" {
		t.Fatalf("good start after bad ones: %+v", r)
	}
}

// TestTimerSurvivesDispatcherRestart: a durable timer is a message in a
// stream, not state in a dispatcher. The only dispatcher stops before the
// timer is due and a new one starts after: the timer still fires, once.
func TestTimerSurvivesDispatcherRestart(t *testing.T) {
	srv := natstest.Start(t)
	stop := runDispatcher(t, srv, zap.NewNop())
	runWorker(t, srv)
	nc, js := natstest.Connect(t, srv)
	ctx := context.Background()
	c, err := client.New(ctx, nc, js)
	if err != nil {
		t.Fatal(err)
	}
	id, err := c.Start(ctx, "ReserveTicket", "timer-restart", []byte(`{"userId":"u","discountTimeout":2}`))
	if err != nil {
		t.Fatal(err)
	}
	var due time.Time
	waitFor(t, 10*time.Second, "the offer", func() bool {
		st, err := c.Status(ctx, id)
		if err != nil || st.CustomStatus == nil {
			return false
		}
		due = st.LastUpdatedAt.Add(2 * time.Second)
		return true
	})
	stop()
	// Let the timer fall due while no dispatcher runs.
	waitFor(t, 10*time.Second, "the timer's due time", func() bool { return time.Now().After(due.Add(200 * time.Millisecond)) })
	st, err := c.Status(ctx, id)
	if err != nil || st.RuntimeStatus != messages.StatusRunning {
		t.Fatalf("with no dispatcher the instance should still wait: %+v %v", st, err)
	}
	runDispatcher(t, srv, zap.NewNop())
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	st, err = c.WaitForCompletion(wctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if string(st.CustomStatus) != `{"message":"The booking was not confirmed on time. Please try again."}` || string(st.Output) != "false" {
		t.Fatalf("after the timer: custom status %s output %s", st.CustomStatus, st.Output)
	}
	// The timer fired once: history holds one TimerFired.
	store, err := jetstore.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	history, _, err := store.LoadHistory(ctx, id, st.ExecutionID)
	if err != nil {
		t.Fatal(err)
	}
	fired := 0
	for _, e := range history {
		if e.Type == messages.EventTimerFired {
			fired++
		}
	}
	if fired != 1 {
		t.Fatalf("%d TimerFired events, want 1", fired)
	}
	// And the delay stream holds nothing more.
	s, err := js.Stream(ctx, messages.DelayStream)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "an empty delay stream", func() bool {
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
}

// TestPendingStartIsRepublished: a dispatcher that dies after writing the
// Pending record and before publishing the start leaves only the record.
// The next start for that ID publishes the original start again, so the
// instance runs with its first input; a different input is a conflict.
func TestPendingStartIsRepublished(t *testing.T) {
	srv := natstest.Start(t)
	runDispatcher(t, srv, zap.NewNop())
	runWorker(t, srv)
	nc, js := natstest.Connect(t, srv)
	ctx := context.Background()
	store, err := jetstore.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	// What the dying dispatcher left: the record, and no start message.
	now := time.Now().UTC()
	orphan := &messages.Status{InstanceID: "orphan", Name: "CityRecommender", ExecutionID: messages.NewID(),
		RuntimeStatus: messages.StatusPending, Input: []byte("1"), CreatedAt: now, LastUpdatedAt: now}
	if _, err := store.CreateStatus(ctx, orphan, 0); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(ctx, nc, js)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Start(ctx, "CityRecommender", "orphan", []byte("2"))
	if !errors.Is(err, client.ErrConflict) {
		t.Fatalf("start with another input: %v, want ErrConflict", err)
	}
	waitFor(t, 10*time.Second, "the orphan to run with its first input", func() bool {
		st, err := c.Status(ctx, "orphan")
		return err == nil && st.RuntimeStatus == messages.StatusRunning && st.ExecutionID == orphan.ExecutionID &&
			string(st.CustomStatus) == `{"recommendedCities":["Tokyo","Seattle"],"recommendedSeasons":["Spring","Summer"]}`
	})

	// An event for an orphaned Pending instance also brings its start.
	orphan2 := &messages.Status{InstanceID: "orphan2", Name: "CityRecommender", ExecutionID: messages.NewID(),
		RuntimeStatus: messages.StatusPending, Input: []byte("3"), CreatedAt: now, LastUpdatedAt: now}
	if _, err := store.CreateStatus(ctx, orphan2, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.RaiseEvent(ctx, "orphan2", "CitySelected", []byte(`"Tokyo"`)); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := c.WaitForCompletion(wctx, "orphan2")
	if err != nil {
		t.Fatal(err)
	}
	if string(st.Output) != `"Tokyo"` {
		t.Fatalf("orphan2 output %s, want \"Tokyo\"", st.Output)
	}
}
