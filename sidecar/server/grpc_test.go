package server

import (
	"context"
	"google.golang.org/protobuf/proto"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/testengine"
	autoglmv1 "github.com/open-autoglm/autoglm/sidecar/proto/autoglm/v1"
	"github.com/open-autoglm/autoglm/sidecar/telemetry"
)

func dial(t *testing.T, sc *sidecar) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(sc.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func collect(stream grpc.ServerStreamingClient[autoglmv1.GenerateResponse]) (string, *autoglmv1.GenerateResponse, int, error) {
	var b strings.Builder
	var last *autoglmv1.GenerateResponse
	n := 0
	for {
		r, err := stream.Recv()
		if err == io.EOF {
			return b.String(), last, n, nil
		}
		if err != nil {
			return b.String(), last, n, err
		}
		n++
		b.WriteString(r.Text)
		last = r
	}
}

func TestGRPCGenerate(t *testing.T) {
	sc := start(t)
	cc := dial(t, sc)
	c := autoglmv1.NewInferenceClient(cc)
	stream, err := c.Generate(context.Background(), &autoglmv1.GenerateRequest{Model: "autoglm-test", Prompt: "once upon a time", MaxTokens: 16})
	if err != nil {
		t.Fatal(err)
	}
	text, last, n, err := collect(stream)
	if err != nil {
		t.Fatal(err)
	}
	if len(text) != 16 || last.FinishReason != "length" || last.Usage.CompletionTokens != 16 || last.Usage.PromptTokens != 16 || n < 2 {
		t.Fatalf("%q in %d messages, last %+v", text, n, last)
	}
	hdr, err := stream.Header()
	if err != nil || len(hdr.Get(telemetry.ORCAHeader)) != 1 {
		t.Fatalf("ORCA header metadata: %v %v", hdr, err)
	}
	// Same text as the HTTP completions API for the same prompt.
	oc := client(sc)
	resp, err := oc.Completions.New(context.Background(), completionParams("once upon a time"))
	if err != nil || resp.Choices[0].Text != text {
		t.Fatalf("HTTP %q (%v) vs gRPC %q", resp.Choices[0].Text, err, text)
	}
	models, err := c.ListModels(context.Background(), &autoglmv1.ListModelsRequest{})
	if err != nil || len(models.Models) != 1 || models.Models[0].Id != "autoglm-test" || models.Models[0].ContextLength != 512 {
		t.Fatalf("%v %v", models, err)
	}
}

func TestGRPCHealthAndReflection(t *testing.T) {
	sc := start(t)
	cc := dial(t, sc)
	h, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{Service: autoglmv1.Inference_ServiceDesc.ServiceName})
	if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health %v %v", h, err)
	}
	rs, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	r, err := rs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range r.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	if !strings.Contains(strings.Join(names, ","), "autoglm.v1.Inference") {
		t.Fatalf("reflection lists %v", names)
	}
}

func TestGRPCErrors(t *testing.T) {
	sc, openGate := gated(t, 1)
	defer openGate()
	c := autoglmv1.NewInferenceClient(dial(t, sc))
	call := func(ctx context.Context, req *autoglmv1.GenerateRequest) error {
		stream, err := c.Generate(ctx, req)
		if err != nil {
			return err
		}
		_, _, _, err = collect(stream)
		return err
	}
	for _, tc := range []struct {
		name string
		req  *autoglmv1.GenerateRequest
		code codes.Code
	}{
		{"unknown model", &autoglmv1.GenerateRequest{Model: "nope", Prompt: "x"}, codes.NotFound},
		{"no prompt", &autoglmv1.GenerateRequest{Model: "autoglm-test"}, codes.InvalidArgument},
		{"two prompts", &autoglmv1.GenerateRequest{Model: "autoglm-test", Prompt: "x", PromptTokens: []int32{1}}, codes.InvalidArgument},
		{"negative max", &autoglmv1.GenerateRequest{Model: "autoglm-test", Prompt: "x", MaxTokens: -1}, codes.InvalidArgument},
		{"beyond context", &autoglmv1.GenerateRequest{Model: "autoglm-test", Prompt: "x", MaxTokens: 5000}, codes.InvalidArgument},
		// Values JSON cannot carry, refused as HTTP refuses out-of-range ones.
		{"NaN temperature", &autoglmv1.GenerateRequest{Model: "autoglm-test", Prompt: "x", Temperature: proto.Float64(math.NaN())}, codes.InvalidArgument},
		{"infinite top_p", &autoglmv1.GenerateRequest{Model: "autoglm-test", Prompt: "x", TopP: proto.Float64(math.Inf(-1))}, codes.InvalidArgument},
		{"NaN min_p", &autoglmv1.GenerateRequest{Model: "autoglm-test", Prompt: "x", MinP: math.NaN()}, codes.InvalidArgument},
		{"infinite repetition penalty", &autoglmv1.GenerateRequest{Model: "autoglm-test", Prompt: "x", RepetitionPenalty: math.Inf(1)}, codes.InvalidArgument},
	} {
		if err := call(context.Background(), tc.req); status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.code)
		}
	}
	// One running (held by the gate), one queued, then RESOURCE_EXHAUSTED.
	req := &autoglmv1.GenerateRequest{Model: "autoglm-test", Prompt: "x", MaxTokens: 2}
	errs := make(chan error, 2)
	go func() { errs <- call(context.Background(), req) }()
	waitLoad(t, sc, 1, 0)
	// A deadline (grpc-timeout) expires while queued behind the held engine.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := call(ctx, req); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("expired: %v", err)
	}
	waitLoad(t, sc, 1, 0)
	go func() { errs <- call(context.Background(), req) }()
	waitLoad(t, sc, 1, 1)
	md := metadata.Pairs(HeaderPriority, "1")
	if err := call(metadata.NewOutgoingContext(context.Background(), md), req); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("full queue: %v, want ResourceExhausted", err)
	}
	openGate()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// bytesEngine is the test engine whose tokens all decode to an invalid
// UTF-8 byte, as a small or random model's may.
type bytesEngine struct{ *testengine.Engine }

type badTokenizer struct{ inference.Tokenizer }

func (badTokenizer) Piece(int) []byte                { return []byte{0xff} }
func (e bytesEngine) Tokenizer() inference.Tokenizer { return badTokenizer{e.Engine.Tokenizer()} }

// TestGRPCInvalidUTF8: generated bytes that are not UTF-8 are replaced, as
// in the HTTP API, instead of failing the stream.
func TestGRPCInvalidUTF8(t *testing.T) {
	cfg := testConfig()
	sc := startWith(t, cfg, bytesEngine{testengine.New(testengine.Config{Model: cfg.Engine.Model, ContextLength: 512})})
	stream, err := autoglmv1.NewInferenceClient(dial(t, sc)).Generate(context.Background(), &autoglmv1.GenerateRequest{Model: "autoglm-test", Prompt: "x", MaxTokens: 4})
	if err != nil {
		t.Fatal(err)
	}
	text, last, _, err := collect(stream)
	if err != nil || text != strings.Repeat("\uFFFD", 4) || last.Usage.CompletionTokens != 4 {
		t.Fatalf("%q %+v %v", text, last, err)
	}
}
