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
	"go.uber.org/zap"

	"github.com/jetflow/jetflow/pkg/api"
	"github.com/jetflow/jetflow/pkg/client"
	"github.com/jetflow/jetflow/pkg/dispatcher"
	"github.com/jetflow/jetflow/pkg/jetstore"
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
	d, err := dispatcher.New(ctx, nc, js, dispatcher.Options{Store: cfg.Store, Logger: log.Named("dispatcher")})
	if err != nil {
		return err
	}
	wopts := cfg.Worker
	if wopts.Logger == nil {
		wopts.Logger = log.Named("worker")
	}
	w, err := worker.New(ctx, js, cfg.Registry, wopts)
	if err != nil {
		return err
	}
	c, err := client.New(ctx, nc, js)
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
	srv := &http.Server{Handler: api.New(c, aopts), ReadHeaderTimeout: 10 * time.Second}

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
