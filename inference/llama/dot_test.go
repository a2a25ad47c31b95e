package llama

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/open-autoglm/autoglm/inference/gguf"
)

// TestKernels: the kernels this CPU runs (AVX2/FMA assembly where it has
// them, pure Go elsewhere) against float64 sums of the same quantised
// values, for block counts odd and even, extreme int8 values included; the
// four-row kernel is bit-identical to the one-row kernel for every row; and
// where the assembly runs, the pure-Go kernels agree with it too.
func TestKernels(t *testing.T) {
	defer func(on, vnni bool) { useAVX2, useVNNI = on, vnni }(useAVX2, useVNNI)
	for _, asm := range []bool{false, avx2Available} {
		for _, vnni := range []bool{false, vnniAvailable} {
			useAVX2, useVNNI = asm, vnni
			testKernels(t)
		}
	}
}

func testKernels(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	close := func(got float32, want float64, tol float64) bool {
		return math.Abs(float64(got)-want) <= tol*math.Max(1, math.Abs(want))
	}
	for _, blocks := range []int{1, 2, 3, 7, 64, 129} {
		n := blocks * 32
		w := make([]float32, n)
		x := make([]float32, n)
		for i := range w {
			w[i], x[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
		}
		w[0], x[0] = 1000, -1000 // a block at ±127 on both sides
		row := QuantizeQ8(w)
		var v qvec
		quantizeVec(&v, x)
		// The reference: the same int8 values and scales, summed in float64.
		m := Matrix{Rows: 1, Cols: n, Type: gguf.Q8_0, Data: row}
		wq := make([]float32, n)
		m.Row(0, wq)
		var want, wantF float64
		for i := range wq {
			want += float64(wq[i]) * float64(v.q[i]) * float64(v.d[i/gguf.Q8Block])
			wantF += float64(w[i]) * float64(x[i])
		}
		if got := dotQ8(row, &v); !close(got, want, 1e-4) {
			t.Errorf("q8_0, %d blocks: %v, float64 %v", blocks, got, want)
		}
		if got := dotQ8Go(row, &v); !close(got, want, 1e-4) {
			t.Errorf("q8_0 (pure Go), %d blocks: %v, float64 %v", blocks, got, want)
		}
		// Four rows times two vectors (with and without VNNI where the CPU
		// has it): each bit-identical to the one-row kernel.
		if useAVX2 && useVNNI {
			// Four rows times four vectors: each bit-identical too.
			vs := make([]qvec, 4)
			for i, src := range [][]float32{w, x, w, x} {
				xx := slices.Clone(src)
				xx[i] *= 3
				quantizeVec(&vs[i], xx)
			}
			rows := QuantizeQ8(append(append(append(append([]float32(nil), x...), w...), x...), w...))
			var out16 [16]float32
			dotQ8x4x4(rows, len(row), vs, &out16)
			for i := range 4 {
				for v := range 4 {
					if one := dotQ8(rows[i*len(row):(i+1)*len(row)], &vs[v]); out16[4*i+v] != one {
						t.Errorf("q8_0 4×4, %d blocks, row %d vector %d: %v, one-row kernel %v", blocks, i, v, out16[4*i+v], one)
					}
				}
			}
		}
		if useAVX2 {
			vnni := useVNNI
			var v2 qvec
			quantizeVec(&v2, w)
			rows := QuantizeQ8(append(append(append(append([]float32(nil), w...), x...), w...), x...))
			var out8 [8]float32
			dotQ8x4x2(rows, len(row), &v, &v2, &out8)
			for i := range 4 {
				r := rows[i*len(row) : (i+1)*len(row)]
				if a, b := dotQ8(r, &v), dotQ8(r, &v2); out8[2*i] != a || out8[2*i+1] != b {
					t.Errorf("q8_0 4×2 (VNNI %v), %d blocks, row %d: %v %v, one-row kernel %v %v", vnni, blocks, i, out8[2*i], out8[2*i+1], a, b)
				}
			}
		}
		// Four rows at once: each bit-identical to the one-row kernel.
		rows := QuantizeQ8(append(append(append(append([]float32(nil), w...), x...), w...), x...))
		var out [4]float32
		dotQ8x4(rows, len(row), &v, &out)
		for i, got := range out {
			if one := dotQ8(rows[i*len(row):(i+1)*len(row)], &v); got != one {
				t.Errorf("q8_0 x4, %d blocks, row %d: %v, one row alone %v", blocks, i, got, one)
			}
		}
		if got := dot(w, x); !close(got, wantF, 1e-4) {
			t.Errorf("f32, %d values: %v, float64 %v", n, got, wantF)
		}
		if got := dotGo(w, x); !close(got, wantF, 1e-4) {
			t.Errorf("f32 (pure Go), %d values: %v, float64 %v", n, got, wantF)
		}
		y := append([]float32(nil), x...)
		axpy(y, 0.75, w)
		for i := range y {
			if !close(y[i], float64(x[i])+0.75*float64(w[i]), 1e-5) {
				t.Fatalf("axpy, %d values: [%d] %v", n, i, y[i])
			}
		}
		if useAVX2 { // the assembly ran above: the pure-Go kernels match it
			if a, g := dotQ8AVX2(&row[0], &v.q[0], &v.d[0], blocks), dotQ8Go(row, &v); !close(a, float64(g), 1e-4) {
				t.Errorf("q8_0, %d blocks: avx2 %v, go %v", blocks, a, g)
			}
		}
	}
}

// TestQuantizeVec: the activation blocks round-trip within half a step.
func TestQuantizeVec(t *testing.T) {
	x := []float32{0.5, -1, 0.25, 127, -127, 0}
	x = append(x, make([]float32, 26)...)
	x = append(x, make([]float32, 32)...) // an all-zero block
	var v qvec
	quantizeVec(&v, x)
	if v.d[0] != 1 || v.q[3] != 127 || v.q[4] != -127 || v.q[0] != 1 || v.q[1] != -1 || v.q[2] != 0 {
		t.Fatalf("block 0: scale %v, q %v", v.d[0], v.q[:6])
	}
	if v.d[1] != 0 || v.q[40] != 0 {
		t.Fatalf("zero block: scale %v", v.d[1])
	}
}

// TestF16Kernel: products with a half-precision or bfloat16 matrix
// (converted in the kernel where the CPU has AVX2/F16C, per row in Go
// elsewhere) against float64 sums of the same values, subnormals and
// extremes included.
func TestF16Kernel(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	bf16 := func(f float32) uint16 { return uint16(math.Float32bits(f) >> 16) }
	for _, typ := range []gguf.TensorType{gguf.F16, gguf.BF16} {
		val := F16
		if typ == gguf.BF16 {
			val = func(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }
		}
		for _, n := range []int{32, 96, 1024} {
			w := make([]uint16, n)
			x := make([]float32, n)
			for i := range w {
				w[i], x[i] = ToF16(float32(rng.NormFloat64())), float32(rng.NormFloat64())
				if typ == gguf.BF16 {
					w[i] = bf16(float32(rng.NormFloat64()))
				}
			}
			w[0], w[1], w[2] = 0x0001, 0x7bff, 0xfbff // F16: smallest subnormal, ±65504
			if typ == gguf.BF16 {
				w[0], w[1], w[2] = 0x0001, bf16(3e38), bf16(-1e-38)
			}
			var want, mag float64
			for i := range w {
				want += float64(val(w[i])) * float64(x[i])
				mag += math.Abs(float64(val(w[i])) * float64(x[i]))
			}
			data := make([]byte, 2*n)
			for i, h := range w {
				data[2*i], data[2*i+1] = byte(h), byte(h>>8)
			}
			m := Matrix{Rows: 1, Cols: n, Type: typ, Data: data}
			y := []float32{0}
			m.MulMat([][]float32{y}, [][]float32{x})
			if math.Abs(float64(y[0])-want) > 1e-6*mag {
				t.Errorf("%s, %d values: %v, float64 %v", typ, n, y[0], want)
			}
			// In a batch (two vectors per call for F16): each result as alone.
			y3 := [][]float32{{0}, {0}, {0}}
			m.MulMat(y3, [][]float32{x, slices.Repeat([]float32{0.5}, n), x})
			if y3[0][0] != y[0] || y3[2][0] != y[0] {
				t.Errorf("%s, %d values, in a batch: %v %v, alone %v", typ, n, y3[0][0], y3[2][0], y[0])
			}
		}
	}
}

// TestQuantizeVecKernels: the assembly quantiser of activations gives the
// pure-Go one's int8, scales and sums bit for bit: random blocks, an
// all-zero block, negative zeros, values exactly halfway between levels,
// and a block whose largest magnitude is negative.
func TestQuantizeVecKernels(t *testing.T) {
	if !avx2Available {
		t.Log("no AVX2 on this CPU: only the pure-Go quantiser runs here")
	}
	defer func(on bool) { useAVX2 = on }(useAVX2)
	rng := rand.New(rand.NewPCG(7, 8))
	x := make([]float32, 32*40)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * math.Pow(10, float64(i/32%5-2)))
	}
	clear(x[32:64])
	x[64], x[65] = float32(math.Copysign(0, -1)), -3
	for i := 96; i < 128; i++ {
		x[i] = float32(i-96) * 127 / 62 // levels k/2: every other one a tie
	}
	x[127] = -63.5 / 31 * 127 / 62 * 31 // largest magnitude negative
	var want, got qvec
	useAVX2 = false
	quantizeVec(&want, x)
	useAVX2 = avx2Available
	quantizeVec(&got, x)
	if !slices.Equal(got.q, want.q) || !slices.Equal(got.d, want.d) || !slices.Equal(got.s, want.s) {
		for k := range want.d {
			if !slices.Equal(got.q[32*k:32*k+32], want.q[32*k:32*k+32]) || got.d[k] != want.d[k] || got.s[k] != want.s[k] {
				t.Fatalf("block %d: %v %v %v, pure Go %v %v %v", k, got.q[32*k:32*k+32], got.d[k], got.s[k], want.q[32*k:32*k+32], want.d[k], want.s[k])
			}
		}
	}
}

