// Command bench measures jetflow: throughput and latency of the workloads
// of issue 5 against an embedded NATS server (the default) or any NATS
// server. It writes the results as JSON, as a Markdown table (also on
// standard output) and the hello workload's latency distribution as SVG.
//
//	go run ./cmd/bench                         # everything, about 1.5 minutes on 2 cores
//	go run ./cmd/bench -sync-always -workloads hello,status
//	go run ./cmd/bench -workloads hello -hello-concurrency 100 -cpuprofile cpu.out
//	go run ./cmd/bench -server nats://127.0.0.1:4222 -workers 2
//
// docs/PERFORMANCE.md records the method and the numbers.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/jetflow/jetflow/pkg/bench"
)

func main() {
	if bench.IsChild() {
		os.Exit(bench.ChildMain())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// intList is a flag of comma-separated integers.
type intList []int

func (l *intList) String() string {
	s := make([]string, len(*l))
	for i, v := range *l {
		s[i] = strconv.Itoa(v)
	}
	return strings.Join(s, ",")
}

func (l *intList) Set(v string) error {
	var out []int
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	*l = out
	return nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := bench.DefaultConfig()
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.ServerURL, "server", "", "NATS server URL to run against; empty: an embedded server with file storage in a temporary folder")
	fs.BoolVar(&cfg.SyncAlways, "sync-always", false, "embedded server: fsync every write (sync_interval: always) instead of every 2 minutes")
	fs.BoolVar(&cfg.InProcess, "inprocess", false, "embedded server: connect the bench's client, dispatcher and workers in memory instead of over loopback TCP")
	fs.StringVar(&cfg.DurabilityLabel, "durability", "", "with -server: how that server syncs, for the report (the bench cannot read it)")
	fs.BoolVar(&cfg.Memory, "memory-storage", false, "provision streams and buckets in memory instead of files")
	fs.BoolVar(&cfg.External, "external", false, "with -server: a dispatcher and workers hosting the samples and the bench's orchestrators already run; start none")
	fs.StringVar(&cfg.APIURL, "api", "", "HTTP API base URL for the status workload; empty: serve one in-process")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "in-process workers, each with its own NATS connection")
	fs.IntVar(&cfg.WorkerConcurrency, "worker-concurrency", 0, "orchestrator episodes each worker runs at once (0: the worker's default, 256)")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", 0, "how long workers keep an idle instance in memory (0: the worker's default, 10s; negative: until the cache is full)")
	fs.IntVar(&cfg.ActivityConcurrency, "activity-concurrency", 0, "activities each worker runs at once (0: the worker's default, 256)")
	workloads := fs.String("workloads", "", "comma-separated workloads to run, of "+strings.Join(bench.Workloads, ",")+" (default all)")
	fs.IntVar(&cfg.Warmup, "warmup", cfg.Warmup, "E1_HelloSequence orchestrations run before measuring")
	fs.DurationVar(&cfg.OpTimeout, "op-timeout", cfg.OpTimeout, "longest wait for any one orchestration")

	fs.DurationVar(&cfg.FloorDuration, "floor-duration", cfg.FloorDuration, "floor: time JetStream alone publishes, consumes and acks")
	fs.IntVar(&cfg.FloorPayload, "floor-payload", cfg.FloorPayload, "floor: bytes per message")
	fs.IntVar(&cfg.FloorSyncPublishes, "floor-sync-publishes", cfg.FloorSyncPublishes, "floor: synchronous publishes timed one at a time")
	hc := intList(cfg.HelloConcurrency)
	fs.Var(&hc, "hello-concurrency", "hello: closed-loop concurrency levels")
	fs.DurationVar(&cfg.HelloDuration, "hello-duration", cfg.HelloDuration, "hello: time at each concurrency level")
	fs.IntVar(&cfg.HelloCount, "hello-count", 0, "hello: orchestrations per level instead of -hello-duration")
	or := intList(cfg.OpenLoopRates)
	fs.Var(&or, "openloop-rates", "openloop: start rates per second, tried in turn")
	fs.DurationVar(&cfg.OpenLoopStep, "openloop-step", cfg.OpenLoopStep, "openloop: time at each rate")
	fs.DurationVar(&cfg.OpenLoopThreshold, "openloop-p99", cfg.OpenLoopThreshold, "openloop: stop at the first rate whose p99 passes this")
	fs.IntVar(&cfg.FanOut, "fanout", cfg.FanOut, "fanout: activities per orchestration")
	fs.IntVar(&cfg.FanOutRuns, "fanout-runs", cfg.FanOutRuns, "fanout: orchestrations, one after the other")
	fs.IntVar(&cfg.LongSteps, "long-steps", cfg.LongSteps, "long: steps of the sequential orchestration")
	fs.IntVar(&cfg.ColdEvents, "cold-events", cfg.ColdEvents, "long: history events to replay cold")
	fs.IntVar(&cfg.StatusClients, "status-clients", cfg.StatusClients, "status: concurrent HTTP clients")
	fs.Var((*intList)(&cfg.StatusRates), "status-rates", "status: request rates per second in all, each for -status-duration, after the closed loop")
	fs.IntVar(&cfg.StatusCache, "status-cache", cfg.StatusCache, "status: records the in-process API serves from memory, as the api's -status-cache (0: none)")
	fs.DurationVar(&cfg.StatusDuration, "status-duration", cfg.StatusDuration, "status: time the clients read")
	fs.IntVar(&cfg.StatusInstances, "status-instances", cfg.StatusInstances, "status: completed instances whose status is read")
	wc := intList(cfg.WatchConcurrency)
	fs.Var(&wc, "watch-concurrency", "watch: orchestrations updating their custom status at once")
	fs.IntVar(&cfg.WatchUpdates, "watch-updates", cfg.WatchUpdates, "watch: custom status updates per orchestration")
	fs.IntVar(&cfg.MemoryInstances, "memory-instances", cfg.MemoryInstances, "memory: orchestrations left waiting for an event")
	cleanup := fs.String("memory-cleanup", "auto", "memory: raise the event afterwards so the instances complete (auto: only with -server)")

	jsonOut := fs.String("out", "", "write the results as JSON to this file")
	mdOut := fs.String("md", "", "write the Markdown table to this file too")
	svgOut := fs.String("svg", "", "write the hello latency plot (SVG) to this file")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run (bench, engine and embedded server) to this file")
	memProfile := fs.String("memprofile", "", "write a heap profile at the end to this file")
	logLevel := fs.String("log", "error", "level of the engine's logs on standard error: debug, info, warn, error")
	quiet := fs.Bool("q", false, "no progress lines on standard error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg.HelloConcurrency, cfg.OpenLoopRates, cfg.WatchConcurrency = hc, or, wc
	if *workloads != "" {
		for _, w := range strings.Split(*workloads, ",") {
			if w = strings.TrimSpace(w); w != "" {
				cfg.Workloads = append(cfg.Workloads, w)
			}
		}
	}
	switch *cleanup {
	case "auto":
		cfg.MemoryCleanup = cfg.ServerURL != ""
	case "true", "false":
		cfg.MemoryCleanup = *cleanup == "true"
	default:
		return fmt.Errorf("-memory-cleanup: %q is not auto, true or false", *cleanup)
	}
	if cfg.SyncAlways && cfg.ServerURL != "" {
		return errors.New("-sync-always sets the embedded server; for -server, configure the server and say so with -durability")
	}
	var lvl zapcore.Level
	if err := lvl.Set(*logLevel); err != nil {
		return fmt.Errorf("-log: %w", err)
	}
	zc := zap.NewDevelopmentConfig()
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.OutputPaths, zc.ErrorOutputPaths = []string{"stderr"}, []string{"stderr"}
	log, err := zc.Build()
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	cfg.Logger = log
	if !*quiet {
		cfg.Progress = func(format string, args ...any) {
			fmt.Fprintf(stderr, "%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
		}
	}

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := bench.Run(ctx, cfg)
	if rep == nil {
		return err
	}
	// Whatever was measured is written, even when the run was cut short.
	werr := writeOutputs(rep, stdout, *jsonOut, *mdOut, *svgOut)
	if *memProfile != "" {
		runtime.GC()
		if f, ferr := os.Create(*memProfile); ferr == nil {
			werr = errors.Join(werr, pprof.WriteHeapProfile(f), f.Close())
		} else {
			werr = errors.Join(werr, ferr)
		}
	}
	return errors.Join(err, werr)
}

func writeOutputs(rep *bench.Report, stdout io.Writer, jsonOut, mdOut, svgOut string) error {
	if err := rep.WriteMarkdown(stdout); err != nil {
		return err
	}
	write := func(path string, f func(io.Writer) error) error {
		if path == "" {
			return nil
		}
		file, err := os.Create(path)
		if err != nil {
			return err
		}
		return errors.Join(f(file), file.Close())
	}
	return errors.Join(write(jsonOut, rep.WriteJSON), write(mdOut, rep.WriteMarkdown), write(svgOut, rep.WriteSVG))
}
