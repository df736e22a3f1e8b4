package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/jetflow/jetflow/pkg/api"
	"github.com/jetflow/jetflow/pkg/client"
	"github.com/jetflow/jetflow/pkg/dispatcher"
	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/replay"
	"github.com/jetflow/jetflow/pkg/samples"
	"github.com/jetflow/jetflow/pkg/telemetry"
	"github.com/jetflow/jetflow/pkg/worker"
)

// permissionsDoc is the document whose conf blocks the test loads.
const permissionsDoc = "../../deploy/permissions.md"

// permissionRoles are the users deploy/permissions.md defines, and the
// environment variable each one's password is read from.
var permissionRoles = []struct{ user, passwordEnv string }{
	{"jetflow-dispatcher", "JETFLOW_DISPATCHER_PASSWORD"},
	{"jetflow-worker", "JETFLOW_WORKER_PASSWORD"},
	{"jetflow-api", "JETFLOW_API_PASSWORD"},
	{"jetflow-client", "JETFLOW_CLIENT_PASSWORD"},
}

// confBlocks returns the ```conf blocks of a Markdown document, joined in order.
func confBlocks(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		out    strings.Builder
		in     bool
		blocks int
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case !in && strings.TrimSpace(line) == "```conf":
			in = true
			blocks++
		case in && strings.TrimSpace(line) == "```":
			in = false
			out.WriteString("\n")
		case in:
			out.WriteString(line + "\n")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if in || blocks == 0 {
		t.Fatalf("%s: %d conf blocks, the last one unterminated: %v", path, blocks, in)
	}
	return out.String()
}

// startPermissionsServer starts a JetStream server configured with the
// conf blocks of deploy/permissions.md, plus an unrestricted admin user
// for the test's own checks.
func startPermissionsServer(t *testing.T) (url string, passwords map[string]string) {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte(confBlocks(t, permissionsDoc)), 0o600); err != nil {
		t.Fatal(err)
	}
	passwords = map[string]string{"admin": "admin-secret"}
	for _, r := range permissionRoles {
		passwords[r.user] = r.user + "-secret"
		t.Setenv(r.passwordEnv, passwords[r.user])
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("%s does not load into nats-server: %v", permissionsDoc, err)
	}
	for _, r := range permissionRoles {
		i := slices.IndexFunc(opts.Users, func(u *server.User) bool { return u.Username == r.user })
		if i < 0 || opts.Users[i].Permissions == nil || opts.Users[i].Permissions.Publish == nil || opts.Users[i].Permissions.Subscribe == nil {
			t.Fatalf("%s: user %s is missing or has no publish and subscribe permissions", permissionsDoc, r.user)
		}
	}
	opts.Users = append(opts.Users, &server.User{Username: "admin", Password: passwords["admin"]})
	opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
	opts.JetStream, opts.StoreDir = true, filepath.Join(dir, "jetstream")
	opts.NoLog, opts.NoSigs = true, true
	opts.MaxPayload = 8 << 20
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		t.Fatal("nats-server did not become ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns.ClientURL(), passwords
}

// roleConn is a connection as one user, recording the permissions
// violations the server reports to it.
type roleConn struct {
	user string
	nc   *nats.Conn
	js   jetstream.JetStream

	mu         sync.Mutex
	violations []string
}

func connectAs(t *testing.T, url, user, password string) *roleConn {
	t.Helper()
	r := &roleConn{user: user}
	nc, err := nats.Connect(url, nats.UserInfo(user, password), nats.Name(user), nats.MaxReconnects(-1),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				r.mu.Lock()
				r.violations = append(r.violations, err.Error())
				r.mu.Unlock()
			}
		}))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	if r.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	r.nc = nc
	return r
}

func (r *roleConn) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.violations)
}

