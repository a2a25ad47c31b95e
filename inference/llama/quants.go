package llama

import (
	"encoding/binary"
	"math"

	"github.com/open-autoglm/autoglm/inference/gguf"
)

// The legacy 4-bit type and the K-quants, laid out as ggml defines them
// (ggml-common.h): their dequantisation (Row), their products with a
// quantised vector (the int8 activations of qvec, in blocks of 32), and
// their quantisers (Quantize's Q4_K_M recipe, the tests' files).
//
//	Q4_0  18 B / 32:  float16 d; 16 bytes of nibbles, value = d·(q − 8);
//	                  byte j holds element j (low) and j+16 (high).
//	Q4_K 144 B / 256: float16 d, dmin; 12 bytes of 6-bit scales and mins for
//	                  8 sub-blocks of 32; 128 bytes of nibbles, value =
//	                  d·sc·q − dmin·m; in each 64 values, byte l holds
//	                  element l (low) and l+32 (high).
//	Q5_K 176 B / 256: Q4_K plus 32 bytes of fifth bits: bit 2p of byte l is
//	                  the fifth bit of element 64p+l, bit 2p+1 of 64p+32+l.
//	Q6_K 210 B / 256: 128 bytes of low nibbles, 64 of high 2-bit pairs, 16
//	                  int8 scales for sub-blocks of 16, float16 d; value =
//	                  d·sc·(q − 32).

const (
	q40Bytes = 18
	q4KBytes = 144
	q5KBytes = 176
	q6KBytes = 210
)

func le16(b []byte) uint16 { return binary.LittleEndian.Uint16(b) }

// scaleMinK4 is sub-block j's 6-bit scale and min in a Q4_K/Q5_K block's
// 12 scale bytes: the first four pairs in the low six bits of bytes 0–7,
// the last four in the nibbles of bytes 8–11 with their top two bits in
// the top bits of bytes 0–7.
func scaleMinK4(j int, s []byte) (sc, m uint8) {
	if j < 4 {
		return s[j] & 63, s[j+4] & 63
	}
	return s[j+4]&0xf | (s[j-4]>>6)<<4, s[j+4]>>4 | (s[j]>>6)<<4
}

// dequantize writes n values of a quantised row of type t into out.
func dequantize(t gguf.TensorType, b []byte, out []float32) {
	switch t {
	case gguf.Q4_0:
		for k := range len(out) / 32 {
			blk := b[k*q40Bytes:]
			d := F16(le16(blk))
			o := out[k*32:]
			for j := range 16 {
				q := blk[2+j]
				o[j] = d * float32(int(q&0xf)-8)
				o[j+16] = d * float32(int(q>>4)-8)
			}
		}
	case gguf.Q4_K, gguf.Q5_K:
		bb, qsOff := q4KBytes, 16
		if t == gguf.Q5_K {
			bb, qsOff = q5KBytes, 48
		}
		for k := range len(out) / gguf.QKBlock {
			blk := b[k*bb : (k+1)*bb]
			d, dmin := F16(le16(blk)), F16(le16(blk[2:]))
			o := out[k*gguf.QKBlock:]
			for p := range 4 {
				s0, m0 := scaleMinK4(2*p, blk[4:16])
				s1, m1 := scaleMinK4(2*p+1, blk[4:16])
				d0, d1 := d*float32(s0), d*float32(s1)
				n0, n1 := dmin*float32(m0), dmin*float32(m1)
				qs := blk[qsOff+32*p:]
				for l := range 32 {
					lo, hi := qs[l]&0xf, qs[l]>>4
					if t == gguf.Q5_K {
						h := blk[16+l] >> (2 * p)
						lo |= (h & 1) << 4
						hi |= (h >> 1 & 1) << 4
					}
					o[64*p+l] = d0*float32(lo) - n0
					o[64*p+32+l] = d1*float32(hi) - n1
				}
			}
		}
	case gguf.Q6_K:
		for k := range len(out) / gguf.QKBlock {
			blk := b[k*q6KBytes : (k+1)*q6KBytes]
			d := F16(le16(blk[208:]))
			o := out[k*gguf.QKBlock:]
			for h := range 2 {
				ql, qh, sc := blk[64*h:], blk[128+32*h:], blk[192+8*h:]
				for l := range 32 {
					is := l / 16
					o[128*h+l] = d * float32(int8(sc[is])) * float32(int(ql[l]&0xf|(qh[l]&3)<<4)-32)
					o[128*h+32+l] = d * float32(int8(sc[is+2])) * float32(int(ql[l+32]&0xf|(qh[l]>>2&3)<<4)-32)
					o[128*h+64+l] = d * float32(int8(sc[is+4])) * float32(int(ql[l]>>4|(qh[l]>>4&3)<<4)-32)
					o[128*h+96+l] = d * float32(int8(sc[is+6])) * float32(int(ql[l+32]>>4|(qh[l]>>6&3)<<4)-32)
				}
			}
		}
	}
}