// TestAttentionKernels: the attention's kernels against float64: scores
// over strided keys, the weighted sum of strided values, and exp(x − m)
// within 2 ulp (0 below e^−87) over the range softmax meets.
func TestAttentionKernels(t *testing.T) {
	if !avx2Available {
		t.Log("no AVX2 on this CPU: attention runs its pure-Go loop (TestAgainstReference)")
		return
	}
	rng := rand.New(rand.NewPCG(9, 10))
	const hd, stride, n = 64, 192, 13
	q := make([]float32, hd)
	kv := make([]float32, stride*n)
	for i := range q {
		q[i] = float32(rng.NormFloat64())
	}
	for i := range kv {
		kv[i] = float32(rng.NormFloat64())
	}
	out := make([]float32, n)
	attnScoresAVX2(&q[0], &kv[64], stride, hd, n, 0.125, &out[0])
	w := make([]float32, n)
	acc := make([]float32, hd)
	want := make([]float64, hd)
	for i := range n {
		var d float64
		for j := range hd {
			d += float64(q[j]) * float64(kv[i*stride+64+j])
		}
		if math.Abs(float64(out[i])-d*0.125) > 1e-5*math.Max(1, math.Abs(d)) {
			t.Errorf("score %d: %v, float64 %v", i, out[i], d*0.125)
		}
		w[i] = float32(rng.Float64())
		for j := range hd {
			want[j] += float64(w[i]) * float64(kv[i*stride+64+j])
		}
	}
	attnAccumAVX2(&acc[0], &w[0], &kv[64], stride, hd, n)
	for j := range hd {
		if math.Abs(float64(acc[j])-want[j]) > 1e-5*math.Max(1, math.Abs(want[j])) {
			t.Errorf("value %d: %v, float64 %v", j, acc[j], want[j])
		}
	}
	xs := make([]float32, 4096)
	for i := range xs {
		xs[i] = -float32(i) * 0.025 // 0 … −102
	}
	got := slices.Clone(xs)
	sum := expSubAVX2(&got[0], len(got), 0)
	var wantSum float64
	for i, x := range xs {
		e := math.Exp(float64(x))
		if x < -87 {
			e = 0
		}
		wantSum += e
		if math.Abs(float64(got[i])-e) > 2.5e-7*e {
			t.Fatalf("exp(%v): %v, want %v", x, got[i], e)
		}
	}
	if math.Abs(float64(sum)-wantSum) > 1e-5*wantSum {
		t.Errorf("sum %v, want %v", sum, wantSum)
	}
}

// TestSiluMul: SwiGLU's gating (vectorised where the CPU has AVX2, with
// a pure-Go tail) against float64, over gates from −120 to 120.
func TestSiluMul(t *testing.T) {
	g := make([]float32, 1003)
	u := make([]float32, len(g))
	for i := range g {
		g[i], u[i] = float32(i-501)*0.24, float32(i%7)-3
	}
	want := make([]float64, len(g))
	for i := range g {
		x := float64(g[i])
		want[i] = x / (1 + math.Exp(-x)) * float64(u[i])
	}
	siluMul(g, u)
	for i := range g {
		if math.Abs(float64(g[i])-want[i]) > 4e-7*math.Abs(want[i])+1e-30 { // below 1e-30: 0 to float32
			t.Fatalf("gate %v: %v, float64 %v", float32(i-501)*0.24, g[i], want[i])
		}
	}
}
