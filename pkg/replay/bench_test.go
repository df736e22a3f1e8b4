package replay

import (
	"fmt"
	"testing"
	"time"

	"github.com/jetflow/jetflow/pkg/messages"
)

// sequential calls activity "Step" over and over, one at a time.
func sequential(ctx *Context) (any, error) {
	for i := 0; ; i++ {
		if err := ctx.CallActivity("Step", i).Await(nil); err != nil {
			return nil, err
		}
	}
}

// sequentialHistory returns the committed history of the sequential
// orchestrator with at least n events, in whole episodes of four events:
// OrchestratorStarted, ExecutionStarted or TaskCompleted, TaskScheduled,
// OrchestratorCompleted.
func sequentialHistory(tb testing.TB, n int) []messages.Event {
	tb.Helper()
	in := New(sequential, Options{})
	defer in.Close()
	now := t0
	ep, err := in.Step(now, []messages.Event{started("")})
	if err != nil {
		tb.Fatal(err)
	}
	h := ep.Events
	for id := int32(0); len(h) < n; id++ {
		now = now.Add(time.Second)
		ep, err := in.Step(now, []messages.Event{completed(id, "")})
		if err != nil {
			tb.Fatal(err)
		}
		h = append(h, ep.Events...)
	}
	return h
}

func TestSequentialHistoryReplays(t *testing.T) {
	h := sequentialHistory(t, 1000)
	in := New(sequential, Options{})
	defer in.Close()
	if err := in.Replay(h); err != nil {
		t.Fatal(err)
	}
	o := in.Outstanding()
	if len(o) != 1 || o[0].Type != messages.EventTaskScheduled || int(o[0].TaskID) != len(h)/4-1 {
		t.Fatalf("after %d events outstanding %+v", len(h), acts(o))
	}
}

func BenchmarkReplay(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		h := sequentialHistory(b, n)
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				in := New(sequential, Options{})
				if err := in.Replay(h); err != nil {
					b.Fatal(err)
				}
				in.Close()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(h)), "ns/event")
		})
	}
}

func BenchmarkStepHot(b *testing.B) {
	in := New(sequential, Options{})
	defer in.Close()
	now := t0
	if _, err := in.Step(now, []messages.Event{started("")}); err != nil {
		b.Fatal(err)
	}
	id := int32(0)
	incoming := make([]messages.Event, 1)
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Second)
		incoming[0] = completed(id, "")
		ep, err := in.Step(now, incoming)
		if err != nil {
			b.Fatal(err)
		}
		if len(ep.Actions) != 1 || ep.Actions[0].TaskID != id+1 {
			b.Fatalf("step %d: actions %+v", id, acts(ep.Actions))
		}
		id++
	}
}
