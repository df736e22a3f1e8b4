package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestServerSpanNamedByRoute(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	s := New(nil, Options{TracerProvider: tp})

	// A caller's trace is continued.
	parent, span := tp.Tracer("caller").Start(context.Background(), "caller")
	span.End()
	req := httptest.NewRequest("GET", "/openapi.json", nil)
	req.Header.Set("traceparent", "00-"+span.SpanContext().TraceID().String()+"-"+span.SpanContext().SpanID().String()+"-01")
	s.ServeHTTP(httptest.NewRecorder(), req)
	s.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", Prefix+"nowhere", nil))

	got := spans.GetSpans()
	if len(got) != 3 {
		t.Fatalf("%d spans, want 3", len(got))
	}
	api := got[1]
	if api.Name != "GET /openapi.json" || api.SpanKind != trace.SpanKindServer {
		t.Errorf("span %q kind %v", api.Name, api.SpanKind)
	}
	if api.Parent.SpanID() != trace.SpanContextFromContext(parent).SpanID() || api.SpanContext.TraceID() != span.SpanContext().TraceID() {
		t.Errorf("the caller's trace is not continued: parent %v", api.Parent)
	}
	if nf := got[2]; nf.Name != "GET /" || attrOf(nf, "http.response.status_code") != "404" || nf.Parent.IsValid() {
		t.Errorf("unmatched route: %q status %s parent %v", nf.Name, attrOf(nf, "http.response.status_code"), nf.Parent)
	}
}

func attrOf(sp tracetest.SpanStub, key string) string {
	for _, a := range sp.Attributes {
		if string(a.Key) == key {
			return a.Value.Emit()
		}
	}
	return ""
}

func TestStatusRecorderFlushes(t *testing.T) {
	rr := httptest.NewRecorder()
	var w http.ResponseWriter = &statusRecorder{ResponseWriter: rr}
	f, ok := w.(http.Flusher)
	if !ok {
		t.Fatal("the recorder is not a Flusher")
	}
	w.WriteHeader(http.StatusTeapot)
	f.Flush()
	if !rr.Flushed || rr.Code != http.StatusTeapot || w.(*statusRecorder).code() != http.StatusTeapot {
		t.Errorf("flushed %v code %d", rr.Flushed, rr.Code)
	}
	if err := http.NewResponseController(w).Flush(); err != nil {
		t.Errorf("ResponseController: %v", err)
	}
}
