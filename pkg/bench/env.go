package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/jetflow/jetflow/pkg/api"
	"github.com/jetflow/jetflow/pkg/client"
	"github.com/jetflow/jetflow/pkg/devserver"
	"github.com/jetflow/jetflow/pkg/dispatcher"
	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/worker"
)

// env is what the workloads run against: a NATS server (embedded or not),
// a dispatcher and workers (unless external), a client, the status watch
// and the HTTP API.
type env struct {
	cfg   Config
	log   *zap.Logger
	nonce string

	ns         *server.Server // the embedded server, if any
	url        string
	embedded   bool
	durability string
	version    string
	stopNATS   func()

	nc     *nats.Conn // the client's connection: commands and reads
	js     jetstream.JetStream
	client *client.Client
	store  *jetstore.Store
	hub    *hub
	hubNC  *nats.Conn

	dispStop func()
	workers  []*runningWorker
	reg      *worker.Registry

	probed int // whether external workers host the bench's orchestrators: 0 unknown, 1 yes, -1 no

	apiURL  string
	apiStop func()
}

type runningWorker struct {
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
}

func (e *env) connect(name string) (*nats.Conn, jetstream.JetStream, error) {
	opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}
	if e.ns != nil && e.cfg.InProcess {
		opts = append(opts, nats.InProcessServer(e.ns))
	}
	nc, err := nats.Connect(e.url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect %s to %s: %w", name, e.url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

func newNonce() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func startEnv(ctx context.Context, cfg Config) (_ *env, err error) {
	e := &env{cfg: cfg, log: cfg.Logger, nonce: newNonce()}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if cfg.ServerURL == "" {
		ns, stop, err := devserver.StartNATS(devserver.NATSConfig{Addr: "127.0.0.1:0", SyncAlways: cfg.SyncAlways})
		if err != nil {
			return nil, err
		}
		e.ns, e.stopNATS, e.url, e.embedded = ns, stop, ns.ClientURL(), true
		e.durability = "default (sync_interval 2m: fsync every 2 minutes)"
		if cfg.SyncAlways {
			e.durability = "always (sync_interval always: fsync every write)"
		}
	} else {
		e.url = cfg.ServerURL
		e.durability = cfg.DurabilityLabel
		if e.durability == "" {
			e.durability = "unknown (server not started by the bench)"
		}
	}
	if e.nc, e.js, err = e.connect("jetflow-bench-client"); err != nil {
		return nil, err
	}
	e.version = e.nc.ConnectedServerVersion()
	if !cfg.External {
		dnc, djs, err := e.connect("jetflow-bench-dispatcher")
		if err != nil {
			return nil, err
		}
		d, err := dispatcher.New(ctx, dnc, djs, dispatcher.Options{Store: jetstore.Config{Memory: cfg.Memory}, Logger: e.log.Named("dispatcher")})
		if err != nil {
			dnc.Close()
			return nil, err
		}
		dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		go func() { _ = d.Run(dctx); close(done) }()
		e.dispStop = func() { cancel(); <-done; dnc.Close() }
	} else {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := jetstore.WaitProvisioned(wctx, e.js)
		cancel()
		if err != nil {
			return nil, err
		}
	}
	if e.client, err = client.New(ctx, e.nc, e.js); err != nil {
		return nil, err
	}
	e.store = e.client.Store()
	if !cfg.External {
		e.reg = worker.NewRegistry()
		if err := Register(e.reg); err != nil {
			return nil, err
		}
		if err := e.startWorkers(ctx, cfg.Workers); err != nil {
			return nil, err
		}
		// Workers register their names as they start; do it here too, so
		// that the first start is not refused while they are starting.
		for _, kn := range e.registeredNames() {
			if err := e.store.Register(ctx, kn[0], kn[1]); err != nil {
				return nil, err
			}
		}
	}
	// A connection of its own for the watch, so that a burst of status
	// updates does not queue behind the client's requests.
	var hjs jetstream.JetStream
	if e.hubNC, hjs, err = e.connect("jetflow-bench-watch"); err != nil {
		return nil, err
	}
	kv, err := hjs.KeyValue(ctx, messages.StatusBucket)
	if err != nil {
		return nil, err
	}
	if e.hub, err = newHub(context.WithoutCancel(ctx), kv); err != nil {
		return nil, err
	}
	if err := e.startAPI(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *env) registeredNames() [][2]string {
	var out [][2]string
	for _, n := range []string{"E1_HelloSequence", "CityRecommender", "ReserveTicket", "SetStatusTest", FanOutName, SequenceName, StatusName} {
		out = append(out, [2]string{jetstore.KindOrchestrator, n})
	}
	for _, n := range []string{"E1_SayHello", "CalculateDiscount", "SlowStep", NoopName} {
		out = append(out, [2]string{jetstore.KindActivity, n})
	}
	return out
}

// hosts reports whether the workers host the bench's orchestrators. The
// bench's own workers do. External ones are asked with a probe (a
// one-step Bench_FanOut), because a registry entry only says that some
// worker once registered the name.
func (e *env) hosts(ctx context.Context) bool {
	if !e.cfg.External {
		return true
	}
	if e.probed == 0 {
		e.probed = -1
		if ok, err := e.store.Registered(ctx, jetstore.KindOrchestrator, FanOutName); err == nil && ok {
			pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			_, err := e.runToCompletion(pctx, FanOutName, e.id("probe"), []byte("1"))
			cancel()
			if err == nil {
				e.probed = 1
			}
		}
	}
	return e.probed > 0
}

func (e *env) workerOptions() worker.Options {
	return worker.Options{
		Concurrency:         e.cfg.WorkerConcurrency,
		ActivityConcurrency: e.cfg.ActivityConcurrency,
		IdleTimeout:         e.cfg.IdleTimeout,
		Logger:              e.log.Named("worker"),
	}
}

// startWorkers starts n in-process workers, each on its own connection
// and with an empty cache.
func (e *env) startWorkers(ctx context.Context, n int) error {
	for i := 0; i < n; i++ {
		nc, js, err := e.connect(fmt.Sprintf("jetflow-bench-worker-%d", i))
		if err != nil {
			return err
		}
		w, err := worker.New(ctx, js, e.reg, e.workerOptions())
		if err != nil {
			nc.Close()
			return err
		}
		wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		rw := &runningWorker{nc: nc, cancel: cancel, done: make(chan error, 1)}
		go func() { rw.done <- w.Run(wctx) }()
		e.workers = append(e.workers, rw)
	}
	return nil
}

// stopWorkers stops every in-process worker; their caches go with them.
func (e *env) stopWorkers() {
	for _, w := range e.workers {
		w.cancel()
	}
	for _, w := range e.workers {
		if err := <-w.done; err != nil {
			e.log.Warn("worker stopped with an error", zap.Error(err))
		}
		w.nc.Close()
	}
	e.workers = nil
}

// startAPI serves the HTTP API as cmd/api does, with its status cache,
// unless the bench is given one.
func (e *env) startAPI(ctx context.Context) error {
	if e.cfg.APIURL != "" {
		e.apiURL = e.cfg.APIURL
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	actx, stopCache := context.WithCancel(context.WithoutCancel(ctx))
	ac, err := client.New(actx, e.nc, e.js, client.WithStatusCache(e.cfg.StatusCache, client.DefaultStatusCacheMaxAge))
	if err != nil {
		stopCache()
		ln.Close()
		return err
	}
	srv := &http.Server{Handler: api.New(ac, api.Options{Logger: e.log.Named("api")}), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Warn("api stopped", zap.Error(err))
		}
		close(done)
	}()
	e.apiURL = "http://" + ln.Addr().String()
	e.apiStop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
		stopCache()
	}
	return nil
}

func (e *env) close() {
	if e.apiStop != nil {
		e.apiStop()
	}
	if e.hub != nil {
		e.hub.stop()
	}
	if e.hubNC != nil {
		e.hubNC.Close()
	}
	e.stopWorkers()
	if e.dispStop != nil {
		e.dispStop()
	}
	if e.nc != nil {
		e.nc.Close()
	}
	if e.stopNATS != nil {
		e.stopNATS()
	}
}

// id returns a fresh instance ID for a workload.
func (e *env) id(workload string, parts ...any) string {
	s := "bench-" + e.nonce + "-" + workload
	for _, p := range parts {
		s += fmt.Sprintf("-%v", p)
	}
	return s
}

// startAndWait starts an orchestration and waits until its status record
// satisfies pred. It returns the record and when the watch saw it.
func (e *env) startAndWait(ctx context.Context, name, id string, input []byte, pred func(*messages.Status) bool) (seen, error) {
	wt := e.hub.expect(id, pred)
	if _, err := e.client.Start(ctx, name, id, input); err != nil {
		e.hub.cancel(wt)
		return seen{}, fmt.Errorf("start %s %s: %w", name, id, err)
	}
	return e.await(ctx, wt)
}

// await waits for a waiter at most OpTimeout.
func (e *env) await(ctx context.Context, wt *waiter) (seen, error) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.OpTimeout)
	defer cancel()
	s, err := e.hub.wait(ctx, wt)
	if err != nil {
		return s, fmt.Errorf("wait for %s: %w", wt.key, err)
	}
	return s, nil
}

// runToCompletion is startAndWait for a terminal record that must be Completed.
func (e *env) runToCompletion(ctx context.Context, name, id string, input []byte) (seen, error) {
	s, err := e.startAndWait(ctx, name, id, input, terminal)
	if err != nil {
		return s, err
	}
	if s.st.RuntimeStatus != messages.StatusCompleted {
		msg := ""
		if s.st.Failure != nil {
			msg = ": " + s.st.Failure.Error()
		}
		return s, fmt.Errorf("%s %s ended %s%s", name, id, s.st.RuntimeStatus, msg)
	}
	return s, nil
}
