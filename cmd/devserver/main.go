// Command devserver runs jetflow in one process on an embedded NATS server:
// a dispatcher, a worker hosting the samples, and the HTTP API. More
// workers may join over NATS. -h lists the flags.
package main

import (
	"context"
	"flag"

	"go.uber.org/zap"

	"github.com/jetflow/jetflow/pkg/devserver"
	"github.com/jetflow/jetflow/pkg/host"
	"github.com/jetflow/jetflow/pkg/samples"
	"github.com/jetflow/jetflow/pkg/worker"
)

func main() { host.Main("devserver", run) }

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("devserver", flag.ContinueOnError)
	data := fs.String("data", "", "JetStream data folder (default: a temporary folder, removed on exit)")
	httpAddr := fs.String("http", "127.0.0.1:8080", "HTTP API address")
	natsAddr := fs.String("nats", "127.0.0.1:4222", "address for NATS clients, such as more workers")
	syncAlways := fs.Bool("sync-always", false, "fsync every JetStream write")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := host.Logger(*logLevel, true)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	reg := worker.NewRegistry()
	if err := samples.Register(reg); err != nil {
		return err
	}
	return devserver.Run(ctx, devserver.Config{
		NATS:     devserver.NATSConfig{Dir: *data, Addr: *natsAddr, SyncAlways: *syncAlways},
		HTTPAddr: *httpAddr,
		Registry: reg,
		Logger:   log,
		Ready: func(natsURL, httpURL string) {
			log.Info("jetflow devserver ready", zap.String("nats", natsURL), zap.String("http", httpURL))
		},
	})
}
