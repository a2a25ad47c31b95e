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
	}{
		{"llama f32", tiny.Config{Embd: 64, Layers: 2, Heads: 4, FF: 96, Seed: 1}, 1e-4},
		// Q8_0 is not compared here: on the same file llama.cpp's logits
		// differ from the native engine's by 0.7 % (one layer) to 2.7 %
		// (two layers) of their scale, while the float64 reference, which
		// quantises activations as the engine does, agrees with the engine
		// to 1e-4; the cause is not found yet (noted on issue 18).
		{"llama gqa f16", tiny.Config{Embd: 64, Layers: 2, Heads: 4, KVHeads: 2, FF: 96, Type: gguf.F16, Seed: 3}, 1e-3},
		{"qwen2 biases tied", tiny.Config{Arch: "qwen2", Embd: 64, Layers: 2, Heads: 4, KVHeads: 2, FF: 64, Tied: true, Seed: 5}, 1e-4},
		{"qwen3 qk-norm wide heads", tiny.Config{Arch: "qwen3", Embd: 64, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 32, FF: 96, Seed: 6}, 1e-4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			c.Vocab, c.Context = n, 64
			path := filepath.Join(t.TempDir(), "model.gguf")
			var b bytes.Buffer
			if err := tiny.WriteWith(&b, c, vocab); err != nil {
				t.Fatal(err)
			}
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
