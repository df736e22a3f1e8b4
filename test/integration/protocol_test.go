package integration

// TestProtocol drives jetflow the way a client in another language would,
// following docs/PROTOCOL.md only: plain NATS request-reply, KV reads and
// KV watches, with msgpack structs written here from the document rather
// than jetflow's own types. If the document and the code part ways, this
// test fails.

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/jetflow/jetflow/internal/natstest"
)

// Wire types, as PROTOCOL.md describes them.

type protoCommand struct {
	V     uint8  `msgpack:"v"`
	K     uint8  `msgpack:"k"`
	IID   string `msgpack:"iid,omitempty"`
	N     string `msgpack:"n,omitempty"`
	In    []byte `msgpack:"in,omitempty"`
	Why   string `msgpack:"why,omitempty"`
	NewID bool   `msgpack:"newid,omitempty"`
}

type protoReply struct {
	V    uint8  `msgpack:"v"`
	IID  string `msgpack:"iid"`
	Code uint8  `msgpack:"code"`
	Err  string `msgpack:"err"`
}

type protoFailure struct {
	Type  string `msgpack:"type"`
	Msg   string `msgpack:"msg"`
	Retry bool   `msgpack:"retry"`
	Cause string `msgpack:"cause"`
}

type protoStatus struct {
	V    uint8         `msgpack:"v"`
	IID  string        `msgpack:"iid"`
	N    string        `msgpack:"n"`
	Exec string        `msgpack:"exec"`
	St   uint8         `msgpack:"st"`
	In   []byte        `msgpack:"in"`
	Out  []byte        `msgpack:"out"`
	CS   []byte        `msgpack:"cs"`
	F    *protoFailure `msgpack:"f"`
	CT   time.Time     `msgpack:"ct"`
	UT   time.Time     `msgpack:"ut"`
	Ep   uint64        `msgpack:"ep"`
}

type protoParent struct {
	ID   string `msgpack:"id"`
	Exec string `msgpack:"exec"`
	Task int32  `msgpack:"task"`
}

type protoRetry struct {
	First    int64   `msgpack:"first"`
	Coef     float64 `msgpack:"coef"`
	Max      int64   `msgpack:"max"`
	Attempts int64   `msgpack:"attempts"`
}

type protoEvent struct {
	T    uint8         `msgpack:"t"`
	TS   time.Time     `msgpack:"ts"`
	ID   int32         `msgpack:"id"`
	N    string        `msgpack:"n"`
	In   []byte        `msgpack:"in"`
	Out  []byte        `msgpack:"out"`
	F    *protoFailure `msgpack:"f"`
	At   time.Time     `msgpack:"at"`
	IID  string        `msgpack:"iid"`
	Exec string        `msgpack:"exec"`
	P    *protoParent  `msgpack:"p"`
	EID  string        `msgpack:"eid"`
	St   uint8         `msgpack:"st"`
	Why  string        `msgpack:"why"`
	RP   *protoRetry   `msgpack:"rp"`
}

type protoEpisode struct {
	V  uint8        `msgpack:"v"`
	Ev []protoEvent `msgpack:"ev"`
}

// Numbers from the document's tables.
const (
	pkStart, pkRaise, pkTerminate, pkSuspend, pkResume, pkPurge, pkRewind, pkRestart = 1, 2, 3, 4, 5, 6, 7, 8

	pcOK, pcBadRequest, pcNotFound, pcConflict, pcGone, pcInternal, pcTooLarge = 0, 1, 2, 3, 4, 5, 6

	psPending, psRunning, psCompleted, psContinuedAsNew, psFailed, psTerminated, psSuspended = 1, 2, 3, 4, 5, 6, 7

	peExecutionStarted, peTaskScheduled, peTaskCompleted, peExecutionCompleted, peOrchestratorStarted, peOrchestratorCompleted = 1, 2, 3, 12, 17, 18
)

var protoKindNames = map[uint8]string{1: "start", 2: "raise", 3: "terminate", 4: "suspend", 5: "resume", 6: "purge", 7: "rewind", 8: "restart"}

// The worked example of PROTOCOL.md §7.
const (
	protoStartHex = "84a17601a16b01a3696964a768656c6c6f2d31a16eb045315f48656c6c6f53657175656e6365"
	protoReplyHex = "82a17601a3696964a768656c6c6f2d31"
)

// protoToken is the document's token encoding: [A-Za-z0-9_-] as is, every
// other byte as '=' and two upper-case hex digits.
func protoToken(id string) string {
	var b strings.Builder
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "=%02X", c)
		}
	}
	return b.String()
}

