package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"unicode/utf8"
)

// Limits of a request: stop strings (OpenAI's limit), choices, and log
// probability alternatives (chat: OpenAI's 20; completions: its 5).
const (
	MaxStop               = 4
	MaxN                  = 16
	MaxTopLogprobs        = 20
	MaxCompletionLogprobs = 5
)

// problems collects validation failures so a request learns all of them
// at once; the first one's field becomes the error's param.
type problems struct {
	param string
	msgs  []string
	// passThrough: the request goes to a remote engine as it came, so the
	// OpenAI features the sidecar does not implement are the engine's to
	// judge (tools, response_format, logprobs, n, non-text parts).
	passThrough bool
}

func (p *problems) add(param, format string, args ...any) {
	if p.param == "" {
		p.param = param
	}
	p.msgs = append(p.msgs, param+": "+fmt.Sprintf(format, args...))
}

func (p *problems) err() *Error {
	if len(p.msgs) == 0 {
		return nil
	}
	return Invalid(p.param, strings.Join(p.msgs, "; "))
}

// decode parses body strictly into v: valid UTF-8, one JSON object, no
// unknown fields.
func decode(body []byte, v any) *Error {
	if !utf8.Valid(body) {
		return Invalid("", "request body is not valid UTF-8")
	}
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return jsonError(err)
	}
	if d.More() {
		return Invalid("", "invalid JSON body: unexpected data after the top-level object")
	}
	return uniqueMembers(body)
}

// uniqueMembers refuses an object, at any depth, with two member names
// equal without case. encoding/json gives the last of them to one field
// while a reader matching names exactly (the mesh filter reads the body
// before this sidecar) may take another: {"temperature":0,
// "Temperature":0.9} would be cached as deterministic and sampled at 0.9.
// The filter refuses the same bodies.
func uniqueMembers(body []byte) *Error {
	d := json.NewDecoder(bytes.NewReader(body))
	type frame struct {
		object  bool
		wantKey bool // in an object: the next token is a member name
		keys    []string
	}
	var stack []frame
	for {
		tok, err := d.Token()
		if err != nil {
			return nil //nolint:nilerr // the body was decoded above: this is its end, not a failure
		}
		var top *frame
		if len(stack) > 0 {
			top = &stack[len(stack)-1]
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if top != nil && top.object {
				top.wantKey = true // this container is the member's value
			}
			stack = append(stack, frame{object: tok == json.Delim('{'), wantKey: true})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			continue
		}
		if top == nil || !top.object {
			continue
		}
		if !top.wantKey { // a scalar value
			top.wantKey = true
			continue
		}
		k := tok.(string)
		for _, seen := range top.keys {
			if strings.EqualFold(seen, k) {
				return Invalid(k, fmt.Sprintf("duplicate member %q (member names are compared without case)", k))
			}
		}
		top.keys = append(top.keys, k)
		top.wantKey = false
	}
}

func jsonError(err error) *Error {
	var typ *json.UnmarshalTypeError
	var syn *json.SyntaxError
	switch {
	case errors.As(err, &typ):
		field := strings.TrimPrefix(typ.Field, "Sampling.")
		if field == "" {
			return Invalid("", "request body must be a JSON object")
		}
		return Invalid(field, fmt.Sprintf("%s: expected %s, got JSON %s", field, typeName(typ.Type.String()), typ.Value))
	case errors.As(err, &syn):
		return Invalid("", fmt.Sprintf("invalid JSON body: %v (at byte %d)", syn, syn.Offset))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		e := Invalid(name, "Unrecognized request argument supplied: "+name)
		e.unknown = true
		return e
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return Invalid("", "invalid JSON body: the body is empty or truncated")
	}
	return Invalid("", "invalid request: "+strings.TrimPrefix(err.Error(), "json: "))
}

func typeName(goType string) string {
	switch {
	case strings.Contains(goType, "int"):
		return "an integer"
	case strings.Contains(goType, "float"):
		return "a number"
	case goType == "bool" || goType == "*bool":
		return "a boolean"
	case strings.Contains(goType, "string"):
		return "a string"
	case strings.HasPrefix(goType, "[]"):
		return "an array"
	}
	return "an object"
}

// DecodeChat parses and validates a chat completion request.
func DecodeChat(body []byte) (*ChatRequest, *Error) { return decodeChat(body, false) }

