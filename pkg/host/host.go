// Package host runs jetflow's processes from command-line arguments: the
// code behind cmd/worker, cmd/dispatcher and cmd/api. A team that writes its
// own orchestrators builds its worker binary with RunWorker:
//
//	func main() {
//		reg := worker.NewRegistry()
//		reg.AddOrchestrator("MyOrchestrator", myOrchestrator)
//		reg.AddActivity("MyActivity", myActivity)
//		host.Main("my-worker", func(ctx context.Context, args []string) error {
//			return host.RunWorker(ctx, args, reg)
//		})
//	}
//
// Every process takes the NATS CLI's connection flags (see package natsconn).
package host

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/jetflow/jetflow/pkg/api"
	"github.com/jetflow/jetflow/pkg/client"
	"github.com/jetflow/jetflow/pkg/dispatcher"
	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/natsconn"
	"github.com/jetflow/jetflow/pkg/telemetry"
	"github.com/jetflow/jetflow/pkg/worker"
)

// Main runs run with the process's arguments until SIGINT or SIGTERM, and
// exits 1 with a message if it fails.
func Main(name string, run func(ctx context.Context, args []string) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// common holds what every process configures.
type common struct {
	nats      natsconn.Options
	logLevel  string
	dev       bool
	adminAddr string
	pprof     bool
}

func (c *common) register(fs *flag.FlagSet) {
	c.nats.Register(fs)
	fs.StringVar(&c.adminAddr, "admin", os.Getenv("JETFLOW_ADMIN"), "address for /healthz, /readyz and /metrics, e.g. :8081 (JETFLOW_ADMIN); empty serves none")
	fs.BoolVar(&c.pprof, "pprof", false, "serve /debug/pprof/ on the admin address")
	fs.StringVar(&c.logLevel, "log-level", envOr("JETFLOW_LOG_LEVEL", "info"), "log level: debug, info, warn or error (JETFLOW_LOG_LEVEL)")
	fs.BoolVar(&c.dev, "log-console", false, "log as console text instead of JSON")
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// Logger returns the binaries' logger: JSON lines by default, console
// text when console is set.
func Logger(level string, console bool) (*zap.Logger, error) {
	lvl, err := zap.ParseAtomicLevel(level)
	if err != nil {
		return nil, err
	}
	cfg := zap.NewProductionConfig()
	if console {
		cfg = zap.NewDevelopmentConfig()
		cfg.DisableStacktrace = true
	}
	cfg.Level = lvl
	return cfg.Build()
}

// process is what every process sets up: its logger, its NATS
// connection, its metrics registry and its tracer provider.
type process struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	log      *zap.Logger
	registry *prometheus.Registry
	metrics  *telemetry.Metrics
	tracer   trace.TracerProvider
	shutdown func(context.Context) error
}

// close flushes the spans, flushes and closes the connection, and syncs
// the log.
func (p *process) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.shutdown(ctx); err != nil {
		p.log.Warn("flush traces", zap.Error(err))
	}
	closeConn(p.nc)
	_ = p.log.Sync()
}

// NewRegistry returns a Prometheus registry with the Go runtime and process
// collectors, for a process's /metrics.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// MetricsHandler serves a registry in the Prometheus text format.
func MetricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// Tracing sets up the process's tracer provider from the OTEL_*
// environment (see telemetry.SetupTracing; off when none is set) and makes
// it, with the W3C trace context propagator, the global one, so that
// orchestrator and activity code can add spans with otel.Tracer.
func Tracing(ctx context.Context, service string) (trace.TracerProvider, func(context.Context) error, error) {
	tp, shutdown, err := telemetry.SetupTracing(ctx, service)
	if err != nil {
		return nil, nil, err
	}
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(telemetry.Propagator)
	return tp, shutdown, nil
}

// connect dials NATS, serves the admin address, and waits for the streams
// and buckets if wait is set.
func (c *common) connect(ctx context.Context, name string, wait bool) (*process, error) {
	log, err := Logger(c.logLevel, c.dev)
	if err != nil {
		return nil, err
	}
	tp, shutdown, err := Tracing(ctx, name)
	if err != nil {
		return nil, err
	}
	p := &process{log: log, tracer: tp, shutdown: shutdown, registry: NewRegistry()}
	p.metrics = telemetry.NewMetrics(p.registry)
	fail := func(err error) (*process, error) {
		if p.nc != nil {
			p.nc.Close()
		}
		_ = shutdown(context.WithoutCancel(ctx))
		return nil, err
	}
	if p.nc, err = c.nats.Connect(name); err != nil {
		return fail(err)
	}
	if p.js, err = jetstream.New(p.nc); err != nil {
		return fail(err)
	}
	if err := serveAdmin(ctx, c.adminAddr, AdminHandler(Health(p.nc, p.js), p.registry, c.pprof), log); err != nil {
		return fail(err)
	}
	if wait {
		log.Info("waiting for jetflow streams and buckets")
		if err := jetstore.WaitProvisioned(ctx, p.js); err != nil {
			return fail(err)
		}
	}
	return p, nil
}

