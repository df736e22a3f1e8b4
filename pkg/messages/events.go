package messages

import (
	"fmt"
	"math"
	"time"
)

// EventType names a history event. The zero value is invalid.
type EventType uint8

// History event types.
const (
	EventInvalid EventType = iota
	EventExecutionStarted
	EventTaskScheduled
	EventTaskCompleted
	EventTaskFailed
	EventTimerCreated
	EventTimerFired
	EventRaised
	EventSent
	EventSubOrchestrationCreated
	EventSubOrchestrationCompleted
	EventSubOrchestrationFailed
	EventExecutionCompleted
	EventExecutionTerminated
	EventExecutionSuspended
	EventExecutionResumed
	EventContinuedAsNew
	EventOrchestratorStarted
	EventOrchestratorCompleted
	// EventExecutionRewound asks a Failed run to re-run its failed work.
	EventExecutionRewound
	eventTypeEnd
)

var eventNames = [...]string{
	EventInvalid:                   "Invalid",
	EventExecutionStarted:          "ExecutionStarted",
	EventTaskScheduled:             "TaskScheduled",
	EventTaskCompleted:             "TaskCompleted",
	EventTaskFailed:                "TaskFailed",
	EventTimerCreated:              "TimerCreated",
	EventTimerFired:                "TimerFired",
	EventRaised:                    "EventRaised",
	EventSent:                      "EventSent",
	EventSubOrchestrationCreated:   "SubOrchestrationInstanceCreated",
	EventSubOrchestrationCompleted: "SubOrchestrationInstanceCompleted",
	EventSubOrchestrationFailed:    "SubOrchestrationInstanceFailed",
	EventExecutionCompleted:        "ExecutionCompleted",
	EventExecutionTerminated:       "ExecutionTerminated",
	EventExecutionSuspended:        "ExecutionSuspended",
	EventExecutionResumed:          "ExecutionResumed",
	EventContinuedAsNew:            "ContinuedAsNew",
	EventOrchestratorStarted:       "OrchestratorStarted",
	EventOrchestratorCompleted:     "OrchestratorCompleted",
	EventExecutionRewound:          "ExecutionRewound",
}

// Valid reports whether t is a known, non-zero event type.
func (t EventType) Valid() bool { return t > EventInvalid && t < eventTypeEnd }

// String returns the Durable Functions name of the event type.
func (t EventType) String() string {
	if int(t) < len(eventNames) {
		return eventNames[t]
	}
	return fmt.Sprintf("EventType(%d)", uint8(t))
}

// IsScheduling reports whether the event records an action the orchestrator
// took (and which replay must find again at the same sequence number).
func (t EventType) IsScheduling() bool {
	switch t {
	case EventTaskScheduled, EventTimerCreated, EventSubOrchestrationCreated, EventSent:
		return true
	}
	return false
}

// IsCompletion reports whether t answers a scheduling event with the same
// TaskID.
func (t EventType) IsCompletion() bool {
	switch t {
	case EventTaskCompleted, EventTaskFailed, EventTimerFired, EventSubOrchestrationCompleted, EventSubOrchestrationFailed:
		return true
	}
	return false
}

// RuntimeStatus is an orchestration's runtime status. The zero value is invalid.
type RuntimeStatus uint8

// Runtime statuses, named as in Durable Functions.
const (
	StatusInvalid RuntimeStatus = iota
	StatusPending
	StatusRunning
	StatusCompleted
	StatusContinuedAsNew
	StatusFailed
	StatusTerminated
	StatusSuspended
	statusEnd
)

var statusNames = [...]string{"Invalid", "Pending", "Running", "Completed", "ContinuedAsNew", "Failed", "Terminated", "Suspended"}

// Valid reports whether s is a known, non-zero status.
func (s RuntimeStatus) Valid() bool { return s > StatusInvalid && s < statusEnd }

// String returns the Durable Functions name of the status.
func (s RuntimeStatus) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("RuntimeStatus(%d)", uint8(s))
}

// Terminal reports whether no more work happens in this status.
func (s RuntimeStatus) Terminal() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusTerminated
}

