package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/internal/natstest"
	"github.com/jetflow/jetflow/pkg/client"
	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds jetflow's commands and the example worker once per test run.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "jetflow-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+string(os.PathSeparator), "./cmd/dispatcher", "./cmd/worker", "./cmd/api", "./cmd/devserver", "./examples/customworker")
		cmd.Dir = filepath.Join("..", "..")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// proc is a jetflow binary running as a child process.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed when the process has exited
}

func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binaries(t), name), args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("%s log tail:\n%s", name, b)
		}
	})
	return p
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestMultiProcessKillWorker runs the dispatcher, a worker and the API as
// separate processes on one NATS server, starts 200 E1_HelloSequence
// instances, kills the worker with SIGKILL midway and starts a new one.
// Every instance must complete with the right output, and every history
// must hold exactly three TaskScheduled and three TaskCompleted events.
func TestMultiProcessKillWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	binaries(t)
	srv := natstest.Start(t)
	url := srv.URL()
	const ackWait = "2s"
	adminAddr := freeAddr(t)
	startProc(t, "dispatcher", "--server", url, "-orchestrator-ack-wait", ackWait, "-activity-ack-wait", ackWait, "-admin", adminAddr)
	_, js := natstest.Connect(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := jetstore.WaitProvisioned(ctx, js); err != nil {
		t.Fatal(err)
	}
	store, err := jetstore.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := freeAddr(t)
	startProc(t, "api", "--server", url, "-http", httpAddr)
	worker1 := startProc(t, "worker", "--server", url, "-concurrency", "4", "-activity-concurrency", "4")
	waitFor(t, 30*time.Second, "worker registration", func() bool {
		ok, err := store.Registered(ctx, jetstore.KindOrchestrator, "E1_HelloSequence")
		return err == nil && ok
	})
	base := "http://" + httpAddr + "/runtime/webhooks/durabletask/"
	waitFor(t, 30*time.Second, "api", func() bool {
		r, err := http.Get(base + "instances/none")
		if err == nil {
			r.Body.Close()
		}
		return err == nil && r.StatusCode == http.StatusNotFound
	})

	// Every process reports itself alive and ready.
	for _, u := range []string{"http://" + adminAddr + "/healthz", "http://" + adminAddr + "/readyz", "http://" + httpAddr + "/healthz", "http://" + httpAddr + "/readyz"} {
		waitFor(t, 10*time.Second, u, func() bool {
			r, err := http.Get(u)
			if err != nil {
				return false
			}
			r.Body.Close()
			return r.StatusCode == http.StatusOK
		})
	}

	// Count completions from the status bucket as they happen.
	const n = 200
	var completed atomic.Int64
	watch, err := store.StatusKV().WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Stop()
	var seenDone sync.Map
	go func() {
		for e := range watch.Updates() {
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			st, err := messages.DecodeStatus(e.Value())
			if err == nil && st.RuntimeStatus == messages.StatusCompleted {
				if _, dup := seenDone.LoadOrStore(st.InstanceID, true); !dup {
					completed.Add(1)
				}
			}
		}
	}()

	ids := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		ids[i] = fmt.Sprintf("mp-%03d", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := http.Post(base+"orchestrators/E1_HelloSequence/"+ids[i], "application/json", nil)
			if err != nil {
				errs <- err
				return
			}
			res.Body.Close()
			if res.StatusCode != http.StatusAccepted {
				errs <- fmt.Errorf("start %s: %d", ids[i], res.StatusCode)
			}
		}()
	}

	// Kill the worker once some, but not all, instances have completed.
	waitFor(t, 60*time.Second, "20 completions", func() bool { return completed.Load() >= 20 })
	if err := worker1.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-worker1.done
	atKill := completed.Load()
	t.Logf("worker killed with %d of %d instances completed", atKill, n)
	if atKill >= n {
		t.Fatalf("all %d instances completed before the kill; the test did not exercise a crash", n)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	startProc(t, "worker", "--server", url)
	waitFor(t, 90*time.Second, "every instance to complete", func() bool { return completed.Load() >= n })

	want := `["Hello Tokyo!","Hello Seattle!","Hello London!"]`
	for _, id := range ids {
		st, _, err := store.GetStatus(ctx, id)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if st.RuntimeStatus != messages.StatusCompleted || !jsonEq(t, st.Output, want) || !bytes.Equal(st.CustomStatus, []byte(`"London"`)) {
			t.Errorf("%s: %s output %s custom status %s", id, st.RuntimeStatus, st.Output, st.CustomStatus)
			continue
		}
		history, _, err := store.LoadHistory(ctx, id, st.ExecutionID)
		if err != nil {
			t.Fatalf("%s history: %v", id, err)
		}
		count := map[messages.EventType]int{}
		tasks := map[int32]int{}
		for _, e := range history {
			count[e.Type]++
			if e.Type == messages.EventTaskCompleted {
				tasks[e.TaskID]++
			}
		}
		if count[messages.EventTaskScheduled] != 3 || count[messages.EventTaskCompleted] != 3 || len(tasks) != 3 ||
			count[messages.EventExecutionStarted] != 1 || count[messages.EventExecutionCompleted] != 1 {
			b, _ := json.Marshal(count)
			t.Errorf("%s: history event counts %s, tasks completed %v", id, b, tasks)
		}
	}
}

