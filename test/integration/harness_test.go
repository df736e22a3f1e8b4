// Package integration runs jetflow end to end against real NATS servers:
// an embedded server for the fast tier, and built binaries run as separate
// processes.
package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/jetflow/jetflow/internal/natstest"
	"github.com/jetflow/jetflow/pkg/api"
	"github.com/jetflow/jetflow/pkg/client"
	"github.com/jetflow/jetflow/pkg/dispatcher"
	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/samples"
	"github.com/jetflow/jetflow/pkg/worker"
)

// stack is a NATS server with a dispatcher, a worker and the API, each on
// its own connection, as they would be as separate processes.
type stack struct {
	srv    *natstest.Server
	store  *jetstore.Store
	client *client.Client
	base   string // http://host:port/runtime/webhooks/durabletask/
}

func startStack(t *testing.T) *stack {
	t.Helper()
	return startStackWith(t, stackOptions{})
}

type stackOptions struct {
	// noWorker leaves the worker out: the sample names are registered,
	// so starts are accepted, but nothing runs until startWorker.
	noWorker bool
	api      api.Options
	// logs, if set, receives the dispatcher's and the worker's log entries.
	logs *zap.Logger
}

func startWorker(t *testing.T, srv *natstest.Server) {
	t.Helper()
	startWorkerLogging(t, srv, zaptest.NewLogger(t).Named("worker"))
}

func startWorkerLogging(t *testing.T, srv *natstest.Server, log *zap.Logger) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	_, wjs := natstest.Connect(t, srv)
	reg := worker.NewRegistry()
	if err := samples.Register(reg); err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(ctx, wjs, reg, worker.Options{Logger: log})
	if err != nil {
		t.Fatalf("worker: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker stopped with error: %v", err)
		}
	})
}

func startStackWith(t *testing.T, o stackOptions) *stack {
	t.Helper()
	srv := natstest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	t.Cleanup(func() {
		cancel()
		for range 1 {
			if err := <-done; err != nil {
				t.Errorf("component stopped with error: %v", err)
			}
		}
	})

	dnc, djs := natstest.Connect(t, srv)
	dlog, wlog := zaptest.NewLogger(t).Named("dispatcher"), zaptest.NewLogger(t).Named("worker")
	if o.logs != nil {
		dlog, wlog = o.logs, o.logs
	}
	d, err := dispatcher.New(ctx, dnc, djs, dispatcher.Options{Logger: dlog})
	if err != nil {
		t.Fatalf("dispatcher: %v", err)
	}
	go func() { done <- d.Run(ctx) }()

	anc, ajs := natstest.Connect(t, srv)
	c, err := client.New(ctx, anc, ajs)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	if o.noWorker {
		for _, name := range []string{"E1_HelloSequence", "CityRecommender", "ReserveTicket", "SetStatusTest"} {
			if err := c.Store().Register(ctx, jetstore.KindOrchestrator, name); err != nil {
				t.Fatal(err)
			}
		}
	} else {
		startWorkerLogging(t, srv, wlog)
	}
	o.api.Logger = zaptest.NewLogger(t).Named("api")
	hs := httptest.NewServer(api.New(c, o.api))
	t.Cleanup(hs.Close)

	// The worker registers its names at start; starts are refused until then.
	waitFor(t, 10*time.Second, "worker registration", func() bool {
		ok, err := c.Store().Registered(ctx, jetstore.KindOrchestrator, "E1_HelloSequence")
		return err == nil && ok
	})
	return &stack{srv: srv, store: c.Store(), client: c, base: hs.URL + api.Prefix}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type response struct {
	code   int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func do(t *testing.T, method, url, contentType string, body []byte) response {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{code: res.StatusCode, header: res.Header, body: b}
}

// statusBody is the Durable Functions status shape, with raw JSON fields.
type statusBody struct {
	Name            string          `json:"name"`
	InstanceID      string          `json:"instanceId"`
	RuntimeStatus   string          `json:"runtimeStatus"`
	Input           json.RawMessage `json:"input"`
	CustomStatus    json.RawMessage `json:"customStatus"`
	Output          json.RawMessage `json:"output"`
	CreatedTime     string          `json:"createdTime"`
	LastUpdatedTime string          `json:"lastUpdatedTime"`
}

// start starts an orchestration over HTTP and checks the 202 answer.
func (s *stack) start(t *testing.T, name, id string, input string) string {
	t.Helper()
	url := s.base + "orchestrators/" + name
	if id != "" {
		url += "/" + id
	}
	r := do(t, http.MethodPost, url, "application/json", []byte(input))
	if r.code != http.StatusAccepted {
		t.Fatalf("start %s: %d %s", name, r.code, r.body)
	}
	var cs map[string]string
	r.json(t, &cs)
	for _, k := range []string{"id", "statusQueryGetUri", "sendEventPostUri", "terminatePostUri", "purgeHistoryDeleteUri", "restartPostUri", "suspendPostUri", "resumePostUri"} {
		if cs[k] == "" {
			t.Errorf("check-status body has no %s: %s", k, r.body)
		}
	}
	if id != "" && cs["id"] != id {
		t.Errorf("id = %q, want %q", cs["id"], id)
	}
	if loc := r.header.Get("Location"); loc != cs["statusQueryGetUri"] {
		t.Errorf("Location = %q, want statusQueryGetUri %q", loc, cs["statusQueryGetUri"])
	}
	if ra := r.header.Get("Retry-After"); ra != "10" {
		t.Errorf("Retry-After = %q, want 10", ra)
	}
	return cs["id"]
}

// status GETs an instance's status and checks the code against the runtime status.
func (s *stack) status(t *testing.T, id string) statusBody {
	t.Helper()
	r := do(t, http.MethodGet, s.base+"instances/"+id, "", nil)
	var st statusBody
	r.json(t, &st)
	switch st.RuntimeStatus {
	case "Completed", "Failed", "Terminated":
		if r.code != http.StatusOK {
			t.Fatalf("GET %s while %s: code %d, want 200", id, st.RuntimeStatus, r.code)
		}
	case "Pending", "Running", "Suspended", "ContinuedAsNew":
		if r.code != http.StatusAccepted || r.header.Get("Location") == "" || r.header.Get("Retry-After") != "5" {
			t.Fatalf("GET %s while %s: code %d Location %q Retry-After %q, want 202 with both", id, st.RuntimeStatus, r.code, r.header.Get("Location"), r.header.Get("Retry-After"))
		}
	default:
		t.Fatalf("GET %s: code %d, runtimeStatus %q: %s", id, r.code, st.RuntimeStatus, r.body)
	}
	for _, ts := range []string{st.CreatedTime, st.LastUpdatedTime} {
		if p, err := time.Parse(time.RFC3339, ts); err != nil || p.Location() != time.UTC {
			t.Errorf("time %q is not RFC 3339 UTC", ts)
		}
	}
	return st
}

// await polls status until cond holds, returning the last body.
func (s *stack) await(t *testing.T, id, what string, cond func(statusBody) bool) statusBody {
	t.Helper()
	var st statusBody
	waitFor(t, 20*time.Second, id+": "+what, func() bool {
		st = s.status(t, id)
		return cond(st)
	})
	return st
}

func jsonEq(t *testing.T, got json.RawMessage, want string) bool {
	t.Helper()
	var a, b any
	if err := json.Unmarshal(got, &a); err != nil {
		t.Fatalf("invalid JSON %q: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &b); err != nil {
		t.Fatalf("invalid JSON %q: %v", want, err)
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}
