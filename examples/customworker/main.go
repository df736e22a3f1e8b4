// Command customworker is a worker binary for your own orchestrators and
// activities. Run it beside `go run ./cmd/devserver`:
//
//	go run ./examples/customworker --server nats://127.0.0.1:4222
//
// then start the orchestration through the devserver's HTTP API:
//
//	curl -X POST http://127.0.0.1:8080/runtime/webhooks/durabletask/orchestrators/Countdown -d 3
package main

import (
	"context"
	"fmt"

	"github.com/jetflow/jetflow/pkg/host"
	"github.com/jetflow/jetflow/pkg/replay"
	"github.com/jetflow/jetflow/pkg/worker"
)

func main() {
	host.Main("customworker", func(ctx context.Context, args []string) error {
		reg := worker.NewRegistry()
		if err := Register(reg); err != nil {
			return err
		}
		return host.RunWorker(ctx, args, reg)
	})
}

// Register adds this worker's functions to reg.
func Register(reg *worker.Registry) error {
	if err := reg.AddOrchestrator("Countdown", Countdown); err != nil {
		return err
	}
	return reg.AddActivity("Announce", Announce)
}

// Countdown counts down from its input, one activity per number, and shows
// the number it is at as its custom status.
func Countdown(ctx *replay.Context) (any, error) {
	var n int
	if err := ctx.GetInput(&n); err != nil {
		return nil, err
	}
	var said []string
	for i := n; i > 0; i-- {
		if err := ctx.SetCustomStatus(map[string]int{"remaining": i}); err != nil {
			return nil, err
		}
		var s string
		if err := ctx.CallActivity("Announce", i).Await(&s); err != nil {
			return nil, err
		}
		said = append(said, s)
	}
	ctx.Logger().Info("countdown done") // silent while replaying
	return said, ctx.SetCustomStatus("liftoff")
}

// Announce is an activity: it may do I/O; here it formats a number.
func Announce(_ context.Context, in worker.Input) (any, error) {
	var i int
	if err := in.Get(&i); err != nil {
		return nil, err
	}
	return fmt.Sprintf("%d...", i), nil
}
