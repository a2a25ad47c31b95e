// Package stream is the consumer side of one generation: text handed over
// by a producer (the batch scheduler, or the remote dispatcher) and read by
// the request's handler at its own pace, then the end and the result.
package stream

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"
)

// Finish reasons, as the OpenAI API names them.
const (
	FinishStop   = "stop"
	FinishLength = "length"
)

// ErrStopped ends generations still queued or running when their producer
// stops.
var ErrStopped = errors.New("generation stopped: the server is shutting down")

// Result describes a finished generation.
type Result struct {
	Finish           string
	PromptTokens     int
	CompletionTokens int
	// Embedding is the prompt's embedding, for an embedding request.
	Embedding []float32
	// Arrived, Admitted (out of the queue, into the engine), FirstToken
	// and Done are the generation's timestamps.
	Arrived, Admitted, FirstToken, Done time.Time
}

// Leave is called when the reader's context ends before the stream does.
// It reports whether the generation was still queued, in which case it has
// been taken out of the queue and the stream ends with the error returned.
type Leave func(ctxErr error) (error, bool)

// Stream carries one generation's text from its producer to its reader.
// Its reader calls Next (or Wait) until it returns an error; io.EOF marks a
// normal end, after which Result is set. The zero value is not usable:
// call Init.
type Stream struct {
	ctx   context.Context
	leave Leave

	mu     sync.Mutex
	text   []byte
	lps    []Logprob // of the tokens whose text is in text
	done   bool
	err    error
	result Result
	notify chan struct{} // a value after new text or the end
	ended  chan struct{} // closed at the end
}

// Init prepares s for a reader under ctx; leave may be nil.
func (s *Stream) Init(ctx context.Context, leave Leave) {
	s.ctx, s.leave = ctx, leave
	s.notify, s.ended = make(chan struct{}, 1), make(chan struct{})
}

// Logprob is a generated token's log probability and its alternatives'
// (when the request asked for them).
type Logprob struct {
	Token   []byte // the token's bytes, which may split a UTF-8 character
	Logprob float32
	Top     []TopLogprob
}

// TopLogprob is one of the most likely tokens at a position.
type TopLogprob struct {
	Token   []byte
	Logprob float32
}

// Next returns the text produced since the previous call, waiting for some
// if there is none. At the end it returns io.EOF or why the generation
// failed. When the reader's context ends, Next returns at once.
func (s *Stream) Next() (string, error) {
	t, _, err := s.NextLogprobs()
	return t, err
}

// NextLogprobs is Next with the log probabilities of the tokens whose
// text it returns.
func (s *Stream) NextLogprobs() (string, []Logprob, error) {
	for {
		s.mu.Lock()
		if len(s.text) > 0 || len(s.lps) > 0 {
			t, lps := string(s.text), s.lps
			s.text, s.lps = s.text[:0], nil
			s.mu.Unlock()
			return t, lps, nil
		}
		if s.done {
			err := s.err
			s.mu.Unlock()
			if err == nil {
				err = io.EOF
			}
			return "", nil, err
		}
		s.mu.Unlock()
		select {
		case <-s.notify:
		case <-s.ctx.Done():
			return "", nil, s.abandon()
		}
	}
}

// Wait waits for the end and returns all the text not yet read, with the
// same errors as Next. Unlike a loop over Next it wakes once, not per token.
func (s *Stream) Wait() (string, error) {
	t, _, err := s.WaitLogprobs()
	return t, err
}

// WaitLogprobs is Wait with the log probabilities of the tokens whose text
// it returns.
func (s *Stream) WaitLogprobs() (string, []Logprob, error) {
	select {
	case <-s.ended:
	case <-s.ctx.Done():
		select {
		case <-s.ended: // ended as the context did: keep the result
		default:
			return "", nil, s.abandon()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, lps := string(s.text), s.lps
	s.text, s.lps = s.text[:0], nil
	if s.err != nil {
		return t, lps, s.err
	}
	return t, lps, io.EOF
}

// Ended is closed when the generation has ended.
func (s *Stream) Ended() <-chan struct{} { return s.ended }

// abandon handles the end of the reader's context. A generation still
// queued leaves the queue here; a running one is dropped by its producer.
func (s *Stream) abandon() error {
	err := s.ctx.Err()
	if s.leave != nil {
		if e, queued := s.leave(err); queued {
			s.Finish(Result{}, e)
			return e
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done && s.err == nil && len(s.text) == 0 {
		return io.EOF
	}
	return err
}

// Result is valid after Next returned io.EOF.
func (s *Stream) Result() Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.result
}

// Deliver hands text to the reader.
func (s *Stream) Deliver(text string) { s.DeliverLogprobs(text, nil) }

// DeliverLogprobs hands text to the reader with the log probabilities of
// the tokens it came from.
func (s *Stream) DeliverLogprobs(text string, lps []Logprob) {
	if text == "" && len(lps) == 0 {
		return
	}
	s.mu.Lock()
	s.text = append(s.text, text...)
	s.lps = append(s.lps, lps...)
	s.mu.Unlock()
	s.wake()
}

// Finish ends the stream with a result or an error; later calls do nothing.
func (s *Stream) Finish(r Result, err error) {
	s.mu.Lock()
	if !s.done {
		s.done, s.err, s.result = true, err, r
		close(s.ended)
	}
	s.mu.Unlock()
	s.wake()
}

func (s *Stream) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}
