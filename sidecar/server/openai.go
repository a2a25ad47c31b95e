package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/remote"
	"github.com/open-autoglm/autoglm/sidecar/api"
	"github.com/open-autoglm/autoglm/sidecar/identity"
	"github.com/open-autoglm/autoglm/sidecar/stream"
	"github.com/open-autoglm/autoglm/sidecar/telemetry"
)

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	c := s.begin(r.Context(), headerCarrier(r), "chat", "chat", r.Header.Get(HeaderRequestID))
	defer c.finish()
	decode := api.DecodeChat
	if s.sched == nil { // a remote engine judges the features it serves
		decode = api.DecodeChatPassThrough
	}
	req, extra, raw, ok := decodeBody(s, w, r, c, decode)
	if !ok {
		return
	}
	msgs := make([]inference.Message, len(req.Messages))
	for i, m := range req.Messages {
		msgs[i] = inference.Message{Role: m.Role, Content: m.Content.Text}
	}
	g := generation{model: req.Model, chat: msgs, maxTokens: req.MaxTokens, stop: req.Stop,
		sampling: toSampling(&req.Sampling), timeoutMS: req.TimeoutMS, extra: extra}
	if s.sched == nil && req.PassThrough() {
		g.raw = &remote.RawRequest{Path: "/v1/chat/completions", Body: raw, Stream: req.Stream}
		s.relay(w, r, c, &g, &req.Sampling)
		return
	}
	s.serve(w, r, c, &g, &req.Sampling, chatFormat{model: req.Model, created: time.Now().Unix()})
}

func (s *Server) completion(w http.ResponseWriter, r *http.Request) {
	c := s.begin(r.Context(), headerCarrier(r), "completions", "text_completion", r.Header.Get(HeaderRequestID))
	defer c.finish()
	decode := api.DecodeCompletion
	if s.sched == nil {
		decode = api.DecodeCompletionPassThrough
	}
	req, extra, raw, ok := decodeBody(s, w, r, c, decode)
	if !ok {
		return
	}
	g := generation{model: req.Model, prompt: req.Prompt.Text, tokens: req.Prompt.Tokens, maxTokens: req.MaxTokens,
		defaultMT: defaultCompletionMT, stop: req.Stop, sampling: toSampling(&req.Sampling), timeoutMS: req.TimeoutMS, extra: extra}
	if s.sched == nil && req.PassThrough() {
		g.raw = &remote.RawRequest{Path: "/v1/completions", Body: raw, Stream: req.Stream}
		s.relay(w, r, c, &g, &req.Sampling)
		return
	}
	s.serve(w, r, c, &g, &req.Sampling, textFormat{model: req.Model, created: time.Now().Unix()})
}

// decodeBody reads and decodes a request body, answering the error itself
// when there is one. With server.unknown_fields ignore, the members the
// API does not define are taken out first: a remote engine is sent them
// (returned), the local engine ignores them and the answer names them in
// a Warning header, as vLLM serves such requests.
func decodeBody[T any](s *Server, w http.ResponseWriter, r *http.Request, c *call, decode func([]byte) (T, *api.Error)) (T, map[string]json.RawMessage, []byte, bool) {
	var zero T
	raw, aerr := s.readBody(w, r)
	if aerr != nil {
		s.reply(w, c, aerr)
		return zero, nil, nil, false
	}
	// The strict decoder first: only a body it refuses for an unknown
	// member is parsed again without them (no second parse per request).
	req, aerr := decode(raw)
	var u api.Unknown
	if aerr.UnknownMember() && s.opts.IgnoreUnknown {
		var body []byte
		body, u = api.SplitUnknown(raw, new(T))
		req, aerr = decode(body)
	}
	if aerr != nil {
		s.reply(w, c, aerr)
		return zero, nil, nil, false
	}
	if len(u.Names) > 0 && s.sched != nil {
		w.Header().Set("Warning", `299 autoglm-sidecar "Unrecognized request arguments ignored: `+strings.Join(u.Names, ", ")+`"`)
		return req, nil, raw, true
	}
	return req, u.Fields, raw, true
}

