package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetflow/jetflow/pkg/messages"
)

// TestOpenAPIMatchesRoutes: the document describes exactly the routes the
// server registers, method by method.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(OpenAPI, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	var documented, registered []string
	for path, ops := range doc.Paths {
		for method := range ops {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	for _, r := range New(nil, Options{}).Routes() {
		registered = append(registered, r.Method+" "+Prefix+strings.ReplaceAll(r.Pattern, "{$}", ""))
	}
	slices.Sort(documented)
	slices.Sort(registered)
	if !slices.Equal(documented, registered) {
		t.Fatalf("openapi.json documents\n%s\nbut the server registers\n%s", strings.Join(documented, "\n"), strings.Join(registered, "\n"))
	}
}

func TestHistoryEventsShape(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	t1 := t0.Add(1250 * time.Millisecond)
	h := []messages.Event{
		{Type: messages.EventOrchestratorStarted, Timestamp: t0},
		{Type: messages.EventExecutionStarted, Timestamp: t0, Name: "E1_HelloSequence", Input: []byte(`null`)},
		{Type: messages.EventTaskScheduled, Timestamp: t0, TaskID: 0, Name: "E1_SayHello", Input: []byte(`"Tokyo"`)},
		{Type: messages.EventOrchestratorCompleted, Timestamp: t0},
		{Type: messages.EventOrchestratorStarted, Timestamp: t1},
		{Type: messages.EventTaskCompleted, Timestamp: t1, TaskID: 0, Result: []byte(`"Hello Tokyo!"`)},
		{Type: messages.EventTaskScheduled, Timestamp: t1, TaskID: 1, Name: "E1_SayHello"},
		{Type: messages.EventOrchestratorCompleted, Timestamp: t1},
		{Type: messages.EventTaskFailed, Timestamp: t1, TaskID: 1, Failure: &messages.Failure{Message: "boom"}},
		{Type: messages.EventExecutionCompleted, Timestamp: t1, Status: messages.StatusCompleted, Result: []byte(`["x"]`)},
	}
	for _, showOutput := range []bool{false, true} {
		got := HistoryEvents(h, showOutput)
		types := []string{}
		for _, e := range got {
			types = append(types, e.EventType)
			if e.Timestamp == "" {
				t.Errorf("%s has no Timestamp", e.EventType)
			}
			if !showOutput && e.Result != nil {
				t.Errorf("%s has a Result without showHistoryOutput", e.EventType)
			}
		}
		want := []string{"ExecutionStarted", "TaskCompleted", "TaskFailed", "ExecutionCompleted"}
		if !slices.Equal(types, want) {
			t.Fatalf("event types %v, want %v", types, want)
		}
		if got[0].FunctionName != "E1_HelloSequence" {
			t.Errorf("ExecutionStarted FunctionName %q", got[0].FunctionName)
		}
		tc := got[1]
		if tc.FunctionName != "E1_SayHello" || tc.ScheduledTime != "2026-01-02T03:04:05Z" || tc.Timestamp != "2026-01-02T03:04:06.25Z" {
			t.Errorf("TaskCompleted not folded: %+v", tc)
		}
		if showOutput && string(tc.Result) != `"Hello Tokyo!"` {
			t.Errorf("TaskCompleted Result %s", tc.Result)
		}
		if got[2].Reason != "boom" || got[2].FunctionName != "E1_SayHello" {
			t.Errorf("TaskFailed: %+v", got[2])
		}
		if got[3].OrchestrationStatus != "Completed" {
			t.Errorf("ExecutionCompleted OrchestrationStatus %q", got[3].OrchestrationStatus)
		}
		b, _ := json.Marshal(got[1])
		if !strings.Contains(string(b), `"EventType":"TaskCompleted"`) || !strings.Contains(string(b), `"FunctionName"`) {
			t.Errorf("keys are not PascalCase: %s", b)
		}
	}
}

func TestQueryValueAcceptsUnescapedText(t *testing.T) {
	cases := map[string]string{
		"reason=plain":                 "plain",
		"reason=with%20space":          "with space",
		"reason=100%+sure&taskHub=x":   "100% sure",
		"reason=a+b%2Bc%":              "a b+c%",
		"taskHub=x&reason=50%off":      "50%off",
		"reason=%zz&code=1":            "%zz",
		"code=1&reason=a%2Fb&extra=%%": "a/b",
	}
	for raw, want := range cases {
		r := httptest.NewRequest(http.MethodPost, "/x?"+raw, nil)
		if got := queryValue(r, "reason"); got != want {
			t.Errorf("%s: reason %q, want %q", raw, got, want)
		}
	}
}

// TestAuthAndCORS checks the checks that happen before any route runs.
func TestAuthAndCORS(t *testing.T) {
	s := New(nil, Options{APIKeys: []string{"k1", "k2"}, CORSOrigins: []string{"https://ok.example"}})
	cases := []struct {
		name   string
		url    string
		header map[string]string
		want   int
	}{
		{"no key", Prefix + "nothing", nil, 401},
		{"wrong key", Prefix + "nothing?code=nope", nil, 401},
		{"empty key", Prefix + "nothing?code=", nil, 401},
		{"key in query", Prefix + "nothing?code=k2", nil, 404},
		{"key in header", Prefix + "nothing", map[string]string{"x-functions-key": "k1"}, 404},
		{"openapi needs no key", "/openapi.json", nil, 200},
	}
	for _, c := range cases {
		r := httptest.NewRequest(http.MethodGet, c.url, nil)
		for k, v := range c.header {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("%s: %d, want %d", c.name, w.Code, c.want)
		}
	}
	pre := httptest.NewRequest(http.MethodOptions, Prefix+"instances/x", nil)
	pre.Header.Set("Origin", "https://ok.example")
	pre.Header.Set("Access-Control-Request-Method", "GET")
	w := httptest.NewRecorder()
	s.ServeHTTP(w, pre)
	if w.Code != http.StatusNoContent || w.Header().Get("Access-Control-Allow-Origin") != "https://ok.example" {
		t.Errorf("preflight from an allowed origin: %d %v", w.Code, w.Header())
	}
	pre.Header.Set("Origin", "https://evil.example")
	w = httptest.NewRecorder()
	s.ServeHTTP(w, pre)
	if w.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight from another origin got CORS headers: %v", w.Header())
	}
}
