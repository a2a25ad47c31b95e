// Package gguf reads and writes GGUF v3 model files (llama.cpp's format):
// the header, typed metadata, tensor infos and the aligned tensor data. It
// is the first stage of the native engine's load path. Parsing checks
// every length and offset against the file's size, so a truncated or
// corrupt file is an error that names the problem, never a panic or a huge
// allocation.
package gguf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// Magic is "GGUF" read as a little-endian uint32.
const Magic = 0x46554747

// DefaultAlignment applies when general.alignment is absent.
const DefaultAlignment = 32

// ValueType is a metadata value's type.
type ValueType uint32

// Metadata value types.
const (
	Uint8 ValueType = iota
	Int8
	Uint16
	Int16
	Uint32
	Int32
	Float32
	Bool
	String
	Array
	Uint64
	Int64
	Float64
)

var typeNames = [...]string{"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array", "uint64", "int64", "float64"}

func (t ValueType) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

func (t ValueType) size() int {
	switch t {
	case Uint8, Int8, Bool:
		return 1
	case Uint16, Int16:
		return 2
	case Uint32, Int32, Float32:
		return 4
	case Uint64, Int64, Float64:
		return 8
	}
	return 0
}

// Value is a metadata value: a Go bool, integer type, float32/64, string,
// or a slice of one of them ([]string, []int32, []float32, …, []any for
// nested arrays).
type Value = any

// KV is one metadata entry.
type KV struct {
	Key   string
	Value Value
}

// TensorType is a ggml tensor element type.
type TensorType uint32

// Tensor types this module knows the layout of.
const (
	F32  TensorType = 0
	F16  TensorType = 1
	Q4_0 TensorType = 2
	Q8_0 TensorType = 8
	Q4_K TensorType = 12
	Q5_K TensorType = 13
	Q6_K TensorType = 14
	BF16 TensorType = 30
)

func (t TensorType) String() string {
	switch t {
	case F32:
		return "F32"
	case F16:
		return "F16"
	case Q4_0:
		return "Q4_0"
	case Q8_0:
		return "Q8_0"
	case Q4_K:
		return "Q4_K"
	case Q5_K:
		return "Q5_K"
	case Q6_K:
		return "Q6_K"
	case BF16:
		return "BF16"
	}
	// Types this package does not read, named for error messages.
	if n, ok := map[TensorType]string{3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 15: "Q8_K",
		16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS",
		29: "IQ1_M", 34: "TQ1_0", 35: "TQ2_0"}[t]; ok {
		return n
	}
	return fmt.Sprintf("ggml type %d", uint32(t))
}

// Q8_0 stores blocks of 32 values: a float16 scale and 32 int8s.
const (
	Q8Block     = 32
	q8BlockSize = 2 + Q8Block
)

// QKBlock is the super-block of the K-quants (Q4_K, Q5_K, Q6_K): 256
// values under one float16 scale, in sub-blocks of 16 or 32 with scales of
// their own.
const QKBlock = 256

// Block is the quantisation block of t: elems values stored in bytes bytes
// (1 and the element size for the float types); ok is false for types
// whose layout this package does not know.
func (t TensorType) Block() (elems, bytes int, ok bool) {
	switch t {
	case F32:
		return 1, 4, true
	case F16, BF16:
		return 1, 2, true
	case Q4_0:
		return 32, 2 + 16, true // float16 scale, 32 nibbles
	case Q8_0:
		return Q8Block, q8BlockSize, true
	case Q4_K:
		return QKBlock, 2 + 2 + 12 + 128, true // d, dmin, 6-bit scales and mins, nibbles
	case Q5_K:
		return QKBlock, 2 + 2 + 12 + 32 + 128, true // … and the fifth bits
	case Q6_K:
		return QKBlock, 128 + 64 + 16 + 2, true // low nibbles, high 2 bits, int8 scales, d
	}
	return 0, 0, false
}

// Bytes is the size of n elements of type t, or an error for types whose
// layout this package does not know, or an n that does not fill whole blocks.
func (t TensorType) Bytes(n uint64) (uint64, error) {
	elems, bytes, ok := t.Block()
	if !ok {
		return 0, fmt.Errorf("unsupported tensor type %s (supported: F32, F16, BF16, Q4_0, Q8_0, Q4_K, Q5_K, Q6_K)", t)
	}
	if n%uint64(elems) != 0 {
		return 0, fmt.Errorf("%s needs a multiple of %d elements, got %d", t, elems, n)
	}
	return n / uint64(elems) * uint64(bytes), nil
}

// TensorInfo describes one tensor; Offset is from the data section.
type TensorInfo struct {
	Name   string
	Dims   []uint64 // innermost first, as ggml orders them
	Type   TensorType
	Offset uint64
	Size   uint64 // bytes
}

