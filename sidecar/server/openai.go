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
	g := generation{model: req.Model, chat: toolMessages(req.Messages), maxTokens: req.MaxTokens, stop: req.Stop,
		sampling: toSampling(&req.Sampling), timeoutMS: req.TimeoutMS, extra: extra, n: 1,
		tools: engineTools(req.ToolDefs), choice: req.Choice}
	if s.sched != nil {
		var aerr *api.Error
		if g.format, aerr = compileFormat(req); aerr != nil {
			s.reply(w, c, aerr)
			return
		}
	}
	if req.N != nil {
		g.n = *req.N
	}
	if req.Logprobs != nil && *req.Logprobs {
		g.logprobs = true
		if req.TopLogprobs != nil {
			g.topLogprobs = *req.TopLogprobs
		}
	}
	if s.sched == nil && req.PassThrough() {
		g.raw = &remote.RawRequest{Path: "/v1/chat/completions", Body: raw, Stream: req.Stream}
		s.relay(w, r, c, &g, &req.Sampling)
		return
	}
	s.serve(w, r, c, &g, &req.Sampling, &chatFormat{model: req.Model, created: time.Now().Unix(), logprobs: g.logprobs})
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
		defaultMT: defaultCompletionMT, stop: req.Stop, sampling: toSampling(&req.Sampling), timeoutMS: req.TimeoutMS, extra: extra, n: 1}
	if req.N != nil {
		g.n = *req.N
	}
	if req.Logprobs != nil {
		g.logprobs, g.topLogprobs = true, *req.Logprobs
	}
	if s.sched == nil && req.PassThrough() {
		g.raw = &remote.RawRequest{Path: "/v1/completions", Body: raw, Stream: req.Stream}
		s.relay(w, r, c, &g, &req.Sampling)
		return
	}
	s.serve(w, r, c, &g, &req.Sampling, &textFormat{model: req.Model, created: time.Now().Unix(), logprobs: g.logprobs})
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
func (s *Server) start(w http.ResponseWriter, r *http.Request, c *call, g *generation) ([]reader, context.CancelFunc) {
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
	seqs, err := s.startChoices(ctx, g, pri, tenant)
	w.Header()[telemetry.ORCAHeader] = []string{s.orca()}
	if err != nil {
		cancel()
		e := s.failure(err)
		c.admitted(true, e)
		s.reply(w, c, e)
		return nil, nil
	}
	c.admitted(false, nil)
	return seqs, cancel
}

// startChoices queues a generation's n choices, each its own sequence
// under the same deadline (a request passed through to a remote engine
// is one, whatever its n), and the generations that came with it.
func (s *Server) startChoices(ctx context.Context, g *generation, pri int, tenant string) ([]reader, error) {
	choices := []*generation{g}
	for i := 1; i < g.n && g.raw == nil; i++ {
		gi := *g
		gi.sampling.Seed += int64(i) // with a seed the choices are reproducible, not equal
		choices = append(choices, &gi)
	}
	var seqs []reader
	if l, ok := s.be.(*local); ok && len(choices) > 1 {
		group, err := l.startGroup(ctx, choices, pri, tenant)
		if err != nil {
			return nil, err
		}
		seqs, choices = group, nil
	}
	for _, gi := range append(choices, g.more...) {
		seq, err := s.be.start(ctx, gi, pri, tenant)
		if err != nil {
			return nil, err // the request's context ends the queued ones
		}
		seqs = append(seqs, seq)
	}
	return seqs, nil
}

