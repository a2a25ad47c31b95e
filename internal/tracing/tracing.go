// Package tracing sets up OpenTelemetry tracing from the standard OTEL_*
// environment variables, and the log handler that puts the trace and span
// IDs into log lines.
//
// Tracing is off unless the environment asks for it: OTEL_TRACES_EXPORTER
// set to otlp, or (with OTEL_TRACES_EXPORTER unset) an OTLP endpoint in
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT.
// OTEL_SDK_DISABLED=true and OTEL_TRACES_EXPORTER=none turn it off. Off,
// the global tracer provider stays OpenTelemetry's no-op one: spans cost
// a few nanoseconds and record nothing. The propagators (W3C trace context
// and baggage, and B3 as Istio's proxies send it) are installed either
// way, so a caller's trace context still reaches the remote engine.
//
// The exporter's protocol is OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or
// OTEL_EXPORTER_OTLP_PROTOCOL: grpc or http/protobuf (the default, as the
// specification says). The sampler is the SDK's reading of
// OTEL_TRACES_SAMPLER (default parentbased_always_on), the resource
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES over the defaults given.
package tracing

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Propagator is what the binaries extract from requests and inject into
// the calls they make: W3C traceparent/tracestate and baggage, and B3
// (single and multiple headers, as Envoy sends them); W3C is injected.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(
		propagation.TraceContext{}, propagation.Baggage{},
		b3.New(b3.WithInjectEncoding(b3.B3MultipleHeader)))
}

// Enabled says whether the environment asks for traces to be exported,
// and why not when it does not.
func Enabled(getenv func(string) string) (bool, string) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false, "OTEL_SDK_DISABLED=true"
	}
	switch e := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); {
	case e == "":
		if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
			return false, "no OTLP endpoint set"
		}
		return true, ""
	case e == "otlp":
		return true, ""
	case e == "none":
		return false, "OTEL_TRACES_EXPORTER=none"
	default:
		return false, fmt.Sprintf("OTEL_TRACES_EXPORTER=%s is not supported (otlp or none)", e)
	}
}

// Setup installs the propagator and, when the environment asks for it,
// a tracer provider exporting over OTLP as the global one. service and
// version name the binary in the resource (OTEL_SERVICE_NAME overrides).
// The returned shutdown flushes what is buffered; it is a no-op when
// tracing is off.
func Setup(ctx context.Context, service, version string) (shutdown func(context.Context) error, enabled bool, err error) {
	otel.SetTextMapPropagator(Propagator())
	noop := func(context.Context) error { return nil }
	if on, _ := Enabled(os.Getenv); !on {
		return noop, false, nil
	}
	var exp *otlptrace.Exporter
	proto := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	switch proto {
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	default:
		return noop, false, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL: %q is not supported (grpc or http/protobuf)", proto)
	}
	if err != nil {
		return noop, false, fmt.Errorf("otlp exporter: %w", err)
	}
	// Later options win: the environment's attributes over the defaults.
	res, err := resource.New(ctx, resource.WithSchemaURL(semconv.SchemaURL), resource.WithTelemetrySDK(),
		resource.WithAttributes(semconv.ServiceName(service), semconv.ServiceVersion(version)), resource.WithFromEnv())
	if err != nil {
		return noop, false, fmt.Errorf("otel resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	return tp.Shutdown, true, nil
}

// LogHandler wraps h so that records logged with a context that holds a
// span carry its trace_id and span_id (log.InfoContext(ctx, …)).
func LogHandler(h slog.Handler) slog.Handler { return logHandler{h} }

type logHandler struct{ slog.Handler }

func (l logHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return l.Handler.Handle(ctx, r)
}

func (l logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return logHandler{l.Handler.WithAttrs(as)}
}
func (l logHandler) WithGroup(name string) slog.Handler { return logHandler{l.Handler.WithGroup(name)} }