// protoDecode decodes strictly, as jetflow does: an unknown field or a
// trailing byte is an error, so a field the document leaves out is caught.
func protoDecode(t *testing.T, b []byte, v any) {
	t.Helper()
	r := bytes.NewReader(b)
	dec := msgpack.NewDecoder(r)
	dec.DisallowUnknownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %T from %x: %v", v, b, err)
	}
	if r.Len() != 0 {
		t.Fatalf("decode %T: %d trailing bytes", v, r.Len())
	}
}

func protoRaw(t *testing.T, nc *nats.Conn, subject string, payload []byte) []byte {
	t.Helper()
	m, err := nc.Request(subject, payload, 10*time.Second)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	return m.Data
}

func protoSend(t *testing.T, nc *nats.Conn, c protoCommand) protoReply {
	t.Helper()
	if c.V == 0 {
		c.V = 1
	}
	b, err := msgpack.Marshal(&c) // plain encoding, not compact ints: also accepted
	if err != nil {
		t.Fatal(err)
	}
	var r protoReply
	protoDecode(t, protoRaw(t, nc, "jetflow.cmd."+protoKindNames[c.K], b), &r)
	if r.V != 1 {
		t.Fatalf("reply v = %d", r.V)
	}
	return r
}

func protoExpect(t *testing.T, nc *nats.Conn, c protoCommand, code uint8) protoReply {
	t.Helper()
	r := protoSend(t, nc, c)
	if r.Code != code {
		t.Fatalf("%s %q: code %d (%s), want %d", protoKindNames[c.K], c.IID, r.Code, r.Err, code)
	}
	if code == pcOK && (r.IID == "" || r.Err != "") {
		t.Fatalf("%s %q: OK reply %+v", protoKindNames[c.K], c.IID, r)
	}
	if code != pcOK && r.Err == "" {
		t.Fatalf("%s %q: error reply without err: %+v", protoKindNames[c.K], c.IID, r)
	}
	return r
}

