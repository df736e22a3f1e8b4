package httpapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/jetflow/jetflow/pkg/api"
)

const helloOutput = `["Hello Tokyo!","Hello Seattle!","Hello London!"]`

func TestStart(t *testing.T) {
	d := startDev(t, api.Options{})

	cs := d.start(t, "E1_HelloSequence", "", "")
	if cs["id"] == "" {
		t.Fatal("no generated ID")
	}
	for k, v := range cs {
		if k == "id" {
			continue
		}
		u, err := url.Parse(strings.NewReplacer("{eventName}", "E", "{text}", "x").Replace(v))
		if err != nil || !u.IsAbs() || u.Host != strings.TrimPrefix(d.host, "http://") {
			t.Errorf("%s = %q is not an absolute URL on the request's host", k, v)
		}
	}

	// The check-status URLs carry the request's taskHub, connection and code.
	r := d.do(t, "POST", "orchestrators/E1_HelloSequence/params?taskHub=MyHub&connection=Conn&code=abc", "application/json", "")
	expect(t, "start with query parameters", r, http.StatusAccepted)
	var withParams map[string]string
	r.json(t, &withParams)
	q, _ := url.Parse(withParams["statusQueryGetUri"])
	if q.Query().Get("taskHub") != "MyHub" || q.Query().Get("connection") != "Conn" || q.Query().Get("code") != "abc" {
		t.Errorf("statusQueryGetUri %s does not carry the query parameters", withParams["statusQueryGetUri"])
	}
	if r.header.Get("Location") != withParams["statusQueryGetUri"] || r.header.Get("Retry-After") != "10" {
		t.Errorf("Location %q Retry-After %q", r.header.Get("Location"), r.header.Get("Retry-After"))
	}

	expect(t, "invalid JSON", d.do(t, "POST", "orchestrators/E1_HelloSequence", "application/json", "{"), 400)
	expect(t, "unknown orchestrator", d.do(t, "POST", "orchestrators/Nope", "application/json", ""), 400)
	expect(t, "invalid ID", d.do(t, "POST", "orchestrators/E1_HelloSequence/a.b", "application/json", ""), 400)

	// An ID in use by an unfinished instance is a conflict; once it has
	// finished, the ID starts a fresh instance.
	d.start(t, "CityRecommender", "taken", "1")
	expect(t, "ID in use", d.do(t, "POST", "orchestrators/CityRecommender/taken", "application/json", "2"), 409)
	expect(t, "terminate", d.do(t, "POST", "instances/taken/terminate", "", ""), 202)
	d.await(t, "taken", "Terminated")
	d.start(t, "E1_HelloSequence", "taken", "")
	if st := d.await(t, "taken", "Completed"); st.Name != "E1_HelloSequence" || !jsonEq(st.Output, helloOutput) {
		t.Errorf("reused ID: %+v", st)
	}

	// With a timeout: the raw output when it completes in time, the status
	// body when it fails, the check-status body when it is still running.
	r = d.do(t, "POST", "orchestrators/E1_HelloSequence/waited?timeout=20&pollingInterval=1", "application/json", "")
	expect(t, "start and wait", r, http.StatusOK)
	if !jsonEq(r.body, helloOutput) {
		t.Errorf("start with timeout: body %s, want the raw output", r.body)
	}
	r = d.do(t, "POST", "orchestrators/CityRecommender/waited-fail?timeout=20", "application/json", "7")
	expect(t, "start and wait for a failure", r, http.StatusOK)
	var failed statusBody
	r.json(t, &failed)
	if failed.RuntimeStatus != "Failed" || !strings.Contains(string(failed.Output), "choice 7") {
		t.Errorf("failed with timeout: %s", r.body)
	}
	r = d.do(t, "POST", "orchestrators/CityRecommender/waited-long?timeout=0.2", "application/json", "1")
	expect(t, "start and wait too briefly", r, http.StatusAccepted)
	expect(t, "bad timeout", d.do(t, "POST", "orchestrators/E1_HelloSequence?timeout=soon", "application/json", ""), 400)
}