// TestSIGTERMRedeliversNothing: a worker stopped with SIGTERM during a run
// stops pulling, finishes what it had, and exits 0; nothing is delivered
// twice, so nothing it finished runs again on the next worker.
func TestSIGTERMRedeliversNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	binaries(t)
	srv := natstest.Start(t)
	url := srv.URL()
	// An ack wait longer than the pause below (600 starts under -race on
	// a loaded machine), since a message fetched before the pause waits
	// it out; short enough that a message lost in the shutdown would be
	// redelivered, and counted, before the test ends.
	startProc(t, "dispatcher", "--server", url, "-orchestrator-ack-wait", "15s", "-activity-ack-wait", "15s")
	nc, js := natstest.Connect(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := jetstore.WaitProvisioned(ctx, js); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(ctx, nc, js)
	if err != nil {
		t.Fatal(err)
	}
	worker1 := startProc(t, "worker", "--server", url, "-concurrency", "4", "-activity-concurrency", "4")
	waitFor(t, 30*time.Second, "worker registration", func() bool {
		ok, err := c.Store().Registered(ctx, jetstore.KindOrchestrator, "E1_HelloSequence")
		return err == nil && ok
	})
	// The worker is paused while the instances start, so that it does not
	// keep up with the starts and the SIGTERM lands with most of them to do.
	if err := worker1.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	const n = 600
	for i := range n {
		if _, err := c.Start(ctx, "E1_HelloSequence", fmt.Sprintf("term-%03d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := worker1.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	completed := func() int {
		page, _, err := c.List(ctx, client.ListFilter{Statuses: []messages.RuntimeStatus{messages.StatusCompleted}}, 1000, "")
		if err != nil {
			t.Fatal(err)
		}
		return len(page)
	}
	// SIGTERM as soon as the first instance started completes: a watch, not
	// a poll, so that most of the run is still to do.
	wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
	_, err = c.WaitForCompletion(wctx, "term-000")
	wcancel()
	if err != nil {
		t.Fatalf("first instance: %v", err)
	}
	if err := worker1.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-worker1.done:
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not exit within 30 s of SIGTERM")
	}
	atStop := completed()
	if code := worker1.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("worker exited %d after SIGTERM, want 0", code)
	}
	if atStop >= n {
		t.Fatalf("every instance completed before the SIGTERM took effect")
	}
	t.Logf("SIGTERM with %d of %d completed", atStop, n)
	// The next worker takes small batches too, so that no work it fetched
	// waits out the ack wait.
	startProc(t, "worker", "--server", url, "-concurrency", "4", "-activity-concurrency", "4")
	waitFor(t, 60*time.Second, "every instance to complete", func() bool { return completed() >= n })
	for _, s := range []struct{ stream, consumer string }{
		{messages.OrchestratorStream, jetstore.OrchestratorConsumer},
		{messages.ActivityStream, jetstore.ActivityConsumer},
	} {
		cons, err := js.Consumer(ctx, s.stream, s.consumer)
		if err != nil {
			t.Fatal(err)
		}
		// Every message acked: one whose ack was lost would be pending
		// until the ack wait redelivers it, and be counted below.
		var ci *jetstream.ConsumerInfo
		waitFor(t, 60*time.Second, s.stream+" acked", func() bool {
			ci, err = cons.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return ci.NumAckPending == 0
		})
		st, err := js.Stream(ctx, s.stream)
		if err != nil {
			t.Fatal(err)
		}
		si, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ci.Delivered.Consumer != si.State.LastSeq {
			t.Errorf("%s: %d deliveries of %d messages: %d redelivered", s.stream, ci.Delivered.Consumer, si.State.LastSeq, ci.Delivered.Consumer-si.State.LastSeq)
		}
	}
}
