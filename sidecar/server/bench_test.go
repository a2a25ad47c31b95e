package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/open-autoglm/autoglm/inference/testengine"
)

// BenchmarkChatHandler measures the sidecar's own cost per non-streaming
// request (zero-cost engine, no network), allocations included.
func BenchmarkChatHandler(b *testing.B) {
	benchChat(b, startB(b).Handler())
}

// benchChat sends non-streaming chat requests to h from parallel
// goroutines, allocations reported.
func benchChat(b *testing.B, h http.Handler) {
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(chatBody))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != 200 {
				b.Fatal(w.Code, w.Body.String())
			}
		}
	})
}

// BenchmarkTracing is BenchmarkChatHandler with tracing off (the default:
// OpenTelemetry's no-op provider), and with the SDK recording a server
// span per request into a batch exporter that drops them, sampled 100%
// and 1% (parent-based, as OTEL_TRACES_SAMPLER=parentbased_traceidratio
// sets up). The difference per op is the tracing overhead.
func BenchmarkTracing(b *testing.B) {
	for _, tc := range []struct {
		name  string
		ratio float64 // < 0: tracing off
	}{{"off", -1}, {"sampled-100pct", 1}, {"sampled-1pct", 0.01}} {
		b.Run(tc.name, func(b *testing.B) {
			if tc.ratio >= 0 {
				prev := otel.GetTracerProvider()
				tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()),
					sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(tc.ratio))))
				otel.SetTracerProvider(tp)
				defer func() {
					tp.Shutdown(context.Background())
					otel.SetTracerProvider(prev)
				}()
			}
			cfg := testConfig()
			cfg.Batch.MaxBatchSize = 64
			sc := startWith(b, cfg, testengine.New(testengine.Config{Model: cfg.Engine.Model, ContextLength: 512}), func(s *Server) {
				if tc.ratio >= 0 {
					s.SetTracing(otel.GetTracerProvider())
				}
			})
			benchChat(b, sc.Handler())
		})
	}
}
