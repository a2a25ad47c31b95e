package llama

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestKernelsAgree: the assembly kernels compute what the pure-Go ones do
// (the integer block sums exactly; the float sums to rounding), for block
// counts odd and even, extreme int8 values included.
func TestKernelsAgree(t *testing.T) {
	if !avx2Available {
		t.Skip("no AVX2/FMA on this CPU: only the pure-Go kernels run here")
	}
	rng := rand.New(rand.NewPCG(1, 2))
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
		got, want := dotQ8AVX2(&row[0], &v.q[0], &v.d[0], blocks), dotQ8Go(row, &v)
		if d := math.Abs(float64(got - want)); d > 1e-4*math.Max(1, math.Abs(float64(want))) {
			t.Errorf("q8_0, %d blocks: avx2 %v, go %v", blocks, got, want)
		}
		// Four rows at once: each bit-identical to the one-row kernel.
		rows := QuantizeQ8(append(append(append(append([]float32(nil), w...), x...), w...), x...))
		var out [4]float32
		dotQ8x4AVX2(&rows[0], len(row), &v.q[0], &v.d[0], blocks, &out)
		for i, got := range out {
			if want := dotQ8AVX2(&rows[i*len(row)], &v.q[0], &v.d[0], blocks); got != want {
				t.Errorf("q8_0 x4, %d blocks, row %d: %v, one row alone %v", blocks, i, got, want)
			}
		}
		ya, yg := append([]float32(nil), x...), append([]float32(nil), x...)
		axpyAVX2(&ya[0], 0.75, &w[0], n)
		for i := range yg {
			yg[i] += 0.75 * w[i]
		}
		for i := range ya {
			if d := math.Abs(float64(ya[i] - yg[i])); d > 1e-5*math.Max(1, math.Abs(float64(yg[i]))) {
				t.Fatalf("axpy, %d values: [%d] avx2 %v, go %v", n, i, ya[i], yg[i])
			}
		}
		got, want = dotF32AVX2(&w[0], &x[0], n), dotGo(w, x)
		if d := math.Abs(float64(got - want)); d > 1e-4*math.Max(1, math.Abs(float64(want))) {
			t.Errorf("f32, %d values: avx2 %v, go %v", n, got, want)
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