func TestStatus(t *testing.T) {
	d := startDev(t, api.Options{})
	d.start(t, "CityRecommender", "running", "2")
	st := d.await(t, "running", "Running")
	_, r := d.status(t, "running")
	expect(t, "running", r, http.StatusAccepted)
	if r.header.Get("Location") == "" || r.header.Get("Retry-After") != "5" {
		t.Errorf("running: Location %q Retry-After %q", r.header.Get("Location"), r.header.Get("Retry-After"))
	}
	if !jsonEq(st.Input, "2") || st.CreatedTime == "" || st.LastUpdatedTime == "" {
		t.Errorf("status body: %+v", st)
	}
	r = d.do(t, "GET", "instances/running?showInput=false", "", "")
	var noInput statusBody
	r.json(t, &noInput)
	if string(noInput.Input) != "null" {
		t.Errorf("showInput=false: input %s", noInput.Input)
	}
	expect(t, "unknown", d.do(t, "GET", "instances/nobody", "", ""), 404)

	d.start(t, "E1_HelloSequence", "done", "")
	d.await(t, "done", "Completed")
	_, r = d.status(t, "done")
	expect(t, "completed", r, http.StatusOK)

	d.start(t, "CityRecommender", "failed", "9")
	st = d.await(t, "failed", "Failed")
	if !strings.Contains(string(st.Output), "choice 9 is not 1, 2 or 3") {
		t.Errorf("Failed output %s does not carry the failure message", st.Output)
	}
	expect(t, "failed", d.do(t, "GET", "instances/failed", "", ""), 200)
	expect(t, "failed with returnInternalServerErrorOnFailure", d.do(t, "GET", "instances/failed?returnInternalServerErrorOnFailure=true", "", ""), 500)

	// History, shaped as Durable Functions shapes it.
	for _, showOutput := range []bool{false, true} {
		r = d.do(t, "GET", "instances/done?showHistory=true&showHistoryOutput="+map[bool]string{true: "true", false: "false"}[showOutput], "", "")
		expect(t, "history", r, 200)
		r.json(t, &st)
		var types []string
		for _, raw := range st.HistoryEvents {
			var e map[string]any
			if err := json.Unmarshal(raw, &e); err != nil {
				t.Fatal(err)
			}
			types = append(types, e["EventType"].(string))
			if e["Timestamp"] == nil {
				t.Errorf("event without Timestamp: %s", raw)
			}
			_, hasResult := e["Result"]
			switch e["EventType"] {
			case "TaskCompleted":
				if e["FunctionName"] != "E1_SayHello" || e["ScheduledTime"] == nil {
					t.Errorf("TaskCompleted not folded: %s", raw)
				}
				if hasResult != showOutput {
					t.Errorf("showHistoryOutput=%v: TaskCompleted %s", showOutput, raw)
				}
			case "ExecutionStarted":
				if e["FunctionName"] != "E1_HelloSequence" {
					t.Errorf("ExecutionStarted: %s", raw)
				}
			case "ExecutionCompleted":
				if e["OrchestrationStatus"] != "Completed" {
					t.Errorf("ExecutionCompleted: %s", raw)
				}
			}
		}
		want := "ExecutionStarted,TaskCompleted,TaskCompleted,TaskCompleted,ExecutionCompleted"
		if got := strings.Join(types, ","); got != want {
			t.Errorf("history event types %s, want %s", got, want)
		}
	}
}

