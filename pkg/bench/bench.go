// Package bench measures jetflow end to end: it starts (or joins) a NATS
// server, a dispatcher and workers, runs the workloads of issue 5 against
// them, and reports throughput and latency percentiles as JSON, a Markdown
// table and an SVG plot. cmd/bench is its command line.
//
// Everything it measures is measured, never asserted: a Report says how
// fast jetflow was on this machine at these settings.
package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/jetflow/jetflow/pkg/client"
	"github.com/jetflow/jetflow/pkg/worker"
)

// Workload names, in the order they run.
const (
	WorkloadFloor    = "floor"
	WorkloadHello    = "hello"
	WorkloadOpenLoop = "openloop"
	WorkloadFanOut   = "fanout"
	WorkloadLong     = "long"
	WorkloadStatus   = "status"
	WorkloadWatch    = "watch"
	WorkloadMemory   = "memory"
)

// Workloads lists every workload in the order Run runs them.
var Workloads = []string{WorkloadFloor, WorkloadHello, WorkloadOpenLoop, WorkloadFanOut, WorkloadLong, WorkloadStatus, WorkloadWatch, WorkloadMemory}

// Config sets what Run measures and how hard. DefaultConfig is the
// default run; it takes about one and a half minutes on two cores.
type Config struct {
	// ServerURL is a NATS server to run against; "" starts an embedded one
	// (file storage in a temporary folder) for the run.
	ServerURL string
	// SyncAlways makes the embedded server fsync every write.
	SyncAlways bool
	// InProcess connects the bench's client, dispatcher and workers to the
	// embedded server in memory instead of over loopback TCP (the memory
	// workload's child worker still uses TCP).
	InProcess bool
	// DurabilityLabel describes ServerURL's sync setting in the report,
	// which the bench cannot read from a server it did not start.
	DurabilityLabel string
	// Memory provisions memory storage instead of files (only when the
	// bench provisions, i.e. not External).
	Memory bool
	// External means a dispatcher and workers hosting the samples and the
	// bench's orchestrators (Register) already run against ServerURL: the
	// bench starts none.
	External bool
	// APIURL is an HTTP API to read status from; "" serves one in-process.
	APIURL string

	// Workers is how many in-process workers run, each on its own connection.
	Workers int
	// WorkerConcurrency and ActivityConcurrency are worker.Options'; 0 means its default (64).
	WorkerConcurrency   int
	ActivityConcurrency int
	// IdleTimeout is worker.Options'; 0 means its default (10 s). The
	// memory workload waits for it and measures the worker again.
	IdleTimeout time.Duration

	// Workloads to run; nil means all.
	Workloads []string
	// Warmup orchestrations (E1_HelloSequence, at concurrency 10) run
	// before anything is measured.
	Warmup int
	// OpTimeout bounds the wait for any one orchestration.
	OpTimeout time.Duration

	// floor: JetStream alone, on the same server: FloorPayload-byte
	// messages published asynchronously, consumed and acked for
	// FloorDuration, then FloorSyncPublishes synchronous publishes.
	FloorDuration      time.Duration
	FloorPayload       int
	FloorSyncPublishes int

	// hello: closed loop at each concurrency, for HelloDuration each, or
	// for HelloCount orchestrations each if HelloCount > 0.
	HelloConcurrency []int
	HelloDuration    time.Duration
	HelloCount       int

	// openloop: start rates (per second) tried in turn for OpenLoopStep
	// each, until p99 passes OpenLoopThreshold.
	OpenLoopRates     []int
	OpenLoopStep      time.Duration
	OpenLoopThreshold time.Duration

	// fanout: FanOut activities per orchestration, FanOutRuns orchestrations
	// one after the other.
	FanOut     int
	FanOutRuns int

	// long: a LongSteps-step sequence, and cold replay of a history of at
	// least ColdEvents events.
	LongSteps  int
	ColdEvents int

	// status: StatusClients HTTP clients reading the status of
	// StatusInstances completed instances for StatusDuration, as fast as
	// they can (closed loop), then at each of StatusRates requests per
	// second in all (open loop).
	StatusClients int
	StatusRates   []int
	// StatusCache is the in-process API's status cache size, as the api
	// binary's -status-cache (0: every GET reads the bucket).
	StatusCache     int
	StatusDuration  time.Duration
	StatusInstances int

	// watch: at each concurrency, that many Bench_Status instances making
	// WatchUpdates custom status updates each.
	WatchConcurrency []int
	WatchUpdates     int

	// memory: MemoryInstances CityRecommender instances left waiting for
	// their event on a worker in a child process. MemoryCleanup raises the
	// event on each afterwards so that they complete.
	MemoryInstances int
	MemoryCleanup   bool

	// Logger receives the engine's warnings and errors; nil discards.
	Logger *zap.Logger
	// Progress, if set, receives a line as each step starts and ends.
	Progress func(format string, args ...any)
}

