package telemetry

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
)

// TracerName names the fleet's tracer.
const TracerName = "github.com/batchfleet/batchfleet"

// Tracer is the fleet's tracer (a no-op until SetupTracing installs a
// provider).
func Tracer() trace.Tracer { return otel.Tracer(TracerName) }

// SetupTracing installs the process's OpenTelemetry tracer provider from
// the standard variables: OTEL_TRACES_EXPORTER ("otlp": OTLP over HTTP,
// configured by OTEL_EXPORTER_OTLP_*; "console": one JSON line per span
// on console; "none"), defaulting to otlp when OTEL_EXPORTER_OTLP_ENDPOINT
// or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set and to none otherwise (off
// by default); OTEL_SERVICE_NAME (default "batchfleet-<component>"),
// OTEL_RESOURCE_ATTRIBUTES, and the sampler variables OTEL_TRACES_SAMPLER
// and OTEL_TRACES_SAMPLER_ARG, which the SDK reads. Trace context travels
// in W3C traceparent/tracestate either way. shutdown flushes the spans.
func SetupTracing(ctx context.Context, component string, env func(string) (string, bool), console io.Writer) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	get := func(k string) string { v, _ := env(k); return strings.TrimSpace(v) }
	kind := strings.ToLower(get("OTEL_TRACES_EXPORTER"))
	if kind == "" && (get("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "") {
		kind = "otlp"
	}
	var exp sdktrace.SpanExporter
	switch kind {
	case "", "none":
		return func(context.Context) error { return nil }, nil
	case "otlp":
		if p := get("OTEL_EXPORTER_OTLP_PROTOCOL"); p != "" && p != "http/protobuf" {
			return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL %q: only http/protobuf is built in", p)
		}
		exp, err = otlptracehttp.New(ctx)
	case "console":
		exp, err = stdouttrace.New(stdouttrace.WithWriter(console))
	default:
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER %q: otlp, console or none", kind)
	}
	if err != nil {
		return nil, fmt.Errorf("trace exporter %s: %w", kind, err)
	}
	name := get("OTEL_SERVICE_NAME")
	if name == "" {
		name = "batchfleet-" + component
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(name)))
	if err != nil {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	if extra, derr := resource.New(ctx, resource.WithFromEnv()); derr == nil {
		if merged, merr := resource.Merge(res, extra); merr == nil {
			res = merged
		}
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

// HeaderCarrier carries trace context in NATS headers. NATS header keys
// are case-sensitive: it writes and reads the W3C keys as they are,
// lowercase (traceparent, tracestate).
type HeaderCarrier nats.Header

// Get returns the first value of key.
func (c HeaderCarrier) Get(key string) string { return nats.Header(c).Get(key) }

// Set sets key to value.
func (c HeaderCarrier) Set(key, value string) { c[key] = []string{value} }

// Keys lists the keys.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes ctx's trace context into h.
func Inject(ctx context.Context, h nats.Header) {
	otel.GetTextMapPropagator().Inject(ctx, HeaderCarrier(h))
}

// Extract returns ctx with the trace context carried in h, if any.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if len(h) == 0 {
		return ctx
	}
	return otel.GetTextMapPropagator().Extract(ctx, HeaderCarrier(h))
}

// traceHook adds trace_id and span_id to log events made with a context
// that holds a recording or remote span (event.Ctx(ctx)).
type traceHook struct{}

func (traceHook) Run(e *zerolog.Event, _ zerolog.Level, _ string) {
	sc := trace.SpanContextFromContext(e.GetCtx())
	if sc.IsValid() {
		e.Str("trace_id", sc.TraceID().String()).Str("span_id", sc.SpanID().String())
	}
}

// Traceparent is ctx's W3C trace context ("" without a span), to keep
// with a record.
func Traceparent(ctx context.Context) string {
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c["traceparent"]
}

// WithTraceparent returns ctx with the remote span context tp (kept by
// Traceparent) as its parent; ctx as it is for "".
func WithTraceparent(ctx context.Context, tp string) context.Context {
	if tp == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": tp})
}

// Start starts a span of the fleet's tracer (internal kind) in ctx's
// trace; end records a non-nil error on it and ends it.
func Start(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, func(err error)) {
	ctx, span := Tracer().Start(ctx, name, trace.WithAttributes(attrs...))
	return ctx, func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}
