package llama

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/open-autoglm/autoglm/inference/gguf"
)

// Matrix is a weight matrix of Rows × Cols in one of the stored types,
// read in place from the model file.
type Matrix struct {
	Rows, Cols int
	Type       gguf.TensorType
	Data       []byte
}

func matrix(f *gguf.File, name string, rows, cols int) (Matrix, error) {
	t, ok := f.Tensor(name)
	if !ok {
		return Matrix{}, fmt.Errorf("tensor %s is missing", name)
	}
	if len(t.Dims) != 2 || t.Dims[0] != uint64(cols) || t.Dims[1] != uint64(rows) {
		return Matrix{}, fmt.Errorf("tensor %s has dimensions %v, want [%d %d]", name, t.Dims, cols, rows)
	}
	switch t.Type {
	case gguf.F32, gguf.F16, gguf.BF16, gguf.Q8_0, gguf.Q4_0, gguf.Q4_K, gguf.Q5_K, gguf.Q6_K:
	default:
		return Matrix{}, fmt.Errorf("tensor %s: type %s is not supported", name, t.Type)
	}
	if elems, _, _ := t.Type.Block(); cols%elems != 0 {
		return Matrix{}, fmt.Errorf("tensor %s: rows of %d values do not fill whole %s blocks of %d", name, cols, t.Type, elems)
	}
	return Matrix{Rows: rows, Cols: cols, Type: t.Type, Data: f.TensorData(t)}, nil
}

func vector(f *gguf.File, name string, n int) ([]float32, error) {
	t, ok := f.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("tensor %s is missing", name)
	}
	if len(t.Dims) != 1 || t.Dims[0] != uint64(n) {
		return nil, fmt.Errorf("tensor %s has dimensions %v, want [%d]", name, t.Dims, n)
	}
	m := Matrix{Rows: 1, Cols: n, Type: t.Type, Data: f.TensorData(t)}
	out := make([]float32, n)
	if err := m.Row(0, out); err != nil {
		return nil, fmt.Errorf("tensor %s: %w", name, err)
	}
	return out, nil
}

// rows is the view of n rows from row lo (a fused matrix's part).
func (m Matrix) rows(lo, n int) Matrix {
	rb := m.rowBytes()
	return Matrix{Rows: n, Cols: m.Cols, Type: m.Type, Data: m.Data[lo*rb : (lo+n)*rb]}
}

// Row dequantizes row r into out (len Cols).
func (m *Matrix) Row(r int, out []float32) error {
	switch m.Type {
	case gguf.F32:
		b := m.Data[r*m.Cols*4:]
		for i := range out[:m.Cols] {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case gguf.F16:
		b := m.Data[r*m.Cols*2:]
		for i := range out[:m.Cols] {
			out[i] = F16(binary.LittleEndian.Uint16(b[2*i:]))
		}
	case gguf.BF16:
		b := m.Data[r*m.Cols*2:]
		for i := range out[:m.Cols] {
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
		}
	case gguf.Q8_0:
		blocks := m.Cols / gguf.Q8Block
		b := m.Data[r*blocks*(2+gguf.Q8Block):]
		for k := range blocks {
			blk := b[k*(2+gguf.Q8Block):]
			d := F16(binary.LittleEndian.Uint16(blk))
			for i := range gguf.Q8Block {
				out[k*gguf.Q8Block+i] = d * float32(int8(blk[2+i]))
			}
		}
	case gguf.Q4_0, gguf.Q4_K, gguf.Q5_K, gguf.Q6_K:
		rb := m.rowBytes()
		dequantize(m.Type, m.Data[r*rb:(r+1)*rb], out[:m.Cols])
	default:
		return fmt.Errorf("type %s is not supported", m.Type)
	}
	return nil
}

// rowBytes is the size of one row.
func (m *Matrix) rowBytes() int {
	elems, bytes, _ := m.Type.Block()
	return m.Cols / elems * bytes
}

// intDot reports whether products with m quantise the vector to int8 (the
// integer types) rather than read it as float32.
func (m *Matrix) intDot() bool {
	switch m.Type {
	case gguf.Q8_0, gguf.Q4_0, gguf.Q4_K, gguf.Q5_K, gguf.Q6_K:
		return true
	}
	return false
}

// F16 converts an IEEE half-precision value.
func F16(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0:
		if frac == 0 {
			return math.Float32frombits(sign)
		}
		// subnormal: normalise
		e := uint32(127 - 15 + 1)
		for frac&0x400 == 0 {
			frac <<= 1
			e--
		}
		frac &= 0x3ff
		return math.Float32frombits(sign | e<<23 | frac<<13)
	case exp == 0x1f:
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | frac<<13)
}

// ToF16 converts to half precision, rounding to nearest even.
func ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23&0xff) - 127 + 15
	frac := b & 0x7fffff
	switch {
	case b&0x7fffffff == 0:
		return sign
	case exp >= 0x1f:
		if b&0x7fffffff > 0x7f800000 {
			return sign | 0x7e00 // NaN
		}
		return sign | 0x7c00
	case exp <= 0:
		if exp < -10 {
			return sign
		}
		frac |= 0x800000
		shift := uint32(14 - exp)
		half := uint32(1) << (shift - 1)
		r := frac >> shift
		if rem := frac & (1<<shift - 1); rem > half || (rem == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
	r := uint16(exp)<<10 | uint16(frac>>13)
	if rem := frac & 0x1fff; rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++
	}
	return sign | r
}

// QuantizeQ8 encodes xs (a multiple of 32 values) as Q8_0 blocks:
// symmetric, scale = max|x| / 127 per block.
func QuantizeQ8(xs []float32) []byte {
	out := make([]byte, 0, len(xs)/gguf.Q8Block*(2+gguf.Q8Block))
	for k := 0; k+gguf.Q8Block <= len(xs); k += gguf.Q8Block {
		var amax float32
		for _, v := range xs[k : k+gguf.Q8Block] {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		d := amax / 127
		dh := ToF16(d)
		out = binary.LittleEndian.AppendUint16(out, dh)
		inv := float32(0)
		if d != 0 {
			inv = 1 / d
		}
		for _, v := range xs[k : k+gguf.Q8Block] {
			out = append(out, byte(int8(math.Round(float64(v*inv)))))
		}
	}
	return out
}
