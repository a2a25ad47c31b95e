package llama

import (
	"math"

	"github.com/open-autoglm/autoglm/inference/gguf"
)

// The kernels below are the whole arithmetic of the matrix products. Every
// path (one vector or a batch, one core or many) calls the same kernel for
// a row and a vector, so a sequence's logits do not depend on the batch it
// is in.

const q8BlockBytes = 2 + gguf.Q8Block

// qvec is a vector quantised for Q8_0 products: int8 in blocks of 32 with
// a float32 scale per block (as llama.cpp does for its q8_0 dot, the
// activations are quantised once per product so the inner loop is int8 ×
// int8, summed exactly in integers).
type qvec struct {
	q []int8
	d []float32
	s []int32 // per block, the sum of its int8 (for types with an offset or a minimum)
}

// quantizeVec fills v from x (len a multiple of 32): symmetric, scale =
// max|x| / 127 per block.
func quantizeVec(v *qvec, x []float32) {
	n := len(x) / gguf.Q8Block
	v.q = grow(v.q, len(x))
	v.d = grow(v.d, n)
	v.s = grow(v.s, n)
	if useAVX2 && n > 0 {
		quantizeQ8AVX2(&x[0], &v.q[0], &v.d[0], &v.s[0], n)
		return
	}
	for k := range n {
		xk := x[k*gguf.Q8Block : (k+1)*gguf.Q8Block]
		var amax float32
		for _, f := range xk {
			amax = max(amax, abs32(f))
		}
		d := amax / 127
		v.d[k] = d
		inv := float32(0)
		if d != 0 {
			inv = 1 / d
		}
		qk := v.q[k*gguf.Q8Block : (k+1)*gguf.Q8Block]
		var sum int32
		for i, f := range xk {
			qk[i] = int8(roundHalfAway(f * inv))
			sum += int32(qk[i])
		}
		v.s[k] = sum
	}
}

func abs32(f float32) float32 { return math.Float32frombits(math.Float32bits(f) &^ (1 << 31)) }

func roundHalfAway(f float32) float32 {
	if f < 0 {
		return -float32(int32(-f + 0.5))
	}
	return float32(int32(f + 0.5))
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// dotQ8 is a Q8_0 row (blocks of a half-precision scale and 32 int8)
// times a quantised vector.
func dotQ8(row []byte, x *qvec) float32 {
	n := len(x.d)
	if useAVX2 && n > 0 {
		_ = row[n*q8BlockBytes-1]
		_ = x.q[n*gguf.Q8Block-1]
		return dotQ8AVX2(&row[0], &x.q[0], &x.d[0], n)
	}
	return dotQ8Go(row, x)
}

// dotQ8x4 is dotQ8 for the four rows starting at rows (each rowBytes
// long), into out; each result is bit-identical to dotQ8's for its row.
func dotQ8x4(rows []byte, rowBytes int, x *qvec, out *[4]float32) {
	n := len(x.d)
	if useAVX2 && n > 0 {
		_ = rows[3*rowBytes+n*q8BlockBytes-1]
		_ = x.q[n*gguf.Q8Block-1]
		if useVNNI {
			dotQ8x4VNNI(&rows[0], rowBytes, &x.q[0], &x.d[0], n, out)
			return
		}
		dotQ8x4AVX2(&rows[0], rowBytes, &x.q[0], &x.d[0], n, out)
		return
	}
	for i := range out {
		out[i] = dotQ8Go(rows[i*rowBytes:], x)
	}
}

// dotQ8x4x2 is dotQ8x4 for two vectors (AVX2 only; VPDPBUSD where the
// CPU has AVX512-VNNI, the same integer sums): out[2i+v] is row i times
// vector v, each bit-identical to dotQ8's.
func dotQ8x4x2(rows []byte, rowBytes int, x0, x1 *qvec, out *[8]float32) {
	n := len(x0.d)
	_ = rows[3*rowBytes+n*q8BlockBytes-1]
	_ = x0.q[n*gguf.Q8Block-1]
	_ = x1.q[n*gguf.Q8Block-1]
	_ = x1.d[n-1]
	if useVNNI {
		dotQ8x4x2VNNI(&rows[0], rowBytes, &x0.q[0], &x0.d[0], &x1.q[0], &x1.d[0], n, out)
		return
	}
	dotQ8x4x2AVX2(&rows[0], rowBytes, &x0.q[0], &x0.d[0], &x1.q[0], &x1.d[0], n, out)
}

// dotQ8x4x4 is dotQ8x4 for four vectors (AVX512-VNNI only): out[4i+v] is
// row i times vector v, each bit-identical to dotQ8's.
func dotQ8x4x4(rows []byte, rowBytes int, xs []qvec, out *[16]float32) {
	n := len(xs[0].d)
	_ = rows[3*rowBytes+n*q8BlockBytes-1]
	var q [4]*int8
	var d [4]*float32
	for v := range 4 {
		_ = xs[v].q[n*gguf.Q8Block-1]
		_ = xs[v].d[n-1]
		q[v], d[v] = &xs[v].q[0], &xs[v].d[0]
	}
	dotQ8x4x4VNNI(&rows[0], rowBytes, &q, &d, n, out)
}

func dotQ8Go(row []byte, x *qvec) float32 {
	var s float32
	for k, xd := range x.d {
		blk := row[k*q8BlockBytes : (k+1)*q8BlockBytes]
		q := blk[2:q8BlockBytes]
		xq := x.q[k*gguf.Q8Block : (k+1)*gguf.Q8Block]
		var i0, i1, i2, i3 int32
		for i := 0; i < gguf.Q8Block; i += 4 {
			i0 += int32(int8(q[i])) * int32(xq[i])
			i1 += int32(int8(q[i+1])) * int32(xq[i+1])
			i2 += int32(int8(q[i+2])) * int32(xq[i+2])
			i3 += int32(int8(q[i+3])) * int32(xq[i+3])
		}
		s += F16(uint16(blk[0])|uint16(blk[1])<<8) * xd * float32(i0+i1+i2+i3)
	}
	return s
}

// dot is w·x.
func dot(w, x []float32) float32 {
	x = x[:len(w)]
	if useAVX2 && len(w)%32 == 0 && len(w) > 0 {
		return dotF32AVX2(&w[0], &x[0], len(w))
	}
	return dotGo(w, x)
}

// dotGo is w·x with four accumulators (independent adds pipeline better).
func dotGo(w, x []float32) float32 {
	x = x[:len(w)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(w); i += 4 {
		s0 += w[i] * x[i]
		s1 += w[i+1] * x[i+1]
		s2 += w[i+2] * x[i+2]
		s3 += w[i+3] * x[i+3]
	}
	for ; i < len(w); i++ {
		s0 += w[i] * x[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// axpy is y += a·x.
func axpy(y []float32, a float32, x []float32) {
	x = x[:len(y)]
	if useAVX2 && len(y)%8 == 0 && len(y) > 0 {
		axpyAVX2(&y[0], a, &x[0], len(y))
		return
	}
	for i := range y {
		y[i] += a * x[i]
	}
}
