package server

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/open-autoglm/autoglm/sidecar/api"
	"github.com/open-autoglm/autoglm/sidecar/stream"
	"github.com/open-autoglm/autoglm/sidecar/telemetry"
)

// GenAI semantic-convention attribute keys (OpenTelemetry semantic
// conventions, gen-ai spans), and ours.
const (
	attrOperation      = attribute.Key("gen_ai.operation.name")
	attrRequestModel   = attribute.Key("gen_ai.request.model")
	attrResponseModel  = attribute.Key("gen_ai.response.model")
	attrProvider       = attribute.Key("gen_ai.provider.name")
	attrMaxTokens      = attribute.Key("gen_ai.request.max_tokens")
	attrInputTokens    = attribute.Key("gen_ai.usage.input_tokens")
	attrOutputTokens   = attribute.Key("gen_ai.usage.output_tokens")
	attrFinishReasons  = attribute.Key("gen_ai.response.finish_reasons")
	attrResponseID     = attribute.Key("gen_ai.response.id")
	attrTenant         = attribute.Key("autoglm.tenant")
	attrPriority       = attribute.Key("autoglm.priority")
	attrModelVersion   = attribute.Key("autoglm.model_version")
	attrHTTPStatus     = attribute.Key("http.response.status_code")
	attrRPCStatus      = attribute.Key("rpc.grpc.status_code")
	attrErrorType      = attribute.Key("error.type")
	attrQueueWait      = attribute.Key("autoglm.queue_wait_ms")
	attrDecision       = attribute.Key("autoglm.admission.decision")
	attrDecisionReason = attribute.Key("autoglm.admission.reason")
)

var serverSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer),
	trace.WithAttributes(attrProvider.String(telemetry.ProviderName))}

// call is one request's observation: its server span, the metrics of its
// answer and its access-log line. The handler that owns the request owns
// its call; finish ends it once.
type call struct {
	s       *Server
	ctx     context.Context
	span    trace.Span
	api, op string
	start   time.Time
	// What the request turned out to be.
	model, tenant, id, requestID string
	priority, maxTokens          int
	status                       int    // HTTP status of the answer (499: the client left)
	grpcCode                     string // gRPC status code name, for gRPC calls
	grpcStatus                   grpccodes.Code
	errType                      string // the API error code of a failure
	res                          *stream.Result
	timeout                      time.Duration
}

// begin starts the call of a request arriving on apiName with the trace
// context in carrier (HTTP headers or gRPC metadata).
func (s *Server) begin(ctx context.Context, carrier propagation.TextMapCarrier, apiName, op, requestID string) *call {
	// The caller's trace context is taken either way, so that it reaches
	// the remote engine even with tracing off; spans only with it on.
	ctx = otel.GetTextMapPropagator().Extract(ctx, carrier)
	var span trace.Span
	if s.tracer != nil {
		ctx, span = s.tracer.Start(ctx, op, serverSpan...)
	} else {
		span = trace.SpanFromContext(ctx) // not recording: the caller's context, or none
	}
	return &call{s: s, ctx: ctx, span: span, api: apiName, op: op, start: time.Now(), requestID: requestID}
}

// request records what the decoded request asks for.
func (c *call) request(g *generation) {
	c.model = g.model
	if g.maxTokens != nil {
		c.maxTokens = *g.maxTokens
	}
	if g.chat == nil && c.op == "chat" { // a gRPC call of a prompt
		c.op = "text_completion"
	}
	if c.span.IsRecording() {
		c.span.SetName(c.op + " " + g.model)
		c.span.SetAttributes(attrOperation.String(c.op), attrRequestModel.String(g.model))
		if c.maxTokens > 0 {
			c.span.SetAttributes(attrMaxTokens.Int(c.maxTokens))
		}
	}
}

// caller records who the caller is and the priority it asked for.
func (c *call) caller(tenant string, priority int) {
	c.tenant, c.priority = tenant, priority
	if c.span.IsRecording() {
		c.span.SetAttributes(attrTenant.String(tenant), attrPriority.Int(priority))
	}
}

// admitted records the admission decision: queued, or refused with e
// (nil e for a refusal: the client left).
func (c *call) admitted(refused bool, e *api.Error) {
	if !c.span.IsRecording() {
		return
	}
	if !refused {
		c.span.AddEvent("admission", trace.WithAttributes(attrDecision.String("queued")))
		return
	}
	reason := "canceled"
	if e != nil {
		reason = errCode(e)
	}
	c.span.AddEvent("admission", trace.WithAttributes(attrDecision.String("rejected"), attrDecisionReason.String(reason)))
}

// answered records the HTTP status of the answer (the first one given
// wins: a stream that fails later was still answered 200).
func (c *call) answered(status int, e *api.Error) {
	if c.status != 0 {
		return
	}
	c.status = status
	if e != nil {
		c.errType = errCode(e)
	}
	c.s.m.Request(c.api, status)
}

// failedLater records a failure after the answer began (a stream cut by
// the engine or the deadline).
func (c *call) failedLater(e *api.Error) {
	if e != nil && c.errType == "" {
		c.errType = errCode(e)
	}
}

// generated records the generation's result.
func (c *call) generated(id string, r stream.Result) {
	c.id, c.res = id, &r
}

