package testengine

import (
	"context"
	"errors"
	"testing"

	"github.com/open-autoglm/autoglm/inference"
)

func TestEngineErrors(t *testing.T) {
	e := New(Config{Slots: 2, ContextLength: 16})
	ctx := context.Background()
	if err := e.Start(5, inference.Sampling{}); !errors.Is(err, inference.ErrSlot) {
		t.Fatalf("start out of range: %v", err)
	}
	if _, err := e.Step(ctx, []inference.Input{{Slot: 1, Tokens: []int{1}, Sample: true}}); !errors.Is(err, inference.ErrSlot) {
		t.Fatalf("step before start: %v", err)
	}
	if err := e.Start(0, inference.Sampling{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Step(ctx, []inference.Input{{Slot: 0}}); err == nil {
		t.Fatal("empty input accepted")
	}
	if _, err := e.Step(ctx, []inference.Input{{Slot: 0, Tokens: make([]int, 17), Sample: true}}); err == nil {
		t.Fatal("input beyond the context length accepted")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := e.Step(cancelled, []inference.Input{{Slot: 0, Tokens: []int{1}, Sample: true}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled step: %v", err)
	}
}

func TestDeterministicAndSeeded(t *testing.T) {
	run := func(s inference.Sampling, prompt string) []int {
		e := New(Config{})
		if err := e.Start(0, s); err != nil {
			t.Fatal(err)
		}
		toks := e.Tokenizer().Encode(prompt)
		var out []int
		for i := 0; i < 8; i++ {
			o, err := e.Step(context.Background(), []inference.Input{{Slot: 0, Tokens: toks, Sample: true}})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, o[0].Token)
			toks = []int{o[0].Token}
		}
		return out
	}
	a, b := run(inference.Sampling{}, "x"), run(inference.Sampling{}, "x")
	if len(a) != 8 || !equal(a, b) {
		t.Fatalf("greedy runs differ: %v %v", a, b)
	}
	s1 := run(inference.Sampling{Temperature: 1, Seed: 1, HasSeed: true}, "x")
	if equal(s1, run(inference.Sampling{Temperature: 1, Seed: 0, HasSeed: true}, "x")) || equal(s1, run(inference.Sampling{Temperature: 1, Seed: 2, HasSeed: true}, "x")) || !equal(s1, run(inference.Sampling{Temperature: 1, Seed: 1, HasSeed: true}, "x")) {
		t.Fatal("seeds must change the output and the same seed must repeat it")
	}
	chat, _ := New(Config{}).Tokenizer().ChatPrompt([]inference.Message{{Role: "user", Content: "hi"}}, nil)
	if chat != "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n" {
		t.Fatalf("ChatML: %q", chat)
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