// DefaultConfig returns the default run.
func DefaultConfig() Config {
	return Config{
		Workers:            1,
		Warmup:             100,
		OpTimeout:          2 * time.Minute,
		HelloConcurrency:   []int{1, 10, 100, 1000},
		HelloDuration:      10 * time.Second,
		OpenLoopRates:      []int{50, 100, 200, 400, 800, 1600, 3200},
		OpenLoopStep:       3 * time.Second,
		OpenLoopThreshold:  100 * time.Millisecond,
		FanOut:             1000,
		FanOutRuns:         3,
		LongSteps:          2000,
		ColdEvents:         10000,
		FloorDuration:      5 * time.Second,
		FloorPayload:       256,
		FloorSyncPublishes: 2000,
		StatusClients:      100,
		StatusRates:        []int{20000},
		StatusCache:        client.DefaultStatusCacheSize,
		StatusDuration:     5 * time.Second,
		StatusInstances:    100,
		WatchConcurrency:   []int{1, 10},
		WatchUpdates:       100,
		MemoryInstances:    10000,
	}
}

func (c *Config) check() error {
	for _, w := range c.Workloads {
		if !slices.Contains(Workloads, w) {
			return fmt.Errorf("unknown workload %q (have %s)", w, strings.Join(Workloads, ", "))
		}
	}
	if c.Workers < 1 && !c.External {
		return fmt.Errorf("workers must be at least 1")
	}
	if c.OpTimeout <= 0 {
		c.OpTimeout = 2 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Progress == nil {
		c.Progress = func(string, ...any) {}
	}
	if c.ServerURL == "" {
		c.External = false
	}
	return nil
}

func (c *Config) wants(w string) bool {
	return len(c.Workloads) == 0 || slices.Contains(c.Workloads, w)
}

// Run starts the environment, runs the selected workloads and returns what
// they measured. A workload that fails is reported as a result with an
// error note, and the others still run; Run returns an error only when the
// environment cannot be set up or ctx ends.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	began := time.Now()
	e, err := startEnv(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer e.close()
	rep := &Report{Meta: e.meta(began)}
	if cfg.Warmup > 0 {
		cfg.Progress("warmup: %d E1_HelloSequence", cfg.Warmup)
		_, errs, _ := e.closedLoop(ctx, 10, cfg.Warmup, 0, e.helloOp("warmup"))
		if errs.n > 0 {
			return nil, fmt.Errorf("warmup: %d of %d failed, first: %v", errs.n, cfg.Warmup, errs.first)
		}
	}
	steps := []struct {
		name string
		run  func(context.Context) []Result
	}{
		{WorkloadFloor, e.floor},
		{WorkloadHello, e.hello},
		{WorkloadOpenLoop, e.openLoop},
		{WorkloadFanOut, e.fanOut},
		{WorkloadLong, e.long},
		{WorkloadStatus, e.statusReads},
		{WorkloadWatch, e.watch},
		{WorkloadMemory, e.memory},
	}
	for _, s := range steps {
		if !cfg.wants(s.name) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if !cfg.External && len(e.workers) == 0 {
			if err := e.startWorkers(ctx, cfg.Workers); err != nil {
				return rep, err
			}
		}
		rep.Meta.Workloads = append(rep.Meta.Workloads, s.name)
		t0 := time.Now()
		cfg.Progress("%s: start", s.name)
		rs := s.run(ctx)
		for i := range rs {
			rs[i].Workload = s.name
			rs[i].Durability = e.durability
			if rs[i].Workers == 0 && !cfg.External {
				rs[i].Workers = cfg.Workers
			}
			cfg.Progress("%s %s: %d in %.2f s, %s %s, p50 %s ms, p99 %s ms %v %v", s.name, rs[i].Case, rs[i].Count, rs[i].DurationS,
				num(rs[i].Throughput), rs[i].ThroughputUnit, num(rs[i].P50Ms), num(rs[i].P99Ms), rs[i].Metrics, rs[i].Notes)
		}
		cfg.Progress("%s: done in %.1f s", s.name, time.Since(t0).Seconds())
		rep.Results = append(rep.Results, rs...)
	}
	rep.Meta.TotalS = round3(time.Since(began).Seconds())
	rep.Meta.LoadAvgEnd = loadAvg()
	return rep, ctx.Err()
}

func (e *env) meta(began time.Time) Meta {
	storage := "file"
	if e.cfg.Memory {
		storage = "memory"
	}
	if e.cfg.External {
		storage = "as provisioned"
	}
	server := e.url
	if e.embedded {
		server = "embedded, connections over loopback TCP"
		if e.cfg.InProcess {
			server = "embedded, in-process connections"
		}
	}
	opt := e.workerOptions()
	return Meta{
		StartedAt:           began.UTC().Truncate(time.Second),
		GoVersion:           runtime.Version(),
		GOOS:                runtime.GOOS,
		GOARCH:              runtime.GOARCH,
		NumCPU:              runtime.NumCPU(),
		GOMAXPROCS:          runtime.GOMAXPROCS(0),
		CPUModel:            cpuModel(),
		NATSServer:          server,
		NATSVersion:         e.version,
		Embedded:            e.embedded,
		Storage:             storage,
		Durability:          e.durability,
		Workers:             len(e.workers),
		WorkerConcurrency:   orDefault(opt.Concurrency, worker.DefaultConcurrency),
		ActivityConcurrency: orDefault(opt.ActivityConcurrency, worker.DefaultActivityConcurrency),
		External:            e.cfg.External,
		LoadAvgStart:        loadAvg(),
	}
}

// loadAvg returns the one-minute load average on Linux, 0 elsewhere.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func orDefault(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// cpuModel reads the CPU's model name on Linux.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
