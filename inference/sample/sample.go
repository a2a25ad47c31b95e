// Package sample picks the next token from logits: greedy, temperature,
// top-k, top-p, min-p and a repetition penalty, reproducible given a seed.
// It is the last stage of an engine step.
package sample

import (
	"math"
	"math/rand/v2"
	"sort"

	"github.com/open-autoglm/autoglm/inference"
)

// Sampler samples one sequence's tokens.
type Sampler struct {
	p    inference.Sampling
	rng  *rand.Rand
	cand []cand
	seen map[int]bool
}

type cand struct {
	tok int
	p   float64
}

// New returns a sampler for p; without a seed it draws one.
func New(p inference.Sampling) *Sampler {
	seed := uint64(p.Seed)
	if !p.HasSeed {
		seed = rand.Uint64()
	}
	return &Sampler{p: p, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), seen: map[int]bool{}}
}

// Observe records a token of the sequence (prompt or generated) for the
// repetition penalty.
func (s *Sampler) Observe(tok int) { s.seen[tok] = true }

// Sample picks a token from logits (which it may modify).
func (s *Sampler) Sample(logits []float32) int {
	if rp := s.p.RepetitionPenalty; rp > 0 && rp != 1 {
		for tok := range s.seen {
			if tok >= 0 && tok < len(logits) {
				if logits[tok] > 0 {
					logits[tok] /= float32(rp)
				} else {
					logits[tok] *= float32(rp)
				}
			}
		}
	}
	if s.p.Temperature <= 0 || s.p.TopK == 1 {
		best := 0
		for i, v := range logits {
			if v > logits[best] {
				best = i
			}
		}
		return best
	}
	c := s.cand[:0]
	mx := math.Inf(-1)
	for _, v := range logits {
		mx = math.Max(mx, float64(v))
	}
	var sum float64
	for i, v := range logits {
		p := math.Exp((float64(v) - mx) / s.p.Temperature)
		if p > 0 { // a token masked to -Inf (or too unlikely to matter) is no candidate
			c = append(c, cand{i, p})
			sum += p
		}
	}
	s.cand = c
	if (s.p.TopK <= 0 || s.p.TopK >= len(c)) && (s.p.TopP <= 0 || s.p.TopP >= 1) && s.p.MinP <= 0 {
		// Nothing is cut from the distribution: draw from it as it is,
		// without sorting the vocabulary.
		r := s.rng.Float64() * sum
		for _, x := range c {
			if r -= x.p; r <= 0 {
				return x.tok
			}
		}
		return c[len(c)-1].tok
	}
	sort.Slice(c, func(i, j int) bool { return c[i].p > c[j].p || (c[i].p == c[j].p && c[i].tok < c[j].tok) })
	if k := s.p.TopK; k > 0 && k < len(c) {
		c = c[:k]
	}
	if mp := s.p.MinP; mp > 0 {
		n := 0
		for n < len(c) && c[n].p >= mp*c[0].p {
			n++
		}
		c = c[:max(n, 1)]
	}
	sum = 0
	for _, x := range c {
		sum += x.p
	}
	if tp := s.p.TopP; tp > 0 && tp < 1 {
		acc := 0.0
		for i, x := range c {
			acc += x.p / sum
			if acc >= tp {
				c = c[:i+1]
				break
			}
		}
		sum = 0
		for _, x := range c {
			sum += x.p
		}
	}
	s.cand = c
	r := s.rng.Float64() * sum
	for _, x := range c {
		if r -= x.p; r <= 0 {
			return x.tok
		}
	}
	return c[len(c)-1].tok
}

// Logprobs returns tok's log probability under logits (their
// log-softmax) and the top most likely tokens', most likely first (ties
// by token id), appended to dst.
func Logprobs(logits []float32, tok, top int, dst []inference.TokenLogprob) (float32, []inference.TokenLogprob) {
	mx := float32(math.Inf(-1))
	for _, v := range logits {
		mx = max(mx, v)
	}
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v - mx))
	}
	lse := float64(mx) + math.Log(sum)
	lp := func(v float32) float32 { return float32(float64(v) - lse) }
	base := len(dst)
	for i, v := range logits {
		if top <= 0 {
			break
		}
		// Insertion into a short sorted list: top is at most 20.
		n := len(dst) - base
		if n == top && !better(v, i, dst[len(dst)-1], logits) {
			continue
		}
		if n < top {
			dst = append(dst, inference.TokenLogprob{})
		}
		j := len(dst) - 1
		for j > base && better(v, i, dst[j-1], logits) {
			dst[j] = dst[j-1]
			j--
		}
		dst[j] = inference.TokenLogprob{Token: i, Logprob: v}
	}
	for k := base; k < len(dst); k++ {
		dst[k].Logprob = lp(dst[k].Logprob)
	}
	if tok < 0 || tok >= len(logits) {
		return float32(math.Inf(-1)), dst
	}
	return lp(logits[tok]), dst
}

func better(v float32, i int, than inference.TokenLogprob, logits []float32) bool {
	w := logits[than.Token]
	return v > w || (v == w && i < than.Token)
}