// Elements is the product of the dimensions.
func (t *TensorInfo) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// File is a parsed GGUF header; Data holds the tensor data section.
type File struct {
	Version   uint32
	Metadata  []KV
	Tensors   []TensorInfo
	Alignment uint64
	// DataOffset is where the tensor data starts in the file.
	DataOffset int64
	// Data is the tensor data section (memory-mapped by Open).
	Data []byte

	byKey  map[string]int
	byName map[string]int
	closer io.Closer
}

// Get returns a metadata value.
func (f *File) Get(key string) (Value, bool) {
	i, ok := f.byKey[key]
	if !ok {
		return nil, false
	}
	return f.Metadata[i].Value, true
}

// Tensor returns a tensor's info.
func (f *File) Tensor(name string) (*TensorInfo, bool) {
	i, ok := f.byName[name]
	if !ok {
		return nil, false
	}
	return &f.Tensors[i], true
}

// TensorData is the bytes of a tensor (a view of Data).
func (f *File) TensorData(t *TensorInfo) []byte { return f.Data[t.Offset : t.Offset+t.Size] }

// Close releases the file's mapping, if any.
func (f *File) Close() error {
	if f.closer != nil {
		return f.closer.Close()
	}
	return nil
}

// Limits bound what a header may ask for before anything is allocated.
const (
	maxKeyLen     = 1 << 16
	maxDims       = 4
	maxTensors    = 1 << 20
	maxMetadata   = 1 << 20
	maxArrayDepth = 4
)

// reader reads little-endian values, failing once past the end.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("offset %d: %s", r.off, fmt.Sprintf(format, args...))
	}
}

func (r *reader) take(n uint64, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)-r.off) {
		r.fail("truncated: %s needs %d bytes, %d left", what, n, len(r.b)-r.off)
		return nil
	}
	p := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return p
}

