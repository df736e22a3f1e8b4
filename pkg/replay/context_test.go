package replay

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/jetflow/jetflow/pkg/messages"
)

// probe records what an orchestrator saw at each point it passed.
type probe struct {
	times     []time.Time
	replaying []bool
	guids     []string
}

func (p *probe) mark(ctx *Context) {
	p.times = append(p.times, ctx.CurrentTime())
	p.replaying = append(p.replaying, ctx.IsReplaying())
}

// probed returns an orchestrator that runs activities A, B and C in turn,
// marking the probe before each and at the end, and taking GUIDs.
func probed(p *probe) Orchestrator {
	return func(ctx *Context) (any, error) {
		p.guids = append(p.guids, ctx.NewGUID(), ctx.NewGUID())
		for _, n := range []string{"A", "B", "C"} {
			p.mark(ctx)
			if err := ctx.CallActivity(n, nil).Await(nil); err != nil {
				return nil, err
			}
			p.guids = append(p.guids, ctx.NewGUID())
		}
		p.mark(ctx)
		return nil, nil
	}
}

// history3 returns the committed events of the first three episodes of the
// probed orchestrator (start, A done, B done) and the hot instance's probe.
func history3(t *testing.T) ([]ev, []time.Time, *probe) {
	t.Helper()
	hotProbe := &probe{}
	in := New(probed(hotProbe), Options{})
	t.Cleanup(in.Close)
	var history []ev
	var times []time.Time
	for i, e := range []ev{started(""), completed(0, ""), completed(1, "")} {
		now := t0.Add(time.Duration(i+1) * 7 * time.Second)
		ep, err := in.Step(now, []ev{e})
		if err != nil {
			t.Fatal(err)
		}
		history = append(history, ep.Events...)
		times = append(times, now)
	}
	return history, times, hotProbe
}

func TestDeterministicTimeAndReplayFlag(t *testing.T) {
	history, times, hot := history3(t)
	if !reflect.DeepEqual(hot.times, times) {
		t.Fatalf("hot CurrentTime %v, want the episode times %v", hot.times, times)
	}
	if !reflect.DeepEqual(hot.replaying, []bool{false, false, false}) {
		t.Fatalf("hot IsReplaying %v", hot.replaying)
	}

	cold := &probe{}
	in := New(probed(cold), Options{})
	defer in.Close()
	if err := in.Replay(history); err != nil {
		t.Fatal(err)
	}
	// On replay CurrentTime is each episode's OrchestratorStarted time, not now.
	if !reflect.DeepEqual(cold.times, times) {
		t.Fatalf("replayed CurrentTime %v, want %v", cold.times, times)
	}
	if !reflect.DeepEqual(cold.replaying, []bool{true, true, true}) {
		t.Fatalf("IsReplaying during Replay %v", cold.replaying)
	}
	later := t0.Add(time.Hour)
	if _, err := in.Step(later, []ev{completed(2, "")}); err != nil {
		t.Fatal(err)
	}
	if got := cold.times[3]; !got.Equal(later) {
		t.Errorf("CurrentTime in Step %v, want %v", got, later)
	}
	if cold.replaying[3] {
		t.Error("IsReplaying true in Step")
	}
}

var uuidV5 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestNewGUID(t *testing.T) {
	history, _, hot := history3(t)
	if len(hot.guids) != 4 {
		t.Fatalf("guids %v", hot.guids)
	}
	seen := map[string]bool{}
	for _, g := range hot.guids {
		if !uuidV5.MatchString(g) {
			t.Errorf("NewGUID %q is not a version 5 UUID", g)
		}
		if seen[g] {
			t.Errorf("NewGUID repeated %q", g)
		}
		seen[g] = true
	}
	cold := &probe{}
	in := New(probed(cold), Options{})
	defer in.Close()
	if err := in.Replay(history); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cold.guids, hot.guids) {
		t.Fatalf("replayed GUIDs %v, want %v", cold.guids, hot.guids)
	}

	// Another instance (or run) gets other GUIDs.
	other := &probe{}
	in2 := New(probed(other), Options{})
	defer in2.Close()
	s := started("")
	s.InstanceID = "inst-2"
	if _, err := in2.Step(t0, []ev{s}); err != nil {
		t.Fatal(err)
	}
	if other.guids[0] == hot.guids[0] || other.guids[1] == hot.guids[1] {
		t.Errorf("two instances got the same GUIDs %v", other.guids)
	}
}

