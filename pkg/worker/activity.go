package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/telemetry"
)

// unregisteredDeliveries is how often an activity task no worker here
// hosts is handed back before it fails: another worker may host it.
const unregisteredDeliveries = 5

func (w *Worker) handleActivity(ctx context.Context, msg jetstream.Msg) {
	t, err := messages.DecodeActivityTask(msg.Data())
	if err != nil {
		w.reject(ctx, msg, "activity", err)
		return
	}
	w.countRedelivery(msg, messages.ActivityStream)
	hdr := msg.Headers()
	orch := hdr.Get(telemetry.HeaderOrchestrator)
	log := w.log.WithLazy(zap.String("instanceId", t.InstanceID), zap.String("activity", t.Name),
		zap.Int32("taskId", t.TaskID), zap.Int("attempt", t.Attempt))
	if orch != "" {
		log = log.WithLazy(zap.String("orchestrator", orch))
	}
	ctx, span := w.tracer.Start(telemetry.Extract(ctx, hdr), "activity", trace.WithSpanKind(trace.SpanKindConsumer))
	defer span.End()
	if span.IsRecording() {
		span.SetName("activity " + t.Name)
		span.SetAttributes(telemetry.AttrInstanceID.String(t.InstanceID), telemetry.AttrExecutionID.String(t.ExecutionID),
			telemetry.AttrActivity.String(t.Name), telemetry.AttrTaskID.Int(int(t.TaskID)), telemetry.AttrAttempt.Int(t.Attempt))
		if orch != "" {
			span.SetAttributes(telemetry.AttrOrchestrator.String(orch))
		}
	}
	fn, ok := w.reg.activities[t.Name]
	if !ok {
		// Another worker may host it: hand it back quickly while the
		// registry says some worker does, and for a few deliveries in
		// case its worker is still starting.
		if hosted, err := w.store.Registered(ctx, jetstore.KindActivity, t.Name); err == nil && hosted {
			_ = msg.NakWithDelay(100 * time.Millisecond)
			return
		}
		if md, err := msg.Metadata(); err == nil && md.NumDelivered < unregisteredDeliveries {
			_ = msg.NakWithDelay(time.Second)
			return
		}
		f := &messages.Failure{Type: "ActivityNotFound", Message: fmt.Sprintf("activity %q is not registered on any worker", t.Name)}
		span.SetStatus(codes.Error, f.Message)
		w.settle(msg, w.finishActivity(ctx, t, nil, f, log), log)
		return
	}
	began := time.Now()
	out, failure := w.runActivity(ctx, msg, fn, t)
	w.metrics.ActivityRan(t.Name, time.Since(began))
	if failure != nil {
		span.SetStatus(codes.Error, failure.Type+": "+failure.Message)
	}
	if failure != nil && t.Retry != nil && t.Attempt < t.Retry.MaxAttempts {
		next := *t
		next.Attempt++
		due := w.opts.Now().UTC().Add(t.Retry.Delay(next.Attempt))
		m, err := delayedMsg(t.InstanceID, due, messages.ActivitySubject(t.InstanceID),
			fmt.Sprintf("%s:%d", seqID("a", t.InstanceID, t.ExecutionID, t.TaskID), next.Attempt), &next)
		if err == nil {
			m.orchestrator = orch
			err = publishAll(ctx, w.js, []outMsg{*m})
		}
		log.Info("activity failed, will retry", zap.Time("retryAt", due), zap.String("error", failure.Message))
		w.settle(msg, err, log)
		return
	}
	w.settle(msg, w.finishActivity(ctx, t, out, failure, log), log)
}

func (w *Worker) settle(msg jetstream.Msg, err error, log *zap.Logger) {
	if err != nil {
		log.Error("activity result not sent", zap.Error(err))
		_ = msg.NakWithDelay(time.Second)
		return
	}
	_ = msg.Ack()
}

// runActivity runs one attempt, turning an error or a panic into a
// Failure, and tells JetStream the task is in progress while it runs.
func (w *Worker) runActivity(ctx context.Context, msg jetstream.Msg, fn Activity, t *messages.ActivityTask) (out []byte, failure *messages.Failure) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_ = msg.InProgress()
			}
		}
	}()
	defer func() {
		if r := recover(); r != nil {
			out, failure = nil, &messages.Failure{Type: "Panic", Message: fmt.Sprintf("activity %q panicked: %v", t.Name, r)}
		}
	}()
	v, err := fn(ctx, Input{raw: t.Input})
	if err != nil {
		return nil, &messages.Failure{Type: "ActivityError", Message: err.Error(), Retryable: true}
	}
	b, err := marshalOutput(v)
	if err != nil {
		return nil, &messages.Failure{Type: "OutputError", Message: fmt.Sprintf("activity %q output: %v", t.Name, err)}
	}
	return b, nil
}

// finishActivity sends the activity's result to its orchestration.
func (w *Worker) finishActivity(ctx context.Context, t *messages.ActivityTask, out []byte, failure *messages.Failure, log *zap.Logger) error {
	out, failure = w.limitResult(t, out, failure, log)
	ev := messages.Event{Type: messages.EventTaskCompleted, TaskID: t.TaskID, Result: out}
	if failure != nil {
		ev = messages.Event{Type: messages.EventTaskFailed, TaskID: t.TaskID, Failure: failure}
	}
	res := messages.OrchestratorWork{V: messages.SchemaVersion, InstanceID: t.InstanceID, ExecutionID: t.ExecutionID, Events: []messages.Event{ev}}
	m, err := encodeMsg(messages.OrchestratorSubject(t.InstanceID), seqID("r", t.InstanceID, t.ExecutionID, t.TaskID), &res)
	if err != nil {
		return err
	}
	return publishAll(ctx, w.js, []outMsg{*m})
}
