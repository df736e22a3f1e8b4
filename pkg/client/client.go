// Package client drives jetflow over NATS: it sends commands to the
// dispatchers and reads status records straight from the status bucket.
// The HTTP API is built on it.
package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/telemetry"
)

// Errors returned by commands, matching the dispatcher's error codes. The
// *Error returned wraps one of them.
var (
	ErrBadRequest = errors.New("bad request")
	ErrNotFound   = errors.New("instance not found")
	ErrConflict   = errors.New("conflict")
	ErrGone       = errors.New("instance has finished")
	ErrInternal   = errors.New("internal error")
	ErrTooLarge   = errors.New("payload too large")
	// ErrUnavailable is returned when no dispatcher answered.
	ErrUnavailable = errors.New("no dispatcher available")
)

// Error is a command refused by the dispatcher.
type Error struct {
	Code    messages.ErrorCode
	Message string
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the sentinel for the error's code.
func (e *Error) Unwrap() error {
	switch e.Code {
	case messages.CodeBadRequest:
		return ErrBadRequest
	case messages.CodeNotFound:
		return ErrNotFound
	case messages.CodeConflict:
		return ErrConflict
	case messages.CodeGone:
		return ErrGone
	case messages.CodeTooLarge:
		return ErrTooLarge
	}
	return ErrInternal
}

// Client sends commands and reads status.
type Client struct {
	nc      *nats.Conn
	store   *jetstore.Store
	metrics *telemetry.Metrics
	tracer  trace.Tracer
	cache   *statusCache // nil: every read goes to the bucket
}

// Option configures a Client.
type Option func(*Client)

// WithMetrics counts status reads and open watches in m.
func WithMetrics(m *telemetry.Metrics) Option { return func(c *Client) { c.metrics = m } }

// Defaults for WithStatusCache, as the api and the devserver use them.
const (
	DefaultStatusCacheSize   = 100_000
	DefaultStatusCacheMaxAge = 2 * time.Second
)

// WithStatusCache makes Status and StatusRevision serve the records read
// recently, up to size of them, from memory. One watch of the status
// bucket, running until the context given to New ends, keeps them fresh:
// a record served may trail the bucket by the watch's delay (well under a
// millisecond on a healthy connection), and never by more than maxAge,
// after which it is read again. Watches (Watch, WaitForChange,
// WaitForCompletion) are not affected.
func WithStatusCache(size int, maxAge time.Duration) Option {
	return func(c *Client) {
		if size > 0 && maxAge > 0 {
			c.cache = newStatusCache(size, maxAge)
		}
	}
}

// WithTracerProvider makes the client's "command <kind>" spans with tp
// instead of the global provider. Their trace context rides in the
// command's NATS headers to the dispatcher, and from there on the work it
// publishes.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *Client) { c.tracer = telemetry.Tracer(tp) }
}

// New returns a Client. The streams and buckets must be provisioned.
func New(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, opts ...Option) (*Client, error) {
	store, err := jetstore.Open(ctx, js)
	if err != nil {
		return nil, err
	}
	c := &Client{nc: nc, store: store, tracer: telemetry.Tracer(nil)}
	for _, o := range opts {
		o(c)
	}
	if c.cache != nil {
		if err := c.cache.run(ctx, store.StatusKV()); err != nil {
			return nil, fmt.Errorf("status cache: %w", err)
		}
	}
	return c, nil
}

// Store returns the store the client reads from.
func (c *Client) Store() *jetstore.Store { return c.store }

const defaultTimeout = 10 * time.Second

