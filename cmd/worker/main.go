// Command worker hosts jetflow's sample orchestrators and activities. Any
// number of workers may run against the same NATS; -h lists the flags.
package main

import (
	"context"

	"github.com/jetflow/jetflow/pkg/host"
	"github.com/jetflow/jetflow/pkg/samples"
	"github.com/jetflow/jetflow/pkg/worker"
)

func main() {
	host.Main("worker", func(ctx context.Context, args []string) error {
		reg := worker.NewRegistry()
		if err := samples.Register(reg); err != nil {
			return err
		}
		return host.RunWorker(ctx, args, reg)
	})
}