func (r *reader) u32(what string) uint32 {
	if p := r.take(4, what); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

func (r *reader) u64(what string) uint64 {
	if p := r.take(8, what); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

func (r *reader) str(what string, max uint64) string {
	n := r.u64(what + " length")
	if r.err == nil && n > max {
		r.fail("%s length %d is over the limit of %d", what, n, max)
		return ""
	}
	return string(r.take(n, what))
}

// Parse reads a GGUF file held in b (the whole file).
func Parse(b []byte) (*File, error) {
	r := &reader{b: b}
	if m := r.u32("magic"); r.err == nil && m != Magic {
		return nil, fmt.Errorf("gguf: not a GGUF file (magic %#x)", m)
	}
	f := &File{Version: r.u32("version"), Alignment: DefaultAlignment, byKey: map[string]int{}, byName: map[string]int{}}
	if r.err == nil && f.Version != 3 {
		return nil, fmt.Errorf("gguf: unsupported version %d (only 3)", f.Version)
	}
	nt, nkv := r.u64("tensor count"), r.u64("metadata count")
	if r.err == nil && (nt > maxTensors || nkv > maxMetadata) {
		return nil, fmt.Errorf("gguf: %d tensors and %d metadata entries exceed the limits (%d, %d)", nt, nkv, maxTensors, maxMetadata)
	}
	for i := uint64(0); i < nkv && r.err == nil; i++ {
		key := r.str(fmt.Sprintf("metadata[%d].key", i), maxKeyLen)
		v := r.value(ValueType(r.u32(key+" type")), key, 0)
		if r.err != nil {
			break
		}
		if _, dup := f.byKey[key]; dup {
			return nil, fmt.Errorf("gguf: metadata key %q appears twice", key)
		}
		f.byKey[key] = len(f.Metadata)
		f.Metadata = append(f.Metadata, KV{Key: key, Value: v})
	}
	if v, ok := f.Get("general.alignment"); ok && r.err == nil {
		a, isU32 := v.(uint32)
		if !isU32 || a == 0 || a&(a-1) != 0 || a > 1<<16 {
			return nil, fmt.Errorf("gguf: general.alignment must be a power of two uint32 up to 65536, got %v", v)
		}
		f.Alignment = uint64(a)
	}
	for i := uint64(0); i < nt && r.err == nil; i++ {
		t := TensorInfo{Name: r.str(fmt.Sprintf("tensors[%d].name", i), maxKeyLen)}
		nd := r.u32(t.Name + " dimensions")
		if r.err == nil && (nd == 0 || nd > maxDims) {
			return nil, fmt.Errorf("gguf: tensor %q: %d dimensions (1..%d)", t.Name, nd, maxDims)
		}
		n := uint64(1)
		for d := uint32(0); d < nd && r.err == nil; d++ {
			dim := r.u64(t.Name + " dimension")
			if dim == 0 || dim > 1<<40 || n > math.MaxUint64/dim {
				return nil, fmt.Errorf("gguf: tensor %q: dimension %d is %d", t.Name, d, dim)
			}
			n *= dim
			t.Dims = append(t.Dims, dim)
		}
		t.Type = TensorType(r.u32(t.Name + " type"))
		t.Offset = r.u64(t.Name + " offset")
		if r.err != nil {
			break
		}
		size, err := t.Type.Bytes(n)
		if err != nil {
			return nil, fmt.Errorf("gguf: tensor %q: %w", t.Name, err)
		}
		t.Size = size
		if _, dup := f.byName[t.Name]; dup {
			return nil, fmt.Errorf("gguf: tensor %q appears twice", t.Name)
		}
		f.byName[t.Name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, t)
	}
	if r.err != nil {
		return nil, fmt.Errorf("gguf: %w", r.err)
	}
	start := (uint64(r.off) + f.Alignment - 1) / f.Alignment * f.Alignment
	if start > uint64(len(b)) {
		start = uint64(len(b))
	}
	f.DataOffset, f.Data = int64(start), b[start:]
	for _, t := range f.Tensors {
		if t.Offset%f.Alignment != 0 {
			return nil, fmt.Errorf("gguf: tensor %q: offset %d is not aligned to %d", t.Name, t.Offset, f.Alignment)
		}
		if t.Offset > uint64(len(f.Data)) || t.Size > uint64(len(f.Data))-t.Offset {
			return nil, fmt.Errorf("gguf: tensor %q: data [%d, %d) is beyond the file's %d data bytes (truncated?)", t.Name, t.Offset, t.Offset+t.Size, len(f.Data))
		}
	}
	return f, nil
}

func (r *reader) value(t ValueType, key string, depth int) Value {
	if r.err != nil {
		return nil
	}
	switch t {
	case Uint8:
		if p := r.take(1, key); p != nil {
			return p[0]
		}
	case Int8:
		if p := r.take(1, key); p != nil {
			return int8(p[0])
		}
	case Bool:
		b := r.take(1, key)
		if b == nil {
			return nil
		}
		if b[0] > 1 {
			r.fail("%s: bool must be 0 or 1, got %d", key, b[0])
		}
		return b[0] == 1
	case Uint16:
		if p := r.take(2, key); p != nil {
			return binary.LittleEndian.Uint16(p)
		}
	case Int16:
		if p := r.take(2, key); p != nil {
			return int16(binary.LittleEndian.Uint16(p))
		}
	case Uint32:
		return r.u32(key)
	case Int32:
		return int32(r.u32(key))
	case Float32:
		return math.Float32frombits(r.u32(key))
	case Uint64:
		return r.u64(key)
	case Int64:
		return int64(r.u64(key))
	case Float64:
		return math.Float64frombits(r.u64(key))
	case String:
		return r.str(key, uint64(len(r.b)))
	case Array:
		et := ValueType(r.u32(key + " element type"))
		n := r.u64(key + " element count")
		if r.err != nil {
			return nil
		}
		if depth >= maxArrayDepth {
			r.fail("%s: arrays nested deeper than %d", key, maxArrayDepth)
			return nil
		}
		// Every element takes at least one byte (strings at least 8): a
		// count beyond what is left is a corrupt file, not an allocation.
		min := uint64(max(et.size(), 1))
		if et == String || et == Array {
			min = 8
		}
		if n > uint64(len(r.b)-r.off)/min {
			r.fail("%s: %d elements cannot fit in the %d bytes left", key, n, len(r.b)-r.off)
			return nil
		}
		return r.array(et, n, key, depth)
	default:
		r.fail("%s: unknown value type %d", key, uint32(t))
	}
	return nil
}

func (r *reader) array(et ValueType, n uint64, key string, depth int) Value {
	switch et {
	case String:
		out := make([]string, 0, n)
		for i := uint64(0); i < n && r.err == nil; i++ {
			out = append(out, r.str(key, uint64(len(r.b))))
		}
		return out
	case Int32:
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(r.u32(key))
		}
		return out
	case Uint32:
		out := make([]uint32, n)
		for i := range out {
			out[i] = r.u32(key)
		}
		return out
	case Float32:
		out := make([]float32, n)
		for i := range out {
			out[i] = math.Float32frombits(r.u32(key))
		}
		return out
	default:
		out := make([]any, 0, n)
		for i := uint64(0); i < n && r.err == nil; i++ {
			out = append(out, r.value(et, key, depth+1))
		}
		return out
	}
}

// ErrNotFound is returned for a missing metadata key or tensor.
var ErrNotFound = errors.New("gguf: not found")
