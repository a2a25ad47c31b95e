// Package remote drives an OpenAI-compatible inference server (vLLM,
// SGLang, llama.cpp's server, or another autoglm-sidecar) over HTTP: the
// execution backend when the model runs in another process, usually on a
// GPU. It is a client only; queueing and concurrency belong to the sidecar.
package remote

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/open-autoglm/autoglm/inference"
)

// ErrUnavailable wraps failures to reach the upstream or to read its
// answer: refused or reset connections, a stream cut before its end,
// malformed responses.
var ErrUnavailable = errors.New("remote: upstream unavailable")

// Error is an error answer from the upstream, in OpenAI's shape.
type Error struct {
	Status  int
	Type    string
	Code    string
	Param   string
	Message string
	// RetryAfter is the upstream's Retry-After hint, if any.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	return fmt.Sprintf("remote: upstream answered %d %s: %s", e.Status, e.Type, e.Message)
}

// Config says where the upstream is.
type Config struct {
	// URL is the server's base URL, e.g. http://127.0.0.1:8000; the /v1
	// paths are appended (a trailing /v1 is accepted too).
	URL string
	// Model is the model name the upstream serves.
	Model string
	// APIKey, when set, is sent as a bearer token.
	APIKey string
	// HTTP is the client to use; nil means one tuned for many concurrent
	// streams to one host.
	HTTP *http.Client
	// TLS configures that client's TLS (e.g. mTLS with the sidecar's SVID,
	// authorizing the upstream's SPIFFE ID); nil: Go's defaults.
	TLS *tls.Config
}

// Client calls one upstream. It is safe for concurrent use.
type Client struct {
	base  string
	model string
	auth  string
	// tracer makes the client spans of upstream calls; nil: tracing off.
	tracer trace.Tracer
	http   *http.Client
	// retries counts requests sent again after their connection failed
	// before any response came back.
	retries atomic.Int64
}

// IdleTimeout is how long an idle connection to the upstream is kept: less
// than the keep-alive timeouts of the common servers (uvicorn, which
// vLLM and SGLang run on, closes after 5 s), so that few requests meet a
// connection the upstream is closing.
const IdleTimeout = 4 * time.Second

// Retries is how many requests were sent again on a fresh connection.
// SetTracing makes the client record a span per upstream call with tp
// (nil: none, the default); the trace context goes upstream either way.
func (c *Client) SetTracing(tp trace.TracerProvider) {
	c.tracer = nil
	if tp != nil {
		c.tracer = tp.Tracer("github.com/open-autoglm/autoglm/inference/remote")
	}
}

func (c *Client) Retries() int64 { return c.retries.Load() }

// New checks cfg and returns a client.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("url: must be an absolute http(s) URL, got %q", cfg.URL)
	}
	if cfg.Model == "" {
		return nil, errors.New("model: is required")
	}
	c := &Client{base: strings.TrimSuffix(strings.TrimSuffix(u.String(), "/"), "/v1"), model: cfg.Model, http: cfg.HTTP}
	if cfg.APIKey != "" {
		c.auth = "Bearer " + cfg.APIKey
	}
	if c.http == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 1024
		t.IdleConnTimeout = IdleTimeout
		t.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		t.ResponseHeaderTimeout = 0 // a queued request may wait long for its first byte; ctx bounds it
		if cfg.TLS != nil {
			t.TLSClientConfig = cfg.TLS
		}
		c.http = &http.Client{Transport: t}
	}
	return c, nil
}

// Model is the upstream's model name.
func (c *Client) Model() string { return c.model }

