package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// The memory workload re-executes the test binary as its child worker.
func TestMain(m *testing.M) {
	if IsChild() {
		os.Exit(ChildMain())
	}
	os.Exit(m.Run())
}

// tiny is a whole run at sizes a test can afford.
func tiny(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.Warmup = 5
	cfg.OpTimeout = 30 * time.Second
	cfg.FloorDuration = 300 * time.Millisecond
	cfg.FloorSyncPublishes = 50
	cfg.HelloConcurrency = []int{1, 10}
	cfg.HelloCount = 20
	cfg.OpenLoopRates = []int{20, 40}
	cfg.OpenLoopStep = 500 * time.Millisecond
	cfg.FanOut = 50
	cfg.FanOutRuns = 2
	cfg.LongSteps = 50
	cfg.ColdEvents = 200
	cfg.StatusClients = 10
	cfg.StatusDuration = 300 * time.Millisecond
	cfg.StatusInstances = 5
	cfg.StatusRates = []int{200}
	cfg.WatchConcurrency = []int{1, 3}
	cfg.WatchUpdates = 5
	cfg.MemoryInstances = 50
	cfg.MemoryCleanup = true
	cfg.IdleTimeout = 2 * time.Second
	cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	cfg.Progress = t.Logf
	return cfg
}

// TestRunTiny runs every workload on tiny settings against an embedded
// server and checks that the report is well-formed. It asserts nothing
// about speed.
func TestRunTiny(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := tiny(t)
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Meta.Workers != 1 || !rep.Meta.Embedded || rep.Meta.NATSVersion == "" || !strings.HasPrefix(rep.Meta.Durability, "default") {
		t.Errorf("meta %+v", rep.Meta)
	}
	if !slices.Equal(rep.Meta.Workloads, Workloads) {
		t.Errorf("ran %v, want %v", rep.Meta.Workloads, Workloads)
	}
	by := map[string][]Result{}
	for _, r := range rep.Results {
		by[r.Workload] = append(by[r.Workload], r)
		if r.Errors != 0 {
			t.Errorf("%s %s: %d errors: %v", r.Workload, r.Case, r.Errors, r.Notes)
		}
		if r.Durability == "" || r.Workers < 1 {
			t.Errorf("%s %s: durability %q, workers %d", r.Workload, r.Case, r.Durability, r.Workers)
		}
		if r.LatencyOf != "" && r.Count > 0 && !(r.P50Ms > 0 && r.P50Ms <= r.P95Ms && r.P95Ms <= r.P99Ms && r.P99Ms <= r.MaxMs) {
			t.Errorf("%s %s: latencies p50 %v p95 %v p99 %v max %v", r.Workload, r.Case, r.P50Ms, r.P95Ms, r.P99Ms, r.MaxMs)
		}
	}
	wantCount := func(w string, i, n int) *Result {
		t.Helper()
		if len(by[w]) <= i {
			t.Errorf("%s: %d results, want more than %d", w, len(by[w]), i)
			return nil
		}
		r := &by[w][i]
		if n >= 0 && r.Count != n {
			t.Errorf("%s %s: count %d, want %d", w, r.Case, r.Count, n)
		}
		if n != 0 && (r.Count == 0 || r.DurationS <= 0) {
			t.Errorf("%s %s: count %d in %v s", w, r.Case, r.Count, r.DurationS)
		}
		return r
	}
	// Each message is a publish and an ack into the server; the last acks
	// may still be on their way when the counters are read.
	if r := wantCount(WorkloadFloor, 0, -1); r != nil && (r.Throughput <= 0 || r.Metrics["nats_msgs_in_per_item"] < 1.5) {
		t.Errorf("floor: %v msgs/s, %v messages into the server per message", r.Throughput, r.Metrics["nats_msgs_in_per_item"])
	}
	wantCount(WorkloadFloor, 1, cfg.FloorSyncPublishes)
	for i, c := range cfg.HelloConcurrency {
		if r := wantCount(WorkloadHello, i, cfg.HelloCount); r != nil && (r.Concurrency != c || r.Throughput <= 0 || len(r.lat) != cfg.HelloCount) {
			t.Errorf("hello %s: concurrency %d, throughput %v, %d latencies", r.Case, r.Concurrency, r.Throughput, len(r.lat))
		}
	}
	ol := by[WorkloadOpenLoop]
	if len(ol) < 2 || ol[len(ol)-1].Metrics["threshold_ms"] != 100 {
		t.Errorf("openloop: %+v", ol)
	}
	for i := range ol[:len(ol)-1] {
		rate := int(ol[i].Metrics["offered_per_s"])
		wantCount(WorkloadOpenLoop, i, rate*int(cfg.OpenLoopStep)/int(time.Second))
	}
	wantCount(WorkloadFanOut, 0, cfg.FanOut*cfg.FanOutRuns)
	if r := wantCount(WorkloadLong, 0, cfg.LongSteps); r != nil && (r.Metrics["late_over_early_p50"] <= 0 || r.Metrics["steps_41_50_p50_ms"] <= 0) {
		t.Errorf("long sequence metrics %v", r.Metrics)
	}
	if r := wantCount(WorkloadLong, 1, 5); r != nil {
		m := r.Metrics
		if m["events"] < float64(cfg.ColdEvents) || m["load_ms_p50"] <= 0 || m["replay_ms_p50"] <= 0 || m["e2e_cold_ms"] <= 0 || m["e2e_warm_ms"] <= 0 {
			t.Errorf("cold replay metrics %v", m)
		}
	}
	if r := wantCount(WorkloadStatus, 0, -1); r != nil && (r.Count == 0 || r.Throughput <= 0) {
		t.Errorf("status: %d requests, %v/s", r.Count, r.Throughput)
	}
	if r := wantCount(WorkloadStatus, 1, -1); r != nil && (r.Count == 0 || r.Metrics["offered_per_s"] != 200) {
		t.Errorf("status at a fixed rate: %d requests, metrics %v", r.Count, r.Metrics)
	}
	for i, c := range cfg.WatchConcurrency {
		// The watch may skip a record replaced before it was delivered,
		// so up to the number of updates are seen.
		if r := wantCount(WorkloadWatch, i, -1); r != nil && (r.Count == 0 || r.Count > c*cfg.WatchUpdates) {
			t.Errorf("watch %s: %d samples, want 1 to %d", r.Case, r.Count, c*cfg.WatchUpdates)
		}
	}
	if r := wantCount(WorkloadMemory, 0, cfg.MemoryInstances); r != nil && (r.Metrics["rss_after_mb"] <= 0 || r.Metrics["goroutines_per_orch"] == 0) {
		t.Errorf("memory metrics %v", r.Metrics)
	} else if r != nil && r.Metrics["parked_goroutines_per_orch"] >= r.Metrics["goroutines_per_orch"] {
		t.Errorf("memory: %v goroutines per instance once parked, %v while hot: the idle timeout closed nothing", r.Metrics["parked_goroutines_per_orch"], r.Metrics["goroutines_per_orch"])
	}

	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("JSON does not parse: %v", err)
	}
	if len(back.Results) != len(rep.Results) || back.Results[0].P50Ms != rep.Results[0].P50Ms {
		t.Errorf("JSON round trip: %d results, want %d", len(back.Results), len(rep.Results))
	}
	var md bytes.Buffer
	if err := rep.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if rows := strings.Count(md.String(), "\n| "); rows != len(rep.Results)+1 {
		t.Errorf("markdown has %d table rows, want %d:\n%s", rows, len(rep.Results)+1, md.String())
	}
	var svg bytes.Buffer
	if err := rep.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	if s := svg.String(); !strings.Contains(s, "<svg") || strings.Count(s, "<polyline") != len(cfg.HelloConcurrency) || !strings.HasSuffix(s, "</svg>\n") {
		t.Errorf("svg: %.300s", s)
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	s := summarize(d)
	if s.p50 != 50*time.Millisecond || s.p95 != 95*time.Millisecond || s.p99 != 99*time.Millisecond || s.max != 100*time.Millisecond || s.n != 100 {
		t.Errorf("summary %+v", s)
	}
	if d[0] != 100*time.Millisecond {
		t.Error("summarize sorted its input in place")
	}
	if s := summarize(nil); s.p99 != 0 || s.n != 0 {
		t.Errorf("empty summary %+v", s)
	}
	if got := percentile([]time.Duration{7}, 0.99); got != 7 {
		t.Errorf("one value: %v", got)
	}
}

func TestEmptyReportRenders(t *testing.T) {
	rep := &Report{Meta: Meta{NumCPU: 2, Workers: 1}, Results: []Result{{Workload: WorkloadOpenLoop, Case: "a|b", Metrics: map[string]float64{"x": 1.5}}}}
	var md, svg bytes.Buffer
	if err := rep.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), `a\|b`) || !strings.Contains(md.String(), "x=1.50") {
		t.Errorf("markdown:\n%s", md.String())
	}
	if err := rep.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(svg.String(), "<svg") || !strings.Contains(svg.String(), "no hello results") {
		t.Errorf("svg: %s", svg.String())
	}
}
