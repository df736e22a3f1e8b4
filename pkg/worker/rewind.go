package worker

import (
	"context"
	"errors"

	"go.uber.org/zap"

	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
)

// Rewind (Durable Functions "rewind"): a Failed run is replaced by a new
// run that re-runs what failed and continues.
//
// The dispatcher publishes, for the instance's current run, a work item
// holding one ExecutionRewound event. The worker then:
//
//  1. checks that the run's history ends with a failed ExecutionCompleted
//     and that the status record names that run (or its rewind: a
//     redelivery); otherwise the work is dropped;
//  2. writes the history of the new run, jetstore.RewindExecutionID(run):
//     the failed run's history cut before its first TaskFailed or
//     SubOrchestrationInstanceFailed (before the failed ExecutionCompleted
//     if no task failed), ExecutionStarted naming the new run. The episodes
//     keep their boundaries; the one the cut falls in is closed there. The
//     writes are Creates of deterministic content, so a redelivery that
//     finds them done goes on;
//  3. runs one episode of the new run, with the code, on ExecutionRewound
//     (and any event raised to the failed run after the cut, so that none
//     is lost). That episode sends every task, timer and sub-orchestration
//     the cut history leaves open, under the new run's message IDs, and
//     writes the status record: Running (or whatever the code reaches), same
//     CreatedAt, the new run.

// rewindEvent returns the ExecutionRewound event of a work item, or nil.
func rewindEvent(evs []messages.Event) *messages.Event {
	for i := range evs {
		if evs[i].Type == messages.EventExecutionRewound {
			return &evs[i]
		}
	}
	return nil
}

// prepareRewind does steps 1 and 2 and returns the work item of step 3, or
// nil if the rewind does not apply.
func (w *Worker) prepareRewind(ctx context.Context, work *messages.OrchestratorWork, rw *messages.Event) (*messages.OrchestratorWork, error) {
	id := work.InstanceID
	log := w.log.With(zap.String("instanceId", id))
	st, _, err := w.store.GetStatus(ctx, id)
	if errors.Is(err, jetstore.ErrNotFound) {
		log.Info("rewind dropped: no such instance")
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	log = log.With(zap.String("orchestrator", st.Name))
	old := work.ExecutionID
	if old == "" {
		old = st.ExecutionID
	}
	exec := jetstore.RewindExecutionID(old)
	if st.ExecutionID != old && st.ExecutionID != exec {
		log.Info("rewind dropped: the run is not the instance's current run", zap.String("executionId", old), zap.String("current", st.ExecutionID))
		return nil, nil
	}
	w.historyLoads.Add(1)
	history, _, err := w.store.LoadHistory(ctx, id, old)
	if err != nil {
		return nil, err
	}
	episodes, carried, ok := rewoundHistory(history, exec)
	if !ok {
		log.Info("rewind dropped: the run has not failed", zap.String("executionId", old), zap.Stringer("status", st.RuntimeStatus))
		return nil, nil
	}
	for i, ep := range episodes {
		err := w.store.AppendEpisode(ctx, id, exec, uint64(i+1), ep)
		if err != nil && !errors.Is(err, jetstore.ErrConflict) {
			return nil, err
		}
	}
	ev := *rw
	if ev.Timestamp.IsZero() {
		ev.Timestamp = w.opts.Now().UTC()
	}
	log.Info("rewinding", zap.String("from", old), zap.String("executionId", exec), zap.String("reason", rw.Reason))
	return &messages.OrchestratorWork{V: messages.SchemaVersion, InstanceID: id, ExecutionID: exec,
		Events: append([]messages.Event{ev}, carried...)}, nil
}

// rewoundHistory cuts the history of a failed run before its first failure
// and returns it as the episodes of run exec, and the events raised after
// the cut. ok is false if the history does not end with a failed
// ExecutionCompleted.
func rewoundHistory(history []messages.Event, exec string) (episodes [][]messages.Event, carried []messages.Event, ok bool) {
	end := -1
	for i := range history {
		switch history[i].Type {
		case messages.EventExecutionCompleted, messages.EventContinuedAsNew:
			end = i
		}
	}
	if end < 0 || history[end].Type != messages.EventExecutionCompleted || history[end].Status != messages.StatusFailed {
		return nil, nil, false
	}
	cut := end
	for i := 0; i < end; i++ {
		if t := history[i].Type; t == messages.EventTaskFailed || t == messages.EventSubOrchestrationFailed {
			cut = i
			break
		}
	}
	for i := cut; i < len(history); i++ {
		if history[i].Type == messages.EventRaised {
			carried = append(carried, history[i])
		}
	}
	var cur []messages.Event
	var opened messages.Event
	for i := 0; i < cut; i++ {
		e := history[i]
		switch e.Type {
		case messages.EventOrchestratorStarted:
			if len(cur) > 0 {
				episodes = append(episodes, cur)
			}
			cur, opened = nil, e
		case messages.EventExecutionStarted:
			e.ExecutionID = exec
		}
		cur = append(cur, e)
		if e.Type == messages.EventOrchestratorCompleted {
			episodes = append(episodes, cur)
			cur = nil
		}
	}
	if len(cur) > 0 {
		// The episode the cut falls in ends at the cut.
		episodes = append(episodes, append(cur, messages.Event{Type: messages.EventOrchestratorCompleted, Timestamp: opened.Timestamp}))
	}
	return episodes, carried, true
}
