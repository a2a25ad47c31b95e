package llama_test

import (
	"bytes"
	"encoding/binary"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/open-autoglm/autoglm/inference/gguf"
	"github.com/open-autoglm/autoglm/inference/llama"
	"github.com/open-autoglm/autoglm/inference/llama/tiny"
)

func build(t *testing.T, c tiny.Config) *llama.Model { return buildWith(t, c, nil) }

// buildWith builds a tiny model with extra metadata.
func buildWith(t *testing.T, c tiny.Config, meta []gguf.KV) *llama.Model {
	t.Helper()
	var b bytes.Buffer
	if err := tiny.WriteWith(&b, c, meta); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	m, err := llama.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// buildQuantized builds a tiny model and, with a recipe, quantises it.
func buildQuantized(t *testing.T, c tiny.Config, recipe string) *llama.Model {
	t.Helper()
	c.Recipe = recipe
	return build(t, c)
}

// reference is a plain float64 forward pass over the whole sequence at
// once (no KV cache), from the same (dequantized) weights.
func reference(m *llama.Model, tokens []int) []float64 {
	return referenceScaled(m, tokens, ropeScaling{})
}

// ropeScaling is RoPE scaling as a model's config asks for it (not as the
// engine read it): positions divided by linear (0: 1), frequency i divided
// by freqs[i] (Llama 3.1's rope_freqs), or YaRN.
type ropeScaling struct {
	linear float64
	freqs  []float32
	yarn   *yarnConfig
}

// yarnConfig is YaRN's configuration as Hugging Face's rope_scaling holds
// it: factor, original_max_position_embeddings, beta_fast, beta_slow.
type yarnConfig struct{ factor, orig, betaFast, betaSlow float64 }

// referenceScaled is reference with RoPE scaling.
func referenceScaled(m *llama.Model, tokens []int, sc ropeScaling) []float64 {
	logits, _ := referenceFull(m, tokens, sc)
	return logits
}

// referenceFull is the reference's logits after the last token and every
// position's final normalised hidden state (what embeddings pool).
func referenceFull(m *llama.Model, tokens []int, sc ropeScaling) ([]float64, [][]float64) {
	c := m.Config
	hd, group := c.HeadDim(), c.Heads/c.KVHeads
	row := func(mm llama.Matrix, r int) []float64 {
		f := make([]float32, mm.Cols)
		mm.Row(r, f)
		out := make([]float64, len(f))
		for i, v := range f {
			out[i] = float64(v)
		}
		return out
	}
	mul := func(mm llama.Matrix, x []float64) []float64 {
		switch mm.Type {
		case gguf.Q8_0, gguf.Q4_0, gguf.Q4_K, gguf.Q5_K, gguf.Q6_K:
			x = q8RoundTrip(x) // the engine's int8 products quantise x too
		}
		y := make([]float64, mm.Rows)
		for r := range y {
			w := row(mm, r)
			for i := range w {
				y[r] += w[i] * x[i]
			}
		}
		return y
	}
	norm := func(x []float64, w []float32) []float64 {
		var ss float64
		for _, v := range x {
			ss += v * v
		}
		inv := 1 / math.Sqrt(ss/float64(len(x))+float64(c.RMSEps))
		out := make([]float64, len(x))
		for i := range x {
			out[i] = x[i] * inv * float64(w[i])
		}
		return out
	}
	// RoPE over the first rd dimensions of each head (GLM-4 rotates half:
	// Hugging Face's Glm partial_rotary_factor 0.5, interleaved pairs, its
	// frequencies over the rotated dimensions), the rest passed through.
	rd := c.RotaryDims()
	invFreq := make([]float64, rd/2)
	mscale := 1.0
	for i := range invFreq {
		invFreq[i] = math.Pow(float64(c.RopeBase), -2*float64(i)/float64(rd))
		if sc.linear > 0 {
			invFreq[i] /= sc.linear
		}
		if sc.freqs != nil {
			invFreq[i] /= float64(sc.freqs[i])
		}
	}
	if y := sc.yarn; y != nil {
		// YaRN as Hugging Face's _compute_yarn_parameters writes it: the
		// correction range of dimensions between beta_fast and beta_slow
		// rotations over the original context, a linear ramp over it
		// between extrapolated (kept) and interpolated (÷ factor)
		// frequencies, and cos, sin scaled by get_mscale(factor).
		dim := func(rot float64) float64 {
			return float64(rd) * math.Log(y.orig/(rot*2*math.Pi)) / (2 * math.Log(float64(c.RopeBase)))
		}
		lo, hi := math.Max(math.Floor(dim(y.betaFast)), 0), math.Min(math.Ceil(dim(y.betaSlow)), float64(rd-1))
		if lo == hi {
			hi += 0.001
		}
		for i, extrap := range invFreq {
			ramp := math.Min(math.Max((float64(i)-lo)/(hi-lo), 0), 1)
			extrapFactor := 1 - ramp
			invFreq[i] = extrap/y.factor*(1-extrapFactor) + extrap*extrapFactor
		}
		mscale = 0.1*math.Log(y.factor) + 1
	}
	rope := func(v []float64, pos int) {
		v = v[:rd]
		half := len(v) / 2
		for i := range half {
			theta := float64(pos) * invFreq[i]
			a, b := 2*i, 2*i+1
			if c.NeoX {
				a, b = i, i+half
			}
			x0, x1 := v[a], v[b]
			cs, sn := math.Cos(theta)*mscale, math.Sin(theta)*mscale
			v[a], v[b] = x0*cs-x1*sn, x0*sn+x1*cs
		}
	}
	n := len(tokens)
	xs := make([][]float64, n)
	for p, tok := range tokens {
		xs[p] = row(m.Embedding(), tok)
	}
	for l := range c.Layers {
		L := m.Layer(l)
		qs, ks, vs := make([][]float64, n), make([][]float64, n), make([][]float64, n)
		for p := range n {
			h := norm(xs[p], L.AttnNorm)
			qs[p], ks[p], vs[p] = mul(L.Q, h), mul(L.K, h), mul(L.V, h)
			// Qwen2: q = W_q·h + b_q, and the same for k and v (the
			// Hugging Face Qwen2Attention's q_proj/k_proj/v_proj have
			// bias=True), before the rotary embedding.
			for _, pb := range []struct {
				v []float64
				b []float32
			}{{qs[p], L.QBias}, {ks[p], L.KBias}, {vs[p], L.VBias}} {
				for i, b := range pb.b {
					pb.v[i] += float64(b)
				}
			}
			// Qwen3: each head of q and k RMS-normalised with its own
			// weights (Qwen3Attention's q_norm/k_norm over head_dim),
			// before the rotary embedding.
			if L.QNorm != nil {
				for hh := range c.Heads {
					copy(qs[p][hh*hd:(hh+1)*hd], norm(qs[p][hh*hd:(hh+1)*hd], L.QNorm))
				}
				for hh := range c.KVHeads {
					copy(ks[p][hh*hd:(hh+1)*hd], norm(ks[p][hh*hd:(hh+1)*hd], L.KNorm))
				}
			}
			for hh := range c.Heads {
				rope(qs[p][hh*hd:(hh+1)*hd], p)
			}
			for hh := range c.KVHeads {
				rope(ks[p][hh*hd:(hh+1)*hd], p)
			}
		}
		for p := range n {
			att := make([]float64, c.Heads*hd)
			for hh := range c.Heads {
				kvh := hh / group
				sc := make([]float64, p+1)
				mx := math.Inf(-1)
				for j := 0; j <= p; j++ {
					for i := range hd {
						sc[j] += qs[p][hh*hd+i] * ks[j][kvh*hd+i]
					}
					sc[j] /= math.Sqrt(float64(hd))
					mx = math.Max(mx, sc[j])
				}
				var sum float64
				for j := range sc {
					sc[j] = math.Exp(sc[j] - mx)
					sum += sc[j]
				}
				for j := range sc {
					for i := range hd {
						att[hh*hd+i] += sc[j] / sum * vs[j][kvh*hd+i]
					}
				}
			}
			// GLM-4 (Hugging Face's Glm4DecoderLayer): the attention's and
			// the MLP's outputs are RMS-normalised (post_self_attn_layernorm,
			// post_mlp_layernorm) before each residual addition.
			o := mul(L.O, att)
			if L.PostAttnNorm != nil {
				o = norm(o, L.PostAttnNorm)
			}
			for i := range o {
				xs[p][i] += o[i]
			}
			h := norm(xs[p], L.FFNNorm)
			g, u := mul(L.Gate, h), mul(L.Up, h)
			for i := range g {
				g[i] = g[i] / (1 + math.Exp(-g[i])) * u[i]
			}
			d := mul(L.Down, g)
			if L.PostFFNNorm != nil {
				d = norm(d, L.PostFFNNorm)
			}
			for i := range d {
				xs[p][i] += d[i]
			}
		}
	}
	hidden := make([][]float64, n)
	for p := range xs {
		hidden[p] = norm(xs[p], m.OutputNorm())
	}
	return mul(m.Output(), hidden[n-1]), hidden
}

// The pooled hidden states of an embedding (chunked as the scheduler
// feeds a long prompt) match the reference's, mean and last.
func TestPooledHiddenStates(t *testing.T) {
	m := build(t, tiny.Config{Vocab: 64, Embd: 64, Layers: 2, Heads: 4, KVHeads: 2, FF: 96, Context: 64, Type: gguf.F32, Seed: 7})
	tokens := []int{1, 5, 9, 2, 33, 17, 8, 40, 3}
	_, hidden := referenceFull(m, tokens, ropeScaling{})
	for _, pool := range []int{llama.PoolMean, llama.PoolLast} {
		s := m.NewState()
		s.Pool = pool
		for _, chunk := range [][]int{tokens[:4], tokens[4:]} {
			if err := m.Run([]llama.Feed{{S: s, Tokens: chunk}}); err != nil {
				t.Fatal(err)
			}
		}
		want := make([]float64, len(hidden[0]))
		for p, h := range hidden {
			for i, v := range h {
				if pool == llama.PoolMean {
					want[i] += v / float64(len(hidden))
				} else if p == len(hidden)-1 {
					want[i] = v
				}
			}
		}
		got := make([]float32, len(s.Pooled))
		for i, v := range s.Pooled {
			got[i] = v / float32(s.PoolN)
		}
		if e := maxRelErr(got, want); e > 1e-4 || s.PoolN != map[int]int{llama.PoolMean: len(tokens), llama.PoolLast: 1}[pool] {
			t.Errorf("pool %d: relative error %g against the reference (%d positions)", pool, e, s.PoolN)
		}
	}
}

// refTies counts the activations the reference found within 1e-4 of
// halfway between two int8 levels (n) and says which of them to round the
// other way (bit i of flip for the i-th): see referenceMatch.
var refTies struct {
	n    int
	flip uint64
}

// referenceMatch is how far got is from the reference's logits after
// tokens, of their scale. An int8 activation within float32 error of
// halfway between two levels rounds one way in the engine and perhaps the
// other in the reference (a few in a million values; one moves a logit by
// up to 1 % of their scale): where the reference met such near-ties, each
// way of resolving them (up to 2^8) is tried and the closest taken.
func referenceMatch(m *llama.Model, tokens []int, got []float32) float64 {
	refTies.n, refTies.flip = 0, 0
	e := maxRelErr(got, reference(m, tokens))
	ties := min(refTies.n, 8)
	for mask := uint64(1); mask < 1<<ties && e > 1e-4; mask++ {
		refTies.n, refTies.flip = 0, mask
		e = min(e, maxRelErr(got, reference(m, tokens)))
	}
	refTies.n, refTies.flip = 0, 0
	return e
}

// q8RoundTrip is x quantised to Q8_0 blocks (scale max|x|/127, round half
// away from zero) and back.
func q8RoundTrip(x []float64) []float64 {
	out := make([]float64, len(x))
	for k := 0; k < len(x); k += gguf.Q8Block {
		// In float32 as the engine computes it (scale, its reciprocal, the
		// product), so that a value exactly between two levels (values
		// made from a quantised embedding can be) rounds the same way.
		var amax float32
		for _, v := range x[k : k+gguf.Q8Block] {
			amax = max(amax, float32(math.Abs(v)))
		}
		d := amax / 127
		if d == 0 {
			continue
		}
		inv := 1 / d
		for i := k; i < k+gguf.Q8Block; i++ {
			f := float32(x[i]) * inv
			a := math.Abs(float64(f))
			q := math.Floor(a + 0.5) // half away from zero
			if math.Abs(a-math.Floor(a)-0.5) < 1e-4 {
				// A near-tie: the engine's float32 value may be on the
				// other side; refTies.flip picks the side per tie.
				if refTies.n < 64 && refTies.flip>>refTies.n&1 == 1 {
					if q > a {
						q--
					} else {
						q++
					}
				}
				refTies.n++
			}
			out[i] = math.Copysign(q, float64(f)) * float64(d)
		}
	}
	return out
}

func maxRelErr(got []float32, want []float64) float64 {
	var scale, worst float64
	for _, w := range want {
		scale = math.Max(scale, math.Abs(w))
	}
	for i := range want {
		worst = math.Max(worst, math.Abs(float64(got[i])-want[i])/scale)
	}
	return worst
}

// TestAgainstReference: incremental decode with the KV cache gives the
// logits of a float64 full recomputation, for F32, F16 and Q8_0 weights,
// llama (adjacent-pair RoPE, untied) and qwen2 (NeoX RoPE, tied, GQA).
//
// With int8 activations, referenceMatch resolves the reference's
// near-ties (values halfway between two levels) the way the engine did.
func TestAgainstReference(t *testing.T) {
	tokens := []int{1, 17, 5, 60, 33, 2, 9, 41}
	for _, tc := range []struct {
		name   string
		cfg    tiny.Config
		recipe string // quantised by Quantize
	}{
		{"llama f32", tiny.Config{Vocab: 64, Embd: 64, Layers: 2, Heads: 4, FF: 96, Context: 32, Seed: 1}, ""},
		{"llama q8_0", tiny.Config{Vocab: 64, Embd: 64, Layers: 2, Heads: 4, FF: 96, Context: 32, Type: gguf.Q8_0, Seed: 2}, ""},
		{"llama f16", tiny.Config{Vocab: 64, Embd: 64, Layers: 2, Heads: 4, FF: 96, Context: 32, Type: gguf.F16, Seed: 3}, ""},
		{"qwen2 gqa tied", tiny.Config{Arch: "qwen2", Vocab: 64, Embd: 64, Layers: 2, Heads: 4, KVHeads: 2, FF: 64, Context: 32, Tied: true, Seed: 4}, ""},
		{"qwen2 q8_0", tiny.Config{Arch: "qwen2", Vocab: 64, Embd: 64, Layers: 2, Heads: 4, KVHeads: 2, FF: 64, Context: 32, Tied: true, Type: gguf.Q8_0, Seed: 6}, ""},
		// Mistral: the Llama layout under its own architecture name.
		{"mistral gqa", tiny.Config{Arch: "mistral", Vocab: 64, Embd: 64, Layers: 2, Heads: 4, KVHeads: 1, FF: 96, Context: 32, Seed: 9}, ""},
		// Qwen3: QK-norm, and heads wider than embedding / heads (as
		// Qwen3-0.6B: 16 heads of 128 over an embedding of 1024).
		{"qwen3 wide heads", tiny.Config{Arch: "qwen3", Vocab: 64, Embd: 64, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 32, FF: 96, Context: 32, Seed: 7}, ""},
		{"qwen3 q8_0", tiny.Config{Arch: "qwen3", Vocab: 64, Embd: 64, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 32, FF: 96, Context: 32, Tied: true, Type: gguf.Q8_0, Seed: 8}, ""},
		// Q4_K_M files made by Quantize (Q4_K with Q6_K output, attn_v and
		// ffn_down in the last layer), every architecture.
		{"llama q4_k_m", tiny.Config{Vocab: 64, Embd: 256, Layers: 2, Heads: 4, FF: 512, Context: 32, Seed: 10}, "Q4_K_M"},
		{"mistral q4_k_m", tiny.Config{Arch: "mistral", Vocab: 64, Embd: 256, Layers: 2, Heads: 4, KVHeads: 1, FF: 256, Context: 32, Seed: 17}, "Q4_K_M"},
		{"qwen2 q4_k_m", tiny.Config{Arch: "qwen2", Vocab: 64, Embd: 256, Layers: 2, Heads: 4, KVHeads: 2, FF: 256, Context: 32, Tied: true, Seed: 12}, "Q4_K_M"},
		{"qwen3 q4_k_m", tiny.Config{Arch: "qwen3", Vocab: 64, Embd: 256, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 64, FF: 256, Context: 32, Seed: 13}, "Q4_K_M"},
		{"llama q4_0", tiny.Config{Vocab: 64, Embd: 256, Layers: 2, Heads: 4, FF: 512, Context: 32, Seed: 16}, "Q4_0"},
		// GLM-4: glm4 (separate biased Q, K, V; post-norms) and chatglm
		// (fused biased QKV); both with a fused gate/up and half-rotated
		// heads.
		{"glm4 gqa", tiny.Config{Arch: "glm4", Vocab: 64, Embd: 64, Layers: 2, Heads: 4, KVHeads: 2, FF: 96, Context: 32, Seed: 18}, ""},
		{"chatglm gqa", tiny.Config{Arch: "chatglm", Vocab: 64, Embd: 64, Layers: 2, Heads: 4, KVHeads: 2, FF: 96, Context: 32, Seed: 19}, ""},
		{"glm4 q4_k_m", tiny.Config{Arch: "glm4", Vocab: 64, Embd: 256, Layers: 2, Heads: 4, KVHeads: 2, FF: 256, Context: 32, Seed: 20}, "Q4_K_M"},
		{"chatglm q4_k_m", tiny.Config{Arch: "chatglm", Vocab: 64, Embd: 256, Layers: 2, Heads: 4, KVHeads: 2, FF: 256, Context: 32, Seed: 24}, "Q4_K_M"},
		{"llama q5_k", tiny.Config{Vocab: 64, Embd: 256, Layers: 2, Heads: 4, FF: 512, Context: 32, Type: gguf.Q5_K, Seed: 15}, ""},
	} {
		for _, kernels := range llama.Kernels() {
			t.Run(tc.name+" "+kernels, func(t *testing.T) {
				defer llama.UseKernels(kernels)()
				m := buildQuantized(t, tc.cfg, tc.recipe)
				s := m.NewState()
				for i, tok := range tokens {
					if err := m.Forward(s, tok); err != nil {
						t.Fatal(err)
					}
					if e := referenceMatch(m, tokens[:i+1], s.Logits); e > 1e-4 {
						t.Fatalf("position %d: logits differ from the reference by %.2g of their scale", i, e)
					}
				}
			})
		}
	}
}

func TestLoadErrors(t *testing.T) {
	var b bytes.Buffer
	tiny.Write(&b, tiny.Config{Arch: "gpt2", Vocab: 8, Embd: 8, Layers: 1, Heads: 2, FF: 8, Context: 8})
	f, err := gguf.Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := llama.Load(f); err == nil || !strings.Contains(err.Error(), `architecture "gpt2" is not supported`) {
		t.Fatalf("%v", err)
	}
	b.Reset()
	tiny.Write(&b, tiny.Config{Vocab: 8, Embd: 8, Layers: 1, Heads: 3, FF: 8, Context: 8})
	f, _ = gguf.Parse(b.Bytes())
	if _, err := llama.Load(f); err == nil || !strings.Contains(err.Error(), "do not divide") {
		t.Fatalf("%v", err)
	}
	// A file the engine would compute wrong is refused: Qwen2 without its
	// attention biases, any model with tensors the engine does not
	// implement (Qwen3's QK-norm, a layer beyond the block count), RoPE
	// factors that are not positive.
	for _, tc := range []struct {
		cfg  tiny.Config
		want string
	}{
		{tiny.Config{Arch: "qwen2", Vocab: 8, Embd: 8, Layers: 1, Heads: 2, FF: 8, Context: 8, NoBias: true}, "tensor blk.0.attn_q.bias is missing"},
		{tiny.Config{Vocab: 8, Embd: 8, Layers: 1, Heads: 2, FF: 8, Context: 8,
			Extra: []gguf.Tensor{{Name: "blk.0.attn_q_norm.weight", Dims: []uint64{4}, Type: gguf.F32, Data: make([]byte, 16)}}}, "blk.0.attn_q_norm.weight"},
		{tiny.Config{Vocab: 8, Embd: 8, Layers: 1, Heads: 2, FF: 8, Context: 8,
			Extra: []gguf.Tensor{{Name: "rope_freqs.weight", Dims: []uint64{2}, Type: gguf.F32, Data: make([]byte, 8)}}}, "rope_freqs.weight[0] = 0"},
		{tiny.Config{Vocab: 8, Embd: 8, Layers: 1, Heads: 2, FF: 8, Context: 8,
			Extra: []gguf.Tensor{{Name: "blk.1.attn_norm.weight", Dims: []uint64{8}, Type: gguf.F32, Data: make([]byte, 32)}}}, "blk.1.attn_norm.weight"},
	} {
		b.Reset()
		if err := tiny.Write(&b, tc.cfg); err != nil {
			t.Fatal(err)
		}
		f, err := gguf.Parse(b.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := llama.Load(f); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
	m := build(t, tiny.Config{Vocab: 8, Embd: 8, Layers: 1, Heads: 2, FF: 8, Context: 2})
	s := m.NewState()
	if err := m.Forward(s, 8); err == nil {
		t.Fatal("token outside the vocabulary accepted")
	}
	m.Forward(s, 1)
	m.Forward(s, 1)
	if err := m.Forward(s, 1); err == nil || !strings.Contains(err.Error(), "context length") {
		t.Fatalf("%v", err)
	}
}

// TestF16: every half-precision value survives a round trip through
// float32, and rounding is to nearest.
func TestF16(t *testing.T) {
	for h := range 1 << 16 {
		f := llama.F16(uint16(h))
		if math.IsNaN(float64(f)) {
			continue
		}
		if back := llama.ToF16(f); back != uint16(h) {
			t.Fatalf("%#04x -> %v -> %#04x", h, f, back)
		}
	}
	if got := llama.F16(llama.ToF16(1.0009765625 + 0.0004)); got != 1.0009765625 {
		t.Fatalf("rounding: %v", got)
	}
}

// TestQuantizeQ8: symmetric int8 blocks keep every value within half a
// step of the block's scale.
func TestQuantizeQ8(t *testing.T) {
	xs := make([]float32, 64)
	for i := range xs {
		xs[i] = float32(math.Sin(float64(i))) * float32(i%7)
	}
	m := llama.Matrix{Rows: 1, Cols: 64, Type: gguf.Q8_0, Data: llama.QuantizeQ8(xs)}
	out := make([]float32, 64)
	m.Row(0, out)
	for k := 0; k < 64; k += 32 {
		var amax float64
		for _, v := range xs[k : k+32] {
			amax = math.Max(amax, math.Abs(float64(v)))
		}
		for i := k; i < k+32; i++ {
			if math.Abs(float64(out[i]-xs[i])) > amax/127*0.51+1e-3 {
				t.Fatalf("value %d: %v -> %v", i, xs[i], out[i])
			}
		}
	}
}

// TestBatchEqualsAlone: a sequence's logits are the same alone and inside
// a batch of 8 sequences at different positions.
func TestBatchEqualsAlone(t *testing.T) {
	m := build(t, tiny.Config{Vocab: 64, Embd: 64, Layers: 2, Heads: 4, KVHeads: 2, FF: 512, Context: 32, Type: gguf.Q8_0, Seed: 5}) // FF large enough for the multi-core path
	prompts := make([][]int, 8)
	for i := range prompts {
		for j := range 3 + i {
			prompts[i] = append(prompts[i], (i*7+j*13)%64)
		}
	}
	alone := make([][][]float32, len(prompts))
	for i, p := range prompts {
		s := m.NewState()
		for _, tok := range p {
			m.Forward(s, tok)
			alone[i] = append(alone[i], append([]float32(nil), s.Logits...))
		}
	}
	states := make([]*llama.State, len(prompts))
	for i := range states {
		states[i] = m.NewState()
	}
	for step := 0; step < 3+len(prompts)-1; step++ {
		var in []*llama.State
		var toks []int
		var idx []int
		for i, p := range prompts {
			if step < len(p) {
				in, toks, idx = append(in, states[i]), append(toks, p[step]), append(idx, i)
			}
		}
		if err := m.ForwardBatch(in, toks); err != nil {
			t.Fatal(err)
		}
		for _, i := range idx {
			for v, x := range states[i].Logits {
				if x != alone[i][step][v] {
					t.Fatalf("sequence %d step %d: logit %d is %v in the batch, %v alone", i, step, v, x, alone[i][step][v])
				}
			}
		}
	}
}

// TestQuantize: an F32 model quantised by each recipe gets the types the
// recipe gives each tensor (llama.cpp's Q4_K_M mix: Q6_K output, and
// attn_v/ffn_down in the last eighth of the layers), shrinks as the types
// say, and its logits stay close to the original's.
func TestQuantize(t *testing.T) {
	var b bytes.Buffer
	cfg := tiny.Config{Vocab: 64, Embd: 256, Layers: 2, Heads: 4, FF: 512, Context: 32, Seed: 6}
	if err := tiny.Write(&b, cfg); err != nil {
		t.Fatal(err)
	}
	f, _ := gguf.Parse(b.Bytes())
	for _, tc := range []struct {
		recipe   string
		types    map[string]gguf.TensorType
		minRatio float64 // F32 size / quantised size
		// logits, of their scale: a random model passes its weights' noise
		// straight to its logits, 4-bit steps are 16 times 8-bit ones
		// (the quantisers' own error is TestQuantizeError's)
		tol float64
	}{
		{"Q8_0", map[string]gguf.TensorType{"blk.0.ffn_up.weight": gguf.Q8_0, "output.weight": gguf.Q8_0}, 3.7, 0.03},
		{"Q4_0", map[string]gguf.TensorType{"blk.0.ffn_up.weight": gguf.Q4_0, "output.weight": gguf.Q6_K}, 6.5, 0.4},
		{"Q4_K_M", map[string]gguf.TensorType{
			"blk.0.ffn_up.weight": gguf.Q4_K, "blk.0.attn_q.weight": gguf.Q4_K, "token_embd.weight": gguf.Q4_K,
			"blk.0.attn_v.weight": gguf.Q4_K, "blk.1.attn_v.weight": gguf.Q6_K,
			"blk.0.ffn_down.weight": gguf.Q4_K, "blk.1.ffn_down.weight": gguf.Q6_K,
			"output.weight": gguf.Q6_K, "blk.0.attn_norm.weight": gguf.F32,
		}, 6, 0.4},
	} {
		t.Run(tc.recipe, func(t *testing.T) {
			var q bytes.Buffer
			if err := llama.Quantize(f, &q, tc.recipe); err != nil {
				t.Fatal(err)
			}
			qf, err := gguf.Parse(q.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			for name, want := range tc.types {
				if ti, _ := qf.Tensor(name); ti.Type != want {
					t.Errorf("%s is %s, want %s", name, ti.Type, want)
				}
			}
			if ratio := float64(b.Len()) / float64(q.Len()); ratio < tc.minRatio {
				t.Errorf("only %.2f× smaller", ratio)
			}
			orig, _ := llama.Load(f)
			quant, err := llama.Load(qf)
			if err != nil {
				t.Fatal(err)
			}
			so, sq := orig.NewState(), quant.NewState()
			for _, tok := range []int{3, 14, 15, 9, 26} {
				orig.Forward(so, tok)
				quant.Forward(sq, tok)
			}
			want := make([]float64, len(so.Logits))
			for i, v := range so.Logits {
				want[i] = float64(v)
			}
			e := maxRelErr(sq.Logits, want)
			t.Logf("%s: %.2f× smaller, logits within %.3f of their scale", tc.recipe, float64(b.Len())/float64(q.Len()), e)
			if e > tc.tol {
				t.Fatalf("logits differ by %.3f of their scale", e)
			}
		})
	}
	var q bytes.Buffer
	if err := llama.Quantize(f, &q, "Q3_K_S"); err == nil || !strings.Contains(err.Error(), "Q4_K_M") {
		t.Fatalf("unknown recipe: %v", err)
	}
}

// TestChunkEqualsSteps: a prompt fed as one chunk (all positions in one
// pass) leaves the same cache and logits as feeding it token by token.
func TestChunkEqualsSteps(t *testing.T) {
	m := build(t, tiny.Config{Vocab: 64, Embd: 64, Layers: 2, Heads: 4, KVHeads: 2, FF: 96, Context: 64, Type: gguf.Q8_0, Seed: 7})
	prompt := []int{5, 9, 13, 2, 60, 33, 17, 1, 8, 44, 21, 3, 7, 19, 30, 11, 12, 50}
	a, b := m.NewState(), m.NewState()
	for _, tok := range prompt {
		m.Forward(a, tok)
	}
	other := m.NewState() // a second sequence in the same pass
	if err := m.Run([]llama.Feed{{S: b, Tokens: prompt}, {S: other, Tokens: prompt[:3]}}); err != nil {
		t.Fatal(err)
	}
	for i := range a.Logits {
		if a.Logits[i] != b.Logits[i] {
			t.Fatalf("logit %d: %v token by token, %v as a chunk", i, a.Logits[i], b.Logits[i])
		}
	}
	m.Forward(a, 4)
	m.Forward(b, 4)
	for i := range a.Logits {
		if a.Logits[i] != b.Logits[i] {
			t.Fatalf("after the chunk, logit %d: %v vs %v", i, a.Logits[i], b.Logits[i])
		}
	}
}

// TestRoPEScaling: Llama 3.1's per-frequency factors (rope_freqs.weight)
// and linear scaling (rope.scaling.type linear) against the float64
// reference given the same scaling from the test's own inputs.
func TestRoPEScaling(t *testing.T) {
	cfg := tiny.Config{Vocab: 64, Embd: 64, Layers: 2, Heads: 4, FF: 96, Context: 32, Seed: 9}
	freqs := make([]float32, cfg.Embd/cfg.Heads/2)
	for i := range freqs {
		freqs[i] = 1 + float32(i)*0.75 // the low frequencies stretched, as Llama 3.1's are
	}
	data := make([]byte, 4*len(freqs))
	for i, v := range freqs {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
	}
	tokens := []int{3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3}
	yarn := func(extra ...gguf.KV) []gguf.KV {
		return append([]gguf.KV{{Key: "llama.rope.scaling.type", Value: "yarn"}, {Key: "llama.rope.scaling.factor", Value: float32(4)},
			{Key: "llama.rope.scaling.original_context_length", Value: uint32(4096)}}, extra...)
	}
	for _, tc := range []struct {
		name  string
		meta  []gguf.KV
		extra []gguf.Tensor
		sc    ropeScaling
	}{
		{"rope_freqs", nil, []gguf.Tensor{{Name: "rope_freqs.weight", Dims: []uint64{uint64(len(freqs))}, Type: gguf.F32, Data: data}}, ropeScaling{freqs: freqs}},
		{"linear 4", []gguf.KV{{Key: "llama.rope.scaling.type", Value: "linear"}, {Key: "llama.rope.scaling.factor", Value: float32(4)}}, nil, ropeScaling{linear: 4}},
		// YaRN ×4 from an original 4096: the ramp falls across the head's
		// frequencies (dimensions 2 to 6 of 8 with these heads of 16).
		{"yarn 4", yarn(), nil, ropeScaling{yarn: &yarnConfig{factor: 4, orig: 4096, betaFast: 32, betaSlow: 1}}},
		{"yarn 4 betas", yarn(gguf.KV{Key: "llama.rope.scaling.yarn_beta_fast", Value: float32(16)}, gguf.KV{Key: "llama.rope.scaling.yarn_beta_slow", Value: float32(2)}),
			nil, ropeScaling{yarn: &yarnConfig{factor: 4, orig: 4096, betaFast: 16, betaSlow: 2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			c.Extra = tc.extra
			m := buildWith(t, c, tc.meta)
			s := m.NewState()
			for i, tok := range tokens {
				if err := m.Forward(s, tok); err != nil {
					t.Fatal(err)
				}
				if e := maxRelErr(s.Logits, referenceScaled(m, tokens[:i+1], tc.sc)); e > 1e-4 {
					t.Fatalf("position %d: logits differ from the scaled reference by %.2g", i, e)
				}
				// and the scaling matters: unscaled, they differ.
				if i == len(tokens)-1 && maxRelErr(s.Logits, reference(m, tokens)) < 1e-3 {
					t.Fatal("the scaling made no difference")
				}
			}
		})
	}
	for _, bad := range []struct {
		meta []gguf.KV
		want string
	}{
		{[]gguf.KV{{Key: "llama.rope.scaling.type", Value: "longrope"}}, "only linear and YaRN RoPE scaling"},
		{yarn(gguf.KV{Key: "llama.rope.scaling.yarn_log_multiplier", Value: float32(0.1)}), "yarn_log_multiplier = 0.1: only YaRN's defaults"},
		{[]gguf.KV{{Key: "llama.rope.scaling.type", Value: "yarn"}, {Key: "llama.rope.scaling.factor", Value: float32(4)}}, "original_context_length is missing"},
	} {
		var b bytes.Buffer
		tiny.WriteWith(&b, cfg, bad.meta)
		f, _ := gguf.Parse(b.Bytes())
		if _, err := llama.Load(f); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%v: %v, want %q", bad.meta, err, bad.want)
		}
	}
}

// A fork shares the prompt's KV blocks, copies the one both write into,
// and each continuation computes what it would alone.
func TestForkSharesBlocks(t *testing.T) {
	m := build(t, tiny.Config{Vocab: 64, Embd: 64, Layers: 2, Heads: 4, KVHeads: 2, FF: 96, Context: 128, Type: gguf.Q8_0, Seed: 3})
	prompt := []int{3, 9, 4, 22, 17, 5, 8, 30, 2, 11, 40, 1, 6, 7, 13, 21, 19, 44, 2, 9} // 20: one full block of 16, one partial
	pool := m.NewPool(128, 16)
	a, b := m.NewStateIn(pool, 128), m.NewStateIn(pool, 128)
	if err := m.Run([]llama.Feed{{S: a, Tokens: prompt[:19]}}); err != nil {
		t.Fatal(err)
	}
	free := pool.Free()
	if err := b.Fork(a); err != nil {
		t.Fatal(err)
	}
	if pool.Free() != free || b.Pos != 19 {
		t.Fatalf("the fork took blocks (%d free, was %d) or lost its position %d", pool.Free(), free, b.Pos)
	}
	if err := m.Run([]llama.Feed{{S: a, Tokens: prompt[19:]}, {S: b, Tokens: prompt[19:]}}); err != nil {
		t.Fatal(err)
	}
	if pool.Free() != free-1 {
		t.Fatalf("%d free blocks after both wrote the shared partial block, want %d (one copied)", pool.Free(), free-1)
	}
	for _, cont := range [][2][]int{{{5, 6, 7}, {40, 41, 42}}} {
		for i, s := range []*llama.State{a, b} {
			alone := m.NewStateCap(128)
			if err := m.Run([]llama.Feed{{S: alone, Tokens: append(append([]int(nil), prompt...), cont[i]...)}}); err != nil {
				t.Fatal(err)
			}
			if err := m.Run([]llama.Feed{{S: s, Tokens: cont[i]}}); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(s.Logits, alone.Logits) {
				t.Fatalf("continuation %d differs from the same tokens alone", i)
			}
		}
	}
	a.Reset()
	b.Reset()
	if pool.Free() != pool.Tokens()/16 {
		t.Fatalf("%d of %d blocks free after both ended", pool.Free(), pool.Tokens()/16)
	}
}
