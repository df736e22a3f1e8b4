package jetstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
)

func TestRewindExecutionID(t *testing.T) {
	for exec, want := range map[string]string{
		"abc":        "abc_r1",
		"abc_r1":     "abc_r2",
		"abc_r9":     "abc_r10",
		"abc_r1-3":   "abc_r1-3_r1", // a sub-orchestration of a rewound run
		"abc_r0":     "abc_r0_r1",
		"abc_r01":    "abc_r01_r1",
		"p-2_r3":     "p-2_r4",
		"abc_rx_r12": "abc_rx_r13",
	} {
		if got := jetstore.RewindExecutionID(exec); got != want {
			t.Errorf("RewindExecutionID(%q) = %q, want %q", exec, got, want)
		}
	}
}

// TestPutStatusOrdersRewinds: a rewound run keeps CreatedAt, yet its record
// is newer than the failed run's, and a late write of the failed run (a
// redelivery repairing its status) cannot bring it back.
func TestPutStatusOrdersRewinds(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	run0 := messages.NewID()
	run1 := jetstore.RewindExecutionID(run0)
	run2 := jetstore.RewindExecutionID(run1)
	if _, err := s.PutStatus(ctx, status(run0, t0, 5, messages.StatusFailed), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutStatus(ctx, status(run1, t0, 3, messages.StatusRunning), 0); err != nil {
		t.Fatalf("rewound run: %v", err)
	}
	if _, err := s.PutStatus(ctx, status(run0, t0, 5, messages.StatusFailed), 0); !errors.Is(err, jetstore.ErrStale) {
		t.Errorf("late write of the failed run: %v, want ErrStale", err)
	}
	if _, err := s.PutStatus(ctx, status(run2, t0, 1, messages.StatusRunning), 0); err != nil {
		t.Fatalf("second rewind: %v", err)
	}
	if _, err := s.PutStatus(ctx, status(run1, t0, 9, messages.StatusFailed), 0); !errors.Is(err, jetstore.ErrStale) {
		t.Errorf("late write of the first rewind: %v, want ErrStale", err)
	}
	// A new run (a later start of the same ID) is still ordered by time.
	if _, err := s.PutStatus(ctx, status("other", t0.Add(time.Hour), 1, messages.StatusRunning), 0); err != nil {
		t.Fatalf("later run: %v", err)
	}
	if got, _, _ := s.GetStatus(ctx, "st"); got.ExecutionID != "other" {
		t.Errorf("stored run %s, want other", got.ExecutionID)
	}
}
