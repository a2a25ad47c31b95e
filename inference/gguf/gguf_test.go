package gguf

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func sample(t testing.TB) ([]byte, []KV, []Tensor) {
	t.Helper()
	f32 := make([]byte, 4*6)
	for i := range 6 {
		binary.LittleEndian.PutUint32(f32[4*i:], math.Float32bits(float32(i)+0.5))
	}
	q8 := make([]byte, 2*q8BlockSize)
	for i := range q8 {
		q8[i] = byte(i)
	}
	meta := []KV{
		{"general.architecture", "llama"},
		{"general.alignment", uint32(64)},
		{"llama.context_length", uint32(2048)},
		{"llama.rope.freq_base", float32(10000)},
		{"llama.attention.layer_norm_rms_epsilon", float32(1e-5)},
		{"tokenizer.ggml.tokens", []string{"<s>", "</s>", "a", "b"}},
		{"tokenizer.ggml.scores", []float32{0, 0, -1, -2}},
		{"tokenizer.ggml.token_type", []int32{3, 3, 1, 1}},
		{"flags", []uint32{1, 2}},
		{"misc.bool", true},
		{"misc.i64", int64(-5)},
		{"misc.f64", 2.5},
		{"misc.u8", uint8(7)},
		{"misc.i16", int16(-3)},
	}
	tensors := []Tensor{
		{Name: "token_embd.weight", Dims: []uint64{3, 2}, Type: F32, Data: f32},
		{Name: "blk.0.attn_q.weight", Dims: []uint64{32, 2}, Type: Q8_0, Data: q8},
		{Name: "output_norm.weight", Dims: []uint64{2}, Type: F16, Data: []byte{0, 0x3c, 0, 0x40}},
	}
	var b bytes.Buffer
	if err := Write(&b, meta, tensors); err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), meta, tensors
}

func TestRoundTrip(t *testing.T) {
	b, meta, tensors := sample(t)
	f, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if f.Alignment != 64 || f.DataOffset%64 != 0 || len(f.Metadata) != len(meta) {
		t.Fatalf("alignment %d data at %d, %d entries", f.Alignment, f.DataOffset, len(f.Metadata))
	}
	for _, kv := range meta {
		if v, ok := f.Get(kv.Key); !ok || !reflect.DeepEqual(v, kv.Value) {
			t.Errorf("%s: %#v, want %#v", kv.Key, v, kv.Value)
		}
	}
	for _, want := range tensors {
		ti, ok := f.Tensor(want.Name)
		if !ok || ti.Type != want.Type || !reflect.DeepEqual(ti.Dims, want.Dims) || !bytes.Equal(f.TensorData(ti), want.Data) || ti.Offset%64 != 0 {
			t.Errorf("%s: %+v", want.Name, ti)
		}
	}
	// The same through a memory-mapped file.
	path := filepath.Join(t.TempDir(), "m.gguf")
	os.WriteFile(path, b, 0o644)
	mf, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer mf.Close()
	if ti, _ := mf.Tensor("token_embd.weight"); !bytes.Equal(mf.TensorData(ti), tensors[0].Data) {
		t.Fatal("mapped data differs")
	}
}

// TestTruncated: every prefix of a valid file is an error, never a panic.
func TestTruncated(t *testing.T) {
	b, _, _ := sample(t)
	for n := 0; n < len(b); n++ {
		if _, err := Parse(b[:n]); err == nil {
			// Trailing padding after the last tensor's data may go.
			f, _ := Parse(b)
			last := f.Tensors[len(f.Tensors)-1]
			if int64(n) < f.DataOffset+int64(last.Offset+last.Size) {
				t.Fatalf("prefix of %d bytes accepted", n)
			}
		}
	}
}

func TestCorrupt(t *testing.T) {
	b, _, _ := sample(t)
	mutate := func(f func([]byte)) []byte { c := bytes.Clone(b); f(c); return c }
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"magic", mutate(func(c []byte) { c[0] = 'X' }), "not a GGUF file"},
		{"version", mutate(func(c []byte) { c[4] = 2 }), "unsupported version 2"},
		{"tensor count", mutate(func(c []byte) { binary.LittleEndian.PutUint64(c[8:], 1<<40) }), "exceed the limits"},
		{"key length", mutate(func(c []byte) { binary.LittleEndian.PutUint64(c[24:], 1<<62) }), "over the limit"},
		{"value type", mutate(func(c []byte) { binary.LittleEndian.PutUint32(c[24+8+len("general.architecture"):], 99) }), "unknown value type 99"},
		{"empty", nil, "truncated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse(tc.data); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	var buf bytes.Buffer
	if err := Write(&buf, nil, []Tensor{{Name: "x", Dims: []uint64{4}, Type: TensorType(11), Data: make([]byte, 4)}}); err == nil || !strings.Contains(err.Error(), "unsupported tensor type Q3_K") {
		t.Fatalf("unsupported type written: %v", err)
	}
	if err := Write(&buf, nil, []Tensor{{Name: "x", Dims: []uint64{33}, Type: Q8_0, Data: make([]byte, 34)}}); err == nil || !strings.Contains(err.Error(), "multiple of 32") {
		t.Fatalf("partial Q8_0 block: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	b, _, _ := sample(f)
	f.Add(b)
	f.Add(b[:100])
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := Parse(data)
		if err != nil {
			return
		}
		for i := range g.Tensors {
			_ = g.TensorData(&g.Tensors[i]) // in bounds for whatever is accepted
		}
	})
}
