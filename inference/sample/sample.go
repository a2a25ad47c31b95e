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

// Seen is the set of tokens observed, for a fork of the sequence.
func (s *Sampler) Seen() map[int]bool { return s.seen }

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
	c = s.truncate(c)
	sum = 0
	for _, x := range c {
		sum += x.p
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

// ahead orders candidates: more likely first, then by token id.
func ahead(a, b cand) bool { return a.p > b.p || (a.p == b.p && a.tok < b.tok) }

// head is how many of the most likely candidates truncate sorts first;
// it grows fourfold while the cut may lie beyond it.
const head = 256

// truncate keeps the candidates top_k, then min_p, then top_p keep, most
// likely first. Only the head of the distribution can survive, so it is
// selected (in linear time) and sorted, not the whole vocabulary; the
// head grows until the cut is inside it.
func (s *Sampler) truncate(c []cand) []cand {
	k := len(c)
	if s.p.TopK > 0 && s.p.TopK < k {
		k = s.p.TopK
	}
	floor := 0.0
	if s.p.MinP > 0 {
		top := 0.0
		for _, x := range c {
			top = math.Max(top, x.p)
		}
		floor = s.p.MinP * top
	}
	topP := s.p.TopP > 0 && s.p.TopP < 1
	// The mass top_p is relative to (what top_k and min_p keep), when
	// top_k cuts nothing: one pass over all candidates.
	kept := -1.0
	if topP && k == len(c) {
		kept = 0
		for _, x := range c {
			if x.p >= floor {
				kept += x.p
			}
		}
	}
	for m := min(k, head); ; m = min(k, 4*m) {
		selectBest(c, m)
		h := c[:m]
		sort.Slice(h, func(i, j int) bool { return ahead(h[i], h[j]) })
		n := m
		for n > 1 && h[n-1].p < floor {
			n--
		}
		if n == m && m < k && (!topP || kept < 0) {
			continue // the min_p or top_k cut lies beyond the head
		}
		h = h[:n]
		if !topP {
			return h
		}
		sum := kept
		if n < m || m == k { // the whole kept set is in the head
			sum = 0
			for _, x := range h {
				sum += x.p
			}
		}
		acc := 0.0
		for i, x := range h {
			if acc += x.p / sum; acc >= s.p.TopP {
				return h[:i+1]
			}
		}
		if n < m || m == k {
			return h
		}
	}
}

// selectBest moves the m best candidates to c[:m], in no order
// (quickselect).
func selectBest(c []cand, m int) {
	lo, hi := 0, len(c)-1
	for lo < hi {
		p := c[lo+(hi-lo)/2]
		i, j := lo, hi
		for i <= j {
			for ahead(c[i], p) {
				i++
			}
			for ahead(p, c[j]) {
				j--
			}
			if i <= j {
				c[i], c[j] = c[j], c[i]
				i++
				j--
			}
		}
		switch {
		case m-1 <= j:
			hi = j
		case m-1 >= i:
			lo = i
		default:
			return
		}
	}
}
