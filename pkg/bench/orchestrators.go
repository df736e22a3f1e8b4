package bench

import (
	"context"
	"errors"

	"github.com/jetflow/jetflow/pkg/replay"
	"github.com/jetflow/jetflow/pkg/samples"
	"github.com/jetflow/jetflow/pkg/worker"
)

// Names of the orchestrators and activity the bench adds to the samples.
const (
	FanOutName   = "Bench_FanOut"
	SequenceName = "Bench_Sequence"
	StatusName   = "Bench_Status"
	NoopName     = "Bench_Noop"
	// GoEvent is the event a waiting Bench_Sequence waits for.
	GoEvent = "Go"
)

// Register adds the samples and the bench's orchestrators and activity to r.
func Register(r *worker.Registry) error {
	return errors.Join(
		samples.Register(r),
		r.AddOrchestrator(FanOutName, FanOut),
		r.AddOrchestrator(SequenceName, Sequence),
		r.AddOrchestrator(StatusName, StatusUpdates),
		r.AddActivity(NoopName, Noop),
	)
}

// Noop does nothing and returns nothing.
func Noop(context.Context, worker.Input) (any, error) { return nil, nil }

// FanOut calls Bench_Noop as many times as its input says, all at once,
// and waits for every call. It returns the count.
func FanOut(ctx *replay.Context) (any, error) {
	var n int
	if err := ctx.GetInput(&n); err != nil {
		return nil, err
	}
	tasks := make([]replay.Task, n)
	for i := range tasks {
		tasks[i] = ctx.CallActivity(NoopName, i)
	}
	if err := ctx.WhenAll(tasks...); err != nil {
		return nil, err
	}
	return n, nil
}

// SequenceInput is Bench_Sequence's input.
type SequenceInput struct {
	// Steps is how many times Bench_Noop is called, one after the other.
	Steps int `json:"steps"`
	// Record makes the output the orchestration's time (ctx.CurrentTime,
	// Unix nanoseconds) at the start and after each step: Steps+1 values.
	Record bool `json:"record,omitempty"`
	// Wait makes the orchestration wait for the event GoEvent after the
	// steps, so that it stays Running with its whole history.
	Wait bool `json:"wait,omitempty"`
}

// Sequence calls Bench_Noop Steps times in sequence.
func Sequence(ctx *replay.Context) (any, error) {
	var in SequenceInput
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	var times []int64
	if in.Record {
		times = make([]int64, 0, in.Steps+1)
		times = append(times, ctx.CurrentTime().UnixNano())
	}
	for i := 0; i < in.Steps; i++ {
		if err := ctx.CallActivity(NoopName, i).Await(nil); err != nil {
			return nil, err
		}
		if in.Record {
			times = append(times, ctx.CurrentTime().UnixNano())
		}
	}
	if in.Wait {
		if err := ctx.WaitForExternalEvent(GoEvent).Await(nil); err != nil {
			return nil, err
		}
	}
	if in.Record {
		return times, nil
	}
	return in.Steps, nil
}

// StatusUpdates sets its custom status to 1, 2, ... up to its input, one
// episode each (a Bench_Noop call ends each episode).
func StatusUpdates(ctx *replay.Context) (any, error) {
	var n int
	if err := ctx.GetInput(&n); err != nil {
		return nil, err
	}
	for i := 1; i <= n; i++ {
		if err := ctx.SetCustomStatus(i); err != nil {
			return nil, err
		}
		if err := ctx.CallActivity(NoopName, i).Await(nil); err != nil {
			return nil, err
		}
	}
	return n, nil
}