func protoGet(t *testing.T, kv jetstream.KeyValue, id string) (protoStatus, bool) {
	t.Helper()
	e, err := kv.Get(context.Background(), protoToken(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return protoStatus{}, false
	}
	if err != nil {
		t.Fatalf("get status of %q: %v", id, err)
	}
	var st protoStatus
	protoDecode(t, e.Value(), &st)
	return st, true
}

// protoWatch watches the status key until cond holds.
func protoWatch(t *testing.T, kv jetstream.KeyValue, id string, cond func(protoStatus) bool) protoStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := kv.Watch(ctx, protoToken(id))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	var last protoStatus
	for {
		select {
		case <-ctx.Done():
			t.Fatalf("watch %q: timed out; last status %+v", id, last)
		case e, ok := <-w.Updates():
			if !ok {
				t.Fatalf("watch %q closed", id)
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			protoDecode(t, e.Value(), &last)
			if cond(last) {
				return last
			}
		}
	}
}

func protoIs(sts ...uint8) func(protoStatus) bool {
	return func(s protoStatus) bool {
		for _, st := range sts {
			if s.St == st {
				return true
			}
		}
		return false
	}
}

func protoTerminal(s protoStatus) bool {
	return s.St == psCompleted || s.St == psFailed || s.St == psTerminated
}

func TestProtocol(t *testing.T) {
	s := startStack(t)
	nc, js := natstest.Connect(t, s.srv)
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, "jetflow-status")
	if err != nil {
		t.Fatal(err)
	}
	hist, err := js.KeyValue(ctx, "jetflow-history")
	if err != nil {
		t.Fatal(err)
	}

	// §7: the exact bytes of the worked example, both ways.
	req, _ := hex.DecodeString(protoStartHex)
	rep := protoRaw(t, nc, "jetflow.cmd.start", req)
	if got := hex.EncodeToString(rep); got != protoReplyHex {
		t.Fatalf("start reply = %s, want %s", got, protoReplyHex)
	}
	st := protoWatch(t, kv, "hello-1", protoTerminal)
	if st.St != psCompleted || st.IID != "hello-1" || st.N != "E1_HelloSequence" || st.V != 1 {
		t.Fatalf("hello-1 status %+v", st)
	}
	if !jsonEq(t, st.In, `null`) || !jsonEq(t, st.Out, `["Hello Tokyo!","Hello Seattle!","Hello London!"]`) || !jsonEq(t, st.CS, `"London"`) {
		t.Fatalf("hello-1 in %s out %s cs %s", st.In, st.Out, st.CS)
	}
	if st.CT.IsZero() || st.UT.Before(st.CT) || st.Ep == 0 || len(st.Exec) != 32 {
		t.Fatalf("hello-1 times, episode or run ID: %+v", st)
	}

	// §5: the history of that run, episode by episode.
	t.Run("history", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		prefix := protoToken("hello-1") + "." + protoToken(st.Exec) + "."
		w, err := hist.Watch(ctx, prefix+"*")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = w.Stop() }()
		var events []protoEvent
		n := 0
		for e := range w.Updates() {
			if e == nil {
				break
			}
			n++
			if e.Key() != fmt.Sprintf("%s%d", prefix, n) {
				t.Fatalf("episode key %s, want %s%d", e.Key(), prefix, n)
			}
			var ep protoEpisode
			protoDecode(t, e.Value(), &ep)
			if ep.V != 1 || len(ep.Ev) == 0 || ep.Ev[0].T != peOrchestratorStarted || ep.Ev[len(ep.Ev)-1].T != peOrchestratorCompleted {
				t.Fatalf("episode %d: %+v", n, ep)
			}
			events = append(events, ep.Ev...)
		}
		if uint64(n) != st.Ep {
			t.Errorf("%d episodes, status says %d", n, st.Ep)
		}
		count := map[uint8]int{}
		for _, ev := range events {
			count[ev.T]++
			if ev.TS.IsZero() {
				t.Errorf("event %d has no timestamp", ev.T)
			}
		}
		if events[1].T != peExecutionStarted || events[1].N != "E1_HelloSequence" || events[1].Exec != st.Exec {
			t.Errorf("second event %+v, want ExecutionStarted", events[1])
		}
		if count[peTaskScheduled] != 3 || count[peTaskCompleted] != 3 || count[peExecutionCompleted] != 1 {
			t.Errorf("event counts %v", count)
		}
		for _, ev := range events {
			if ev.T == peExecutionCompleted && (ev.St != psCompleted || !jsonEq(t, ev.Out, string(st.Out))) {
				t.Errorf("ExecutionCompleted %+v", ev)
			}
		}
	})

	t.Run("token and raise", func(t *testing.T) {
		id := "proto:city/é"
		if tok := protoToken(id); tok != "proto=3Acity=2F=C3=A9" {
			t.Fatalf("token %s", tok)
		}
		r := protoExpect(t, nc, protoCommand{K: pkStart, IID: id, N: "CityRecommender", In: []byte(`1`)}, pcOK)
		if r.IID != id {
			t.Fatalf("start answered %q", r.IID)
		}
		protoExpect(t, nc, protoCommand{K: pkRaise, IID: id, N: "CitySelected", In: []byte(`"Tokyo"`)}, pcOK)
		st := protoWatch(t, kv, id, protoTerminal)
		if st.St != psCompleted || !jsonEq(t, st.Out, `"Tokyo"`) || !jsonEq(t, st.CS, `{"selectedCity":"Tokyo"}`) {
			t.Fatalf("status %+v out %s cs %s", st, st.Out, st.CS)
		}
		if _, err := kv.Get(ctx, "proto=3Acity=2F=C3=A9"); err != nil {
			t.Fatalf("status key by literal token: %v", err)
		}
		protoExpect(t, nc, protoCommand{K: pkRaise, IID: id, N: "CitySelected"}, pcGone)
	})

	t.Run("generated ID", func(t *testing.T) {
		r := protoExpect(t, nc, protoCommand{K: pkStart, N: "E1_HelloSequence", In: []byte(`{"ignored": true}`)}, pcOK)
		if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(r.IID) {
			t.Fatalf("generated ID %q", r.IID)
		}
		protoWatch(t, kv, r.IID, protoIs(psCompleted))
	})

	t.Run("suspend resume terminate purge", func(t *testing.T) {
		id := "proto-timer"
		protoExpect(t, nc, protoCommand{K: pkStart, IID: id, N: "SetStatusTest", In: []byte(`60`)}, pcOK)
		protoWatch(t, kv, id, func(s protoStatus) bool { return s.St == psRunning && len(s.CS) > 0 })
		// Busy: the same ID cannot be started again, with any input.
		// PROTOCOL.md §7: an error reply to start names the instance too.
		if r := protoExpect(t, nc, protoCommand{K: pkStart, IID: id, N: "SetStatusTest", In: []byte(`60`)}, pcConflict); r.IID != id || r.Err != `instance "proto-timer" already exists and is Running` {
			t.Fatalf("conflict reply %+v", r)
		}
		protoExpect(t, nc, protoCommand{K: pkRestart, IID: id}, pcConflict)
		protoExpect(t, nc, protoCommand{K: pkPurge, IID: id}, pcConflict)
		protoExpect(t, nc, protoCommand{K: pkRewind, IID: id}, pcBadRequest)
		protoExpect(t, nc, protoCommand{K: pkSuspend, IID: id, Why: "pause"}, pcOK)
		protoWatch(t, kv, id, protoIs(psSuspended))
		protoExpect(t, nc, protoCommand{K: pkResume, IID: id, Why: "go on"}, pcOK)
		protoWatch(t, kv, id, protoIs(psRunning))
		protoExpect(t, nc, protoCommand{K: pkTerminate, IID: id, Why: "enough"}, pcOK)
		st := protoWatch(t, kv, id, protoTerminal)
		if st.St != psTerminated {
			t.Fatalf("status %+v", st)
		}
		for _, k := range []uint8{pkRaise, pkTerminate, pkSuspend, pkResume} {
			protoExpect(t, nc, protoCommand{K: k, IID: id, N: "x"}, pcGone)
		}
		protoExpect(t, nc, protoCommand{K: pkPurge, IID: id}, pcOK)
		if _, ok := protoGet(t, kv, id); ok {
			t.Fatal("status record still there after purge")
		}
		protoExpect(t, nc, protoCommand{K: pkPurge, IID: id}, pcNotFound)
	})

	t.Run("failed and rewind", func(t *testing.T) {
		id := "proto-fail"
		protoExpect(t, nc, protoCommand{K: pkStart, IID: id, N: "CityRecommender", In: []byte(`7`)}, pcOK)
		st := protoWatch(t, kv, id, protoTerminal)
		if st.St != psFailed || st.F == nil || !strings.Contains(st.F.Msg, "choice 7") || !jsonEq(t, st.Out, fmt.Sprintf("%q", st.F.Msg)) {
			t.Fatalf("status %+v out %s", st, st.Out)
		}
		protoExpect(t, nc, protoCommand{K: pkRaise, IID: id, N: "CitySelected"}, pcGone)
		protoExpect(t, nc, protoCommand{K: pkRewind, IID: id, Why: "try again"}, pcOK)
		// The rewound run is <exec>_r1; this orchestrator fails again in it.
		again := protoWatch(t, kv, id, func(s protoStatus) bool { return s.Exec == st.Exec+"_r1" && protoTerminal(s) })
		if again.St != psFailed || !again.CT.Equal(st.CT) {
			t.Fatalf("rewound status %+v", again)
		}
	})

	t.Run("restart", func(t *testing.T) {
		r := protoExpect(t, nc, protoCommand{K: pkRestart, IID: "hello-1", NewID: true}, pcOK)
		if r.IID == "hello-1" || len(r.IID) != 32 {
			t.Fatalf("restart with newid answered %q", r.IID)
		}
		protoWatch(t, kv, r.IID, protoIs(psCompleted))
		r = protoExpect(t, nc, protoCommand{K: pkRestart, IID: "hello-1"}, pcOK)
		if r.IID != "hello-1" {
			t.Fatalf("restart answered %q", r.IID)
		}
		again := protoWatch(t, kv, "hello-1", func(s protoStatus) bool { return s.Exec != st.Exec && s.St == psCompleted })
		if !jsonEq(t, again.In, `null`) {
			t.Fatalf("restarted input %s", again.In)
		}
		protoExpect(t, nc, protoCommand{K: pkRestart, IID: "nobody"}, pcNotFound)
	})

	t.Run("errors", func(t *testing.T) {
		protoExpect(t, nc, protoCommand{K: pkStart, IID: "x", N: "NoSuchOrchestrator"}, pcBadRequest)
		protoExpect(t, nc, protoCommand{K: pkStart, IID: "a.b", N: "E1_HelloSequence"}, pcBadRequest)
		protoExpect(t, nc, protoCommand{K: pkStart, IID: "x", N: "E1_HelloSequence", In: []byte(`{not json`)}, pcBadRequest)
		protoExpect(t, nc, protoCommand{K: pkRaise, IID: "nobody", N: "e"}, pcNotFound)
		protoExpect(t, nc, protoCommand{K: pkTerminate, IID: "nobody"}, pcNotFound)
		protoExpect(t, nc, protoCommand{K: pkRewind, IID: "nobody"}, pcNotFound)
		protoExpect(t, nc, protoCommand{K: pkTerminate}, pcBadRequest) // no instance ID

		big := append(append([]byte{'"'}, bytes.Repeat([]byte{'a'}, 4<<20)...), '"') // over half of 8 MiB
		protoExpect(t, nc, protoCommand{K: pkStart, IID: "big", N: "E1_HelloSequence", In: big}, pcTooLarge)

		bad := func(what string, payload []byte, subject string) {
			t.Helper()
			var r protoReply
			protoDecode(t, protoRaw(t, nc, subject, payload), &r)
			if r.Code != pcBadRequest || r.Err == "" {
				t.Errorf("%s: reply %+v, want BadRequest", what, r)
			}
		}
		good, _ := msgpack.Marshal(map[string]any{"v": 1, "k": pkTerminate, "iid": "x"})
		bad("wrong subject", good, "jetflow.cmd.start")
		bad("unknown subject", good, "jetflow.cmd.nosuch")
		unknown, _ := msgpack.Marshal(map[string]any{"v": 1, "k": pkTerminate, "iid": "x", "extra": 1})
		bad("unknown field", unknown, "jetflow.cmd.terminate")
		bad("trailing byte", append(bytes.Clone(good), 0xc0), "jetflow.cmd.terminate")
		v2, _ := msgpack.Marshal(map[string]any{"v": 2, "k": pkTerminate, "iid": "x"})
		bad("version 2", v2, "jetflow.cmd.terminate")
		k0, _ := msgpack.Marshal(map[string]any{"v": 1, "k": 0, "iid": "x"})
		bad("kind 0", k0, "jetflow.cmd.invalid")
		bad("not msgpack", []byte("{}"), "jetflow.cmd.start")
	})
}