// refused waits for the server to report a violation by this user naming subject.
func (r *roleConn) refused(t *testing.T, what, subject string) {
	t.Helper()
	want := fmt.Sprintf("%q", subject)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, v := range r.seen() {
			if strings.Contains(v, want) {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("%s was not refused to %s (%s); violations seen: %q", r.user, what, subject, r.seen())
}

// TestPermissions runs jetflow with each process connected as the NATS
// user deploy/permissions.md gives its role, on a server configured with
// that document's conf blocks. Everything works without one permissions
// violation, and each user is refused what lies outside its role.
func TestPermissions(t *testing.T) {
	url, passwords := startPermissionsServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var running []chan error
	run := func(f func(context.Context) error) {
		done := make(chan error, 1)
		running = append(running, done)
		go func() { done <- f(ctx) }()
	}

	// The dispatcher provisions everything as its own user. Work is given
	// up on after 3 deliveries, so that dead letters come quickly.
	dc := connectAs(t, url, "jetflow-dispatcher", passwords["jetflow-dispatcher"])
	metrics := prometheus.NewRegistry()
	d, err := dispatcher.New(ctx, dc.nc, dc.js, dispatcher.Options{Logger: zaptest.NewLogger(t).Named("dispatcher"),
		Metrics: telemetry.NewMetrics(metrics),
		Store:   jetstore.Config{MaxDeliver: 3, OrchestratorAckWait: 5 * time.Second, ActivityAckWait: 5 * time.Second}})
	if err != nil {
		t.Fatalf("dispatcher as jetflow-dispatcher: %v", err)
	}
	run(d.Run)

	wc := connectAs(t, url, "jetflow-worker", passwords["jetflow-worker"])
	if err := jetstore.WaitProvisioned(ctx, wc.js); err != nil {
		t.Fatal(err)
	}
	reg := worker.NewRegistry()
	must(t, samples.Register(reg))
	// An orchestrator whose activity is registered but hosted nowhere: the
	// worker hands the task back until it is dead-lettered.
	must(t, reg.AddOrchestrator("CallsElsewhere", func(ctx *replay.Context) (any, error) {
		return nil, ctx.CallActivity("Elsewhere", nil).Await(nil)
	}))
	// An activity that fails its first attempt, retried through the
	// dispatcher's delay stream.
	var attempts atomic.Int32
	must(t, reg.AddActivity("FailsFirst", func(context.Context, worker.Input) (any, error) {
		if attempts.Add(1) == 1 {
			return nil, errors.New("first attempt fails")
		}
		return "ok", nil
	}))
	must(t, reg.AddOrchestrator("Retries", func(ctx *replay.Context) (any, error) {
		var out string
		err := ctx.CallActivity("FailsFirst", nil, replay.WithRetry(messages.RetryPolicy{
			FirstInterval: 100 * time.Millisecond, BackoffCoefficient: 1, MaxAttempts: 2})).Await(&out)
		return out, err
	}))
	// An activity that fails once, without retries, so that its
	// orchestrator fails, and succeeds when the run is rewound.
	var failedOnce atomic.Bool
	must(t, reg.AddActivity("FailsOnce", func(context.Context, worker.Input) (any, error) {
		if failedOnce.CompareAndSwap(false, true) {
			return nil, errors.New("fails once")
		}
		return "rewound", nil
	}))
	must(t, reg.AddOrchestrator("RewindMe", func(ctx *replay.Context) (any, error) {
		var out string
		err := ctx.CallActivity("FailsOnce", nil).Await(&out)
		return out, err
	}))
	must(t, reg.AddOrchestrator("ContinuesOnce", func(ctx *replay.Context) (any, error) {
		var n int
		if err := ctx.GetInput(&n); err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, ctx.ContinueAsNew(n + 1)
		}
		return n, nil
	}))
	w, err := worker.New(ctx, wc.js, reg, worker.Options{Logger: zaptest.NewLogger(t).Named("worker"), DrainTimeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("worker as jetflow-worker: %v", err)
	}
	run(w.Run)
	wstore, err := jetstore.Open(ctx, wc.js)
	if err != nil {
		t.Fatal(err)
	}

	ac := connectAs(t, url, "jetflow-api", passwords["jetflow-api"])
	if err := jetstore.WaitProvisioned(ctx, ac.js); err != nil {
		t.Fatal(err)
	}
	// As cmd/api makes it, with the status cache and its watch.
	c, err := client.New(ctx, ac.nc, ac.js, client.WithStatusCache(client.DefaultStatusCacheSize, client.DefaultStatusCacheMaxAge))
	if err != nil {
		t.Fatalf("client as jetflow-api: %v", err)
	}
	hs := httptest.NewServer(api.New(c, api.Options{Logger: zaptest.NewLogger(t).Named("api")}))
	t.Cleanup(hs.Close)
	s := &stack{client: c, base: hs.URL + api.Prefix}

	nc := connectAs(t, url, "jetflow-client", passwords["jetflow-client"])
	roles := []*roleConn{dc, wc, ac, nc}

	for _, r := range []*roleConn{dc, wc, ac} {
		if err := jetstore.Ready(ctx, r.js); err != nil {
			t.Errorf("/readyz as %s: %v", r.user, err)
		}
	}
	// The test's own checks use an unrestricted user.
	admin := connectAs(t, url, "admin", passwords["admin"])
	// Stop the dispatcher and the worker before their connections close.
	t.Cleanup(func() {
		cancel()
		for _, done := range running {
			if err := <-done; err != nil {
				t.Errorf("component stopped with error: %v", err)
			}
		}
	})
	astore, err := jetstore.Open(ctx, admin.js)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "worker registration", func() bool {
		ok, err := astore.Registered(ctx, jetstore.KindOrchestrator, "E1_HelloSequence")
		return err == nil && ok
	})
	t.Cleanup(func() {
		if t.Failed() {
			for _, r := range roles {
				t.Logf("%s: violations %q", r.user, r.seen())
			}
		}
	})

	t.Run("api", func(t *testing.T) {
		// E1_HelloSequence over HTTP, followed by a status watch.
		id := s.start(t, "E1_HelloSequence", "perm-hello", "")
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		defer wcancel()
		updates, err := c.Watch(wctx, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		var last *messages.Status
		for u := range updates {
			last = u.Status
		}
		if last == nil || last.RuntimeStatus != messages.StatusCompleted {
			t.Fatalf("watch ended at %+v, want Completed", last)
		}
		st := s.await(t, id, "Completed", func(st statusBody) bool { return st.RuntimeStatus == "Completed" })
		if !jsonEq(t, st.CustomStatus, `"London"`) || !jsonEq(t, st.Output, `["Hello Tokyo!","Hello Seattle!","Hello London!"]`) {
			t.Errorf("E1_HelloSequence: custom status %s, output %s", st.CustomStatus, st.Output)
		}
		r := do(t, http.MethodGet, s.base+"instances/"+id+"?showHistory=true", "", nil)
		var withHistory struct {
			HistoryEvents []map[string]any `json:"historyEvents"`
		}
		r.json(t, &withHistory)
		if r.code != http.StatusOK || len(withHistory.HistoryEvents) == 0 {
			t.Errorf("showHistory: %d, %d events", r.code, len(withHistory.HistoryEvents))
		}

		// CityRecommender and its raised event.
		if _, err := c.Start(ctx, "CityRecommender", "perm-city", []byte("2")); err != nil {
			t.Fatal(err)
		}
		s.await(t, "perm-city", "the recommendation", func(st statusBody) bool { return st.RuntimeStatus == "Running" && string(st.CustomStatus) != "null" })
		if err := c.RaiseEvent(ctx, "perm-city", "CitySelected", []byte(`"London"`)); err != nil {
			t.Fatal(err)
		}
		st = s.await(t, "perm-city", "Completed", func(st statusBody) bool { return st.RuntimeStatus == "Completed" })
		if !jsonEq(t, st.Output, `"London"`) {
			t.Errorf("CityRecommender output %s", st.Output)
		}

		// A durable timer, fired by the dispatcher.
		if _, err := c.Start(ctx, "SetStatusTest", "perm-timer", []byte("0.2")); err != nil {
			t.Fatal(err)
		}
		st = s.await(t, "perm-timer", "Completed", func(st statusBody) bool { return st.RuntimeStatus == "Completed" })
		if !jsonEq(t, st.Output, `"did B"`) {
			t.Errorf("SetStatusTest output %s", st.Output)
		}

		// A list, over HTTP and through the client.
		r = do(t, http.MethodGet, s.base+"instances?runtimeStatus=Completed&top=2", "", nil)
		var page []statusBody
		r.json(t, &page)
		if r.code != http.StatusOK || len(page) != 2 || r.header.Get("x-ms-continuation-token") == "" {
			t.Errorf("list: %d, %d instances, token %q", r.code, len(page), r.header.Get("x-ms-continuation-token"))
		}
		listed, _, err := c.List(ctx, client.ListFilter{Statuses: []messages.RuntimeStatus{messages.StatusCompleted}}, 100, "")
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, st := range listed {
			ids = append(ids, st.InstanceID)
		}
		slices.Sort(ids)
		if !slices.Equal(ids, []string{"perm-city", "perm-hello", "perm-timer"}) {
			t.Errorf("listed Completed: %v", ids)
		}

		// A Failed run, rewound (it fails again: its input is wrong). Its ID
		// is then reused, the new run suspended, resumed and terminated, and
		// purged through the dispatcher: the index key moves through every
		// status but ContinuedAsNew.
		if _, err := c.Start(ctx, "CityRecommender", "perm-bad", []byte("4")); err != nil {
			t.Fatal(err)
		}
		bad := waitStatus(t, c, "perm-bad", func(st *messages.Status) bool { return st.RuntimeStatus == messages.StatusFailed })
		if err := c.Rewind(ctx, "perm-bad", "try again"); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, c, "perm-bad", func(st *messages.Status) bool {
			return st.ExecutionID == bad.ExecutionID+"_r1" && st.RuntimeStatus == messages.StatusFailed
		})
		if _, err := c.Start(ctx, "CityRecommender", "perm-bad", []byte("1")); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, c, "perm-bad", func(st *messages.Status) bool { return st.RuntimeStatus == messages.StatusRunning })
		for _, step := range []struct {
			do   func(context.Context, string, string) error
			want messages.RuntimeStatus
		}{{c.Suspend, messages.StatusSuspended}, {c.Resume, messages.StatusRunning}, {c.Terminate, messages.StatusTerminated}} {
			if err := step.do(ctx, "perm-bad", "testing"); err != nil {
				t.Fatal(err)
			}
			waitStatus(t, c, "perm-bad", func(st *messages.Status) bool { return st.RuntimeStatus == step.want })
		}
		// The ID is reused once more, over the Terminated record.
		if _, err := c.Start(ctx, "CityRecommender", "perm-bad", []byte("1")); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, c, "perm-bad", func(st *messages.Status) bool { return st.RuntimeStatus == messages.StatusRunning })
		if err := c.Terminate(ctx, "perm-bad", "testing"); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, c, "perm-bad", func(st *messages.Status) bool { return st.RuntimeStatus == messages.StatusTerminated })
		if err := c.Purge(ctx, "perm-bad"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Status(ctx, "perm-bad"); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("status after purge: %v, want not found", err)
		}

		// An activity retry, published by the dispatcher when due.
		if _, err := c.Start(ctx, "Retries", "perm-retry", nil); err != nil {
			t.Fatal(err)
		}
		st2 := waitStatus(t, c, "perm-retry", func(st *messages.Status) bool { return st.RuntimeStatus.Terminal() })
		if st2.RuntimeStatus != messages.StatusCompleted || attempts.Load() != 2 {
			t.Errorf("Retries: %s %s after %d attempts", st2.RuntimeStatus, st2.Output, attempts.Load())
		}

		// A rewind that gets further: the worker moves the record from
		// Failed to Running, then to Completed.
		if _, err := c.Start(ctx, "RewindMe", "perm-rewind", nil); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, c, "perm-rewind", func(st *messages.Status) bool { return st.RuntimeStatus == messages.StatusFailed })
		if err := c.Rewind(ctx, "perm-rewind", "once more"); err != nil {
			t.Fatal(err)
		}
		st2 = waitStatus(t, c, "perm-rewind", func(st *messages.Status) bool { return st.RuntimeStatus == messages.StatusCompleted })
		if string(st2.Output) != `"rewound"` {
			t.Errorf("RewindMe after a rewind: output %s", st2.Output)
		}

		// Continue-as-new.
		if _, err := c.Start(ctx, "ContinuesOnce", "perm-again", []byte("0")); err != nil {
			t.Fatal(err)
		}
		st2 = waitStatus(t, c, "perm-again", func(st *messages.Status) bool { return st.RuntimeStatus.Terminal() })
		if st2.RuntimeStatus != messages.StatusCompleted || string(st2.Output) != "1" {
			t.Errorf("ContinuesOnce: %s %s", st2.RuntimeStatus, st2.Output)
		}

		// A restart under the same ID: the dispatcher replaces a Completed record.
		first, err := c.Status(ctx, "perm-hello")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Restart(ctx, "perm-hello", false); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, c, "perm-hello", func(st *messages.Status) bool {
			return st.ExecutionID != first.ExecutionID && st.RuntimeStatus == messages.StatusCompleted
		})

		// A list of every status.
		all, _, err := c.List(ctx, client.ListFilter{}, 1000, "")
		if err != nil || len(all) != 6 {
			t.Errorf("list of everything: %d instances, %v; want 6", len(all), err)
		}

		// Purge by filter, done by the api on the buckets: one instance in
		// each finished status.
		if _, err := c.Start(ctx, "CityRecommender", "perm-city-failed", []byte("4")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Start(ctx, "CityRecommender", "perm-city-terminated", []byte("1")); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, c, "perm-city-terminated", func(st *messages.Status) bool { return st.RuntimeStatus == messages.StatusRunning })
		if err := c.Terminate(ctx, "perm-city-terminated", "testing"); err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"perm-city-failed", "perm-city-terminated"} {
			waitStatus(t, c, id, func(st *messages.Status) bool { return st.RuntimeStatus.Terminal() })
		}
		n, err := c.PurgeInstances(ctx, client.ListFilter{IDPrefix: "perm-city"})
		if err != nil || n != 3 {
			t.Errorf("purge by filter: %d, %v; want 3", n, err)
		}
	})

	t.Run("dead letters", func(t *testing.T) {
		// An orchestrator registered once but hosted by no running worker:
		// its start fails on every delivery, and the dispatcher fails the run.
		must(t, wstore.Register(ctx, jetstore.KindOrchestrator, "Ghost"))
		if _, err := c.Start(ctx, "Ghost", "perm-ghost", nil); err != nil {
			t.Fatal(err)
		}
		st := waitStatus(t, c, "perm-ghost", func(st *messages.Status) bool { return st.RuntimeStatus.Terminal() })
		if st.RuntimeStatus != messages.StatusFailed || st.Failure == nil || st.Failure.Type != messages.FailurePoison {
			t.Errorf("Ghost: %s %+v, want Failed with %s", st.RuntimeStatus, st.Failure, messages.FailurePoison)
		}
		// An activity registered but hosted nowhere: handed back, then
		// dead-lettered, and its orchestrator gets a TaskFailed.
		must(t, wstore.Register(ctx, jetstore.KindActivity, "Elsewhere"))
		if _, err := c.Start(ctx, "CallsElsewhere", "perm-elsewhere", nil); err != nil {
			t.Fatal(err)
		}
		st = waitStatus(t, c, "perm-elsewhere", func(st *messages.Status) bool { return st.RuntimeStatus.Terminal() })
		if st.RuntimeStatus != messages.StatusFailed || !strings.Contains(string(st.Output), "3 deliveries") {
			t.Errorf("CallsElsewhere: %s %s, want Failed after 3 deliveries", st.RuntimeStatus, st.Output)
		}
		// Malformed work, dead-lettered by the worker.
		if err := wc.nc.Publish(messages.OrchestratorSubject("perm-garbage"), []byte("not a work item")); err != nil {
			t.Fatal(err)
		}
		dlq, err := admin.js.Stream(ctx, messages.DeadLetterStream)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, "three dead letters", func() bool {
			info, err := dlq.Info(ctx)
			return err == nil && info.State.Msgs >= 3
		})
	})

	t.Run("native client", func(t *testing.T) {
		cmd, err := messages.Encode(&messages.Command{V: messages.SchemaVersion, Kind: messages.CmdStart, InstanceID: "perm-native", Name: "E1_HelloSequence"})
		if err != nil {
			t.Fatal(err)
		}
		m, err := nc.nc.Request(messages.CommandSubject(messages.CmdStart), cmd, 15*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if r, err := messages.DecodeReply(m.Data); err != nil || r.Code != messages.CodeOK {
			t.Fatalf("start reply %+v, %v", r, err)
		}
		kv, err := nc.js.KeyValue(ctx, messages.StatusBucket)
		if err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		defer wcancel()
		watch, err := kv.Watch(wctx, messages.Token("perm-native"))
		if err != nil {
			t.Fatal(err)
		}
		var st *messages.Status
		for st == nil || !st.RuntimeStatus.Terminal() {
			e, ok := <-watch.Updates()
			if !ok || wctx.Err() != nil {
				t.Fatalf("watch ended before completion: %+v", st)
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			if st, err = messages.DecodeStatus(e.Value()); err != nil {
				t.Fatal(err)
			}
		}
		_ = watch.Stop()
		if st.RuntimeStatus != messages.StatusCompleted {
			t.Fatalf("perm-native: %s", st.RuntimeStatus)
		}
		if _, err := kv.Get(ctx, messages.Token("perm-native")); err != nil {
			t.Errorf("get status: %v", err)
		}
		hist, err := nc.js.KeyValue(ctx, messages.HistoryBucket)
		if err != nil {
			t.Fatal(err)
		}
		prefix := messages.Token("perm-native") + "." + messages.Token(st.ExecutionID) + "."
		if _, err := hist.Get(ctx, prefix+"1"); err != nil {
			t.Errorf("get episode 1: %v", err)
		}
		hw, err := hist.Watch(wctx, prefix+"*")
		if err != nil {
			t.Fatal(err)
		}
		episodes := 0
		for e := range hw.Updates() {
			if e == nil {
				break
			}
			episodes++
		}
		_ = hw.Stop()
		if uint64(episodes) != st.Episode {
			t.Errorf("history watch: %d episodes, the record says %d", episodes, st.Episode)
		}

		// Every other command reaches a dispatcher and is answered.
		for _, c := range []struct {
			cmd  messages.Command
			want messages.ErrorCode
		}{
			{messages.Command{Kind: messages.CmdRaiseEvent, Name: "Ping"}, messages.CodeGone},
			{messages.Command{Kind: messages.CmdTerminate}, messages.CodeGone},
			{messages.Command{Kind: messages.CmdSuspend}, messages.CodeGone},
			{messages.Command{Kind: messages.CmdResume}, messages.CodeGone},
			{messages.Command{Kind: messages.CmdRewind}, messages.CodeBadRequest},
			{messages.Command{Kind: messages.CmdRestart, NewID: true}, messages.CodeOK},
			{messages.Command{Kind: messages.CmdPurge}, messages.CodeOK},
		} {
			c.cmd.V, c.cmd.InstanceID = messages.SchemaVersion, "perm-native"
			b, err := messages.Encode(&c.cmd)
			if err != nil {
				t.Fatal(err)
			}
			m, err := nc.nc.Request(messages.CommandSubject(c.cmd.Kind), b, 15*time.Second)
			if err != nil {
				t.Fatalf("%s: %v", c.cmd.Kind, err)
			}
			if r, err := messages.DecodeReply(m.Data); err != nil || r.Code != c.want {
				t.Errorf("%s: reply %+v, %v; want code %d", c.cmd.Kind, r, err, c.want)
			}
		}
	})

	t.Run("reindex", func(t *testing.T) {
		// A dispatcher that finds an index bucket missing (as after an
		// upgrade from a version without the index) indexes every record.
		for _, id := range []string{"perm-running", "perm-suspended", "perm-terminated"} {
			if _, err := c.Start(ctx, "CityRecommender", id, []byte("1")); err != nil {
				t.Fatal(err)
			}
			waitStatus(t, c, id, func(st *messages.Status) bool { return st.RuntimeStatus == messages.StatusRunning })
		}
		must(t, c.Suspend(ctx, "perm-suspended", "testing"))
		must(t, c.Terminate(ctx, "perm-terminated", "testing"))
		waitStatus(t, c, "perm-suspended", func(st *messages.Status) bool { return st.RuntimeStatus == messages.StatusSuspended })
		waitStatus(t, c, "perm-terminated", func(st *messages.Status) bool { return st.RuntimeStatus == messages.StatusTerminated })
		before, _, err := c.List(ctx, client.ListFilter{IDPrefix: "perm-"}, 1000, "")
		if err != nil {
			t.Fatal(err)
		}
		must(t, admin.js.DeleteKeyValue(ctx, jetstore.IndexBucket(messages.StatusRunning)))
		again := connectAs(t, url, "jetflow-dispatcher", passwords["jetflow-dispatcher"])
		roles = append(roles, again)
		if _, err := dispatcher.New(ctx, again.nc, again.js, dispatcher.Options{Logger: zaptest.NewLogger(t).Named("dispatcher-2"),
			Store: jetstore.Config{MaxDeliver: 3, OrchestratorAckWait: 5 * time.Second, ActivityAckWait: 5 * time.Second}}); err != nil {
			t.Fatalf("second dispatcher: %v", err)
		}
		after, _, err := c.List(ctx, client.ListFilter{IDPrefix: "perm-"}, 1000, "")
		if err != nil || len(after) != len(before) {
			t.Errorf("after reindexing, %d instances listed (%v); before, %d", len(after), err, len(before))
		}
		running, _, err := c.List(ctx, client.ListFilter{Statuses: []messages.RuntimeStatus{messages.StatusRunning}}, 10, "")
		if err != nil || len(running) != 1 || running[0].InstanceID != "perm-running" {
			t.Errorf("Running after reindexing: %v, %v", running, err)
		}
	})

	t.Run("dispatcher metrics", func(t *testing.T) {
		// A scrape reads the backlog of every consumer and the size of the
		// work and dead-letter streams.
		families, err := metrics.Gather()
		if err != nil {
			t.Fatal(err)
		}
		series := map[string]int{}
		for _, f := range families {
			series[f.GetName()] = len(f.GetMetric())
		}
		if series[telemetry.MetricConsumerPending] != len(telemetry.Consumers) || series[telemetry.MetricStreamMessages] != len(telemetry.Streams) {
			t.Errorf("backlog metrics: %d consumers, %d streams; want %d and %d", series[telemetry.MetricConsumerPending],
				series[telemetry.MetricStreamMessages], len(telemetry.Consumers), len(telemetry.Streams))
		}
	})

	// Not one violation while jetflow did all of that.
	for _, r := range roles {
		for _, v := range r.seen() {
			t.Errorf("%s: %s", r.user, v)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	t.Run("refused", func(t *testing.T) {
		publish := func(r *roleConn, subject string) func() {
			return func() { _ = r.nc.Publish(subject, []byte("x")); _ = r.nc.Flush() }
		}
		// A JetStream API request the server refuses is never answered.
		request := func(r *roleConn, subject string) func() {
			return func() {
				if _, err := r.nc.Request(subject, nil, 500*time.Millisecond); err == nil {
					t.Errorf("%s: request on %s was answered", r.user, subject)
				}
			}
		}
		subscribe := func(r *roleConn, subject, queue string) func() {
			return func() {
				if _, err := r.nc.QueueSubscribe(subject, queue, func(*nats.Msg) {}); err != nil {
					t.Errorf("%s: subscribe %s: %v", r.user, subject, err)
				}
				_ = r.nc.Flush()
			}
		}
		for _, c := range []struct {
			r       *roleConn
			what    string
			subject string
			do      func()
		}{
			{wc, "send a command", "jetflow.cmd.start", publish(wc, "jetflow.cmd.start")},
			{wc, "serve commands", "jetflow.cmd.*", subscribe(wc, "jetflow.cmd.*", dispatcher.QueueGroup)},
			{wc, "purge history", "$JS.API.STREAM.PURGE.KV_jetflow-history", request(wc, "$JS.API.STREAM.PURGE.KV_jetflow-history")},
			{wc, "create a stream", "$JS.API.STREAM.CREATE.X", request(wc, "$JS.API.STREAM.CREATE.X")},
			{ac, "publish work", "jetflow.orch.x", publish(ac, "jetflow.orch.x")},
			{ac, "write history", "$KV.jetflow-history.x.y.1", publish(ac, "$KV.jetflow-history.x.y.1")},
			{ac, "pull orchestrator work", "$JS.API.CONSUMER.MSG.NEXT.JETFLOW_ORCH.jetflow-orchestrators",
				request(ac, "$JS.API.CONSUMER.MSG.NEXT.JETFLOW_ORCH.jetflow-orchestrators")},
			{ac, "listen to commands", "jetflow.cmd.*", subscribe(ac, "jetflow.cmd.*", "")},
			{dc, "write history", "$KV.jetflow-history.x.y.1", publish(dc, "$KV.jetflow-history.x.y.1")},
			{dc, "register a name", "$KV.jetflow-registry.orchestrator.x", publish(dc, "$KV.jetflow-registry.orchestrator.x")},
			{dc, "pull orchestrator work", "$JS.API.CONSUMER.MSG.NEXT.JETFLOW_ORCH.jetflow-orchestrators",
				request(dc, "$JS.API.CONSUMER.MSG.NEXT.JETFLOW_ORCH.jetflow-orchestrators")},
			{dc, "serve commands outside its queue group", "jetflow.cmd.*", subscribe(dc, "jetflow.cmd.*", "")},
			{nc, "write a status record", "$KV.jetflow-status.x", publish(nc, "$KV.jetflow-status.x")},
			{nc, "publish work", "jetflow.act.x", publish(nc, "jetflow.act.x")},
			{nc, "read dead letters", "$JS.API.STREAM.INFO.JETFLOW_DLQ", request(nc, "$JS.API.STREAM.INFO.JETFLOW_DLQ")},
			{nc, "list instances", "$JS.API.STREAM.INFO.KV_jetflow-index-Running", request(nc, "$JS.API.STREAM.INFO.KV_jetflow-index-Running")},
			{nc, "watch all work", "jetflow.>", subscribe(nc, "jetflow.>", "")},
		} {
			c.do()
			c.r.refused(t, c.what, c.subject)
		}
	})
}

// waitStatus watches an instance's status record until cond holds.
func waitStatus(t *testing.T, c *client.Client, id string, cond func(*messages.Status) bool) *messages.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		u, err := c.StatusRevision(ctx, id)
		if err == nil && cond(u.Status) {
			return u.Status
		}
		if err != nil && !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("%s: %v", id, err)
		}
		u, err = c.WaitForChange(ctx, id, u.Revision)
		if ctx.Err() != nil {
			b, _ := json.Marshal(u.Status)
			t.Fatalf("%s: timed out; last record %s", id, b)
		}
		if err != nil && !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("%s: %v", id, err)
		}
		if errors.Is(err, client.ErrNotFound) {
			time.Sleep(20 * time.Millisecond)
		}
	}
}
