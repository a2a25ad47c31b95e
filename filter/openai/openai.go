// Package openai reads what the filter needs from OpenAI-compatible
// requests and responses: the model and sampling fields, a prompt-size
// estimate, a canonical cache key, and the usage a response reports.
package openai

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Request is what the filter reads from a request body.
type Request struct {
	Model  string
	Stream bool
	// MaxTokens is max_tokens or max_completion_tokens (0: absent).
	MaxTokens int
	// Temperature is nil when absent (OpenAI's default is 1).
	Temperature *float64
	// PromptTokens estimates the prompt: a token per 4 bytes of text, plus
	// 4 per chat message.
	PromptTokens int
	// fields is the body, for Key.
	fields map[string]any
	key    string
}

// Key identifies the request's output: a hash of its canonical JSON
// without the fields that do not change the output (user, metadata,
// store). It is computed on demand (only the cache needs it).
func (r *Request) Key() string {
	if r.key == "" && r.fields != nil {
		for _, k := range []string{"user", "metadata", "store"} {
			delete(r.fields, k)
		}
		canon, _ := json.Marshal(r.fields) // map keys sorted: canonical; a decoded value always encodes
		sum := sha256.Sum256(canon)
		r.key = hex.EncodeToString(sum[:16])
	}
	return r.key
}

// Deterministic reports temperature 0, the only sampling a cache may
// answer for without being asked.
func (r Request) Deterministic() bool { return r.Temperature != nil && *r.Temperature == 0 }

// ErrNotJSON and the other errors say why a body is not a request.
var (
	ErrNotJSON  = errors.New("the request body is not a JSON object")
	ErrNoModel  = errors.New(`"model" is required and must be a non-empty string`)
	ErrBadField = errors.New("invalid field")
)

// Parse reads a chat or completions request.
func Parse(body []byte) (Request, error) {
	var r Request
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil || m == nil {
		return r, ErrNotJSON
	}
	if d.More() {
		return r, ErrNotJSON
	}
	model, ok := m["model"].(string)
	if !ok || model == "" {
		return r, ErrNoModel
	}
	r.Model = model
	if v, present := m["stream"]; present {
		b, ok := v.(bool)
		if !ok {
			return r, fmt.Errorf(`%w: "stream" must be true or false`, ErrBadField)
		}
		r.Stream = b
	}
	for _, k := range []string{"max_tokens", "max_completion_tokens"} {
		if v, present := m[k]; present && v != nil {
			n, err := intOf(v)
			if err != nil || n < 0 {
				return r, fmt.Errorf(`%w: %q must be a non-negative integer`, ErrBadField, k)
			}
			r.MaxTokens = n
		}
	}
	if v, present := m["temperature"]; present && v != nil {
		n, ok := v.(json.Number)
		f, err := n.Float64()
		if !ok || err != nil {
			return r, fmt.Errorf(`%w: "temperature" must be a number`, ErrBadField)
		}
		r.Temperature = &f
	}
	r.PromptTokens = estimate(m["messages"]) + estimate(m["prompt"])
	r.fields = m
	return r, nil
}

func intOf(v any) (int, error) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, ErrBadField
	}
	i, err := n.Int64()
	if err != nil || i > 1<<31 {
		return 0, ErrBadField
	}
	return int(i), nil
}

// estimate counts text in a prompt or messages value.
func estimate(v any) int {
	switch x := v.(type) {
	case string:
		return (utf8.RuneCountInString(x) + 3) / 4
	case []any:
		n := 0
		for _, e := range x {
			if msg, ok := e.(map[string]any); ok && msg["role"] != nil {
				n += 4 + estimate(msg["content"])
				continue
			}
			n += estimate(e)
		}
		return n
	case map[string]any: // content part {"type":"text","text":...}
		return estimate(x["text"])
	}
	return 0
}

// Usage is a response's token usage.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// UsageOf reads the usage of a JSON response body.
func UsageOf(body []byte) (Usage, bool) {
	var r struct {
		Usage *Usage `json:"usage"`
	}
	if json.Unmarshal(body, &r) != nil || r.Usage == nil {
		return Usage{}, false
	}
	return r.Usage.total(), true
}

// StreamUsage reads the usage of a server-sent-events response: the last
// data chunk that carries one (stream_options.include_usage).
func StreamUsage(sse []byte) (Usage, bool) {
	for len(sse) > 0 {
		i := bytes.LastIndexByte(sse[:len(sse)-1], '\n')
		line := bytes.TrimSpace(sse[i+1:])
		sse = sse[:max(i, 0)]
		if data, ok := bytes.CutPrefix(line, []byte("data:")); ok && bytes.Contains(data, []byte(`"usage"`)) {
			if u, ok := UsageOf(bytes.TrimSpace(data)); ok {
				return u, true
			}
		}
		if i < 0 {
			break
		}
	}
	return Usage{}, false
}

func (u *Usage) total() Usage {
	if u.TotalTokens == 0 {
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
	}
	return *u
}
