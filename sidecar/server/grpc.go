package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/orca"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/sidecar/api"
	"github.com/open-autoglm/autoglm/sidecar/identity"
	autoglmv1 "github.com/open-autoglm/autoglm/sidecar/proto/autoglm/v1"
	"github.com/open-autoglm/autoglm/sidecar/telemetry"
)

// GRPCServer returns a gRPC server with the Inference service, the health
// service (NOT_SERVING until warm-up, and again while draining) and
// reflection.
func (s *Server) GRPCServer() *grpc.Server {
	gs := grpc.NewServer(append([]grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		orca.CallMetricsServerOption(orcaMetrics{s}),
	}, s.grpcOpts...)...)
	autoglmv1.RegisterInferenceServer(gs, grpcService{s: s})
	if err := orca.Register(gs, orca.ServiceOptions{ServerMetricsProvider: orcaMetrics{s}}); err != nil {
		panic(err) // only for a nil provider
	}
	healthpb.RegisterHealthServer(gs, s.health)
	reflection.Register(gs)
	return gs
}

func newHealth() *health.Server {
	h := health.NewServer()
	h.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	h.SetServingStatus(autoglmv1.Inference_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	return h
}

func (s *Server) setServing(ok bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(autoglmv1.Inference_ServiceDesc.ServiceName, st)
}

type grpcService struct {
	autoglmv1.UnimplementedInferenceServer
	s *Server
}

func (g grpcService) ListModels(context.Context, *autoglmv1.ListModelsRequest) (*autoglmv1.ListModelsResponse, error) {
	return &autoglmv1.ListModelsResponse{Models: []*autoglmv1.Model{{Id: g.s.info.Model, ContextLength: int32(g.s.info.ContextLength)}}}, nil
}

func (g grpcService) Generate(req *autoglmv1.GenerateRequest, stream grpc.ServerStreamingServer[autoglmv1.GenerateResponse]) (err error) {
	s := g.s
	md, _ := metadata.FromIncomingContext(stream.Context())
	first := func(k string) string {
		if v := md.Get(strings.ToLower(k)); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	c := s.begin(stream.Context(), mdCarrier(md), "grpc", "chat", first(HeaderRequestID))
	defer func() {
		c.grpcStatus = status.Code(err)
		c.grpcCode = c.grpcStatus.String()
		s.m.GRPC("Generate", c.grpcCode)
		c.finish()
	}()
	ctx := c.ctx
	// The call's trailer carries the ORCA report (endpoint-load-metrics-bin)
	// as the call ends; asking for the recorder turns that on.
	orca.CallMetricsRecorderFromContext(ctx)
	gen, aerr := fromProto(req)
	if aerr != nil {
		s.refused(c, aerr)
		return grpcError(aerr)
	}
	c.request(gen)
	tenant := first(HeaderTenant)
	if s.policy.Enabled() {
		var addr string
		if p, ok := peer.FromContext(ctx); ok {
			addr = p.Addr.String()
		}
		var xfcc string // one value only, as for HTTP: two are not what the proxy sent
		if v := md.Get("x-forwarded-client-cert"); len(v) == 1 {
			xfcc = v[0]
		}
		id, err := s.policy.GRPC(ctx, s.info.Model, xfcc, addr)
		if err != nil {
			c.answered(identityStatus(err), api.NewError(identityStatus(err), "", "unauthenticated", ""))
			if errors.Is(err, identity.ErrForbidden) {
				return status.Error(codes.PermissionDenied, err.Error())
			}
			return status.Error(codes.Unauthenticated, err.Error())
		}
		tenant = id.String()
	}
	pri, dl, aerr := s.admit(gen, meta{priority: first(HeaderPriority), envoyTimeout: first(HeaderEnvoyTimeout)}, time.Now())
	c.caller(tenant, pri)
	if aerr != nil {
		s.refused(c, aerr)
		return grpcError(aerr)
	}
	ctx, cancel := context.WithDeadline(ctx, dl)
	defer cancel()
	seq, err := s.be.start(ctx, gen, pri, tenant)
	// The TEXT ORCA report (for Envoy) goes with the first message; a call
	// that fails before one carries it in its trailer instead — response
	// headers would commit the call, and the client could no longer retry
	// it on another replica.
	report := metadata.Pairs(strings.ToLower(telemetry.ORCAHeader), s.orca())
	send := func(r *autoglmv1.GenerateResponse) error {
		if report != nil {
			stream.SetHeader(report)
			report = nil
		}
		return stream.Send(r)
	}
	fail := func(e *api.Error) error {
		if report != nil {
			stream.SetTrailer(report)
		}
		// A gRPC call's outcome is its final status, also after messages.
		c.answered(e.Status, e)
		return grpcFailure(ctx, e)
	}
	if err != nil {
		e := s.failure(err)
		c.admitted(true, e)
		if e == nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		return fail(e)
	}
	c.admitted(false, nil)
	for {
		text, err := seq.Next()
		if err == io.EOF {
			res := seq.Result()
			c.generated("", res)
			u := usage(res)
			c.answered(http.StatusOK, nil)
			return send(&autoglmv1.GenerateResponse{Text: validUTF8(text), FinishReason: res.Finish, Usage: &autoglmv1.Usage{
				PromptTokens: int32(u.PromptTokens), CompletionTokens: int32(u.CompletionTokens), TotalTokens: int32(u.TotalTokens)}})
		}
		if err != nil {
			e := s.failure(err)
			if e == nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			return fail(e)
		}
		if err := send(&autoglmv1.GenerateResponse{Text: validUTF8(text)}); err != nil {
			return err
		}
	}
}

// fromProto validates a gRPC request with the same rules as the HTTP API.
func fromProto(r *autoglmv1.GenerateRequest) (*generation, *api.Error) {
	sp := api.Sampling{Model: r.Model, Temperature: r.Temperature, TopP: r.TopP, Seed: r.Seed, Stop: r.Stop}
	if r.MaxTokens != 0 {
		mt := int(r.MaxTokens)
		sp.MaxTokens = &mt
	}
	if r.TopK != 0 {
		k := int(r.TopK)
		sp.TopK = &k
	}
	if r.MinP != 0 {
		sp.MinP = &r.MinP
	}
	if r.RepetitionPenalty != 0 {
		sp.RepetitionPenalty = &r.RepetitionPenalty
	}
	if err := sp.Validate(); err != nil {
		return nil, err
	}
	g := &generation{model: r.Model, maxTokens: sp.MaxTokens, stop: r.Stop, sampling: toSampling(&sp)}
	given := 0
	if r.Prompt != "" {
		given++
		g.prompt = r.Prompt
	}
	if len(r.PromptTokens) > 0 {
		given++
		g.tokens = make([]int, len(r.PromptTokens))
		for i, t := range r.PromptTokens {
			g.tokens[i] = int(t)
		}
	}
	if len(r.Messages) > 0 {
		given++
		for i, m := range r.Messages {
			if m.Role == "" {
				return nil, api.Invalid("messages", fmt.Sprintf("messages[%d].role: is required", i))
			}
			g.chat = append(g.chat, inference.Message{Role: m.Role, Content: m.Content})
		}
	}
	if given != 1 {
		return nil, api.Invalid("prompt", "exactly one of prompt, prompt_tokens or messages is required")
	}
	return g, nil
}

// grpcFailure is grpcError for a request under way: once the call's own
// deadline has passed (expired in the queue or during generation) the code
// is DEADLINE_EXCEEDED, as gRPC reports any deadline, whichever of the
// server's answer and the client's own timer comes first.
func grpcFailure(ctx context.Context, e *api.Error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return status.Error(codes.DeadlineExceeded, "The request's deadline passed before it finished.")
	}
	return grpcError(e)
}

func grpcError(e *api.Error) error {
	c := codes.Internal
	switch e.Status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		c = codes.InvalidArgument
	case http.StatusNotFound:
		c = codes.NotFound
	case http.StatusTooManyRequests:
		c = codes.ResourceExhausted
	case http.StatusServiceUnavailable:
		c = codes.Unavailable
	case http.StatusGatewayTimeout:
		c = codes.DeadlineExceeded
	}
	return status.Error(c, e.Message)
}

// validUTF8 replaces invalid bytes as the JSON encoder does for the HTTP
// API: proto3 strings must be valid UTF-8, or the whole stream fails.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for _, r := range s { // each invalid byte decodes as one RuneError
		b.WriteRune(r)
	}
	return b.String()
}
