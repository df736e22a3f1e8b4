package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/replay"
	"github.com/jetflow/jetflow/pkg/telemetry"
)

// outMsg is one message an episode owes, with its deduplication ID.
type outMsg struct {
	subject string
	msgID   string
	data    []byte
	// orchestrator, if set, is sent as the telemetry.HeaderOrchestrator
	// header, so that an activity's logs can name its orchestrator.
	orchestrator string
}

// natsMsg returns the message to publish, with the trace context of ctx's
// span (if any) in its headers.
func (m *outMsg) natsMsg(ctx context.Context) *nats.Msg {
	h := make(nats.Header, 4)
	telemetry.Inject(ctx, h)
	if m.orchestrator != "" {
		h[telemetry.HeaderOrchestrator] = []string{m.orchestrator}
	}
	return &nats.Msg{Subject: m.subject, Data: m.data, Header: h}
}

// publish sends the messages that actions call for and waits until
// JetStream has stored every one. Message IDs are derived from the
// instance, run and sequence number, so sending again is a no-op inside the
// streams' duplicate window.
func (w *Worker) publish(ctx context.Context, in *replay.Instance, actions []messages.Event) error {
	msgs, err := actionMessages(in, actions)
	if err != nil {
		return err
	}
	return publishAll(ctx, w.js, msgs)
}

// actionMessages returns the messages that carry out actions.
func actionMessages(in *replay.Instance, actions []messages.Event) ([]outMsg, error) {
	var msgs []outMsg
	for i := range actions {
		m, err := actionMessage(in, &actions[i])
		if err != nil {
			return nil, err
		}
		if m != nil {
			msgs = append(msgs, *m)
		}
	}
	return msgs, nil
}

func publishAll(ctx context.Context, js jetstream.JetStream, msgs []outMsg) error {
	switch len(msgs) {
	case 0:
		return nil
	case 1:
		m := msgs[0]
		if _, err := js.PublishMsg(ctx, m.natsMsg(ctx), jetstream.WithMsgID(m.msgID)); err != nil {
			return fmt.Errorf("publish %s: %w", m.subject, err)
		}
		return nil
	}
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		f, err := js.PublishMsgAsync(m.natsMsg(ctx), jetstream.WithMsgID(m.msgID))
		if err != nil {
			return fmt.Errorf("publish %s: %w", m.subject, err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publish %s: %w", f.Msg().Subject, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func seqID(kind, id, exec string, seq int32) string {
	return kind + ":" + id + ":" + exec + ":" + strconv.Itoa(int(seq))
}

// actionMessage turns a scheduling or completion event into the message
// that carries it out.
func actionMessage(in *replay.Instance, a *messages.Event) (*outMsg, error) {
	id, exec := in.InstanceID(), in.ExecutionID()
	switch a.Type {
	case messages.EventTaskScheduled:
		t := messages.ActivityTask{V: messages.SchemaVersion, InstanceID: id, ExecutionID: exec, TaskID: a.TaskID,
			Name: a.Name, Input: a.Input, Attempt: 1, Retry: a.Retry}
		m, err := encodeMsg(messages.ActivitySubject(id), seqID("a", id, exec, a.TaskID)+":1", &t)
		if m != nil {
			m.orchestrator = in.Name()
		}
		return m, err
	case messages.EventTimerCreated:
		fired := messages.OrchestratorWork{V: messages.SchemaVersion, InstanceID: id, ExecutionID: exec,
			Events: []messages.Event{{Type: messages.EventTimerFired, TaskID: a.TaskID, FireAt: a.FireAt}}}
		return delayedMsg(id, a.FireAt, messages.OrchestratorSubject(id), seqID("t", id, exec, a.TaskID), &fired)
	case messages.EventSubOrchestrationCreated:
		childExec := exec + "-" + strconv.Itoa(int(a.TaskID))
		start := messages.OrchestratorWork{V: messages.SchemaVersion, InstanceID: a.InstanceID, ExecutionID: childExec,
			Events: []messages.Event{{Type: messages.EventExecutionStarted, Timestamp: a.Timestamp, Name: a.Name, Input: a.Input,
				InstanceID: a.InstanceID, ExecutionID: childExec,
				Parent: &messages.ParentRef{InstanceID: id, ExecutionID: exec, TaskID: a.TaskID}}}}
		return encodeMsg(messages.OrchestratorSubject(a.InstanceID), seqID("s", id, exec, a.TaskID), &start)
	case messages.EventSent:
		eid := seqID("e", id, exec, a.TaskID)
		raise := messages.OrchestratorWork{V: messages.SchemaVersion, InstanceID: a.InstanceID,
			Events: []messages.Event{{Type: messages.EventRaised, Name: a.Name, Input: a.Input, EventID: eid}}}
		return encodeMsg(messages.OrchestratorSubject(a.InstanceID), eid, &raise)
	case messages.EventContinuedAsNew:
		start := messages.OrchestratorWork{V: messages.SchemaVersion, InstanceID: id, ExecutionID: a.ExecutionID,
			Events: []messages.Event{{Type: messages.EventExecutionStarted, Timestamp: a.Timestamp, Name: a.Name, Input: a.Input,
				InstanceID: id, ExecutionID: a.ExecutionID, Parent: in.Parent()}}}
		return encodeMsg(messages.OrchestratorSubject(id), "n:"+id+":"+a.ExecutionID, &start)
	case messages.EventExecutionCompleted:
		p := in.Parent()
		if p == nil {
			return nil, nil
		}
		done := messages.Event{Type: messages.EventSubOrchestrationCompleted, TaskID: p.TaskID, Result: a.Result}
		if a.Status != messages.StatusCompleted {
			done = messages.Event{Type: messages.EventSubOrchestrationFailed, TaskID: p.TaskID, Failure: a.Failure}
			if done.Failure == nil {
				done.Failure = &messages.Failure{Type: a.Status.String(), Message: "sub-orchestration " + a.Status.String()}
			}
		}
		w := messages.OrchestratorWork{V: messages.SchemaVersion, InstanceID: p.InstanceID, ExecutionID: p.ExecutionID, Events: []messages.Event{done}}
		return encodeMsg(messages.OrchestratorSubject(p.InstanceID), "c:"+id+":"+exec, &w)
	}
	return nil, nil
}

func encodeMsg(subject, msgID string, v any) (*outMsg, error) {
	b, err := messages.Encode(v)
	if err != nil {
		return nil, err
	}
	return &outMsg{subject: subject, msgID: msgID, data: b}, nil
}

// delayedMsg wraps v for the dispatcher to publish on target at due.
func delayedMsg(id string, due time.Time, target, msgID string, v any) (*outMsg, error) {
	b, err := messages.Encode(v)
	if err != nil {
		return nil, err
	}
	d := messages.Delayed{V: messages.SchemaVersion, DueAt: due, Subject: target, MsgID: msgID, Payload: b}
	return encodeMsg(messages.DelaySubject(id), "d:"+msgID, &d)
}

func jsonString(s string) ([]byte, error) { return json.Marshal(s) }

func marshalOutput(v any) ([]byte, error) {
	if v == nil {
		return nil, nil
	}
	if raw, ok := v.(json.RawMessage); ok {
		if !json.Valid(raw) {
			return nil, fmt.Errorf("invalid JSON")
		}
		return raw, nil
	}
	return json.Marshal(v)
}
