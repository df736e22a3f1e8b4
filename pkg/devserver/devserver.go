// Package devserver runs jetflow in one process: an embedded NATS server
// with JetStream, a dispatcher, a worker and the HTTP API. It is the
// default way to try jetflow, and what the tests start.
package devserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/jetflow/jetflow/pkg/api"
	"github.com/jetflow/jetflow/pkg/client"
	"github.com/jetflow/jetflow/pkg/dispatcher"
	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/telemetry"
	"github.com/jetflow/jetflow/pkg/worker"
)

// NATSConfig configures an embedded NATS server.
type NATSConfig struct {
	// Dir holds JetStream's files; "" makes a temporary folder, removed on shutdown.
	Dir string
	// Addr is host:port for NATS clients; port 0 picks a free one, "" means 127.0.0.1:4222.
	Addr string
	// SyncAlways fsyncs every write instead of every two minutes.
	SyncAlways bool
}

// StartNATS starts an embedded NATS server with JetStream and waits until
// it accepts connections. Call the returned stop function to shut it down.
func StartNATS(cfg NATSConfig) (*server.Server, func(), error) {
	addr := cfg.Addr
	if addr == "" {
		addr = "127.0.0.1:4222"
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("nats address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, nil, fmt.Errorf("nats port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	dir, tmp := cfg.Dir, false
	if dir == "" {
		if dir, err = os.MkdirTemp("", "jetflow-nats-"); err != nil {
			return nil, nil, err
		}
		tmp = true
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "jetflow-dev",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		SyncAlways: cfg.SyncAlways,
		NoSigs:     true,
		MaxPayload: 8 << 20,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("embedded nats: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		return nil, nil, errors.New("embedded nats did not become ready")
	}
	stop := func() {
		ns.Shutdown()
		ns.WaitForShutdown()
		if tmp {
			_ = os.RemoveAll(dir)
		}
	}
	return ns, stop, nil
}

// Config configures Run.
type Config struct {
	NATS NATSConfig
	// HTTPAddr is where the API listens; "" means 127.0.0.1:8080.
	HTTPAddr string
	// Registry is what the embedded worker hosts.
	Registry *worker.Registry
	Worker   worker.Options
	Store    jetstore.Config
	// API configures the HTTP API; its Logger defaults to Logger's.
	API    api.Options
	Logger *zap.Logger
	// Metrics is the registry served at /metrics on the HTTP address, with
	// every component's instruments; nil makes a new one (the global
	// registry is never used).
	Metrics *prometheus.Registry
	// TracerProvider makes every component's spans; nil sets one up from
	// the OTEL_* environment variables (off when none is set).
	TracerProvider trace.TracerProvider
	// Ready, if set, is called once everything is serving.
	Ready func(natsURL, httpURL string)
}

// Run starts everything and serves until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	ns, stopNATS, err := StartNATS(cfg.NATS)
	if err != nil {
		return err
	}
	defer stopNATS()
	nc, err := nats.Connect("", nats.InProcessServer(ns), nats.Name("jetflow-devserver"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect to embedded nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	reg := cfg.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	metrics := telemetry.NewMetrics(reg)
	tp := cfg.TracerProvider
	if tp == nil {
		var shutdown func(context.Context) error
		if tp, shutdown, err = telemetry.SetupTracing(ctx, "jetflow-devserver"); err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = shutdown(sctx)
		}()
	}
	d, err := dispatcher.New(ctx, nc, js, dispatcher.Options{Store: cfg.Store, Logger: log.Named("dispatcher"), Metrics: metrics, TracerProvider: tp})
	if err != nil {
		return err
	}
	wopts := cfg.Worker
	if wopts.Logger == nil {
		wopts.Logger = log.Named("worker")
	}
	if wopts.Metrics == nil {
		wopts.Metrics = metrics
	}
	if wopts.TracerProvider == nil {
		wopts.TracerProvider = tp
	}
	w, err := worker.New(ctx, js, cfg.Registry, wopts)
	if err != nil {
		return err
	}
	c, err := client.New(ctx, nc, js, client.WithMetrics(metrics), client.WithTracerProvider(tp),
		client.WithStatusCache(client.DefaultStatusCacheSize, client.DefaultStatusCacheMaxAge))
	if err != nil {
		return err
	}
	httpAddr := cfg.HTTPAddr
	if httpAddr == "" {
		httpAddr = "127.0.0.1:8080"
	}
	ln, err := net.Listen("tcp", httpAddr)
	if err != nil {
		return fmt.Errorf("listen for http: %w", err)
	}
	aopts := cfg.API
	if aopts.Logger == nil {
		aopts.Logger = log.Named("api")
	}
	if aopts.TracerProvider == nil {
		aopts.TracerProvider = tp
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.Handle("/", api.New(c, aopts))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	runCtx, stopAll := context.WithCancel(ctx)
	defer stopAll()
	errs := make(chan error, 3)
	go func() { errs <- d.Run(runCtx) }()
	go func() { errs <- w.Run(runCtx) }()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs <- err
			return
		}
		errs <- nil
	}()
	if cfg.Ready != nil {
		cfg.Ready(ns.ClientURL(), "http://"+ln.Addr().String())
	}
	var first error
	pending := 3
	select {
	case <-ctx.Done():
	case first = <-errs:
		pending--
	}
	// Stop everything, and wait for it before NATS goes away.
	stopAll()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	for ; pending > 0; pending-- {
		select {
		case err := <-errs:
			if first == nil {
				first = err
			}
		case <-sctx.Done():
			return errors.Join(first, errors.New("devserver: components did not stop in time"))
		}
	}
	return first
}
