package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// TracerName is the instrumentation scope of jetflow's spans.
const TracerName = "github.com/jetflow/jetflow"

// W3C trace context header names, as carried on NATS messages.
const (
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

// Span attribute keys.
const (
	AttrInstanceID   = attribute.Key("jetflow.instance_id")
	AttrExecutionID  = attribute.Key("jetflow.execution_id")
	AttrOrchestrator = attribute.Key("jetflow.orchestrator")
	AttrActivity     = attribute.Key("jetflow.activity")
	AttrEpisode      = attribute.Key("jetflow.episode")
	AttrTaskID       = attribute.Key("jetflow.task_id")
	AttrAttempt      = attribute.Key("jetflow.attempt")
	AttrCommand      = attribute.Key("jetflow.command")
)

// Tracer returns jetflow's tracer from tp, or from the global provider
// (a no-op unless the program set one) when tp is nil.
func Tracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(TracerName)
}

// Propagator is the W3C trace context propagator jetflow uses on NATS
// messages and HTTP requests.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// HeaderCarrier adapts NATS message headers to the propagation API. NATS
// header keys are case-sensitive; the W3C keys are lower case.
type HeaderCarrier nats.Header

// Get returns the first value of key.
func (c HeaderCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set sets key to value.
func (c HeaderCarrier) Set(key, value string) { c[key] = []string{value} }

// Keys returns the keys present.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes the trace context of ctx's span into h. It writes nothing
// when ctx carries no valid span context (tracing off), so it costs
// nothing then. h must not be nil.
func Inject(ctx context.Context, h nats.Header) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	Propagator.Inject(ctx, HeaderCarrier(h))
}

// Extract returns ctx with the remote span context carried in h, if any.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if h.Get(HeaderTraceparent) == "" {
		return ctx
	}
	return Propagator.Extract(ctx, HeaderCarrier(h))
}

// SpanContextOf returns the span context carried in h; it is invalid if
// there is none.
func SpanContextOf(h nats.Header) trace.SpanContext {
	if h.Get(HeaderTraceparent) == "" {
		return trace.SpanContext{}
	}
	return trace.SpanContextFromContext(Propagator.Extract(context.Background(), HeaderCarrier(h)))
}

// CopyTrace copies the trace context headers of src into dst and returns
// dst, which is made if it is nil and there is something to copy.
func CopyTrace(dst, src nats.Header) nats.Header {
	for _, k := range [...]string{HeaderTraceparent, HeaderTracestate} {
		if v := src.Get(k); v != "" {
			if dst == nil {
				dst = nats.Header{}
			}
			dst.Set(k, v)
		}
	}
	return dst
}

// SetupTracing makes the tracer provider of a process from the standard
// OpenTelemetry environment variables. Tracing is on when
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set,
// or OTEL_TRACES_EXPORTER is "otlp"; it is off when none of them is set,
// when OTEL_TRACES_EXPORTER is "none" or when OTEL_SDK_DISABLED is "true".
// The exporter speaks OTLP over HTTP (protobuf), or gRPC when
// OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL is "grpc"; it reads its endpoint,
// headers, TLS, compression and timeout from the OTEL_EXPORTER_OTLP_*
// variables, the SDK its sampler (OTEL_TRACES_SAMPLER) and batching
// (OTEL_BSP_*), and the resource OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES; serviceName is the service name otherwise.
//
// When tracing is off it returns a no-op provider. Call shutdown before
// the process exits to flush spans.
func SetupTracing(ctx context.Context, serviceName string) (tp trace.TracerProvider, shutdown func(context.Context) error, err error) {
	return setupTracing(ctx, serviceName, os.Getenv)
}

// TracingEnabled reports whether the environment, read through getenv,
// turns the OTLP trace exporter on, and with which protocol.
func TracingEnabled(getenv func(string) string) (on bool, protocol string, err error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false, "", nil
	}
	switch exp := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); exp {
	case "":
		if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
			return false, "", nil
		}
	case "none":
		return false, "", nil
	case "otlp":
	default:
		return false, "", fmt.Errorf("OTEL_TRACES_EXPORTER=%q is not supported: use otlp or none", exp)
	}
	protocol = strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
	if protocol == "" {
		protocol = strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_PROTOCOL"))
	}
	switch protocol {
	case "":
		protocol = "http/protobuf"
	case "http/protobuf", "grpc":
	default:
		return false, "", fmt.Errorf("OTLP protocol %q is not supported: use http/protobuf or grpc", protocol)
	}
	return true, protocol, nil
}

func setupTracing(ctx context.Context, serviceName string, getenv func(string) string) (trace.TracerProvider, func(context.Context) error, error) {
	off := func(context.Context) error { return nil }
	on, protocol, err := TracingEnabled(getenv)
	if err != nil || !on {
		return noop.NewTracerProvider(), off, err
	}
	var exp sdktrace.SpanExporter
	if protocol == "grpc" {
		exp, err = otlptracegrpc.New(ctx)
	} else {
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return noop.NewTracerProvider(), off, fmt.Errorf("otlp trace exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", serviceName)),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithProcessPID(),
		resource.WithFromEnv(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		_ = exp.Shutdown(ctx)
		return noop.NewTracerProvider(), off, fmt.Errorf("trace resource: %w", err)
	}
	sdk := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return sdk, sdk.Shutdown, nil
}

// HeaderOrchestrator carries the orchestrator's name on an activity task,
// so that the activity's log lines and spans can name it.
const HeaderOrchestrator = "Jetflow-Orchestrator"

// Carry returns a copy of the headers of src that travel on with a message
// that is republished, such as a due timer or activity retry: all but the
// NATS and JetStream ones (Nats-*), so the trace context and
// HeaderOrchestrator among them. It returns an empty header if there are
// none; it never returns nil.
func Carry(src nats.Header) nats.Header {
	dst := make(nats.Header, len(src)+1)
	for k, v := range src {
		if len(k) >= 5 && strings.EqualFold(k[:5], "nats-") {
			continue
		}
		dst[k] = append([]string(nil), v...)
	}
	return dst
}
