package replay

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/jetflow/jetflow/pkg/messages"
)

// Shared fixtures: every run is instance iid, execution eid, orchestrator
// orchName, starting at t0 (UTC, no monotonic reading).
const (
	iid      = "inst-1"
	eid      = "exec-1"
	orchName = "Orch"
)

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

type ev = messages.Event

func started(input string) ev {
	e := ev{Type: messages.EventExecutionStarted, Name: orchName, InstanceID: iid, ExecutionID: eid}
	if input != "" {
		e.Input = []byte(input)
	}
	return e
}

func completed(id int32, result string) ev {
	e := ev{Type: messages.EventTaskCompleted, TaskID: id}
	if result != "" {
		e.Result = []byte(result)
	}
	return e
}

func failed(id int32, msg string) ev {
	return ev{Type: messages.EventTaskFailed, TaskID: id, Failure: &messages.Failure{Type: "ActivityError", Message: msg}}
}

func fired(id int32) ev { return ev{Type: messages.EventTimerFired, TaskID: id} }

func raised(name, data, eventID string) ev {
	e := ev{Type: messages.EventRaised, Name: name, EventID: eventID}
	if data != "" {
		e.Input = []byte(data)
	}
	return e
}

func subCompleted(id int32, result string) ev {
	return ev{Type: messages.EventSubOrchestrationCompleted, TaskID: id, Result: []byte(result)}
}

func subFailed(id int32, msg string) ev {
	return ev{Type: messages.EventSubOrchestrationFailed, TaskID: id, Failure: &messages.Failure{Message: msg}}
}

func suspended() ev            { return ev{Type: messages.EventExecutionSuspended, Reason: "pause"} }
func resumed() ev              { return ev{Type: messages.EventExecutionResumed, Reason: "resume"} }
func terminated(why string) ev { return ev{Type: messages.EventExecutionTerminated, Reason: why} }

// act is the part of an action the table tests compare.
type act struct {
	Type   messages.EventType
	TaskID int32
	Name   string
}

func acts(evs []ev) []act {
	out := []act{}
	for _, e := range evs {
		out = append(out, act{e.Type, e.TaskID, e.Name})
	}
	return out
}

// run drives one orchestration episode by episode. It keeps one Instance
// hot and, before every step, replays the committed history into a fresh
// Instance, checks that it reached the same state, steps it with the same
// input and checks that it produces the same episode.
type run struct {
	t        *testing.T
	mk       func() Orchestrator // a fresh orchestrator per Instance
	opts     Options
	hot      *Instance
	history  []ev
	episodes []*Episode
	now      time.Time
}

func newRun(t *testing.T, fn Orchestrator) *run {
	return newRunWith(t, func() Orchestrator { return fn }, Options{})
}

func newRunWith(t *testing.T, mk func() Orchestrator, opts Options) *run {
	t.Helper()
	r := &run{t: t, mk: mk, opts: opts, now: t0}
	r.hot = New(mk(), opts)
	t.Cleanup(r.hot.Close)
	return r
}

// replayed returns a fresh Instance with the committed history replayed.
func (r *run) replayed() *Instance {
	r.t.Helper()
	in := New(r.mk(), r.opts)
	r.t.Cleanup(in.Close)
	if err := in.Replay(r.history); err != nil {
		r.t.Fatalf("Replay of %d committed events: %v", len(r.history), err)
	}
	return in
}

