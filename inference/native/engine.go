// Package native is the embedded CPU engine: a GGUF Llama-family model
// (inference/llama) with its tokenizer (inference/tokenizer) and sampler
// (inference/sample) behind the inference.Engine contract. Every step runs
// one batched forward pass per position over all the sequences fed.
package native

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/gguf"
	"github.com/open-autoglm/autoglm/inference/grammar"
	"github.com/open-autoglm/autoglm/inference/llama"
	"github.com/open-autoglm/autoglm/inference/sample"
	"github.com/open-autoglm/autoglm/inference/tokenizer"
)

// kvBlock is the KV cache's block size in positions.
const kvBlock = 16

// Config shapes the engine.
type Config struct {
	// Model is the served name (default: general.name, else the architecture).
	Model string
	// Slots is how many sequences hold KV state at once.
	Slots int
	// ContextLength caps the model's context (0: the model's).
	ContextLength int
	// KVTokens is the KV-cache budget shared by all slots, in positions
	// (0: every slot's whole context). Blocks are taken as sequences grow.
	KVTokens int
}

// Engine implements inference.Engine.
type Engine struct {
	m      *llama.Model
	tok    tokenizer.Tokenizer
	info   inference.Info
	states []*llama.State
	pool   *llama.KVPool
	samp   []*sample.Sampler
	params []inference.Sampling
	raw    []float32 // the logits before a constraint, for log probabilities
	out    []inference.Output
	f      *gguf.File

	vocabOnce sync.Once
	vocab     *grammar.Vocab
}

// Open loads the GGUF model at path.
func Open(path string, c Config) (*Engine, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	e, err := New(f, c)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	e.f = f
	return e, nil
}

// New builds an engine over a parsed file, which must outlive it.
func New(f *gguf.File, c Config) (*Engine, error) {
	m, err := llama.Load(f)
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		return nil, err
	}
	if c.Slots <= 0 {
		c.Slots = 8
	}
	ctx := m.ContextLength
	if c.ContextLength > 0 {
		ctx = min(ctx, c.ContextLength)
	}
	name := c.Model
	if name == "" {
		if v, ok := f.Get("general.name"); ok {
			name, _ = v.(string)
		}
		if name == "" {
			name = m.Arch
		}
	}
	weights := weightTypes(f)
	kv := c.KVTokens
	if kv <= 0 {
		kv = c.Slots * ctx
	}
	e := &Engine{m: m, tok: tok, states: make([]*llama.State, c.Slots), samp: make([]*sample.Sampler, c.Slots),
		params: make([]inference.Sampling, c.Slots), pool: m.NewPool(kv, kvBlock)}
	e.info = inference.Info{
		Model: name, Description: fmt.Sprintf("native %s, %d layers, %s weights; chat format: %s", m.Arch, m.Layers, weights, tok.ChatFormat()),
		ContextLength: ctx, Vocab: m.Vocab, Slots: c.Slots,
		// The scheduler reserves prompt + max tokens per sequence; blocks
		// round each sequence up, so one block per slot is kept aside.
		KVTokens: max(e.pool.Tokens()-c.Slots*kvBlock, kvBlock),
	}
	return e, nil
}

// Close releases the model file.
func (e *Engine) Close() error {
	if e.f != nil {
		return e.f.Close()
	}
	return nil
}

func (e *Engine) Info() inference.Info { return e.info }

func (e *Engine) Tokenizer() inference.Tokenizer { return e.tok }

// Start begins a sequence in slot; KV blocks are taken from the shared
// pool as it grows.
func (e *Engine) Start(slot int, s inference.Sampling) error {
	if slot < 0 || slot >= len(e.states) {
		return inference.ErrSlot
	}
	if e.states[slot] == nil {
		e.states[slot] = e.m.NewStateIn(e.pool, e.info.ContextLength)
	}
	st := e.states[slot]
	st.Reset()
	st.Pool, st.PoolN = int(s.Pooling), 0
	clear(st.Pooled[:cap(st.Pooled)])
	e.samp[slot] = sample.New(s)
	e.params[slot] = s
	return nil
}

// Fork makes dst's sequence a copy of src's, sharing its KV blocks.
func (e *Engine) Fork(dst, src int) error {
	if dst < 0 || dst >= len(e.states) || src < 0 || src >= len(e.states) || e.samp[dst] == nil || e.samp[src] == nil {
		return inference.ErrSlot
	}
	if err := e.states[dst].Fork(e.states[src]); err != nil {
		return err
	}
	// What the sampler has seen (for the repetition penalty) too.
	for tok := range e.samp[src].Seen() {
		e.samp[dst].Observe(tok)
	}
	return nil
}

