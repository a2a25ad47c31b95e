package load

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
)

// Dist is a distribution of lengths: fixed (A), uniform over [A, B], or
// normal with mean A and standard deviation B; samples are at least 1.
type Dist struct {
	Kind string  `json:"kind"`
	A    float64 `json:"a"`
	B    float64 `json:"b,omitempty"`
}

// maxLen bounds every length parameter (words or tokens).
const maxLen = 10_000_000

// ParseDist reads "128", "uniform:64-256" or "normal:128,32".
func ParseDist(s string) (Dist, error) {
	kind, args, ok := strings.Cut(s, ":")
	if !ok {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || !(v >= 1 && v <= maxLen) {
			return Dist{}, fmt.Errorf("%q: want N ≥ 1, uniform:MIN-MAX or normal:MEAN,STDDEV", s)
		}
		return Dist{Kind: "fixed", A: v}, nil
	}
	sep := map[string]string{"uniform": "-", "normal": ","}[kind]
	if sep == "" {
		return Dist{}, fmt.Errorf("%q: unknown distribution %q (fixed, uniform, normal)", s, kind)
	}
	as, bs, ok := strings.Cut(args, sep)
	a, errA := strconv.ParseFloat(as, 64)
	b, errB := strconv.ParseFloat(bs, 64)
	if !ok || errA != nil || errB != nil || !(a >= 0 && a <= maxLen) || !(b >= 0 && b <= maxLen) || (kind == "uniform" && (a < 1 || b < a)) || (kind == "normal" && a < 1) {
		return Dist{}, fmt.Errorf("%q: want uniform:MIN-MAX with 1 ≤ MIN ≤ MAX, or normal:MEAN,STDDEV with MEAN ≥ 1", s)
	}
	return Dist{Kind: kind, A: a, B: b}, nil
}

// Sample draws one length.
func (d Dist) Sample(rng *rand.Rand) int {
	var v float64
	switch d.Kind {
	case "uniform":
		v = d.A + rng.Float64()*(d.B-d.A+1)
	case "normal":
		v = d.A + rng.NormFloat64()*d.B
	default:
		v = d.A
	}
	return max(1, int(math.Floor(v)))
}

func (d Dist) String() string {
	switch d.Kind {
	case "uniform":
		return fmt.Sprintf("uniform:%g-%g", d.A, d.B)
	case "normal":
		return fmt.Sprintf("normal:%g,%g", d.A, d.B)
	}
	return fmt.Sprintf("%g", d.A)
}

// Workload says what each request asks for.
type Workload struct {
	// Chat sends chat completions; otherwise text completions.
	Chat bool `json:"chat"`
	// Prompt is the synthetic prompt length in words (about one token
	// each), used without a dataset; Output is max_tokens.
	Prompt Dist `json:"prompt"`
	Output Dist `json:"output"`
	// Dataset, when set, replaces synthetic prompts: conversations whose
	// user messages are sent in turn.
	Dataset [][]Message `json:"-"`
	// Turns > 1 makes sessions (closed model): each virtual user sends
	// that many turns, each carrying the conversation so far.
	Turns int `json:"turns"`
	// PrefixGroups > 0 gives every request one of that many shared system
	// prompts of PrefixWords words (prefix-cache workloads).
	PrefixGroups int  `json:"prefix_groups,omitempty"`
	PrefixWords  int  `json:"prefix_words,omitempty"`
	Stream       bool `json:"stream"`
}

// ReadDataset reads JSONL: each line {"prompt": "…"} or
// {"messages": [{"role": "user", "content": "…"}, …]}.
func ReadDataset(r io.Reader) ([][]Message, error) {
	var out [][]Message
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var v struct {
			Prompt   *string   `json:"prompt"`
			Messages []Message `json:"messages"`
		}
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		switch {
		case v.Prompt != nil && v.Messages == nil:
			out = append(out, []Message{{Role: "user", Content: *v.Prompt}})
		case v.Prompt == nil && len(v.Messages) > 0:
			var users []Message
			for i, m := range v.Messages {
				if m.Role != "user" && m.Role != "system" && m.Role != "assistant" {
					return nil, fmt.Errorf("line %d: messages[%d].role: must be system, user or assistant, got %q", n, i, m.Role)
				}
				if m.Role != "assistant" { // replies come from the service under test
					users = append(users, m)
				}
			}
			out = append(out, users)
		default:
			return nil, fmt.Errorf("line %d: want exactly one of \"prompt\" or a non-empty \"messages\"", n)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("dataset: no prompts")
	}
	return out, nil
}

// session is one virtual user's conversation.
type session struct {
	rng     *rand.Rand
	history []Message
	script  []Message // the dataset conversation's messages still to send
	turn    int
}

// next builds the session's next request; reply records the answer.
func (w *Workload) next(s *session) *Request {
	if s.turn == 0 || s.turn >= max(w.Turns, 1) {
		s.turn, s.history, s.script = 0, s.history[:0], nil
		if w.PrefixGroups > 0 {
			g := s.rng.IntN(w.PrefixGroups)
			s.history = append(s.history, Message{Role: "system", Content: words(rand.New(rand.NewPCG(uint64(g), 7)), w.PrefixWords)})
		}
		if w.Dataset != nil {
			s.script = w.Dataset[s.rng.IntN(len(w.Dataset))]
		}
	}
	var user Message
	switch {
	case w.Dataset == nil:
		user = Message{Role: "user", Content: words(s.rng, w.Prompt.Sample(s.rng))}
	default:
		for len(s.script) > 0 && s.script[0].Role == "system" {
			s.history = append(s.history, s.script[0])
			s.script = s.script[1:]
		}
		if len(s.script) == 0 { // the conversation is over: start another
			s.turn = max(w.Turns, 1)
			return w.next(s)
		}
		user, s.script = s.script[0], s.script[1:]
	}
	s.history = append(s.history, user)
	s.turn++
	r := &Request{MaxTokens: w.Output.Sample(s.rng), Stream: w.Stream}
	if w.Chat {
		r.Chat = append([]Message(nil), s.history...)
	} else {
		var b strings.Builder
		for _, m := range s.history {
			b.WriteString(m.Content)
			b.WriteString("\n")
		}
		r.Prompt = b.String()
	}
	return r
}

// reply appends the service's answer to the conversation.
func (s *session) reply(text string) {
	s.history = append(s.history, Message{Role: "assistant", Content: text})
}

var vocabulary = strings.Fields(`the of and to in is was for on that with as by at from it an be this which or are
have not had but were they one all been has their more would when there can who will time if out so what up about
into than them only other new some could these two may first then do any like my now over such our man me even most
made after also did many before must through back years where much your way well down should because each just
those people how too little state good very make world still own see men work long get here between both life being
under never day same another know while last might us great old year off come since against go came right used take`)

// words is n words drawn from a fixed vocabulary.
func words(rng *rand.Rand, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(vocabulary[rng.IntN(len(vocabulary))])
	}
	return b.String()
}