// dotQuant is a quantised row of type t (Q4_0 or a K-quant) times a
// quantised vector: per block of 32 (16 for Q6_K) an exact integer sum of
// the weights' integer levels times the vector's int8, scaled once; a
// Q4_K/Q5_K minimum costs one product with the block's sum of int8.
func dotQuant(t gguf.TensorType, row []byte, x *qvec) float32 {
	switch t {
	case gguf.Q4_0:
		if n := len(x.d); useAVX2 && n > 0 {
			_ = row[n*q40Bytes-1]
			return dotQ40AVX2(&row[0], &x.q[0], &x.d[0], n)
		}
		return dotQ40Go(row, x)
	case gguf.Q4_K:
		if nsb := len(x.d) / 8; useAVX2 && nsb > 0 {
			_ = row[nsb*q4KBytes-1]
			return dotQ4KAVX2(&row[0], &x.q[0], &x.d[0], &x.s[0], nsb)
		}
		return dotQ4KGo(row, x)
	case gguf.Q5_K:
		if nsb := len(x.d) / 8; useAVX2 && nsb > 0 {
			_ = row[nsb*q5KBytes-1]
			return dotQ5KAVX2(&row[0], &x.q[0], &x.d[0], &x.s[0], nsb)
		}
		return dotQ5KGo(row, x)
	case gguf.Q6_K:
		if nsb := len(x.d) / 8; useAVX2 && nsb > 0 {
			_ = row[nsb*q6KBytes-1]
			return dotQ6KAVX2(&row[0], &x.q[0], &x.d[0], nsb)
		}
		return dotQ6KGo(row, x)
	}
	panic("dotQuant: " + t.String())
}

// dotQ4Kx2 is dotQuant of a Q4_K row for two vectors at once (AVX2 only;
// VPDPBUSD where the CPU has AVX512-VNNI), each result bit-identical to
// dotQuant's.
func dotQ4Kx2(row []byte, x0, x1 *qvec, out *[2]float32) {
	nsb := len(x0.d) / 8
	_ = row[nsb*q4KBytes-1]
	_ = x1.q[nsb*gguf.QKBlock-1]
	_ = x1.d[nsb*8-1]
	_ = x1.s[nsb*8-1]
	if useVNNI {
		dotQ4Kx2VNNI(&row[0], &x0.q[0], &x0.d[0], &x0.s[0], &x1.q[0], &x1.d[0], &x1.s[0], nsb, out)
		return
	}
	dotQ4Kx2AVX2(&row[0], &x0.q[0], &x0.d[0], &x0.s[0], &x1.q[0], &x1.d[0], &x1.s[0], nsb, out)
}

// dotQ5Kx2 is dotQuant of a Q5_K row for two vectors at once (AVX2 only;
// VPDPBUSD where the CPU has AVX512-VNNI), each result bit-identical to
// dotQuant's.
func dotQ5Kx2(row []byte, x0, x1 *qvec, out *[2]float32) {
	nsb := len(x0.d) / 8
	_ = row[nsb*q5KBytes-1]
	_ = x1.q[nsb*gguf.QKBlock-1]
	_ = x1.d[nsb*8-1]
	_ = x1.s[nsb*8-1]
	if useVNNI {
		dotQ5Kx2VNNI(&row[0], &x0.q[0], &x0.d[0], &x0.s[0], &x1.q[0], &x1.d[0], &x1.s[0], nsb, out)
		return
	}
	dotQ5Kx2AVX2(&row[0], &x0.q[0], &x0.d[0], &x0.s[0], &x1.q[0], &x1.d[0], &x1.s[0], nsb, out)
}

// dotQ6Kx2 is dotQuant of a Q6_K row for two vectors at once (AVX2 only),
// each result bit-identical to dotQuant's.
func dotQ6Kx2(row []byte, x0, x1 *qvec, out *[2]float32) {
	nsb := len(x0.d) / 8
	_ = row[nsb*q6KBytes-1]
	_ = x1.q[nsb*gguf.QKBlock-1]
	_ = x1.d[nsb*8-1]
	dotQ6Kx2AVX2(&row[0], &x0.q[0], &x0.d[0], &x1.q[0], &x1.d[0], nsb, out)
}

