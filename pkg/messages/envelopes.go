package messages

import (
	"time"
)

// SchemaVersion is the version every envelope carries. Decoding refuses any other.
const SchemaVersion = 1

// OrchestratorWork is a unit of work for one orchestration instance: new
// events to apply in the next episode. It travels on OrchestratorSubject.
type OrchestratorWork struct {
	V          uint8  `msgpack:"v"`
	InstanceID string `msgpack:"iid"`
	// ExecutionID names the run the events belong to. Empty means the
	// instance's current run.
	ExecutionID string  `msgpack:"exec,omitempty"`
	Events      []Event `msgpack:"ev"`
	// StatusRev, on a start, is the revision of the Pending status record
	// the dispatcher wrote for the run, and IndexRev that of its key in
	// the listing index, so that the worker's first status write can
	// replace them without reading them. They are hints: a stale one
	// costs a read.
	StatusRev uint64 `msgpack:"srev,omitempty"`
	IndexRev  uint64 `msgpack:"irev,omitempty"`
}

// ActivityTask asks a worker to run one attempt of an activity.
type ActivityTask struct {
	V           uint8        `msgpack:"v"`
	InstanceID  string       `msgpack:"iid"`
	ExecutionID string       `msgpack:"exec"`
	TaskID      int32        `msgpack:"task"`
	Name        string       `msgpack:"n"`
	Input       []byte       `msgpack:"in,omitempty"`
	Attempt     int          `msgpack:"try"`
	Retry       *RetryPolicy `msgpack:"rp,omitempty"`
}

// Delayed is a message to publish later: the dispatcher publishes Payload on
// Subject once DueAt has passed. Durable timers and activity retries use it.
type Delayed struct {
	V       uint8     `msgpack:"v"`
	DueAt   time.Time `msgpack:"due"`
	Subject string    `msgpack:"subj"`
	MsgID   string    `msgpack:"mid"`
	Payload []byte    `msgpack:"data"`
}

// CommandKind names a client command. The zero value is invalid.
type CommandKind uint8

// Client commands.
const (
	CmdInvalid CommandKind = iota
	CmdStart
	CmdRaiseEvent
	CmdTerminate
	CmdSuspend
	CmdResume
	CmdPurge
	CmdRewind
	CmdRestart
	cmdEnd
)

var cmdNames = [...]string{"invalid", "start", "raise", "terminate", "suspend", "resume", "purge", "rewind", "restart"}

// Valid reports whether k is a known, non-zero command.
func (k CommandKind) Valid() bool { return k > CmdInvalid && k < cmdEnd }

func (k CommandKind) String() string {
	if int(k) < len(cmdNames) {
		return cmdNames[k]
	}
	return "unknown"
}

// Command is a client command, sent as a NATS request to CommandSubject(kind).
type Command struct {
	V    uint8       `msgpack:"v"`
	Kind CommandKind `msgpack:"k"`
	// InstanceID may be empty on start, to have one generated.
	InstanceID string `msgpack:"iid,omitempty"`
	// Name is the orchestrator (start) or the event (raise).
	Name string `msgpack:"n,omitempty"`
	// Input is JSON text: the orchestration input or the event data.
	Input  []byte `msgpack:"in,omitempty"`
	Reason string `msgpack:"why,omitempty"`
	// NewID, on restart, runs the restarted orchestration under a new
	// instance ID instead of the same one.
	NewID bool `msgpack:"newid,omitempty"`
}

// ErrorCode classifies a command error. The zero value means no error.
type ErrorCode uint8

// Command error codes; the HTTP API maps them to status codes.
const (
	CodeOK ErrorCode = iota
	CodeBadRequest
	CodeNotFound
	CodeConflict
	CodeGone
	CodeInternal
	// CodeTooLarge: an input or event payload over the size limit.
	CodeTooLarge
	codeEnd
)

// Reply answers a Command.
type Reply struct {
	V          uint8     `msgpack:"v"`
	InstanceID string    `msgpack:"iid,omitempty"`
	Code       ErrorCode `msgpack:"code,omitempty"`
	Error      string    `msgpack:"err,omitempty"`
}

// Status is the status record of one instance, kept in the status bucket.
type Status struct {
	V             uint8         `msgpack:"v"`
	InstanceID    string        `msgpack:"iid"`
	Name          string        `msgpack:"n"`
	ExecutionID   string        `msgpack:"exec"`
	RuntimeStatus RuntimeStatus `msgpack:"st"`
	Input         []byte        `msgpack:"in,omitempty"`
	Output        []byte        `msgpack:"out,omitempty"`
	CustomStatus  []byte        `msgpack:"cs,omitempty"`
	Failure       *Failure      `msgpack:"f,omitempty"`
	CreatedAt     time.Time     `msgpack:"ct"`
	LastUpdatedAt time.Time     `msgpack:"ut"`
	// Episode is the number of history episodes of this run the record
	// reflects. It is never more than the episodes committed.
	Episode uint64 `msgpack:"ep"`
}
