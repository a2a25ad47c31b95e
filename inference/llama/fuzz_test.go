package llama_test

import (
	"bytes"
	"testing"

	"github.com/open-autoglm/autoglm/inference/gguf"
	"github.com/open-autoglm/autoglm/inference/llama"
	"github.com/open-autoglm/autoglm/inference/llama/tiny"
)

// FuzzLoad: a model file is outside input. Whatever its bytes, Load either
// refuses it with an error or returns a model that runs a token; it never
// panics. Seeds: a small file of every architecture, F32, Q8_0 and Q4_0
// (K-quant files are 256 values wide at least: too big to fuzz quickly).
func FuzzLoad(f *testing.F) {
	for _, c := range []tiny.Config{
		{Vocab: 16, Embd: 32, Layers: 1, Heads: 2, FF: 32, Context: 8, Seed: 1},
		{Arch: "qwen2", Vocab: 16, Embd: 32, Layers: 1, Heads: 2, KVHeads: 1, FF: 32, Context: 8, Tied: true, Seed: 2},
		{Arch: "qwen3", Vocab: 16, Embd: 32, Layers: 1, Heads: 2, KVHeads: 1, HeadDim: 32, FF: 32, Context: 8, Seed: 3},
		{Arch: "glm4", Vocab: 16, Embd: 32, Layers: 1, Heads: 2, KVHeads: 1, FF: 32, Context: 8, Seed: 4},
		{Arch: "chatglm", Vocab: 16, Embd: 32, Layers: 1, Heads: 2, KVHeads: 1, FF: 32, Context: 8, Type: gguf.Q8_0, Seed: 5},
		{Vocab: 16, Embd: 32, Layers: 1, Heads: 2, FF: 32, Context: 8, Type: gguf.Q4_0, Seed: 6},
	} {
		var b bytes.Buffer
		if err := tiny.Write(&b, c); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := gguf.Parse(data)
		if err != nil {
			return
		}
		// A long context is valid and costs its RoPE tables at load
		// (a real 128k-context model: ~0.3 s): not this target's business.
		if arch, ok := file.Get("general.architecture"); ok {
			if a, ok := arch.(string); ok {
				if n, ok := file.Get(a + ".context_length"); ok {
					if n, ok := n.(uint32); ok && n > 1<<10 {
						return
					}
				}
			}
		}
		m, err := llama.Load(file)
		if err != nil {
			return
		}
		s := m.NewStateCap(4)
		_ = m.Forward(s, 0)
	})
}