func TestLoggerSilentDuringReplay(t *testing.T) {
	fn := func(ctx *Context) (any, error) {
		ctx.Logger().Info("before A")
		ctx.Logger().With(zap.String("k", "v")).Warn("with field")
		if err := ctx.CallActivity("A", nil).Await(nil); err != nil {
			return nil, err
		}
		ctx.Logger().Info("before B")
		if err := ctx.CallActivity("B", nil).Await(nil); err != nil {
			return nil, err
		}
		ctx.Logger().Sugar().Infow("done", "n", 1)
		return nil, nil
	}
	hotCore, hotLogs := observer.New(zapcore.DebugLevel)
	hot := New(fn, Options{Logger: zap.New(hotCore)})
	defer hot.Close()
	var history []ev
	for i, e := range []ev{started(""), completed(0, "")} {
		ep, err := hot.Step(t0.Add(time.Duration(i)*time.Second), []ev{e})
		if err != nil {
			t.Fatal(err)
		}
		history = append(history, ep.Events...)
	}
	if got := messagesOf(hotLogs.All()); !reflect.DeepEqual(got, []string{"before A", "with field", "before B"}) {
		t.Fatalf("hot logs %q", got)
	}
	if f := hotLogs.FilterMessage("with field").All(); len(f) != 1 || f[0].ContextMap()["k"] != "v" {
		t.Errorf("With fields lost: %+v", f)
	}

	coldCore, coldLogs := observer.New(zapcore.DebugLevel)
	cold := New(fn, Options{Logger: zap.New(coldCore)})
	defer cold.Close()
	if err := cold.Replay(history); err != nil {
		t.Fatal(err)
	}
	if n := coldLogs.Len(); n != 0 {
		t.Fatalf("%d entries logged during Replay: %q", n, messagesOf(coldLogs.All()))
	}
	if _, err := cold.Step(t0.Add(time.Hour), []ev{completed(1, "")}); err != nil {
		t.Fatal(err)
	}
	if got := messagesOf(coldLogs.All()); !reflect.DeepEqual(got, []string{"done"}) {
		t.Fatalf("logs after Replay and Step %q, want only the new entry", got)
	}
}

func messagesOf(es []observer.LoggedEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Message)
	}
	return out
}

