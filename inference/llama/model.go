// Package llama is the native engine's transformer for the Llama family
// and its relatives (llama, mistral, qwen2 with attention biases, qwen3
// with QK-norms, GLM-4 as glm4 and chatglm: fused projections, partial
// RoPE, post-norms): RMSNorm, RoPE, grouped-query attention and a SwiGLU
// MLP, over weights read in place from a GGUF file (F32, F16, BF16, Q8_0,
// Q4_0, Q4_K, Q5_K, Q6_K). This is the forward pass and its batching.
package llama

import (
	"errors"
	"fmt"
	"math"

	"github.com/open-autoglm/autoglm/inference/gguf"
)

// Config is the architecture, from the GGUF metadata.
type Config struct {
	Arch          string
	Vocab         int
	Embd          int
	Layers        int
	Heads         int
	KVHeads       int
	FF            int
	ContextLength int
	RMSEps        float32
	RopeBase      float32
	// NeoX rotates the two halves of each head (qwen2, qwen3), not
	// adjacent pairs (llama).
	NeoX bool
	// HeadSize is the per-head dimension where it is not Embd / Heads
	// (qwen3's attention.key_length); 0 otherwise.
	HeadSize int
	// RopeDims is how many of each head's dimensions RoPE rotates (the
	// first ones; GLM-4 rotates half, rope.dimension_count); 0 for all.
	RopeDims int
	// PostNorms: each block's attention and MLP outputs are RMS-normalised
	// before their residual additions (GLM-4's post_attention_norm and
	// post_ffw_norm).
	PostNorms bool
}

// RotaryDims is how many of each head's dimensions RoPE rotates.
func (c Config) RotaryDims() int {
	if c.RopeDims > 0 {
		return c.RopeDims
	}
	return c.HeadDim()
}

// HeadDim is the per-head dimension: HeadSize, or Embd / Heads.
func (c Config) HeadDim() int {
	if c.HeadSize > 0 {
		return c.HeadSize
	}
	return c.Embd / c.Heads
}

// QDim is the width of the attention's queries: Heads × HeadDim.
func (c Config) QDim() int { return c.Heads * c.HeadDim() }

type layer struct {
	attnNorm, ffnNorm []float32
	// postAttnNorm, postFFNNorm normalise the attention and MLP outputs
	// (GLM-4; nil otherwise).
	postAttnNorm, postFFNNorm []float32
	wq, wk, wv, wo            Matrix
	// bq, bk, bv are the Q, K and V projections' biases (qwen2 has them;
	// nil where a model has none).
	bq, bk, bv []float32
	// qNorm, kNorm are RMSNorm weights applied to each head of the
	// queries and keys before RoPE (qwen3's QK-norm; nil otherwise).
	qNorm, kNorm   []float32
	gate, up, down Matrix
}

// Model is a loaded model.
type Model struct {
	Config
	embd    Matrix
	layers  []layer
	norm    []float32
	output  Matrix // token_embd when tied
	ropeCos []float32
	ropeSin []float32
}

func meta[T any](f *gguf.File, key string, errs *[]error) T {
	var zero T
	v, ok := f.Get(key)
	if !ok {
		*errs = append(*errs, fmt.Errorf("metadata %s is missing", key))
		return zero
	}
	t, ok := v.(T)
	if !ok {
		*errs = append(*errs, fmt.Errorf("metadata %s is a %T, want %T", key, v, zero))
	}
	return t
}

func positive(key string, v uint32, limit uint32, errs *[]error) int {
	if v == 0 || v > limit {
		*errs = append(*errs, fmt.Errorf("metadata %s = %d is out of range (1..%d)", key, v, limit))
	}
	return int(v)
}

