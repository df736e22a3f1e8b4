package messages

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

func TestRoundTrip(t *testing.T) {
	minimal := map[string]any{
		"OrchestratorWork": &OrchestratorWork{V: SchemaVersion, InstanceID: "i", Events: []Event{{Type: EventRaised, Timestamp: t0}}},
		"ActivityTask":     &ActivityTask{V: SchemaVersion, InstanceID: "i", Name: "n"},
		"Delayed":          &Delayed{V: SchemaVersion, Subject: ActivitySubject("i")},
		"Command":          &Command{V: SchemaVersion, Kind: CmdPurge},
		"Reply":            &Reply{V: SchemaVersion},
		"Status":           &Status{V: SchemaVersion, RuntimeStatus: StatusPending},
		"Episode":          &Episode{V: SchemaVersion},
	}
	for _, d := range decoders {
		for _, tc := range []struct {
			name string
			in   any
		}{{"full", d.sample()}, {"minimal", minimal[d.name]}} {
			t.Run(d.name+"/"+tc.name, func(t *testing.T) {
				b, err := Encode(tc.in)
				if err != nil {
					t.Fatalf("Encode: %v", err)
				}
				got, err := d.decode(b)
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if reflect.TypeOf(got) != reflect.TypeOf(tc.in) {
					t.Fatalf("decoded a %T, want %T", got, tc.in)
				}
				if !reflect.DeepEqual(normalize(got), tc.in) {
					t.Errorf("round trip changed the value:\n got %+v\nwant %+v", got, tc.in)
				}
				// Encoding is deterministic: the decoded value encodes to the same bytes.
				b2, err := Encode(got)
				if err != nil {
					t.Fatalf("re-Encode: %v", err)
				}
				if !bytes.Equal(b, b2) {
					t.Errorf("re-encoding differs:\n%x\n%x", b, b2)
				}
			})
		}
	}
}

func TestRoundTripTimes(t *testing.T) {
	// Times far from the epoch use the 12-byte msgpack form, recent ones the
	// 4- and 8-byte forms; all must come back as the same instant.
	for _, tm := range []time.Time{
		{},
		time.Unix(0, 0).UTC(),
		time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2030, 1, 1, 0, 0, 0, 1, time.UTC),
		time.Date(1969, 7, 20, 20, 17, 40, 0, time.UTC),
		time.Date(2600, 1, 1, 0, 0, 0, 999999999, time.UTC),
		time.Now().UTC().Truncate(time.Microsecond),
	} {
		in := &Status{V: SchemaVersion, RuntimeStatus: StatusRunning, CreatedAt: tm, LastUpdatedAt: tm}
		b, err := Encode(in)
		if err != nil {
			t.Fatal(err)
		}
		out, err := DecodeStatus(b)
		if err != nil {
			t.Fatalf("%v: %v", tm, err)
		}
		if !out.CreatedAt.Equal(tm) || out.CreatedAt.IsZero() != tm.IsZero() {
			t.Errorf("time %v came back as %v", tm, out.CreatedAt)
		}
	}
}

func TestEncodeResultIsOwned(t *testing.T) {
	a, err := Encode(sampleReply())
	if err != nil {
		t.Fatal(err)
	}
	keep := bytes.Clone(a)
	if _, err := Encode(sampleStatus()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, keep) {
		t.Fatal("a later Encode overwrote the bytes an earlier one returned")
	}
}

func TestEncodeError(t *testing.T) {
	if _, err := Encode(make(chan int)); err == nil {
		t.Fatal("Encode of a channel succeeded")
	}
}

// setVersion sets the V field of an envelope.
func setVersion(v any, ver uint8) {
	reflect.ValueOf(v).Elem().FieldByName("V").SetUint(uint64(ver))
}

func TestRejectVersion(t *testing.T) {
	for _, d := range decoders {
		for _, ver := range []uint8{0, SchemaVersion + 1, 255} {
			in := d.sample()
			setVersion(in, ver)
			b, err := Encode(in)
			if err != nil {
				t.Fatal(err)
			}
			got, err := d.decode(b)
			if !errors.Is(err, ErrVersion) {
				t.Errorf("%s v%d: err = %v, want ErrVersion", d.name, ver, err)
			}
			if got != nil {
				t.Errorf("%s v%d: returned a value with the error", d.name, ver)
			}
		}
	}
}

