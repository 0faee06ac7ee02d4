package batchapi

import (
	"net/http"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/batchfleet/batchfleet/pkg/telemetry"
)

// tracing wraps a transport with one client span per vendor call: the
// provider, the operation, the method and the path with its ids replaced
// by {id} in the span's name, the status code; never a body.
type tracing struct {
	base     http.RoundTripper
	provider string // gen_ai.provider.name: "openai", "anthropic"
}

func traced(hc *http.Client, provider string) *http.Client {
	c := *hc
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c.Transport = tracing{base: base, provider: provider}
	return &c
}

func (t tracing) RoundTrip(req *http.Request) (*http.Response, error) {
	route, id := routeOf(req.URL.Path)
	attrs := []attribute.KeyValue{
		attribute.String("gen_ai.provider.name", t.provider),
		attribute.String("gen_ai.system", t.provider),
		attribute.String("gen_ai.operation.name", "batch"),
		attribute.String("http.request.method", req.Method),
		attribute.String("url.template", route),
		attribute.String("server.address", req.URL.Hostname()),
	}
	if id != "" {
		attrs = append(attrs, attribute.String("batchfleet.vendor_object_id", id))
	}
	ctx, span := telemetry.Tracer().Start(req.Context(), t.provider+" "+req.Method+" "+route,
		trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	defer span.End()
	res, err := t.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return res, err
	}
	span.SetAttributes(attribute.Int("http.response.status_code", res.StatusCode))
	if rid := cmpHeader(res.Header, "x-request-id", "request-id"); rid != "" {
		span.SetAttributes(attribute.String("gen_ai.response.id", rid))
	}
	if res.StatusCode >= 400 {
		span.SetStatus(codes.Error, "HTTP "+strconv.Itoa(res.StatusCode))
	}
	return res, nil
}

func cmpHeader(h http.Header, keys ...string) string {
	for _, k := range keys {
		if v := h.Get(k); v != "" {
			return v
		}
	}
	return ""
}

// routeOf replaces the vendor ids in a path by {id}: /v1/batches/batch_1/cancel
// -> /v1/batches/{id}/cancel (and returns the id).
func routeOf(path string) (string, string) {
	parts := strings.Split(path, "/")
	id := ""
	for i, p := range parts {
		if strings.HasPrefix(p, "batch_") || strings.HasPrefix(p, "file-") || strings.HasPrefix(p, "msgbatch_") {
			parts[i], id = "{id}", p
		}
	}
	return strings.Join(parts, "/"), id
}
