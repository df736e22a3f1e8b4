package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/telemetry"
)

// maxDeliveries is the server's advisory that a message was delivered
// MaxDeliver times without being acknowledged.
type maxDeliveries struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// handleMaxDeliveries gives up on a work message that failed on every
// delivery: it copies the message to the dead-letter stream, tells its
// instance (a run fails; an activity's orchestrator gets a TaskFailed it
// can catch), then deletes it from the work stream. Each step may be
// repeated: the advisory is acked last.
func (d *Dispatcher) handleMaxDeliveries(ctx context.Context, m jetstream.Msg) {
	var a maxDeliveries
	if err := json.Unmarshal(m.Data(), &a); err != nil || a.StreamSeq == 0 {
		if err == nil {
			err = errors.New("no stream sequence")
		}
		d.reject(ctx, m, "max-deliveries advisory", err)
		return
	}
	log := d.log.With(zap.String("stream", a.Stream), zap.Uint64("seq", a.StreamSeq), zap.Uint64("deliveries", a.Deliveries))
	if err := d.deadLetter(ctx, a, log); err != nil {
		log.Warn("dead-letter work", zap.Error(err))
		_ = m.NakWithDelay(time.Second)
		return
	}
	_ = m.Ack()
}

func (d *Dispatcher) deadLetter(ctx context.Context, a maxDeliveries, log *zap.Logger) error {
	msg, err := d.store.WorkMsg(ctx, a.Stream, a.StreamSeq)
	if errors.Is(err, jetstore.ErrNotFound) {
		return nil // handled already
	}
	if err != nil {
		return err
	}
	reason := fmt.Sprintf("delivered %d times without success (the consumer's MaxDeliver)", a.Deliveries)
	if err := d.store.DeadLetter(ctx, jetstore.DeadLetter{Stream: a.Stream, Subject: msg.Subject, Sequence: a.StreamSeq,
		Deliveries: a.Deliveries, Reason: reason, Data: msg.Data}); err != nil {
		return err
	}
	d.metrics.DeadLettered(a.Stream)
	where := fmt.Sprintf("it was moved to stream %s as message %s #%d", messages.DeadLetterStream, a.Stream, a.StreamSeq)
	var notice *messages.OrchestratorWork
	var msgID string
	switch a.Stream {
	case messages.OrchestratorStream:
		w, err := messages.DecodeOrchestratorWork(msg.Data)
		if err != nil || isPoisonNotice(w) {
			break // nothing to tell, or telling failed already
		}
		f := &messages.Failure{Type: messages.FailurePoison,
			Message: fmt.Sprintf("a work item of this orchestration failed on each of its %d deliveries; %s", a.Deliveries, where)}
		notice = &messages.OrchestratorWork{V: messages.SchemaVersion, InstanceID: w.InstanceID, ExecutionID: w.ExecutionID,
			Events: []messages.Event{{Type: messages.EventExecutionCompleted, Status: messages.StatusFailed, Failure: f, Timestamp: d.opts.Now().UTC()}}}
		msgID = fmt.Sprintf("poison:%s:%d", a.Stream, a.StreamSeq)
		log = log.With(zap.String("instanceId", w.InstanceID))
	case messages.ActivityStream:
		t, err := messages.DecodeActivityTask(msg.Data)
		if err != nil {
			break
		}
		f := &messages.Failure{Type: messages.FailurePoison,
			Message: fmt.Sprintf("activity %q failed on each of its %d deliveries (its worker crashed or gave up each time); %s", t.Name, a.Deliveries, where)}
		notice = &messages.OrchestratorWork{V: messages.SchemaVersion, InstanceID: t.InstanceID, ExecutionID: t.ExecutionID,
			Events: []messages.Event{{Type: messages.EventTaskFailed, TaskID: t.TaskID, Failure: f}}}
		msgID = messages.MsgID("r", t.InstanceID, t.ExecutionID, t.TaskID)
		log = log.With(zap.String("instanceId", t.InstanceID), zap.String("activity", t.Name))
	}
	if notice != nil {
		// The notice continues the trace of the work it stands for.
		ctx = telemetry.Extract(ctx, msg.Header)
		if err := d.publishWork(ctx, notice, msgID); err != nil {
			return err
		}
	}
	if a.Stream == messages.OrchestratorStream {
		if err := d.failParentOfStart(ctx, msg.Data, where); err != nil {
			return err
		}
	}
	log.Error("work dead-lettered", zap.String("reason", reason))
	return d.store.DeleteWorkMsg(ctx, a.Stream, a.StreamSeq)
}

// failParentOfStart tells the parent of a sub-orchestration whose start
// was given up on that the child failed: the child has no status record
// nor history, so its own poison notice changes nothing and it would never
// report back. The message ID is the one the child's own completion would
// carry, so that the parent hears of the child's end once.
func (d *Dispatcher) failParentOfStart(ctx context.Context, data []byte, where string) error {
	w, err := messages.DecodeOrchestratorWork(data)
	if err != nil {
		return nil
	}
	for _, e := range w.Events {
		p := e.Parent
		if e.Type != messages.EventExecutionStarted || p == nil {
			continue
		}
		f := &messages.Failure{Type: messages.FailurePoison,
			Message: fmt.Sprintf("sub-orchestration %q (instance %s) never started: its start failed on every delivery; %s", e.Name, w.InstanceID, where)}
		done := &messages.OrchestratorWork{V: messages.SchemaVersion, InstanceID: p.InstanceID, ExecutionID: p.ExecutionID,
			Events: []messages.Event{{Type: messages.EventSubOrchestrationFailed, TaskID: p.TaskID, Failure: f, Timestamp: d.opts.Now().UTC()}}}
		if err := d.publishWork(ctx, done, "c:"+w.InstanceID+":"+e.ExecutionID); err != nil {
			return err
		}
	}
	return nil
}

// isPoisonNotice reports whether w is itself the notice that fails a run:
// if that fails on every delivery too, nothing more is sent.
func isPoisonNotice(w *messages.OrchestratorWork) bool {
	return len(w.Events) == 1 && w.Events[0].Failure != nil && w.Events[0].Failure.Type == messages.FailurePoison &&
		w.Events[0].Type == messages.EventExecutionCompleted
}

// reject copies a message the dispatcher cannot read (a delayed message or
// an advisory) to the dead-letter stream with the reason, then terminates
// it so that it is not delivered again. If the copy fails, the message is
// handed back to try again.
func (d *Dispatcher) reject(ctx context.Context, m jetstream.Msg, what string, cause error) {
	d.log.Error("reject "+what+" message", zap.String("subject", m.Subject()), zap.String("instanceId", subjectInstance(m.Subject())), zap.Error(cause))
	dl := jetstore.DeadLetter{Subject: m.Subject(), Reason: fmt.Sprintf("malformed %s message: %v", what, cause), Data: m.Data()}
	if md, err := m.Metadata(); err == nil {
		dl.Stream, dl.Sequence, dl.Deliveries = md.Stream, md.Sequence.Stream, md.NumDelivered
	}
	if err := d.store.DeadLetter(ctx, dl); err != nil {
		d.log.Warn("dead-letter "+what+" message", zap.String("subject", m.Subject()), zap.Error(err))
		_ = m.NakWithDelay(time.Second)
		return
	}
	d.metrics.DeadLettered(dl.Stream)
	_ = m.Term()
}