func TestRaiseEvent(t *testing.T) {
	d := startDev(t, api.Options{})
	d.start(t, "CityRecommender", "r", "1")
	d.await(t, "r", "Running")
	expect(t, "no content type", d.do(t, "POST", "instances/r/raiseEvent/CitySelected", "", `"Tokyo"`), 400)
	expect(t, "text/plain", d.do(t, "POST", "instances/r/raiseEvent/CitySelected", "text/plain", `"Tokyo"`), 400)
	expect(t, "invalid JSON", d.do(t, "POST", "instances/r/raiseEvent/CitySelected", "application/json", `{`), 400)
	expect(t, "unknown instance", d.do(t, "POST", "instances/nobody/raiseEvent/CitySelected", "application/json", `1`), 404)
	expect(t, "raise", d.do(t, "POST", "instances/r/raiseEvent/CitySelected", "application/json; charset=utf-8", `"Tokyo"`), 202)
	if st := d.await(t, "r", "Completed"); !jsonEq(st.Output, `"Tokyo"`) {
		t.Errorf("output %s", st.Output)
	}
	expect(t, "finished", d.do(t, "POST", "instances/r/raiseEvent/CitySelected", "application/json", `"Tokyo"`), 410)
}

func TestTerminateSuspendResume(t *testing.T) {
	d := startDev(t, api.Options{})
	d.start(t, "CityRecommender", "t", "1")
	d.await(t, "t", "Running")
	expect(t, "terminate unknown", d.do(t, "POST", "instances/nobody/terminate?reason=x", "", ""), 404)
	expect(t, "terminate", d.do(t, "POST", "instances/t/terminate?reason=no%20longer%20needed,%2050%+sure", "", ""), 202)
	if st := d.await(t, "t", "Terminated"); !strings.Contains(string(st.Output), "no longer needed") {
		t.Errorf("terminated output %s does not carry the reason", st.Output)
	}
	expect(t, "terminate finished", d.do(t, "POST", "instances/t/terminate", "", ""), 410)

	d.start(t, "CityRecommender", "s", "1")
	d.await(t, "s", "Running")
	expect(t, "suspend", d.do(t, "POST", "instances/s/suspend?reason=wait", "", ""), 202)
	d.await(t, "s", "Suspended")
	_, r := d.status(t, "s")
	expect(t, "GET suspended", r, 202)
	// An event raised while suspended is kept and applied after resume.
	expect(t, "raise while suspended", d.do(t, "POST", "instances/s/raiseEvent/CitySelected", "application/json", `"Seattle"`), 202)
	d.await(t, "s", "Suspended")
	expect(t, "resume", d.do(t, "POST", "instances/s/resume?reason=go", "", ""), 202)
	if st := d.await(t, "s", "Completed"); !jsonEq(st.Output, `"Seattle"`) {
		t.Errorf("after resume: output %s", st.Output)
	}
	expect(t, "suspend unknown", d.do(t, "POST", "instances/nobody/suspend", "", ""), 404)
	expect(t, "resume unknown", d.do(t, "POST", "instances/nobody/resume", "", ""), 404)
	expect(t, "suspend finished", d.do(t, "POST", "instances/s/suspend", "", ""), 410)
	expect(t, "resume finished", d.do(t, "POST", "instances/s/resume", "", ""), 410)
}

