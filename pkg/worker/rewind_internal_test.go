package worker

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jetflow/jetflow/pkg/messages"
)

func TestRewoundHistory(t *testing.T) {
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	os := func(s int) messages.Event {
		return messages.Event{Type: messages.EventOrchestratorStarted, Timestamp: t0.Add(time.Duration(s) * time.Second)}
	}
	oc := messages.Event{Type: messages.EventOrchestratorCompleted}
	ev := func(t messages.EventType, task int32) messages.Event { return messages.Event{Type: t, TaskID: task} }
	start := messages.Event{Type: messages.EventExecutionStarted, ExecutionID: "old", Name: "O"}
	failed := messages.Event{Type: messages.EventExecutionCompleted, Status: messages.StatusFailed, Failure: &messages.Failure{Message: "x"}}
	raised := messages.Event{Type: messages.EventRaised, Name: "late", EventID: "r9"}
	show := func(eps [][]messages.Event) string {
		var parts []string
		for _, ep := range eps {
			var p []string
			for _, e := range ep {
				s := strings.TrimPrefix(e.Type.String(), "Orchestrator")
				if e.Type.IsScheduling() || e.Type == messages.EventTaskCompleted {
					s = fmt.Sprintf("%s#%d", s, e.TaskID)
				}
				p = append(p, s)
			}
			parts = append(parts, strings.Join(p, " "))
		}
		return strings.Join(parts, " | ")
	}
	for _, c := range []struct {
		what    string
		history []messages.Event
		ok      bool
		want    string
		carried int
	}{
		{"task failed", []messages.Event{
			os(1), start, ev(messages.EventTaskScheduled, 0), ev(messages.EventTaskScheduled, 1), oc,
			os(2), ev(messages.EventTaskCompleted, 0), ev(messages.EventTaskFailed, 1), raised, ev(messages.EventTaskScheduled, 2), oc,
			os(3), ev(messages.EventTaskCompleted, 2), failed, oc,
		}, true, "Started ExecutionStarted TaskScheduled#0 TaskScheduled#1 Completed | Started TaskCompleted#0 Completed", 1},
		{"sub-orchestration failed first in its episode", []messages.Event{
			os(1), start, ev(messages.EventSubOrchestrationCreated, 0), oc,
			os(2), ev(messages.EventSubOrchestrationFailed, 0), failed, oc,
		}, true, "Started ExecutionStarted SubOrchestrationInstanceCreated#0 Completed | Started Completed", 0},
		{"orchestrator error", []messages.Event{
			os(1), start, ev(messages.EventTaskScheduled, 0), oc,
			os(2), ev(messages.EventTaskCompleted, 0), ev(messages.EventTaskScheduled, 1), failed, oc,
		}, true, "Started ExecutionStarted TaskScheduled#0 Completed | Started TaskCompleted#0 TaskScheduled#1 Completed", 0},
		{"completed", []messages.Event{os(1), start, {Type: messages.EventExecutionCompleted, Status: messages.StatusCompleted}, oc}, false, "", 0},
		{"terminated", []messages.Event{os(1), start, oc, os(2), {Type: messages.EventExecutionTerminated},
			{Type: messages.EventExecutionCompleted, Status: messages.StatusTerminated}, oc}, false, "", 0},
		{"continued as new", []messages.Event{os(1), start, {Type: messages.EventContinuedAsNew, ExecutionID: "n"}, oc}, false, "", 0},
		{"running", []messages.Event{os(1), start, ev(messages.EventTaskScheduled, 0), oc}, false, "", 0},
	} {
		eps, carried, ok := rewoundHistory(c.history, "new")
		if ok != c.ok || show(eps) != c.want || len(carried) != c.carried {
			t.Errorf("%s: ok %v, %d carried, episodes\n  %s\nwant ok %v, %d carried,\n  %s", c.what, ok, len(carried), show(eps), c.ok, c.carried, c.want)
			continue
		}
		for _, ep := range eps {
			for _, e := range ep {
				if e.Type == messages.EventExecutionStarted && e.ExecutionID != "new" {
					t.Errorf("%s: ExecutionStarted names %q", c.what, e.ExecutionID)
				}
			}
			if ep[len(ep)-1].Type != messages.EventOrchestratorCompleted || ep[0].Type != messages.EventOrchestratorStarted {
				t.Errorf("%s: episode not framed: %s", c.what, show([][]messages.Event{ep}))
			}
		}
		if c.ok && c.history[1].ExecutionID != "old" {
			t.Errorf("%s: the failed run's history was changed", c.what)
		}
	}
}
