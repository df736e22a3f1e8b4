package integration

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestBadInputHTTP: every bad request gets a 4xx with a JSON message, and
// the stack keeps working afterwards.
func TestBadInputHTTP(t *testing.T) {
	s := startStack(t)
	long := strings.Repeat("x", 257)
	cases := []struct {
		name, method, path, body string
		want                     int
		mention                  string
	}{
		{"unknown orchestrator", "POST", "orchestrators/NoSuchOrchestrator", "", 400, "NoSuchOrchestrator"},
		{"dot in ID", "POST", "orchestrators/E1_HelloSequence/a.b", "", 400, "instance ID"},
		{"star in ID", "POST", "orchestrators/E1_HelloSequence/a*b", "", 400, "instance ID"},
		{"gt in ID", "POST", "orchestrators/E1_HelloSequence/a%3Eb", "", 400, "instance ID"},
		{"space in ID", "POST", "orchestrators/E1_HelloSequence/a%20b", "", 400, "instance ID"},
		{"tab in ID", "POST", "orchestrators/E1_HelloSequence/a%09b", "", 400, "instance ID"},
		{"long ID", "POST", "orchestrators/E1_HelloSequence/" + long, "", 400, "instance ID"},
		{"invalid JSON", "POST", "orchestrators/E1_HelloSequence/ok-id", "{nope", 400, "JSON"},
		{"status of hostile ID", "GET", "instances/a.b", "", 400, "instance ID"},
		{"status of unknown", "GET", "instances/never-started", "", 404, "not found"},
		{"raise on unknown", "POST", "instances/never-started/raiseEvent/E", `1`, 404, "not found"},
		{"raise invalid JSON", "POST", "instances/never-started/raiseEvent/E", `{`, 400, "JSON"},
		{"terminate unknown", "POST", "instances/never-started/terminate", "", 404, "not found"},
		{"no such route", "GET", "nothing/here", "", 404, ""},
	}
	for _, c := range cases {
		r := do(t, c.method, s.base+c.path, "application/json", []byte(c.body))
		if r.code != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, r.code, r.body, c.want)
			continue
		}
		var e struct{ Message string }
		if err := json.Unmarshal(r.body, &e); err != nil || e.Message == "" {
			t.Errorf("%s: body %q is not {\"message\":...}", c.name, r.body)
		}
		if !strings.Contains(e.Message, c.mention) {
			t.Errorf("%s: message %q does not mention %q", c.name, e.Message, c.mention)
		}
	}
	// The query parameters of the Durable Functions API are accepted.
	id := s.start(t, "E1_HelloSequence", "with-params", "")
	r := do(t, http.MethodGet, s.base+"instances/"+id+"?taskHub=hub&connection=Storage&code=xyz", "", nil)
	if r.code != http.StatusOK && r.code != http.StatusAccepted {
		t.Errorf("GET with taskHub, connection and code: %d %s", r.code, r.body)
	}
	// The stack still works.
	st := s.await(t, id, "Completed", func(st statusBody) bool { return st.RuntimeStatus == "Completed" })
	if !jsonEq(t, st.Output, `["Hello Tokyo!","Hello Seattle!","Hello London!"]`) {
		t.Errorf("output = %s", st.Output)
	}
	// The same ID cannot start again while running, but may once finished.
	if r := do(t, http.MethodPost, s.base+"orchestrators/E1_HelloSequence/"+id, "application/json", nil); r.code != http.StatusAccepted {
		t.Errorf("restart of a finished ID: %d %s", r.code, r.body)
	}
}