func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *api.Error) {
	// One allocation when the length is known: room for the body and the
	// read that sees EOF.
	size := 512
	if r.ContentLength > 0 && r.ContentLength <= s.opts.MaxBodyBytes {
		size = int(r.ContentLength) + 1
	}
	buf := make([]byte, 0, size)
	// The body within body_timeout: a slow-body client holds no
	// connection for long. Cleared after, so the stream that follows is
	// not cut by it.
	rc := http.NewResponseController(w)
	if s.opts.BodyTimeout > 0 {
		_ = rc.SetReadDeadline(time.Now().Add(s.opts.BodyTimeout))
	}
	body := http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes)
	for {
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			if s.opts.BodyTimeout > 0 {
				_ = rc.SetReadDeadline(time.Time{})
			}
			return buf, nil
		}
		if err != nil {
			// The rest of the body is not waited for: the connection
			// closes after the answer (the deadline stays).
			w.Header().Set("Connection", "close")
		}
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			s.m.Reject(telemetry.ReasonTooLarge)
			return nil, api.NewError(http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large",
				"Request body too large: the limit is "+strconv.FormatInt(tooBig.Limit, 10)+" bytes.")
		case err != nil:
			return nil, api.Invalid("", "could not read the request body: "+err.Error())
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
	}
}

// start verifies the caller, admits g (model, priority, deadline) and
// queues it, recording each step on c; on a refusal it answers and
// returns a nil reader. cancel ends the request's deadline context.
func (s *Server) start(w http.ResponseWriter, r *http.Request, c *call, g *generation) (reader, context.CancelFunc) {
	c.request(g)
	tenant := r.Header.Get(HeaderTenant)
	if s.policy.Enabled() {
		id, err := s.policy.HTTP(r, s.info.Model)
		if err != nil {
			code, typ := "unauthenticated", "authentication_error"
			if errors.Is(err, identity.ErrForbidden) {
				code, typ = "forbidden", "permission_error"
			}
			s.reply(w, c, api.NewError(identityStatus(err), typ, code, err.Error()))
			return nil, nil
		}
		tenant = id.String()
	}
	pri, dl, aerr := s.admit(g, meta{
		priority:     r.Header.Get(HeaderPriority),
		envoyTimeout: r.Header.Get(HeaderEnvoyTimeout), grpcTimeout: r.Header.Get(HeaderGRPCTimeout),
	}, time.Now())
	c.caller(tenant, pri)
	if aerr != nil {
		s.reply(w, c, aerr)
		return nil, nil
	}
	ctx, cancel := context.WithDeadline(c.ctx, dl)
	seq, err := s.be.start(ctx, g, pri, tenant)
	w.Header()[telemetry.ORCAHeader] = []string{s.orca()}
	if err != nil {
		cancel()
		e := s.failure(err)
		c.admitted(true, e)
		s.reply(w, c, e)
		return nil, nil
	}
	c.admitted(false, nil)
	return seq, cancel
}

// serve runs a generation and answers it, streamed or not. Nothing is
// written before the first token or the failure, so a request rejected
// while queued still gets its own status code.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, c *call, g *generation, sp *api.Sampling, f format) {
	seq, cancel := s.start(w, r, c, g)
	if seq == nil {
		return
	}
	defer cancel()
	id := s.nextID(f.idPrefix())
	if !sp.Stream {
		text, err := seq.Wait()
		if err != io.EOF {
			s.reply(w, c, s.failure(err))
			return
		}
		c.generated(id, seq.Result())
		s.writeJSON(w, http.StatusOK, f.full(id, text, seq.Result()))
		c.answered(http.StatusOK, nil)
		return
	}
	text, err := seq.Next()
	if err != nil && err != io.EOF {
		s.reply(w, c, s.failure(err))
		return
	}
	s.stream(w, c, id, f, seq, text, err, sp.StreamOptions != nil && sp.StreamOptions.IncludeUsage)
}