// DecodeChatPassThrough parses a chat request bound for a remote engine:
// the same checks, but tools, tool calls, response_format, logprobs, n
// and non-text content parts are left to the engine (PassThrough says
// whether the request uses any).
func DecodeChatPassThrough(body []byte) (*ChatRequest, *Error) { return decodeChat(body, true) }

// PassThrough says whether the request uses an OpenAI feature that only a
// remote engine serves.
func (r *ChatRequest) PassThrough() bool {
	if isSet(r.Tools) || (isSet(r.ToolChoice) && string(r.ToolChoice) != `"none"`) || (r.Logprobs != nil && *r.Logprobs) ||
		(r.TopLogprobs != nil && *r.TopLogprobs != 0) || (r.ResponseFormat != nil && r.ResponseFormat.Type != "text") ||
		(r.N != nil && *r.N != 1) {
		return true
	}
	for _, m := range r.Messages {
		if m.Content.Other || isSet(m.ToolCalls) || m.Role == "tool" {
			return true
		}
	}
	return false
}

func decodeChat(body []byte, passThrough bool) (*ChatRequest, *Error) {
	var r ChatRequest
	if err := decode(body, &r); err != nil {
		return nil, err
	}
	p := problems{passThrough: passThrough}
	r.Sampling.validate(&p)
	if len(r.Messages) == 0 {
		p.add("messages", "must hold at least one message")
	}
	for i, m := range r.Messages {
		if !roles[m.Role] {
			p.add(fmt.Sprintf("messages[%d].role", i), "must be one of system, developer, user, assistant, tool; got %q", m.Role)
		}
		hasCalls := len(m.ToolCalls) > 0 && string(m.ToolCalls) != "null"
		if !m.Content.Set && !hasCalls { // an assistant turn of tool calls may have no content
			p.add(fmt.Sprintf("messages[%d].content", i), "is required")
		}
		if passThrough {
			continue
		}
		if m.Content.Other {
			p.add(fmt.Sprintf("messages[%d].content", i), "only text content parts are supported")
		}
		decodeMessageTools(&r.Messages[i], i, &p)
	}
	if r.MaxCompletionTokens != nil {
		if r.MaxTokens != nil && *r.MaxTokens != *r.MaxCompletionTokens {
			p.add("max_completion_tokens", "conflicts with max_tokens; give one of them")
		}
		if *r.MaxCompletionTokens < 1 {
			p.add("max_completion_tokens", "must be at least 1, got %d", *r.MaxCompletionTokens)
		}
		r.MaxTokens = r.MaxCompletionTokens
	}
	if passThrough {
		if err := p.err(); err != nil {
			return nil, err
		}
		return &r, nil
	}
	if r.TopLogprobs != nil {
		if *r.TopLogprobs < 0 || *r.TopLogprobs > MaxTopLogprobs {
			p.add("top_logprobs", "must be between 0 and %d, got %d", MaxTopLogprobs, *r.TopLogprobs)
		}
		if *r.TopLogprobs > 0 && (r.Logprobs == nil || !*r.Logprobs) {
			p.add("top_logprobs", "requires logprobs to be true")
		}
	}
	decodeTools(&r, &p)
	decodeFormat(&r, &p)
	if err := p.err(); err != nil {
		return nil, err
	}
	return &r, nil
}

// DecodeCompletion parses and validates a text completion request.
func DecodeCompletion(body []byte) (*CompletionRequest, *Error) { return decodeCompletion(body, false) }

// DecodeCompletionPassThrough parses a completion request bound for a
// remote engine: echo, suffix, logprobs, best_of, n and several prompts
// are the engine's to judge (PassThrough says whether any is used).
func DecodeCompletionPassThrough(body []byte) (*CompletionRequest, *Error) {
	return decodeCompletion(body, true)
}

// PassThrough says whether the request uses a feature only a remote
// engine serves.
func (r *CompletionRequest) PassThrough() bool {
	return r.Echo || (r.Suffix != nil && *r.Suffix != "") || (r.Logprobs != nil && *r.Logprobs != 0) ||
		(r.BestOf != nil && *r.BestOf != 1) || (r.N != nil && *r.N != 1) || (r.Prompt != nil && r.Prompt.Count > 1)
}

