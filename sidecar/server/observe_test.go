package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"

	"github.com/open-autoglm/autoglm/inference/testengine"
	"github.com/open-autoglm/autoglm/internal/tracing"
	autoglmv1 "github.com/open-autoglm/autoglm/sidecar/proto/autoglm/v1"
)

// syncBuffer is a log destination the test reads while the server writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// lines returns the access-log lines written so far, decoded.
func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "request" {
			out = append(out, m)
		}
	}
	return out
}

// traced starts a sidecar that records its spans (and logs JSON, with
// trace ids, into the returned buffer).
func traced(t *testing.T, sample float64) (*sidecar, *tracetest.SpanRecorder, *syncBuffer) {
	t.Helper()
	otel.SetTextMapPropagator(tracing.Propagator())
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	logs := &syncBuffer{}
	cfg := testConfig()
	cfg.Log.AccessSample = sample
	cfg.Engine.ModelVersion = "v7"
	log := slog.New(tracing.LogHandler(slog.NewJSONHandler(logs, nil)))
	srv := New(cfg, testengine.New(testengine.Config{Model: cfg.Engine.Model, ContextLength: 512}), 0, log)
	sc := startServer(t, srv, func(s *Server) { s.SetTracing(tp) })
	return sc, rec, logs
}

func serverSpans(rec *tracetest.SpanRecorder) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.SpanKind() == trace.SpanKindServer {
			out = append(out, s)
		}
	}
	return out
}

func attrs(s sdktrace.ReadOnlySpan) map[string]string {
	m := map[string]string{}
	for _, kv := range s.Attributes() {
		m[string(kv.Key)] = kv.Value.String()
	}
	return m
}

