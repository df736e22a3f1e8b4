// Package dispatcher is jetflow's control plane: it provisions the streams
// and buckets, answers client commands sent over NATS, and publishes
// delayed messages (durable timers and activity retries) when they are due.
// Any number of dispatchers may run; each command and each delayed message
// is handled by one of them.
package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/telemetry"
)

// maxCommands bounds the client commands one dispatcher handles at once.
const maxCommands = 256

// QueueGroup is the NATS queue group dispatchers share for commands.
const QueueGroup = "jetflow-dispatcher"

// Options configure a Dispatcher.
type Options struct {
	// Store configures provisioning.
	Store jetstore.Config
	// MaxDelay caps how long a delayed message is held before it is looked
	// at again; 0 means one minute.
	MaxDelay time.Duration
	// Logger receives rejected commands and messages; nil discards.
	Logger *zap.Logger
	// Now returns the time; nil means time.Now.
	Now func() time.Time
	// Metrics, if set, gets a collector of the backlog of jetflow's
	// consumers and streams (telemetry.Metrics.CollectPending) and counts
	// dead-lettered messages; nil records nothing.
	Metrics *telemetry.Metrics
	// TracerProvider makes the "command <kind>" spans, which continue the
	// trace context of the client's request and are carried on to the
	// work the command publishes; nil means the global provider.
	TracerProvider trace.TracerProvider
}

// Dispatcher handles commands and delayed messages.
type Dispatcher struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	store   *jetstore.Store
	opts    Options
	log     *zap.Logger
	metrics *telemetry.Metrics
	tracer  trace.Tracer
	// registered holds orchestrator names found in the registry, with
	// when: a start of a name seen within registeredFor skips the read.
	registered sync.Map // string → time.Time
}

// registeredFor is how long a name found in the registry is trusted.
// Registry entries do not expire, so this only bounds how long a removed
// entry would still be believed.
const registeredFor = 30 * time.Second

// New provisions the streams and buckets and returns a Dispatcher.
func New(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, opts Options) (*Dispatcher, error) {
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := jetstore.Provision(ctx, js, opts.Store); err != nil {
		return nil, err
	}
	store, err := jetstore.Open(ctx, js)
	if err != nil {
		return nil, err
	}
	opts.Metrics.CollectPending(js)
	return &Dispatcher{nc: nc, js: js, store: store, opts: opts, log: opts.Logger,
		metrics: opts.Metrics, tracer: telemetry.Tracer(opts.TracerProvider)}, nil
}

// Run serves commands and delayed messages until ctx ends, then finishes
// the work in flight.
func (d *Dispatcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	work := context.WithoutCancel(ctx)
	// Commands are independent of each other (a start claims its ID with
	// a compare-and-set), so up to maxCommands run at once.
	sem := make(chan struct{}, maxCommands)
	sub, err := d.nc.QueueSubscribe(messages.CommandSubjects, QueueGroup, func(m *nats.Msg) {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			d.handleCommand(work, m)
		}()
	})
	if err != nil {
		return fmt.Errorf("subscribe to commands: %w", err)
	}
	// stop ends a start-up that failed. If ctx ended meanwhile, that is a
	// shutdown, not an error.
	var stops []func()
	stop := func(err error) error {
		_ = sub.Unsubscribe()
		for _, f := range stops {
			f()
		}
		wg.Wait()
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if err := d.nc.Flush(); err != nil {
		return stop(fmt.Errorf("subscribe to commands: %w", err))
	}
	cons, err := d.js.Consumer(ctx, messages.DelayStream, jetstore.DelayConsumer)
	if err != nil {
		return stop(fmt.Errorf("bind delay consumer: %w", err))
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		wg.Add(1)
		defer wg.Done()
		d.handleDelayed(work, m)
	}, jetstream.PullMaxMessages(256))
	if err != nil {
		return stop(fmt.Errorf("consume delays: %w", err))
	}
	stops = append(stops, cc.Stop)
	dc, err := d.consume(ctx, messages.AdvisoryStream, jetstore.DeadLetterConsumer, func(m jetstream.Msg) {
		wg.Add(1)
		defer wg.Done()
		d.handleMaxDeliveries(work, m)
	})
	if err != nil {
		return stop(err)
	}
	<-ctx.Done()
	_ = sub.Drain()
	cc.Drain()
	dc.Drain()
	<-cc.Closed()
	<-dc.Closed()
	wg.Wait()
	return nil
}

