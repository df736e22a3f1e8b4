package messages

import (
	"math"
	"reflect"
	"time"
)

// t0 is a UTC time without a monotonic reading, so that it survives a
// msgpack round trip bit for bit once normalized.
var t0 = time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC)

// normalize makes a decoded value comparable with reflect.DeepEqual: times
// are put in UTC (msgpack decodes them in time.Local), empty byte slices
// become nil (omitempty cannot tell them apart) and NaN floats become a
// fixed value (NaN != NaN). It changes v in place and returns it.
func normalize(v any) any {
	normalizeValue(reflect.ValueOf(v))
	return v
}

var timeType = reflect.TypeOf(time.Time{})

func normalizeValue(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			normalizeValue(v.Elem())
		}
	case reflect.Struct:
		if v.Type() == timeType {
			if v.CanSet() {
				v.Set(reflect.ValueOf(v.Interface().(time.Time).UTC()))
			}
			return
		}
		for i := 0; i < v.NumField(); i++ {
			if f := v.Field(i); f.CanSet() {
				normalizeValue(f)
			}
		}
	case reflect.Slice:
		if v.Len() == 0 {
			if v.CanSet() && !v.IsNil() {
				v.Set(reflect.Zero(v.Type()))
			}
			return
		}
		for i := 0; i < v.Len(); i++ {
			normalizeValue(v.Index(i))
		}
	case reflect.Float32, reflect.Float64:
		if v.CanSet() && math.IsNaN(v.Float()) {
			v.SetFloat(-1.5e300)
		}
	}
}

func allEvents() []Event {
	rp := &RetryPolicy{FirstInterval: time.Second, BackoffCoefficient: 2.5, MaxInterval: time.Minute, MaxAttempts: 5}
	return []Event{
		{Type: EventOrchestratorStarted, Timestamp: t0},
		{Type: EventExecutionStarted, Timestamp: t0, Name: "Order", Input: []byte(`{"n":1}`), InstanceID: "order-1", ExecutionID: "e1",
			Parent: &ParentRef{InstanceID: "parent", ExecutionID: "pe", TaskID: 7}},
		{Type: EventTaskScheduled, Timestamp: t0, TaskID: 0, Name: "Charge", Input: []byte(`"x"`), Retry: rp},
		{Type: EventTaskCompleted, Timestamp: t0.Add(time.Second), TaskID: 0, Result: []byte(`42`)},
		{Type: EventTaskFailed, Timestamp: t0, TaskID: 1, Failure: &Failure{Type: "Err", Message: "boom", Retryable: true, Cause: "io"}},
		{Type: EventTimerCreated, Timestamp: t0, TaskID: 2, FireAt: t0.Add(time.Hour)},
		{Type: EventTimerFired, Timestamp: t0.Add(time.Hour), TaskID: 2, FireAt: t0.Add(time.Hour)},
		{Type: EventRaised, Timestamp: t0, Name: "Approve", Input: []byte(`true`), EventID: "ev-1"},
		{Type: EventSent, Timestamp: t0, TaskID: 3, Name: "Ping", InstanceID: "other", Input: []byte(`1`)},
		{Type: EventSubOrchestrationCreated, Timestamp: t0, TaskID: 4, Name: "Child", InstanceID: "order-1:4"},
		{Type: EventSubOrchestrationCompleted, Timestamp: t0, TaskID: 4, Result: []byte(`null`)},
		{Type: EventSubOrchestrationFailed, Timestamp: t0, TaskID: 5, Failure: &Failure{Message: "child failed"}},
		{Type: EventExecutionSuspended, Timestamp: t0, Reason: "pause"},
		{Type: EventExecutionResumed, Timestamp: t0, Reason: "go"},
		{Type: EventExecutionTerminated, Timestamp: t0, Reason: "stop"},
		{Type: EventContinuedAsNew, Timestamp: t0, ExecutionID: "e2", Name: "Order", Input: []byte(`2`)},
		{Type: EventExecutionCompleted, Timestamp: t0, Status: StatusFailed, Failure: &Failure{Message: "x"}},
		{Type: EventExecutionCompleted, Timestamp: t0, Status: StatusCompleted, Result: []byte(`"ok"`)},
		{Type: EventOrchestratorCompleted, Timestamp: t0, Input: []byte(`{"stage":3}`)},
	}
}

func sampleWork() *OrchestratorWork {
	return &OrchestratorWork{V: SchemaVersion, InstanceID: "order-1", ExecutionID: "e1", Events: allEvents()}
}

func sampleTask() *ActivityTask {
	return &ActivityTask{V: SchemaVersion, InstanceID: "order-1", ExecutionID: "e1", TaskID: 3, Name: "Charge",
		Input: []byte(`{"amount":10}`), Attempt: 2,
		Retry: &RetryPolicy{FirstInterval: 250 * time.Millisecond, BackoffCoefficient: 2, MaxInterval: 10 * time.Second, MaxAttempts: 4}}
}

func sampleDelayed() *Delayed {
	return &Delayed{V: SchemaVersion, DueAt: t0.Add(90 * time.Minute), Subject: OrchestratorSubject("order 1"), MsgID: "m-1", Payload: []byte{0x81, 0xa1, 'v', 1}}
}

func sampleCommand() *Command {
	return &Command{V: SchemaVersion, Kind: CmdRaiseEvent, InstanceID: "order-1", Name: "Approve", Input: []byte(`true`), Reason: "because"}
}

func sampleReply() *Reply {
	return &Reply{V: SchemaVersion, InstanceID: "order-1", Code: CodeConflict, Error: "already exists"}
}

func sampleStatus() *Status {
	return &Status{V: SchemaVersion, InstanceID: "order-1", Name: "Order", ExecutionID: "e1", RuntimeStatus: StatusFailed,
		Input: []byte(`1`), Output: []byte(`2`), CustomStatus: []byte(`"half"`), Failure: &Failure{Type: "T", Message: "m"},
		CreatedAt: t0, LastUpdatedAt: t0.Add(time.Minute), Episode: 12}
}

func sampleEpisode() *Episode {
	return &Episode{V: SchemaVersion, Events: allEvents()}
}

// decoder is one Decode function with the envelope it reads.
type decoder struct {
	name   string
	sample func() any
	decode func([]byte) (any, error)
}

// decoders lists every Decode function. Each returns a typed nil as an
// untyped nil so callers can test for acceptance with err alone.
var decoders = []decoder{
	{"OrchestratorWork", func() any { return sampleWork() }, func(b []byte) (any, error) { return nilIfErr(DecodeOrchestratorWork(b)) }},
	{"ActivityTask", func() any { return sampleTask() }, func(b []byte) (any, error) { return nilIfErr(DecodeActivityTask(b)) }},
	{"Delayed", func() any { return sampleDelayed() }, func(b []byte) (any, error) { return nilIfErr(DecodeDelayed(b)) }},
	{"Command", func() any { return sampleCommand() }, func(b []byte) (any, error) { return nilIfErr(DecodeCommand(b)) }},
	{"Reply", func() any { return sampleReply() }, func(b []byte) (any, error) { return nilIfErr(DecodeReply(b)) }},
	{"Status", func() any { return sampleStatus() }, func(b []byte) (any, error) { return nilIfErr(DecodeStatus(b)) }},
	{"Episode", func() any { return sampleEpisode() }, func(b []byte) (any, error) { return nilIfErr(DecodeEpisode(b)) }},
}

func nilIfErr[T any](v *T, err error) (any, error) {
	if err != nil {
		if v != nil {
			return v, err // reported by the caller as a contract violation
		}
		return nil, err
	}
	return v, nil
}
