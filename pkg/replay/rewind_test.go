package replay

import (
	"testing"
	"time"

	"github.com/jetflow/jetflow/pkg/messages"
)

// TestExecutionRewound: ExecutionRewound makes an episode of its own that
// records what the code owes after a history cut before a failure, and a
// run applies it once, whether it comes again as work or from history.
func TestExecutionRewound(t *testing.T) {
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	// sequence3's history cut before B failed: A done, B scheduled.
	cut := []messages.Event{
		{Type: messages.EventOrchestratorStarted, Timestamp: t0},
		{Type: messages.EventExecutionStarted, Timestamp: t0, InstanceID: "i", ExecutionID: "x_r1", Name: "S"},
		{Type: messages.EventTaskScheduled, Timestamp: t0, TaskID: 0, Name: "A"},
		{Type: messages.EventOrchestratorCompleted, Timestamp: t0},
		{Type: messages.EventOrchestratorStarted, Timestamp: t0},
		{Type: messages.EventTaskCompleted, Timestamp: t0, TaskID: 0, Result: []byte(`"a"`)},
		{Type: messages.EventTaskScheduled, Timestamp: t0, TaskID: 1, Name: "B"},
		{Type: messages.EventOrchestratorCompleted, Timestamp: t0},
	}
	rewound := messages.Event{Type: messages.EventExecutionRewound, Reason: "again"}
	in := New(sequence3, Options{})
	defer in.Close()
	if err := in.Replay(cut); err != nil {
		t.Fatal(err)
	}
	ep, err := in.Step(t0.Add(time.Minute), []messages.Event{rewound})
	if err != nil {
		t.Fatal(err)
	}
	if len(ep.Events) != 3 || ep.Events[1].Type != messages.EventExecutionRewound || len(ep.Actions) != 0 {
		t.Fatalf("rewind episode: %+v", ep)
	}
	if out := in.Outstanding(); len(out) != 1 || out[0].TaskID != 1 || out[0].Name != "B" {
		t.Errorf("outstanding after the rewind episode: %+v", out)
	}
	if ep, err := in.Step(t0.Add(2*time.Minute), []messages.Event{rewound}); err != nil || len(ep.Events) != 0 {
		t.Errorf("second ExecutionRewound: %+v, %v; want it dropped", ep, err)
	}
	// Rebuilt from history, the run has applied it already.
	again := New(sequence3, Options{})
	defer again.Close()
	if err := again.Replay(append(cut, ep.Events...)); err != nil {
		t.Fatal(err)
	}
	if ep, err := again.Step(t0.Add(3*time.Minute), []messages.Event{rewound}); err != nil || len(ep.Events) != 0 {
		t.Errorf("ExecutionRewound on a rebuilt run: %+v, %v; want it dropped", ep, err)
	}
	if again.Episodes() != 3 || again.RuntimeStatus() != messages.StatusRunning {
		t.Errorf("rebuilt: %d episodes, %s", again.Episodes(), again.RuntimeStatus())
	}
}
