package api

import (
	"encoding/json"
	"time"

	"github.com/jetflow/jetflow/pkg/messages"
)

// formatNano formats a history time with its fraction of a second, as
// Durable Functions does.
func formatNano(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// HistoryEvent is one event of historyEvents, shaped as Durable Functions
// shapes it: PascalCase keys, EventType by name, a Timestamp on every event.
type HistoryEvent struct {
	EventType           string          `json:"EventType"`
	Timestamp           string          `json:"Timestamp"`
	FunctionName        string          `json:"FunctionName,omitempty"`
	Name                string          `json:"Name,omitempty"`
	ScheduledTime       string          `json:"ScheduledTime,omitempty"`
	FireAt              string          `json:"FireAt,omitempty"`
	TimerID             *int32          `json:"TimerId,omitempty"`
	InstanceID          string          `json:"InstanceId,omitempty"`
	Input               json.RawMessage `json:"Input,omitempty"`
	Result              json.RawMessage `json:"Result,omitempty"`
	Reason              string          `json:"Reason,omitempty"`
	Details             string          `json:"Details,omitempty"`
	OrchestrationStatus string          `json:"OrchestrationStatus,omitempty"`
}

// HistoryEvents turns a run's history into Durable Functions' historyEvents:
// OrchestratorStarted and OrchestratorCompleted markers are left out, and a
// TaskScheduled (or SubOrchestrationInstanceCreated) is folded into the
// event that completes it, which gains FunctionName and ScheduledTime.
// Results and inputs appear only with showOutput.
func HistoryEvents(history []messages.Event, showOutput bool) []HistoryEvent {
	completed := map[int32]bool{}
	for _, e := range history {
		switch e.Type {
		case messages.EventTaskCompleted, messages.EventTaskFailed,
			messages.EventSubOrchestrationCompleted, messages.EventSubOrchestrationFailed:
			completed[e.TaskID] = true
		}
	}
	scheduled := map[int32]messages.Event{}
	var out []HistoryEvent
	for _, e := range history {
		h := HistoryEvent{EventType: e.Type.String(), Timestamp: formatNano(e.Timestamp)}
		output := func(b []byte) json.RawMessage {
			if !showOutput || len(b) == 0 {
				return nil
			}
			return b
		}
		switch e.Type {
		case messages.EventOrchestratorStarted, messages.EventOrchestratorCompleted:
			continue
		case messages.EventTaskScheduled, messages.EventSubOrchestrationCreated:
			if completed[e.TaskID] {
				scheduled[e.TaskID] = e
				continue
			}
			h.Name, h.InstanceID, h.Input = e.Name, e.InstanceID, output(e.Input)
		case messages.EventTaskCompleted, messages.EventTaskFailed,
			messages.EventSubOrchestrationCompleted, messages.EventSubOrchestrationFailed:
			if s, ok := scheduled[e.TaskID]; ok {
				h.FunctionName, h.InstanceID = s.Name, s.InstanceID
				h.ScheduledTime = formatNano(s.Timestamp)
			}
			h.Result = output(e.Result)
			if e.Failure != nil {
				h.Reason, h.Details = e.Failure.Message, e.Failure.Cause
			}
		case messages.EventExecutionStarted:
			h.FunctionName, h.Input = e.Name, output(e.Input)
		case messages.EventExecutionCompleted:
			h.OrchestrationStatus = e.Status.String()
			h.Result = output(e.Result)
			if e.Failure != nil {
				h.Reason, h.Details = e.Failure.Message, e.Failure.Cause
			}
		case messages.EventTimerCreated, messages.EventTimerFired:
			h.FireAt = formatNano(e.FireAt)
			id := e.TaskID
			h.TimerID = &id
		case messages.EventRaised, messages.EventSent:
			h.Name, h.InstanceID, h.Input = e.Name, e.InstanceID, output(e.Input)
		case messages.EventContinuedAsNew:
			h.Input = output(e.Input)
		default:
			h.Reason = e.Reason
		}
		out = append(out, h)
	}
	return out
}
