package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/chat"
	"github.com/open-autoglm/autoglm/inference/grammar"
	"github.com/open-autoglm/autoglm/inference/remote"
	"github.com/open-autoglm/autoglm/sidecar/admission"
	"github.com/open-autoglm/autoglm/sidecar/api"
	"github.com/open-autoglm/autoglm/sidecar/batch"
	"github.com/open-autoglm/autoglm/sidecar/stream"
	"github.com/open-autoglm/autoglm/sidecar/telemetry"
)

// Header names of the contracts in ARCHITECTURE.md, in canonical form so
// that net/http's Get does not canonicalise (and allocate) per request.
// gRPC metadata keys are their lower-case forms.
const (
	HeaderPriority      = "X-Autoglm-Priority"
	HeaderTenant        = "X-Autoglm-Tenant"
	HeaderEnvoyTimeout  = "X-Envoy-Expected-Rq-Timeout-Ms"
	HeaderGRPCTimeout   = "Grpc-Timeout"
	HeaderRequestID     = "X-Request-Id" // Envoy's request id, in access logs
	defaultCompletionMT = 16             // OpenAI's default max_tokens for /v1/completions
)

// generation is a request reduced to what the scheduler needs, whichever
// API it came from.
type generation struct {
	model     string
	prompt    string // text to tokenize, when tokens is nil
	tokens    []int
	chat      []inference.Message
	maxTokens *int
	defaultMT int // max tokens when the request gives none; 0 = to the context end
	stop      []string
	sampling  inference.Sampling
	timeoutMS *int64
	// extra are the request's members the API does not define, with
	// server.unknown_fields ignore: a remote engine is sent them.
	extra map[string]json.RawMessage
	// raw is the client's request passed through to a remote engine as it
	// came (the features only the engine serves); nil otherwise.
	raw *remote.RawRequest
	// For the local engine: the tools and the choice among them, the
	// grammar of response_format, log probabilities, and choices (n).
	tools       []inference.Tool
	choice      api.ToolChoice
	format      *grammar.Grammar
	logprobs    bool
	topLogprobs int
	n           int
	// pooling asks for the prompt's embedding instead of a reply.
	pooling inference.Pooling
	// more are generations started with this one, under its admission
	// and deadline: the inputs of an embeddings request after the first.
	more []*generation
}

// meta is what the request's headers (or gRPC metadata) say.
type meta struct {
	priority     string
	envoyTimeout string
	grpcTimeout  string
}

// admit checks what every backend needs: the model, the priority and the
// deadline.
func (s *Server) admit(g *generation, md meta, now time.Time) (pri int, dl time.Time, aerr *api.Error) {
	if g.model != s.info.Model {
		return 0, dl, api.ModelNotFound(g.model)
	}
	pri, err := parsePriority(md.priority)
	if err != nil {
		return 0, dl, api.Invalid(HeaderPriority, err.Error())
	}
	dl, aerr = s.deadline(md, g.timeoutMS, now)
	return pri, dl, aerr
}

// request validates g against the local model and turns it into a
// scheduler request: the prompt tokenized, max tokens within the context.
func (l *local) request(g *generation) (batch.Request, *api.Error) {
	var r batch.Request
	info, tok := l.info, l.sched.Tokenizer()
	switch {
	case g.tokens != nil:
		for i, t := range g.tokens {
			if t < 0 || t >= info.Vocab {
				return r, api.Invalid("prompt", fmt.Sprintf("prompt[%d]: token id %d is outside the vocabulary (0..%d)", i, t, info.Vocab-1))
			}
		}
		r.Prompt = g.tokens
	case g.chat != nil:
		text, err := tok.ChatPrompt(g.chat, g.tools)
		if err != nil {
			return r, api.Invalid("messages", err.Error())
		}
		r.Prompt = frame(tok, tok.Encode(text))
	default:
		r.Prompt = frame(tok, tok.Encode(g.prompt))
	}
	if g.pooling != inference.PoolNone {
		if len(r.Prompt) > info.ContextLength {
			return r, api.NewError(http.StatusBadRequest, "invalid_request_error", "context_length_exceeded", fmt.Sprintf(
				"This model's maximum context length is %d tokens, however you requested %d tokens in the input.", info.ContextLength, len(r.Prompt)))
		}
		r.Sampling = inference.Sampling{Pooling: g.pooling}
		return r, nil
	}
	room := info.ContextLength - len(r.Prompt)
	switch {
	case g.maxTokens != nil:
		r.MaxTokens = *g.maxTokens
	case g.defaultMT > 0:
		r.MaxTokens = min(g.defaultMT, max(room, 1))
	default:
		r.MaxTokens = max(room, 1)
	}
	// Compared without adding: max_tokens near 2^63 would wrap the sum.
	if r.MaxTokens > info.ContextLength-len(r.Prompt) {
		total := len(r.Prompt) + r.MaxTokens
		if total < r.MaxTokens {
			total = math.MaxInt
		}
		e := api.NewError(http.StatusBadRequest, "invalid_request_error", "context_length_exceeded", fmt.Sprintf(
			"This model's maximum context length is %d tokens. However, you requested %d tokens (%d in the prompt, %d for the completion). Please reduce the prompt or the completion length.",
			info.ContextLength, total, len(r.Prompt), r.MaxTokens))
		return r, e
	}
	r.Stop, r.Sampling = g.stop, g.sampling
	r.Sampling.Logprobs, r.Sampling.TopLogprobs = g.logprobs, g.topLogprobs
	return r, l.constrain(g, &r)
}

