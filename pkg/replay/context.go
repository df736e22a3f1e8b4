package replay

import (
	"crypto/sha1"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf16"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/jetflow/jetflow/pkg/messages"
)

// Orchestrator is an orchestrator function. It must be deterministic: it
// may only reach time, randomness and I/O through its Context.
type Orchestrator func(ctx *Context) (any, error)

// ErrTimeout is returned by Await on a WaitForExternalEvent task whose timeout passed first.
var ErrTimeout = errors.New("timed out waiting for external event")

// ErrCustomStatusTooLarge is returned (wrapped) by SetCustomStatus for a value
// over the configured limit. The previous custom status is kept.
var ErrCustomStatusTooLarge = errors.New("custom status too large")

// DefaultMaxCustomStatusBytes is Durable Functions' limit: 16 KB of UTF-16 JSON text.
const DefaultMaxCustomStatusBytes = 16 * 1024

// TaskFailedError is returned by Await for an activity or sub-orchestration that failed.
type TaskFailedError struct {
	Name    string
	Failure messages.Failure
}

func (e *TaskFailedError) Error() string {
	return fmt.Sprintf("task %q failed: %s", e.Name, e.Failure.Message)
}

// Task is the handle of an activity, timer, sub-orchestration or external
// event. Await blocks the orchestrator until the task is done.
type Task interface {
	// Await waits for the task and decodes its JSON result into v (which may be nil).
	Await(v any) error
	// IsDone reports whether the task has finished.
	IsDone() bool
}

type task struct {
	c      *Context
	name   string
	done   bool
	result []byte
	err    error
	onDone []func()
}

func (t *task) IsDone() bool { return t.done }

func (t *task) resolve(result []byte, err error) {
	if t.done {
		return
	}
	t.done, t.result, t.err = true, result, err
	for _, f := range t.onDone {
		f()
	}
	t.onDone = nil
}

func (t *task) Await(v any) error {
	if !t.done {
		t.c.blockUntil(t.IsDone)
	}
	if t.err != nil {
		return t.err
	}
	if v != nil && len(t.result) > 0 {
		if err := json.Unmarshal(t.result, v); err != nil {
			return fmt.Errorf("decode result of %q: %w", t.name, err)
		}
	}
	return nil
}

// Context is what an orchestrator function sees. It is not a
// context.Context: everything on it is replayed deterministically.
type Context struct {
	in *Instance

	instanceID  string
	executionID string
	name        string
	input       []byte
	parent      *messages.ParentRef
	now         time.Time
	replaying   bool
	seq         int32
	guids       uint64

	customStatus  []byte
	continueAsNew []byte
	continued     bool
	logger        *zap.Logger // made by Logger, on first use
	logCore       zapcore.Core
}

// InstanceID returns the orchestration's instance ID.
func (c *Context) InstanceID() string { return c.instanceID }

// Name returns the orchestrator's registered name.
func (c *Context) Name() string { return c.name }

// GetInput decodes the orchestration's JSON input into v.
func (c *Context) GetInput(v any) error {
	if len(c.input) == 0 {
		return nil
	}
	if err := json.Unmarshal(c.input, v); err != nil {
		return fmt.Errorf("decode input: %w", err)
	}
	return nil
}

// CurrentTime returns the deterministic current time: the start time of the
// episode being executed or replayed.
func (c *Context) CurrentTime() time.Time { return c.now }

// IsReplaying reports whether the code is re-running past history.
func (c *Context) IsReplaying() bool { return c.replaying }