func (d *Dispatcher) consume(ctx context.Context, stream, consumer string, h jetstream.MessageHandler) (jetstream.ConsumeContext, error) {
	cons, err := d.js.Consumer(ctx, stream, consumer)
	if err != nil {
		return nil, fmt.Errorf("bind consumer %s: %w", consumer, err)
	}
	cc, err := cons.Consume(h, jetstream.PullMaxMessages(64))
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", consumer, err)
	}
	return cc, nil
}

// handleDelayed publishes a delayed message if it is due, or hands it back
// to JetStream until it is. Publishing before the ack makes delivery
// at-least-once; the target's Nats-Msg-Id makes a repeat harmless.
func (d *Dispatcher) handleDelayed(ctx context.Context, m jetstream.Msg) {
	dm, err := messages.DecodeDelayed(m.Data())
	if err != nil {
		d.reject(ctx, m, "delayed", err)
		return
	}
	if wait := dm.DueAt.Sub(d.opts.Now()); wait > 0 {
		_ = m.NakWithDelay(min(wait, d.opts.MaxDelay))
		return
	}
	// The headers (the trace context of the episode or activity that
	// delayed it, the orchestrator's name) travel on with the message.
	hdr := m.Headers()
	out := &nats.Msg{Subject: dm.Subject, Data: dm.Payload, Header: telemetry.Carry(hdr)}
	if _, err := d.js.PublishMsg(ctx, out, jetstream.WithMsgID(dm.MsgID)); err != nil {
		fields := []zap.Field{zap.String("instanceId", subjectInstance(dm.Subject)), zap.String("target", dm.Subject), zap.String("msgId", dm.MsgID), zap.Error(err)}
		if o := hdr.Get(telemetry.HeaderOrchestrator); o != "" {
			fields = append(fields, zap.String("orchestrator", o))
		}
		d.log.Warn("publish due message", fields...)
		_ = m.NakWithDelay(time.Second)
		return
	}
	_ = m.Ack()
}

// commandError is a command failure with the code the client sees.
type commandError struct {
	code messages.ErrorCode
	msg  string
}

func (e *commandError) Error() string { return e.msg }

func fail(code messages.ErrorCode, format string, args ...any) error {
	return &commandError{code: code, msg: fmt.Sprintf(format, args...)}
}

func (d *Dispatcher) handleCommand(ctx context.Context, m *nats.Msg) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ctx, span := d.tracer.Start(telemetry.Extract(ctx, m.Header), "command", trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()
	reply := messages.Reply{V: messages.SchemaVersion}
	cmd, err := messages.DecodeCommand(m.Data)
	if err == nil && messages.CommandSubject(cmd.Kind) != m.Subject {
		err = fmt.Errorf("command %s sent on subject %s", cmd.Kind, m.Subject)
	}
	if err != nil {
		err = fail(messages.CodeBadRequest, "bad command: %v", err)
	} else {
		if span.IsRecording() {
			span.SetName("command " + cmd.Kind.String())
			span.SetAttributes(telemetry.AttrCommand.String(cmd.Kind.String()))
			if cmd.InstanceID != "" {
				span.SetAttributes(telemetry.AttrInstanceID.String(cmd.InstanceID))
			}
			if cmd.Kind == messages.CmdStart {
				span.SetAttributes(telemetry.AttrOrchestrator.String(cmd.Name))
			}
		}
		reply.InstanceID, err = d.execute(ctx, cmd)
	}
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		var ce *commandError
		if errors.As(err, &ce) {
			reply.Code, reply.Error = ce.code, ce.msg
		} else {
			d.log.Error("command failed", commandFields(m.Subject, cmd, reply.InstanceID, zap.Error(err))...)
			reply.Code, reply.Error = messages.CodeInternal, "internal error"
		}
		if reply.Code == messages.CodeBadRequest {
			d.log.Warn("rejected command", commandFields(m.Subject, cmd, reply.InstanceID, zap.String("error", reply.Error))...)
		}
	}
	if m.Reply == "" {
		return
	}
	b, err := messages.Encode(&reply)
	if err == nil {
		err = m.Respond(b)
	}
	if err != nil {
		d.log.Warn("reply to command", zap.Error(err))
	}
}