// RunWorker runs a worker hosting reg until ctx ends.
func RunWorker(ctx context.Context, args []string, reg *worker.Registry) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	var c common
	c.register(fs)
	var o worker.Options
	fs.IntVar(&o.Concurrency, "concurrency", worker.DefaultConcurrency, "orchestrator episodes run at once")
	fs.IntVar(&o.ActivityConcurrency, "activity-concurrency", worker.DefaultActivityConcurrency, "activities run at once")
	fs.IntVar(&o.CacheSize, "cache-size", 10000, "instances kept replayed in memory (negative: none)")
	fs.DurationVar(&o.IdleTimeout, "idle-timeout", 10*time.Second, "how long an idle instance stays replayed in memory; later work replays it from history (negative: until the cache is full)")
	fs.IntVar(&o.MaxCustomStatusBytes, "max-custom-status", 0, "custom status limit in bytes of UTF-16 JSON text (0: 16 KB)")
	fs.DurationVar(&o.DrainTimeout, "drain-timeout", 10*time.Second, "how long to finish work in flight on shutdown")
	if err := fs.Parse(args); err != nil {
		return err
	}
	p, err := c.connect(ctx, "jetflow-worker", true)
	if err != nil {
		return err
	}
	defer p.close()
	nc, js, log := p.nc, p.js, p.log
	o.Logger, o.Metrics, o.TracerProvider = log, p.metrics, p.tracer
	w, err := worker.New(ctx, js, reg, o)
	if err != nil {
		return err
	}
	log.Info("worker running", zap.String("nats", nc.ConnectedUrlRedacted()))
	err = w.Run(ctx)
	log.Info("worker stopped")
	return err
}

// RunDispatcher provisions the streams and buckets and runs a dispatcher
// until ctx ends.
func RunDispatcher(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("dispatcher", flag.ContinueOnError)
	var c common
	c.register(fs)
	var sc jetstore.Config
	fs.IntVar(&sc.Replicas, "replicas", 1, "replicas of every stream and bucket (3 on a cluster)")
	fs.BoolVar(&sc.Memory, "memory", false, "keep streams and buckets in memory instead of files")
	fs.IntVar(&sc.MaxDeliver, "max-deliver", 20, "deliveries of a work message before it is given up")
	fs.DurationVar(&sc.OrchestratorAckWait, "orchestrator-ack-wait", 30*time.Second, "time before an unacknowledged orchestrator work item is redelivered")
	fs.DurationVar(&sc.ActivityAckWait, "activity-ack-wait", 60*time.Second, "time before an unacknowledged activity task is redelivered")
	if err := fs.Parse(args); err != nil {
		return err
	}
	p, err := c.connect(ctx, "jetflow-dispatcher", false)
	if err != nil {
		return err
	}
	defer p.close()
	nc, js, log := p.nc, p.js, p.log
	d, err := dispatcher.New(ctx, nc, js, dispatcher.Options{Store: sc, Logger: log, Metrics: p.metrics, TracerProvider: p.tracer})
	if err != nil {
		return err
	}
	log.Info("dispatcher running", zap.String("nats", nc.ConnectedUrlRedacted()))
	err = d.Run(ctx)
	log.Info("dispatcher stopped")
	return err
}

// RunAPI serves the HTTP API until ctx ends.
func RunAPI(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("api", flag.ContinueOnError)
	var c common
	c.register(fs)
	addr := fs.String("http", envOr("JETFLOW_HTTP", "127.0.0.1:8080"), "address to serve HTTP on (JETFLOW_HTTP)")
	var o api.Options
	fs.StringVar(&o.BaseURL, "base-url", os.Getenv("JETFLOW_BASE_URL"), "public base URL for the URLs in check-status bodies (JETFLOW_BASE_URL); default: the request's")
	fs.Int64Var(&o.MaxBodyBytes, "max-body", 1<<20, "largest request body in bytes")
	cacheSize := fs.Int("status-cache", client.DefaultStatusCacheSize, "status records served from memory, kept fresh by a watch of the status bucket (0: read every one from the bucket)")
	keys := fs.String("api-keys", os.Getenv("JETFLOW_API_KEYS"), "comma-separated API keys; when set, every request needs one as ?code= or x-functions-key (JETFLOW_API_KEYS)")
	origins := fs.String("cors-origins", os.Getenv("JETFLOW_CORS_ORIGINS"), "comma-separated origins allowed by CORS, or * (JETFLOW_CORS_ORIGINS)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.APIKeys, o.CORSOrigins = splitList(*keys), splitList(*origins)
	p, err := c.connect(ctx, "jetflow-api", true)
	if err != nil {
		return err
	}
	defer p.close()
	nc, js, log := p.nc, p.js, p.log
	cl, err := client.New(ctx, nc, js, client.WithMetrics(p.metrics), client.WithTracerProvider(p.tracer),
		client.WithStatusCache(*cacheSize, client.DefaultStatusCacheMaxAge))
	if err != nil {
		return err
	}
	o.Logger, o.TracerProvider = log, p.tracer
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	health := Health(nc, js)
	mux.Handle("GET /healthz", health)
	mux.Handle("GET /readyz", health)
	mux.Handle("GET /metrics", MetricsHandler(p.registry))
	mux.Handle("/", api.New(cl, o))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errs := make(chan error, 1)
	go func() { errs <- srv.Serve(ln) }()
	log.Info("api serving", zap.String("http", ln.Addr().String()), zap.String("nats", nc.ConnectedUrlRedacted()))
	select {
	case err := <-errs:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	log.Info("api stopped")
	return err
}

// closeConn flushes what is still buffered, the last acks among it, and
// closes the connection.
func closeConn(nc *nats.Conn) {
	_ = nc.FlushTimeout(2 * time.Second)
	nc.Close()
}