// TestGRPCTraceAndCounts: a gRPC call with W3C trace context in its
// metadata gets a server span under the caller's, with the GenAI
// attributes and the gRPC status; a call refused at validation is counted
// (requests and rejections) and traced too.
func TestGRPCTraceAndCounts(t *testing.T) {
	sc, rec, logs := traced(t, 1)
	c := autoglmv1.NewInferenceClient(dial(t, sc))
	const tid, pid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	ctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", "00-"+tid+"-"+pid+"-01", "x-request-id", "r-42")
	st, err := c.Generate(ctx, &autoglmv1.GenerateRequest{Model: "autoglm-test", Prompt: "hello", MaxTokens: 5})
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = st.Recv()
	}
	if err != io.EOF {
		t.Fatal(err)
	}
	// Refused at validation: no prompt.
	st, _ = c.Generate(ctx, &autoglmv1.GenerateRequest{Model: "autoglm-test", MaxTokens: 5})
	if _, err := st.Recv(); err == nil {
		t.Fatal("a call without a prompt was accepted")
	}
	spans := serverSpans(rec)
	if len(spans) != 2 {
		t.Fatalf("%d server spans, want 2", len(spans))
	}
	ok, bad := spans[0], spans[1]
	if ok.SpanContext().TraceID().String() != tid || ok.Parent().SpanID().String() != pid || !ok.Parent().IsRemote() {
		t.Errorf("span %s: trace %s parent %s; want under %s/%s", ok.Name(), ok.SpanContext().TraceID(), ok.Parent().SpanID(), tid, pid)
	}
	a := attrs(ok)
	for k, v := range map[string]string{"gen_ai.operation.name": "text_completion", "gen_ai.request.model": "autoglm-test", "gen_ai.request.max_tokens": "5",
		"gen_ai.usage.output_tokens": "5", "gen_ai.response.finish_reasons": `["length"]`, "rpc.grpc.status_code": "0", "autoglm.model_version": "v7"} {
		if a[k] != v {
			t.Errorf("span %q: %s = %q, want %q", ok.Name(), k, a[k], v)
		}
	}
	if ok.Name() != "text_completion autoglm-test" {
		t.Errorf("span name %q", ok.Name())
	}
	// The engine steps that ran the call are spans of their own, linked to
	// the call's span. The last step's span ends as its step returns, which
	// may be after the caller has the answer: wait for it.
	steps := 0
	for deadline := time.Now().Add(2 * time.Second); steps < 5 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		steps = 0
		for _, sp := range rec.Ended() {
			if sp.Name() != "engine step" {
				continue
			}
			for _, l := range sp.Links() {
				if l.SpanContext.SpanID() == ok.SpanContext().SpanID() {
					steps++
				}
			}
			if sp.Parent().IsValid() {
				t.Fatalf("an engine step has a parent: %v", sp.Parent())
			}
		}
	}
	if steps < 5 {
		t.Errorf("%d engine-step spans link to the call that generated 5 tokens", steps)
	}
	if b := attrs(bad); b["rpc.grpc.status_code"] != "3" || b["error.type"] != "invalid_request_error" && b["error.type"] != "400" {
		t.Errorf("refused call's span: %v", b)
	}
	m := scrape(t, sc.url, "")
	for _, want := range []string{
		`autoglm_requests_total{api="grpc",code="200",model="autoglm-test"} 1`,
		`autoglm_requests_total{api="grpc",code="400",model="autoglm-test"} 1`,
		`autoglm_rejections_total{model="autoglm-test",reason="invalid_request"} 1`,
		`autoglm_grpc_requests_total{grpc_code="OK",grpc_method="Generate",model="autoglm-test"} 1`,
		`autoglm_grpc_requests_total{grpc_code="InvalidArgument",grpc_method="Generate",model="autoglm-test"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// The access-log lines carry the request id and the trace.
	lines := logs.lines(t)
	if len(lines) != 2 || lines[0]["request_id"] != "r-42" || lines[0]["trace_id"] != tid || lines[0]["api"] != "grpc" || lines[0]["version"] != "v7" ||
		lines[0]["completion_tokens"] != 5.0 || lines[1]["status"] != 400.0 {
		t.Errorf("access log: %v", lines)
	}
}

func scrape(t *testing.T, url, accept string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url+"/metrics", nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestExemplarsAndAccessLogSampling: a traced HTTP request's latency
// observations carry its trace id as an exemplar in OpenMetrics; with
// log.access_sample 0 successes are not logged, failures are.
func TestExemplarsAndAccessLogSampling(t *testing.T) {
	sc, _, logs := traced(t, 0)
	const tid = "0af7651916cd43dd8448eb211c80319c"
	resp, _ := post(t, sc.url+"/v1/chat/completions", chatBody, map[string]string{"traceparent": "00-" + tid + "-b7ad6b7169203331-01"})
	if resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	resp, _ = post(t, sc.url+"/v1/chat/completions", `{"model":"nope","messages":[{"role":"user","content":"x"}]}`, nil)
	if resp.StatusCode != 404 {
		t.Fatal(resp.StatusCode)
	}
	// The observation is made as the handler returns, just after the
	// answer is written: scrape until it is there.
	found := false
	for deadline := time.Now().Add(5 * time.Second); !found && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for _, l := range strings.Split(scrape(t, sc.url, "application/openmetrics-text; version=1.0.0"), "\n") {
			if strings.HasPrefix(l, "gen_ai_server_request_duration_seconds_bucket") && strings.Contains(l, " # {") && strings.Contains(l, `trace_id="`+tid+`"`) && strings.Contains(l, `span_id="`) {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("no exemplar with the trace id on gen_ai_server_request_duration_seconds")
	}
	if plain := scrape(t, sc.url, ""); strings.Contains(plain, "# {") {
		t.Error("exemplars in the plain text format")
	}
	var lines []map[string]any
	for deadline := time.Now().Add(5 * time.Second); len(lines) < 1 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		lines = logs.lines(t)
	}
	time.Sleep(50 * time.Millisecond) // a success line, were it (wrongly) written, would be there by now
	lines = logs.lines(t)
	if len(lines) != 1 || lines[0]["status"] != 404.0 || lines[0]["error"] != "model_not_found" {
		t.Errorf("with access_sample 0, want only the failure logged: %v", lines)
	}
}

// TestMetricsPort: with a metrics listener, /metrics, /healthz and /readyz
// are also served there, and nothing of the API (the port a Prometheus
// outside the mesh scrapes in plain HTTP while the API port takes mTLS).
func TestMetricsPort(t *testing.T) {
	ml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(testConfig(), testengine.New(testengine.Config{Model: "autoglm-test", ContextLength: 512}), 0, slog.New(slog.DiscardHandler))
	hl, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, Listeners{HTTP: hl, Metrics: ml}) }()
	defer func() { cancel(); <-done }()
	base := "http://" + ml.Addr().String()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if r, err := http.Get(base + "/readyz"); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the metrics port never said ready")
		}
	}
	if m := scrape(t, base, ""); !strings.Contains(m, `autoglm_ready{model="autoglm-test"} 1`) && !strings.Contains(m, "autoglm_ready 1") {
		t.Errorf("metrics port: no autoglm_ready 1 in\n%.2000s", m)
	}
	for _, p := range []string{"/v1/models", "/v1/chat/completions"} {
		r, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusNotFound && r.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("metrics port serves %s: %d", p, r.StatusCode)
		}
	}
}