func dotQ40Go(row []byte, x *qvec) float32 {
	var s float32
	for k, xd := range x.d {
		blk := row[k*q40Bytes : (k+1)*q40Bytes]
		xq := x.q[k*32 : (k+1)*32]
		var i0, i1 int32
		for j := range 16 {
			q := blk[2+j]
			i0 += int32(q&0xf) * int32(xq[j])
			i1 += int32(q>>4) * int32(xq[j+16])
		}
		// the −8 offset: −8·Σxq
		s += F16(le16(blk)) * xd * float32(i0+i1-8*x.s[k])
	}
	return s
}

func dotQ4KGo(row []byte, x *qvec) float32 { return dotKGo(row, x, false) }

func dotQ5KGo(row []byte, x *qvec) float32 { return dotKGo(row, x, true) }

// noFifthBits stands for a Q4_K block's absent fifth bits.
var noFifthBits [32]byte

// dotKGo is a Q4_K or (q5) Q5_K row times x: per sub-block of 32 the
// integer sum of its levels (nibble, plus 16 times the fifth bit) times
// x's int8, scaled; the minimums through x's block sums.
func dotKGo(row []byte, x *qvec, q5 bool) float32 {
	bb, qsOff := q4KBytes, 16
	if q5 {
		bb, qsOff = q5KBytes, 48
	}
	var s float32
	for k := range len(x.d) / 8 {
		blk := row[k*bb : (k+1)*bb]
		d, dmin := F16(le16(blk)), F16(le16(blk[2:]))
		qh := noFifthBits[:]
		if q5 {
			qh = blk[16:48]
		}
		var sum, mins float32
		for p := range 4 {
			qs := blk[qsOff+32*p : qsOff+32+32*p]
			b := 8*k + 2*p
			x0, x1 := x.q[32*b:32*b+32], x.q[32*b+32:32*b+64]
			var i0, i1 int32
			for l, q := range qs {
				h := qh[l] >> (2 * p)
				i0 += int32(q&0xf|(h&1)<<4) * int32(x0[l])
				i1 += int32(q>>4|(h>>1&1)<<4) * int32(x1[l])
			}
			s0, m0 := scaleMinK4(2*p, blk[4:16])
			s1, m1 := scaleMinK4(2*p+1, blk[4:16])
			sum += x.d[b]*float32(int32(s0)*i0) + x.d[b+1]*float32(int32(s1)*i1)
			mins += x.d[b]*float32(int32(m0)*x.s[b]) + x.d[b+1]*float32(int32(m1)*x.s[b+1])
		}
		s += d*sum - dmin*mins
	}
	return s
}

