package load

import (
	"context"
	"errors"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	autoglmv1 "github.com/open-autoglm/autoglm/sidecar/proto/autoglm/v1"
)

// GRPC is the sidecar's gRPC API as a target (autoglm.v1.Inference/Generate,
// always streamed).
type GRPC struct {
	conn  *grpc.ClientConn
	c     autoglmv1.InferenceClient
	model string
	md    metadata.MD
}

// NewGRPC dials addr (host:port, or any gRPC target such as xds:///NAME;
// plain text); md is sent with every call.
func NewGRPC(addr, model string, md metadata.MD) (*GRPC, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	return &GRPC{conn: cc, c: autoglmv1.NewInferenceClient(cc), model: model, md: md}, nil
}

// NewGRPCConn is a target over a connection the caller made (e.g. with an
// xDS resolver of its own); Close closes it.
func NewGRPCConn(cc *grpc.ClientConn, model string, md metadata.MD) *GRPC {
	return &GRPC{conn: cc, c: autoglmv1.NewInferenceClient(cc), model: model, md: md}
}

// Close closes the connection.
func (g *GRPC) Close() error { return g.conn.Close() }

// Do sends r and measures it.
func (g *GRPC) Do(ctx context.Context, r *Request) Result {
	req := &autoglmv1.GenerateRequest{Model: g.model, MaxTokens: int32(r.MaxTokens)}
	if r.Chat != nil {
		for _, m := range r.Chat {
			req.Messages = append(req.Messages, &autoglmv1.ChatMessage{Role: m.Role, Content: m.Content})
		}
	} else {
		req.Prompt = r.Prompt
	}
	if len(g.md) > 0 {
		ctx = metadata.NewOutgoingContext(ctx, g.md)
	}
	stream, err := g.c.Generate(ctx, req)
	if err != nil {
		return grpcFailure(ctx, err)
	}
	var res Result
	var text strings.Builder
	var last time.Time
	for {
		msg, err := stream.Recv()
		now := time.Now()
		if errors.Is(err, io.EOF) {
			res.Done, res.Text = now, text.String()
			return res
		}
		if err != nil {
			return grpcFailure(ctx, err)
		}
		if u := msg.GetUsage(); u != nil {
			res.PromptTokens, res.CompletionTokens = int(u.PromptTokens), int(u.CompletionTokens)
		}
		if msg.Text == "" {
			continue
		}
		text.WriteString(msg.Text)
		if res.FirstToken.IsZero() {
			res.FirstToken = now
		} else {
			res.Gaps = append(res.Gaps, now.Sub(last))
		}
		last = now
	}
}

// grpcFailure classifies a gRPC error like its HTTP counterpart
// (RESOURCE_EXHAUSTED is the sidecar's 429).
func grpcFailure(ctx context.Context, err error) Result {
	res := Result{Done: time.Now(), Reason: status.Code(err).String() + ": " + status.Convert(err).Message()}
	switch status.Code(err) {
	case codes.ResourceExhausted:
		res.Class, res.Status = ClassRateLimited, 429
	case codes.DeadlineExceeded:
		res.Class = ClassTimeout
	case codes.InvalidArgument, codes.NotFound, codes.PermissionDenied, codes.Unauthenticated, codes.FailedPrecondition:
		res.Class = ClassClient
	case codes.Unavailable:
		// A refused connection and a draining server both read so.
		res.Class = ClassTransport
	default:
		res.Class = ClassServer
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		res.Class = ClassTimeout
	}
	return res
}
