// Package enginetest is the conformance suite of the inference.Engine
// contract, run against every engine that implements it (the test engine
// and the native engine; the remote engine is reached through the
// sidecar's dispatcher, not this contract): slots, chunked prefill, a
// batch matching each sequence alone, release, the context limit, one
// output per sampled input in order, cancellation, output constrained to
// a grammar, embeddings, and log probabilities.
package enginetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/grammar"
)

// Run runs the suite; fresh returns a new engine with at least 3 slots, a
// context of at least 48 tokens and a vocabulary of more than 21 tokens
// (the prompts use ids 1..20), whose greedy decoding (Temperature 0) is
// deterministic.
func Run(t *testing.T, fresh func(t *testing.T) inference.Engine) {
	prompt := func(n, seed int) []int {
		out := make([]int, n)
		for i := range out {
			out[i] = 1 + (i*7+seed*13)%20
		}
		return out
	}
	greedy := inference.Sampling{}

	t.Run("info", func(t *testing.T) {
		info := fresh(t).Info()
		if info.Slots < 3 || info.ContextLength < 48 || info.Vocab <= 21 || info.KVTokens <= 0 || info.Model == "" {
			t.Fatalf("info %+v", info)
		}
	})

	t.Run("slots", func(t *testing.T) {
		e := fresh(t)
		n := e.Info().Slots
		if err := e.Start(n, greedy); !errors.Is(err, inference.ErrSlot) {
			t.Errorf("Start(slot %d of %d): %v, want ErrSlot", n, n, err)
		}
		if err := e.Start(-1, greedy); !errors.Is(err, inference.ErrSlot) {
			t.Errorf("Start(-1): %v, want ErrSlot", err)
		}
		if _, err := e.Step(context.Background(), []inference.Input{{Slot: 0, Tokens: []int{1}, Sample: true}}); !errors.Is(err, inference.ErrSlot) {
			t.Errorf("Step on a slot never started: %v, want ErrSlot", err)
		}
	})

	t.Run("chunked prefill equals one prefill", func(t *testing.T) {
		p := prompt(20, 1)
		want := decode(t, fresh(t), 0, [][]int{p}, 8)
		got := decode(t, fresh(t), 0, [][]int{p[:7], p[7:15], p[15:]}, 8)
		if !slices.Equal(got, want) {
			t.Fatalf("chunked %v, whole %v", got, want)
		}
	})

	t.Run("batch equals alone", func(t *testing.T) {
		ps := [][]int{prompt(12, 2), prompt(5, 3), prompt(17, 4)}
		var alone [][]int
		for _, p := range ps {
			alone = append(alone, decode(t, fresh(t), 0, [][]int{p}, 6))
		}
		e := fresh(t)
		for s := range ps {
			if err := e.Start(s, greedy); err != nil {
				t.Fatal(err)
			}
		}
		got := make([][]int, len(ps))
		in := make([]inference.Input, len(ps))
		for s, p := range ps {
			in[s] = inference.Input{Slot: s, Tokens: p, Sample: true}
		}
		for range 6 {
			out, err := e.Step(context.Background(), in)
			if err != nil {
				t.Fatal(err)
			}
			if len(out) != len(in) {
				t.Fatalf("%d outputs for %d sampled inputs", len(out), len(in))
			}
			for i, o := range out {
				if o.Slot != in[i].Slot {
					t.Fatalf("output %d is slot %d, want input order (slot %d)", i, o.Slot, in[i].Slot)
				}
				got[i] = append(got[i], o.Token)
				in[i] = inference.Input{Slot: o.Slot, Tokens: []int{o.Token}, Sample: true}
			}
		}
		for s := range ps {
			if !slices.Equal(got[s], alone[s]) {
				t.Errorf("slot %d: batched %v, alone %v", s, got[s], alone[s])
			}
		}
	})

	t.Run("outputs only for sampled inputs", func(t *testing.T) {
		e := fresh(t)
		for s := range 2 {
			if err := e.Start(s, greedy); err != nil {
				t.Fatal(err)
			}
		}
		out, err := e.Step(context.Background(), []inference.Input{{Slot: 0, Tokens: prompt(4, 5)}, {Slot: 1, Tokens: prompt(3, 6), Sample: true}})
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != 1 || out[0].Slot != 1 {
			t.Fatalf("outputs %+v, want one for slot 1", out)
		}
	})

	t.Run("release and restart", func(t *testing.T) {
		p := prompt(9, 7)
		e := fresh(t)
		decode(t, e, 1, [][]int{prompt(15, 8)}, 5) // another sequence in the slot first
		e.Release(1)
		got := decode(t, e, 1, [][]int{p}, 5)
		if want := decode(t, fresh(t), 1, [][]int{p}, 5); !slices.Equal(got, want) {
			t.Fatalf("after release %v, fresh %v", got, want)
		}
	})

	// The KV budget an engine reports is room it has: sequences filling it
	// together, shared evenly by every slot (the most partly filled
	// blocks, for an engine that allocates in blocks), each within the
	// context length, all run.
	t.Run("KV budget", func(t *testing.T) {
		e := fresh(t)
		info := e.Info()
		budget := min(info.KVTokens, info.Slots*info.ContextLength)
		var in []inference.Input
		for slot := range info.Slots {
			n := budget / info.Slots // tokens of this sequence, the sampled one included
			if slot < budget%info.Slots {
				n++
			}
			if n < 2 {
				continue
			}
			if err := e.Start(slot, greedy); err != nil {
				t.Fatal(err)
			}
			in = append(in, inference.Input{Slot: slot, Tokens: prompt(n-1, 20+slot), Sample: true})
		}
		out, err := e.Step(context.Background(), in)
		if err != nil || len(out) != len(in) {
			t.Fatalf("prefill of %d sequences within a budget of %d tokens: %d outputs, %v", len(in), budget, len(out), err)
		}
		next := make([]inference.Input, len(out))
		for i, o := range out {
			next[i] = inference.Input{Slot: o.Slot, Tokens: []int{o.Token}, Sample: true}
		}
		if out, err := e.Step(context.Background(), next); err != nil || len(out) != len(next) {
			t.Fatalf("the step that fills the budget of %d tokens: %d outputs, %v", budget, len(out), err)
		}
	})

	t.Run("context limit", func(t *testing.T) {
		e := fresh(t)
		if err := e.Start(0, greedy); err != nil {
			t.Fatal(err)
		}
		n := e.Info().ContextLength
		if _, err := e.Step(context.Background(), []inference.Input{{Slot: 0, Tokens: prompt(n+1, 9), Sample: true}}); err == nil {
			t.Fatalf("%d tokens fed to a context of %d", n+1, n)
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		e := fresh(t)
		if err := e.Start(0, greedy); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := e.Step(ctx, []inference.Input{{Slot: 0, Tokens: prompt(3, 10), Sample: true}}); !errors.Is(err, context.Canceled) {
			t.Fatalf("Step with a cancelled context: %v", err)
		}
		// The slot is still usable.
		if _, err := e.Step(context.Background(), []inference.Input{{Slot: 0, Tokens: prompt(3, 10), Sample: true}}); err != nil {
			t.Fatalf("after a cancelled step: %v", err)
		}
	})

	t.Run("constrained output", func(t *testing.T) {
		e := fresh(t)
		voc, ok := e.(interface{ Vocab() *grammar.Vocab })
		if !ok {
			t.Fatal("the engine does not give its vocabulary to constrained decoding (Vocab)")
		}
		g, err := grammar.Compile([]byte(conformanceSchema))
		if err != nil {
			t.Fatal(err)
		}
		for seed := range 3 {
			c, err := voc.Vocab().Constrain(g, 40)
			if err != nil {
				t.Fatal(err)
			}
			sp := inference.Sampling{Temperature: 1, Seed: int64(seed), HasSeed: true, Constraint: c}
			text, n, eos := generate(t, e, sp, prompt(5, seed), 40)
			var v struct {
				Unit *string `json:"unit"`
				N    *int    `json:"n"`
				Ok   *bool   `json:"ok"`
			}
			d := json.NewDecoder(bytes.NewReader(text))
			d.DisallowUnknownFields()
			if err := d.Decode(&v); err != nil || v.Unit == nil || v.N == nil || v.Ok == nil || (*v.Unit != "c" && *v.Unit != "f") {
				t.Fatalf("constrained output %q (%d tokens, EOS %v) does not fit the schema: %v", text, n, eos, err)
			}
			if !eos {
				t.Fatalf("no end token after the complete document %q", text)
			}
		}
	})

	t.Run("embeddings", func(t *testing.T) {
		p := prompt(20, 3)
		for _, pool := range []inference.Pooling{inference.PoolMean, inference.PoolLast} {
			whole := embed(t, fresh(t), pool, p)
			chunked := embed(t, fresh(t), pool, p[:7], p[7:15], p[15:])
			other := embed(t, fresh(t), pool, prompt(20, 4))
			norm := 0.0
			for i, v := range whole {
				norm += float64(v) * float64(v)
				if math.Abs(float64(v-chunked[i])) > 1e-4 {
					t.Fatalf("pooling %d: chunked prefill embeds differently at %d: %g vs %g", pool, i, chunked[i], v)
				}
			}
			if math.Abs(norm-1) > 1e-4 || slices.Equal(whole, other) {
				t.Fatalf("pooling %d: norm² %g; another prompt embeds the same: %v", pool, norm, slices.Equal(whole, other))
			}
		}
	})

	t.Run("fork", func(t *testing.T) {
		e := fresh(t)
		f, ok := e.(inference.Forker)
		if !ok {
			t.Fatal("the engine does not fork sequences (Fork)")
		}
		p := prompt(20, 6)
		want := decode(t, fresh(t), 0, [][]int{p}, 6)
		for _, s := range []int{0, 1, 2} {
			if err := e.Start(s, greedy); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.Step(context.Background(), []inference.Input{{Slot: 0, Tokens: p[:19]}}); err != nil {
			t.Fatal(err)
		}
		for _, s := range []int{1, 2} {
			if err := f.Fork(s, 0); err != nil {
				t.Fatal(err)
			}
		}
		in := []inference.Input{{Slot: 0, Tokens: p[19:], Sample: true}, {Slot: 1, Tokens: p[19:], Sample: true}, {Slot: 2, Tokens: p[19:], Sample: true}}
		var got [3][]int
		for range 6 {
			out, err := e.Step(context.Background(), in)
			if err != nil {
				t.Fatal(err)
			}
			for i, o := range out {
				got[i] = append(got[i], o.Token)
				in[i].Tokens = []int{o.Token}
			}
		}
		for i := range got {
			if !slices.Equal(got[i], want) {
				t.Fatalf("fork %d decodes %v, the prompt alone %v", i, got[i], want)
			}
		}
		if err := f.Fork(3, 0); !errors.Is(err, inference.ErrSlot) && e.Info().Slots > 3 {
			t.Fatalf("fork into a slot never started: %v", err)
		}
	})

	t.Run("log probabilities", func(t *testing.T) {
		e := fresh(t)
		if err := e.Start(0, inference.Sampling{Logprobs: true, TopLogprobs: 5}); err != nil {
			t.Fatal(err)
		}
		in := []inference.Input{{Slot: 0, Tokens: prompt(6, 4), Sample: true}}
		for range 4 {
			out, err := e.Step(context.Background(), in)
			if err != nil {
				t.Fatal(err)
			}
			o := out[0]
			if len(o.Top) != 5 || o.Logprob > 0 || math.IsNaN(float64(o.Logprob)) {
				t.Fatalf("output %+v: want 5 alternatives and a log probability <= 0", o)
			}
			sum := 0.0
			for i, a := range o.Top {
				sum += math.Exp(float64(a.Logprob))
				if i > 0 && a.Logprob > o.Top[i-1].Logprob {
					t.Fatalf("alternatives not most likely first: %+v", o.Top)
				}
				if a.Token == o.Token && a.Logprob != o.Logprob {
					t.Fatalf("token %d: logprob %g, as an alternative %g", o.Token, o.Logprob, a.Logprob)
				}
			}
			if sum > 1.0001 || o.Logprob < o.Top[4].Logprob && slices.ContainsFunc(o.Top, func(a inference.TokenLogprob) bool { return a.Token == o.Token }) {
				t.Fatalf("alternatives' probabilities sum to %g: %+v", sum, o.Top)
			}
			in = []inference.Input{{Slot: 0, Tokens: []int{o.Token}, Sample: true}}
		}
	})
}

// embed returns the embedding of prompt fed in chunks.
func embed(t *testing.T, e inference.Engine, pool inference.Pooling, chunks ...[]int) []float32 {
	t.Helper()
	if err := e.Start(0, inference.Sampling{Pooling: pool}); err != nil {
		t.Fatal(err)
	}
	defer e.Release(0)
	for i, c := range chunks {
		out, err := e.Step(context.Background(), []inference.Input{{Slot: 0, Tokens: c, Sample: i == len(chunks)-1}})
		if err != nil {
			t.Fatal(err)
		}
		if i == len(chunks)-1 {
			if len(out) != 1 || !out[0].EOS || len(out[0].Embedding) == 0 {
				t.Fatalf("embedding output %+v", out)
			}
			return out[0].Embedding
		}
	}
	return nil
}

// conformanceSchema is what the constrained-output case asks for.
const conformanceSchema = `{"type":"object","properties":{"unit":{"enum":["c","f"]},"n":{"type":"integer"},
	"ok":{"type":"boolean"}},"required":["unit","n","ok"],"additionalProperties":false}`

// generate runs one sequence in slot 0 from prompt until an end token or
// max tokens (the end token not counted), returning the generated bytes.
func generate(t *testing.T, e inference.Engine, sp inference.Sampling, prompt []int, max int) (text []byte, n int, eos bool) {
	t.Helper()
	if err := e.Start(0, sp); err != nil {
		t.Fatal(err)
	}
	defer e.Release(0)
	in := []inference.Input{{Slot: 0, Tokens: prompt, Sample: true}}
	for {
		out, err := e.Step(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		if out[0].EOS {
			return text, n, true
		}
		if n == max {
			return text, n, false
		}
		n++
		text = append(text, e.Tokenizer().Piece(out[0].Token)...)
		in = []inference.Input{{Slot: 0, Tokens: []int{out[0].Token}, Sample: true}}
	}
}

// decode starts slot, feeds the chunks (sampling after the last) and
// decodes n tokens greedily, alone.
func decode(t *testing.T, e inference.Engine, slot int, chunks [][]int, n int) []int {
	t.Helper()
	if err := e.Start(slot, inference.Sampling{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range chunks[:len(chunks)-1] {
		if out, err := e.Step(context.Background(), []inference.Input{{Slot: slot, Tokens: c}}); err != nil || len(out) != 0 {
			t.Fatalf("prefill chunk: %v %v", out, err)
		}
	}
	in := []inference.Input{{Slot: slot, Tokens: chunks[len(chunks)-1], Sample: true}}
	var got []int
	for range n {
		out, err := e.Step(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != 1 {
			t.Fatalf("%d outputs for one sampled input", len(out))
		}
		got = append(got, out[0].Token)
		in = []inference.Input{{Slot: slot, Tokens: []int{out[0].Token}, Sample: true}}
	}
	return got
}
