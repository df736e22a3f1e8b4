package replay

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/jetflow/jetflow/pkg/messages"
)

// committedStatus returns the custom status an episode committed on its
// OrchestratorCompleted event, or nil when it left it unchanged.
func committedStatus(t *testing.T, ep *Episode) []byte {
	t.Helper()
	if len(ep.Events) == 0 {
		t.Fatal("empty episode")
	}
	last := ep.Events[len(ep.Events)-1]
	if last.Type != messages.EventOrchestratorCompleted {
		t.Fatalf("episode ends with %s", last.Type)
	}
	return last.Input
}

func TestCustomStatusLifecycle(t *testing.T) {
	fn := func(ctx *Context) (any, error) {
		must := func(err error) {
			if err != nil {
				panic(err)
			}
		}
		must(ctx.SetCustomStatus("a"))
		must(ctx.SetCustomStatus(map[string]int{"stage": 1})) // the last set before the await wins
		must(ctx.CallActivity("A", nil).Await(nil))
		must(ctx.SetCustomStatus("tmp"))
		must(ctx.SetCustomStatus(map[string]int{"stage": 1})) // back to the committed value: unchanged
		must(ctx.CallActivity("B", nil).Await(nil))
		must(ctx.SetCustomStatus(nil)) // clears
		must(ctx.CallActivity("C", nil).Await(nil))
		must(ctx.SetCustomStatus((*int)(nil))) // JSON null also clears: already clear, unchanged
		must(ctx.CallActivity("D", nil).Await(nil))
		must(ctx.SetCustomStatus("done"))
		return "ok", nil
	}
	r := newRun(t, fn)
	for i, tc := range []struct {
		in        ev
		committed string // "" for not recorded
		current   string // CustomStatus() after the episode; "" for nil
	}{
		{started(""), `{"stage":1}`, `{"stage":1}`},
		{completed(0, ""), "", `{"stage":1}`},
		{completed(1, ""), "null", ""},
		{completed(2, ""), "", ""},
		{completed(3, ""), `"done"`, `"done"`},
	} {
		ep := r.step(tc.in)
		if got := committedStatus(t, ep); string(got) != tc.committed || (tc.committed == "") != (got == nil) {
			t.Fatalf("episode %d committed custom status %q, want %q", i, got, tc.committed)
		}
		if got := r.hot.CustomStatus(); string(got) != tc.current || (tc.current == "") != (got == nil) {
			t.Fatalf("episode %d: CustomStatus() = %q, want %q", i, got, tc.current)
		}
	}
	if r.hot.RuntimeStatus() != messages.StatusCompleted {
		t.Fatalf("status %s", r.hot.RuntimeStatus())
	}
	// The value set before completing stays, also for a replay of the finished run.
	if cold := r.finalState(); string(cold.CustomStatus()) != `"done"` {
		t.Fatalf("replayed CustomStatus() = %q", cold.CustomStatus())
	}
}

func TestCustomStatusKeptAfterCompletionWhenUnchanged(t *testing.T) {
	r := newRun(t, func(ctx *Context) (any, error) {
		if err := ctx.SetCustomStatus("working"); err != nil {
			return nil, err
		}
		return nil, ctx.CallActivity("A", nil).Await(nil)
	})
	r.step(started(""))
	ep := r.step(completed(0, ""))
	if committedStatus(t, ep) != nil {
		t.Errorf("unchanged status re-recorded: %s", committedStatus(t, ep))
	}
	if got := string(r.hot.CustomStatus()); got != `"working"` {
		t.Fatalf("CustomStatus() after completion = %q", got)
	}
	if got := string(r.finalState().CustomStatus()); got != `"working"` {
		t.Fatalf("replayed CustomStatus() = %q", got)
	}
}