func decodeCompletion(body []byte, passThrough bool) (*CompletionRequest, *Error) {
	var r CompletionRequest
	if err := decode(body, &r); err != nil {
		return nil, err
	}
	p := problems{passThrough: passThrough}
	r.Sampling.validate(&p)
	switch {
	case r.Prompt == nil || r.Prompt.Count == 0:
		p.add("prompt", "is required")
	case r.Prompt.Count > 1 && !passThrough:
		p.add("prompt", "only one prompt per request is supported, got %d", r.Prompt.Count)
	case r.Prompt.Count == 1 && r.Prompt.Tokens == nil && r.Prompt.Text == "":
		p.add("prompt", "must not be empty")
	}
	if passThrough {
		if err := p.err(); err != nil {
			return nil, err
		}
		return &r, nil
	}
	if r.Echo {
		p.add("echo", "echo is not supported")
	}
	if r.Suffix != nil && *r.Suffix != "" {
		p.add("suffix", "suffix is not supported")
	}
	if r.Logprobs != nil && (*r.Logprobs < 0 || *r.Logprobs > MaxCompletionLogprobs) {
		p.add("logprobs", "must be between 0 and %d, got %d", MaxCompletionLogprobs, *r.Logprobs)
	}
	if r.BestOf != nil && *r.BestOf != 1 {
		p.add("best_of", "only best_of=1 is supported")
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	return &r, nil
}

func isSet(raw json.RawMessage) bool {
	return len(raw) > 0 && string(raw) != "null" && string(raw) != "[]"
}

func (s *Sampling) validate(p *problems) {
	if s.Model == "" {
		p.add("model", "is required")
	}
	// JSON has no NaN or infinity; gRPC's doubles do, and every range
	// check below is false for NaN: one rule for both APIs.
	for _, f := range []struct {
		name string
		v    *float64
	}{{"temperature", s.Temperature}, {"top_p", s.TopP}, {"min_p", s.MinP}, {"repetition_penalty", s.RepetitionPenalty},
		{"presence_penalty", s.PresencePenalty}, {"frequency_penalty", s.FrequencyPenalty}} {
		if f.v != nil && (math.IsNaN(*f.v) || math.IsInf(*f.v, 0)) {
			p.add(f.name, "must be a finite number, got %g", *f.v)
			return
		}
	}
	if s.MaxTokens != nil && *s.MaxTokens < 1 {
		p.add("max_tokens", "must be at least 1, got %d", *s.MaxTokens)
	}
	if s.Temperature != nil && (*s.Temperature < 0 || *s.Temperature > 2) {
		p.add("temperature", "must be between 0 and 2, got %g", *s.Temperature)
	}
	if s.TopP != nil && (*s.TopP <= 0 || *s.TopP > 1) {
		p.add("top_p", "must be in (0, 1], got %g", *s.TopP)
	}
	if s.N != nil && (*s.N < 1 || (*s.N > MaxN && !p.passThrough)) {
		p.add("n", "must be between 1 and %d, got %d", MaxN, *s.N)
	}
	if s.StreamOptions != nil && !s.Stream {
		p.add("stream_options", "is only allowed when stream is true")
	}
	if len(s.Stop) > MaxStop {
		p.add("stop", "at most %d stop sequences, got %d", MaxStop, len(s.Stop))
	}
	for i, st := range s.Stop {
		if st == "" {
			p.add(fmt.Sprintf("stop[%d]", i), "must not be empty")
		}
	}
	if s.PresencePenalty != nil && *s.PresencePenalty != 0 {
		p.add("presence_penalty", "is not supported; use repetition_penalty")
	}
	if s.FrequencyPenalty != nil && *s.FrequencyPenalty != 0 {
		p.add("frequency_penalty", "is not supported; use repetition_penalty")
	}
	if len(s.LogitBias) > 0 {
		p.add("logit_bias", "is not supported")
	}
	if s.TopK != nil && *s.TopK < -1 {
		p.add("top_k", "must be -1 (off), 0 (off) or positive, got %d", *s.TopK)
	}
	if s.MinP != nil && (*s.MinP < 0 || *s.MinP > 1) {
		p.add("min_p", "must be between 0 and 1, got %g", *s.MinP)
	}
	if s.RepetitionPenalty != nil && *s.RepetitionPenalty <= 0 {
		p.add("repetition_penalty", "must be positive, got %g", *s.RepetitionPenalty)
	}
	if s.TimeoutMS != nil && *s.TimeoutMS <= 0 {
		p.add("timeout_ms", "must be positive, got %d", *s.TimeoutMS)
	}
}

// Validate checks the sampling fields alone, for APIs that build a Sampling
// from another wire format (gRPC).
func (s *Sampling) Validate() *Error {
	var p problems
	s.validate(&p)
	return p.err()
}
