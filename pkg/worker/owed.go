package worker

import (
	"bytes"

	"github.com/jetflow/jetflow/pkg/messages"
)

// owedActions returns what a redelivered work item may still owe: the
// actions of the episodes of history that applied its events, restricted
// to those whose effect is not recorded yet. A task, timer or
// sub-orchestration counts only while history holds no completion for it;
// the events sent and the final event of such an episode count as they are
// (their receivers drop copies). Actions of any other episode are not
// touched: outside the streams' duplicate window a second copy would be a
// new message, and would, for example, run a long activity again.
//
// An episode that applied ExecutionRewound owes every task, timer and
// sub-orchestration the rewound run has outstanding up to it, because that
// episode is the one that sent them under the new run's IDs.
//
// An event that no episode applied (a duplicate of nothing, or one that
// reached a finished run) owes nothing: its first delivery published
// nothing either.
func owedActions(history, incoming []messages.Event) []messages.Event {
	if len(history) == 0 || len(incoming) == 0 {
		return nil
	}
	done := map[int32]messages.EventType{}
	for i := range history {
		if isCompletion(history[i].Type) {
			done[history[i].TaskID] = history[i].Type
		}
	}
	open := func(e *messages.Event) bool {
		switch e.Type {
		case messages.EventTaskScheduled, messages.EventTimerCreated, messages.EventSubOrchestrationCreated:
			c, ok := done[e.TaskID]
			return !ok || !completionOf(c, e.Type)
		}
		return false
	}
	spans := episodeSpans(history)
	var (
		out  []messages.Event
		seen = map[int32]bool{}
	)
	add := func(e *messages.Event) {
		if e.Type.IsScheduling() {
			if seen[e.TaskID] {
				return
			}
			seen[e.TaskID] = true
		}
		out = append(out, *e)
	}
	for _, sp := range spans {
		ep := history[sp[0]:sp[1]]
		if !appliedAny(ep, incoming) {
			continue
		}
		if hasType(ep, messages.EventExecutionRewound) {
			for j := 0; j < sp[0]; j++ {
				if open(&history[j]) {
					add(&history[j])
				}
			}
		}
		for j := range ep {
			ev := &ep[j]
			switch {
			case open(ev):
				add(ev)
			case ev.Type == messages.EventSent:
				add(ev)
			case ev.Type == messages.EventExecutionCompleted || ev.Type == messages.EventContinuedAsNew:
				add(ev)
			}
		}
	}
	return out
}

// episodeSpans splits history into its episodes, as [from, to) index
// ranges, each opening with OrchestratorStarted.
func episodeSpans(history []messages.Event) [][2]int {
	var spans [][2]int
	from := 0
	for i := 1; i < len(history); i++ {
		if history[i].Type == messages.EventOrchestratorStarted {
			spans = append(spans, [2]int{from, i})
			from = i
		}
	}
	if len(history) > 0 {
		spans = append(spans, [2]int{from, len(history)})
	}
	return spans
}

func hasType(evs []messages.Event, t messages.EventType) bool {
	for i := range evs {
		if evs[i].Type == t {
			return true
		}
	}
	return false
}

// appliedAny reports whether the episode ep holds one of the incoming events.
func appliedAny(ep, incoming []messages.Event) bool {
	for i := range ep {
		for j := range incoming {
			if sameWork(&ep[i], &incoming[j]) {
				return true
			}
		}
	}
	return false
}

// sameWork reports whether the history event h is the event in of a work
// item, as applied. The replay engine applies at most one ExecutionStarted
// per run, one completion per task, one raised event per EventID and one
// ExecutionRewound per run; client commands carry the dispatcher's time.
func sameWork(h, in *messages.Event) bool {
	switch in.Type {
	case messages.EventExecutionStarted:
		return h.Type == messages.EventExecutionStarted && (in.ExecutionID == "" || h.ExecutionID == in.ExecutionID)
	case messages.EventTaskCompleted, messages.EventTaskFailed, messages.EventTimerFired,
		messages.EventSubOrchestrationCompleted, messages.EventSubOrchestrationFailed:
		return isCompletion(h.Type) && h.TaskID == in.TaskID && sameCompletionKind(h.Type, in.Type)
	case messages.EventRaised:
		if h.Type != messages.EventRaised {
			return false
		}
		if in.EventID != "" {
			return h.EventID == in.EventID
		}
		return !in.Timestamp.IsZero() && h.Timestamp.Equal(in.Timestamp) && h.Name == in.Name && bytes.Equal(h.Input, in.Input)
	case messages.EventExecutionRewound:
		return h.Type == in.Type
	case messages.EventExecutionTerminated, messages.EventExecutionSuspended, messages.EventExecutionResumed:
		return h.Type == in.Type && (in.Timestamp.IsZero() || h.Timestamp.Equal(in.Timestamp))
	}
	return false
}

func isCompletion(t messages.EventType) bool {
	switch t {
	case messages.EventTaskCompleted, messages.EventTaskFailed, messages.EventTimerFired,
		messages.EventSubOrchestrationCompleted, messages.EventSubOrchestrationFailed:
		return true
	}
	return false
}

// completionOf reports whether completion c can complete scheduling event s.
func completionOf(c, s messages.EventType) bool {
	switch c {
	case messages.EventTaskCompleted, messages.EventTaskFailed:
		return s == messages.EventTaskScheduled
	case messages.EventTimerFired:
		return s == messages.EventTimerCreated
	default:
		return s == messages.EventSubOrchestrationCreated
	}
}

func sameCompletionKind(a, b messages.EventType) bool {
	kind := func(t messages.EventType) messages.EventType {
		switch t {
		case messages.EventTaskFailed:
			return messages.EventTaskCompleted
		case messages.EventSubOrchestrationFailed:
			return messages.EventSubOrchestrationCompleted
		}
		return t
	}
	return kind(a) == kind(b)
}