func (c *Client) send(ctx context.Context, cmd *messages.Command) (id string, err error) {
	ctx, span := c.tracer.Start(ctx, "command", trace.WithSpanKind(trace.SpanKindClient))
	defer func() {
		if c.cache != nil {
			// Whatever the command did, this client reads it next.
			c.cache.forget(messages.Token(cmd.InstanceID))
			if id != "" && id != cmd.InstanceID {
				c.cache.forget(messages.Token(id))
			}
		}
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		} else if span.IsRecording() && id != "" {
			span.SetAttributes(telemetry.AttrInstanceID.String(id))
		}
		span.End()
	}()
	if span.IsRecording() {
		span.SetName("command " + cmd.Kind.String())
		span.SetAttributes(telemetry.AttrCommand.String(cmd.Kind.String()))
		if cmd.Kind == messages.CmdStart {
			span.SetAttributes(telemetry.AttrOrchestrator.String(cmd.Name))
		}
	}
	cmd.V = messages.SchemaVersion
	b, err := messages.Encode(cmd)
	if err != nil {
		return "", err
	}
	if max := c.nc.MaxPayload(); int64(len(b)) > max {
		return "", &Error{Code: messages.CodeTooLarge, Message: fmt.Sprintf("%s command is %d bytes, over the NATS server's max_payload of %d bytes", cmd.Kind, len(b), max)}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}
	req := &nats.Msg{Subject: messages.CommandSubject(cmd.Kind), Data: b}
	if trace.SpanContextFromContext(ctx).IsValid() {
		req.Header = nats.Header{}
		telemetry.Inject(ctx, req.Header)
	}
	m, err := c.nc.RequestMsgWithContext(ctx, req)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return "", ErrUnavailable
		}
		return "", fmt.Errorf("%s: %w", cmd.Kind, err)
	}
	r, err := messages.DecodeReply(m.Data)
	if err != nil {
		return "", fmt.Errorf("%s reply: %w", cmd.Kind, err)
	}
	if r.Code != messages.CodeOK {
		return "", &Error{Code: r.Code, Message: r.Error}
	}
	return r.InstanceID, nil
}

// Start starts orchestrator name with JSON input. An empty instanceID has
// one generated. It returns the instance ID.
func (c *Client) Start(ctx context.Context, name, instanceID string, input []byte) (string, error) {
	return c.send(ctx, &messages.Command{Kind: messages.CmdStart, Name: name, InstanceID: instanceID, Input: input})
}

// RaiseEvent raises event name with JSON data on an instance.
func (c *Client) RaiseEvent(ctx context.Context, instanceID, name string, data []byte) error {
	_, err := c.send(ctx, &messages.Command{Kind: messages.CmdRaiseEvent, InstanceID: instanceID, Name: name, Input: data})
	return err
}

// Terminate ends a running instance.
func (c *Client) Terminate(ctx context.Context, instanceID, reason string) error {
	_, err := c.send(ctx, &messages.Command{Kind: messages.CmdTerminate, InstanceID: instanceID, Reason: reason})
	return err
}

// Suspend pauses an instance; events raised meanwhile are kept.
func (c *Client) Suspend(ctx context.Context, instanceID, reason string) error {
	_, err := c.send(ctx, &messages.Command{Kind: messages.CmdSuspend, InstanceID: instanceID, Reason: reason})
	return err
}

// Resume continues a suspended instance.
func (c *Client) Resume(ctx context.Context, instanceID, reason string) error {
	_, err := c.send(ctx, &messages.Command{Kind: messages.CmdResume, InstanceID: instanceID, Reason: reason})
	return err
}

// Rewind re-runs the failed work of a Failed instance. An instance that is
// not Failed gets ErrBadRequest.
func (c *Client) Rewind(ctx context.Context, instanceID, reason string) error {
	_, err := c.send(ctx, &messages.Command{Kind: messages.CmdRewind, InstanceID: instanceID, Reason: reason})
	return err
}

// Restart starts an instance's orchestration again with its original
// input, under a new instance ID if newID is set, and returns the ID. The
// same ID can be restarted only once its instance has finished (else ErrConflict).
func (c *Client) Restart(ctx context.Context, instanceID string, newID bool) (string, error) {
	return c.send(ctx, &messages.Command{Kind: messages.CmdRestart, InstanceID: instanceID, NewID: newID})
}

// Purge deletes the history and status of a finished instance.
func (c *Client) Purge(ctx context.Context, instanceID string) error {
	_, err := c.send(ctx, &messages.Command{Kind: messages.CmdPurge, InstanceID: instanceID})
	return err
}

// Status returns an instance's status record. If there is none, ErrNotFound is returned.
func (c *Client) Status(ctx context.Context, instanceID string) (*messages.Status, error) {
	u, err := c.StatusRevision(ctx, instanceID)
	return u.Status, err
}

// WaitForCompletion watches an instance's status record until it is
// terminal or ctx ends. It does not poll.
func (c *Client) WaitForCompletion(ctx context.Context, instanceID string) (*messages.Status, error) {
	w, err := c.store.StatusKV().Watch(ctx, messages.Token(instanceID))
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	defer c.metrics.WatchOpened()()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e := <-w.Updates():
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			st, err := messages.DecodeStatus(e.Value())
			if err != nil {
				return nil, err
			}
			if st.RuntimeStatus.Terminal() {
				return st, nil
			}
		}
	}
}

