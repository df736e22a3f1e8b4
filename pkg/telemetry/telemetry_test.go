package telemetry

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/jetflow/jetflow/pkg/messages"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestTracingOffWithoutEnv(t *testing.T) {
	for _, vars := range []map[string]string{
		{},
		{"OTEL_SERVICE_NAME": "x", "OTEL_RESOURCE_ATTRIBUTES": "a=b"}, // not an exporter setting
		{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"},
	} {
		tp, shutdown, err := setupTracing(context.Background(), "test", env(vars))
		if err != nil {
			t.Fatalf("%v: %v", vars, err)
		}
		if _, ok := tp.(noop.TracerProvider); !ok {
			t.Errorf("%v: provider is %T, want the no-op provider", vars, tp)
		}
		_, span := tp.Tracer("t").Start(context.Background(), "s")
		if span.IsRecording() || span.SpanContext().IsValid() {
			t.Errorf("%v: a span is recorded with tracing off", vars)
		}
		if err := shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	}
}

func TestTracingOffInProcessEnv(t *testing.T) {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED"} {
		t.Setenv(k, "")
	}
	tp, _, err := SetupTracing(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tp.(noop.TracerProvider); !ok {
		t.Errorf("provider is %T, want the no-op provider", tp)
	}
}

func TestTracingOnWithEndpoint(t *testing.T) {
	for _, vars := range []map[string]string{
		{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"},
		{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/v1/traces"},
		{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
	} {
		tp, shutdown, err := setupTracing(context.Background(), "test", env(vars))
		if err != nil {
			t.Fatalf("%v: %v", vars, err)
		}
		if _, ok := tp.(*sdktrace.TracerProvider); !ok {
			t.Errorf("%v: provider is %T, want the SDK's", vars, tp)
		}
		_, span := tp.Tracer("t").Start(context.Background(), "s")
		if !span.IsRecording() {
			t.Errorf("%v: span not recorded", vars)
		}
		span.End()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_ = shutdown(ctx) // nothing listens: the export fails, which is fine here
		cancel()
	}
	if _, _, err := setupTracing(context.Background(), "test", env(map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"})); err == nil {
		t.Error("an unsupported exporter is accepted")
	}
	if _, _, err := setupTracing(context.Background(), "test", env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "x", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})); err == nil {
		t.Error("an unsupported protocol is accepted")
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("t").Start(context.Background(), "s")
	defer span.End()
	h := nats.Header{}
	Inject(ctx, h)
	if !strings.HasPrefix(h.Get(HeaderTraceparent), "00-"+span.SpanContext().TraceID().String()) {
		t.Fatalf("traceparent = %q", h.Get(HeaderTraceparent))
	}
	sc := SpanContextOf(h)
	if sc.TraceID() != span.SpanContext().TraceID() || sc.SpanID() != span.SpanContext().SpanID() || !sc.IsRemote() {
		t.Errorf("extracted %v, want %v", sc, span.SpanContext())
	}
	if got := trace.SpanContextFromContext(Extract(context.Background(), h)); !got.Equal(sc) {
		t.Errorf("Extract: %v", got)
	}
	cp := CopyTrace(nil, h)
	if cp.Get(HeaderTraceparent) != h.Get(HeaderTraceparent) {
		t.Errorf("CopyTrace: %v", cp)
	}

	// Without a span nothing is written or copied.
	empty := nats.Header{}
	Inject(context.Background(), empty)
	if len(empty) != 0 || CopyTrace(nil, empty) != nil || SpanContextOf(empty).IsValid() {
		t.Errorf("something was carried without a span: %v", empty)
	}
}

func TestNilMetricsRecordNothing(t *testing.T) {
	var m *Metrics
	m.EpisodeCommitted("x", nil, time.Second)
	m.Replayed("x", time.Second)
	m.ActivityRan("x", time.Second)
	m.HistoryConflict()
	m.Redelivered("s")
	m.DeadLettered("s")
	m.StatusRead(ReadGet)
	m.WatchOpened()()
	m.CollectPending(nil)
	if NewMetrics(nil) != nil || m.Registerer() != nil {
		t.Error("nil registry gives metrics")
	}
}

func TestEpisodeCounts(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.EpisodeCommitted("O", []messages.Event{{Type: messages.EventOrchestratorStarted}, {Type: messages.EventExecutionStarted}, {Type: messages.EventOrchestratorCompleted}}, time.Millisecond)
	m.EpisodeCommitted("O", []messages.Event{{Type: messages.EventExecutionCompleted, Status: messages.StatusCompleted}}, time.Millisecond)
	m.EpisodeCommitted("O", []messages.Event{{Type: messages.EventExecutionCompleted, Status: messages.StatusFailed}}, time.Millisecond)
	m.EpisodeCommitted("P", []messages.Event{{Type: messages.EventExecutionCompleted, Status: messages.StatusTerminated}}, time.Millisecond)
	m.EpisodeCommitted("P", []messages.Event{{Type: messages.EventContinuedAsNew}}, time.Millisecond)
	m.ActivityRan("A", time.Millisecond)
	m.DeadLettered("JETFLOW_ORCH")
	done := m.WatchOpened()
	m.StatusRead(ReadGet)

	check := func(c prometheus.Collector, want float64) {
		t.Helper()
		if got := testutil.ToFloat64(c); got != want {
			t.Errorf("got %v, want %v", got, want)
		}
	}
	check(m.started.WithLabelValues("O"), 1)
	check(m.completed.WithLabelValues("O"), 1)
	check(m.failed.WithLabelValues("O"), 1)
	check(m.terminated.WithLabelValues("P"), 1)
	check(m.continued.WithLabelValues("P"), 1)
	check(m.deadLettered.WithLabelValues("JETFLOW_ORCH"), 1)
	check(m.statusReads.WithLabelValues(ReadGet), 1)
	check(m.watchers, 1)
	done()
	done()
	check(m.watchers, 0)
	if n := testutil.CollectAndCount(m.episode); n != 2 {
		t.Errorf("episode series = %d, want 2", n)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP jetflow_orchestrations_completed_total Orchestration runs that completed, by orchestrator name.
# TYPE jetflow_orchestrations_completed_total counter
jetflow_orchestrations_completed_total{orchestrator="O"} 1
jetflow_orchestrations_completed_total{orchestrator="P"} 0
`), MetricOrchestrationsCompleted); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", err, problems)
	}
}