func TestCustomStatusTooLarge(t *testing.T) {
	// A JSON string of n ASCII characters is n+2 bytes of JSON text, and
	// twice that in UTF-16.
	maxChars := DefaultMaxCustomStatusBytes/2 - 2
	for _, tc := range []struct {
		name   string
		opts   Options
		fits   any
		tooBig any
	}{
		{"default limit", Options{}, strings.Repeat("x", maxChars), strings.Repeat("x", maxChars+1)},
		{"configured limit", Options{MaxCustomStatusBytes: 20}, "abcdefgh", "abcdefghi"},
		// "éé" is 6 bytes of UTF-8 JSON but 8 of UTF-16; "ééé" is 8 of UTF-8, 10 of UTF-16.
		{"BMP counted in UTF-16", Options{MaxCustomStatusBytes: 8}, "éé", "ééé"},
		// Astral characters are surrogate pairs: 4 bytes each. "😀😀" is
		// 10 bytes of UTF-8 JSON and 12 of UTF-16; "😀😀x" is 11 and 14.
		{"astral counted as pairs", Options{MaxCustomStatusBytes: 12}, "😀😀", "😀😀x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var errTooBig, errFits error
			fn := func(ctx *Context) (any, error) {
				if err := ctx.SetCustomStatus(7); err != nil {
					return nil, err
				}
				errTooBig = ctx.SetCustomStatus(tc.tooBig)
				if !errors.Is(errTooBig, ErrCustomStatusTooLarge) {
					return nil, errTooBig
				}
				// The orchestrator handles the error and goes on.
				if err := ctx.CallActivity("A", nil).Await(nil); err != nil {
					return nil, err
				}
				errFits = ctx.SetCustomStatus(tc.fits)
				return "survived", nil
			}
			r := newRunWith(t, func() Orchestrator { return fn }, tc.opts)
			ep := r.step(started(""))
			if !errors.Is(errTooBig, ErrCustomStatusTooLarge) {
				t.Fatalf("SetCustomStatus of an oversized value = %v, want ErrCustomStatusTooLarge", errTooBig)
			}
			if got := string(committedStatus(t, ep)); got != `7` {
				t.Fatalf("committed %q, want the previous value", got)
			}
			ep = r.step(completed(0, ""))
			if errFits != nil {
				t.Fatalf("SetCustomStatus of a value at the limit: %v", errFits)
			}
			if f := r.hot.Final(); f == nil || f.Status != messages.StatusCompleted || string(f.Result) != `"survived"` {
				t.Fatalf("final %+v", f)
			}
			if got, want := string(r.hot.CustomStatus()), string(mustJSON(t, tc.fits)); got != want {
				t.Fatalf("CustomStatus() = %.40q, want %.40q", got, want)
			}
		})
	}
}

func TestCustomStatusUnmarshalable(t *testing.T) {
	var got error
	r := newRun(t, func(ctx *Context) (any, error) {
		if err := ctx.SetCustomStatus(1); err != nil {
			return nil, err
		}
		got = ctx.SetCustomStatus(func() {})
		return nil, nil
	})
	ep := r.step(started(""))
	if got == nil || errors.Is(got, ErrCustomStatusTooLarge) {
		t.Fatalf("SetCustomStatus(func) = %v", got)
	}
	if string(committedStatus(t, ep)) != "1" {
		t.Fatalf("committed %s", committedStatus(t, ep))
	}
}

func TestUTF16Size(t *testing.T) {
	for _, tc := range []struct {
		text string
		want int
	}{
		{"", 0},
		{"a", 2},
		{`"abc"`, 10},
		{"é", 2},          // 2 bytes of UTF-8, one UTF-16 unit
		{"€", 2},          // 3 bytes of UTF-8, one unit
		{"\uffff", 2},     // last BMP code point
		{"😀", 4},          // 4 bytes of UTF-8, a surrogate pair
		{"\U00010000", 4}, // first astral code point
		{"a€😀", 2 + 2 + 4},
		{"\xff", 2},         // an invalid byte counts as U+FFFD
		{"\xed\xa0\x80", 6}, // an encoded lone surrogate is three invalid bytes
	} {
		if got := UTF16Size([]byte(tc.text)); got != tc.want {
			t.Errorf("UTF16Size(%q) = %d, want %d", tc.text, got, tc.want)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
