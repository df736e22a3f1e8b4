package replay

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/jetflow/jetflow/pkg/messages"
)

// Options configure an Instance.
type Options struct {
	// MaxCustomStatusBytes limits custom status, in bytes of UTF-16 JSON
	// text. Zero means DefaultMaxCustomStatusBytes.
	MaxCustomStatusBytes int
	// Logger backs Context.Logger; nil discards.
	Logger *zap.Logger
}

// NonDeterminismError reports orchestrator code that no longer matches its history.
type NonDeterminismError struct {
	Seq     int32
	History string // what history recorded at Seq
	Code    string // what the code did at Seq
}

func (e *NonDeterminismError) Error() string {
	return fmt.Sprintf("non-deterministic orchestrator: at sequence %d history has %s but the code %s", e.Seq, e.History, e.Code)
}

var errAbandoned = errors.New("replay: orchestrator abandoned")

// Instance is the live, replayed state of one orchestration run. The
// orchestrator function runs in a goroutine of its own that only ever runs
// while the Instance's caller waits, so the code sees a single thread of
// control. An Instance is not safe for concurrent use.
type Instance struct {
	fn   Orchestrator
	opts Options
	ctx  *Context

	pending      map[int32]*messages.Event // actions taken by code, not yet in history
	pendingOrder []int32
	open         map[int32]*task          // tasks waiting for a completion event
	outstanding  map[int32]messages.Event // scheduling events in history with no completion yet
	lastSent     []messages.Event         // EventSent of the last episode
	waiters      map[string][]*task
	buffered     map[string][][]byte
	seen         map[string]struct{} // EventIDs of raised events applied
	suspended    bool
	held         []messages.Event // events that arrived while suspended
	rewound      bool             // ExecutionRewound applied (see rewind.go)

	started  bool
	alive    bool
	cond     func() bool
	resumeCh chan bool
	yieldCh  chan struct{}
	exited   chan struct{}

	fnDone    bool
	fnOut     any
	fnErr     error
	finished  *messages.Event // completion to record at the end of the episode
	final     *messages.Event // recorded ExecutionCompleted or ContinuedAsNew
	csDirty   bool
	csLast    []byte
	episodes  uint64
	createdAt time.Time
}

