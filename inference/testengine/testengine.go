// Package testengine is a deterministic inference.Engine for tests and
// benchmarks: a byte-level tokenizer and a generator whose next token is a
// hash of everything the sequence has seen, with a configurable step cost
// that stands in for a model's forward pass. It is not a language model.
package testengine

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/chat"
	"github.com/open-autoglm/autoglm/inference/grammar"
	"github.com/open-autoglm/autoglm/inference/sample"
)

// EOS is the end-of-sequence token; tokens 0..255 are bytes.
const EOS = 256

// alphabet is what generated tokens are drawn from, so completions are
// readable ASCII.
const alphabet = "abcdefghijklmnopqrstuvwxyz     "

// Config sets the engine's shape and cost. The cost of one step is
// StepCost + SeqCost*len(batch) + TokenCost*(tokens fed), spent sleeping,
// the way a GPU step blocks the scheduler without using its CPU.
type Config struct {
	Model         string
	Slots         int
	ContextLength int
	StepCost      time.Duration
	SeqCost       time.Duration
	TokenCost     time.Duration
	// EOSAfter ends every sequence with EOS after that many generated
	// tokens; 0 never emits EOS.
	EOSAfter int
	// Gate, when set, holds every step until a value arrives on it (or it
	// is closed): tests use it to keep the engine busy inside a step.
	Gate <-chan struct{}
}

type slot struct {
	params  inference.Sampling
	started bool
	hash    uint64
	length  int
	gen     int
	seed    uint64
	random  bool // temperature > 0: the seed perturbs every token
}

// Engine implements inference.Engine.
type Engine struct {
	cfg   Config
	slots []slot
	out   []inference.Output
	// logits and raw are scratch for constrained or logprob steps.
	logits, raw []float32
	vocabOnce   sync.Once
	vocab       *grammar.Vocab
	// Steps counts the steps run, for tests.
	Steps int
}

// New returns an engine; zero fields of cfg get small defaults.
func New(cfg Config) *Engine {
	if cfg.Model == "" {
		cfg.Model = "autoglm-test"
	}
	if cfg.Slots <= 0 {
		cfg.Slots = 64
	}
	if cfg.ContextLength <= 0 {
		cfg.ContextLength = 4096
	}
	return &Engine{cfg: cfg, slots: make([]slot, cfg.Slots)}
}

func (e *Engine) Info() inference.Info {
	return inference.Info{
		Model:         e.cfg.Model,
		Description:   "test engine (deterministic pseudo-text, not a language model)",
		ContextLength: e.cfg.ContextLength,
		Vocab:         EOS + 1,
		Slots:         e.cfg.Slots,
		KVTokens:      e.cfg.Slots * e.cfg.ContextLength,
	}
}

func (e *Engine) Tokenizer() inference.Tokenizer { return tokenizer{} }

func (e *Engine) Start(i int, s inference.Sampling) error {
	if i < 0 || i >= len(e.slots) {
		return fmt.Errorf("start slot %d: %w", i, inference.ErrSlot)
	}
	e.slots[i] = slot{started: true, hash: 14695981039346656037, seed: uint64(s.Seed), random: s.Temperature > 0, params: s}
	return nil
}

// Fork makes slot dst's sequence a copy of src's.
func (e *Engine) Fork(dst, src int) error {
	if dst < 0 || dst >= len(e.slots) || src < 0 || src >= len(e.slots) || !e.slots[dst].started || !e.slots[src].started {
		return fmt.Errorf("fork slot %d from %d: %w", dst, src, inference.ErrSlot)
	}
	d, s := &e.slots[dst], e.slots[src]
	d.hash, d.length, d.gen = s.hash, s.length, s.gen
	return nil
}

func (e *Engine) Release(i int) {
	if i >= 0 && i < len(e.slots) {
		e.slots[i] = slot{}
	}
}

