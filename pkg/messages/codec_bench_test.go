package messages_test

import (
	"testing"
	"time"

	"github.com/jetflow/jetflow/pkg/messages"
)

// Hot-path benchmarks of pkg/messages' encoding, on the records one
// E1_HelloSequence episode writes.

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func helloStatus() *messages.Status {
	return &messages.Status{V: messages.SchemaVersion, InstanceID: "hello-1", Name: "E1_HelloSequence", ExecutionID: messages.NewID(),
		RuntimeStatus: messages.StatusRunning, Input: []byte("null"), CustomStatus: []byte(`"Seattle"`),
		CreatedAt: t0, LastUpdatedAt: t0.Add(3 * time.Millisecond), Episode: 3}
}

// helloEpisode is the second episode of E1_HelloSequence: a result in, the
// next call out.
func helloEpisode() *messages.Episode {
	return &messages.Episode{V: messages.SchemaVersion, Events: []messages.Event{
		{Type: messages.EventOrchestratorStarted, Timestamp: t0},
		{Type: messages.EventTaskCompleted, Timestamp: t0, TaskID: 0, Result: []byte(`"Hello Tokyo!"`)},
		{Type: messages.EventTaskScheduled, Timestamp: t0, TaskID: 1, Name: "E1_SayHello", Input: []byte(`"Seattle"`)},
		{Type: messages.EventOrchestratorCompleted, Timestamp: t0},
	}}
}

func benchEncode(b *testing.B, v any) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := messages.Encode(v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeStatus(b *testing.B)  { benchEncode(b, helloStatus()) }
func BenchmarkEncodeEpisode(b *testing.B) { benchEncode(b, helloEpisode()) }

func BenchmarkDecodeStatus(b *testing.B) {
	raw, err := messages.Encode(helloStatus())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := messages.DecodeStatus(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeEpisode(b *testing.B) {
	raw, err := messages.Encode(helloEpisode())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := messages.DecodeEpisode(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeOrchestratorWork(b *testing.B) {
	w := &messages.OrchestratorWork{V: messages.SchemaVersion, InstanceID: "hello-1", ExecutionID: messages.NewID(),
		Events: []messages.Event{{Type: messages.EventTaskCompleted, Timestamp: t0, TaskID: 1, Result: []byte(`"Hello Seattle!"`)}}}
	raw, err := messages.Encode(w)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := messages.DecodeOrchestratorWork(raw); err != nil {
			b.Fatal(err)
		}
	}
}