func TestRejectTruncated(t *testing.T) {
	for _, d := range decoders {
		b, err := Encode(d.sample())
		if err != nil {
			t.Fatal(err)
		}
		for n := 0; n < len(b); n++ {
			got, err := d.decode(b[:n])
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s truncated to %d of %d bytes: err = %v, want ErrMalformed", d.name, n, len(b), err)
			}
			if got != nil {
				t.Fatalf("%s truncated to %d bytes: returned a value with the error", d.name, n)
			}
		}
	}
}

func TestRejectTrailingBytes(t *testing.T) {
	for _, d := range decoders {
		b, err := Encode(d.sample())
		if err != nil {
			t.Fatal(err)
		}
		for _, tail := range [][]byte{{0xc0}, {0x00}, b} {
			_, err := d.decode(append(bytes.Clone(b), tail...))
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("%s with %d trailing bytes: err = %v, want ErrMalformed", d.name, len(tail), err)
			}
		}
	}
}

func TestRejectGarbage(t *testing.T) {
	fixed := [][]byte{
		nil,
		{0xff},
		{0xc1},                                 // never used in msgpack
		[]byte("hello, world"),                 // fixint + str garbage
		[]byte(`{"v":1,"iid":"x"}`),            // JSON, not msgpack
		{0x81, 0xa1, 'v'},                      // map with a key and no value
		{0x81, 0xa1, 'v', 0xa3, 'o', 'n', 'e'}, // v is a string
		{0x82, 0xa1, 'v', 0x01, 0xa2, 'e', 'v', 0x01},   // events is an int (Work, Episode); unknown key elsewhere
		{0xdf, 0xff, 0xff, 0xff, 0xff},                  // map claiming 4G entries
		{0x81, 0xa1, 'v', 0xc6, 0xff, 0xff, 0xff, 0xff}, // bin claiming 4 GB
	}
	for _, d := range decoders {
		for _, b := range fixed {
			got, err := d.decode(b)
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("%s(%x): err = %v, want ErrMalformed", d.name, b, err)
			}
			if got != nil {
				t.Errorf("%s(%x): returned a value with the error", d.name, b)
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 3000; i++ {
		b := make([]byte, rng.IntN(80))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		for _, d := range decoders {
			got, err := d.decode(b)
			switch {
			case err == nil:
				t.Errorf("%s accepted random bytes %x as %+v", d.name, b, got)
			case !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersion):
				t.Errorf("%s(%x): err = %v, want ErrMalformed", d.name, b, err)
			case got != nil:
				t.Errorf("%s(%x): returned a value with the error", d.name, b)
			}
		}
	}
}

// reencodeGeneric decodes b into a generic map, lets edit change it, and
// encodes it again.
func reencodeGeneric(t *testing.T, b []byte, edit func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := msgpack.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, err := msgpack.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRejectUnknownField(t *testing.T) {
	for _, d := range decoders {
		b, err := Encode(d.sample())
		if err != nil {
			t.Fatal(err)
		}
		// Sanity: the generic re-encoding alone is still accepted, so the
		// rejection below is due to the extra field.
		if _, err := d.decode(reencodeGeneric(t, b, func(map[string]any) {})); err != nil {
			t.Fatalf("%s: generic re-encoding rejected: %v", d.name, err)
		}
		_, err = d.decode(reencodeGeneric(t, b, func(m map[string]any) { m["zz"] = 1 }))
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s with unknown field: err = %v, want ErrMalformed", d.name, err)
		}
	}
	// An unknown field inside a nested event is refused too.
	for _, d := range decoders[:] {
		if d.name != "OrchestratorWork" && d.name != "Episode" {
			continue
		}
		b, _ := Encode(d.sample())
		_, err := d.decode(reencodeGeneric(t, b, func(m map[string]any) {
			m["ev"].([]any)[1].(map[string]any)["bogus"] = "x"
		}))
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s with unknown event field: err = %v, want ErrMalformed", d.name, err)
		}
	}
}