// Release ends a slot's sequence and frees its KV blocks.
func (e *Engine) Release(slot int) {
	if slot >= 0 && slot < len(e.samp) {
		e.samp[slot] = nil
		e.params[slot] = inference.Sampling{}
		if e.states[slot] != nil {
			e.states[slot].Reset() // its blocks go back to the pool
		}
	}
}

// Step feeds every input in one batched forward pass and samples where
// asked.
func (e *Engine) Step(ctx context.Context, batch []inference.Input) ([]inference.Output, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	feeds := make([]llama.Feed, 0, len(batch))
	for _, in := range batch {
		if in.Slot < 0 || in.Slot >= len(e.states) || e.samp[in.Slot] == nil {
			return nil, inference.ErrSlot
		}
		if len(in.Tokens) > 0 {
			feeds = append(feeds, llama.Feed{S: e.states[in.Slot], Tokens: in.Tokens})
		}
		for _, tok := range in.Tokens {
			e.samp[in.Slot].Observe(tok)
		}
	}
	// One pass for every position of every input: prompt chunks are
	// prefilled at once, decoding sequences batched with them.
	if err := e.m.Run(feeds); err != nil {
		return nil, err
	}
	// Outputs in input order, as the contract says; the slice is reused
	// by the next step.
	e.out = e.out[:0]
	for _, in := range batch {
		if in.Sample && len(in.Tokens) > 0 {
			e.out = append(e.out, e.sample(in.Slot))
		}
	}
	return e.out, nil
}

// sample picks a slot's next token: log probabilities from the raw logits
// when asked, then the constraint's mask, then the sampler.
func (e *Engine) sample(slot int) inference.Output {
	logits, p := e.states[slot].Logits, &e.params[slot]
	if p.Pooling != inference.PoolNone {
		return inference.Output{Slot: slot, Token: e.tok.EOSToken(), EOS: true, Embedding: e.embedding(e.states[slot])}
	}
	if p.Logprobs {
		e.raw = append(e.raw[:0], logits...)
	}
	if p.Constraint != nil {
		p.Constraint.Mask(logits)
	}
	tok := e.samp[slot].Sample(logits)
	if p.Constraint != nil {
		p.Constraint.Accept(tok, e.tok.Piece(tok))
	}
	o := inference.Output{Slot: slot, Token: tok, EOS: e.Ends(tok)}
	if p.Logprobs {
		o.Logprob, o.Top = sample.Logprobs(e.raw, tok, p.TopLogprobs, nil)
	}
	return o
}

// embedding is a state's pooled hidden states, averaged and L2-normalised.
func (e *Engine) embedding(st *llama.State) []float32 {
	out := make([]float32, len(st.Pooled))
	var norm float64
	for i, v := range st.Pooled {
		out[i] = v / float32(max(st.PoolN, 1))
		norm += float64(out[i]) * float64(out[i])
	}
	if norm > 0 {
		inv := float32(1 / math.Sqrt(norm))
		for i := range out {
			out[i] *= inv
		}
	}
	return out
}

// Ends says whether the engine ends a sequence on tok: EOS, any
// end-of-generation token, or a control token.
func (e *Engine) Ends(tok int) bool {
	return tok == e.tok.EOSToken() || e.tok.IsControl(tok) || e.tok.EndsGeneration(tok)
}

// Vocab is the vocabulary as constrained decoding sees it: the tokens that
// end a reply, and no control token inside one.
func (e *Engine) Vocab() *grammar.Vocab {
	e.vocabOnce.Do(func() {
		eog := func(t int) bool { return t == e.tok.EOSToken() || e.tok.EndsGeneration(t) }
		e.vocab = grammar.NewVocab(e.info.Vocab, e.tok.Piece, eog, e.tok.IsControl)
	})
	return e.vocab
}

// weightTypes names the types of f's matrices, the largest share of bytes
// first ("Q4_K+Q6_K" for a Q4_K_M file).
func weightTypes(f *gguf.File) string {
	bytes := map[gguf.TensorType]uint64{}
	for _, t := range f.Tensors {
		if len(t.Dims) == 2 {
			bytes[t.Type] += t.Size
		}
	}
	types := slices.Collect(maps.Keys(bytes))
	slices.SortFunc(types, func(a, b gguf.TensorType) int { return cmp.Or(cmp.Compare(bytes[b], bytes[a]), cmp.Compare(a, b)) })
	names := make([]string, len(types))
	for i, t := range types {
		names[i] = t.String()
	}
	if len(names) == 0 {
		return "?"
	}
	return strings.Join(names, "+")
}