// commandFields are the log fields of a command: its subject, and what it
// names (instance, orchestrator, event) once decoded.
func commandFields(subject string, c *messages.Command, id string, more ...zap.Field) []zap.Field {
	f := []zap.Field{zap.String("subject", subject)}
	if c != nil {
		if id == "" {
			id = c.InstanceID
		}
		if id != "" {
			f = append(f, zap.String("instanceId", id))
		}
		switch {
		case c.Kind == messages.CmdStart && c.Name != "":
			f = append(f, zap.String("orchestrator", c.Name))
		case c.Kind == messages.CmdRaiseEvent && c.Name != "":
			f = append(f, zap.String("event", c.Name))
		}
	}
	return append(f, more...)
}

// subjectInstance returns the instance ID in the last token of a work or
// delay subject, or "" if it is not one.
func subjectInstance(subject string) string {
	i := strings.LastIndexByte(subject, '.')
	if i < 0 {
		return ""
	}
	id, err := messages.ParseToken(subject[i+1:])
	if err != nil {
		return ""
	}
	return id
}

func (d *Dispatcher) execute(ctx context.Context, c *messages.Command) (string, error) {
	if c.Kind == messages.CmdStart && c.InstanceID == "" {
		c.InstanceID = messages.NewID()
	}
	if err := messages.ValidateInstanceID(c.InstanceID); err != nil {
		return "", fail(messages.CodeBadRequest, "%v", err)
	}
	if len(c.Input) > 0 && !json.Valid(c.Input) {
		return "", fail(messages.CodeBadRequest, "input is not valid JSON")
	}
	if limit := d.maxPayload(); len(c.Input) > limit {
		return "", fail(messages.CodeTooLarge, "input is %d bytes, over the limit of %d bytes (half the NATS server's max_payload)", len(c.Input), limit)
	}
	switch c.Kind {
	case messages.CmdStart:
		return c.InstanceID, d.start(ctx, c)
	case messages.CmdPurge:
		return c.InstanceID, d.purge(ctx, c.InstanceID)
	case messages.CmdRestart:
		return d.restart(ctx, c)
	}
	st, rev, err := d.store.GetStatus(ctx, c.InstanceID)
	if errors.Is(err, jetstore.ErrNotFound) {
		return "", fail(messages.CodeNotFound, "instance %q not found", c.InstanceID)
	}
	if err != nil {
		return "", err
	}
	if c.Kind == messages.CmdRewind {
		if st.RuntimeStatus != messages.StatusFailed {
			return "", fail(messages.CodeBadRequest, "instance %q is %s; only a Failed instance can be rewound", c.InstanceID, st.RuntimeStatus)
		}
		ev := messages.Event{Type: messages.EventExecutionRewound, Reason: c.Reason, Timestamp: d.opts.Now().UTC()}
		w := messages.OrchestratorWork{V: messages.SchemaVersion, InstanceID: c.InstanceID, ExecutionID: st.ExecutionID, Events: []messages.Event{ev}}
		return c.InstanceID, d.publishWork(ctx, &w, "rewind:"+c.InstanceID+":"+st.ExecutionID)
	}
	if st.RuntimeStatus.Terminal() {
		return "", fail(messages.CodeGone, "instance %q has already finished (%s)", c.InstanceID, st.RuntimeStatus)
	}
	if st.RuntimeStatus == messages.StatusPending {
		// The work below waits for the start: make sure it was published.
		if err := d.publishStart(ctx, st, rev); err != nil {
			return "", err
		}
	}
	var ev messages.Event
	msgID := messages.NewID()
	switch c.Kind {
	case messages.CmdRaiseEvent:
		if err := messages.ValidateName(c.Name); err != nil {
			return "", fail(messages.CodeBadRequest, "event %v", err)
		}
		ev = messages.Event{Type: messages.EventRaised, Name: c.Name, Input: c.Input, EventID: msgID}
	case messages.CmdTerminate:
		ev = messages.Event{Type: messages.EventExecutionTerminated, Reason: c.Reason}
	case messages.CmdSuspend:
		ev = messages.Event{Type: messages.EventExecutionSuspended, Reason: c.Reason}
	case messages.CmdResume:
		ev = messages.Event{Type: messages.EventExecutionResumed, Reason: c.Reason}
	}
	ev.Timestamp = d.opts.Now().UTC()
	w := messages.OrchestratorWork{V: messages.SchemaVersion, InstanceID: c.InstanceID, ExecutionID: st.ExecutionID, Events: []messages.Event{ev}}
	return c.InstanceID, d.publishWork(ctx, &w, msgID)
}