// History returns the events of one run of an instance, in order.
func (c *Client) History(ctx context.Context, instanceID, executionID string) ([]messages.Event, error) {
	c.metrics.StatusRead(telemetry.ReadHistory)
	events, _, err := c.store.LoadHistory(ctx, instanceID, executionID)
	return events, err
}

// Update is one version of an instance's status record.
type Update struct {
	Status *messages.Status
	// Revision is the record's revision in the status bucket; it changes
	// with every write.
	Revision uint64
}

// StatusRevision returns an instance's status record and its revision. If
// there is none, ErrNotFound is returned.
func (c *Client) StatusRevision(ctx context.Context, instanceID string) (Update, error) {
	c.metrics.StatusRead(telemetry.ReadGet)
	var since uint64
	if c.cache != nil {
		var (
			u  Update
			ok bool
		)
		if u, ok, since = c.cache.get(messages.Token(instanceID)); ok {
			return u, nil
		}
	}
	st, rev, err := c.store.GetStatus(ctx, instanceID)
	if errors.Is(err, jetstore.ErrNotFound) {
		return Update{}, ErrNotFound
	}
	if err != nil {
		return Update{}, err
	}
	u := Update{Status: st, Revision: rev}
	if c.cache != nil {
		c.cache.put(messages.Token(instanceID), since, u)
	}
	return u, nil
}

// Watch sends the instance's status record each time it changes, starting
// with the current one, until ctx ends or the record reaches a terminal
// status (sent last). Records at or before afterRevision are skipped. The
// channel closes when the watch ends; a purge of the instance also ends it.
// It is backed by a watch on the status bucket, not by polling.
func (c *Client) Watch(ctx context.Context, instanceID string, afterRevision uint64) (<-chan Update, error) {
	w, err := c.store.StatusKV().Watch(ctx, messages.Token(instanceID))
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", instanceID, err)
	}
	out := make(chan Update, 16)
	closed := c.metrics.WatchOpened()
	go func() {
		defer close(out)
		defer closed()
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					continue // the current values have been sent
				}
				if e.Operation() != jetstream.KeyValuePut {
					return // purged
				}
				if e.Revision() <= afterRevision {
					continue
				}
				st, err := messages.DecodeStatus(e.Value())
				if err != nil {
					continue
				}
				select {
				case out <- Update{Status: st, Revision: e.Revision()}:
				case <-ctx.Done():
					return
				}
				if st.RuntimeStatus.Terminal() {
					return
				}
			}
		}
	}()
	return out, nil
}

// WaitForChange returns the instance's status record as soon as its
// revision differs from revision, or the current record when ctx ends
// first. If there is no record, ErrNotFound is returned.
func (c *Client) WaitForChange(ctx context.Context, instanceID string, revision uint64) (Update, error) {
	cur, err := c.StatusRevision(ctx, instanceID)
	if err != nil || cur.Revision != revision {
		return cur, err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	updates, err := c.Watch(wctx, instanceID, revision)
	if err != nil {
		return Update{}, err
	}
	select {
	case u, ok := <-updates:
		if ok {
			return u, nil
		}
	case <-ctx.Done():
	}
	return c.StatusRevision(context.WithoutCancel(ctx), instanceID)
}

// ListFilter selects instances for List and PurgeInstances.
type ListFilter = jetstore.ListFilter

// ErrBadToken is returned by List for a continuation token it did not make.
var ErrBadToken = jetstore.ErrBadToken

// List returns a page of up to pageSize status records that match f, and
// the token of the next page ("" when there is none). Pass "" for the
// first page.
func (c *Client) List(ctx context.Context, f ListFilter, pageSize int, token string) ([]*messages.Status, string, error) {
	c.metrics.StatusRead(telemetry.ReadList)
	return c.store.List(ctx, f, pageSize, token)
}

// PurgeInstances deletes every finished instance f selects and returns how
// many were deleted. It works on the buckets directly; there is no NATS
// command for it.
func (c *Client) PurgeInstances(ctx context.Context, f ListFilter) (int, error) {
	n, err := c.store.PurgeInstances(ctx, f)
	if c.cache != nil {
		c.cache.forgetAll()
	}
	return n, err
}
