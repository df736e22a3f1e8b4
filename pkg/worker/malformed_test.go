package worker_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/worker"
)

// TestMalformedWorkIsRejected publishes garbage on the orchestrator and
// activity subjects: random bytes, envelopes of an unknown schema version,
// and a work item with no events. Each is terminated and logged exactly
// once, never redelivered, and valid work published after it still runs.
func TestMalformedWorkIsRejected(t *testing.T) {
	e := newEnv(t)
	core, logs := observer.New(zap.InfoLevel)
	acts := newCounter()
	w := e.newWorker(helloRegistry(t, true, acts), worker.Options{Logger: zap.New(core)})
	e.run(w, "E1_HelloSequence")

	rng := rand.New(rand.NewPCG(1, 2))
	random := func() []byte {
		b := make([]byte, 64)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return b
	}
	encode := func(v any) []byte {
		b, err := messages.Encode(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	orch := map[string][]byte{
		"bad-random":  random(),
		"bad-version": encode(&messages.OrchestratorWork{V: 99, InstanceID: "bad-version", Events: []messages.Event{{Type: messages.EventRaised, Name: "x"}}}),
		"bad-empty":   encode(&messages.OrchestratorWork{V: messages.SchemaVersion, InstanceID: "bad-empty"}),
		"bad-nothing": {},
	}
	act := map[string][]byte{
		"bad-random":  random(),
		"bad-version": encode(&messages.ActivityTask{V: 99, InstanceID: "bad-version", Name: "E1_SayHello", Input: []byte(`"Tokyo"`)}),
		"bad-nothing": {},
	}
	ctx := context.Background()
	for id, b := range orch {
		if _, err := e.js.Publish(ctx, messages.OrchestratorSubject(id), b); err != nil {
			t.Fatal(err)
		}
	}
	for id, b := range act {
		if _, err := e.js.Publish(ctx, messages.ActivitySubject(id), b); err != nil {
			t.Fatal(err)
		}
	}

	e.start("E1_HelloSequence", "good", nil)
	checkCompleted(t, e.wait("good", 30*time.Second))

	rejected := func(msg string, subject func(string) string, ids map[string][]byte) (bool, string) {
		entries := logs.FilterMessage(msg).AllUntimed()
		seen := map[string]int{}
		for _, en := range entries {
			seen[fmt.Sprint(en.ContextMap()["subject"])]++
		}
		for id := range ids {
			if seen[subject(id)] != 1 {
				return false, fmt.Sprintf("%q logged %v", msg, seen)
			}
		}
		return len(entries) == len(ids), fmt.Sprintf("%q logged %d times, want %d: %v", msg, len(entries), len(ids), seen)
	}
	e.eventually("every bad message logged once", 10*time.Second, func() (bool, string) {
		ok1, why1 := rejected("reject orchestrator message", messages.OrchestratorSubject, orch)
		ok2, why2 := rejected("reject activity message", messages.ActivitySubject, act)
		return ok1 && ok2, why1 + "; " + why2
	})
	// Nothing is left to deliver: terminated messages are settled, so no
	// redelivery (and no second log entry) can follow.
	e.eventually("orchestrator work settled", 10*time.Second, e.orchDrained)
	for _, c := range []struct{ stream, consumer string }{
		{messages.OrchestratorStream, jetstore.OrchestratorConsumer},
		{messages.ActivityStream, jetstore.ActivityConsumer},
	} {
		cons, err := e.js.Consumer(ctx, c.stream, c.consumer)
		if err != nil {
			t.Fatal(err)
		}
		e.eventually(c.consumer+" settled", 10*time.Second, func() (bool, string) {
			ci, err := cons.Info(ctx)
			if err != nil {
				return false, err.Error()
			}
			return ci.NumPending == 0 && ci.NumAckPending == 0 && ci.NumRedelivered == 0,
				fmt.Sprintf("%d pending, %d unacked, %d redelivered", ci.NumPending, ci.NumAckPending, ci.NumRedelivered)
		})
	}
	if ok, why := rejected("reject orchestrator message", messages.OrchestratorSubject, orch); !ok {
		t.Error(why)
	}
	if ok, why := rejected("reject activity message", messages.ActivitySubject, act); !ok {
		t.Error(why)
	}
	if n := acts.get("Tokyo"); n != 1 {
		t.Errorf("E1_SayHello(Tokyo) ran %d times, want 1 (the bad-version task must not run)", n)
	}
	// No other problem was logged.
	if n := logs.FilterLevelExact(zap.ErrorLevel).Len(); n != len(orch)+len(act) {
		for _, en := range logs.All() {
			t.Logf("%s %s %v", en.Level, en.Message, en.ContextMap())
		}
		t.Errorf("%d errors logged, want %d", n, len(orch)+len(act))
	}
}
