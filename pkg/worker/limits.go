package worker

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/replay"
)

// Size limits. Every history episode, status record and work item is one
// NATS message, so none may be larger than the server's max_payload. A
// write that is too large fails the same way on every redelivery, and the
// instance would be stuck; instead, the output that makes it too large is
// replaced by a failure that says so.

// headerRoom is kept free in a message for its headers.
const headerRoom = 1024

// failurePrefix is how much of an over-large failure message is kept.
const failurePrefix = 1024

func (w *Worker) maxPayload() int { return int(w.js.Conn().MaxPayload()) }

// limitFinal makes sure the episode and the status record of a run that
// ends in this episode fit in a message. If the orchestrator's output (or
// failure message) makes either too large, the run fails instead with an
// OutputTooLarge failure: in the episode, in its actions (a parent is told
// the same) and in the instance.
func (w *Worker) limitFinal(e *entry, ep *replay.Episode) {
	f := e.inst.Final()
	at := -1
	for i := range ep.Events {
		if ep.Events[i].Type == messages.EventExecutionCompleted {
			at = i
		}
	}
	if f == nil || at < 0 {
		return
	}
	limit := w.maxPayload() - headerRoom
	rec, err1 := messages.Encode(w.statusRecord(e))
	epb, err2 := messages.Encode(&messages.Episode{V: messages.SchemaVersion, Events: ep.Events})
	if err1 != nil || err2 != nil {
		return // the commit reports it
	}
	size := max(len(rec), len(epb))
	if size <= limit {
		return
	}
	excess := size - limit
	var failure messages.Failure
	if f.Failure == nil {
		n := len(f.Result)
		failure = messages.Failure{Type: "OutputTooLarge",
			Message: fmt.Sprintf("orchestrator output is %d bytes, over the limit of %d", n, max(n-excess, 0))}
	} else {
		// The status record holds the message twice: as output and as failure.
		n := len(f.Failure.Message) + len(f.Failure.Cause)
		failure = messages.Failure{Type: "OutputTooLarge",
			Message: fmt.Sprintf("orchestrator failure message is %d bytes, over the limit of %d; it begins: %s",
				n, max(n-(excess+1)/2, 0), prefix(f.Failure.Message, failurePrefix))}
	}
	w.log.Warn("orchestration output too large: failing the run", zap.String("instanceId", e.id),
		zap.String("orchestrator", e.inst.Name()), zap.Uint64("episode", e.inst.Episodes()), zap.String("error", failure.Message))
	done := messages.Event{Type: messages.EventExecutionCompleted, Timestamp: f.Timestamp, Status: messages.StatusFailed, Failure: &failure}
	ep.Events[at] = done
	for i := range ep.Actions {
		if ep.Actions[i].Type == messages.EventExecutionCompleted {
			ep.Actions[i] = done
		}
	}
	// Final returns the instance's own record of the final event: make it
	// say what history now says.
	*f = done
}

// limitResult makes sure an activity's result fits, with room to spare,
// in the work item that carries it and in the episode that records it: an
// output over half of max_payload (the same limit the dispatcher sets on
// inputs) becomes an OutputTooLarge failure, and a failure message over it
// is cut short.
func (w *Worker) limitResult(t *messages.ActivityTask, out []byte, failure *messages.Failure, log *zap.Logger) ([]byte, *messages.Failure) {
	limit := w.maxPayload() / 2
	switch {
	case failure == nil && len(out) > limit:
		failure = &messages.Failure{Type: "OutputTooLarge",
			Message: fmt.Sprintf("activity %q output is %d bytes, over the limit of %d (half the NATS server's max_payload)", t.Name, len(out), limit)}
		out = nil
	case failure != nil && len(failure.Message)+len(failure.Cause)+len(failure.Type) > limit:
		failure = &messages.Failure{Type: failure.Type,
			Message: fmt.Sprintf("activity %q failure message is %d bytes, over the limit of %d (half the NATS server's max_payload); it begins: %s",
				t.Name, len(failure.Message)+len(failure.Cause), limit, prefix(failure.Message, failurePrefix))}
		if len(failure.Type) > failurePrefix {
			failure.Type = "OutputTooLarge"
		}
	default:
		return out, failure
	}
	log.Warn("activity output too large", zap.String("error", failure.Message))
	return out, failure
}

// prefix returns at most n bytes of s, cut at a character boundary.
func prefix(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}
