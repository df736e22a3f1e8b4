package jetstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/pkg/messages"
)

// DeadLetter is a work message given up on.
type DeadLetter struct {
	// Stream, Subject and Sequence say where the message was.
	Stream   string
	Subject  string
	Sequence uint64
	// Deliveries is how often it was delivered, when known.
	Deliveries uint64
	// Reason says why it was given up on.
	Reason string
	// Data is the message's original bytes.
	Data []byte
}

// DeadLetter copies d to the dead-letter stream, with the reason and the
// origin in headers and the original bytes as data. Copying the same
// message again is a no-op within the duplicate window.
func (s *Store) DeadLetter(ctx context.Context, d DeadLetter) error {
	m := nats.NewMsg(messages.DeadLetterSubject(d.Stream))
	m.Data = d.Data
	m.Header.Set(messages.HeaderDLQReason, d.Reason)
	m.Header.Set(messages.HeaderDLQStream, d.Stream)
	m.Header.Set(messages.HeaderDLQSubject, d.Subject)
	m.Header.Set(messages.HeaderDLQSequence, strconv.FormatUint(d.Sequence, 10))
	if d.Deliveries > 0 {
		m.Header.Set(messages.HeaderDLQDeliveries, strconv.FormatUint(d.Deliveries, 10))
	}
	id := "dlq:" + d.Stream + ":" + strconv.FormatUint(d.Sequence, 10)
	if d.Sequence == 0 {
		id = ""
	}
	var opts []jetstream.PublishOpt
	if id != "" {
		opts = append(opts, jetstream.WithMsgID(id))
	}
	if _, err := s.js.PublishMsg(ctx, m, opts...); err != nil {
		return fmt.Errorf("dead-letter %s #%d: %w", d.Stream, d.Sequence, err)
	}
	return nil
}

// WorkMsg reads the message at seq of a work stream. It returns
// ErrNotFound if the message is gone.
func (s *Store) WorkMsg(ctx context.Context, stream string, seq uint64) (*jetstream.RawStreamMsg, error) {
	st, err := s.js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	m, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get %s #%d: %w", stream, seq, err)
	}
	return m, nil
}

// DeleteWorkMsg removes the message at seq of a work stream; a message
// that is gone already is no error.
func (s *Store) DeleteWorkMsg(ctx context.Context, stream string, seq uint64) error {
	st, err := s.js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	if err := st.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("delete %s #%d: %w", stream, seq, err)
	}
	return nil
}
