// Package tiny writes small deterministic Llama-family GGUF models with
// random weights, for tests and benchmarks: nothing is downloaded.
package tiny

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/open-autoglm/autoglm/inference/gguf"
	"github.com/open-autoglm/autoglm/inference/llama"
)

// Config shapes a model. A qwen2 model has the Q, K and V biases of the
// real architecture; a qwen3 model its per-head QK-norms.
type Config struct {
	// Arch is llama (default), mistral, qwen2, qwen3, glm4 (separate Q,
	// K, V with biases, post-norms) or chatglm (fused QKV with bias); both
	// GLMs have a fused gate/up matrix and rotate half of each head.
	Arch                                string
	Vocab, Embd, Layers, Heads, KVHeads int
	FF, Context                         int
	// HeadDim is the per-head dimension when it is not Embd / Heads
	// (written as attention.key_length and value_length, as qwen3 does).
	HeadDim int
	// Type of the weight matrices: gguf.F32 (default), F16, Q8_0 or Q4_0
	// (Embd and FF multiples of 32), Q4_K, Q5_K or Q6_K (multiples of
	// 256). Norms are always F32.
	Type gguf.TensorType
	// Tied reuses the token embedding as the output matrix.
	Tied bool
	Seed uint64
	// NoBias leaves a qwen2 model's biases out, and Extra adds tensors:
	// files that do not match their architecture, for load tests.
	NoBias bool
	Extra  []gguf.Tensor
	// Suppress lists tokens the model never generates (their logits sit
	// hundreds below the others): a constant lane, embedding dimension 0,
	// that no layer writes to, read by the output matrix only for these
	// tokens. The built-in model uses it to keep control characters and
	// lone bytes out of its gibberish. Needs an untied output.
	Suppress []int
	// Recipe, when set, quantises the written model with llama.Quantize
	// ("Q8_0", "Q4_0", "Q4_K_M"), as the quantize command does a file.
	Recipe string
}

// laneValue is dimension 0 of every token embedding, and suppressWeight
// the output weight that turns it into a suppressed token's logit.
const (
	laneValue      = 2
	suppressWeight = -1000
)

// Write writes the model.
func Write(w io.Writer, c Config) error { return WriteWith(w, c, nil) }

