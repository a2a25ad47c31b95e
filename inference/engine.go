// Package inference holds the contract between the sidecar's scheduler and
// the engines that execute a model: the last stage of the request path.
//
// The contract is a batched step engine in the style of iteration-level
// (continuous) batching. The scheduler owns the KV slots and decides, before
// every step, which sequences run and how many of their prompt tokens are fed;
// the engine runs one forward step for the whole batch and samples one token
// for every input that asks for it. inference knows nothing of HTTP.
package inference

import (
	"context"
	"errors"
)

// ErrSlot reports a slot index outside 0..Info().Slots-1 or a slot used
// before Start.
var ErrSlot = errors.New("inference: invalid kv slot")

// Info describes the model an engine serves.
type Info struct {
	// Model is the name clients use in the "model" field.
	Model string
	// Description is shown to operators in logs (e.g. "test engine").
	Description string
	// ContextLength is the most tokens (prompt + generated) one sequence may hold.
	ContextLength int
	// Vocab is the number of token ids.
	Vocab int
	// Slots is how many sequences can hold KV state at once.
	Slots int
	// KVTokens is the KV-cache budget in tokens shared by all slots.
	KVTokens int
}

// Sampling holds the per-sequence sampling parameters. Zero values mean the
// engine's defaults (Temperature 0 is greedy decoding).
type Sampling struct {
	Temperature       float64
	TopP              float64
	TopK              int
	MinP              float64
	RepetitionPenalty float64
	// Seed makes sampling reproducible when HasSeed is set.
	Seed    int64
	HasSeed bool
	// Constraint, when set, masks the logits before every sample
	// (structured output, tool calls) and is told each sampled token.
	Constraint Constraint
	// Logprobs asks for every sampled token's log probability and those
	// of the TopLogprobs (0..MaxTopLogprobs) most likely tokens.
	Logprobs    bool
	TopLogprobs int
	// Pooling asks for the prompt's embedding instead of a token:
	// PoolMean (the mean of every position's final hidden state) or
	// PoolLast (the last position's), L2-normalised, in the Output of the
	// input that completes the prompt.
	Pooling Pooling
}

// Pooling is how an embedding is made of a prompt's hidden states.
type Pooling int

const (
	PoolNone Pooling = iota
	PoolMean
	PoolLast
)

// MaxTopLogprobs is the most alternatives reported per token.
const MaxTopLogprobs = 20

// Constraint restricts the tokens a sequence may sample. It belongs to one
// sequence and is called from the engine's goroutine.
type Constraint interface {
	// Mask sets to -Inf the logits of the tokens that may not come next.
	Mask(logits []float32)
	// Accept advances past the sampled token, whose bytes are piece.
	Accept(tok int, piece []byte)
	// Complete says whether the output is a whole document that can take
	// nothing more: a reply cut there by max tokens ends normally.
	Complete() bool
}

// TokenLogprob is a token and its log probability under the model's
// distribution (the log-softmax of the raw logits, before temperature,
// penalties or a constraint, as vLLM reports them).
type TokenLogprob struct {
	Token   int
	Logprob float32
}

// Input is one sequence's share of a step.
type Input struct {
	// Slot is the KV slot of the sequence, started with Engine.Start.
	Slot int
	// Tokens are appended to the sequence: a chunk of the prompt during
	// prefill, or the previously sampled token during decode.
	Tokens []int
	// Sample asks the engine to sample the next token after Tokens. It is
	// false for prompt chunks that are not the last one (chunked prefill).
	Sample bool
}

// Output is the token sampled for one Input whose Sample was set.
type Output struct {
	Slot  int
	Token int
	// EOS is set when Token is an end-of-sequence token; its text is not
	// part of the completion.
	EOS bool
	// Logprob and Top are set when the sequence's Sampling asks for
	// log probabilities: Token's and the most likely tokens', most likely
	// first.
	Logprob float32
	Top     []TokenLogprob
	// Embedding is the prompt's embedding when Sampling.Pooling is set
	// (EOS is then set: the sequence is done).
	Embedding []float32
}

// Message is one turn of a chat conversation.
type Message struct {
	Role    string
	Content string
	// ToolCalls are the calls an assistant turn made; ToolCallID is the
	// call a tool turn answers.
	ToolCalls  []ToolCall
	ToolCallID string
}

// ToolCall is a call of a tool by the model.
type ToolCall struct {
	ID        string
	Name      string
	Arguments string // a JSON object
}

// Tool is a function the model may call.
type Tool struct {
	Name        string
	Description string
	Parameters  []byte // a JSON Schema of the arguments (an object)
}

// ToolSyntax is how a chat format's model writes a tool call: Open, a
// JSON object {"name": …, ArgsKey: {…}}, Close.
type ToolSyntax struct {
	Open, Close, ArgsKey string
}

// Tokenizer turns text into token ids and back.
type Tokenizer interface {
	Encode(text string) []int
	// Piece returns the bytes of one token, which the caller must not
	// modify. Pieces may split a UTF-8 character; callers join them before
	// emitting text.
	Piece(token int) []byte
	// ChatPrompt renders a conversation, with the tools the model may
	// call, in the model's chat format, ending where the assistant's reply
	// starts.
	ChatPrompt(msgs []Message, tools []Tool) (string, error)
	// ToolSyntax is how the chat format's model writes a tool call.
	ToolSyntax() ToolSyntax
}

// Forker is an Engine that can start a sequence from another's state: n
// choices of one prompt prefill it once and share its KV cache.
type Forker interface {
	// Fork makes the sequence in slot dst (started with Start) a copy of
	// src's: the same tokens fed, sharing src's KV cache until either
	// writes. Each then goes on alone.
	Fork(dst, src int) error
}

// Engine executes a model. All methods except Info and Tokenizer are called
// from one goroutine (the scheduler's), so implementations need no locking
// for per-slot state.
type Engine interface {
	Info() Info
	Tokenizer() Tokenizer
	// Start begins a new sequence in slot, discarding what the slot held.
	Start(slot int, s Sampling) error
	// Step feeds every input in one forward pass and returns one Output per
	// input with Sample set, in input order; the slice is valid until the
	// next Step. A step is not interruptible: ctx is checked before it starts.
	Step(ctx context.Context, batch []Input) ([]Output, error)
	// Release frees a slot's KV state.
	Release(slot int)
}
