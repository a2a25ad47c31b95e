package sample

import (
	"testing"

	"github.com/open-autoglm/autoglm/inference"
)

func logits() []float32 { return []float32{1, 3, 2, 0.5, 2.9} }

func TestGreedy(t *testing.T) {
	if got := New(inference.Sampling{}).Sample(logits()); got != 1 {
		t.Fatalf("greedy picked %d", got)
	}
	if got := New(inference.Sampling{Temperature: 1, TopK: 1}).Sample(logits()); got != 1 {
		t.Fatalf("top-k 1 picked %d", got)
	}
}

func TestSeed(t *testing.T) {
	draw := func(seed int64) []int {
		s := New(inference.Sampling{Temperature: 1, Seed: seed, HasSeed: true})
		var out []int
		for range 50 {
			out = append(out, s.Sample(logits()))
		}
		return out
	}
	a, b, c := draw(7), draw(7), draw(8)
	same, differs := true, false
	for i := range a {
		same = same && a[i] == b[i]
		differs = differs || a[i] != c[i]
	}
	if !same || !differs {
		t.Fatal("a seed must fix the draws, and another seed change them")
	}
}

func TestFilters(t *testing.T) {
	count := func(p inference.Sampling) map[int]int {
		p.Seed, p.HasSeed = 1, true
		s := New(p)
		m := map[int]int{}
		for range 2000 {
			m[s.Sample(logits())]++
		}
		return m
	}
	if m := count(inference.Sampling{Temperature: 1, TopK: 2}); len(m) != 2 || m[1] == 0 || m[4] == 0 {
		t.Fatalf("top-k 2: %v", m)
	}
	// p(1) ≈ 0.40, p(4) ≈ 0.36: top-p 0.5 keeps the two.
	if m := count(inference.Sampling{Temperature: 1, TopP: 0.5}); len(m) != 2 {
		t.Fatalf("top-p 0.5: %v", m)
	}
	// min-p 0.5 keeps tokens with at least half the top probability: 1, 4.
	if m := count(inference.Sampling{Temperature: 1, MinP: 0.5}); len(m) != 2 {
		t.Fatalf("min-p 0.5: %v", m)
	}
	if m := count(inference.Sampling{Temperature: 1}); len(m) != 5 {
		t.Fatalf("plain temperature 1 should reach every token: %v", m)
	}
	// A low temperature sharpens: only 1 and 4 (0.1 apart: e^2 ≈ 7.4 to 1)
	// remain, about 88 % and 12 %.
	if m := count(inference.Sampling{Temperature: 0.05}); len(m) != 2 || m[1] < 1650 || m[1] > 1850 {
		t.Fatalf("temperature 0.05: %v", m)
	}
}

func TestRepetitionPenalty(t *testing.T) {
	s := New(inference.Sampling{RepetitionPenalty: 2})
	s.Observe(1)
	if got := s.Sample(logits()); got != 4 {
		t.Fatalf("penalised 1 (3 → 1.5) should lose to 4 (2.9), got %d", got)
	}
}