// serve runs a generation (its n choices) and answers it, streamed or
// not. Nothing is written before the first token or the failure, so a
// request rejected while queued still gets its own status code.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, c *call, g *generation, sp *api.Sampling, f format) {
	seqs, cancel := s.start(w, r, c, g)
	if seqs == nil {
		return
	}
	defer cancel()
	syn := inference.ToolSyntax{}
	if s.sched != nil {
		syn = s.sched.Tokenizer().ToolSyntax()
	}
	shapers := make([]*shaper, len(seqs))
	for i := range shapers {
		shapers[i] = newShaper(g, syn)
	}
	id := s.nextID(f.idPrefix())
	if !sp.Stream {
		choices := make([]choice, len(seqs))
		for i, seq := range seqs {
			text, lps, err := seq.WaitLogprobs()
			if err != io.EOF {
				s.reply(w, c, s.failure(err))
				return
			}
			res := seq.Result()
			content, calls, finish := shapers[i].whole(text)
			if finish == "" {
				finish = res.Finish
			}
			choices[i] = choice{content: content, lps: lps, calls: calls, finish: finish}
		}
		res := total(seqs)
		c.generated(id, res)
		s.writeJSON(w, http.StatusOK, f.full(id, choices, usage(res)))
		c.answered(http.StatusOK, nil)
		return
	}
	s.stream(w, c, id, f, seqs, shapers, sp.StreamOptions != nil && sp.StreamOptions.IncludeUsage)
}

// total is the result of a generation's choices: the prompt once, the
// completions' tokens added, the first token and the end of any.
func total(seqs []reader) stream.Result {
	res := seqs[0].Result()
	for _, q := range seqs[1:] {
		o := q.Result()
		res.CompletionTokens += o.CompletionTokens
		if !o.FirstToken.IsZero() && (res.FirstToken.IsZero() || o.FirstToken.Before(res.FirstToken)) {
			res.FirstToken = o.FirstToken
		}
		if o.Done.After(res.Done) {
			res.Done = o.Done
		}
	}
	return res
}

// event is one choice's news for the streamed answer.
type event struct {
	i    int
	text string
	lps  []stream.Logprob
	err  error
}

// events reads every choice's stream into one channel (a goroutine per
// choice; one choice is read in place). The goroutines end when their
// streams do or quit closes.
func events(seqs []reader, quit <-chan struct{}) func() event {
	if len(seqs) == 1 {
		return func() event {
			text, lps, err := seqs[0].NextLogprobs()
			return event{text: text, lps: lps, err: err}
		}
	}
	ch := make(chan event)
	for i, q := range seqs {
		go func() {
			for {
				text, lps, err := q.NextLogprobs()
				select {
				case ch <- event{i, text, lps, err}:
				case <-quit:
					return
				}
				if err != nil {
					return
				}
			}
		}()
	}
	return func() event { return <-ch }
}

func (s *Server) stream(w http.ResponseWriter, c *call, id string, f format, seqs []reader, shapers []*shaper, includeUsage bool) {
	quit := make(chan struct{})
	defer close(quit)
	next := events(seqs, quit)
	// The first event decides the status: a failure before any token is
	// answered with its own code.
	ev := next()
	if ev.err != nil && ev.err != io.EOF {
		s.reply(w, c, s.failure(ev.err))
		return
	}
	out := s.startSSE(w, c)
	send := func(v any) bool {
		b, _ := json.Marshal(v)
		return out.write(out.event(out.buf[:0], b))
	}
	for i := range seqs { // every choice opens with the assistant's role
		if !send(f.chunk(id, i, delta{}, true)) {
			return
		}
	}
	finishes := make([]string, len(seqs))
	open := len(seqs)
	for {
		if ev.err == nil {
			if d := shapers[ev.i].feed(ev.text, ev.lps); !d.empty() && !send(f.chunk(id, ev.i, d, false)) {
				return
			}
		} else if ev.err != io.EOF {
			out.fail(s, c, ev.err)
			return
		} else {
			open--
			d, finish := shapers[ev.i].end()
			if !d.empty() && !send(f.chunk(id, ev.i, d, false)) {
				return
			}
			if finish == "" {
				finish = seqs[ev.i].Result().Finish
			}
			finishes[ev.i] = finish
			if open == 0 {
				break
			}
		}
		ev = next()
	}
	res := total(seqs)
	c.generated(id, res)
	for i, fin := range finishes {
		if !send(f.final(id, i, fin)) {
			return
		}
	}
	if includeUsage && !send(f.usage(id, usage(res))) {
		return
	}
	out.done()
}

