package integration

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/jetflow/jetflow/internal/natstest"
	"github.com/jetflow/jetflow/pkg/messages"
)

// TestRandomBytesOnEverySubject publishes thousands of random messages on
// every jetflow subject, some aimed at a live instance. Nothing crashes,
// the instance's state does not change, each message leaves one log line,
// and the instance still completes when its real event comes.
func TestRandomBytesOnEverySubject(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	s := startStackWith(t, stackOptions{logs: zap.New(core)})
	id := s.start(t, "CityRecommender", "victim", "1")
	s.await(t, id, "Running", func(st statusBody) bool { return st.RuntimeStatus == "Running" && string(st.CustomStatus) != "null" })
	ctx := context.Background()
	before, rev, err := s.store.GetStatus(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	_, episodes, err := s.store.LoadHistory(ctx, id, before.ExecutionID)
	if err != nil {
		t.Fatal(err)
	}

	nc, _ := natstest.Connect(t, s.srv)
	rng := rand.New(rand.NewPCG(1, 2))
	tokens := []string{messages.Token(id), "other", "x-1", messages.Token("a:b")}
	subjects := func() string {
		tok := tokens[rng.IntN(len(tokens))]
		switch rng.IntN(4) {
		case 0:
			return messages.OrchestratorSubject(tok)
		case 1:
			return messages.ActivitySubject(tok)
		case 2:
			return messages.DelaySubject(tok)
		}
		kinds := []messages.CommandKind{messages.CmdStart, messages.CmdRaiseEvent, messages.CmdTerminate, messages.CmdSuspend,
			messages.CmdResume, messages.CmdPurge, messages.CmdRewind, messages.CmdRestart}
		return messages.CommandSubject(kinds[rng.IntN(len(kinds))])
	}
	const n = 3000
	start := logs.Len()
	work := 0 // messages on work subjects, which are dead-lettered
	var replies int
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		b := make([]byte, rng.IntN(200))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		m := nats.NewMsg(subjects())
		m.Data = b
		if !strings.HasPrefix(m.Subject, "jetflow.cmd.") {
			work++
		}
		if i%2 == 0 {
			m.Reply = inbox // commands answer with an error reply
		}
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "one log line per message", func() bool { return logs.Len()-start >= n })
	// Commands with a reply subject got an error reply.
	for {
		m, err := sub.NextMsg(200 * time.Millisecond)
		if err != nil {
			break
		}
		if r, err := messages.DecodeReply(m.Data); err == nil && r.Code == messages.CodeBadRequest {
			replies++
		}
	}
	if replies == 0 {
		t.Error("no error replies to malformed commands")
	}
	if got := logs.Len() - start; got != n {
		t.Errorf("%d log lines for %d bad messages, want one each", got, n)
	}
	for _, e := range logs.All()[start:] {
		if e.Level < zapcore.WarnLevel {
			t.Errorf("bad message logged at %s: %s", e.Level, e.Message)
			break
		}
	}
	t.Logf("%d bad messages, %d error replies", n, replies)

	// Every malformed work, activity and delayed message was copied to the
	// dead-letter stream, with its original bytes, before it was dropped.
	_, js := natstest.Connect(t, s.srv)
	waitFor(t, 30*time.Second, "one dead letter per work message", func() bool {
		dlq, err := js.Stream(ctx, messages.DeadLetterStream)
		if err != nil {
			return false
		}
		info, err := dlq.Info(ctx)
		return err == nil && info.State.Msgs == uint64(work)
	})

	after, rev2, err := s.store.GetStatus(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	_, episodes2, err := s.store.LoadHistory(ctx, id, after.ExecutionID)
	if err != nil {
		t.Fatal(err)
	}
	if rev2 != rev || episodes2 != episodes {
		t.Fatalf("random bytes changed the instance: status revision %d → %d, episodes %d → %d", rev, rev2, episodes, episodes2)
	}
	r := do(t, http.MethodPost, s.base+"instances/"+id+"/raiseEvent/CitySelected", "application/json", []byte(`"Seattle"`))
	if r.code != http.StatusAccepted {
		t.Fatalf("raise: %d %s", r.code, r.body)
	}
	st := s.await(t, id, "Completed", func(st statusBody) bool { return st.RuntimeStatus == "Completed" })
	if !jsonEq(t, st.Output, `"Seattle"`) {
		t.Errorf("output %s", st.Output)
	}
}