// New returns an Instance of orchestrator fn with no history applied.
func New(fn Orchestrator, opts Options) *Instance {
	if opts.MaxCustomStatusBytes <= 0 {
		opts.MaxCustomStatusBytes = DefaultMaxCustomStatusBytes
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	in := &Instance{
		fn:          fn,
		opts:        opts,
		pending:     map[int32]*messages.Event{},
		open:        map[int32]*task{},
		outstanding: map[int32]messages.Event{},
		waiters:     map[string][]*task{},
		buffered:    map[string][][]byte{},
		seen:        map[string]struct{}{},
	}
	in.ctx = &Context{in: in}
	in.ctx.logCore = opts.Logger.Core()
	return in
}

// Episode is what one step produced.
type Episode struct {
	// Events are the history events to append, framed by OrchestratorStarted
	// and OrchestratorCompleted. Empty when every incoming event was a
	// duplicate or stale: then nothing is to be committed.
	Events []messages.Event
	// Actions are the new scheduling and completion events to carry out
	// after the commit.
	Actions []messages.Event
}

// Replay applies committed history (every episode of this run, in order).
// A run that has finished is not re-executed: its final state is read off
// the history. It returns a *NonDeterminismError if the code no longer
// matches the history.
func (in *Instance) Replay(history []messages.Event) error {
	in.ctx.replaying = true
	for i := range history {
		if t := history[i].Type; t == messages.EventExecutionCompleted || t == messages.EventContinuedAsNew {
			in.scan(history)
			return nil
		}
	}
	for i := range history {
		if _, err := in.apply(&history[i], true); err != nil {
			return err
		}
	}
	return nil
}

// scan reads the state of a finished run off its history without running code.
func (in *Instance) scan(history []messages.Event) {
	in.Close()
	in.outstanding = map[int32]messages.Event{}
	for i := range history {
		e := history[i]
		switch e.Type {
		case messages.EventExecutionStarted:
			in.setStart(&e)
		case messages.EventOrchestratorStarted:
			in.ctx.now = e.Timestamp
			in.lastSent = nil
		case messages.EventTaskScheduled, messages.EventTimerCreated, messages.EventSubOrchestrationCreated:
			in.outstanding[e.TaskID] = e
		case messages.EventSent:
			in.lastSent = append(in.lastSent, e)
		case messages.EventTaskCompleted, messages.EventTaskFailed, messages.EventTimerFired,
			messages.EventSubOrchestrationCompleted, messages.EventSubOrchestrationFailed:
			delete(in.outstanding, e.TaskID)
		case messages.EventOrchestratorCompleted:
			in.episodes++
			if e.Input != nil {
				in.setCustomStatus(e.Input)
			}
		case messages.EventExecutionCompleted, messages.EventContinuedAsNew:
			in.final = &e
		}
	}
	in.open = map[int32]*task{}
	in.pending = map[int32]*messages.Event{}
	in.pendingOrder = nil
}

func (in *Instance) setCustomStatus(b []byte) {
	if string(b) == "null" {
		b = nil
	}
	in.ctx.customStatus = b
	in.csLast = b
}

func (in *Instance) setStart(e *messages.Event) {
	c := in.ctx
	c.instanceID, c.executionID, c.name, c.input, c.parent = e.InstanceID, e.ExecutionID, e.Name, e.Input, e.Parent
	in.createdAt = e.Timestamp
	in.started = true
}

// Step applies new events as one episode and runs the orchestrator as far as
// they allow. Incoming events that history already holds are dropped.
func (in *Instance) Step(now time.Time, incoming []messages.Event) (*Episode, error) {
	c := in.ctx
	c.replaying = false
	// Events are OrchestratorStarted, the incoming events that apply, the
	// actions, the final event and OrchestratorCompleted: room for a
	// typical episode (one action per incoming event).
	ep := &Episode{Events: make([]messages.Event, 1, 2*len(incoming)+3)}
	ep.Events[0] = messages.Event{Type: messages.EventOrchestratorStarted, Timestamp: now}
	prevNow := c.now
	c.now = now
	for i := range incoming {
		e := incoming[i]
		if e.Timestamp.IsZero() {
			e.Timestamp = now
		}
		ok, err := in.apply(&e, false)
		if err != nil {
			return nil, err
		}
		if ok {
			ep.Events = append(ep.Events, e)
		}
	}
	if len(ep.Events) == 1 {
		c.now = prevNow
		return &Episode{}, nil
	}
	in.lastSent = nil
	for _, seq := range slices.Clone(in.pendingOrder) {
		e := *in.pending[seq]
		e.Timestamp = now
		if _, err := in.apply(&e, false); err != nil {
			return nil, err
		}
		ep.Events = append(ep.Events, e)
		ep.Actions = append(ep.Actions, e)
	}
	if in.finished != nil && in.final == nil {
		f := *in.finished
		f.Timestamp = now
		in.final = &f
		ep.Events = append(ep.Events, f)
		ep.Actions = append(ep.Actions, f)
	}
	done := messages.Event{Type: messages.EventOrchestratorCompleted, Timestamp: now}
	if cs := c.customStatus; string(cs) != string(in.csLast) {
		done.Input = cs
		if cs == nil {
			done.Input = []byte("null")
		}
		in.csLast = cs
	}
	ep.Events = append(ep.Events, done)
	in.episodes++
	return ep, nil
}

// FailEpisode returns the events of an episode that ends a run as Failed
// without running its code, for a run whose code cannot be replayed.
func FailEpisode(now time.Time, incoming []messages.Event, f messages.Failure) []messages.Event {
	evs := []messages.Event{{Type: messages.EventOrchestratorStarted, Timestamp: now}}
	for _, e := range incoming {
		if e.Timestamp.IsZero() {
			e.Timestamp = now
		}
		evs = append(evs, e)
	}
	return append(evs,
		messages.Event{Type: messages.EventExecutionCompleted, Timestamp: now, Status: messages.StatusFailed, Failure: &f},
		messages.Event{Type: messages.EventOrchestratorCompleted, Timestamp: now})
}

// apply applies one event. It reports false for an event that changes
// nothing: a duplicate, or one for a run that has finished.
func (in *Instance) apply(e *messages.Event, replaying bool) (bool, error) {
	c := in.ctx
	if e.Type != messages.EventOrchestratorStarted && e.Type != messages.EventOrchestratorCompleted && in.final != nil {
		return false, nil
	}
	if !in.started && e.Type != messages.EventExecutionStarted && e.Type != messages.EventOrchestratorStarted && e.Type != messages.EventOrchestratorCompleted {
		return false, nil // nothing can happen to a run before it starts
	}
	switch e.Type {
	case messages.EventOrchestratorStarted:
		c.now = e.Timestamp
		in.lastSent = nil
		return true, nil
	case messages.EventOrchestratorCompleted:
		in.episodes++
		if e.Input != nil {
			in.setCustomStatus(e.Input)
		}
		return true, nil
	case messages.EventExecutionStarted:
		if in.started {
			return false, nil
		}
		in.setStart(e)
		in.startCode()
		return true, nil
	case messages.EventTaskScheduled, messages.EventTimerCreated, messages.EventSubOrchestrationCreated, messages.EventSent:
		return true, in.record(e, replaying)
	case messages.EventTaskCompleted, messages.EventTaskFailed, messages.EventTimerFired,
		messages.EventSubOrchestrationCompleted, messages.EventSubOrchestrationFailed:
		sched, ok := in.outstanding[e.TaskID]
		if !ok || !completes(e.Type, sched.Type) {
			return false, nil
		}
		delete(in.outstanding, e.TaskID)
		if in.suspended {
			in.held = append(in.held, *e)
			return true, nil
		}
		in.deliver(e)
		return true, nil
	case messages.EventRaised:
		if e.EventID != "" {
			if _, dup := in.seen[e.EventID]; dup {
				return false, nil
			}
			in.seen[e.EventID] = struct{}{}
		}
		if in.suspended {
			in.held = append(in.held, *e)
			return true, nil
		}
		in.deliver(e)
		return true, nil
	case messages.EventExecutionSuspended:
		if in.suspended {
			return false, nil
		}
		in.suspended = true
		return true, nil
	case messages.EventExecutionResumed:
		if !in.suspended {
			return false, nil
		}
		in.suspended = false
		held := in.held
		in.held = nil
		for i := range held {
			in.deliver(&held[i])
		}
		return true, nil
	case messages.EventExecutionTerminated:
		out, _ := json.Marshal(e.Reason)
		in.Close()
		in.finished = &messages.Event{Type: messages.EventExecutionCompleted, Status: messages.StatusTerminated, Result: out}
		return true, nil
	case messages.EventExecutionCompleted, messages.EventContinuedAsNew:
		f := *e
		in.final = &f
		in.Close()
		return true, nil
	case messages.EventExecutionRewound:
		return in.applyRewound(), nil
	}
	return false, fmt.Errorf("replay: cannot apply %s", e.Type)
}

func completes(done, sched messages.EventType) bool {
	switch done {
	case messages.EventTaskCompleted, messages.EventTaskFailed:
		return sched == messages.EventTaskScheduled
	case messages.EventTimerFired:
		return sched == messages.EventTimerCreated
	default:
		return sched == messages.EventSubOrchestrationCreated
	}
}

// record matches a scheduling event against the action the code took at the
// same sequence number, and moves it into history.
func (in *Instance) record(e *messages.Event, replaying bool) error {
	a, ok := in.pending[e.TaskID]
	if !ok {
		code := "took no action there"
		if in.fnDone {
			code = "had already returned"
		}
		return &NonDeterminismError{Seq: e.TaskID, History: describe(e), Code: code}
	}
	if a.Type != e.Type || a.Name != e.Name {
		return &NonDeterminismError{Seq: e.TaskID, History: describe(e), Code: "scheduled " + describe(a)}
	}
	delete(in.pending, e.TaskID)
	if i := slices.Index(in.pendingOrder, e.TaskID); i >= 0 {
		in.pendingOrder = slices.Delete(in.pendingOrder, i, i+1)
	}
	if e.Type == messages.EventSent {
		in.lastSent = append(in.lastSent, *e)
	} else {
		in.outstanding[e.TaskID] = *e
	}
	return nil
}

func describe(e *messages.Event) string {
	if e.Type == messages.EventTimerCreated {
		return "TimerCreated"
	}
	return fmt.Sprintf("%s %q", e.Type, e.Name)
}

// deliver hands a completion or raised event to the code and runs the code
// as far as it can go.
func (in *Instance) deliver(e *messages.Event) {
	switch e.Type {
	case messages.EventRaised:
		if q := in.waiters[e.Name]; len(q) > 0 {
			t := q[0]
			in.waiters[e.Name] = q[1:]
			t.resolve(e.Input, nil)
		} else {
			in.buffered[e.Name] = append(in.buffered[e.Name], e.Input)
		}
	default:
		t := in.open[e.TaskID]
		if t == nil {
			return
		}
		delete(in.open, e.TaskID)
		switch e.Type {
		case messages.EventTaskFailed, messages.EventSubOrchestrationFailed:
			f := messages.Failure{Message: "unknown failure"}
			if e.Failure != nil {
				f = *e.Failure
			}
			t.resolve(nil, &TaskFailedError{Name: t.name, Failure: f})
		default:
			t.resolve(e.Result, nil)
		}
	}
	in.advance()
}

func (in *Instance) removeWaiter(name string, t *task) {
	q := in.waiters[name]
	if i := slices.Index(q, t); i >= 0 {
		in.waiters[name] = slices.Delete(q, i, i+1)
	}
}

// startCode starts the orchestrator goroutine and runs it to its first await.
func (in *Instance) startCode() {
	in.resumeCh = make(chan bool)
	in.yieldCh = make(chan struct{})
	in.exited = make(chan struct{})
	in.alive = true
	go in.run()
	<-in.yieldCh
	in.afterYield()
}

func (in *Instance) run() {
	defer close(in.exited)
	defer func() {
		r := recover()
		if r == errAbandoned || !in.alive {
			// Abandoned by Close. The code may have recovered the
			// errAbandoned panic and returned; nobody waits on yieldCh then.
			return
		}
		if r != nil {
			in.fnErr = fmt.Errorf("orchestrator panicked: %v", r)
		}
		in.fnDone = true
		in.cond = nil
		in.yieldCh <- struct{}{}
	}()
	in.fnOut, in.fnErr = in.fn(in.ctx)
}

// block is called on the orchestrator goroutine: it hands control back to
// the executor until cond may hold.
func (in *Instance) block(cond func() bool) {
	if !in.alive {
		panic(errAbandoned)
	}
	in.cond = cond
	in.yieldCh <- struct{}{}
	if !<-in.resumeCh {
		panic(errAbandoned)
	}
}

func (in *Instance) checkAlive() {
	if !in.alive {
		panic(errAbandoned)
	}
}

// advance resumes the code while what it waits for holds.
func (in *Instance) advance() {
	for in.alive && in.cond != nil && in.cond() {
		in.cond = nil
		in.resumeCh <- true
		<-in.yieldCh
		in.afterYield()
	}
}

func (in *Instance) afterYield() {
	if !in.fnDone {
		return
	}
	in.alive = false
	<-in.exited
	if in.finished != nil {
		return
	}
	c := in.ctx
	f := &messages.Event{Type: messages.EventExecutionCompleted, Status: messages.StatusCompleted}
	switch {
	case in.fnErr != nil:
		f.Status = messages.StatusFailed
		f.Failure = failureOf(in.fnErr)
	case c.continued:
		f = &messages.Event{Type: messages.EventContinuedAsNew, ExecutionID: messages.NewID(), Input: c.continueAsNew, Name: c.name}
	default:
		out, err := marshalInput(in.fnOut)
		if err != nil {
			f.Status = messages.StatusFailed
			f.Failure = &messages.Failure{Type: "OutputError", Message: fmt.Sprintf("orchestrator output: %v", err)}
		} else {
			f.Result = out
		}
	}
	in.finished = f
}

func failureOf(err error) *messages.Failure {
	var tf *TaskFailedError
	if errors.As(err, &tf) {
		return &messages.Failure{Type: "TaskFailed", Message: err.Error(), Cause: tf.Failure.Message}
	}
	return &messages.Failure{Type: "OrchestratorError", Message: err.Error()}
}

// Close stops the orchestrator goroutine, if it is still waiting. It is
// safe to call more than once.
func (in *Instance) Close() {
	if !in.alive {
		return
	}
	in.alive = false
	in.resumeCh <- false
	<-in.exited
}

// Started reports whether ExecutionStarted has been applied.
func (in *Instance) Started() bool { return in.started }

// InstanceID returns the instance ID from ExecutionStarted.
func (in *Instance) InstanceID() string { return in.ctx.instanceID }

// Name returns the orchestrator name from ExecutionStarted.
func (in *Instance) Name() string { return in.ctx.name }

// ExecutionID returns the run's ID from ExecutionStarted.
func (in *Instance) ExecutionID() string { return in.ctx.executionID }

// Parent returns the parent of a sub-orchestration, or nil.
func (in *Instance) Parent() *messages.ParentRef { return in.ctx.parent }

// CreatedAt returns the time the run was started (its ExecutionStarted event).
func (in *Instance) CreatedAt() time.Time { return in.createdAt }

// Input returns the run's JSON input.
func (in *Instance) Input() []byte { return in.ctx.input }

// Episodes returns the number of episodes applied.
func (in *Instance) Episodes() uint64 { return in.episodes }

// CustomStatus returns the committed custom status as JSON, or nil.
func (in *Instance) CustomStatus() []byte { return in.csLast }

// Final returns the recorded ExecutionCompleted or ContinuedAsNew event, or nil.
func (in *Instance) Final() *messages.Event { return in.final }

// RuntimeStatus returns the run's status as history shows it.
func (in *Instance) RuntimeStatus() messages.RuntimeStatus {
	switch {
	case in.final != nil && in.final.Type == messages.EventContinuedAsNew:
		return messages.StatusContinuedAsNew
	case in.final != nil:
		return in.final.Status
	case !in.started:
		return messages.StatusPending
	case in.suspended:
		return messages.StatusSuspended
	}
	return messages.StatusRunning
}

// Outstanding returns the actions history records whose effects may still be
// owed: scheduled tasks and timers with no completion, the events sent in the
// last episode, and the final event. Re-publishing them is idempotent.
func (in *Instance) Outstanding() []messages.Event {
	out := make([]messages.Event, 0, len(in.outstanding)+len(in.lastSent)+1)
	for _, e := range in.outstanding {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b messages.Event) int { return int(a.TaskID - b.TaskID) })
	out = append(out, in.lastSent...)
	if in.final != nil {
		out = append(out, *in.final)
	}
	return out
}
