package e2e

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is an OTLP trace receiver on both transports the
// specification defines: the gRPC TraceService and HTTP POST /v1/traces
// (binary protobuf). It keeps every span it is sent, with the
// service.name of its resource.
type otlpReceiver struct {
	collectortrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []receivedSpan
}

type receivedSpan struct {
	service string
	*tracepb.Span
}

func (o *otlpReceiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	o.add(req)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (o *otlpReceiver) add(req *collectortrace.ExportTraceServiceRequest) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := attr(rs.GetResource().GetAttributes(), "service.name")
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				o.spans = append(o.spans, receivedSpan{service, sp})
			}
		}
	}
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var req collectortrace.ExportTraceServiceRequest
	if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" || proto.Unmarshal(b, &req) != nil {
		http.Error(w, "bad export", http.StatusBadRequest)
		return
	}
	o.add(&req)
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

// trace returns the spans of trace id.
func (o *otlpReceiver) trace(id string) []receivedSpan {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []receivedSpan
	for _, s := range o.spans {
		if hex.EncodeToString(s.TraceId) == id {
			out = append(out, s)
		}
	}
	return out
}

func attr(kvs []*commonpb.KeyValue, key string) string {
	for _, kv := range kvs {
		if kv.Key == key {
			v := kv.Value
			switch {
			case v.GetArrayValue() != nil:
				var parts []string
				for _, e := range v.GetArrayValue().Values {
					parts = append(parts, e.GetStringValue())
				}
				return strings.Join(parts, ",")
			case v.GetStringValue() != "":
				return v.GetStringValue()
			default:
				return fmt.Sprint(v.GetIntValue())
			}
		}
	}
	return ""
}

func hasEvent(s *tracepb.Span, name string) bool {
	for _, e := range s.Events {
		if e.Name == name {
			return true
		}
	}
	return false
}

