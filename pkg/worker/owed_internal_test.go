package worker

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jetflow/jetflow/pkg/messages"
)

func TestOwedActions(t *testing.T) {
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	os := func(s int) messages.Event {
		return messages.Event{Type: messages.EventOrchestratorStarted, Timestamp: at(s)}
	}
	oc := messages.Event{Type: messages.EventOrchestratorCompleted}
	ev := func(t messages.EventType, task int32) messages.Event { return messages.Event{Type: t, TaskID: task} }
	// Episode 1: start, schedules task 0 and timer 1.
	// Episode 2: task 0 done; schedules sub-orchestration 2, sends event 3.
	// Episode 3: raised event r1; schedules task 4.
	// Episode 4: suspended (client, time 40).
	// Episode 5: timer 1 fired; schedules task 5, sends event 6.
	history := []messages.Event{
		os(1), {Type: messages.EventExecutionStarted, ExecutionID: "x"}, ev(messages.EventTaskScheduled, 0), ev(messages.EventTimerCreated, 1), oc,
		os(2), ev(messages.EventTaskCompleted, 0), ev(messages.EventSubOrchestrationCreated, 2), ev(messages.EventSent, 3), oc,
		os(3), {Type: messages.EventRaised, Name: "go", EventID: "r1"}, ev(messages.EventTaskScheduled, 4), oc,
		os(4), {Type: messages.EventExecutionSuspended, Timestamp: at(40)}, oc,
		os(5), ev(messages.EventTimerFired, 1), ev(messages.EventTaskScheduled, 5), ev(messages.EventSent, 6), oc,
	}
	name := func(evs []messages.Event) string {
		var b []string
		for _, e := range evs {
			b = append(b, fmt.Sprintf("%s#%d", e.Type, e.TaskID))
		}
		return strings.Join(b, " ")
	}
	for _, c := range []struct {
		what     string
		history  []messages.Event
		incoming []messages.Event
		want     string
	}{
		{"start: task 0 done, timer 1 fired", history, []messages.Event{{Type: messages.EventExecutionStarted, ExecutionID: "x"}}, ""},
		{"start of another run", history, []messages.Event{{Type: messages.EventExecutionStarted, ExecutionID: "y"}}, ""},
		{"result of task 0: sub-orchestration open, event sent", history, []messages.Event{ev(messages.EventTaskCompleted, 0)},
			"SubOrchestrationInstanceCreated#2 EventSent#3"},
		{"a failure for task 0 is the same work", history, []messages.Event{ev(messages.EventTaskFailed, 0)},
			"SubOrchestrationInstanceCreated#2 EventSent#3"},
		{"raised event by ID", history, []messages.Event{{Type: messages.EventRaised, Name: "go", EventID: "r1"}}, "TaskScheduled#4"},
		{"raised event, other ID", history, []messages.Event{{Type: messages.EventRaised, Name: "go", EventID: "r2"}}, ""},
		{"suspend at its time", history, []messages.Event{{Type: messages.EventExecutionSuspended, Timestamp: at(40)}}, ""},
		{"timer fired", history, []messages.Event{ev(messages.EventTimerFired, 1)}, "TaskScheduled#5 EventSent#6"},
		{"unknown task", history, []messages.Event{ev(messages.EventTaskCompleted, 9)}, ""},
		{"two events, two episodes", history, []messages.Event{ev(messages.EventTimerFired, 1), ev(messages.EventTaskCompleted, 0)},
			"SubOrchestrationInstanceCreated#2 EventSent#3 TaskScheduled#5 EventSent#6"},
		{"final episode owes its completion", append(history[:len(history):len(history)],
			os(6), ev(messages.EventTaskCompleted, 5), messages.Event{Type: messages.EventExecutionCompleted, Status: messages.StatusCompleted}, oc),
			[]messages.Event{ev(messages.EventTaskCompleted, 5)}, "ExecutionCompleted#0"},
		{"rewind episode owes every open task before it", append(history[:len(history):len(history)],
			os(6), messages.Event{Type: messages.EventExecutionRewound}, ev(messages.EventTaskScheduled, 7), oc),
			[]messages.Event{{Type: messages.EventExecutionRewound}},
			"SubOrchestrationInstanceCreated#2 TaskScheduled#4 TaskScheduled#5 TaskScheduled#7"},
		{"no history", nil, []messages.Event{ev(messages.EventTaskCompleted, 0)}, ""},
	} {
		if got := name(owedActions(c.history, c.incoming)); got != c.want {
			t.Errorf("%s: owes %q, want %q", c.what, got, c.want)
		}
	}
}