// sse writes a streamed answer: each write must be taken by the client
// within write_timeout — a reader that stops ends the stream (and frees
// its slot), one that reads is never cut however long the stream runs.
type sse struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	buf     []byte
}

// startSSE answers 200 with an event stream.
func (s *Server) startSSE(w http.ResponseWriter, c *call) *sse {
	h := w.Header()
	h["Content-Type"] = sseContentType
	h["Cache-Control"] = noCache
	h["X-Accel-Buffering"] = no
	w.WriteHeader(http.StatusOK)
	c.answered(http.StatusOK, nil)
	return &sse{w: w, rc: http.NewResponseController(w), timeout: s.opts.WriteTimeout}
}

// event appends one event holding data to dst (the stream's buffer is
// kept for the next).
func (o *sse) event(dst, data []byte) []byte {
	o.buf = append(append(append(dst, "data: "...), data...), "\n\n"...)
	return o.buf
}

// write sends p and flushes it; false when the client is gone.
func (o *sse) write(p []byte) bool {
	if o.timeout > 0 {
		_ = o.rc.SetWriteDeadline(time.Now().Add(o.timeout))
	}
	if _, err := o.w.Write(p); err != nil {
		return false
	}
	return o.rc.Flush() == nil
}

// fail ends a stream cut by err with an error event and [DONE] (nothing
// when the client has gone).
func (o *sse) fail(s *Server, c *call, err error) {
	if e := s.failure(err); e != nil {
		c.failedLater(e)
		o.write(append(o.event(o.buf[:0], e.JSON()), "data: [DONE]\n\n"...))
	}
}

// done ends a complete stream.
func (o *sse) done() { o.write([]byte("data: [DONE]\n\n")) }

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

// choice is one finished choice of a whole answer.
type choice struct {
	content *string
	lps     []stream.Logprob
	calls   []api.ToolCall
	finish  string
}

// format shapes the responses of one API.
type format interface {
	idPrefix() string
	full(id string, choices []choice, u api.Usage) any
	chunk(id string, i int, d delta, first bool) any
	final(id string, i int, finish string) any
	usage(id string, u api.Usage) any
}

type chatFormat struct {
	model    string
	created  int64
	logprobs bool
}

func (*chatFormat) idPrefix() string { return "chatcmpl-" }

func (f *chatFormat) full(id string, choices []choice, u api.Usage) any {
	out := make([]api.ChatChoice, len(choices))
	for i, ch := range choices {
		out[i] = api.ChatChoice{Index: i, FinishReason: ch.finish,
			Message: api.AssistantOutput{Role: "assistant", Content: ch.content, ToolCalls: ch.calls}}
		if f.logprobs {
			out[i].Logprobs = chatLogprobs(ch.lps)
		}
	}
	return api.ChatCompletion{ID: id, Object: "chat.completion", Created: f.created, Model: f.model, Usage: &u, Choices: out}
}

func (f *chatFormat) chunk(id string, i int, d delta, first bool) any {
	ch := api.ChunkChoice{Index: i, Delta: api.Delta{Content: d.text, ToolCalls: d.calls}}
	if first {
		ch.Delta.Role = "assistant"
	}
	if f.logprobs && len(d.lps) > 0 {
		ch.Logprobs = chatLogprobs(d.lps)
	}
	return f.wrap(id, []api.ChunkChoice{ch}, nil)
}

func (f *chatFormat) final(id string, i int, finish string) any {
	return f.wrap(id, []api.ChunkChoice{{Index: i, FinishReason: &finish}}, nil)
}

func (f *chatFormat) usage(id string, u api.Usage) any { return f.wrap(id, []api.ChunkChoice{}, &u) }

func (f *chatFormat) wrap(id string, c []api.ChunkChoice, u *api.Usage) api.ChatChunk {
	return api.ChatChunk{ID: id, Object: "chat.completion.chunk", Created: f.created, Model: f.model, Choices: c, Usage: u}
}