// finish ends the call: the span, the GenAI metrics and the access-log
// line.
func (c *call) finish() {
	end := time.Now()
	if c.status == 0 { // the client left before an answer
		c.answered(499, nil)
		c.errType = "canceled"
	}
	r := c.res
	if r == nil {
		r = &stream.Result{}
	}
	errType := c.errType
	if c.status >= 400 && errType == "" {
		errType = strconv.Itoa(c.status)
	}
	if c.grpcCode != "" && c.grpcStatus != grpccodes.OK && errType == "" {
		errType = c.grpcCode
	}
	if c.model != "" && c.model == c.s.info.Model {
		c.s.m.ObserveGenAI(c.ctx, telemetry.Finished{Operation: c.op, Model: c.model, ErrorType: errType,
			Arrived: c.start, FirstToken: r.FirstToken, Done: end,
			PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens})
	}
	if c.span.IsRecording() {
		sp := c.span
		if c.res != nil {
			if !r.Admitted.IsZero() {
				sp.AddEvent("gen_ai.prefill.start", trace.WithTimestamp(r.Admitted),
					trace.WithAttributes(attrQueueWait.Float64(float64(r.Admitted.Sub(r.Arrived).Microseconds())/1000)))
			}
			if !r.FirstToken.IsZero() {
				sp.AddEvent("gen_ai.first_token", trace.WithTimestamp(r.FirstToken))
			}
			if !r.Done.IsZero() {
				sp.AddEvent("gen_ai.decode.end", trace.WithTimestamp(r.Done))
			}
			sp.SetAttributes(attrInputTokens.Int(r.PromptTokens), attrOutputTokens.Int(r.CompletionTokens), attrResponseModel.String(c.s.info.Model))
			if r.Finish != "" {
				sp.SetAttributes(attrFinishReasons.StringSlice([]string{r.Finish}))
			}
		}
		if c.id != "" {
			sp.SetAttributes(attrResponseID.String(c.id))
		}
		if c.s.modelVersion != "" {
			sp.SetAttributes(attrModelVersion.String(c.s.modelVersion))
		}
		if c.grpcCode != "" {
			sp.SetAttributes(attrRPCStatus.Int(int(c.grpcStatus)))
		} else {
			sp.SetAttributes(attrHTTPStatus.Int(c.status))
		}
		if errType != "" {
			sp.SetAttributes(attrErrorType.String(errType))
			if c.status >= 500 || c.status == 0 || (c.grpcCode != "" && serverFault(c.grpcStatus)) {
				sp.SetStatus(codes.Error, errType)
			}
		}
	}
	if c.span.IsRecording() {
		c.span.End(trace.WithTimestamp(end))
	}
	c.log(end, r, errType)
}

// log writes the access-log line: always for failures, for a sample of
// successes.
func (c *call) log(end time.Time, r *stream.Result, errType string) {
	s := c.s
	if !s.accessLog {
		return
	}
	if errType == "" && s.accessSample < 1 && rand.Float64() >= s.accessSample {
		return
	}
	if !s.log.Enabled(c.ctx, slog.LevelInfo) {
		return
	}
	attrs := make([]slog.Attr, 0, 16)
	attrs = append(attrs,
		slog.String("request_id", c.requestID), slog.String("api", c.api), slog.String("model", c.model),
		slog.String("version", s.modelVersion), slog.String("tenant", c.tenant), slog.Int("priority", c.priority),
		slog.Int("status", c.status))
	if c.grpcCode != "" {
		attrs = append(attrs, slog.String("grpc_code", c.grpcCode))
	}
	if c.id != "" {
		attrs = append(attrs, slog.String("response_id", c.id))
	}
	attrs = append(attrs, slog.Int("prompt_tokens", r.PromptTokens), slog.Int("completion_tokens", r.CompletionTokens))
	if !r.Admitted.IsZero() {
		attrs = append(attrs, slog.Float64("queue_wait_ms", ms(r.Admitted.Sub(r.Arrived))))
	}
	if !r.FirstToken.IsZero() {
		attrs = append(attrs, slog.Float64("ttft_ms", ms(r.FirstToken.Sub(c.start))))
	}
	attrs = append(attrs, slog.Float64("duration_ms", ms(end.Sub(c.start))))
	if r.Finish != "" {
		attrs = append(attrs, slog.String("finish_reason", r.Finish))
	}
	if errType != "" {
		attrs = append(attrs, slog.String("error", errType))
	}
	s.log.LogAttrs(c.ctx, slog.LevelInfo, "request", attrs...)
}

// errCode is an API error's code, or its status where it has none.
func errCode(e *api.Error) string {
	if e.Code != nil && *e.Code != "" {
		return *e.Code
	}
	return strconv.Itoa(e.Status)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// serverFault says whether a gRPC code is the server's failure (an error
// span), not the caller's.
func serverFault(code grpccodes.Code) bool {
	switch code {
	case grpccodes.Unknown, grpccodes.Internal, grpccodes.Unavailable, grpccodes.DataLoss, grpccodes.Unimplemented, grpccodes.DeadlineExceeded:
		return true
	}
	return false
}

// headerCarrier reads trace context from HTTP request headers.
func headerCarrier(r *http.Request) propagation.TextMapCarrier {
	return propagation.HeaderCarrier(r.Header)
}

// mdCarrier reads trace context from gRPC metadata.
type mdCarrier metadata.MD

func (m mdCarrier) Get(k string) string {
	if v := metadata.MD(m).Get(k); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (m mdCarrier) Set(k, v string) { metadata.MD(m).Set(k, v) }

func (m mdCarrier) Keys() []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