// WriteWith writes the model with extra metadata (e.g. a tokenizer whose
// vocabulary size is c.Vocab).
func WriteWith(w io.Writer, c Config, extra []gguf.KV) error {
	if c.Arch == "" {
		c.Arch = "llama"
	}
	if c.KVHeads == 0 {
		c.KVHeads = c.Heads
	}
	rng := rand.New(rand.NewPCG(c.Seed, 0x5eed))
	a := c.Arch + "."
	meta := []gguf.KV{
		{Key: "general.architecture", Value: c.Arch},
		{Key: "general.name", Value: fmt.Sprintf("tiny-%s-%d", c.Arch, c.Seed)},
		{Key: a + "context_length", Value: uint32(c.Context)},
		{Key: a + "embedding_length", Value: uint32(c.Embd)},
		{Key: a + "block_count", Value: uint32(c.Layers)},
		{Key: a + "feed_forward_length", Value: uint32(c.FF)},
		{Key: a + "attention.head_count", Value: uint32(c.Heads)},
		{Key: a + "attention.head_count_kv", Value: uint32(c.KVHeads)},
		{Key: a + "attention.layer_norm_rms_epsilon", Value: float32(1e-5)},
		{Key: a + "rope.freq_base", Value: float32(10000)},
	}
	hd := c.Embd / c.Heads
	if c.HeadDim > 0 {
		hd = c.HeadDim
		meta = append(meta, gguf.KV{Key: a + "attention.key_length", Value: uint32(hd)}, gguf.KV{Key: a + "attention.value_length", Value: uint32(hd)})
	}
	if c.Arch == "glm4" || c.Arch == "chatglm" { // GLM-4 rotates half of each head
		meta = append(meta, gguf.KV{Key: a + "rope.dimension_count", Value: uint32(hd / 2)})
	}
	kvDim, qDim := c.KVHeads*hd, c.Heads*hd
	var tensors []gguf.Tensor
	mat := func(name string, rows, cols int) error {
		xs := make([]float32, rows*cols)
		std := 1 / math.Sqrt(float64(cols))
		for i := range xs {
			xs[i] = float32(rng.NormFloat64() * std)
		}
		if len(c.Suppress) > 0 {
			lane(name, xs, rows, cols, c.Suppress)
		}
		data, err := encode(c.Type, xs)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		tensors = append(tensors, gguf.Tensor{Name: name, Dims: []uint64{uint64(cols), uint64(rows)}, Type: typeOr(c.Type), Data: data})
		return nil
	}
	norm := func(name string, n int) {
		xs := make([]float32, n)
		for i := range xs {
			xs[i] = float32(1 + 0.1*rng.NormFloat64())
		}
		data, _ := encode(gguf.F32, xs)
		tensors = append(tensors, gguf.Tensor{Name: name, Dims: []uint64{uint64(n)}, Type: gguf.F32, Data: data})
	}
	// bias is a projection's bias, large enough to move the attention.
	bias := func(name string, n int) {
		xs := make([]float32, n)
		for i := range xs {
			xs[i] = float32(0.5 * rng.NormFloat64())
		}
		data, _ := encode(gguf.F32, xs)
		tensors = append(tensors, gguf.Tensor{Name: name, Dims: []uint64{uint64(n)}, Type: gguf.F32, Data: data})
	}
	steps := []func() error{func() error { return mat("token_embd.weight", c.Vocab, c.Embd) }}
	glm := c.Arch == "glm4" || c.Arch == "chatglm"
	for l := range c.Layers {
		p := fmt.Sprintf("blk.%d.", l)
		steps = append(steps, func() error { norm(p+"attn_norm.weight", c.Embd); return nil })
		if c.Arch == "chatglm" {
			// ChatGLM's fused Q, K, V projection with its bias.
			steps = append(steps,
				func() error { return mat(p+"attn_qkv.weight", qDim+2*kvDim, c.Embd) },
				func() error { bias(p+"attn_qkv.bias", qDim+2*kvDim); return nil })
		} else {
			steps = append(steps,
				func() error { return mat(p+"attn_q.weight", qDim, c.Embd) },
				func() error { return mat(p+"attn_k.weight", kvDim, c.Embd) },
				func() error { return mat(p+"attn_v.weight", kvDim, c.Embd) })
		}
		steps = append(steps,
			func() error {
				// Qwen2's and GLM-4's attention have Q, K and V biases.
				if (c.Arch == "qwen2" || c.Arch == "glm4") && !c.NoBias {
					bias(p+"attn_q.bias", qDim)
					bias(p+"attn_k.bias", kvDim)
					bias(p+"attn_v.bias", kvDim)
				}
				if c.Arch == "qwen3" { // Qwen3 normalises each head of Q and K
					norm(p+"attn_q_norm.weight", hd)
					norm(p+"attn_k_norm.weight", hd)
				}
				return nil
			},
			func() error { return mat(p+"attn_output.weight", c.Embd, qDim) })
		if c.Arch == "glm4" { // GLM-4 normalises the attention's output
			steps = append(steps, func() error { norm(p+"post_attention_norm.weight", c.Embd); return nil })
		}
		steps = append(steps, func() error { norm(p+"ffn_norm.weight", c.Embd); return nil })
		if glm {
			// GLM's fused gate and up projection: gate rows, then up rows.
			steps = append(steps, func() error { return mat(p+"ffn_up.weight", 2*c.FF, c.Embd) })
		} else {
			steps = append(steps,
				func() error { return mat(p+"ffn_gate.weight", c.FF, c.Embd) },
				func() error { return mat(p+"ffn_up.weight", c.FF, c.Embd) })
		}
		steps = append(steps, func() error { return mat(p+"ffn_down.weight", c.Embd, c.FF) })
		if c.Arch == "glm4" { // … and the MLP's
			steps = append(steps, func() error { norm(p+"post_ffw_norm.weight", c.Embd); return nil })
		}
	}
	steps = append(steps, func() error { norm("output_norm.weight", c.Embd); return nil })
	if c.Tied && len(c.Suppress) > 0 {
		return fmt.Errorf("tiny: Suppress needs an untied output matrix")
	}
	if !c.Tied {
		steps = append(steps, func() error { return mat("output.weight", c.Vocab, c.Embd) })
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	// extra overrides entries of the same key.
	keep := meta[:0]
	for _, kv := range meta {
		overridden := false
		for _, e := range extra {
			overridden = overridden || e.Key == kv.Key
		}
		if !overridden {
			keep = append(keep, kv)
		}
	}
	if c.Recipe == "" {
		return gguf.Write(w, append(keep, extra...), append(tensors, c.Extra...))
	}
	var b bytes.Buffer
	if err := gguf.Write(&b, append(keep, extra...), append(tensors, c.Extra...)); err != nil {
		return err
	}
	f, err := gguf.Parse(b.Bytes())
	if err != nil {
		return err
	}
	return llama.Quantize(f, w, c.Recipe)
}

// lane shapes the weights of a model with suppressed tokens: embedding
// dimension 0 is laneValue for every token; the layers' output
// projections (attn_output, ffn_down) never write to it, so it reaches
// the final norm unchanged and positive; the output matrix reads it with
// suppressWeight for the suppressed tokens and 0 for the others.
func lane(name string, xs []float32, rows, cols int, suppress []int) {
	switch {
	case name == "token_embd.weight":
		for r := range rows {
			xs[r*cols] = laneValue
		}
	case strings.HasSuffix(name, "attn_output.weight"), strings.HasSuffix(name, "ffn_down.weight"):
		for j := range cols {
			xs[j] = 0 // output row 0
		}
	case name == "output.weight":
		for r := range rows {
			xs[r*cols] = 0
		}
		for _, t := range suppress {
			if t >= 0 && t < rows {
				xs[t*cols] = suppressWeight
			}
		}
	}
}

func typeOr(t gguf.TensorType) gguf.TensorType {
	if t == 0 {
		return gguf.F32
	}
	return t
}

func encode(t gguf.TensorType, xs []float32) ([]byte, error) {
	switch typeOr(t) {
	case gguf.F32:
		out := make([]byte, 0, 4*len(xs))
		for _, x := range xs {
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(x))
		}
		return out, nil
	case gguf.F16:
		out := make([]byte, 0, 2*len(xs))
		for _, x := range xs {
			out = binary.LittleEndian.AppendUint16(out, llama.ToF16(x))
		}
		return out, nil
	case gguf.Q8_0:
		if len(xs)%gguf.Q8Block != 0 {
			return nil, fmt.Errorf("Q8_0 needs multiples of %d values", gguf.Q8Block)
		}
		return llama.QuantizeQ8(xs), nil
	case gguf.Q4_0, gguf.Q4_K, gguf.Q5_K, gguf.Q6_K:
		elems, _, _ := t.Block()
		if len(xs)%elems != 0 {
			return nil, fmt.Errorf("%s needs multiples of %d values", t, elems)
		}
		return llama.QuantizeAs(t, xs), nil
	}
	return nil, fmt.Errorf("cannot write type %s", t)
}