func (s *Server) stream(w http.ResponseWriter, c *call, id string, f format, seq reader, text string, err error, includeUsage bool) {
	h := w.Header()
	h["Content-Type"] = sseContentType
	h["Cache-Control"] = noCache
	h["X-Accel-Buffering"] = no
	w.WriteHeader(http.StatusOK)
	c.answered(http.StatusOK, nil)
	rc := http.NewResponseController(w)
	var buf []byte
	// Each event must be taken by the client within write_timeout: a
	// reader that stops ends the stream (and frees its slot), one that
	// reads is never cut however long the stream runs.
	progress := func() {
		if s.opts.WriteTimeout > 0 {
			_ = rc.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
		}
	}
	send := func(v any) bool {
		b, _ := json.Marshal(v)
		buf = append(append(append(buf[:0], "data: "...), b...), "\n\n"...)
		progress()
		if _, werr := w.Write(buf); werr != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send(f.chunk(id, text, true)) {
		return
	}
	for err == nil {
		if text, err = seq.Next(); text != "" && !send(f.chunk(id, text, false)) {
			return
		}
	}
	if err != io.EOF {
		if e := s.failure(err); e != nil {
			c.failedLater(e)
			buf = append(append(append(buf[:0], "data: "...), e.JSON()...), "\n\n"...)
			w.Write(buf)
			io.WriteString(w, "data: [DONE]\n\n")
		}
		return
	}
	res := seq.Result()
	c.generated(id, res)
	if !send(f.final(id, res.Finish)) {
		return
	}
	if includeUsage && !send(f.usage(id, usage(res))) {
		return
	}
	io.WriteString(w, "data: [DONE]\n\n")
	rc.Flush()
}

// Shared header values (never modified) save an allocation per response.
var (
	jsonContentType = []string{"application/json"}
	sseContentType  = []string{"text/event-stream"}
	noCache         = []string{"no-cache"}
	no              = []string{"no"}
)

// reply writes an error (nil: the client has gone, nothing to write).
func (s *Server) reply(w http.ResponseWriter, c *call, e *api.Error) {
	if e == nil {
		c.answered(499, nil)
		return
	}
	s.refused(c, e)
	s.writeError(w, e)
}

// refused counts an error answer: every request answered 400 or 404 is a
// rejection of an invalid request, whichever API it came on.
func (s *Server) refused(c *call, e *api.Error) {
	if e.Status == http.StatusBadRequest || e.Status == http.StatusNotFound {
		s.m.Reject(telemetry.ReasonInvalid)
	}
	c.answered(e.Status, e)
}

func (s *Server) writeError(w http.ResponseWriter, e *api.Error) {
	if e.Status == http.StatusTooManyRequests || e.Status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(s.opts.RetryAfter.Seconds()))))
	}
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(e.Status)
	w.Write(e.JSON())
}

func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		s.writeError(w, api.NewError(http.StatusInternalServerError, "server_error", "internal_error", "could not encode the response"))
		return
	}
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	if s.opts.WriteTimeout > 0 { // a client that does not read cannot hold the handler
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
	}
	w.WriteHeader(status)
	w.Write(b)
}

func usage(r stream.Result) api.Usage {
	return api.Usage{PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens, TotalTokens: r.PromptTokens + r.CompletionTokens}
}

// format shapes the responses of one API.
type format interface {
	idPrefix() string
	full(id, text string, r stream.Result) any
	chunk(id, text string, first bool) any
	final(id, finish string) any
	usage(id string, u api.Usage) any
}

type chatFormat struct {
	model   string
	created int64
}

func (chatFormat) idPrefix() string { return "chatcmpl-" }

func (f chatFormat) full(id, text string, r stream.Result) any {
	u := usage(r)
	return api.ChatCompletion{ID: id, Object: "chat.completion", Created: f.created, Model: f.model, Usage: &u,
		Choices: []api.ChatChoice{{Message: api.AssistantOutput{Role: "assistant", Content: text}, FinishReason: r.Finish}}}
}

func (f chatFormat) chunk(id, text string, first bool) any {
	d := api.Delta{Content: text}
	if first {
		d.Role = "assistant"
	}
	return f.wrap(id, []api.ChunkChoice{{Delta: d}}, nil)
}

func (f chatFormat) final(id, finish string) any {
	return f.wrap(id, []api.ChunkChoice{{FinishReason: &finish}}, nil)
}

func (f chatFormat) usage(id string, u api.Usage) any { return f.wrap(id, []api.ChunkChoice{}, &u) }

func (f chatFormat) wrap(id string, c []api.ChunkChoice, u *api.Usage) api.ChatChunk {
	return api.ChatChunk{ID: id, Object: "chat.completion.chunk", Created: f.created, Model: f.model, Choices: c, Usage: u}
}

type textFormat struct {
	model   string
	created int64
}

func (textFormat) idPrefix() string { return "cmpl-" }

func (f textFormat) full(id, text string, r stream.Result) any {
	u := usage(r)
	return f.wrap(id, []api.CompletionChoice{{Text: text, FinishReason: &r.Finish}}, &u)
}

func (f textFormat) chunk(id, text string, _ bool) any {
	return f.wrap(id, []api.CompletionChoice{{Text: text}}, nil)
}

func (f textFormat) final(id, finish string) any {
	return f.wrap(id, []api.CompletionChoice{{FinishReason: &finish}}, nil)
}

func (f textFormat) usage(id string, u api.Usage) any {
	return f.wrap(id, []api.CompletionChoice{}, &u)
}

func (f textFormat) wrap(id string, c []api.CompletionChoice, u *api.Usage) api.Completion {
	return api.Completion{ID: id, Object: "text_completion", Created: f.created, Model: f.model, Choices: c, Usage: u}
}

// identityStatus is the HTTP status of an identity refusal.
func identityStatus(err error) int {
	if errors.Is(err, identity.ErrForbidden) {
		return http.StatusForbidden
	}
	return http.StatusUnauthorized
}
