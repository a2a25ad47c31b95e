package sample

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
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

// BenchmarkSample: one token from a vocabulary of 32k and 152k (Llama 2,
// Qwen2) at temperature 1, drawn from the whole distribution and with
// top_p (which sorts the head of the candidates). The logits are normal
// with a deviation of 3, a language model's usual spread; the few largest
// are raised as a model's confident choices are.
func BenchmarkSample(b *testing.B) {
	for _, vocab := range []int{32000, 152064} {
		rng := rand.New(rand.NewPCG(1, 1))
		logits := make([]float32, vocab)
		for i := range logits {
			logits[i] = float32(rng.NormFloat64() * 3)
		}
		for i := range 20 {
			logits[rng.IntN(vocab)] = 15 - float32(i)/2
		}
		for _, p := range []inference.Sampling{{Temperature: 1}, {Temperature: 1, TopP: 0.9}} {
			b.Run(fmt.Sprintf("vocab=%d/top_p=%g", vocab, p.TopP), func(b *testing.B) {
				s := New(p)
				for b.Loop() {
					s.Sample(logits)
				}
			})
		}
	}
}

// truncate keeps what sorting the whole vocabulary and cutting it (top_k,
// then min_p, then top_p, as vLLM orders them) keeps.
func TestTruncateAgainstFullSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 300 {
		n := 1 + rng.IntN(5000)
		c := make([]cand, n)
		for i := range c {
			c[i] = cand{i, math.Exp(rng.NormFloat64() * float64(1+trial%4))}
			if trial%5 == 0 {
				c[i].p = float64(rng.IntN(4)) + 1 // ties
			}
		}
		p := inference.Sampling{Temperature: 1}
		switch trial % 4 {
		case 0:
			p.TopP = rng.Float64()
		case 1:
			p.TopK = 1 + rng.IntN(2*n)
			p.TopP = rng.Float64()
		case 2:
			p.MinP = rng.Float64() * 0.5
		case 3:
			p.MinP, p.TopP = rng.Float64()*0.2, rng.Float64()
		}
		want := append([]cand(nil), c...)
		sort.Slice(want, func(i, j int) bool { return ahead(want[i], want[j]) })
		if p.TopK > 0 && p.TopK < len(want) {
			want = want[:p.TopK]
		}
		if p.MinP > 0 {
			k := 0
			for k < len(want) && want[k].p >= p.MinP*want[0].p {
				k++
			}
			want = want[:max(k, 1)]
		}
		if p.TopP > 0 && p.TopP < 1 {
			sum := 0.0
			for _, x := range want {
				sum += x.p
			}
			acc := 0.0
			for i, x := range want {
				if acc += x.p / sum; acc >= p.TopP {
					want = want[:i+1]
					break
				}
			}
		}
		got := New(p).truncate(append([]cand(nil), c...))
		if len(got) != len(want) {
			t.Fatalf("trial %d (%+v, %d candidates): kept %d, want %d", trial, p, n, len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("trial %d: candidate %d is %+v, want %+v", trial, i, got[i], want[i])
			}
		}
	}
}