// ParseRuntimeStatus parses a Durable Functions status name.
func ParseRuntimeStatus(name string) (RuntimeStatus, error) {
	for i, n := range statusNames {
		if i > 0 && n == name {
			return RuntimeStatus(i), nil
		}
	}
	return StatusInvalid, fmt.Errorf("unknown runtime status %q", name)
}

// FailurePoison is the failure type of work given up on because it failed
// on every delivery: a run it ended, or the activity it stood for.
const FailurePoison = "PoisonMessage"

// Failure describes why a task or an orchestration failed. It crosses
// process boundaries, so it carries text rather than Go error values.
type Failure struct {
	Type      string `msgpack:"type,omitempty"`
	Message   string `msgpack:"msg"`
	Retryable bool   `msgpack:"retry,omitempty"`
	Cause     string `msgpack:"cause,omitempty"`
}

func (f *Failure) Error() string {
	if f.Type != "" {
		return f.Type + ": " + f.Message
	}
	return f.Message
}

// RetryPolicy says how an activity is retried. MaxAttempts counts the first
// attempt; 0 or 1 means no retry.
type RetryPolicy struct {
	FirstInterval      time.Duration `msgpack:"first"`
	BackoffCoefficient float64       `msgpack:"coef,omitempty"`
	MaxInterval        time.Duration `msgpack:"max,omitempty"`
	MaxAttempts        int           `msgpack:"attempts"`
}

// Delay returns the wait before attempt number next (2 for the first retry).
func (p *RetryPolicy) Delay(next int) time.Duration {
	d := float64(p.FirstInterval)
	coef := p.BackoffCoefficient
	if coef <= 0 || math.IsNaN(coef) {
		coef = 1
	}
	for i := 2; i < next; i++ {
		d *= coef
		if p.MaxInterval > 0 && d > float64(p.MaxInterval) || d >= math.MaxInt64 {
			break
		}
	}
	if p.MaxInterval > 0 && d > float64(p.MaxInterval) {
		d = float64(p.MaxInterval)
	}
	if d >= math.MaxInt64 {
		// Beyond what a Duration holds: converting would wrap negative.
		return math.MaxInt64
	}
	return time.Duration(d)
}

// ParentRef identifies the orchestration that started a sub-orchestration.
type ParentRef struct {
	InstanceID  string `msgpack:"id"`
	ExecutionID string `msgpack:"exec"`
	TaskID      int32  `msgpack:"task"`
}

// Event is one history event. Which fields are set depends on Type; JSON
// payloads (Input, Result) are kept as raw JSON text.
type Event struct {
	Type      EventType `msgpack:"t"`
	Timestamp time.Time `msgpack:"ts"`
	// TaskID is the sequence number of the action the event belongs to.
	TaskID int32  `msgpack:"id,omitempty"`
	Name   string `msgpack:"n,omitempty"`
	Input  []byte `msgpack:"in,omitempty"`
	Result []byte `msgpack:"out,omitempty"`
	// Failure is set on TaskFailed, SubOrchestrationInstanceFailed and a
	// failed ExecutionCompleted.
	Failure *Failure `msgpack:"f,omitempty"`
	// FireAt is the due time of a TimerCreated or TimerFired event.
	FireAt time.Time `msgpack:"at,omitempty"`
	// InstanceID is the target of a sub-orchestration or a sent event.
	InstanceID string `msgpack:"iid,omitempty"`
	// ExecutionID is set on ExecutionStarted and ContinuedAsNew (the new run).
	ExecutionID string     `msgpack:"exec,omitempty"`
	Parent      *ParentRef `msgpack:"p,omitempty"`
	// EventID makes a raised event unique, so a redelivered raise is applied once.
	EventID string `msgpack:"eid,omitempty"`
	// Status is the final status on ExecutionCompleted.
	Status RuntimeStatus `msgpack:"st,omitempty"`
	Reason string        `msgpack:"why,omitempty"`
	Retry  *RetryPolicy  `msgpack:"rp,omitempty"`
}