// chatLogprobs is the chat API's form of log probabilities; a token's
// bytes are given as numbers since they may split a character.
func chatLogprobs(lps []stream.Logprob) *api.ChatLogprobs {
	out := &api.ChatLogprobs{Content: make([]api.TokenLogprob, len(lps))}
	for i, lp := range lps {
		t := api.TokenLogprob{Token: string(lp.Token), Logprob: finite(lp.Logprob), Bytes: byteInts(lp.Token),
			TopLogprobs: make([]api.TopLogprob, len(lp.Top))}
		for j, a := range lp.Top {
			t.TopLogprobs[j] = api.TopLogprob{Token: string(a.Token), Logprob: finite(a.Logprob), Bytes: byteInts(a.Token)}
		}
		out.Content[i] = t
	}
	return out
}

// finite is a log probability JSON can carry: OpenAI writes -9999 for a
// token of zero probability.
func finite(lp float32) float64 {
	if math.IsInf(float64(lp), -1) || float64(lp) < -9999 {
		return -9999
	}
	return float64(lp)
}

func byteInts(b []byte) []int {
	out := make([]int, len(b))
	for i, x := range b {
		out[i] = int(x)
	}
	return out
}

type textFormat struct {
	model    string
	created  int64
	logprobs bool
	offsets  map[int]int // streamed: text offset so far, per choice
}

func (*textFormat) idPrefix() string { return "cmpl-" }

func (f *textFormat) full(id string, choices []choice, u api.Usage) any {
	out := make([]api.CompletionChoice, len(choices))
	for i, ch := range choices {
		out[i] = api.CompletionChoice{Index: i, Text: *ch.content, FinishReason: &choices[i].finish}
		if f.logprobs {
			out[i].Logprobs = completionLogprobs(ch.lps, 0)
		}
	}
	return f.wrap(id, out, &u)
}

func (f *textFormat) chunk(id string, i int, d delta, first bool) any {
	if first && d.empty() {
		return f.wrap(id, []api.CompletionChoice{{Index: i}}, nil)
	}
	ch := api.CompletionChoice{Index: i, Text: d.text}
	if f.logprobs && len(d.lps) > 0 {
		if f.offsets == nil {
			f.offsets = map[int]int{}
		}
		ch.Logprobs = completionLogprobs(d.lps, f.offsets[i])
		for _, lp := range d.lps {
			f.offsets[i] += len(lp.Token)
		}
	}
	return f.wrap(id, []api.CompletionChoice{ch}, nil)
}

func (f *textFormat) final(id string, i int, finish string) any {
	return f.wrap(id, []api.CompletionChoice{{Index: i, FinishReason: &finish}}, nil)
}

func (f *textFormat) usage(id string, u api.Usage) any {
	return f.wrap(id, []api.CompletionChoice{}, &u)
}

func (f *textFormat) wrap(id string, c []api.CompletionChoice, u *api.Usage) api.Completion {
	return api.Completion{ID: id, Object: "text_completion", Created: f.created, Model: f.model, Choices: c, Usage: u}
}

// completionLogprobs is the legacy completions API's form, offsets
// counted from at.
func completionLogprobs(lps []stream.Logprob, at int) *api.CompletionLogprobs {
	out := &api.CompletionLogprobs{Tokens: make([]string, len(lps)), TokenLogprobs: make([]float64, len(lps)),
		TopLogprobs: make([]map[string]float64, len(lps)), TextOffset: make([]int, len(lps))}
	for i, lp := range lps {
		out.Tokens[i], out.TokenLogprobs[i], out.TextOffset[i] = string(lp.Token), finite(lp.Logprob), at
		at += len(lp.Token)
		out.TopLogprobs[i] = make(map[string]float64, len(lp.Top))
		for _, a := range lp.Top {
			out.TopLogprobs[i][string(a.Token)] = finite(a.Logprob)
		}
	}
	return out
}

// identityStatus is the HTTP status of an identity refusal.
func identityStatus(err error) int {
	if errors.Is(err, identity.ErrForbidden) {
		return http.StatusForbidden
	}
	return http.StatusUnauthorized
}
