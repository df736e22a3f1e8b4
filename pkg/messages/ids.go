package messages

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxIDLen is the longest instance ID or name accepted, in bytes.
const MaxIDLen = 256

// ErrInvalidID is returned (wrapped) for an instance ID or name that is not accepted.
var ErrInvalidID = errors.New("invalid identifier")

// ValidateInstanceID checks that id can name an instance: 1 to 256 bytes of
// UTF-8 with no '.', '*', '>', white space or control characters, so that it
// can never escape its NATS subject token.
func ValidateInstanceID(id string) error {
	if err := validate("instance ID", id); err != nil {
		return err
	}
	if i := strings.IndexAny(id, ".*>"); i >= 0 {
		return fmt.Errorf("%w: instance ID %q contains %q", ErrInvalidID, truncate(id), id[i])
	}
	return nil
}

// ValidateName checks an orchestrator, activity or event name: 1 to 256
// bytes of UTF-8 with no white space or control characters.
func ValidateName(name string) error { return validate("name", name) }

func validate(what, s string) error {
	if s == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalidID, what)
	}
	if len(s) > MaxIDLen {
		return fmt.Errorf("%w: %s is %d bytes, over the limit of %d", ErrInvalidID, what, len(s), MaxIDLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidID, what)
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("%w: %s %q contains white space or a control character", ErrInvalidID, what, truncate(s))
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// Token encodes a validated identifier as a NATS subject token and KV key
// part: ASCII letters, digits, '-' and '_' stand for themselves; every other
// byte is written as '=' and two hex digits. The encoding is one to one.
func Token(id string) string {
	plain := true
	for i := 0; i < len(id); i++ {
		if !tokenSafe(id[i]) {
			plain = false
			break
		}
	}
	if plain {
		return id
	}
	var b strings.Builder
	b.Grow(len(id) * 2)
	const hexdig = "0123456789ABCDEF"
	for i := 0; i < len(id); i++ {
		c := id[i]
		if tokenSafe(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('=')
		b.WriteByte(hexdig[c>>4])
		b.WriteByte(hexdig[c&15])
	}
	return b.String()
}

// ParseToken reverses Token.
func ParseToken(tok string) (string, error) {
	if !strings.Contains(tok, "=") {
		return tok, nil
	}
	var b strings.Builder
	for i := 0; i < len(tok); i++ {
		if tok[i] != '=' {
			b.WriteByte(tok[i])
			continue
		}
		if i+2 >= len(tok) {
			return "", fmt.Errorf("%w: bad escape in token %q", ErrInvalidID, tok)
		}
		v, err := hex.DecodeString(tok[i+1 : i+3])
		if err != nil {
			return "", fmt.Errorf("%w: bad escape in token %q", ErrInvalidID, tok)
		}
		b.WriteByte(v[0])
		i += 2
	}
	return b.String(), nil
}

func tokenSafe(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// NewID returns a random 32-hex-digit identifier, safe as an instance ID.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Subject and storage names.
const (
	SubjectPrefix = "jetflow"

	DeadLetterStream   = "JETFLOW_DLQ"
	AdvisoryStream     = "JETFLOW_ADVISORY"
	OrchestratorStream = "JETFLOW_ORCH"
	ActivityStream     = "JETFLOW_ACT"
	DelayStream        = "JETFLOW_DELAY"

	HistoryBucket  = "jetflow-history"
	StatusBucket   = "jetflow-status"
	RegistryBucket = "jetflow-registry"

	orchPrefix  = SubjectPrefix + ".orch."
	actPrefix   = SubjectPrefix + ".act."
	delayPrefix = SubjectPrefix + ".delay."
	cmdPrefix   = SubjectPrefix + ".cmd."
	dlqPrefix   = SubjectPrefix + ".dlq."
)

// MaxDeliveriesAdvisory is the subject of the server's advisory that a
// message of stream was delivered the consumer's MaxDeliver times.
func MaxDeliveriesAdvisory(stream, consumer string) string {
	return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + stream + "." + consumer
}

// DeadLetterSubject is where a message given up on is copied, by the name
// of the stream it came from.
func DeadLetterSubject(stream string) string { return dlqPrefix + Token(stream) }

// Headers of a dead-lettered message; its data is the original bytes.
const (
	HeaderDLQReason     = "Jetflow-Dlq-Reason"
	HeaderDLQStream     = "Jetflow-Dlq-Stream"
	HeaderDLQSubject    = "Jetflow-Dlq-Subject"
	HeaderDLQSequence   = "Jetflow-Dlq-Sequence"
	HeaderDLQDeliveries = "Jetflow-Dlq-Deliveries"
)

// MsgID is the Nats-Msg-Id of the message that carries out action seq of a
// run: kind "a" for an activity task, "r" for its result, "t" for a timer.
func MsgID(kind, instanceID, executionID string, seq int32) string {
	return kind + ":" + instanceID + ":" + executionID + ":" + strconv.Itoa(int(seq))
}

// OrchestratorSubject is where work for instance id is published.
func OrchestratorSubject(id string) string { return orchPrefix + Token(id) }

// ActivitySubject is where activity tasks of instance id are published.
func ActivitySubject(id string) string { return actPrefix + Token(id) }

// DelaySubject is where delayed messages for instance id are published.
func DelaySubject(id string) string { return delayPrefix + Token(id) }

// CommandSubject is where clients send command k as a NATS request.
func CommandSubject(k CommandKind) string { return cmdPrefix + k.String() }

// Wildcards for stream subjects and subscriptions.
const (
	OrchestratorSubjects = orchPrefix + "*"
	ActivitySubjects     = actPrefix + "*"
	DelaySubjects        = delayPrefix + "*"
	DeadLetterSubjects   = dlqPrefix + "*"
	CommandSubjects      = cmdPrefix + "*"
)

// IsWorkSubject reports whether s is an orchestrator or activity subject of
// exactly one token, the only targets a delayed message may have.
func IsWorkSubject(s string) bool {
	var rest string
	switch {
	case strings.HasPrefix(s, orchPrefix):
		rest = s[len(orchPrefix):]
	case strings.HasPrefix(s, actPrefix):
		rest = s[len(actPrefix):]
	default:
		return false
	}
	if rest == "" {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if !tokenSafe(rest[i]) && rest[i] != '=' {
			return false
		}
	}
	return true
}