func TestDuplicateTaskCompletion(t *testing.T) {
	r := newRun(t, sequence3)
	r.step(started(""))
	ep := r.step(completed(0, `"a"`))
	if got := acts(ep.Actions); !reflect.DeepEqual(got, []act{{tScheduled, 1, "B"}}) {
		t.Fatalf("actions %+v", got)
	}
	episodes := r.hot.Episodes()
	for _, dup := range [][]ev{
		{completed(0, `"a"`)},                // redelivered
		{completed(0, `"other"`)},            // redelivered with another result
		{failed(0, "late failure")},          // a failure for a task already done
		{completed(99, "")},                  // no such task
		{fired(1)},                           // task 1 is an activity, not a timer
		{subCompleted(1, "1")},               // nor a sub-orchestration
		{started("")},                        // the run has started already
		{completed(0, ""), completed(0, "")}, // several at once
		{resumed()},                          // not suspended
	} {
		ep := r.step(dup...)
		if len(ep.Events) != 0 || len(ep.Actions) != 0 {
			t.Fatalf("duplicate %+v produced events %+v actions %+v", acts(dup), acts(ep.Events), acts(ep.Actions))
		}
	}
	if r.hot.Episodes() != episodes {
		t.Errorf("empty steps counted as episodes: %d, want %d", r.hot.Episodes(), episodes)
	}
	// Within one batch the first delivery counts and its copy is dropped.
	ep = r.step(completed(1, `"b"`), completed(1, `"b2"`), completed(0, ""))
	n := 0
	for _, e := range ep.Events {
		if e.Type == messages.EventTaskCompleted {
			n++
			if string(e.Result) != `"b"` {
				t.Errorf("committed result %s", e.Result)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d TaskCompleted committed, want 1", n)
	}
	r.step(completed(2, `"c"`))
	if f := r.hot.Final(); f == nil || string(f.Result) != `["a","b","c"]` {
		t.Fatalf("final %+v", f)
	}
}

func TestDuplicateRaisedEvent(t *testing.T) {
	fn := func(ctx *Context) (any, error) {
		sum := 0
		for i := 0; i < 3; i++ {
			var n int
			if err := ctx.WaitForExternalEvent("Add").Await(&n); err != nil {
				return nil, err
			}
			sum += n
		}
		return sum, nil
	}
	r := newRun(t, fn)
	r.step(started(""))
	if ep := r.step(raised("Add", "1", "e1")); len(ep.Events) == 0 {
		t.Fatal("first raise dropped")
	}
	if ep := r.step(raised("Add", "1", "e1")); len(ep.Events) != 0 {
		t.Fatalf("raise with a seen EventID applied again: %+v", acts(ep.Events))
	}
	// Same EventID in one batch: applied once.
	ep := r.step(raised("Add", "10", "e2"), raised("Add", "10", "e2"))
	if n := countType(ep.Events, messages.EventRaised); n != 1 {
		t.Fatalf("%d raised events committed, want 1", n)
	}
	// Events without an EventID cannot be told apart and are all applied.
	r.step(raised("Add", "100", ""))
	if f := r.hot.Final(); f == nil || string(f.Result) != "111" {
		t.Fatalf("final %+v, want sum 111", f)
	}
	r.finalState()
}

func countType(evs []ev, ty messages.EventType) int {
	n := 0
	for _, e := range evs {
		if e.Type == ty {
			n++
		}
	}
	return n
}

func TestSuspendResume(t *testing.T) {
	fn := func(ctx *Context) (any, error) {
		if err := ctx.CallActivity("A", nil).Await(nil); err != nil {
			return nil, err
		}
		if err := ctx.CallActivity("B", nil).Await(nil); err != nil {
			return nil, err
		}
		var v string
		if err := ctx.WaitForExternalEvent("Go").Await(&v); err != nil {
			return nil, err
		}
		if err := ctx.CallActivity("C", v).Await(nil); err != nil {
			return nil, err
		}
		return v, nil
	}
	r := newRun(t, fn)
	r.step(started(""))
	ep := r.step(suspended())
	if len(ep.Events) != 3 || len(ep.Actions) != 0 {
		t.Fatalf("suspend episode events %+v actions %+v", acts(ep.Events), acts(ep.Actions))
	}
	if s := r.hot.RuntimeStatus(); s != messages.StatusSuspended {
		t.Fatalf("status %s, want Suspended", s)
	}
	// Completions and raised events are committed but held: A's completion
	// must not let the code schedule B.
	for _, e := range []ev{completed(0, ""), raised("Go", `"go"`, "g1")} {
		ep := r.step(e)
		if len(ep.Events) != 3 || len(ep.Actions) != 0 {
			t.Fatalf("while suspended %s: events %+v actions %+v", e.Type, acts(ep.Events), acts(ep.Actions))
		}
		if s := r.hot.RuntimeStatus(); s != messages.StatusSuspended {
			t.Fatalf("status %s, want Suspended", s)
		}
	}
	if ep := r.step(suspended()); len(ep.Events) != 0 {
		t.Fatal("second suspend applied")
	}
	if ep := r.step(raised("Go", `"dup"`, "g1")); len(ep.Events) != 0 {
		t.Fatal("duplicate raise applied while suspended")
	}
	// Resume applies what was held, in order.
	ep = r.step(resumed())
	if got := acts(ep.Actions); !reflect.DeepEqual(got, []act{{tScheduled, 1, "B"}}) {
		t.Fatalf("actions after resume %+v", got)
	}
	if s := r.hot.RuntimeStatus(); s != messages.StatusRunning {
		t.Fatalf("status %s after resume", s)
	}
	// The event raised while suspended was kept for the wait.
	ep = r.step(completed(1, ""))
	if got := acts(ep.Actions); !reflect.DeepEqual(got, []act{{tScheduled, 2, "C"}}) || string(ep.Actions[0].Input) != `"go"` {
		t.Fatalf("actions after B %+v", ep.Actions)
	}
	r.step(completed(2, ""))
	if s := r.hot.RuntimeStatus(); s != messages.StatusCompleted {
		t.Fatalf("status %s", s)
	}
	r.finalState()
}

func TestSuspendHoldsRaisedEvents(t *testing.T) {
	r := newRun(t, waitApprove(0))
	r.step(started(""))
	r.step(suspended())
	if ep := r.step(raised("Approve", `"yes"`, "")); len(ep.Actions) != 0 {
		t.Fatalf("raised event delivered while suspended: actions %+v", acts(ep.Actions))
	}
	if r.hot.RuntimeStatus() != messages.StatusSuspended {
		t.Fatalf("status %s", r.hot.RuntimeStatus())
	}
	ep := r.step(resumed())
	if got := acts(ep.Actions); !reflect.DeepEqual(got, []act{{tDone, 0, ""}}) {
		t.Fatalf("actions after resume %+v", got)
	}
	if f := r.hot.Final(); string(f.Result) != `"yes"` {
		t.Fatalf("output %s", f.Result)
	}
}

func TestTerminate(t *testing.T) {
	unwound := 0
	mk := func() Orchestrator {
		return func(ctx *Context) (any, error) {
			defer func() { unwound++ }()
			if err := ctx.CallActivity("A", nil).Await(nil); err != nil {
				return nil, err
			}
			return "finished", ctx.CallActivity("B", nil).Await(nil)
		}
	}
	r := newRunWith(t, mk, Options{})
	r.step(started(""))
	before := unwound
	ep := r.step(terminated("operator said stop"))
	if got := acts(ep.Actions); !reflect.DeepEqual(got, []act{{tDone, 0, ""}}) {
		t.Fatalf("actions %+v", got)
	}
	f := ep.Actions[0]
	if f.Status != messages.StatusTerminated || string(f.Result) != `"operator said stop"` {
		t.Fatalf("final %+v result %s", f, f.Result)
	}
	if s := r.hot.RuntimeStatus(); s != messages.StatusTerminated {
		t.Fatalf("status %s", s)
	}
	// The hot and the replayed instance's goroutines have both unwound.
	if unwound != before+2 {
		t.Errorf("orchestrator goroutines unwound %d times, want %d", unwound-before, 2)
	}
	for _, late := range [][]ev{{completed(0, "")}, {terminated("again")}, {raised("X", "1", "")}, {suspended()}} {
		if ep := r.step(late...); len(ep.Events) != 0 {
			t.Fatalf("event %s after termination applied", late[0].Type)
		}
	}
	if cold := r.finalState(); cold.Final().Status != messages.StatusTerminated {
		t.Fatalf("replayed final %+v", cold.Final())
	}
}

func TestTerminateWhileSuspended(t *testing.T) {
	r := newRun(t, sequence3)
	r.step(started(""))
	r.step(suspended())
	r.step(completed(0, ""))
	ep := r.step(terminated("bye"))
	if got := acts(ep.Actions); !reflect.DeepEqual(got, []act{{tDone, 0, ""}}) {
		t.Fatalf("actions %+v", got)
	}
	if s := r.hot.RuntimeStatus(); s != messages.StatusTerminated {
		t.Fatalf("status %s", s)
	}
}

func TestEventsBeforeStartAreIgnored(t *testing.T) {
	in := New(sequence3, Options{})
	defer in.Close()
	ep, err := in.Step(t0, []ev{completed(0, ""), raised("X", "1", "")})
	if err != nil {
		t.Fatal(err)
	}
	if len(ep.Events) != 0 || in.Started() || in.RuntimeStatus() != messages.StatusPending {
		t.Fatalf("events before ExecutionStarted applied: %+v, status %s", acts(ep.Events), in.RuntimeStatus())
	}
}

func TestIncomingTimestampKept(t *testing.T) {
	in := New(sequence3, Options{})
	defer in.Close()
	s := started("")
	s.Timestamp = t0.Add(-time.Hour)
	ep, err := in.Step(t0, []ev{s})
	if err != nil {
		t.Fatal(err)
	}
	if !ep.Events[1].Timestamp.Equal(s.Timestamp) || !in.CreatedAt().Equal(s.Timestamp) {
		t.Fatalf("ExecutionStarted stamped %v, CreatedAt %v; want %v", ep.Events[1].Timestamp, in.CreatedAt(), s.Timestamp)
	}
}

func TestNonDeterminism(t *testing.T) {
	callA := func(ctx *Context) (any, error) { return nil, ctx.CallActivity("A", nil).Await(nil) }
	callAB := func(ctx *Context) (any, error) {
		if err := ctx.CallActivity("A", nil).Await(nil); err != nil {
			return nil, err
		}
		return nil, ctx.CallActivity("B", nil).Await(nil)
	}
	parallelAB := func(ctx *Context) (any, error) {
		return nil, ctx.WhenAll(ctx.CallActivity("A", nil), ctx.CallActivity("B", nil))
	}
	record := func(fn Orchestrator, incoming ...[]ev) []ev {
		in := New(fn, Options{})
		defer in.Close()
		var h []ev
		for i, evs := range incoming {
			ep, err := in.Step(t0.Add(time.Duration(i)*time.Second), evs)
			if err != nil {
				t.Fatal(err)
			}
			h = append(h, ep.Events...)
		}
		return h
	}
	for _, tc := range []struct {
		name    string
		history []ev
		code    Orchestrator
		seq     int32
		mention []string
	}{
		{"activity renamed", record(callA, []ev{started("")}),
			func(ctx *Context) (any, error) { return nil, ctx.CallActivity("B", nil).Await(nil) },
			0, []string{`"A"`, `"B"`}},
		{"activity became a timer", record(callA, []ev{started("")}),
			func(ctx *Context) (any, error) { return nil, ctx.CreateTimer(time.Minute).Await(nil) },
			0, []string{`"A"`, "TimerCreated"}},
		{"activity became a sub-orchestration", record(callA, []ev{started("")}),
			func(ctx *Context) (any, error) { return nil, ctx.CallSubOrchestrator("A", nil).Await(nil) },
			0, []string{"TaskScheduled", "SubOrchestrationInstanceCreated"}},
		{"code returns before the scheduled action", record(callAB, []ev{started("")}, []ev{completed(0, "")}),
			callA, 1, []string{`"B"`, "returned"}},
		{"code waits instead of scheduling", record(callA, []ev{started("")}),
			func(ctx *Context) (any, error) { return nil, ctx.WaitForExternalEvent("A").Await(nil) },
			0, []string{`"A"`, "no action"}},
		{"order swapped", record(parallelAB, []ev{started("")}),
			func(ctx *Context) (any, error) {
				return nil, ctx.WhenAll(ctx.CallActivity("B", nil), ctx.CallActivity("A", nil))
			},
			0, []string{`"A"`, `"B"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := New(tc.code, Options{})
			defer in.Close()
			err := in.Replay(tc.history)
			var nd *NonDeterminismError
			if !errors.As(err, &nd) {
				t.Fatalf("Replay = %v, want *NonDeterminismError", err)
			}
			if nd.Seq != tc.seq {
				t.Errorf("Seq %d, want %d", nd.Seq, tc.seq)
			}
			for _, m := range tc.mention {
				if !regexp.MustCompile(regexp.QuoteMeta(m)).MatchString(err.Error()) {
					t.Errorf("error %q does not mention %s", err, m)
				}
			}
		})
	}

	// The same histories replay cleanly into the code that made them.
	for _, c := range []struct {
		fn Orchestrator
		h  []ev
	}{
		{callA, record(callA, []ev{started("")})},
		{callAB, record(callAB, []ev{started("")}, []ev{completed(0, "")})},
		{parallelAB, record(parallelAB, []ev{started("")})},
	} {
		in := New(c.fn, Options{})
		if err := in.Replay(c.h); err != nil {
			t.Errorf("replay of own history: %v", err)
		}
		in.Close()
	}
}

func TestFailEpisode(t *testing.T) {
	evs := FailEpisode(t0, []ev{completed(3, "")}, messages.Failure{Type: "NonDeterminism", Message: "changed"})
	want := []messages.EventType{messages.EventOrchestratorStarted, messages.EventTaskCompleted, tDone, messages.EventOrchestratorCompleted}
	var got []messages.EventType
	for _, e := range evs {
		got = append(got, e.Type)
		if !e.Timestamp.Equal(t0) {
			t.Errorf("%s stamped %v", e.Type, e.Timestamp)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	in := New(nil, Options{})
	defer in.Close()
	h := append(record1(t), evs...)
	if err := in.Replay(h); err != nil {
		t.Fatal(err)
	}
	if in.RuntimeStatus() != messages.StatusFailed || in.Final().Failure.Message != "changed" {
		t.Fatalf("status %s final %+v", in.RuntimeStatus(), in.Final())
	}
}

func record1(t *testing.T) []ev {
	in := New(sequence3, Options{})
	defer in.Close()
	ep, err := in.Step(t0, []ev{started("")})
	if err != nil {
		t.Fatal(err)
	}
	return ep.Events
}

func TestReplayOfFinishedRunDoesNotRunCode(t *testing.T) {
	runs := 0
	fn := func(ctx *Context) (any, error) {
		runs++
		return "x", nil
	}
	in := New(fn, Options{})
	ep, err := in.Step(t0, []ev{started("")})
	if err != nil {
		t.Fatal(err)
	}
	in.Close()
	runs = 0
	cold := New(fn, Options{})
	defer cold.Close()
	if err := cold.Replay(ep.Events); err != nil {
		t.Fatal(err)
	}
	if runs != 0 {
		t.Errorf("code ran %d times to replay a finished run", runs)
	}
	if cold.RuntimeStatus() != messages.StatusCompleted || string(cold.Final().Result) != `"x"` || cold.Episodes() != 1 {
		t.Errorf("status %s final %+v episodes %d", cold.RuntimeStatus(), cold.Final(), cold.Episodes())
	}
}

func TestTaskFailedErrorMessage(t *testing.T) {
	err := error(&TaskFailedError{Name: "Charge", Failure: messages.Failure{Message: "declined"}})
	if got := err.Error(); got != `task "Charge" failed: declined` {
		t.Errorf("%q", got)
	}
	if got := fmt.Sprint((&NonDeterminismError{Seq: 2, History: "x", Code: "y"}).Error()); got == "" {
		t.Error("empty")
	}
}
