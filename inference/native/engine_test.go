package native

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/gguf"
	"github.com/open-autoglm/autoglm/inference/llama/tiny"
	"github.com/open-autoglm/autoglm/inference/tokenizer"
)

func engine(t *testing.T, slots int, kv ...int) *Engine {
	t.Helper()
	var b bytes.Buffer
	vocab := tokenizer.Vocabulary([][2]string{{"h", "e"}, {"l", "l"}})
	if err := tiny.WriteWith(&b, tiny.Config{Vocab: len(vocab[1].Value.([]string)), Embd: 64, Layers: 2, Heads: 4, KVHeads: 2, FF: 128, Context: 128, Type: gguf.Q8_0, Seed: 9}, vocab); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	c := Config{Slots: slots, ContextLength: 64}
	if len(kv) > 0 {
		c.KVTokens = kv[0]
	}
	e, err := New(f, c)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// generate runs a greedy sequence alone to n tokens.
func generate(t *testing.T, e *Engine, slot int, prompt []int, n int, s inference.Sampling) []int {
	if err := e.Start(slot, s); err != nil {
		t.Fatal(err)
	}
	var out []int
	in := []inference.Input{{Slot: slot, Tokens: prompt, Sample: true}}
	for range n {
		o, err := e.Step(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, o[0].Token)
		in = []inference.Input{{Slot: slot, Tokens: []int{o[0].Token}, Sample: true}}
	}
	return out
}

// TestBatchMatchesAlone: with a fixed seed, a sequence's tokens are the
// same alone and in a batch with 7 others (different prompts, chunked
// prefill in the batch).
func TestBatchMatchesAlone(t *testing.T) {
	e := engine(t, 8)
	// 8 slots × 64 positions, less a block per slot kept for rounding.
	if e.Info().Vocab != 261 || e.Info().ContextLength != 64 || e.Info().KVTokens != 8*64-8*16 {
		t.Fatalf("info %+v", e.Info())
	}
	prompts := make([][]int, 8)
	for i := range prompts {
		prompts[i] = e.Tokenizer().Encode(string(rune('a'+i)) + " hello there")
	}
	sp := inference.Sampling{Temperature: 0.8, TopK: 40, Seed: 42, HasSeed: true}
	alone := make([][]int, 8)
	for i, p := range prompts {
		alone[i] = generate(t, e, 0, p, 6, sp)
		e.Release(0)
	}
	for i := range prompts {
		e.Start(i, sp)
	}
	got := make([][]int, 8)
	// Prefill in two chunks for even slots, one for odd ones.
	var in []inference.Input
	for i, p := range prompts {
		if i%2 == 0 {
			in = append(in, inference.Input{Slot: i, Tokens: p[:2]})
		} else {
			in = append(in, inference.Input{Slot: i, Tokens: p, Sample: true})
		}
	}
	outs, err := e.Step(context.Background(), in)
	if err != nil || len(outs) != 4 {
		t.Fatalf("%v %v", outs, err)
	}
	next := map[int]int{}
	for _, o := range outs {
		next[o.Slot] = o.Token
		got[o.Slot] = append(got[o.Slot], o.Token)
	}
	in = in[:0]
	for i, p := range prompts {
		if i%2 == 0 {
			in = append(in, inference.Input{Slot: i, Tokens: p[2:], Sample: true})
		} else {
			in = append(in, inference.Input{Slot: i, Tokens: []int{next[i]}, Sample: true})
		}
	}
	for len(got[0]) < 6 || len(got[1]) < 6 {
		outs, err := e.Step(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		in = in[:0]
		for _, o := range outs {
			if len(got[o.Slot]) < 6 {
				got[o.Slot] = append(got[o.Slot], o.Token)
			}
			in = append(in, inference.Input{Slot: o.Slot, Tokens: []int{o.Token}, Sample: true})
		}
	}
	for i := range prompts {
		for k := range 6 {
			if got[i][k] != alone[i][k] {
				t.Fatalf("sequence %d: %v in the batch, %v alone", i, got[i][:6], alone[i])
			}
		}
	}
}

func TestSlotErrors(t *testing.T) {
	e := engine(t, 2)
	if err := e.Start(2, inference.Sampling{}); !errors.Is(err, inference.ErrSlot) {
		t.Fatalf("%v", err)
	}
	if _, err := e.Step(context.Background(), []inference.Input{{Slot: 1, Tokens: []int{1}}}); !errors.Is(err, inference.ErrSlot) {
		t.Fatalf("unstarted slot: %v", err)
	}
}

// TestKVBudget: sequences take KV blocks as they grow from a shared budget;
// an exhausted budget is an error, and released sequences give theirs back.
func TestKVBudget(t *testing.T) {
	e := engine(t, 4, 48) // three blocks of 16 for four slots
	ctx := context.Background()
	for s := range 2 {
		e.Start(s, inference.Sampling{})
	}
	// Slot 0 fills two blocks (20 positions), slot 1 one.
	if _, err := e.Step(ctx, []inference.Input{{Slot: 0, Tokens: make([]int, 20)}, {Slot: 1, Tokens: make([]int, 5)}}); err != nil {
		t.Fatal(err)
	}
	if f := e.pool.Free(); f != 0 {
		t.Fatalf("%d blocks free, want 0", f)
	}
	if _, err := e.Step(ctx, []inference.Input{{Slot: 1, Tokens: make([]int, 12)}}); err == nil {
		t.Fatal("a full budget must refuse a new block")
	}
	e.Release(0)
	if f := e.pool.Free(); f != 2 {
		t.Fatalf("%d blocks free after release, want 2", f)
	}
	e.Start(1, inference.Sampling{})
	if _, err := e.Step(ctx, []inference.Input{{Slot: 1, Tokens: make([]int, 30), Sample: true}}); err != nil {
		t.Fatal(err)
	}
}
