// Package httpapi is the conformance suite of jetflow's Durable Functions
// HTTP API: it walks every route and status code on a running devserver.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/jetflow/jetflow/pkg/api"
	"github.com/jetflow/jetflow/pkg/devserver"
	"github.com/jetflow/jetflow/pkg/samples"
	"github.com/jetflow/jetflow/pkg/worker"
)

type dev struct {
	host string // http://127.0.0.1:port
	base string // host + api.Prefix
}

// startDev runs a devserver on free ports until the test ends.
func startDev(t *testing.T, o api.Options) *dev {
	t.Helper()
	reg := worker.NewRegistry()
	if err := samples.Register(reg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- devserver.Run(ctx, devserver.Config{
			NATS:     devserver.NATSConfig{Dir: t.TempDir(), Addr: "127.0.0.1:0"},
			HTTPAddr: "127.0.0.1:0",
			Registry: reg,
			API:      o,
			Logger:   zaptest.NewLogger(t),
			Ready:    func(_, httpURL string) { ready <- httpURL },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("devserver: %v", err)
		}
	})
	select {
	case u := <-ready:
		d := &dev{host: u, base: u + api.Prefix}
		// The worker registers its names just after start.
		waitFor(t, "the samples to be registered", func() bool {
			r := d.do(t, "POST", "orchestrators/SetStatusTest/registered-probe"+codeParam(o), "application/json", "0")
			return r.code == http.StatusAccepted
		})
		return d
	case err := <-done:
		t.Fatalf("devserver: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("devserver not ready")
	}
	return nil
}

func codeParam(o api.Options) string {
	if len(o.APIKeys) > 0 {
		return "?code=" + o.APIKeys[0]
	}
	return ""
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
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
		t.Fatalf("decode %q: %v", r.body, err)
	}
}

// do sends a request; path is relative to the API prefix unless it starts with http.
func (d *dev) do(t *testing.T, method, path, contentType, body string, header ...string) response {
	t.Helper()
	url := path
	if !strings.HasPrefix(path, "http") {
		url = d.base + path
	}
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return response{code: res.StatusCode, header: res.Header, body: b}
}

// expect checks a response's code; for errors, also the {"message"} body.
func expect(t *testing.T, what string, r response, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("%s: %d %s, want %d", what, r.code, r.body, code)
	}
	if code >= 400 && code != http.StatusInternalServerError {
		var e struct {
			Message string `json:"message"`
		}
		if err := json.Unmarshal(r.body, &e); err != nil || e.Message == "" {
			t.Fatalf("%s: error body %q is not {\"message\": ...}", what, r.body)
		}
	}
}

type statusBody struct {
	Name            string            `json:"name"`
	InstanceID      string            `json:"instanceId"`
	RuntimeStatus   string            `json:"runtimeStatus"`
	Input           json.RawMessage   `json:"input"`
	CustomStatus    json.RawMessage   `json:"customStatus"`
	Output          json.RawMessage   `json:"output"`
	CreatedTime     string            `json:"createdTime"`
	LastUpdatedTime string            `json:"lastUpdatedTime"`
	HistoryEvents   []json.RawMessage `json:"historyEvents"`
}

func (d *dev) start(t *testing.T, name, id, input string) map[string]string {
	t.Helper()
	path := "orchestrators/" + name
	if id != "" {
		path += "/" + id
	}
	r := d.do(t, "POST", path, "application/json", input)
	expect(t, "start "+name, r, http.StatusAccepted)
	var cs map[string]string
	r.json(t, &cs)
	return cs
}

func (d *dev) status(t *testing.T, id string) (statusBody, response) {
	t.Helper()
	r := d.do(t, "GET", "instances/"+id, "", "")
	var st statusBody
	if r.code == http.StatusOK || r.code == http.StatusAccepted {
		r.json(t, &st)
	}
	return st, r
}

func (d *dev) await(t *testing.T, id, runtimeStatus string) statusBody {
	t.Helper()
	var st statusBody
	waitFor(t, id+" to be "+runtimeStatus, func() bool {
		st, _ = d.status(t, id)
		return st.RuntimeStatus == runtimeStatus
	})
	return st
}

func jsonEq(a []byte, b string) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return bytes.Equal(ja, jb)
}
