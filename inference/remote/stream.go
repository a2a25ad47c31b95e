package remote

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"io"
)

// Stream reads one streamed generation (server-sent events of chunks, as
// the OpenAI API streams them). It is used by one goroutine.
type Stream struct {
	ctx    context.Context
	body   io.ReadCloser
	sc     *bufio.Scanner
	finish string
	usage  *Usage
	chunks int
	done   bool
	span   trace.Span // the client span of the call, ended by Close
	// raw: Next returns each event's JSON as it came; whole: the answer
	// is one JSON body, not events.
	raw, whole bool
}

// Usage is the upstream's token count for the generation.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

const maxEventBytes = 4 << 20

func newStream(ctx context.Context, body io.ReadCloser) *Stream {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 0, 4096), maxEventBytes)
	return &Stream{ctx: ctx, body: body, sc: sc}
}

type chunk struct {
	Choices []struct {
		Text  string `json:"text"`
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *Usage          `json:"usage"`
	Error json.RawMessage `json:"error"`
}

var (
	dataPrefix = []byte("data:")
	doneMarker = []byte("[DONE]")
)

// Next returns the next piece of generated text. At the end it returns
// io.EOF; an error event from the upstream is an *Error; a stream cut
// before its end wraps ErrUnavailable; the end of the context is its error.
func (s *Stream) Next() (string, error) {
	if s.done {
		return "", io.EOF
	}
	if s.whole {
		s.done = true
		b, err := io.ReadAll(io.LimitReader(s.body, maxEventBytes))
		if err != nil {
			if s.ctx.Err() != nil {
				return "", s.ctx.Err()
			}
			return "", fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		var c chunk
		if err := json.Unmarshal(b, &c); err != nil {
			return "", fmt.Errorf("%w: malformed answer: %v", ErrUnavailable, err)
		}
		s.usage = c.Usage
		for _, ch := range c.Choices {
			if ch.FinishReason != nil && *ch.FinishReason != "" {
				s.finish = *ch.FinishReason
			}
		}
		s.chunks++
		return string(b), nil
	}
	for s.sc.Scan() {
		line := s.sc.Bytes()
		if !bytes.HasPrefix(line, dataPrefix) {
			continue // blank separators, comments, event: and id: fields
		}
		data := bytes.TrimSpace(line[len(dataPrefix):])
		if bytes.Equal(data, doneMarker) {
			s.done = true
			return "", io.EOF
		}
		var c chunk
		if err := json.Unmarshal(data, &c); err != nil {
			return "", fmt.Errorf("%w: malformed stream event: %v", ErrUnavailable, err)
		}
		if len(c.Error) > 0 && string(c.Error) != "null" {
			e := decodeError(data)
			if e == nil {
				e = &Error{Message: string(c.Error)}
			}
			e.Status = 500 // an error after the 200: the generation failed upstream
			return "", e
		}
		if c.Usage != nil {
			s.usage = c.Usage
		}
		if s.raw {
			for _, ch := range c.Choices {
				if ch.FinishReason != nil && *ch.FinishReason != "" {
					s.finish = *ch.FinishReason
				}
			}
			s.chunks++
			// One line per event (SSE data lines hold no newline): a
			// reader that takes several at once can tell them apart.
			return string(data) + "\n", nil
		}
		text := ""
		for _, ch := range c.Choices {
			text += ch.Text + ch.Delta.Content
			if ch.FinishReason != nil && *ch.FinishReason != "" {
				s.finish = *ch.FinishReason
			}
		}
		if text != "" {
			s.chunks++
			return text, nil
		}
	}
	if s.ctx.Err() != nil {
		return "", s.ctx.Err()
	}
	if err := s.sc.Err(); err != nil {
		return "", fmt.Errorf("%w: reading the stream: %v", ErrUnavailable, err)
	}
	if s.finish != "" { // servers that end without [DONE]
		s.done = true
		return "", io.EOF
	}
	return "", fmt.Errorf("%w: the stream ended before the generation did", ErrUnavailable)
}

// Finish is the finish reason the upstream gave ("stop", "length", ...).
func (s *Stream) Finish() string { return s.finish }

// Usage is the upstream's token count; without one (servers that ignore
// stream_options), the completion tokens are counted as the text chunks
// received, one token each, and the prompt tokens are unknown (0).
func (s *Stream) Usage() Usage {
	if s.usage != nil {
		return *s.usage
	}
	return Usage{CompletionTokens: s.chunks}
}

// Close ends the request; closing before the end cancels it upstream.
func (s *Stream) Close() error {
	if s.span != nil && s.span.IsRecording() {
		if s.usage != nil {
			s.span.SetAttributes(attribute.Int("gen_ai.usage.input_tokens", s.usage.PromptTokens),
				attribute.Int("gen_ai.usage.output_tokens", s.usage.CompletionTokens))
		}
		if s.finish != "" {
			s.span.SetAttributes(attribute.StringSlice("gen_ai.response.finish_reasons", []string{s.finish}))
		}
		s.span.End()
	}
	return s.body.Close()
}