// maxPayload is the largest input or event accepted: half of what the
// NATS server takes in one message, which leaves room in the status
// record for the output and the custom status.
func (d *Dispatcher) maxPayload() int {
	return int(d.nc.MaxPayload() / 2)
}

func (d *Dispatcher) publishWork(ctx context.Context, w *messages.OrchestratorWork, msgID string) error {
	b, err := messages.Encode(w)
	if err != nil {
		return err
	}
	m := &nats.Msg{Subject: messages.OrchestratorSubject(w.InstanceID), Data: b, Header: make(nats.Header, 3)}
	telemetry.Inject(ctx, m.Header) // the command's span: the work continues its trace
	if _, err := d.js.PublishMsg(ctx, m, jetstream.WithMsgID(msgID)); err != nil {
		return fmt.Errorf("publish work for %s: %w", w.InstanceID, err)
	}
	return nil
}

// start creates the Pending status record, then publishes ExecutionStarted.
// An ID in use by a run that has not finished is a conflict; the ID of a
// finished run is reused for a fresh run.
//
// The first try creates the record without reading it, as for a new ID
// (as every ID the dispatcher makes up is); then up to three tries read
// the record and decide.
func (d *Dispatcher) start(ctx context.Context, c *messages.Command) error {
	if err := messages.ValidateName(c.Name); err != nil {
		return fail(messages.CodeBadRequest, "orchestrator %v", err)
	}
	if err := d.checkRegistered(ctx, c.Name); err != nil {
		return err
	}
	input := c.Input
	if len(input) == 0 {
		input = []byte("null")
	}
	now := d.opts.Now().UTC()
	st := &messages.Status{InstanceID: c.InstanceID, Name: c.Name, ExecutionID: messages.NewID(),
		RuntimeStatus: messages.StatusPending, Input: input, CreatedAt: now, LastUpdatedAt: now}
	for attempt := 0; attempt < 4; attempt++ {
		var (
			cur *messages.Status
			rev uint64
			err error
		)
		if attempt == 0 {
			// Most starts are of new IDs: create the record without
			// reading it first. An ID in use (or a key left behind) is
			// a conflict here, and the next attempt reads and decides.
			nrev, err := d.store.CreateNewStatus(ctx, st)
			if err == nil {
				return d.publishStart(ctx, st, nrev)
			}
			if !errors.Is(err, jetstore.ErrConflict) {
				return err
			}
			continue
		}
		cur, rev, err = d.store.GetStatus(ctx, c.InstanceID)
		switch {
		case errors.Is(err, jetstore.ErrNotFound):
			rev = 0
		case err != nil:
			return err
		case cur.RuntimeStatus == messages.StatusPending:
			// A start is still on its way, or its dispatcher died after
			// writing the record and before publishing: publish it again,
			// so that the instance is never stuck. The message ID makes
			// this idempotent. A start of the same thing succeeds; of
			// anything else, the ID is taken.
			if err := d.publishStart(ctx, cur, rev); err != nil {
				return err
			}
			if cur.Name == c.Name && string(cur.Input) == string(input) {
				return nil
			}
			return fail(messages.CodeConflict, "instance %q already exists and is %s", c.InstanceID, cur.RuntimeStatus)
		case !cur.RuntimeStatus.Terminal():
			return fail(messages.CodeConflict, "instance %q already exists and is %s", c.InstanceID, cur.RuntimeStatus)
		}
		nrev, err := d.store.CreateStatus(ctx, st, rev)
		if errors.Is(err, jetstore.ErrConflict) {
			continue
		} else if err != nil {
			return err
		}
		return d.publishStart(ctx, st, nrev)
	}
	return fail(messages.CodeConflict, "instance %q is being started concurrently", c.InstanceID)
}