// NewGUID returns a deterministic UUID (version 5 layout), the same on every replay.
func (c *Context) NewGUID() string {
	c.guids++
	h := sha1.Sum(fmt.Appendf(nil, "%s/%s/%d", c.instanceID, c.executionID, c.guids))
	h[6] = h[6]&0x0f | 0x50
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// Logger returns a logger that is silent while the orchestrator replays.
func (c *Context) Logger() *zap.Logger {
	if c.logger == nil {
		c.logger = zap.New(replayCore{Core: c.logCore, c: c})
	}
	return c.logger
}

// SetCustomStatus sets the custom status to the JSON form of v; nil clears
// it. The last value set before the orchestrator awaits an unfinished task,
// or completes, is committed with that episode. A value whose JSON text is
// larger than the limit is refused with ErrCustomStatusTooLarge, and the
// previous value stays.
func (c *Context) SetCustomStatus(v any) error {
	if v == nil {
		c.customStatus = nil
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("custom status: %w", err)
	}
	if string(b) == "null" {
		c.customStatus = nil
		return nil
	}
	if n := UTF16Size(b); n > c.in.opts.MaxCustomStatusBytes {
		return fmt.Errorf("%w: %d bytes of UTF-16 text, limit %d", ErrCustomStatusTooLarge, n, c.in.opts.MaxCustomStatusBytes)
	}
	c.customStatus = b
	return nil
}

// UTF16Size returns the size in bytes of text encoded as UTF-16.
func UTF16Size(text []byte) int {
	n := 0
	for _, r := range string(text) {
		n += 2 * utf16.RuneLen(r) // range yields U+FFFD for invalid bytes
	}
	return n
}

// ContinueAsNew asks for the orchestration to restart with a fresh history
// and the given input once the orchestrator function returns.
func (c *Context) ContinueAsNew(input any) error {
	b, err := marshalInput(input)
	if err != nil {
		return fmt.Errorf("continue as new: %w", err)
	}
	c.continueAsNew = b
	c.continued = true
	return nil
}

// CallOption configures CallActivity.
type CallOption func(*messages.Event)

// WithRetry retries a failing activity by policy p.
func WithRetry(p messages.RetryPolicy) CallOption {
	return func(e *messages.Event) { e.Retry = &p }
}

// CallActivity schedules activity name with input and returns its task.
func (c *Context) CallActivity(name string, input any, opts ...CallOption) Task {
	b, err := marshalInput(input)
	if err != nil {
		return c.failedTask(name, fmt.Errorf("activity %q input: %w", name, err))
	}
	e := messages.Event{Type: messages.EventTaskScheduled, Name: name, Input: b}
	for _, o := range opts {
		o(&e)
	}
	return c.schedule(e)
}

// SubOption configures CallSubOrchestrator.
type SubOption func(*messages.Event)

// WithInstanceID sets the sub-orchestration's instance ID; by default it is
// derived from the parent's ID and the call's sequence number.
func WithInstanceID(id string) SubOption {
	return func(e *messages.Event) { e.InstanceID = id }
}

// CallSubOrchestrator starts orchestrator name as a child and returns a task
// that completes with the child's output.
func (c *Context) CallSubOrchestrator(name string, input any, opts ...SubOption) Task {
	b, err := marshalInput(input)
	if err != nil {
		return c.failedTask(name, fmt.Errorf("sub-orchestrator %q input: %w", name, err))
	}
	e := messages.Event{Type: messages.EventSubOrchestrationCreated, Name: name, Input: b}
	for _, o := range opts {
		o(&e)
	}
	if e.InstanceID == "" {
		e.InstanceID = fmt.Sprintf("%s:%d", c.instanceID, c.seq)
	}
	if err := messages.ValidateInstanceID(e.InstanceID); err != nil {
		return c.failedTask(name, err)
	}
	return c.schedule(e)
}

// SendEvent raises event name with data on another instance. It does not wait.
func (c *Context) SendEvent(instanceID, name string, data any) error {
	if err := messages.ValidateInstanceID(instanceID); err != nil {
		return err
	}
	b, err := marshalInput(data)
	if err != nil {
		return fmt.Errorf("send event %q: %w", name, err)
	}
	c.schedule(messages.Event{Type: messages.EventSent, Name: name, InstanceID: instanceID, Input: b})
	return nil
}

// CreateTimer returns a task that completes after d of orchestration time.
func (c *Context) CreateTimer(d time.Duration) Task {
	return c.schedule(messages.Event{Type: messages.EventTimerCreated, FireAt: c.now.Add(d)})
}

// WaitOption configures WaitForExternalEvent.
type WaitOption func(*waitOpts)

type waitOpts struct{ timeout time.Duration }

// WithTimeout makes the wait fail with ErrTimeout after d.
func WithTimeout(d time.Duration) WaitOption { return func(o *waitOpts) { o.timeout = d } }

// WaitForExternalEvent returns a task that completes with the data of the
// next event called name raised on this instance. Events raised before the
// wait are buffered and delivered in order.
func (c *Context) WaitForExternalEvent(name string, opts ...WaitOption) Task {
	var o waitOpts
	for _, f := range opts {
		f(&o)
	}
	t := &task{c: c, name: name}
	in := c.in
	if q := in.buffered[name]; len(q) > 0 {
		t.resolve(q[0], nil)
		in.buffered[name] = q[1:]
		return t
	}
	in.waiters[name] = append(in.waiters[name], t)
	if o.timeout > 0 {
		timer := c.CreateTimer(o.timeout).(*task)
		timer.onDone = append(timer.onDone, func() {
			if t.done {
				return
			}
			in.removeWaiter(name, t)
			t.resolve(nil, fmt.Errorf("%w %q after %s", ErrTimeout, name, o.timeout))
		})
	}
	return t
}

// WhenAll waits for every task and returns the first error, in argument order.
func (c *Context) WhenAll(tasks ...Task) error {
	c.blockUntil(func() bool {
		for _, t := range tasks {
			if !t.IsDone() {
				return false
			}
		}
		return true
	})
	for _, t := range tasks {
		if err := t.Await(nil); err != nil {
			return err
		}
	}
	return nil
}

// WhenAny waits until one of the tasks is done and returns the index of the
// first to finish in history order.
func (c *Context) WhenAny(tasks ...Task) (int, error) {
	if len(tasks) == 0 {
		return -1, errors.New("WhenAny of no tasks")
	}
	winner := -1
	for i, t := range tasks {
		if t.IsDone() {
			return i, nil
		}
		if tt, ok := t.(*task); ok {
			i := i
			tt.onDone = append(tt.onDone, func() {
				if winner < 0 {
					winner = i
				}
			})
		}
	}
	c.blockUntil(func() bool { return winner >= 0 })
	return winner, nil
}

func (c *Context) failedTask(name string, err error) Task {
	return &task{c: c, name: name, done: true, err: err}
}

// schedule records a new action at the next sequence number.
func (c *Context) schedule(e messages.Event) Task {
	c.in.checkAlive()
	e.TaskID = c.seq
	c.seq++
	e.Timestamp = c.now
	t := &task{c: c, name: e.Name}
	if e.Type == messages.EventTimerCreated {
		t.name = "timer"
	}
	c.in.pending[e.TaskID] = &e
	c.in.pendingOrder = append(c.in.pendingOrder, e.TaskID)
	if e.Type != messages.EventSent {
		c.in.open[e.TaskID] = t
	} else {
		t.done = true
	}
	return t
}

func (c *Context) blockUntil(cond func() bool) {
	for !cond() {
		c.in.block(cond)
	}
}

func marshalInput(v any) ([]byte, error) {
	if v == nil {
		return nil, nil
	}
	if raw, ok := v.(json.RawMessage); ok {
		if !json.Valid(raw) {
			return nil, errors.New("invalid JSON")
		}
		return raw, nil
	}
	return json.Marshal(v)
}

// replayCore drops log entries while the orchestrator replays.
type replayCore struct {
	zapcore.Core
	c *Context
}

func (r replayCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if r.c.replaying {
		return ce
	}
	return r.Core.Check(e, ce)
}

func (r replayCore) With(f []zapcore.Field) zapcore.Core {
	return replayCore{Core: r.Core.With(f), c: r.c}
}
