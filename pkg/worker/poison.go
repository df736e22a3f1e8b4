package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
)

// reject copies a message that cannot be decoded to the dead-letter
// stream, then terminates it so that it is not delivered again. If the
// copy fails, the message is handed back to try again.
func (w *Worker) reject(ctx context.Context, msg jetstream.Msg, what string, cause error) {
	w.log.Error("reject "+what+" message", zap.String("subject", msg.Subject()), zap.Error(cause))
	d := jetstore.DeadLetter{Subject: msg.Subject(), Reason: cause.Error(), Data: msg.Data()}
	if md, err := msg.Metadata(); err == nil {
		d.Stream, d.Sequence, d.Deliveries = md.Stream, md.Sequence.Stream, md.NumDelivered
	}
	if err := w.store.DeadLetter(ctx, d); err != nil {
		_ = msg.NakWithDelay(time.Second)
		return
	}
	w.metrics.DeadLettered(d.Stream)
	_ = msg.Term()
}

// poisonFailure returns the failure of a work item that asks, on behalf of
// the dispatcher, to fail a run whose work failed on every delivery.
func poisonFailure(evs []messages.Event) *messages.Failure {
	if len(evs) != 1 {
		return nil
	}
	e := evs[0]
	if e.Type != messages.EventExecutionCompleted || e.Status != messages.StatusFailed || e.Failure == nil || e.Failure.Type != messages.FailurePoison {
		return nil
	}
	return e.Failure
}

// failPoisoned ends a run as Failed without running or replaying its code,
// which may be what failed. A run that has ended already is left alone.
func (w *Worker) failPoisoned(ctx context.Context, work *messages.OrchestratorWork, f messages.Failure) error {
	if e := w.cache.take(work.InstanceID); e != nil {
		e.inst.Close()
	}
	id, exec := work.InstanceID, work.ExecutionID
	st, _, err := w.store.GetStatus(ctx, id)
	if errors.Is(err, jetstore.ErrNotFound) {
		return nil // purged
	}
	if err != nil {
		return err
	}
	if exec == "" {
		exec = st.ExecutionID
	}
	history, _, err := w.store.LoadHistory(ctx, id, exec)
	if err != nil {
		return err
	}
	var incoming []messages.Event
	if len(history) == 0 {
		if st.ExecutionID != exec || st.RuntimeStatus != messages.StatusPending {
			return nil // replaced by another run
		}
		// The run never started: its start was what failed. Record the
		// start from the Pending record, and the failure.
		incoming = []messages.Event{{Type: messages.EventExecutionStarted, Timestamp: st.CreatedAt, Name: st.Name,
			Input: st.Input, InstanceID: id, ExecutionID: exec}}
	}
	for _, e := range history {
		if e.Type == messages.EventExecutionCompleted || e.Type == messages.EventContinuedAsNew {
			return nil
		}
	}
	if err := w.failRun(ctx, id, exec, history, incoming, f); err != nil {
		return fmt.Errorf("fail poisoned run: %w", err)
	}
	return nil
}
