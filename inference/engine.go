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
}

// Message is one turn of a chat conversation.
type Message struct {
	Role    string
	Content string
}

// Tokenizer turns text into token ids and back.
type Tokenizer interface {
	Encode(text string) []int
	// Piece returns the bytes of one token, which the caller must not
	// modify. Pieces may split a UTF-8 character; callers join them before
	// emitting text.
	Piece(token int) []byte
	// ChatPrompt renders a conversation with the model's chat template,
	// ending where the assistant's reply starts.
	ChatPrompt(msgs []Message) (string, error)
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
