package llama

import (
	"fmt"
	"io"

	"github.com/open-autoglm/autoglm/inference/gguf"
)

// Quantize writes f with its 2-D F32, F16 and BF16 weight matrices as Q8_0
// (symmetric int8 in blocks of 32 with a float16 scale); 1-D tensors (norms)
// and matrices whose rows are not a multiple of 32 are copied as they are.
// The metadata is kept, with general.file_type set to 7 (llama.cpp's Q8_0).
func Quantize(f *gguf.File, w io.Writer) error {
	meta := make([]gguf.KV, 0, len(f.Metadata)+1)
	for _, kv := range f.Metadata {
		if kv.Key != "general.file_type" {
			meta = append(meta, kv)
		}
	}
	meta = append(meta, gguf.KV{Key: "general.file_type", Value: uint32(7)})
	tensors := make([]gguf.Tensor, 0, len(f.Tensors))
	for i := range f.Tensors {
		t := &f.Tensors[i]
		data := f.TensorData(t)
		out := gguf.Tensor{Name: t.Name, Dims: t.Dims, Type: t.Type, Data: data}
		if len(t.Dims) == 2 && t.Dims[0]%gguf.Q8Block == 0 && (t.Type == gguf.F32 || t.Type == gguf.F16 || t.Type == gguf.BF16) {
			m := Matrix{Rows: int(t.Dims[1]), Cols: int(t.Dims[0]), Type: t.Type, Data: data}
			row := make([]float32, m.Cols)
			q := make([]byte, 0, m.Rows*m.Cols/gguf.Q8Block*(2+gguf.Q8Block))
			for r := range m.Rows {
				if err := m.Row(r, row); err != nil {
					return fmt.Errorf("tensor %s: %w", t.Name, err)
				}
				q = append(q, QuantizeQ8(row)...)
			}
			out.Type, out.Data = gguf.Q8_0, q
		}
		tensors = append(tensors, out)
	}
	return gguf.Write(w, meta, tensors)
}