// constrain sets the request's constraint: a call of the tools when the
// choice requires one, else the response format's grammar.
func (l *local) constrain(g *generation, r *batch.Request) *api.Error {
	gr, param := g.format, "response_format"
	if g.choice.Mode == "required" || g.choice.Mode == "function" {
		var err error
		name := ""
		if g.choice.Mode == "function" {
			name = g.choice.Name
		}
		if gr, err = chat.ToolGrammar(g.tools, name, l.sched.Tokenizer().ToolSyntax()); err != nil {
			return api.Invalid("tool_choice", err.Error())
		}
		param = "tool_choice"
	}
	if gr == nil {
		return nil
	}
	if l.vocab == nil {
		return api.Invalid(param, "this engine cannot constrain its output")
	}
	c, err := l.vocab().Constrain(gr, r.MaxTokens)
	if err != nil {
		return api.Invalid("max_tokens", fmt.Sprintf("%v (%d tokens)", err, r.MaxTokens))
	}
	r.Sampling.Constraint = c
	return nil
}

func parsePriority(v string) (int, error) {
	if v == "" {
		return 0, nil
	}
	p, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || p < 0 {
		return 0, fmt.Errorf("%s: must be a non-negative integer (0 is highest), got %q", HeaderPriority, v)
	}
	return p, nil
}

// deadline is the tightest of the deadlines the request carries, capped by
// the configured maximum; the default applies when it carries none.
func (s *Server) deadline(md meta, timeoutMS *int64, now time.Time) (time.Time, *api.Error) {
	d := time.Duration(0)
	tighten := func(v time.Duration) {
		if d == 0 || v < d {
			d = v
		}
	}
	if md.envoyTimeout != "" {
		ms, err := strconv.ParseInt(strings.TrimSpace(md.envoyTimeout), 10, 64)
		if err != nil || ms < 0 {
			return time.Time{}, api.Invalid(HeaderEnvoyTimeout, fmt.Sprintf("%s: must be milliseconds, got %q", HeaderEnvoyTimeout, md.envoyTimeout))
		}
		if ms > 0 { // Envoy sends 0 for "no timeout"
			tighten(saturate(ms, time.Millisecond))
		}
	}
	if md.grpcTimeout != "" {
		v, err := ParseGRPCTimeout(md.grpcTimeout)
		if err != nil {
			return time.Time{}, api.Invalid(HeaderGRPCTimeout, err.Error())
		}
		tighten(v)
	}
	if timeoutMS != nil {
		tighten(saturate(*timeoutMS, time.Millisecond))
	}
	if d == 0 {
		d = s.opts.DefaultTimeout
	}
	return now.Add(min(d, s.opts.MaxTimeout)), nil
}

// ParseGRPCTimeout parses the grpc-timeout header: at most 8 digits and a
// unit H, M, S, m (ms), u (µs) or n (ns).
func ParseGRPCTimeout(v string) (time.Duration, error) {
	if len(v) < 2 || len(v) > 9 {
		return 0, fmt.Errorf("%s: malformed value %q", HeaderGRPCTimeout, v)
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s: malformed value %q", HeaderGRPCTimeout, v)
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, fmt.Errorf("%s: unknown unit in %q", HeaderGRPCTimeout, v)
	}
	return saturate(n, unit), nil
}

