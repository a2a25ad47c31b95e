// Package llamacpp checks the native engine against llama.cpp itself:
// the same generated GGUF files (every tensor of each architecture,
// biases and QK-norms included) evaluated by llama.cpp's CPU backend
// (node-llama-cpp's prebuilt binary, installed by make node-sdk) and by
// inference/llama, logits compared at every position.
package llamacpp

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/open-autoglm/autoglm/inference/gguf"
	"github.com/open-autoglm/autoglm/inference/llama"
	"github.com/open-autoglm/autoglm/inference/llama/tiny"
	"github.com/open-autoglm/autoglm/inference/tokenizer"
	"github.com/open-autoglm/autoglm/internal/toolcache"
)

// llamaCpp is llama.cpp's logits after each of tokens.
func llamaCpp(t *testing.T, modules, model string, tokens []int) [][]float64 {
	var rows [][]float64
	toolcache.RunNode(t, "../nodesdk/logits.mjs", tokens, &rows, modules, model)
	return rows
}

func TestAgainstLlamaCpp(t *testing.T) {
	modules := toolcache.NodeModules(t)
	vocab := tokenizer.Vocabulary([][2]string{{"h", "e"}, {"t", "h"}})
	n := len(vocab[1].Value.([]string))
	tokens := []int{1, 17, 5, 60, 33, 2, 9, 41, 100, 250, 7, 88}
	for _, tc := range []struct {
		name string
		cfg  tiny.Config
		tol  float64 // of the logits' scale
		// recipe quantises the file with llama.Quantize ("" keeps it)
		recipe string
		// embd re-encodes only the token embedding as this type: llama.cpp
		// reads its rows by dequantising them (no int8 activations), so
		// each format's layout is compared exactly
		embd gguf.TensorType
		meta []gguf.KV // more metadata
	}{
		{"llama f32", tiny.Config{Embd: 64, Layers: 2, Heads: 4, FF: 96, Seed: 1}, 1e-4, "", 0, nil},
		{"llama gqa f16", tiny.Config{Embd: 64, Layers: 2, Heads: 4, KVHeads: 2, FF: 96, Type: gguf.F16, Seed: 3}, 1e-3, "", 0, nil},
		{"qwen2 biases tied", tiny.Config{Arch: "qwen2", Embd: 64, Layers: 2, Heads: 4, KVHeads: 2, FF: 64, Tied: true, Seed: 5}, 1e-4, "", 0, nil},
		{"qwen3 qk-norm wide heads", tiny.Config{Arch: "qwen3", Embd: 64, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 32, FF: 96, Seed: 6}, 1e-4, "", 0, nil},
		// GLM-4 as llama.cpp implements glm4 (biased Q, K, V; post-norms)
		// and chatglm (fused biased QKV): half-rotated heads, fused gate/up.
		{"glm4", tiny.Config{Arch: "glm4", Embd: 64, Layers: 2, Heads: 4, KVHeads: 2, FF: 96, Seed: 25}, 1e-4, "", 0, nil},
		// YaRN: RoPE scaled ×4 from an original 4096 (the ramp falls across
		// the frequencies of these heads of 64).
		{"llama yarn", tiny.Config{Embd: 256, Layers: 2, Heads: 4, FF: 96, Seed: 27}, 1e-4, "", 0, []gguf.KV{
			{Key: "llama.rope.scaling.type", Value: "yarn"}, {Key: "llama.rope.scaling.factor", Value: float32(4)},
			{Key: "llama.rope.scaling.original_context_length", Value: uint32(4096)}}},
		{"chatglm", tiny.Config{Arch: "chatglm", Embd: 64, Layers: 2, Heads: 4, KVHeads: 2, FF: 96, Seed: 26}, 1e-4, "", 0, nil},
		// Each quantised format's layout: the embedding in that type, the
		// rest F32.
		{"q4_0 layout", tiny.Config{Embd: 512, Layers: 1, Heads: 4, FF: 64, Seed: 20}, 1e-4, "", gguf.Q4_0, nil},
		{"q8_0 layout", tiny.Config{Embd: 512, Layers: 1, Heads: 4, FF: 64, Seed: 21}, 1e-4, "", gguf.Q8_0, nil},
		{"q4_k layout", tiny.Config{Embd: 512, Layers: 1, Heads: 4, FF: 64, Seed: 22}, 1e-4, "", gguf.Q4_K, nil},
		{"q5_k layout", tiny.Config{Embd: 512, Layers: 1, Heads: 4, FF: 64, Seed: 23}, 1e-4, "", gguf.Q5_K, nil},
		{"q6_k layout", tiny.Config{Embd: 512, Layers: 1, Heads: 4, FF: 64, Seed: 24}, 1e-4, "", gguf.Q6_K, nil},
		// Whole quantised files. Both engines quantise the activations of
		// every product to int8 (llama.cpp in blocks of 32 with a float16
		// scale for Q8_0/Q4_0, of 256 for the K-quants; the native engine
		// in blocks of 32), and that rounding alone moves these random
		// models' logits by 1.1–1.9 % of their scale (the engine against
		// the float64 reference without it); each engine's rounding is its
		// own, so they agree to within that noise, not to 1e-4: measured
		// here up to 2.2 % for Q8_0/Q4_0 and 6.8 % for Q4_K_M (llama.cpp's
		// blocks of 256 round coarser). The layouts are exact (above); a
		// wrong product would be off by the logits' whole scale.
		{"llama q8_0", tiny.Config{Embd: 256, Layers: 2, Heads: 4, FF: 512, Seed: 8}, 0.03, "Q8_0", 0, nil},
		{"llama q4_0", tiny.Config{Embd: 256, Layers: 2, Heads: 4, FF: 512, Seed: 8}, 0.03, "Q4_0", 0, nil},
		{"llama q4_k_m", tiny.Config{Embd: 256, Layers: 2, Heads: 4, FF: 512, Seed: 7}, 0.08, "Q4_K_M", 0, nil},
		{"llama gqa q4_k_m", tiny.Config{Embd: 256, Layers: 2, Heads: 4, KVHeads: 1, FF: 256, Seed: 12}, 0.08, "Q4_K_M", 0, nil},
		{"qwen2 q4_k_m", tiny.Config{Arch: "qwen2", Embd: 256, Layers: 2, Heads: 4, KVHeads: 2, FF: 256, Tied: true, Seed: 10}, 0.08, "Q4_K_M", 0, nil},
		{"glm4 q4_k_m", tiny.Config{Arch: "glm4", Embd: 256, Layers: 2, Heads: 4, KVHeads: 2, FF: 256, Seed: 13}, 0.08, "Q4_K_M", 0, nil},
		{"chatglm q4_k_m", tiny.Config{Arch: "chatglm", Embd: 256, Layers: 2, Heads: 4, KVHeads: 2, FF: 256, Seed: 14}, 0.08, "Q4_K_M", 0, nil},
		{"qwen3 q4_k_m", tiny.Config{Arch: "qwen3", Embd: 256, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 64, FF: 256, Seed: 11}, 0.08, "Q4_K_M", 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			c.Vocab, c.Context, c.Recipe = n, 64, tc.recipe
			var b bytes.Buffer
			if err := tiny.WriteWith(&b, c, append(slices.Clone(vocab), tc.meta...)); err != nil {
				t.Fatal(err)
			}
			if tc.embd != 0 {
				b = reencodeEmbedding(t, b.Bytes(), tc.embd)
			}
			path := filepath.Join(t.TempDir(), "model.gguf")

			if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
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
			want := llamaCpp(t, modules, path, tokens)
			if len(want) != len(tokens) {
				t.Fatalf("llama.cpp gave %d rows for %d tokens", len(want), len(tokens))
			}
			s := m.NewState()
			for i, tok := range tokens {
				if err := m.Forward(s, tok); err != nil {
					t.Fatal(err)
				}
				if e := relErr(s.Logits, want[i]); e > tc.tol {
					t.Fatalf("position %d: logits differ from llama.cpp's by %.2g of their scale (tolerance %g)", i, e, tc.tol)
				}
			}
		})
	}
}