// Load reads the architecture and weights of f (which must outlive the model).
func Load(f *gguf.File) (*Model, error) {
	var errs []error
	arch := meta[string](f, "general.architecture", &errs)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	switch arch {
	case "llama", "mistral", "qwen2", "qwen3", "glm4", "chatglm":
	default:
		return nil, fmt.Errorf("architecture %q is not supported (llama, mistral, qwen2, qwen3, glm4, chatglm)", arch)
	}
	glm := arch == "glm4" || arch == "chatglm"
	k := func(s string) string { return arch + "." + s }
	c := Config{Arch: arch, NeoX: arch == "qwen2" || arch == "qwen3", RopeBase: 10000, PostNorms: arch == "glm4"}
	c.Embd = positive(k("embedding_length"), meta[uint32](f, k("embedding_length"), &errs), 1<<16, &errs)
	c.Layers = positive(k("block_count"), meta[uint32](f, k("block_count"), &errs), 1024, &errs)
	c.FF = positive(k("feed_forward_length"), meta[uint32](f, k("feed_forward_length"), &errs), 1<<18, &errs)
	c.Heads = positive(k("attention.head_count"), meta[uint32](f, k("attention.head_count"), &errs), 1024, &errs)
	c.KVHeads = c.Heads
	if _, ok := f.Get(k("attention.head_count_kv")); ok {
		c.KVHeads = positive(k("attention.head_count_kv"), meta[uint32](f, k("attention.head_count_kv"), &errs), 1024, &errs)
	}
	c.ContextLength = positive(k("context_length"), meta[uint32](f, k("context_length"), &errs), 1<<22, &errs)
	if _, ok := f.Get(k("attention.key_length")); ok {
		c.HeadSize = positive(k("attention.key_length"), meta[uint32](f, k("attention.key_length"), &errs), 1<<12, &errs)
	}
	if _, ok := f.Get(k("attention.value_length")); ok {
		if v := positive(k("attention.value_length"), meta[uint32](f, k("attention.value_length"), &errs), 1<<12, &errs); v != c.HeadDim() {
			errs = append(errs, fmt.Errorf("metadata %s = %d differs from the key length %d: not supported", k("attention.value_length"), v, c.HeadDim()))
		}
	}
	if _, ok := f.Get(k("rope.dimension_count")); ok {
		c.RopeDims = positive(k("rope.dimension_count"), meta[uint32](f, k("rope.dimension_count"), &errs), 1<<12, &errs)
	}
	c.RMSEps = meta[float32](f, k("attention.layer_norm_rms_epsilon"), &errs)
	if _, ok := f.Get(k("rope.freq_base")); ok {
		c.RopeBase = meta[float32](f, k("rope.freq_base"), &errs)
	}
	// RoPE scaling: linear (positions divided by the factor) or YaRN;
	// Llama 3.1's per-frequency factors come as the rope_freqs.weight
	// tensor below. Other kinds (LongRoPE) are refused rather than run
	// wrong.
	ropeLinear := 1.0
	var yarn *yarnScaling
	factor := func() float64 {
		v := float64(meta[float32](f, k("rope.scaling.factor"), &errs))
		if !(v >= 1) || math.IsInf(v, 0) {
			errs = append(errs, fmt.Errorf("metadata %s = %v: want a factor ≥ 1", k("rope.scaling.factor"), v))
		}
		return v
	}
	if v, ok := f.Get(k("rope.scaling.type")); ok {
		switch v {
		case "none":
		case "linear":
			ropeLinear = factor()
		case "yarn":
			yarn = &yarnScaling{factor: factor(), betaFast: 32, betaSlow: 1}
			yarn.origCtx = float64(positive(k("rope.scaling.original_context_length"), meta[uint32](f, k("rope.scaling.original_context_length"), &errs), 1<<24, &errs))
			for key, dst := range map[string]*float64{"yarn_beta_fast": &yarn.betaFast, "yarn_beta_slow": &yarn.betaSlow} {
				if _, ok := f.Get(k("rope.scaling." + key)); ok {
					*dst = float64(meta[float32](f, k("rope.scaling."+key), &errs))
				}
			}
			// Variants llama.cpp reads for other models (DeepSeek's log
			// multiplier, a changed extrapolation or attention factor):
			// refused rather than run as plain YaRN.
			for key, def := range map[string]float32{"yarn_ext_factor": 1, "yarn_attn_factor": 1, "yarn_log_multiplier": 0} {
				if v, ok := f.Get(k("rope.scaling." + key)); ok && v != any(def) {
					errs = append(errs, fmt.Errorf("metadata %s = %v: only YaRN's defaults are implemented", k("rope.scaling."+key), v))
				}
			}
		default:
			errs = append(errs, fmt.Errorf("metadata %s = %v: only linear and YaRN RoPE scaling (and Llama 3.1's rope_freqs) are implemented", k("rope.scaling.type"), v))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if (c.HeadSize == 0 && c.Embd%c.Heads != 0) || c.Heads%c.KVHeads != 0 || c.HeadDim()%2 != 0 {
		return nil, fmt.Errorf("heads: embedding %d, %d heads, %d kv heads do not divide", c.Embd, c.Heads, c.KVHeads)
	}
	if c.RopeDims > c.HeadDim() || c.RopeDims%2 != 0 {
		return nil, fmt.Errorf("metadata %s = %d: want an even number up to the head dimension %d", k("rope.dimension_count"), c.RopeDims, c.HeadDim())
	}
	if c.RopeDims == c.HeadDim() {
		c.RopeDims = 0
	}
	if !(c.RMSEps > 0 && c.RMSEps < 1) || !(c.RopeBase > 1) || math.IsInf(float64(c.RopeBase), 0) {
		return nil, fmt.Errorf("rms epsilon %v or rope base %v out of range", c.RMSEps, c.RopeBase)
	}
	tok, ok := f.Tensor("token_embd.weight")
	if !ok || len(tok.Dims) != 2 {
		return nil, errors.New("tensor token_embd.weight is missing or not 2-D")
	}
	c.Vocab = int(tok.Dims[1])
	m := &Model{Config: c}
	var err error
	kvDim := c.KVHeads * c.HeadDim()
	read := map[string]bool{} // the tensors Load takes
	get := func(name string, rows, cols int) Matrix {
		read[name] = true
		mm, e := matrix(f, name, rows, cols)
		if e != nil {
			errs = append(errs, e)
		}
		return mm
	}
	vec := func(name string, n int) []float32 {
		read[name] = true
		v, e := vector(f, name, n)
		if e != nil {
			errs = append(errs, e)
		}
		return v
	}
	// bias is a projection's bias: required by qwen2 (its attention has
	// them), read where another architecture's file has one.
	bias := func(name string, n int) []float32 {
		if _, ok := f.Tensor(name); !ok && arch != "qwen2" {
			return nil
		}
		return vec(name, n)
	}
	has := func(name string) bool { _, ok := f.Tensor(name); return ok }
	m.embd = get("token_embd.weight", c.Vocab, c.Embd)
	qDim := c.QDim()
	for i := range c.Layers {
		p := fmt.Sprintf("blk.%d.", i)
		L := layer{
			attnNorm: vec(p+"attn_norm.weight", c.Embd), ffnNorm: vec(p+"ffn_norm.weight", c.Embd),
			wo: get(p+"attn_output.weight", c.Embd, qDim), down: get(p+"ffn_down.weight", c.Embd, c.FF),
		}
		if glm && has(p+"attn_qkv.weight") {
			// GLM's fused projection: the rows of Q, then K, then V (and
			// the bias likewise), used in place as three matrices.
			qkv := get(p+"attn_qkv.weight", qDim+2*kvDim, c.Embd)
			L.wq, L.wk, L.wv = qkv.rows(0, qDim), qkv.rows(qDim, kvDim), qkv.rows(qDim+kvDim, kvDim)
			if b := bias(p+"attn_qkv.bias", qDim+2*kvDim); b != nil {
				L.bq, L.bk, L.bv = b[:qDim], b[qDim:qDim+kvDim], b[qDim+kvDim:]
			}
		} else {
			L.wq, L.wk, L.wv = get(p+"attn_q.weight", qDim, c.Embd), get(p+"attn_k.weight", kvDim, c.Embd), get(p+"attn_v.weight", kvDim, c.Embd)
			L.bq, L.bk, L.bv = bias(p+"attn_q.bias", qDim), bias(p+"attn_k.bias", kvDim), bias(p+"attn_v.bias", kvDim)
		}
		if glm {
			// GLM's fused MLP input: gate rows, then up rows.
			up := get(p+"ffn_up.weight", 2*c.FF, c.Embd)
			L.gate, L.up = up.rows(0, c.FF), up.rows(c.FF, c.FF)
		} else {
			L.gate, L.up = get(p+"ffn_gate.weight", c.FF, c.Embd), get(p+"ffn_up.weight", c.FF, c.Embd)
		}
		if arch == "qwen3" { // QK-norm: required, one weight per head dimension
			L.qNorm, L.kNorm = vec(p+"attn_q_norm.weight", c.HeadDim()), vec(p+"attn_k_norm.weight", c.HeadDim())
		}
		if c.PostNorms {
			L.postAttnNorm, L.postFFNNorm = vec(p+"post_attention_norm.weight", c.Embd), vec(p+"post_ffw_norm.weight", c.Embd)
		}
		m.layers = append(m.layers, L)
	}
	m.norm = vec("output_norm.weight", c.Embd)
	var freqs []float32 // Llama 3.1+: each frequency divided by its factor
	if _, ok := f.Tensor("rope_freqs.weight"); ok {
		freqs = vec("rope_freqs.weight", c.RotaryDims()/2)
		for i, v := range freqs {
			if !(v > 0) || math.IsInf(float64(v), 0) {
				errs = append(errs, fmt.Errorf("tensor rope_freqs.weight[%d] = %v: want a positive factor", i, v))
				break
			}
		}
	}
	if _, ok := f.Tensor("output.weight"); ok {
		m.output = get("output.weight", c.Vocab, c.Embd)
	} else {
		m.output = m.embd // tied embeddings
	}
	if err = errors.Join(errs...); err != nil {
		return nil, err
	}
	// A tensor this engine does not read is part of the model it would
	// compute wrong (a bias, RoPE frequency factors, another norm):
	// refuse the file rather than run it silently wrong.
	var unused []string
	for _, t := range f.Tensors {
		if !read[t.Name] {
			unused = append(unused, t.Name)
		}
	}
	if len(unused) > 0 {
		if len(unused) > 5 {
			unused = append(unused[:5], fmt.Sprintf("and %d more", len(unused)-5))
		}
		return nil, fmt.Errorf("the %s model has tensors this engine does not implement, so it would compute it wrong: %v", arch, unused)
	}
	rd := c.RotaryDims()
	half := rd / 2
	// Each frequency's angle per position, and the magnitude both cos and
	// sin are scaled by (YaRN's attention factor; 1 otherwise).
	freq := make([]float64, half)
	mscale := 1.0
	for i := range freq {
		freq[i] = math.Pow(float64(c.RopeBase), -2*float64(i)/float64(rd)) / ropeLinear
		if freqs != nil {
			freq[i] /= float64(freqs[i])
		}
	}
	if yarn != nil {
		mscale = yarn.apply(freq, rd, float64(c.RopeBase))
	}
	m.ropeCos, m.ropeSin = make([]float32, c.ContextLength*half), make([]float32, c.ContextLength*half)
	for p := range c.ContextLength {
		for i, fr := range freq {
			theta := float64(p) * fr
			m.ropeCos[p*half+i], m.ropeSin[p*half+i] = float32(math.Cos(theta)*mscale), float32(math.Sin(theta)*mscale)
		}
	}
	return m, nil
}

// yarnScaling is YaRN's RoPE scaling (Peng et al., as Hugging Face's
// _compute_yarn_parameters and llama.cpp implement it): frequencies that
// turn fewer than betaSlow times over the original context are
// interpolated (divided by factor), those that turn more than betaFast
// times kept, a linear ramp between; cos and sin are scaled by
// 0.1·ln(factor) + 1.
type yarnScaling struct {
	factor, origCtx, betaFast, betaSlow float64
}

// apply rescales the frequencies of a head's rd rotated dimensions in
// place and returns the magnitude scale.
func (y *yarnScaling) apply(freq []float64, rd int, base float64) float64 {
	corr := func(rotations float64) float64 { // the dimension turning this many times
		return float64(rd) * math.Log(y.origCtx/(rotations*2*math.Pi)) / (2 * math.Log(base))
	}
	low, high := max(0, math.Floor(corr(y.betaFast))), min(float64(rd-1), math.Ceil(corr(y.betaSlow)))
	for i, extrap := range freq {
		ramp := 1 - min(1, max(0, (float64(i)-low)/max(0.001, high-low))) // 1: keep, 0: interpolate
		freq[i] = extrap/y.factor*(1-ramp) + extrap*ramp
	}
	return 0.1*math.Log(y.factor) + 1
}

// State is one sequence's position, KV blocks and scratch space.
type State struct {
	// Pos is the next position; Cap the most positions it may reach.
	Pos, Cap int
	pool     *KVPool
	blocks   []int
	scratch
	extra  []*scratch // for the rows of a multi-token feed
	Logits []float32
	// Pool, when set, keeps the final (normalised) hidden states: their
	// sum over every position fed in Pooled (PoolMean), or the last
	// position's (PoolLast); PoolN counts the positions.
	Pool   int
	Pooled []float32
	PoolN  int
}

// Pooling kinds of State.Pool.
const (
	PoolMean = 1
	PoolLast = 2
)

// scratch holds one row's activations.
type scratch struct {
	x, h, q, att, o, g, u []float32
}

func (m *Model) newScratch() scratch {
	return scratch{x: make([]float32, m.Embd), h: make([]float32, m.Embd), q: make([]float32, m.QDim()),
		att: make([]float32, m.QDim()), o: make([]float32, m.Embd), g: make([]float32, m.FF), u: make([]float32, m.FF)}
}

// scratchFor is the scratch of a feed's j-th row.
func (s *State) scratchFor(m *Model, j int) *scratch {
	if j == 0 {
		return &s.scratch
	}
	for len(s.extra) < j {
		sc := m.newScratch()
		s.extra = append(s.extra, &sc)
	}
	return s.extra[j-1]
}

// NewState is a sequence with a private cache for the model's whole context.
func (m *Model) NewState() *State { return m.NewStateCap(m.ContextLength) }

// NewStateCap is a sequence with a private cache of n positions.
func (m *Model) NewStateCap(n int) *State {
	n = min(n, m.ContextLength)
	return m.NewStateIn(m.NewPool(n, 16), n)
}

// NewStateIn is a sequence of at most n positions whose KV blocks come
// from pool as it grows.
func (m *Model) NewStateIn(pool *KVPool, n int) *State {
	n = min(n, m.ContextLength)
	return &State{Cap: n, pool: pool, scratch: m.newScratch(), Logits: make([]float32, m.Vocab)}
}

// Forward feeds one token at s.Pos and leaves the next token's logits in
// s.Logits.
func (m *Model) Forward(s *State, token int) error {
	return m.ForwardBatch([]*State{s}, []int{token})
}

func rmsnorm(out, x, w []float32, eps float32) {
	var ss float32
	for _, v := range x {
		ss += v * v
	}
	inv := float32(1 / math.Sqrt(float64(ss/float32(len(x))+eps)))
	for i := range out {
		out[i] = x[i] * inv * w[i]
	}
}

// rope rotates one head's vector for position pos (its first RotaryDims
// dimensions; the rest pass unchanged).
func (m *Model) rope(v []float32, pos int) {
	v = v[:m.RotaryDims()]
	half := len(v) / 2
	cs, sn := m.ropeCos[pos*half:(pos+1)*half], m.ropeSin[pos*half:(pos+1)*half]
	for i := range half {
		a, b := 2*i, 2*i+1
		if m.NeoX {
			a, b = i, i+half
		}
		x0, x1 := v[a], v[b]
		v[a], v[b] = x0*cs[i]-x1*sn[i], x0*sn[i]+x1*cs[i]
	}
}

// LayerWeights exposes a layer's weights (for reference implementations
// and tools).
type LayerWeights struct {
	AttnNorm, FFNNorm          []float32
	Q, K, V, O, Gate, Up, Down Matrix
	// QBias, KBias, VBias are nil where the model has none; so are
	// QNorm, KNorm (qwen3's per-head norms of queries and keys).
	QBias, KBias, VBias []float32
	QNorm, KNorm        []float32
	// PostAttnNorm, PostFFNNorm normalise the attention and MLP outputs
	// before the residual additions (GLM-4); nil otherwise.
	PostAttnNorm, PostFFNNorm []float32
}

// Layer returns layer l's weights.
func (m *Model) Layer(l int) LayerWeights {
	L := m.layers[l]
	return LayerWeights{AttnNorm: L.attnNorm, FFNNorm: L.ffnNorm, Q: L.wq, K: L.wk, V: L.wv, O: L.wo, Gate: L.gate, Up: L.up, Down: L.down,
		QBias: L.bq, KBias: L.bk, VBias: L.bv, QNorm: L.qNorm, KNorm: L.kNorm, PostAttnNorm: L.postAttnNorm, PostFFNNorm: L.postFFNNorm}
}

// Embedding is the token embedding matrix.
func (m *Model) Embedding() Matrix { return m.embd }

// Output is the output matrix (the embedding when tied).
func (m *Model) Output() Matrix { return m.output }

// OutputNorm is the final norm's weight.
func (m *Model) OutputNorm() []float32 { return m.norm }