// checkRegistered fails unless some worker has registered orchestrator name.
func (d *Dispatcher) checkRegistered(ctx context.Context, name string) error {
	if at, ok := d.registered.Load(name); ok && d.opts.Now().Sub(at.(time.Time)) < registeredFor {
		return nil
	}
	ok, err := d.store.Registered(ctx, jetstore.KindOrchestrator, name)
	if err != nil {
		return err
	}
	if !ok {
		return fail(messages.CodeBadRequest, "orchestrator %q is not registered by any worker", name)
	}
	d.registered.Store(name, d.opts.Now())
	return nil
}

// publishStart publishes the start of the run of st, whose Pending record
// has revision rev.
func (d *Dispatcher) publishStart(ctx context.Context, st *messages.Status, rev uint64) error {
	h := d.store.Hint(st.InstanceID, rev)
	w := messages.OrchestratorWork{V: messages.SchemaVersion, InstanceID: st.InstanceID, ExecutionID: st.ExecutionID, StatusRev: rev, IndexRev: h.IndexRev,
		Events: []messages.Event{{Type: messages.EventExecutionStarted, Timestamp: st.CreatedAt, Name: st.Name,
			Input: st.Input, InstanceID: st.InstanceID, ExecutionID: st.ExecutionID}}}
	return d.publishWork(ctx, &w, "start:"+st.InstanceID+":"+st.ExecutionID)
}

// restart starts the orchestration of an instance again with its original
// input: under a new instance ID, or under the same one if it has finished.
func (d *Dispatcher) restart(ctx context.Context, c *messages.Command) (string, error) {
	st, _, err := d.store.GetStatus(ctx, c.InstanceID)
	if errors.Is(err, jetstore.ErrNotFound) {
		return "", fail(messages.CodeNotFound, "instance %q not found", c.InstanceID)
	}
	if err != nil {
		return "", err
	}
	start := &messages.Command{Kind: messages.CmdStart, InstanceID: c.InstanceID, Name: st.Name, Input: st.Input}
	if c.NewID {
		start.InstanceID = messages.NewID()
	}
	return start.InstanceID, d.start(ctx, start)
}

// purge deletes the history and status of a finished instance.
func (d *Dispatcher) purge(ctx context.Context, id string) error {
	err := d.store.PurgeInstance(ctx, id)
	switch {
	case errors.Is(err, jetstore.ErrNotFound):
		return fail(messages.CodeNotFound, "instance %q not found", id)
	case errors.Is(err, jetstore.ErrNotFinished):
		return fail(messages.CodeConflict, "instance %q has not finished; terminate it before purging", id)
	case errors.Is(err, jetstore.ErrConflict):
		return fail(messages.CodeConflict, "instance %q was started again while it was purged", id)
	}
	return err
}