// saturate is n units, capped at the longest duration instead of
// wrapping negative (99999999H is past 2^63 ns): a huge timeout is then
// cut to max_timeout like any long one.
func saturate(n int64, unit time.Duration) time.Duration {
	if n <= 0 {
		return 0
	}
	if n > math.MaxInt64/int64(unit) {
		return math.MaxInt64
	}
	return time.Duration(n) * unit
}

// failure maps a scheduling error to an API error; nil means the client
// went away and there is no one to answer.
func (s *Server) failure(err error) *api.Error {
	var ae *api.Error
	var re *remote.Error
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &re):
		return s.upstreamError(re)
	case errors.Is(err, remote.ErrUnavailable):
		s.log.Warn("remote engine unavailable", "err", err)
		return api.NewError(http.StatusBadGateway, "server_error", "upstream_unavailable", "The inference engine could not be reached or cut the generation short.")
	case errors.Is(err, admission.ErrQueueFull):
		return api.NewError(http.StatusTooManyRequests, "rate_limit_error", telemetry.ReasonQueueFull, "The server is at capacity: the request queue is full. Retry later.")
	case errors.Is(err, admission.ErrDeadline):
		return api.NewError(http.StatusTooManyRequests, "rate_limit_error", telemetry.ReasonDeadline, "The server is at capacity: the request cannot start within its deadline. Retry later.")
	case errors.Is(err, admission.ErrClosed), errors.Is(err, stream.ErrStopped):
		return api.NewError(http.StatusServiceUnavailable, "server_error", telemetry.ReasonDraining, "The server is shutting down. Retry on another replica.")
	case errors.Is(err, batch.ErrTooLong):
		return api.NewError(http.StatusBadRequest, "invalid_request_error", "context_length_exceeded", err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return api.NewError(http.StatusGatewayTimeout, "timeout_error", "deadline_exceeded", "The request's deadline passed during generation.")
	case errors.Is(err, context.Canceled):
		return nil
	}
	s.log.Error("generation failed", "err", err)
	return api.NewError(http.StatusInternalServerError, "server_error", "internal_error", "The engine failed while generating.")
}

// upstreamError maps the remote engine's error answer. Its verdicts on the
// request (400, 413, 422) reach the client as 400 with the upstream's
// message; capacity answers (429, 503) keep their meaning; anything else
// (auth or model misconfiguration, 5xx) is the sidecar's 502, logged.
func (s *Server) upstreamError(re *remote.Error) *api.Error {
	code := func(def string) string {
		if re.Code != "" {
			return re.Code
		}
		return def
	}
	switch re.Status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		e := api.NewError(http.StatusBadRequest, "invalid_request_error", code(""), re.Message)
		if re.Param != "" {
			e.Param = &re.Param
		}
		return e
	case http.StatusTooManyRequests:
		return api.NewError(http.StatusTooManyRequests, "rate_limit_error", "upstream_at_capacity", "The inference engine is at capacity. Retry later.")
	case http.StatusServiceUnavailable:
		return api.NewError(http.StatusServiceUnavailable, "server_error", "upstream_unavailable", "The inference engine is not available. Retry on another replica.")
	}
	s.log.Error("remote engine failed", "status", re.Status, "type", re.Type, "code", re.Code, "message", re.Message)
	return api.NewError(http.StatusBadGateway, "server_error", "upstream_error", "The inference engine failed while generating.")
}

func toSampling(sp *api.Sampling) inference.Sampling {
	var out inference.Sampling
	if sp.Temperature != nil {
		out.Temperature = *sp.Temperature
	} else {
		out.Temperature = 1 // OpenAI's default
	}
	if sp.TopP != nil {
		out.TopP = *sp.TopP
	}
	if sp.TopK != nil {
		out.TopK = *sp.TopK
	}
	if sp.MinP != nil {
		out.MinP = *sp.MinP
	}
	if sp.RepetitionPenalty != nil {
		out.RepetitionPenalty = *sp.RepetitionPenalty
	}
	if sp.Seed != nil {
		out.Seed, out.HasSeed = *sp.Seed, true
	}
	return out
}

// frame adds the BOS (and EOS) the model's metadata asks for around a
// prompt given as text (a prompt of token ids is the caller's exactly);
// they count in usage.prompt_tokens.
func frame(tok inference.Tokenizer, p []int) []int {
	if f, ok := tok.(interface{ FramePrompt([]int) []int }); ok {
		return f.FramePrompt(p)
	}
	return p
}
