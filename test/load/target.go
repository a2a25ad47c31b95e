package load

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Message is one turn of a conversation.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Request is one generation to send.
type Request struct {
	// Chat is sent to /v1/chat/completions; without it Prompt goes to
	// /v1/completions.
	Chat      []Message
	Prompt    string
	MaxTokens int
	Stream    bool
}

// Error classes of a Result.
const (
	ClassRateLimited = "429"
	ClassServer      = "5xx"
	ClassClient      = "4xx"
	ClassTimeout     = "timeout"
	ClassTransport   = "transport"
)

// Result is what one request measured; times are absolute.
type Result struct {
	// Class is "" for a success, else one of the Class constants.
	Class  string
	Status int
	// Reason says why a request failed: the status and the error code or
	// message the service answered, or the transport error.
	Reason string
	// FirstToken is the first generated text (Done for non-streamed
	// requests); Gaps are the times between later chunks of text.
	FirstToken, Done time.Time
	Gaps             []time.Duration
	PromptTokens     int
	CompletionTokens int
	// Text is the generated text (kept for multi-turn sessions).
	Text string
}

// Target sends requests to a service under test.
type Target interface {
	Do(ctx context.Context, r *Request) Result
}

// HTTP is an OpenAI-compatible HTTP target.
type HTTP struct {
	// Base is the server's URL, e.g. http://127.0.0.1:8080.
	Base   string
	Model  string
	Header http.Header
	// plain serves http:// targets; client (net/http) the others.
	plain  *conns
	prefix string // the base URL's path
	client *http.Client
}

// NewHTTP returns a target for base (http:// or https://).
func NewHTTP(base, model string) *HTTP {
	h := &HTTP{Base: strings.TrimSuffix(base, "/"), Model: model}
	if u, err := url.Parse(h.Base); err == nil && u.Scheme == "http" && u.Host != "" {
		h.plain, h.prefix = newConns(u.Host), u.Path
		return h
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns, t.MaxIdleConnsPerHost = 0, 100_000
	t.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	h.client = &http.Client{Transport: t}
	return h
}

func (h *HTTP) post(ctx context.Context, path string, body []byte) (*http.Response, error) {
	if h.plain != nil {
		return h.plain.post(ctx, h.prefix+path, h.Header, body)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.Base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range h.Header {
		req.Header[k] = v
	}
	return h.client.Do(req)
}

type wireRequest struct {
	Model         string    `json:"model"`
	Messages      []Message `json:"messages,omitempty"`
	Prompt        *string   `json:"prompt,omitempty"`
	MaxTokens     int       `json:"max_tokens,omitempty"`
	Stream        bool      `json:"stream,omitempty"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options,omitempty"`
}

type wireChunk struct {
	Choices []struct {
		Text    string `json:"text"`
		Message struct {
			Content string `json:"content"`
		} `json:"message"`
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
	Error json.RawMessage `json:"error"`
}

// Do sends r and measures it; the context bounds it (its end is a timeout
// unless the run is stopping).
func (h *HTTP) Do(ctx context.Context, r *Request) Result {
	w := wireRequest{Model: h.Model, Messages: r.Chat, MaxTokens: r.MaxTokens, Stream: r.Stream}
	path := "/v1/chat/completions"
	if r.Chat == nil {
		path = "/v1/completions"
		w.Prompt = &r.Prompt
	}
	if r.Stream {
		w.StreamOptions = &struct {
			IncludeUsage bool `json:"include_usage"`
		}{true}
	}
	body, _ := json.Marshal(w)
	resp, err := h.post(ctx, path, body)
	if err != nil {
		res := failed(ctx, 0)
		res.Reason = err.Error()
		return res
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		return Result{Class: ClassRateLimited, Status: resp.StatusCode, Done: time.Now(), Reason: errorReason(resp)}
	case resp.StatusCode >= 500:
		return Result{Class: ClassServer, Status: resp.StatusCode, Done: time.Now(), Reason: errorReason(resp)}
	case resp.StatusCode >= 400:
		return Result{Class: ClassClient, Status: resp.StatusCode, Done: time.Now(), Reason: errorReason(resp)}
	}
	if !r.Stream {
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return failed(ctx, resp.StatusCode)
		}
		var c wireChunk
		if json.Unmarshal(b, &c) != nil || len(c.Choices) == 0 {
			return Result{Class: ClassServer, Status: resp.StatusCode, Done: time.Now()}
		}
		now := time.Now()
		res := Result{Status: resp.StatusCode, FirstToken: now, Done: now, Text: c.Choices[0].Message.Content + c.Choices[0].Text}
		if c.Usage != nil {
			res.PromptTokens, res.CompletionTokens = c.Usage.PromptTokens, c.Usage.CompletionTokens
		}
		return res
	}
	return readStream(ctx, resp)
}

func readStream(ctx context.Context, resp *http.Response) Result {
	res := Result{Status: resp.StatusCode}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), 4<<20)
	var text strings.Builder
	var last time.Time
	chunks := 0
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte("data:")) {
			continue
		}
		data := bytes.TrimSpace(line[5:])
		if bytes.Equal(data, []byte("[DONE]")) {
			res.Done, res.Text = time.Now(), text.String()
			// What follows is the body's end: reading it keeps the
			// connection for the next request.
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			if res.CompletionTokens == 0 {
				res.CompletionTokens = chunks
			}
			return res
		}
		now := time.Now()
		var c wireChunk
		if json.Unmarshal(data, &c) != nil || (len(c.Error) > 0 && string(c.Error) != "null") {
			res.Class, res.Done = ClassServer, now
			return res
		}
		if c.Usage != nil {
			res.PromptTokens, res.CompletionTokens = c.Usage.PromptTokens, c.Usage.CompletionTokens
		}
		got := false
		for _, ch := range c.Choices {
			if t := ch.Delta.Content + ch.Text; t != "" {
				text.WriteString(t)
				got = true
			}
		}
		if !got {
			continue
		}
		chunks++
		if res.FirstToken.IsZero() {
			res.FirstToken = now
		} else {
			res.Gaps = append(res.Gaps, now.Sub(last))
		}
		last = now
	}
	return failed(ctx, resp.StatusCode) // the stream ended before [DONE]
}

// failed classifies a transport failure: the context's end is a timeout.
// errorReason reads an error answer: "404 model_not_found: The model …"
// from an OpenAI-shaped body, else the status and the body's start.
func errorReason(resp *http.Response) string {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	io.Copy(io.Discard, resp.Body)
	var e struct {
		Error struct {
			Message string `json:"message"`
			Code    any    `json:"code"`
		} `json:"error"`
	}
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &e) == nil && e.Error.Message != "" {
		msg = e.Error.Message
		if c, ok := e.Error.Code.(string); ok && c != "" {
			msg = c + ": " + msg
		}
	}
	if len(msg) > 160 {
		msg = msg[:160] + "…"
	}
	return strings.TrimSpace(fmt.Sprintf("%d %s", resp.StatusCode, msg))
}

func failed(ctx context.Context, status int) Result {
	class := ClassTransport
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		class = ClassTimeout
	}
	return Result{Class: class, Status: status, Done: time.Now()}
}