// TestTraceAcrossSidecars: a client's trace context (W3C traceparent, then
// Istio's B3 headers) reaches a sidecar whose remote engine is a second
// sidecar; both export their spans over OTLP (gRPC from one, HTTP from the
// other) to a receiver here. The trace is one: the front sidecar's server
// span under the client's span, its client span to the upstream under
// that, the upstream sidecar's server span under the client span, each
// with the GenAI semantic-convention attributes, and the access-log line
// carries the trace ID.
func TestTraceAcrossSidecars(t *testing.T) {
	bin := build(t)
	recv := &otlpReceiver{}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(gs, recv)
	go gs.Serve(gl)
	defer gs.Stop()
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: recv}
	go hs.Serve(hl)
	defer hs.Close()

	upAddr, frontAddr := freePort(t), freePort(t)
	common := []string{"OTEL_BSP_SCHEDULE_DELAY=50", "OTEL_TRACES_SAMPLER=parentbased_always_on"}
	up := startSidecarEnv(t, bin, fmt.Sprintf(`server: {http_addr: %s, grpc_addr: ""}
engine: {kind: test, model: upstream-tiny, model_version: v2, test: {step_cost: 1ms}}
`, upAddr), append(common, "OTEL_SERVICE_NAME=upstream", "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://"+hl.Addr().String())...)
	front := startSidecarEnv(t, bin, fmt.Sprintf(`server: {http_addr: %s, grpc_addr: ""}
engine: {kind: remote, model: tiny, model_version: v1, remote: {url: "http://%s", model: upstream-tiny}}
`, frontAddr, upAddr), append(common, "OTEL_SERVICE_NAME=front", "OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://"+gl.Addr().String())...)
	up.base, front.base = "http://"+upAddr, "http://"+frontAddr
	waitReady(t, up)
	waitReady(t, front)

	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	c := openai.NewClient(option.WithBaseURL(front.base+"/v1/"), option.WithAPIKey("x"), option.WithMaxRetries(0),
		option.WithHeader("traceparent", "00-"+traceID+"-"+parentID+"-01"))
	st := c.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
		Model: "tiny", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")}, MaxTokens: openai.Int(12),
	})
	for st.Next() {
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}

	var spans []receivedSpan
	for deadline := time.Now().Add(10 * time.Second); len(spans) < 3; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("spans of the trace: %d, want 3 (front server, front client, upstream server)\nfront:\n%s\nupstream:\n%s", len(spans), front.stderr, up.stderr)
		}
		spans = recv.trace(traceID)
	}
	find := func(service string, kind tracepb.Span_SpanKind) *tracepb.Span {
		for _, s := range spans {
			if s.service == service && s.Kind == kind {
				return s.Span
			}
		}
		t.Fatalf("no %s span from %s in %d spans", kind, service, len(spans))
		return nil
	}
	fs, fc, us := find("front", tracepb.Span_SPAN_KIND_SERVER), find("front", tracepb.Span_SPAN_KIND_CLIENT), find("upstream", tracepb.Span_SPAN_KIND_SERVER)
	for _, p := range []struct {
		name          string
		child, parent []byte
	}{
		{"front server span under the client's", fs.ParentSpanId, mustHex(parentID)},
		{"front client span under the front server span", fc.ParentSpanId, fs.SpanId},
		{"upstream server span under the front client span", us.ParentSpanId, fc.SpanId},
	} {
		if hex.EncodeToString(p.child) != hex.EncodeToString(p.parent) {
			t.Errorf("%s: parent %x, want %x", p.name, p.child, p.parent)
		}
	}
	for _, c := range []struct {
		span *tracepb.Span
		want map[string]string
	}{
		{fs, map[string]string{"gen_ai.operation.name": "chat", "gen_ai.request.model": "tiny", "gen_ai.request.max_tokens": "12",
			"gen_ai.usage.output_tokens": "12", "gen_ai.response.finish_reasons": "length", "gen_ai.provider.name": "autoglm",
			"autoglm.model_version": "v1", "http.response.status_code": "200"}},
		{us, map[string]string{"gen_ai.operation.name": "chat", "gen_ai.request.model": "upstream-tiny",
			"gen_ai.usage.output_tokens": "12", "gen_ai.response.finish_reasons": "length", "autoglm.model_version": "v2"}},
	} {
		for k, v := range c.want {
			if got := attr(c.span.Attributes, k); got != v {
				t.Errorf("span %q: %s = %q, want %q", c.span.Name, k, got, v)
			}
		}
		if attr(c.span.Attributes, "gen_ai.usage.input_tokens") == "0" {
			t.Errorf("span %q: no input tokens", c.span.Name)
		}
		for _, e := range []string{"admission", "gen_ai.prefill.start", "gen_ai.first_token", "gen_ai.decode.end"} {
			if !hasEvent(c.span, e) {
				t.Errorf("span %q lacks the event %q", c.span.Name, e)
			}
		}
	}
	if fs.Name != "chat tiny" || us.Name != "chat upstream-tiny" {
		t.Errorf("span names %q, %q; want the GenAI convention's {operation} {model}", fs.Name, us.Name)
	}
	if !strings.Contains(front.stderr.String(), `"trace_id":"`+traceID+`"`) {
		t.Errorf("the front sidecar's access log does not carry the trace id:\n%s", front.stderr)
	}

	// Istio's proxies propagate B3 headers: a trace started there
	// continues here too.
	const b3Trace, b3Span = "a3ce929d0e0e47364bf92f3577b34da6", "b7ad6b7169203331"
	req, _ := http.NewRequest(http.MethodPost, front.base+"/v1/completions", strings.NewReader(`{"model":"tiny","prompt":"hi","max_tokens":3}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-B3-TraceId", b3Trace)
	req.Header.Set("X-B3-SpanId", b3Span)
	req.Header.Set("X-B3-Sampled", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got := recv.trace(b3Trace)
		if len(got) >= 3 {
			for _, s := range got {
				if s.service == "front" && s.Kind == tracepb.Span_SPAN_KIND_SERVER {
					if hex.EncodeToString(s.ParentSpanId) != b3Span || s.Name != "text_completion tiny" {
						t.Errorf("B3: front server span %q has parent %x, want %s", s.Name, s.ParentSpanId, b3Span)
					}
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B3: %d spans of the trace, want 3", len(got))
		}
	}
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}