func (e *Engine) Step(ctx context.Context, batch []inference.Input) ([]inference.Output, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	fed := 0
	for _, in := range batch {
		if in.Slot < 0 || in.Slot >= len(e.slots) || !e.slots[in.Slot].started {
			return nil, fmt.Errorf("step slot %d: %w", in.Slot, inference.ErrSlot)
		}
		if len(in.Tokens) == 0 {
			return nil, fmt.Errorf("step slot %d: no tokens", in.Slot)
		}
		if s := &e.slots[in.Slot]; s.length+len(in.Tokens) > e.cfg.ContextLength {
			return nil, fmt.Errorf("step slot %d: %d tokens exceed context length %d", in.Slot, s.length+len(in.Tokens), e.cfg.ContextLength)
		}
		fed += len(in.Tokens)
	}
	if e.cfg.Gate != nil {
		<-e.cfg.Gate
	}
	if cost := e.cfg.StepCost + time.Duration(len(batch))*e.cfg.SeqCost + time.Duration(fed)*e.cfg.TokenCost; cost > 0 {
		time.Sleep(cost)
	}
	e.Steps++
	out := e.out[:0]
	for _, in := range batch {
		s := &e.slots[in.Slot]
		for _, t := range in.Tokens {
			s.hash = (s.hash ^ uint64(t)) * 1099511628211
		}
		s.length += len(in.Tokens)
		if !in.Sample {
			continue
		}
		s.gen++
		if e.cfg.EOSAfter > 0 && s.gen > e.cfg.EOSAfter {
			out = append(out, inference.Output{Slot: in.Slot, Token: EOS, EOS: true})
			continue
		}
		h := s.hash
		if s.random {
			h ^= (s.seed + 0x9e3779b97f4a7c15) * 0xbf58476d1ce4e5b9
		}
		h ^= h >> 29
		out = append(out, e.pick(s, in.Slot, h))
	}
	e.out = out
	return out, nil
}

// pick is the token for hash h. The engine's distribution is the
// alphabet's letter frequencies, and the token is the alphabet's letter at
// h. Under a constraint every token gets a logit from h, the constraint
// masks them and the highest is taken.
func (e *Engine) pick(s *slot, i int, h uint64) inference.Output {
	p := &s.params
	if p.Pooling != inference.PoolNone {
		// An embedding of everything fed: 8 numbers from the hash, normalised.
		v, norm := make([]float32, 8), 0.0
		for j := range v {
			x := (s.hash + uint64(j)*0x9e3779b97f4a7c15) * 0xbf58476d1ce4e5b9
			v[j] = float32(int64(x>>11)) / (1 << 52)
			norm += float64(v[j]) * float64(v[j])
		}
		for j := range v {
			v[j] /= float32(math.Sqrt(norm))
		}
		return inference.Output{Slot: i, Token: EOS, EOS: true, Embedding: v}
	}
	if p.Constraint == nil && !p.Logprobs {
		return inference.Output{Slot: i, Token: int(alphabet[h%uint64(len(alphabet))])}
	}
	logits := e.logits[:0]
	for t := range EOS + 1 {
		v := float32(math.Inf(-1))
		if n := strings.Count(alphabet, string(rune(t))); t < 128 && n > 0 {
			v = float32(math.Log(float64(n)))
		}
		logits = append(logits, v)
	}
	tok := int(alphabet[h%uint64(len(alphabet))])
	var raw []float32
	if p.Constraint != nil {
		raw = append(e.raw[:0], logits...)
		e.raw = raw
		for t := range logits {
			x := (h ^ uint64(t)*0x9e3779b97f4a7c15) * 0xbf58476d1ce4e5b9
			logits[t] = float32(x>>40) / float32(1<<24)
		}
		p.Constraint.Mask(logits)
		tok = 0
		for t, v := range logits {
			if v > logits[tok] {
				tok = t
			}
		}
		p.Constraint.Accept(tok, tokenizer{}.Piece(tok))
		logits = raw
	}
	e.logits = logits
	o := inference.Output{Slot: i, Token: tok, EOS: tok == EOS}
	if p.Logprobs {
		o.Logprob, o.Top = sample.Logprobs(logits, tok, p.TopLogprobs, nil)
	}
	return o
}

// Vocab is the vocabulary as constrained decoding sees it: bytes, and EOS
// that ends a reply.
func (e *Engine) Vocab() *grammar.Vocab {
	e.vocabOnce.Do(func() {
		e.vocab = grammar.NewVocab(EOS+1, tokenizer{}.Piece, func(t int) bool { return t == EOS }, func(int) bool { return false })
	})
	return e.vocab
}

type tokenizer struct{}

func (tokenizer) Encode(text string) []int {
	ids := make([]int, len(text))
	for i := 0; i < len(text); i++ {
		ids[i] = int(text[i])
	}
	return ids
}

// pieces holds every byte token's one-byte piece, so Piece does not allocate.
var pieces = func() (p [256][]byte) {
	for i := range p {
		p[i] = []byte{byte(i)}
	}
	return p
}()

func (tokenizer) Piece(token int) []byte {
	if token < 0 || token > 255 {
		return nil
	}
	return pieces[token]
}

// ChatPrompt renders ChatML.
func (tokenizer) ChatPrompt(msgs []inference.Message, tools []inference.Tool) (string, error) {
	return chat.Render(chat.ChatML, msgs, tools)
}

// ToolSyntax is ChatML's.
func (tokenizer) ToolSyntax() inference.ToolSyntax { return chat.Syntax(chat.ChatML) }