func mustEncode(t *testing.T, v any) []byte {
	t.Helper()
	b, err := Encode(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRejectInvalidContent(t *testing.T) {
	work := func(f func(w *OrchestratorWork)) []byte {
		w := sampleWork()
		f(w)
		return mustEncode(t, w)
	}
	episode := func(f func(e *Episode)) []byte {
		e := sampleEpisode()
		f(e)
		return mustEncode(t, e)
	}
	task := func(f func(a *ActivityTask)) []byte {
		a := sampleTask()
		f(a)
		return mustEncode(t, a)
	}
	delayed := func(subj string) []byte {
		d := sampleDelayed()
		d.Subject = subj
		return mustEncode(t, d)
	}
	cmd := func(k CommandKind) []byte {
		c := sampleCommand()
		c.Kind = k
		return mustEncode(t, c)
	}
	reply := func(c ErrorCode) []byte {
		r := sampleReply()
		r.Code = c
		return mustEncode(t, r)
	}
	status := func(s RuntimeStatus) []byte {
		st := sampleStatus()
		st.RuntimeStatus = s
		return mustEncode(t, st)
	}
	work0 := func(b []byte) (any, error) { return nilIfErr(DecodeOrchestratorWork(b)) }
	ep0 := func(b []byte) (any, error) { return nilIfErr(DecodeEpisode(b)) }
	task0 := func(b []byte) (any, error) { return nilIfErr(DecodeActivityTask(b)) }
	del0 := func(b []byte) (any, error) { return nilIfErr(DecodeDelayed(b)) }
	cmd0 := func(b []byte) (any, error) { return nilIfErr(DecodeCommand(b)) }
	rep0 := func(b []byte) (any, error) { return nilIfErr(DecodeReply(b)) }
	st0 := func(b []byte) (any, error) { return nilIfErr(DecodeStatus(b)) }

	for _, tc := range []struct {
		name   string
		b      []byte
		decode func([]byte) (any, error)
	}{
		{"work/event type 0", work(func(w *OrchestratorWork) { w.Events[3].Type = EventInvalid }), work0},
		{"work/event type unknown", work(func(w *OrchestratorWork) { w.Events[0].Type = eventTypeEnd }), work0},
		{"work/event type 255", work(func(w *OrchestratorWork) { w.Events[0].Type = 255 }), work0},
		{"work/event status unknown", work(func(w *OrchestratorWork) { w.Events[0].Status = statusEnd }), work0},
		{"work/no events", work(func(w *OrchestratorWork) { w.Events = nil }), work0},
		{"work/empty instance ID", work(func(w *OrchestratorWork) { w.InstanceID = "" }), work0},
		{"work/instance ID with dot", work(func(w *OrchestratorWork) { w.InstanceID = "a.b" }), work0},
		{"work/instance ID with wildcard", work(func(w *OrchestratorWork) { w.InstanceID = ">" }), work0},
		{"work/instance ID with space", work(func(w *OrchestratorWork) { w.InstanceID = "a b" }), work0},
		{"work/instance ID bad UTF-8", work(func(w *OrchestratorWork) { w.InstanceID = "a\xffb" }), work0},
		{"episode/event type 0", episode(func(e *Episode) { e.Events[5].Type = 0 }), ep0},
		{"episode/event type unknown", episode(func(e *Episode) { e.Events[5].Type = 77 }), ep0},
		{"episode/event status unknown", episode(func(e *Episode) { e.Events[5].Status = 200 }), ep0},
		{"task/bad instance ID", task(func(a *ActivityTask) { a.InstanceID = "x*" }), task0},
		{"task/empty name", task(func(a *ActivityTask) { a.Name = "" }), task0},
		{"task/name with newline", task(func(a *ActivityTask) { a.Name = "a\nb" }), task0},
		{"delayed/not a work subject", delayed("other.subject"), del0},
		{"delayed/empty subject", delayed(""), del0},
		{"delayed/no token", delayed("jetflow.orch."), del0},
		{"delayed/two tokens", delayed("jetflow.orch.a.b"), del0},
		{"delayed/wildcard", delayed("jetflow.act.*"), del0},
		{"delayed/full wildcard", delayed("jetflow.orch.>"), del0},
		{"delayed/command subject", delayed(CommandSubject(CmdStart)), del0},
		{"delayed/delay subject", delayed(DelaySubject("x")), del0},
		{"command/kind 0", cmd(CmdInvalid), cmd0},
		{"command/kind unknown", cmd(cmdEnd), cmd0},
		{"command/kind 255", cmd(255), cmd0},
		{"reply/code unknown", reply(codeEnd), rep0},
		{"reply/code 255", reply(255), rep0},
		{"status/status 0", status(StatusInvalid), st0},
		{"status/status unknown", status(statusEnd), st0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.decode(tc.b)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			if got != nil {
				t.Fatal("returned a value with the error")
			}
		})
	}
}

func TestAcceptBoundaryContent(t *testing.T) {
	// The valid edges of what the checks above refuse.
	d := sampleDelayed()
	d.Subject = ActivitySubject("a.b*c>d é")
	if _, err := DecodeDelayed(mustEncode(t, d)); err != nil {
		t.Errorf("activity subject of an escaped ID refused: %v", err)
	}
	w := sampleWork()
	w.Events = w.Events[:1]
	w.Events[0].Status = 0
	if _, err := DecodeOrchestratorWork(mustEncode(t, w)); err != nil {
		t.Errorf("one event with no status refused: %v", err)
	}
	c := sampleCommand()
	c.InstanceID = ""
	c.Kind = CmdStart
	if _, err := DecodeCommand(mustEncode(t, c)); err != nil {
		t.Errorf("start with no instance ID refused: %v", err)
	}
	r := sampleReply()
	r.Code = codeEnd - 1
	if _, err := DecodeReply(mustEncode(t, r)); err != nil {
		t.Errorf("last error code refused: %v", err)
	}
	e := &Episode{V: SchemaVersion, Events: []Event{}}
	if _, err := DecodeEpisode(mustEncode(t, e)); err != nil {
		t.Errorf("empty episode refused: %v", err)
	}
}

func TestRejectHugeLengthClaims(t *testing.T) {
	// A few bytes that claim billions of elements must be refused before
	// anything is allocated for them: msgpack would otherwise make a slice
	// of that many events and the process would die of out-of-memory,
	// which no recover catches.
	inputs := map[string][]byte{
		"array struct, events array32": {0x92, 0x01, 0xdd, 0xff, 0xff, 0xff, 0xff},
		"fuzz crasher":                 []byte("\x92\x00\xdd\xdd\xdd\xdd\xdd\x7f"),
		"map, events array32":          {0x82, 0xa1, 'v', 0x01, 0xa2, 'e', 'v', 0xdd, 0x7f, 0xff, 0xff, 0xff},
		"map, events array16":          {0x82, 0xa1, 'v', 0x01, 0xa2, 'e', 'v', 0xdc, 0xff, 0xff, 0x80},
		"work, events array32":         {0x84, 0xa1, 'v', 0x01, 0xa3, 'i', 'i', 'd', 0xa1, 'x', 0xa4, 'e', 'x', 'e', 'c', 0xa0, 0xa2, 'e', 'v', 0xdd, 0x10, 0, 0, 0},
		"map32 envelope":               {0xdf, 0x7f, 0xff, 0xff, 0xff, 0xa1, 'v', 0x01},
		"nested array32":               {0x91, 0x91, 0xdd, 0xff, 0xff, 0xff, 0xff, 0x80},
	}
	for name, b := range inputs {
		for _, d := range decoders {
			if _, err := d.decode(b); !errors.Is(err, ErrMalformed) {
				t.Errorf("%s: %s: err = %v, want ErrMalformed", name, d.name, err)
			}
		}
	}
}

func TestRejectDeepNesting(t *testing.T) {
	b := bytes.Repeat([]byte{0x91}, 200000) // [[[[...]]]]
	b = append(b, 0xc0)
	for _, d := range decoders {
		if _, err := d.decode(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", d.name, err)
		}
	}
}
