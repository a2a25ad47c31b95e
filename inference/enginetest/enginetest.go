// Package enginetest is the conformance suite of the inference.Engine
// contract, run against every engine that implements it (the test engine
// and the native engine; the remote engine is reached through the
// sidecar's dispatcher, not this contract): slots, chunked prefill, a
// batch matching each sequence alone, release, the context limit, one
// output per sampled input in order, and cancellation.
package enginetest

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/open-autoglm/autoglm/inference"
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