func TestRewindRestartPurge(t *testing.T) {
	d := startDev(t, api.Options{})
	d.start(t, "CityRecommender", "running", "1")
	d.await(t, "running", "Running")
	expect(t, "rewind running", d.do(t, "POST", "instances/running/rewind?reason=x", "", ""), 400)
	expect(t, "rewind unknown", d.do(t, "POST", "instances/nobody/rewind", "", ""), 404)
	d.start(t, "CityRecommender", "broken", "8")
	d.await(t, "broken", "Failed")
	expect(t, "rewind failed", d.do(t, "POST", "instances/broken/rewind?reason=try%20again,%20100%", "", ""), 202)

	d.start(t, "E1_HelloSequence", "again", "")
	d.await(t, "again", "Completed")
	r := d.do(t, "POST", "instances/again/restart?restartWithNewInstanceId=true", "", "")
	expect(t, "restart with a new ID", r, 202)
	var cs map[string]string
	r.json(t, &cs)
	if cs["id"] == "" || cs["id"] == "again" {
		t.Fatalf("restart with a new ID gave ID %q", cs["id"])
	}
	if st := d.await(t, cs["id"], "Completed"); !jsonEq(st.Output, helloOutput) || st.Name != "E1_HelloSequence" {
		t.Errorf("restarted instance: %+v", st)
	}
	r = d.do(t, "POST", "instances/again/restart?restartWithNewInstanceId=false", "", "")
	expect(t, "restart under the same ID", r, 202)
	r.json(t, &cs)
	if cs["id"] != "again" {
		t.Errorf("restart under the same ID gave %q", cs["id"])
	}
	d.await(t, "again", "Completed")
	d.start(t, "CityRecommender", "keep", "3")
	d.await(t, "keep", "Running")
	r = d.do(t, "POST", "instances/keep/restart?restartWithNewInstanceId=false", "", "")
	expect(t, "restart a running instance under its ID", r, 409)
	r = d.do(t, "POST", "instances/keep/restart", "", "")
	expect(t, "restart a running instance under a new ID", r, 202)
	r.json(t, &cs)
	if st := d.await(t, cs["id"], "Running"); !jsonEq(st.Input, "3") {
		t.Errorf("restart keeps the original input: %s", st.Input)
	}
	expect(t, "restart unknown", d.do(t, "POST", "instances/nobody/restart", "", ""), 404)

	r = d.do(t, "DELETE", "instances/again", "", "")
	expect(t, "purge", r, 200)
	if !jsonEq(r.body, `{"instancesDeleted":1}`) {
		t.Errorf("purge body %s", r.body)
	}
	expect(t, "GET purged", d.do(t, "GET", "instances/again", "", ""), 404)
	expect(t, "purge unknown", d.do(t, "DELETE", "instances/again", "", ""), 404)
}

func TestAuthOnAndOff(t *testing.T) {
	d := startDev(t, api.Options{APIKeys: []string{"s3cret"}})
	expect(t, "no key", d.do(t, "POST", "orchestrators/E1_HelloSequence/k", "application/json", ""), 401)
	expect(t, "wrong key", d.do(t, "GET", "instances/k?code=guess", "", ""), 401)
	r := d.do(t, "POST", "orchestrators/E1_HelloSequence/k?code=s3cret", "application/json", "")
	expect(t, "key in code", r, 202)
	var cs map[string]string
	r.json(t, &cs)
	if !strings.Contains(cs["statusQueryGetUri"], "code=s3cret") {
		t.Errorf("statusQueryGetUri %s does not carry the key", cs["statusQueryGetUri"])
	}
	// The URL the API handed out works as it is.
	r = d.do(t, "GET", cs["statusQueryGetUri"], "", "")
	if r.code != 200 && r.code != 202 {
		t.Errorf("GET statusQueryGetUri: %d", r.code)
	}
	expect(t, "key in header", d.do(t, "GET", "instances/k", "", "", "x-functions-key", "s3cret"), r.code)

	open := startDev(t, api.Options{})
	expect(t, "no keys configured", open.do(t, "GET", "instances/nobody", "", ""), 404)
}

func TestLimitsAndUnknownRoutes(t *testing.T) {
	d := startDev(t, api.Options{MaxBodyBytes: 16 << 20})
	big := `"` + strings.Repeat("x", 5<<20) + `"` // over half of the devserver's 8 MiB max_payload
	r := d.do(t, "POST", "orchestrators/E1_HelloSequence", "application/json", big)
	expect(t, "input over the NATS limit", r, 413)
	if !strings.Contains(string(r.body), "limit") {
		t.Errorf("413 message %s does not say what the limit is", r.body)
	}
	small := startDev(t, api.Options{MaxBodyBytes: 1024})
	expect(t, "body over the API limit", small.do(t, "POST", "orchestrators/E1_HelloSequence", "application/json", `"`+strings.Repeat("y", 2000)+`"`), 413)
	expect(t, "unknown route", d.do(t, "GET", "nothing/here", "", ""), 404)
	expect(t, "wrong method", d.do(t, "PUT", "instances/x", "", ""), 404)
}
