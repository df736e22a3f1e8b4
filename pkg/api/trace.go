package api

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetflow/jetflow/pkg/telemetry"
)

// startServerSpan starts the server span of a request, continuing the
// W3C trace context it carries, if any.
func startServerSpan(ctx context.Context, tracer trace.Tracer, r *http.Request) (context.Context, trace.Span) {
	if r.Header.Get("traceparent") != "" {
		ctx = telemetry.Propagator.Extract(ctx, propagation.HeaderCarrier(r.Header))
	}
	return tracer.Start(ctx, "HTTP", trace.WithSpanKind(trace.SpanKindServer))
}

// endServerSpan names the span after the route that served r, and records
// the response status.
func endServerSpan(span trace.Span, r *http.Request, status int) {
	name := r.Method
	if r.Pattern != "" {
		// Patterns are registered as "METHOD /path" or "/path".
		name = r.Pattern
		if name[0] == '/' {
			name = r.Method + " " + name
		}
	}
	span.SetName(name)
	span.SetAttributes(
		attribute.String("http.request.method", r.Method),
		attribute.String("url.path", r.URL.Path),
		attribute.Int("http.response.status_code", status),
	)
	if r.Pattern != "" {
		route := r.Pattern
		if _, path, ok := strings.Cut(route, " "); ok {
			route = path
		}
		span.SetAttributes(attribute.String("http.route", route))
	}
	if status >= 500 {
		span.SetStatus(codes.Error, strconv.Itoa(status))
	}
}

// statusRecorder remembers the status code written through it.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (w *statusRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush lets streamed responses (the watch route) through.
func (w *statusRecorder) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap gives http.ResponseController the underlying writer.
func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusRecorder) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}