// reencodeEmbedding is a model file with its token embedding re-encoded
// as embd.
func reencodeEmbedding(t *testing.T, data []byte, embd gguf.TensorType) bytes.Buffer {
	t.Helper()
	f, err := gguf.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	var q bytes.Buffer
	tensors := make([]gguf.Tensor, len(f.Tensors))
	for i := range f.Tensors {
		ti := &f.Tensors[i]
		tensors[i] = gguf.Tensor{Name: ti.Name, Dims: ti.Dims, Type: ti.Type, Data: f.TensorData(ti)}
		if ti.Name == "token_embd.weight" {
			m := llama.Matrix{Rows: int(ti.Dims[1]), Cols: int(ti.Dims[0]), Type: ti.Type, Data: f.TensorData(ti)}
			row := make([]float32, m.Cols)
			var enc []byte
			for r := range m.Rows {
				if err := m.Row(r, row); err != nil {
					t.Fatal(err)
				}
				enc = append(enc, llama.QuantizeAs(embd, row)...)
			}
			tensors[i].Type, tensors[i].Data = embd, enc
		}
	}
	if err := gguf.Write(&q, f.Metadata, tensors); err != nil {
		t.Fatal(err)
	}
	return q
}

func relErr(got []float32, want []float64) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	scale, diff := 0.0, 0.0
	for i, w := range want {
		scale = math.Max(scale, math.Abs(w))
		diff = math.Max(diff, math.Abs(float64(got[i])-w))
	}
	return diff / scale
}
