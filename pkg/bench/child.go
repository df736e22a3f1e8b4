package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/pkg/worker"
)

// The memory workload runs its worker in a child process: the bench's own
// binary, started again with these variables set. A main that uses Run
// must therefore begin with
//
//	if bench.IsChild() {
//		os.Exit(bench.ChildMain())
//	}
const (
	childEnv      = "JETFLOW_BENCH_CHILD"
	childNATSEnv  = "JETFLOW_BENCH_NATS"
	childOptsEnv  = "JETFLOW_BENCH_WORKER"
	childReady    = "ready"
	childStatsCmd = "stats"
)

// IsChild reports whether this process was started as the bench's child worker.
func IsChild() bool { return os.Getenv(childEnv) == "worker" }

type childOptions struct {
	CacheSize           int           `json:"cacheSize"`
	Concurrency         int           `json:"concurrency"`
	ActivityConcurrency int           `json:"activityConcurrency"`
	IdleTimeout         time.Duration `json:"idleTimeout"`
}

// procStats is a process's memory after a forced collection.
type procStats struct {
	RSS        uint64 `json:"rss"`
	HeapInuse  uint64 `json:"heapInuse"`
	StackInuse uint64 `json:"stackInuse"`
	Sys        uint64 `json:"sys"`
	Goroutines int    `json:"goroutines"`
}

// ChildMain runs the child worker: it hosts the samples and the bench's
// orchestrators until its standard input closes, and answers "stats" with
// its memory as a JSON line. It returns the exit code.
func ChildMain() int {
	if err := childMain(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench child worker:", err)
		return 1
	}
	return 0
}

func childMain(in io.Reader, out io.Writer) error {
	var o childOptions
	if s := os.Getenv(childOptsEnv); s != "" {
		if err := json.Unmarshal([]byte(s), &o); err != nil {
			return err
		}
	}
	nc, err := nats.Connect(os.Getenv(childNATSEnv), nats.Name("jetflow-bench-child-worker"), nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	reg := worker.NewRegistry()
	if err := Register(reg); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := worker.New(ctx, js, reg, worker.Options{CacheSize: o.CacheSize, Concurrency: o.Concurrency, ActivityConcurrency: o.ActivityConcurrency, IdleTimeout: o.IdleTimeout})
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	if _, err := fmt.Fprintln(out, childReady); err != nil {
		return err
	}
	sc := bufio.NewScanner(in)
	enc := json.NewEncoder(out)
	for sc.Scan() {
		if sc.Text() == childStatsCmd {
			if err := enc.Encode(selfStats()); err != nil {
				return err
			}
		}
	}
	cancel()
	return <-done
}

func selfStats() procStats {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return procStats{RSS: vmRSS("/proc/self/status"), HeapInuse: m.HeapInuse, StackInuse: m.StackInuse, Sys: m.Sys, Goroutines: runtime.NumGoroutine()}
}

// vmRSS reads VmRSS, in bytes, from a /proc status file; 0 if unknown.
func vmRSS(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) == 2 && f[1] == "kB" {
				kb, _ := strconv.ParseUint(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// child is a running child worker.
type child struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
	done  chan error
}

func startChild(ctx context.Context, url string, o childOptions) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	opts, _ := json.Marshal(o)
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"=worker", childNATSEnv+"="+url, childOptsEnv+"="+string(opts))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, in: in, lines: make(chan string, 16), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(outPipe)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		c.done <- cmd.Wait()
	}()
	line, err := c.line(ctx, 30*time.Second)
	if err != nil || line != childReady {
		c.stop()
		if err == nil {
			err = fmt.Errorf("child said %q, not %q: does the binary's main call bench.IsChild and bench.ChildMain?", line, childReady)
		}
		return nil, err
	}
	return c, nil
}

func (c *child) line(ctx context.Context, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case l, ok := <-c.lines:
		if !ok {
			return "", errors.New("child worker exited")
		}
		return l, nil
	case <-t.C:
		return "", fmt.Errorf("child worker did not answer within %s", timeout)
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (c *child) stats() (procStats, error) {
	var st procStats
	if _, err := fmt.Fprintln(c.in, childStatsCmd); err != nil {
		return st, err
	}
	l, err := c.line(context.Background(), time.Minute)
	if err != nil {
		return st, err
	}
	err = json.Unmarshal([]byte(l), &st)
	return st, err
}

// stop closes the child's input, which ends it, and waits; it kills the
// child if it has not ended within 20 s.
func (c *child) stop() {
	_ = c.in.Close()
	go func() {
		for range c.lines {
		}
	}()
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}