func dotQ6KGo(row []byte, x *qvec) float32 {
	var s float32
	for k := range len(x.d) / 8 {
		blk := row[k*q6KBytes : (k+1)*q6KBytes]
		var sum float32
		for h := range 2 {
			ql, qh, sc := blk[64*h:64*h+64], blk[128+32*h:160+32*h], blk[192+8*h:200+8*h]
			b := 8*k + 4*h  // x's blocks of 32 for elements 128h + 32g
			var is [8]int32 // per sub-block of 16: is[2g+half]
			for l := range 32 {
				g := l / 16
				is[g] += (int32(ql[l]&0xf|(qh[l]&3)<<4) - 32) * int32(x.q[32*b+l])
				is[2+g] += (int32(ql[l+32]&0xf|(qh[l]>>2&3)<<4) - 32) * int32(x.q[32*(b+1)+l])
				is[4+g] += (int32(ql[l]>>4|(qh[l]>>4&3)<<4) - 32) * int32(x.q[32*(b+2)+l])
				is[6+g] += (int32(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32) * int32(x.q[32*(b+3)+l])
			}
			for g := range 4 {
				sum += x.d[b+g] * float32(int32(int8(sc[2*g]))*is[2*g]+int32(int8(sc[2*g+1]))*is[2*g+1])
			}
		}
		s += F16(le16(blk[208:])) * sum
	}
	return s
}

func nearest(f float32) int { return int(math.RoundToEven(float64(f))) }

// QuantizeQ4_0 encodes xs (a multiple of 32 values) as Q4_0 blocks: the
// value of largest magnitude maps to −8, as llama.cpp's reference does.
func QuantizeQ4_0(xs []float32) []byte {
	out := make([]byte, 0, len(xs)/32*q40Bytes)
	for k := 0; k+32 <= len(xs); k += 32 {
		var amax, mx float32
		for _, v := range xs[k : k+32] {
			if abs32(v) > amax {
				amax, mx = abs32(v), v
			}
		}
		d := mx / -8
		inv := float32(0)
		if d != 0 {
			inv = 1 / d
		}
		out = binary.LittleEndian.AppendUint16(out, ToF16(d))
		for j := range 16 {
			lo := min(15, int(int8(xs[k+j]*inv+8.5)))
			hi := min(15, int(int8(xs[k+16+j]*inv+8.5)))
			out = append(out, byte(lo)|byte(hi)<<4)
		}
	}
	return out
}

// fitScaleMin fits x ≈ scale·l + min (l in 0..nmax, min ≤ 0) by weighted
// least squares over a sweep of starting scales, writing the levels into
// L: the search llama.cpp's K-quant quantiser makes, written from its
// description (weights favour the values of large magnitude).
func fitScaleMin(x []float32, nmax int, L []uint8, sc *fitScratch) (scale, minv float32) {
	var sumX2 float64
	for _, v := range x {
		sumX2 += float64(v) * float64(v)
	}
	av := float32(math.Sqrt(sumX2 / float64(len(x))))
	w := grow(sc.w, len(x))
	lo, hi := x[0], x[0]
	var sumW, sumX float32
	for i, v := range x {
		w[i] = av + abs32(v)
		lo, hi = min(lo, v), max(hi, v)
		sumW += w[i]
		sumX += w[i] * v
	}
	lo = min(lo, 0)
	if hi == lo {
		clear(L)
		return 0, lo
	}
	levels := func(iscale, mn float32, out []uint8) {
		for i, v := range x {
			out[i] = uint8(max(0, min(nmax, nearest(iscale*(v-mn)))))
		}
	}
	errOf := func(scale, mn float32, l []uint8) float32 {
		var e float32
		for i, v := range x {
			d := scale*float32(l[i]) + mn - v
			e += w[i] * d * d
		}
		return e
	}
	iscale := float32(nmax) / (hi - lo)
	scale, minv = 1/iscale, lo
	levels(iscale, lo, L)
	best := errOf(scale, minv, L)
	aux := grow(sc.aux, len(x))
	for step := range 21 {
		iscale := (-1 + 0.1*float32(step) + float32(nmax)) / (hi - lo)
		levels(iscale, lo, aux)
		var sl, sl2, sxl float32
		for i, v := range x {
			l := float32(aux[i])
			sl += w[i] * l
			sl2 += w[i] * l * l
			sxl += w[i] * l * v
		}
		D := sumW*sl2 - sl*sl
		if D <= 0 {
			continue
		}
		s := (sumW*sxl - sumX*sl) / D
		mn := (sl2*sumX - sl*sxl) / D
		if mn > 0 {
			mn, s = 0, sxl/sl2
		}
		if e := errOf(s, mn, aux); e < best {
			best, scale, minv = e, s, mn
			copy(L, aux)
		}
	}
	return scale, minv
}

// fitScratch is fitScaleMin's working space, reused across sub-blocks.
type fitScratch struct {
	w   []float32
	aux []uint8
}

// quantizeK encodes xs (a multiple of 256 values) as Q4_K (nmax 15) or
// Q5_K (nmax 31): each sub-block of 32 fitted, its scale and −min
// quantised to 6 bits against the block's largest, and the levels
// recomputed against the quantised scales.
func quantizeK(xs []float32, nmax int) []byte {
	q5 := nmax == 31
	bb := q4KBytes
	if q5 {
		bb = q5KBytes
	}
	out := make([]byte, len(xs)/gguf.QKBlock*bb)
	L := make([]uint8, gguf.QKBlock)
	sc := &fitScratch{w: make([]float32, 32), aux: make([]uint8, 32)}
	for k := range len(xs) / gguf.QKBlock {
		x := xs[k*gguf.QKBlock : (k+1)*gguf.QKBlock]
		blk := out[k*bb : (k+1)*bb]
		var scales, mins [8]float32
		var maxScale, maxMin float32
		for j := range 8 {
			scales[j], mins[j] = fitScaleMin(x[32*j:32*j+32], nmax, L[32*j:32*j+32], sc)
			mins[j] = -mins[j]
			maxScale, maxMin = max(maxScale, scales[j]), max(maxMin, mins[j])
		}
		var invScale, invMin float32
		if maxScale > 0 {
			invScale = 63 / maxScale
		}
		if maxMin > 0 {
			invMin = 63 / maxMin
		}
		sc := blk[4:16]
		for j := range 8 {
			ls := uint8(max(0, min(63, nearest(invScale*scales[j]))))
			lm := uint8(max(0, min(63, nearest(invMin*mins[j]))))
			if j < 4 {
				sc[j], sc[j+4] = ls, lm
			} else {
				sc[j+4] = ls&0xf | (lm&0xf)<<4
				sc[j-4] |= (ls >> 4) << 6
				sc[j] |= (lm >> 4) << 6
			}
		}
		dh, mh := ToF16(maxScale/63), ToF16(maxMin/63)
		binary.LittleEndian.PutUint16(blk, dh)
		binary.LittleEndian.PutUint16(blk[2:], mh)
		d, dmin := F16(dh), F16(mh)
		for j := range 8 {
			s, m := scaleMinK4(j, sc)
			dj := d * float32(s)
			if dj == 0 {
				clear(L[32*j : 32*j+32])
				continue
			}
			dm := dmin * float32(m)
			for i, v := range x[32*j : 32*j+32] {
				L[32*j+i] = uint8(max(0, min(nmax, nearest((v+dm)/dj))))
			}
		}
		qs := blk[16:]
		if q5 {
			qs = blk[48:]
		}
		for p := range 4 {
			for l := range 32 {
				lo, hi := L[64*p+l], L[64*p+32+l]
				if q5 {
					blk[16+l] |= (lo>>4)<<(2*p) | (hi>>4)<<(2*p+1)
				}
				qs[32*p+l] = lo&0xf | (hi&0xf)<<4
			}
		}
	}
	return out
}

// QuantizeQ4_K encodes xs (a multiple of 256 values) as Q4_K blocks.
func QuantizeQ4_K(xs []float32) []byte { return quantizeK(xs, 15) }

// QuantizeQ5_K encodes xs (a multiple of 256 values) as Q5_K blocks.
func QuantizeQ5_K(xs []float32) []byte { return quantizeK(xs, 31) }

// QuantizeQ6_K encodes xs (a multiple of 256 values) as Q6_K blocks: each
// sub-block of 16 symmetric with its value of largest magnitude at −32,
// the sub-block scales as int8 against the block's largest.
func QuantizeQ6_K(xs []float32) []byte {
	out := make([]byte, len(xs)/gguf.QKBlock*q6KBytes)
	var L [gguf.QKBlock]int
	for k := range len(xs) / gguf.QKBlock {
		x := xs[k*gguf.QKBlock : (k+1)*gguf.QKBlock]
		blk := out[k*q6KBytes : (k+1)*q6KBytes]
		var scales [16]float32
		var maxScale, amaxScale float32
		for j := range 16 {
			var amax, mx float32
			for _, v := range x[16*j : 16*j+16] {
				if abs32(v) > amax {
					amax, mx = abs32(v), v
				}
			}
			scales[j] = mx / -32
			if abs32(scales[j]) > amaxScale {
				amaxScale, maxScale = abs32(scales[j]), scales[j]
			}
		}
		if amaxScale == 0 {
			continue // all zero: d = 0, levels irrelevant
		}
		iscale := -128 / maxScale
		dh := ToF16(1 / iscale)
		binary.LittleEndian.PutUint16(blk[208:], dh)
		d := F16(dh)
		for j := range 16 {
			ls := int8(max(-128, min(127, nearest(iscale*scales[j]))))
			blk[192+j] = byte(ls)
			dj := d * float32(ls)
			for i, v := range x[16*j : 16*j+16] {
				l := 0
				if dj != 0 {
					l = max(-32, min(31, nearest(v/dj)))
				}
				L[16*j+i] = l + 32
			}
		}
		for h := range 2 {
			ql, qh := blk[64*h:], blk[128+32*h:]
			for l := range 32 {
				a, b, c, e := L[128*h+l], L[128*h+32+l], L[128*h+64+l], L[128*h+96+l]
				ql[l] = byte(a&0xf | (c&0xf)<<4)
				ql[l+32] = byte(b&0xf | (e&0xf)<<4)
				qh[l] = byte(a>>4 | (b>>4)<<2 | (c>>4)<<4 | (e>>4)<<6)
			}
		}
	}
	return out
}