// step delivers incoming as the next episode, one minute after the last.
func (r *run) step(incoming ...ev) *Episode {
	r.t.Helper()
	r.now = r.now.Add(time.Minute)
	cold := r.replayed()
	r.sameState("before step", cold)
	in := slices.Clone(incoming)
	ep, err := r.hot.Step(r.now, incoming)
	if err != nil {
		r.t.Fatalf("Step: %v", err)
	}
	if !reflect.DeepEqual(in, incoming) {
		r.t.Fatal("Step modified its incoming events")
	}
	cep, err := cold.Step(r.now, incoming)
	if err != nil {
		r.t.Fatalf("Step after Replay: %v", err)
	}
	if got, want := scrubAll(cep.Events), scrubAll(ep.Events); !reflect.DeepEqual(got, want) {
		r.t.Errorf("replayed instance committed a different episode:\n got %+v\nwant %+v", got, want)
	}
	if got, want := scrubAll(cep.Actions), scrubAll(ep.Actions); !reflect.DeepEqual(got, want) {
		r.t.Errorf("replayed instance produced different actions:\n got %+v\nwant %+v", got, want)
	}
	r.sameState("after step", cold)
	r.checkFraming(ep)
	r.history = append(r.history, ep.Events...)
	r.episodes = append(r.episodes, ep)
	return ep
}

// checkFraming checks the shape of an episode: empty, or framed by
// OrchestratorStarted and OrchestratorCompleted stamped now, with every
// action among the events.
func (r *run) checkFraming(ep *Episode) {
	r.t.Helper()
	if len(ep.Events) == 0 {
		if len(ep.Actions) != 0 {
			r.t.Errorf("empty episode has actions %+v", ep.Actions)
		}
		return
	}
	first, last := ep.Events[0], ep.Events[len(ep.Events)-1]
	if first.Type != messages.EventOrchestratorStarted || last.Type != messages.EventOrchestratorCompleted {
		r.t.Errorf("episode framed by %s ... %s", first.Type, last.Type)
	}
	for i, e := range ep.Events {
		if !e.Timestamp.Equal(r.now) {
			r.t.Errorf("event %d (%s) stamped %v, want %v", i, e.Type, e.Timestamp, r.now)
		}
		if i > 0 && i < len(ep.Events)-1 && (e.Type == messages.EventOrchestratorStarted || e.Type == messages.EventOrchestratorCompleted) {
			r.t.Errorf("frame event %s inside the episode", e.Type)
		}
	}
	for _, a := range ep.Actions {
		if !slices.ContainsFunc(ep.Events, func(e ev) bool { return reflect.DeepEqual(e, a) }) {
			r.t.Errorf("action %+v is not among the episode's events", a)
		}
	}
}

// sameState compares what a hot and a replayed Instance report.
func (r *run) sameState(when string, cold *Instance) {
	r.t.Helper()
	h := r.hot
	type state struct {
		Started     bool
		ID, Name    string
		Exec        string
		Input       string
		Created     time.Time
		Status      messages.RuntimeStatus
		Custom      string
		Episodes    uint64
		Outstanding []ev
		Final       *ev
	}
	get := func(in *Instance) state {
		return state{in.Started(), in.InstanceID(), in.Name(), in.ExecutionID(), string(in.Input()), in.CreatedAt(),
			in.RuntimeStatus(), string(in.CustomStatus()), in.Episodes(), scrubAll(in.Outstanding()), scrubPtr(in.Final())}
	}
	if hs, cs := get(h), get(cold); !reflect.DeepEqual(hs, cs) {
		r.t.Errorf("%s: replayed state differs from the hot instance:\nreplayed %+v\n     hot %+v", when, cs, hs)
	}
}

// scrub blanks what is random by design: a new run's execution ID.
func scrub(e ev) ev {
	if e.Type == messages.EventContinuedAsNew {
		e.ExecutionID = "<new>"
	}
	return e
}

func scrubAll(evs []ev) []ev {
	out := make([]ev, len(evs))
	for i := range evs {
		out[i] = scrub(evs[i])
	}
	return out
}

func scrubPtr(e *ev) *ev {
	if e == nil {
		return nil
	}
	s := scrub(*e)
	return &s
}

// finalState replays the whole committed history into a fresh Instance and
// checks it agrees with the hot one.
func (r *run) finalState() *Instance {
	r.t.Helper()
	cold := r.replayed()
	r.sameState("final", cold)
	return cold
}
