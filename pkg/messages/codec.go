package messages

import (
	"bytes"
	"errors"
	"fmt"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// ErrMalformed is returned (wrapped) by every Decode function for bytes that
// are not a valid envelope.
var ErrMalformed = errors.New("malformed message")

// ErrVersion is returned (wrapped) for an envelope of an unknown schema version.
var ErrVersion = errors.New("unknown schema version")

var encPool = sync.Pool{New: func() any {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	return &encoder{buf: &buf, enc: enc}
}}

type encoder struct {
	buf *bytes.Buffer
	enc *msgpack.Encoder
}

// Encode encodes v, which should be one of this package's envelopes or
// event slices, as msgpack. The returned slice is owned by the caller.
func Encode(v any) ([]byte, error) {
	e := encPool.Get().(*encoder)
	defer encPool.Put(e)
	e.buf.Reset()
	if err := e.enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode %T: %w", v, err)
	}
	return bytes.Clone(e.buf.Bytes()), nil
}

// decode strictly decodes b into v: unknown fields and trailing bytes are
// errors, and a panic inside the decoder becomes an error.
func decode(b []byte, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrMalformed, r)
		}
	}()
	if err := checkLengths(b); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	r := bytes.NewReader(b)
	dec := msgpack.GetDecoder()
	dec.Reset(r)
	dec.DisallowUnknownFields(true)
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	msgpack.PutDecoder(dec) // not after a panic: that decoder is dropped
	if r.Len() != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrMalformed, r.Len())
	}
	return nil
}

// maxDepth bounds the nesting of arrays and maps: envelopes nest four deep.
const maxDepth = 32

// checkLengths walks the msgpack value at the start of b and refuses any
// array or map whose length the rest of the input cannot hold (every element
// takes at least a byte). msgpack v5.4.1 makes a slice of the claimed length
// before reading its elements (its allocation limit is never applied), so
// without this check a few bytes claiming billions of events would exhaust
// memory and kill the process.
func checkLengths(b []byte) error {
	r := bytes.NewReader(b)
	d := msgpack.GetDecoder()
	d.Reset(r)
	err := checkValue(d, r, 0)
	msgpack.PutDecoder(d)
	return err
}

func checkValue(d *msgpack.Decoder, r *bytes.Reader, depth int) error {
	c, err := d.PeekCode()
	if err != nil {
		return err
	}
	var n, per int
	switch {
	case msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32:
		n, err = d.DecodeArrayLen()
		per = 1
	case msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32:
		n, err = d.DecodeMapLen()
		per = 2
	default:
		return d.Skip()
	}
	if err != nil {
		return err
	}
	if depth >= maxDepth {
		return fmt.Errorf("nested deeper than %d", maxDepth)
	}
	if n > r.Len()/per {
		return fmt.Errorf("length %d exceeds the %d bytes left", n, r.Len())
	}
	for i := 0; i < n*per; i++ {
		if err := checkValue(d, r, depth+1); err != nil {
			return err
		}
	}
	return nil
}

func checkVersion(v uint8) error {
	if v != SchemaVersion {
		return fmt.Errorf("%w %d (want %d)", ErrVersion, v, SchemaVersion)
	}
	return nil
}

func validEvents(evs []Event) error {
	for i := range evs {
		if !evs[i].Type.Valid() {
			return fmt.Errorf("%w: event %d has type %d", ErrMalformed, i, evs[i].Type)
		}
		if evs[i].Status != 0 && !evs[i].Status.Valid() {
			return fmt.Errorf("%w: event %d has status %d", ErrMalformed, i, evs[i].Status)
		}
	}
	return nil
}

// DecodeOrchestratorWork decodes and validates an orchestrator work item.
func DecodeOrchestratorWork(b []byte) (*OrchestratorWork, error) {
	var w OrchestratorWork
	if err := decode(b, &w); err != nil {
		return nil, err
	}
	if err := checkVersion(w.V); err != nil {
		return nil, err
	}
	if err := ValidateInstanceID(w.InstanceID); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(w.Events) == 0 {
		return nil, fmt.Errorf("%w: work item has no events", ErrMalformed)
	}
	if err := validEvents(w.Events); err != nil {
		return nil, err
	}
	return &w, nil
}

// DecodeActivityTask decodes and validates an activity task.
func DecodeActivityTask(b []byte) (*ActivityTask, error) {
	var t ActivityTask
	if err := decode(b, &t); err != nil {
		return nil, err
	}
	if err := checkVersion(t.V); err != nil {
		return nil, err
	}
	if err := ValidateInstanceID(t.InstanceID); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := ValidateName(t.Name); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return &t, nil
}

// DecodeDelayed decodes and validates a delayed message.
func DecodeDelayed(b []byte) (*Delayed, error) {
	var d Delayed
	if err := decode(b, &d); err != nil {
		return nil, err
	}
	if err := checkVersion(d.V); err != nil {
		return nil, err
	}
	if !IsWorkSubject(d.Subject) {
		return nil, fmt.Errorf("%w: delayed target %q is not a work subject", ErrMalformed, d.Subject)
	}
	return &d, nil
}

// DecodeCommand decodes and validates the shape of a client command.
func DecodeCommand(b []byte) (*Command, error) {
	var c Command
	if err := decode(b, &c); err != nil {
		return nil, err
	}
	if err := checkVersion(c.V); err != nil {
		return nil, err
	}
	if !c.Kind.Valid() {
		return nil, fmt.Errorf("%w: unknown command kind %d", ErrMalformed, c.Kind)
	}
	return &c, nil
}

// DecodeReply decodes a command reply.
func DecodeReply(b []byte) (*Reply, error) {
	var r Reply
	if err := decode(b, &r); err != nil {
		return nil, err
	}
	if err := checkVersion(r.V); err != nil {
		return nil, err
	}
	if r.Code >= codeEnd {
		return nil, fmt.Errorf("%w: unknown error code %d", ErrMalformed, r.Code)
	}
	return &r, nil
}

// DecodeStatus decodes a status record.
func DecodeStatus(b []byte) (*Status, error) {
	var s Status
	if err := decode(b, &s); err != nil {
		return nil, err
	}
	if err := checkVersion(s.V); err != nil {
		return nil, err
	}
	if !s.RuntimeStatus.Valid() {
		return nil, fmt.Errorf("%w: status record has status %d", ErrMalformed, s.RuntimeStatus)
	}
	return &s, nil
}

// Episode is the stored form of one history episode: the events one
// orchestrator step appended.
type Episode struct {
	V      uint8   `msgpack:"v"`
	Events []Event `msgpack:"ev"`
}

// DecodeEpisode decodes a stored history episode.
func DecodeEpisode(b []byte) (*Episode, error) {
	var e Episode
	if err := decode(b, &e); err != nil {
		return nil, err
	}
	if err := checkVersion(e.V); err != nil {
		return nil, err
	}
	if err := validEvents(e.Events); err != nil {
		return nil, err
	}
	return &e, nil
}
