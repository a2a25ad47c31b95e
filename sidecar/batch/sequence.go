package batch

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/sidecar/admission"
)

// Finish reasons, as the OpenAI API names them.
const (
	FinishStop   = "stop"
	FinishLength = "length"
)

// Request is one generation to schedule.
type Request struct {
	Prompt    []int
	MaxTokens int
	// Stop ends generation before the first occurrence of any of these
	// strings; the stop string is not part of the output.
	Stop     []string
	Sampling inference.Sampling
	Priority int
	Tenant   string
}

// Result describes a finished sequence.
type Result struct {
	Finish           string
	PromptTokens     int
	CompletionTokens int
	// Arrived, FirstToken and Done are the sequence's timestamps.
	Arrived, FirstToken, Done time.Time
}

// Sequence is one request's generation. Its reader calls Next until it
// returns an error; io.EOF marks a normal end, after which Result is set.
type Sequence struct {
	item  admission.Item[*Sequence]
	req   Request
	sched *Scheduler

	// Owned by the scheduler goroutine.
	slot    int
	fed     int
	feeding int
	last    [1]int
	partial []byte // bytes of an incomplete UTF-8 character
	hold    string // text that may be the start of a stop string
	reserve int
	stats   Result // copied to result when the sequence ends

	mu     sync.Mutex
	text   []byte
	done   bool
	err    error
	result Result
	notify chan struct{} // a value after new text or the end
	ended  chan struct{} // closed at the end
}

// Next returns the text generated since the previous call, waiting for
// some if there is none. At the end it returns io.EOF, or why the sequence
// failed: admission.ErrQueueFull (shed), admission.ErrDeadline (expired in
// the queue), context.DeadlineExceeded (expired while generating),
// context.Canceled, ErrStopped, or an engine error. When the request's
// context ends, Next returns at once, taking the sequence out of the queue
// if it is still there.
func (s *Sequence) Next() (string, error) {
	for {
		s.mu.Lock()
		if len(s.text) > 0 {
			t := string(s.text)
			s.text = s.text[:0]
			s.mu.Unlock()
			return t, nil
		}
		if s.done {
			err := s.err
			s.mu.Unlock()
			if err == nil {
				err = io.EOF
			}
			return "", err
		}
		s.mu.Unlock()
		select {
		case <-s.notify:
		case <-s.item.Ctx.Done():
			return "", s.abandon()
		}
	}
}

// Wait waits for the end and returns all the text not yet read, with the
// same errors as Next. Unlike a loop over Next it wakes once, not per token.
func (s *Sequence) Wait() (string, error) {
	select {
	case <-s.ended:
	case <-s.item.Ctx.Done():
		select {
		case <-s.ended: // ended as the context did: keep the result
		default:
			return "", s.abandon()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := string(s.text)
	s.text = s.text[:0]
	if s.err != nil {
		return t, s.err
	}
	return t, io.EOF
}

// abandon handles the end of the caller's context. A sequence still queued
// leaves the queue here; a running one is dropped by the scheduler before
// its next step.
func (s *Sequence) abandon() error {
	err := s.item.Ctx.Err()
	if s.sched.q.Remove(&s.item) {
		if errors.Is(err, context.DeadlineExceeded) {
			err = admission.ErrDeadline
			s.sched.m.Reject(rejectReason(err))
		}
		s.finish(Result{}, err)
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done && s.err == nil && len(s.text) == 0 {
		return io.EOF
	}
	return err
}

// Result is valid after Next returned io.EOF.
func (s *Sequence) Result() Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.result
}

func (s *Sequence) deliver(text string) {
	if text == "" {
		return
	}
	s.mu.Lock()
	s.text = append(s.text, text...)
	s.mu.Unlock()
	s.wake()
}

func (s *Sequence) finish(r Result, err error) {
	s.mu.Lock()
	if !s.done {
		s.done, s.err, s.result = true, err, r
		close(s.ended)
	}
	s.mu.Unlock()
	s.wake()
}

func (s *Sequence) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// appendPiece adds a token's bytes and returns the text that can be
// released: complete UTF-8 only, and nothing that may still turn out to be
// the start of a stop string. stopped reports that a stop string was found.
func (s *Sequence) appendPiece(piece []byte) (out string, stopped bool) {
	s.partial = append(s.partial, piece...)
	n := completePrefix(s.partial)
	text := s.hold + string(s.partial[:n])
	s.partial = s.partial[:copy(s.partial, s.partial[n:])]
	if len(s.req.Stop) == 0 {
		s.hold = ""
		return text, false
	}
	cut := -1
	for _, st := range s.req.Stop {
		if i := strings.Index(text, st); i >= 0 && (cut < 0 || i < cut) {
			cut = i
		}
	}
	if cut >= 0 {
		s.hold = ""
		return text[:cut], true
	}
	keep := 0
	for _, st := range s.req.Stop {
		for k := min(len(st)-1, len(text)); k > keep; k-- {
			if strings.HasSuffix(text, st[:k]) {
				keep = k
				break
			}
		}
	}
	s.hold = text[len(text)-keep:]
	return text[:len(text)-keep], false
}

// flush releases what was held back when the sequence ends for another
// reason than a stop string.
func (s *Sequence) flush() string {
	t := s.hold + string(s.partial)
	s.hold, s.partial = "", s.partial[:0]
	return t
}

// completePrefix is the length of b without a trailing incomplete UTF-8
// character (invalid bytes count as complete; JSON encoding replaces them).
func completePrefix(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return i
			}
			return len(b)
		}
	}
	return len(b)
}
