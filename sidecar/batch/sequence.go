package batch

import (
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/sidecar/admission"
	"github.com/open-autoglm/autoglm/sidecar/stream"
)

// Finish reasons, as the OpenAI API names them.
const (
	FinishStop   = stream.FinishStop
	FinishLength = stream.FinishLength
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
type Result = stream.Result

// Sequence is one request's generation. Its reader calls Next (or Wait)
// until it returns an error; io.EOF marks a normal end, after which Result
// is set. Other errors say why the sequence failed: admission.ErrQueueFull
// (shed), admission.ErrDeadline (expired in the queue),
// context.DeadlineExceeded (expired while generating), context.Canceled,
// ErrStopped, or an engine error. When the request's context ends, Next
// returns at once, taking the sequence out of the queue if it is still
// there.
type Sequence struct {
	stream.Stream
	item  admission.Item[*Sequence]
	req   Request
	sched *Scheduler

	// Owned by the scheduler goroutine.
	slot    int
	fed     int
	feeding int
	last    [1]int
	partial []byte           // bytes of an incomplete UTF-8 character
	hold    string           // text that may be the start of a stop string
	lps     []stream.Logprob // of tokens not yet delivered
	reserve int
	stats   Result // passed to Finish when the sequence ends
	// A group (SubmitGroup): the leader prefills the prompt but its last
	// token, then its members fork its KV cache and all go on alone.
	members []*Sequence // the leader's
	leader  *Sequence   // a member's
	forked  bool        // the leader's members have forked; a member has
}

// abort ends a sequence that never ran, and its group.
func (s *Sequence) abort(err error) {
	s.Finish(Result{}, err)
	for _, m := range s.members {
		m.Finish(Result{}, err)
	}
}

// waiting says whether a member waits for its leader's prefill.
func (s *Sequence) waiting() bool { return s.leader != nil && !s.forked }

// target is how much of the prompt the sequence feeds itself: a leader
// whose members have not forked stops before the last token.
func (s *Sequence) target() int {
	if len(s.members) > 0 && !s.forked {
		return len(s.req.Prompt) - 1
	}
	return len(s.req.Prompt)
}

// groupReserve is the KV budget a sequence and its members take.
func (s *Sequence) groupReserve() int {
	r := s.reserve
	for _, m := range s.members {
		r += m.reserve
	}
	return r
}

// leave takes a sequence whose caller has gone out of the queue, if it is
// still there.
func (s *Sequence) leave(err error) (error, bool) {
	err, queued := s.sched.q.Leave(&s.item, err)
	if queued && errors.Is(err, admission.ErrDeadline) {
		s.sched.m.Reject(admission.Reason(err))
	}
	return err, queued
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

// deliver hands text to the reader with the log probabilities of the
// tokens generated since the last delivery.
func (s *Sequence) deliver(text string) {
	s.DeliverLogprobs(text, s.lps)
	s.lps = nil
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
