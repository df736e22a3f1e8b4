package worker_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/jetflow/jetflow/internal/natstest"
	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/replay"
	"github.com/jetflow/jetflow/pkg/worker"
)

// smallServer starts an embedded JetStream server whose max_payload is
// small, so that outputs over it stay cheap to make.
func smallServer(t *testing.T, maxPayload int32) *natstest.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: t.TempDir(), NoSigs: true, NoLog: true, MaxPayload: maxPayload})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		t.Fatal("embedded nats did not become ready")
	}
	s := &natstest.Server{Server: ns}
	t.Cleanup(s.Stop)
	return s
}

var overLimit = regexp.MustCompile(`is (\d+) bytes, over the limit of (\d+)`)

// checkOverLimit checks that msg says "<what> is N bytes, over the limit of
// M" with N as given and M below N.
func checkOverLimit(t *testing.T, msg, what string, n int) {
	t.Helper()
	if !strings.Contains(msg, what+" is ") {
		t.Errorf("message %.200q does not mention %q", msg, what)
	}
	m := overLimit.FindStringSubmatch(msg)
	if m == nil {
		t.Errorf("message %.200q does not state the size and the limit", msg)
		return
	}
	gotN, _ := strconv.Atoi(m[1])
	limit, _ := strconv.Atoi(m[2])
	if gotN != n || limit >= n || limit <= 0 {
		t.Errorf("message %.200q: size %d, limit %d; want size %d over a positive limit", msg, gotN, limit, n)
	}
}

// TestOversizedOutputFailsTheInstance: with a max_payload of 256 KiB, an
// orchestrator output or failure message too large for the status record
// fails the instance with a message that says so, instead of leaving it
// stuck; an activity result over half of max_payload becomes a TaskFailed,
// and so does one whose error message is that large (cut short). Outputs
// that fit are left alone.
func TestOversizedOutputFailsTheInstance(t *testing.T) {
	e := newEnvOn(t, smallServer(t, 256<<10), testStore)
	reg := worker.NewRegistry()
	add := func(name string, fn replay.Orchestrator) {
		if err := reg.AddOrchestrator(name, fn); err != nil {
			t.Fatal(err)
		}
	}
	// Output returns a string of n bytes after one activity.
	add("Output", func(ctx *replay.Context) (any, error) {
		var n int
		if err := ctx.GetInput(&n); err != nil {
			return nil, err
		}
		if err := ctx.CallActivity("Echo", "x").Await(nil); err != nil {
			return nil, err
		}
		return strings.Repeat("o", n), nil
	})
	add("Error", func(ctx *replay.Context) (any, error) {
		var n int
		if err := ctx.GetInput(&n); err != nil {
			return nil, err
		}
		return nil, errors.New(strings.Repeat("e", n))
	})
	// Call returns what became of an activity, as its output.
	add("Call", func(ctx *replay.Context) (any, error) {
		var in struct {
			Activity string
			N        int
		}
		if err := ctx.GetInput(&in); err != nil {
			return nil, err
		}
		var s string
		if err := ctx.CallActivity(in.Activity, in.N).Await(&s); err != nil {
			return "failed: " + err.Error(), nil
		}
		return fmt.Sprintf("returned %d bytes", len(s)), nil
	})
	for name, fn := range map[string]worker.Activity{
		"Echo": func(_ context.Context, in worker.Input) (any, error) { return in.Raw(), nil },
		"Huge": func(_ context.Context, in worker.Input) (any, error) {
			var n int
			err := in.Get(&n)
			return strings.Repeat("h", n), err
		},
		"HugeError": func(_ context.Context, in worker.Input) (any, error) {
			var n int
			if err := in.Get(&n); err != nil {
				return nil, err
			}
			return nil, errors.New(strings.Repeat("E", n))
		},
	} {
		if err := reg.AddActivity(name, fn); err != nil {
			t.Fatal(err)
		}
	}
	w := e.newWorker(reg, worker.Options{Logger: nopLogger})
	e.run(w, "Output", "Error", "Call")

	run := func(id, name string, input any) *messages.Status {
		t.Helper()
		e.start(name, id, input)
		return e.wait(id, 30*time.Second)
	}
	final := func(id string) messages.Event {
		t.Helper()
		evs, _ := e.history(id, e.status(id).ExecutionID)
		for _, ev := range evs {
			if ev.Type == messages.EventExecutionCompleted {
				return ev
			}
		}
		t.Fatalf("%s: no ExecutionCompleted in history", id)
		return messages.Event{}
	}

	if st := run("output-fits", "Output", 100_000); st.RuntimeStatus != messages.StatusCompleted || len(st.Output) != 100_002 {
		t.Errorf("output that fits: %s with %d bytes of output", st.RuntimeStatus, len(st.Output))
	}

	st := run("output-too-large", "Output", 300_000)
	if st.RuntimeStatus != messages.StatusFailed || st.Failure == nil || st.Failure.Type != "OutputTooLarge" {
		t.Fatalf("oversized output: %s %+v, want Failed with OutputTooLarge", st.RuntimeStatus, st.Failure)
	}
	checkOverLimit(t, st.Failure.Message, "orchestrator output", 300_002) // JSON adds the quotes
	if f := final("output-too-large"); f.Status != messages.StatusFailed || f.Failure == nil || f.Failure.Message != st.Failure.Message || len(f.Result) != 0 {
		t.Errorf("history ends %s %+v with %d bytes of result, want the same failure", f.Status, f.Failure, len(f.Result))
	}

	st = run("error-too-large", "Error", 300_000)
	if st.RuntimeStatus != messages.StatusFailed || st.Failure == nil || st.Failure.Type != "OutputTooLarge" {
		t.Fatalf("oversized failure: %s %+v, want Failed with OutputTooLarge", st.RuntimeStatus, st.Failure)
	}
	checkOverLimit(t, st.Failure.Message, "orchestrator failure message", 300_000)
	if !strings.Contains(st.Failure.Message, "it begins: eeee") || len(st.Failure.Message) > 2000 {
		t.Errorf("failure message %.300q (%d bytes), want the limit and the start of the original", st.Failure.Message, len(st.Failure.Message))
	}

	if st := run("activity-fits", "Call", map[string]any{"Activity": "Huge", "N": 100_000}); string(st.Output) != `"returned 100000 bytes"` {
		t.Errorf("activity result that fits: %s %s", st.RuntimeStatus, st.Output)
	}
	st = run("activity-too-large", "Call", map[string]any{"Activity": "Huge", "N": 200_000})
	if st.RuntimeStatus != messages.StatusCompleted || !strings.HasPrefix(string(st.Output), `"failed: task \"Huge\" failed: activity \"Huge\" output is`) {
		t.Fatalf("oversized activity result: %s %.300s, want the task failed", st.RuntimeStatus, st.Output)
	}
	checkOverLimit(t, string(st.Output), `activity \"Huge\" output`, 200_002)

	st = run("activity-error-too-large", "Call", map[string]any{"Activity": "HugeError", "N": 300_000})
	if st.RuntimeStatus != messages.StatusCompleted || !strings.Contains(string(st.Output), `activity \"HugeError\" failure message is 300000 bytes, over the limit of 131072`) {
		t.Errorf("oversized activity error: %s %.300s", st.RuntimeStatus, st.Output)
	}
	e.eventually("every work item acknowledged", 20*time.Second, e.orchDrained)
}