// TestProtocolPending checks the Pending-state rules with no worker, so
// that instances stay Pending.
func TestProtocolPending(t *testing.T) {
	s := startStackWith(t, stackOptions{noWorker: true})
	nc, js := natstest.Connect(t, s.srv)
	kv, err := js.KeyValue(context.Background(), "jetflow-status")
	if err != nil {
		t.Fatal(err)
	}
	id := "proto-pending"
	start := protoCommand{K: pkStart, IID: id, N: "ReserveTicket", In: []byte(`"u1"`)}
	protoExpect(t, nc, start, pcOK)
	st, ok := protoGet(t, kv, id)
	if !ok || st.St != psPending || st.Ep != 0 || !jsonEq(t, st.In, `"u1"`) {
		t.Fatalf("status after start: %+v", st)
	}
	// The same start again (a client retry) is idempotent.
	if r := protoExpect(t, nc, start, pcOK); r.IID != id {
		t.Fatalf("repeated start answered %q", r.IID)
	}
	if again, _ := protoGet(t, kv, id); again.Exec != st.Exec {
		t.Fatalf("repeated start made a new run")
	}
	// A different input (even the same JSON value spelt differently) conflicts.
	protoExpect(t, nc, protoCommand{K: pkStart, IID: id, N: "ReserveTicket", In: []byte(` "u1"`)}, pcConflict)
	// An empty input is stored as null, and matches a later "null".
	protoExpect(t, nc, protoCommand{K: pkStart, IID: "proto-null", N: "ReserveTicket"}, pcOK)
	protoExpect(t, nc, protoCommand{K: pkStart, IID: "proto-null", N: "ReserveTicket", In: []byte(`null`)}, pcOK)

	protoExpect(t, nc, protoCommand{K: pkRaise, IID: id, N: "BookingConfirmed", In: []byte(`true`)}, pcOK)
	protoExpect(t, nc, protoCommand{K: pkRewind, IID: id}, pcBadRequest)
	protoExpect(t, nc, protoCommand{K: pkPurge, IID: id}, pcConflict)
	// Restart under the same ID of a Pending instance is the same start.
	if r := protoExpect(t, nc, protoCommand{K: pkRestart, IID: id}, pcOK); r.IID != id {
		t.Fatalf("restart answered %q", r.IID)
	}
	if r := protoExpect(t, nc, protoCommand{K: pkRestart, IID: id, NewID: true}, pcOK); r.IID == id {
		t.Fatalf("restart with newid answered %q", r.IID)
	}
}

// TestProtocolNoResponders: with no dispatcher, a request gets NATS's
// no-responders status at once instead of a timeout.
func TestProtocolNoResponders(t *testing.T) {
	srv := natstest.Start(t)
	nc, _ := natstest.Connect(t, srv)
	req, _ := hex.DecodeString(protoStartHex)
	start := time.Now()
	_, err := nc.Request("jetflow.cmd.start", req, 5*time.Second)
	if !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("err = %v, want no responders", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("no-responders took %s", time.Since(start))
	}
}
