package worker

import (
	"context"

	"github.com/jetflow/jetflow/pkg/messages"
)

// Stage exposes the commit stages to the external tests.
type Stage = hookStage

// Commit stages, in order.
const (
	StageBeforeAppend = stageBeforeAppend
	StageAppended     = stageAppended
	StagePublished    = stagePublished
	StageCommitted    = stageCommitted
)

// SetHook installs a commit hook; call it before Run.
func SetHook(w *Worker, f func(stage Stage, instanceID, executionID string, episode uint64) error) {
	w.hook = f
}

// HistoryLoads returns how many times w has read a history.
func HistoryLoads(w *Worker) int64 { return w.historyLoads.Load() }

// Conflicts returns how many episodes w found already committed by another worker.
func Conflicts(w *Worker) int64 { return w.conflicts.Load() }

// Process runs one work item as the orchestrator consumer would, without a message.
func Process(ctx context.Context, w *Worker, work *messages.OrchestratorWork) error {
	return w.process(ctx, work)
}

// CacheLen returns how many instances w keeps hot.
func CacheLen(w *Worker) int { return w.cache.len() }

// ErrNotYet is what processing returns for work to try again later.
var ErrNotYet = errNotYet

// SetHistoryLag makes w see every history it reads through f, as a lagging
// replica would serve it; nil undoes it.
func SetHistoryLag(w *Worker, f func(instanceID string, history []messages.Event) []messages.Event) {
	w.lag = f
}

// ProcessDelivered is Process for a message delivered n times.
func ProcessDelivered(ctx context.Context, w *Worker, work *messages.OrchestratorWork, n uint64) error {
	return w.processEpisode(ctx, work, &episodeInfo{delivered: n})
}
