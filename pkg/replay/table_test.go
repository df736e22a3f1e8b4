package replay

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jetflow/jetflow/pkg/messages"
)

const (
	tScheduled = messages.EventTaskScheduled
	tTimer     = messages.EventTimerCreated
	tSub       = messages.EventSubOrchestrationCreated
	tSent      = messages.EventSent
	tDone      = messages.EventExecutionCompleted
	tCAN       = messages.EventContinuedAsNew
)

// tstep is one episode of a table case: the incoming events and the
// actions expected. dropped means every incoming event must be ignored
// (an empty episode, nothing to commit).
type tstep struct {
	in      []ev
	want    []act
	dropped bool
}

func in(evs ...ev) []ev { return evs }

var retryPolicy = messages.RetryPolicy{FirstInterval: 2 * time.Second, BackoffCoefficient: 2, MaxInterval: time.Minute, MaxAttempts: 4}

func sequence3(ctx *Context) (any, error) {
	var out []string
	for _, n := range []string{"A", "B", "C"} {
		var s string
		if err := ctx.CallActivity(n, n+"-in").Await(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func waitApprove(timeout time.Duration) Orchestrator {
	return func(ctx *Context) (any, error) {
		var opts []WaitOption
		if timeout > 0 {
			opts = append(opts, WithTimeout(timeout))
		}
		var v string
		err := ctx.WaitForExternalEvent("Approve", opts...).Await(&v)
		if errors.Is(err, ErrTimeout) {
			return "timed out", nil
		}
		return v, err
	}
}

func whenAnyActivityOrTimer(ctx *Context) (any, error) {
	a := ctx.CallActivity("A", nil)
	timer := ctx.CreateTimer(10 * time.Minute)
	i, err := ctx.WhenAny(a, timer)
	if err != nil {
		return nil, err
	}
	if i == 0 {
		var s string
		err := a.Await(&s)
		return "activity:" + s, err
	}
	return "timer", nil
}

func TestOrchestrators(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fn      Orchestrator
		input   string
		steps   []tstep
		status  messages.RuntimeStatus
		output  string // JSON result of the final event, when completed
		failure string // substring of the failure message, when failed
		check   func(t *testing.T, r *run)
	}{
		{
			name: "sequence of three activities",
			fn:   sequence3,
			steps: []tstep{
				{in: in(started("")), want: []act{{tScheduled, 0, "A"}}},
				{in: in(completed(0, `"a"`)), want: []act{{tScheduled, 1, "B"}}},
				{in: in(completed(1, `"b"`)), want: []act{{tScheduled, 2, "C"}}},
				{in: in(completed(2, `"c"`)), want: []act{{tDone, 0, ""}}},
			},
			status: messages.StatusCompleted, output: `["a","b","c"]`,
			check: func(t *testing.T, r *run) {
				if got := string(r.episodes[1].Actions[0].Input); got != `"B-in"` {
					t.Errorf("B input %s", got)
				}
			},
		},
		{
			name: "durable timer",
			fn: func(ctx *Context) (any, error) {
				if err := ctx.CreateTimer(time.Hour).Await(nil); err != nil {
					return nil, err
				}
				return ctx.CurrentTime().Format(time.RFC3339), nil
			},
			steps: []tstep{
				{in: in(started("")), want: []act{{tTimer, 0, ""}}},
				{in: in(fired(0)), want: []act{{tDone, 0, ""}}},
			},
			status: messages.StatusCompleted, output: `"2025-06-01T12:02:00Z"`,
			check: func(t *testing.T, r *run) {
				if got, want := r.episodes[0].Actions[0].FireAt, t0.Add(time.Minute+time.Hour); !got.Equal(want) {
					t.Errorf("timer FireAt %v, want %v", got, want)
				}
			},
		},
		{
			name: "wait for external event",
			fn:   waitApprove(0),
			steps: []tstep{
				{in: in(started("")), want: []act{}},
				{in: in(raised("Other", `1`, "")), want: []act{}},
				{in: in(raised("Approve", `"yes"`, "")), want: []act{{tDone, 0, ""}}},
			},
			status: messages.StatusCompleted, output: `"yes"`,
		},
		{
			name: "wait with timeout, event first",
			fn:   waitApprove(time.Hour),
			steps: []tstep{
				{in: in(started("")), want: []act{{tTimer, 0, ""}}},
				{in: in(raised("Approve", `"yes"`, "")), want: []act{{tDone, 0, ""}}},
				{in: in(fired(0)), dropped: true},
			},
			status: messages.StatusCompleted, output: `"yes"`,
		},
		{
			name: "wait with timeout, timeout first",
			fn:   waitApprove(time.Hour),
			steps: []tstep{
				{in: in(started("")), want: []act{{tTimer, 0, ""}}},
				{in: in(fired(0)), want: []act{{tDone, 0, ""}}},
				{in: in(raised("Approve", `"late"`, "")), dropped: true},
			},
			status: messages.StatusCompleted, output: `"timed out"`,
		},
		{
			name: "event raised before the wait is buffered",
			fn: func(ctx *Context) (any, error) {
				if err := ctx.CallActivity("A", nil).Await(nil); err != nil {
					return nil, err
				}
				return waitApprove(0)(ctx)
			},
			steps: []tstep{
				{in: in(started("")), want: []act{{tScheduled, 0, "A"}}},
				{in: in(raised("Approve", `"early"`, "")), want: []act{}},
				{in: in(completed(0, "")), want: []act{{tDone, 0, ""}}},
			},
			status: messages.StatusCompleted, output: `"early"`,
		},
		{
			name: "fan-out with WhenAll",
			fn: func(ctx *Context) (any, error) {
				tasks := make([]Task, 3)
				for i := range tasks {
					tasks[i] = ctx.CallActivity("Work", i)
				}
				if err := ctx.WhenAll(tasks...); err != nil {
					return nil, err
				}
				sum := 0
				for _, task := range tasks {
					var n int
					if err := task.Await(&n); err != nil {
						return nil, err
					}
					sum += n
				}
				return sum, nil
			},
			steps: []tstep{
				{in: in(started("")), want: []act{{tScheduled, 0, "Work"}, {tScheduled, 1, "Work"}, {tScheduled, 2, "Work"}}},
				{in: in(completed(2, "30"), completed(0, "10")), want: []act{}},
				{in: in(completed(1, "20")), want: []act{{tDone, 0, ""}}},
			},
			status: messages.StatusCompleted, output: `60`,
			check: func(t *testing.T, r *run) {
				for i, a := range r.episodes[0].Actions {
					if string(a.Input) != fmt.Sprint(i) {
						t.Errorf("Work %d input %s", i, a.Input)
					}
				}
			},
		},
		{
			name: "fan-out with WhenAll, one fails",
			fn: func(ctx *Context) (any, error) {
				return nil, ctx.WhenAll(ctx.CallActivity("Work", 0), ctx.CallActivity("Work", 1))
			},
			steps: []tstep{
				{in: in(started("")), want: []act{{tScheduled, 0, "Work"}, {tScheduled, 1, "Work"}}},
				{in: in(failed(1, "disk full")), want: []act{}},
				{in: in(completed(0, "")), want: []act{{tDone, 0, ""}}},
			},
			status: messages.StatusFailed, failure: "disk full",
		},
		{
			name: "WhenAny, activity wins",
			fn:   whenAnyActivityOrTimer,
			steps: []tstep{
				{in: in(started("")), want: []act{{tScheduled, 0, "A"}, {tTimer, 1, ""}}},
				{in: in(completed(0, `"a"`)), want: []act{{tDone, 0, ""}}},
				{in: in(fired(1)), dropped: true},
			},
			status: messages.StatusCompleted, output: `"activity:a"`,
		},
		{
			name: "WhenAny, timer wins",
			fn:   whenAnyActivityOrTimer,
			steps: []tstep{
				{in: in(started("")), want: []act{{tScheduled, 0, "A"}, {tTimer, 1, ""}}},
				{in: in(fired(1)), want: []act{{tDone, 0, ""}}},
			},
			status: messages.StatusCompleted, output: `"timer"`,
		},
		{
			name: "WhenAny, both in one episode: first in history order wins",
			fn:   whenAnyActivityOrTimer,
			steps: []tstep{
				{in: in(started("")), want: []act{{tScheduled, 0, "A"}, {tTimer, 1, ""}}},
				{in: in(fired(1), completed(0, `"a"`)), want: []act{{tDone, 0, ""}}},
			},
			status: messages.StatusCompleted, output: `"timer"`,
		},
		{
			name: "sub-orchestrator",
			fn: func(ctx *Context) (any, error) {
				var n int
				if err := ctx.CallSubOrchestrator("Child", 5).Await(&n); err != nil {
					return nil, err
				}
				return n * 2, nil
			},
			steps: []tstep{
				{in: in(started("")), want: []act{{tSub, 0, "Child"}}},
				{in: in(subCompleted(0, "7")), want: []act{{tDone, 0, ""}}},
			},
			status: messages.StatusCompleted, output: `14`,
			check: func(t *testing.T, r *run) {
				a := r.episodes[0].Actions[0]
				if a.InstanceID != iid+":0" || string(a.Input) != "5" {
					t.Errorf("sub-orchestration %q input %s", a.InstanceID, a.Input)
				}
			},
		},
		{
			name: "sub-orchestrator with instance ID, failing",
			fn: func(ctx *Context) (any, error) {
				return nil, ctx.CallSubOrchestrator("Child", nil, WithInstanceID("child-x")).Await(nil)
			},
			steps: []tstep{
				{in: in(started("")), want: []act{{tSub, 0, "Child"}}},
				{in: in(subFailed(0, "child broke")), want: []act{{tDone, 0, ""}}},
			},
			status: messages.StatusFailed, failure: "child broke",
			check: func(t *testing.T, r *run) {
				if a := r.episodes[0].Actions[0]; a.InstanceID != "child-x" {
					t.Errorf("sub-orchestration ID %q", a.InstanceID)
				}
				if f := r.hot.Final().Failure; f.Type != "TaskFailed" || f.Cause != "child broke" {
					t.Errorf("failure %+v", f)
				}
			},
		},
		{
			name: "ContinueAsNew",
			fn: func(ctx *Context) (any, error) {
				var n int
				if err := ctx.GetInput(&n); err != nil {
					return nil, err
				}
				if err := ctx.CallActivity("Tick", n).Await(nil); err != nil {
					return nil, err
				}
				return nil, ctx.ContinueAsNew(n + 1)
			},
			input: "1",
			steps: []tstep{
				{in: in(started("1")), want: []act{{tScheduled, 0, "Tick"}}},
				{in: in(completed(0, "")), want: []act{{tCAN, 0, orchName}}},
				{in: in(completed(0, "")), dropped: true},
			},
			status: messages.StatusContinuedAsNew,
			check: func(t *testing.T, r *run) {
				f := r.hot.Final()
				if string(f.Input) != "2" || f.ExecutionID == "" || f.ExecutionID == eid {
					t.Errorf("ContinuedAsNew input %s execution %q", f.Input, f.ExecutionID)
				}
			},
		},
		{
			name: "SendEvent",
			fn: func(ctx *Context) (any, error) {
				if err := ctx.SendEvent("other-1", "Ping", map[string]int{"n": 1}); err != nil {
					return nil, err
				}
				if err := ctx.SendEvent("bad.id", "Ping", nil); !errors.Is(err, messages.ErrInvalidID) {
					return nil, fmt.Errorf("SendEvent to a bad ID: %v", err)
				}
				return "sent", nil
			},
			steps: []tstep{
				{in: in(started("")), want: []act{{tSent, 0, "Ping"}, {tDone, 0, ""}}},
			},
			status: messages.StatusCompleted, output: `"sent"`,
			check: func(t *testing.T, r *run) {
				a := r.episodes[0].Actions[0]
				if a.InstanceID != "other-1" || string(a.Input) != `{"n":1}` {
					t.Errorf("sent %q %s", a.InstanceID, a.Input)
				}
				// The event sent in the last episode stays owed until a later episode.
				if o := r.hot.Outstanding(); len(o) != 2 || o[0].Type != tSent || o[1].Type != tDone {
					t.Errorf("Outstanding %+v", acts(o))
				}
			},
		},
		{
			name: "SendEvent mid-run is owed only until the next episode",
			fn: func(ctx *Context) (any, error) {
				if err := ctx.CallActivity("A", nil).Await(nil); err != nil {
					return nil, err
				}
				if err := ctx.SendEvent("other-1", "Ping", 1); err != nil {
					return nil, err
				}
				return nil, ctx.CallActivity("B", nil).Await(nil)
			},
			steps: []tstep{
				{in: in(started("")), want: []act{{tScheduled, 0, "A"}}},
				{in: in(completed(0, "")), want: []act{{tSent, 1, "Ping"}, {tScheduled, 2, "B"}}},
				{in: in(raised("Noise", "1", "")), want: []act{}},
				{in: in(completed(2, "")), want: []act{{tDone, 0, ""}}},
			},
			status: messages.StatusCompleted,
			check: func(t *testing.T, r *run) {
				if o := r.hot.Outstanding(); len(o) != 1 || o[0].Type != tDone {
					t.Errorf("Outstanding %+v", acts(o))
				}
			},
		},
		{
			name: "activity failure caught",
			fn: func(ctx *Context) (any, error) {
				err := ctx.CallActivity("Charge", nil).Await(nil)
				var tf *TaskFailedError
				if !errors.As(err, &tf) || tf.Name != "Charge" || tf.Failure.Message != "card declined" {
					return nil, fmt.Errorf("want TaskFailedError for Charge, got %#v", err)
				}
				if err := ctx.CallActivity("Refund", nil).Await(nil); err != nil {
					return nil, err
				}
				return "compensated", nil
			},
			steps: []tstep{
				{in: in(started("")), want: []act{{tScheduled, 0, "Charge"}}},
				{in: in(failed(0, "card declined")), want: []act{{tScheduled, 1, "Refund"}}},
				{in: in(completed(1, "")), want: []act{{tDone, 0, ""}}},
			},
			status: messages.StatusCompleted, output: `"compensated"`,
		},
		{
			name: "activity failure uncaught",
			fn: func(ctx *Context) (any, error) {
				return nil, ctx.CallActivity("Charge", nil).Await(nil)
			},
			steps: []tstep{
				{in: in(started("")), want: []act{{tScheduled, 0, "Charge"}}},
				{in: in(failed(0, "card declined")), want: []act{{tDone, 0, ""}}},
			},
			status: messages.StatusFailed, failure: "card declined",
			check: func(t *testing.T, r *run) {
				if f := r.hot.Final().Failure; f.Type != "TaskFailed" || f.Cause != "card declined" {
					t.Errorf("failure %+v", f)
				}
			},
		},
		{
			name: "retry policy carried on TaskScheduled",
			fn: func(ctx *Context) (any, error) {
				return nil, ctx.CallActivity("Flaky", nil, WithRetry(retryPolicy)).Await(nil)
			},
			steps: []tstep{
				{in: in(started("")), want: []act{{tScheduled, 0, "Flaky"}}},
				{in: in(completed(0, "")), want: []act{{tDone, 0, ""}}},
			},
			status: messages.StatusCompleted,
			check: func(t *testing.T, r *run) {
				if rp := r.episodes[0].Actions[0].Retry; rp == nil || *rp != retryPolicy {
					t.Errorf("Retry %+v, want %+v", rp, retryPolicy)
				}
			},
		},
		{
			name: "orchestrator error",
			fn: func(ctx *Context) (any, error) {
				return nil, errors.New("bad input")
			},
			steps:  []tstep{{in: in(started("")), want: []act{{tDone, 0, ""}}}},
			status: messages.StatusFailed, failure: "bad input",
			check: func(t *testing.T, r *run) {
				if f := r.hot.Final().Failure; f.Type != "OrchestratorError" {
					t.Errorf("failure %+v", f)
				}
			},
		},
		{
			name:   "output that is not JSON",
			fn:     func(ctx *Context) (any, error) { return make(chan int), nil },
			steps:  []tstep{{in: in(started("")), want: []act{{tDone, 0, ""}}}},
			status: messages.StatusFailed, failure: "output",
		},
		{
			name: "input read",
			fn: func(ctx *Context) (any, error) {
				var in struct{ N int }
				if err := ctx.GetInput(&in); err != nil {
					return nil, err
				}
				return in.N + 1, nil
			},
			input:  `{"N":41}`,
			steps:  []tstep{{in: in(started(`{"N":41}`)), want: []act{{tDone, 0, ""}}}},
			status: messages.StatusCompleted, output: `42`,
		},
		{
			name: "panic at start",
			fn:   func(ctx *Context) (any, error) { panic("boom at start") },
			steps: []tstep{
				{in: in(started("")), want: []act{{tDone, 0, ""}}},
			},
			status: messages.StatusFailed, failure: "boom at start",
		},
		{
			name: "panic after an activity",
			fn: func(ctx *Context) (any, error) {
				var p *struct{ X int }
				if err := ctx.CallActivity("A", nil).Await(nil); err != nil {
					return nil, err
				}
				return p.X, nil // nil pointer dereference
			},
			steps: []tstep{
				{in: in(started("")), want: []act{{tScheduled, 0, "A"}}},
				{in: in(completed(0, "")), want: []act{{tDone, 0, ""}}},
				{in: in(completed(0, "")), dropped: true},
			},
			status: messages.StatusFailed, failure: "nil pointer",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRun(t, tc.fn)
			for i, s := range tc.steps {
				ep := r.step(s.in...)
				if got := acts(ep.Actions); !reflect.DeepEqual(got, s.want) && !(s.dropped && len(got) == 0) {
					t.Fatalf("step %d: actions %+v, want %+v", i, got, s.want)
				}
				if s.dropped != (len(ep.Events) == 0) {
					t.Fatalf("step %d: %d events, dropped = %v", i, len(ep.Events), s.dropped)
				}
			}
			if got := r.hot.RuntimeStatus(); got != tc.status {
				t.Fatalf("status %s, want %s", got, tc.status)
			}
			if tc.input != "" && string(r.hot.Input()) != tc.input {
				t.Errorf("Input() = %s", r.hot.Input())
			}
			f := r.hot.Final()
			if tc.status.Terminal() {
				if f == nil || f.Type != tDone || f.Status != tc.status {
					t.Fatalf("final event %+v", f)
				}
			}
			if tc.status == messages.StatusCompleted && string(f.Result) != tc.output {
				t.Errorf("output %s, want %s", f.Result, tc.output)
			}
			if tc.status == messages.StatusFailed {
				if f.Failure == nil || !strings.Contains(f.Failure.Message, tc.failure) {
					t.Errorf("failure %+v, want one mentioning %q", f.Failure, tc.failure)
				}
			}
			cold := r.finalState()
			if cold.RuntimeStatus() != tc.status {
				t.Errorf("replayed final status %s", cold.RuntimeStatus())
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

func TestOutputJSONRoundTrip(t *testing.T) {
	// json.RawMessage output and input pass through unchanged; invalid raw
	// JSON is an error, not corrupt history.
	r := newRun(t, func(ctx *Context) (any, error) {
		if err := ctx.CallActivity("A", json.RawMessage(`not json`)).Await(nil); err == nil {
			return nil, errors.New("invalid raw input accepted")
		}
		return json.RawMessage(`{"raw":true}`), nil
	})
	ep := r.step(started(""))
	if got := acts(ep.Actions); !reflect.DeepEqual(got, []act{{tDone, 0, ""}}) {
		t.Fatalf("actions %+v", got)
	}
	if f := r.hot.Final(); f.Status != messages.StatusCompleted || string(f.Result) != `{"raw":true}` {
		t.Fatalf("final %+v %s", f, f.Result)
	}
}
