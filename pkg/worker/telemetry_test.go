package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/replay"
	"github.com/jetflow/jetflow/pkg/telemetry"
	"github.com/jetflow/jetflow/pkg/worker"
)

// TestOrchestratorLogsOnceAndNamed runs an orchestrator that logs around
// each activity on a worker that keeps nothing in memory, so that every
// episode replays the code from history: each line is logged once (none
// during replay), and every line about the instance names it and its
// orchestrator, and the activity where there is one.
func TestOrchestratorLogsOnceAndNamed(t *testing.T) {
	e := newEnv(t)
	core, logs := observer.New(zap.DebugLevel)
	reg := worker.NewRegistry()
	reg.AddOrchestrator("Chatty", func(ctx *replay.Context) (any, error) {
		for i := 0; i < 3; i++ {
			ctx.Logger().Info("calling", zap.Int("i", i))
			if err := ctx.CallActivity("Echo", i).Await(nil); err != nil {
				return nil, err
			}
		}
		ctx.Logger().Info("done")
		return nil, nil
	})
	reg.AddActivity("Echo", func(_ context.Context, in worker.Input) (any, error) {
		var i int
		return i, in.Get(&i)
	})
	metrics := telemetry.NewMetrics(prometheus.NewRegistry())
	e.run(e.newWorker(reg, worker.Options{CacheSize: -1, Logger: zap.New(core), Metrics: metrics}), "Chatty")
	e.start("Chatty", "chatty-1", nil)
	if st := e.wait("chatty-1", 30*time.Second); st.RuntimeStatus != messages.StatusCompleted {
		t.Fatalf("status %s", st.RuntimeStatus)
	}
	var calling, done int
	for _, l := range logs.All() {
		fields := l.ContextMap()
		switch l.Message {
		case "calling":
			calling++
		case "done":
			done++
		default:
			continue
		}
		if fields["instanceId"] != "chatty-1" || fields["orchestrator"] != "Chatty" {
			t.Errorf("%q lacks the instance or orchestrator: %v", l.Message, fields)
		}
	}
	if calling != 3 || done != 1 {
		t.Errorf("logged calling %d times and done %d times, want 3 and 1 (no lines during replay)", calling, done)
	}
	// Whatever the worker itself logs about the instance names it too.
	for _, l := range logs.FilterLevelExact(zapcore.WarnLevel).All() {
		if f := l.ContextMap(); f["instanceId"] == nil {
			t.Errorf("warning %q does not name the instance: %v", l.Message, f)
		}
	}
}
