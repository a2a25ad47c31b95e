package llama

import (
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"github.com/open-autoglm/autoglm/inference/gguf"
)

// Recipes names the file types Quantize writes, as llama.cpp's quantize
// tool names them.
var Recipes = []string{"Q8_0", "Q4_0", "Q4_K_M"}

// fileTypes is general.file_type for each recipe (llama.cpp's
// LLAMA_FTYPE_MOSTLY_*).
var fileTypes = map[string]uint32{"Q8_0": 7, "Q4_0": 2, "Q4_K_M": 15}

// Quantize writes f with its 2-D F32, F16 and BF16 weight matrices
// quantised as recipe asks:
//
//   - Q8_0: every matrix Q8_0 (symmetric int8 in blocks of 32).
//   - Q4_0: every matrix Q4_0, the output matrix Q6_K as llama.cpp does.
//   - Q4_K_M: llama.cpp's mix: Q4_K, with Q6_K for the output matrix (the
//     token embedding when it is tied) and for attn_v and ffn_down in the
//     first and last eighth of the layers and every third one between,
//     and Q5_K for a fused attn_qkv.
//
// A matrix whose rows do not fill the type's blocks falls back to Q8_0
// (rows of a multiple of 32) or is copied as it is; 1-D tensors (norms,
// biases) are copied. The metadata is kept, with general.file_type set to
// the recipe's.
func Quantize(f *gguf.File, w io.Writer, recipe string) error {
	ftype, ok := fileTypes[recipe]
	if !ok {
		return fmt.Errorf("quantize: unknown type %q (supported: %v)", recipe, Recipes)
	}
	meta := make([]gguf.KV, 0, len(f.Metadata)+1)
	for _, kv := range f.Metadata {
		if kv.Key != "general.file_type" {
			meta = append(meta, kv)
		}
	}
	meta = append(meta, gguf.KV{Key: "general.file_type", Value: ftype})
	layers := 0
	if arch, ok := f.Get("general.architecture"); ok {
		if a, ok := arch.(string); ok {
			if n, ok := f.Get(a + ".block_count"); ok {
				if n, ok := n.(uint32); ok {
					layers = int(n)
				}
			}
		}
	}
	_, hasOutput := f.Tensor("output.weight")
	tensors := make([]gguf.Tensor, 0, len(f.Tensors))
	for i := range f.Tensors {
		t := &f.Tensors[i]
		data := f.TensorData(t)
		out := gguf.Tensor{Name: t.Name, Dims: t.Dims, Type: t.Type, Data: data}
		if len(t.Dims) == 2 && (t.Type == gguf.F32 || t.Type == gguf.F16 || t.Type == gguf.BF16) {
			m := Matrix{Rows: int(t.Dims[1]), Cols: int(t.Dims[0]), Type: t.Type, Data: data}
			typ := recipeType(recipe, t.Name, layers, !hasOutput)
			if elems, _, _ := typ.Block(); m.Cols%elems != 0 {
				typ = gguf.Q8_0
			}
			if m.Cols%gguf.Q8Block == 0 {
				row := make([]float32, m.Cols)
				var q []byte
				for r := range m.Rows {
					if err := m.Row(r, row); err != nil {
						return fmt.Errorf("tensor %s: %w", t.Name, err)
					}
					q = append(q, QuantizeAs(typ, row)...)
				}
				out.Type, out.Data = typ, q
			}
		}
		tensors = append(tensors, out)
	}
	return gguf.Write(w, meta, tensors)
}

var layerTensor = regexp.MustCompile(`^blk\.(\d+)\.(attn_v|ffn_down)\.weight$`)

// recipeType is the type recipe gives the matrix named name.
func recipeType(recipe, name string, layers int, tied bool) gguf.TensorType {
	output := name == "output.weight" || tied && name == "token_embd.weight"
	switch recipe {
	case "Q4_0":
		if output {
			return gguf.Q6_K
		}
		return gguf.Q4_0
	case "Q4_K_M":
		if output {
			return gguf.Q6_K
		}
		if strings.HasSuffix(name, ".attn_qkv.weight") { // fused Q, K, V: more bits, as llama.cpp
			return gguf.Q5_K
		}
		if m := layerTensor.FindStringSubmatch(name); m != nil {
			if i, _ := strconv.Atoi(m[1]); moreBits(i, layers) {
				return gguf.Q6_K
			}
		}
		return gguf.Q4_K
	}
	return gguf.Q8_0
}

// moreBits is llama.cpp's choice of the layers whose attn_v and ffn_down
// get more bits in its _M mixes: the first and last eighth, and every
// third layer between.
func moreBits(i, n int) bool {
	return i < n/8 || i >= 7*n/8 || (i-n/8)%3 == 2
}

// QuantizeAs encodes xs (whole blocks of t) as t: Q8_0, Q4_0, Q4_K, Q5_K
// or Q6_K.
func QuantizeAs(t gguf.TensorType, xs []float32) []byte {
	switch t {
	case gguf.Q4_0:
		return QuantizeQ4_0(xs)
	case gguf.Q4_K:
		return QuantizeQ4_K(xs)
	case gguf.Q5_K:
		return QuantizeQ5_K(xs)
	case gguf.Q6_K:
		return QuantizeQ6_K(xs)
	}
	return QuantizeQ8(xs)
}