// Request is one generation: a chat when Chat is set, else a completion of
// Prompt (or of Tokens, when set).
type Request struct {
	Chat   []inference.Message
	Prompt string
	Tokens []int
	// MaxTokens is nil for the upstream's default.
	MaxTokens *int
	Stop      []string
	Sampling  inference.Sampling
	// Extra are request members the sidecar's API does not define (a
	// newer SDK's field, the upstream's own extensions): sent on as they
	// came. They never replace a member the sidecar sets.
	Extra map[string]json.RawMessage
	// Raw, when set, is the client's request sent on as it came, for the
	// OpenAI features the sidecar leaves to the upstream (tools,
	// structured output, logprobs, n, image parts): only "model" is
	// replaced by the upstream's, and a streamed request asks for usage.
	// The Stream then returns each event's JSON as it came (not streamed:
	// the whole answer, once).
	Raw *RawRequest
}

// RawRequest is a request body passed through.
type RawRequest struct {
	Path   string // /v1/chat/completions or /v1/completions
	Body   []byte
	Stream bool
}

type wireMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type wireRequest struct {
	Model             string         `json:"model"`
	Messages          []wireMessage  `json:"messages,omitempty"`
	Prompt            any            `json:"prompt,omitempty"`
	MaxTokens         *int           `json:"max_tokens,omitempty"`
	Stop              []string       `json:"stop,omitempty"`
	Temperature       float64        `json:"temperature"`
	TopP              float64        `json:"top_p,omitempty"`
	TopK              int            `json:"top_k,omitempty"`
	MinP              float64        `json:"min_p,omitempty"`
	RepetitionPenalty float64        `json:"repetition_penalty,omitempty"`
	Seed              *int64         `json:"seed,omitempty"`
	Stream            bool           `json:"stream"`
	StreamOptions     *streamOptions `json:"stream_options,omitempty"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

func (c *Client) body(r *Request) ([]byte, string) {
	if r.Raw != nil {
		return c.rawBody(r.Raw), r.Raw.Path
	}
	w := wireRequest{
		Model: c.model, MaxTokens: r.MaxTokens, Stop: r.Stop,
		Temperature: r.Sampling.Temperature, TopP: r.Sampling.TopP, TopK: r.Sampling.TopK,
		MinP: r.Sampling.MinP, RepetitionPenalty: r.Sampling.RepetitionPenalty,
		Stream: true, StreamOptions: &streamOptions{IncludeUsage: true},
	}
	if r.Sampling.HasSeed {
		w.Seed = &r.Sampling.Seed
	}
	path := "/v1/completions"
	switch {
	case r.Chat != nil:
		path = "/v1/chat/completions"
		w.Messages = make([]wireMessage, len(r.Chat))
		for i, m := range r.Chat {
			w.Messages[i] = wireMessage{Role: m.Role, Content: m.Content}
		}
	case r.Tokens != nil:
		w.Prompt = r.Tokens
	default:
		w.Prompt = r.Prompt
	}
	b, _ := json.Marshal(w) // plain types only: cannot fail
	if len(r.Extra) > 0 {
		var m map[string]json.RawMessage
		if json.Unmarshal(b, &m) == nil {
			for k, v := range r.Extra {
				if _, set := m[k]; !set {
					m[k] = v
				}
			}
			if out, err := json.Marshal(m); err == nil {
				b = out
			}
		}
	}
	return b, path
}

// rawBody is a passed-through body with the upstream's model name, and,
// streamed, the usage asked for (the sidecar accounts tokens).
func (c *Client) rawBody(r *RawRequest) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(r.Body, &m) != nil {
		return r.Body // the client's body was validated: cannot happen
	}
	m["model"], _ = json.Marshal(c.model)
	if r.Stream {
		m["stream"] = json.RawMessage("true")
		so := map[string]json.RawMessage{}
		if raw, ok := m["stream_options"]; ok {
			_ = json.Unmarshal(raw, &so)
		}
		so["include_usage"] = json.RawMessage("true")
		m["stream_options"], _ = json.Marshal(so)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return r.Body
	}
	return b
}

// Generate starts a streamed generation. The stream ends when ctx does,
// which cancels the upstream request (the upstream sees the connection
// close and frees the sequence). A non-2xx answer is an *Error; transport
// failures wrap ErrUnavailable; ctx's end is ctx.Err().
func (c *Client) Generate(ctx context.Context, r *Request) (_ *Stream, err error) {
	body, path := c.body(r)
	// A client span for the upstream call (ended by the Stream's Close, or
	// here on failure); its context goes upstream in traceparent (and
	// B3), so vLLM, SGLang or another sidecar continue the trace.
	op := "chat"
	if r.Chat == nil {
		op = "text_completion"
	}
	span := trace.SpanFromContext(ctx) // tracing off: not recording, ended by no one
	if c.tracer != nil {
		ctx, span = c.tracer.Start(ctx, op+" "+c.model, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
			attribute.String("gen_ai.operation.name", op), attribute.String("gen_ai.request.model", c.model),
			attribute.String("server.address", c.base)))
	}
	defer func() {
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
			span.End()
		}
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(req.Header))
	req.Header.Set("Content-Type", "application/json")
	if r.Raw != nil && !r.Raw.Stream {
		req.Header.Set("Accept", "application/json")
	} else {
		req.Header.Set("Accept", "text/event-stream")
	}
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	if dl, ok := ctx.Deadline(); ok {
		// Lets an upstream autoglm-sidecar (or Envoy) know the deadline.
		if ms := time.Until(dl).Milliseconds(); ms > 0 {
			req.Header.Set("X-Envoy-Expected-Rq-Timeout-Ms", strconv.FormatInt(ms, 10))
		}
	}
	req0 := req
	resp, err := c.http.Do(req)
	if err != nil && ctx.Err() == nil && staleConnection(err) {
		// The upstream closed a kept-alive connection as the request went
		// out (llama.cpp's server does after a few requests, uvicorn
		// after 5 s idle): no response came back, so the upstream did not
		// take the request, and it is sent once more — with the pool's
		// idle connections dropped, so on a fresh one.
		c.retries.Add(1)
		if t, ok := c.http.Transport.(interface{ CloseIdleConnections() }); ok {
			t.CloseIdleConnections()
		}
		req, _ = http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
		req.Header = req0.Header.Clone()
		resp, err = c.http.Do(req)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, readError(resp)
	}
	st := newStream(ctx, resp.Body)
	st.span = span
	if r.Raw != nil {
		st.raw, st.whole = true, !r.Raw.Stream
	}
	return st, nil
}

// staleConnection says whether err is a connection that failed before any
// response came back: closed by the server (EOF, "server closed idle
// connection") or reset. Go's transport retries such failures itself only
// for idempotent requests; a generation is a POST.
func staleConnection(err error) bool {
	var ne *net.OpError
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || strings.Contains(err.Error(), "server closed idle connection") ||
		(errors.As(err, &ne) && ne.Op == "write")
}

// readError turns an error response into an *Error, whatever its body.
func readError(resp *http.Response) *Error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := decodeError(b)
	if e == nil {
		e = &Error{Message: strings.TrimSpace(string(b))}
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
	}
	e.Status = resp.StatusCode
	if v := resp.Header.Get("Retry-After"); v != "" {
		if s, err := strconv.Atoi(v); err == nil && s >= 0 {
			e.RetryAfter = time.Duration(s) * time.Second
		}
	}
	return e
}

// decodeError reads {"error": {...}} as OpenAI and vLLM write it (vLLM's
// code may be a number); nil if b is not that.
func decodeError(b []byte) *Error {
	var v struct {
		Error *struct {
			Message string          `json:"message"`
			Type    string          `json:"type"`
			Param   *string         `json:"param"`
			Code    json.RawMessage `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &v); err != nil || v.Error == nil {
		return nil //nolint:nilerr // a body that is not OpenAI's error shape carries no error to return
	}
	e := &Error{Message: v.Error.Message, Type: v.Error.Type}
	if v.Error.Param != nil {
		e.Param = *v.Error.Param
	}
	var code string
	if json.Unmarshal(v.Error.Code, &code) == nil {
		e.Code = code
	}
	return e
}
