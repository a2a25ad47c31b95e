package llama

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/open-autoglm/autoglm/inference/gguf"
)

var quantTypes = []gguf.TensorType{gguf.Q4_0, gguf.Q4_K, gguf.Q5_K, gguf.Q6_K}

// TestQuantizeError: each quantiser's relative RMS error on Gaussian
// values, at the figures it reaches today (a regression check of the
// quantisers' quality; llama.cpp's reach about the same: 4-bit ≈ 7–9 %,
// 5-bit ≈ 3.5 %, 6-bit ≈ 2 %), and a block of zeros stays zero.
func TestQuantizeError(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	xs := make([]float32, 256*64)
	for i := range xs {
		xs[i] = float32(rng.NormFloat64())
	}
	for i := range 256 {
		xs[i] = 0
	}
	for _, tc := range []struct {
		typ gguf.TensorType
		max float64
	}{{gguf.Q8_0, 0.006}, {gguf.Q4_0, 0.09}, {gguf.Q4_K, 0.075}, {gguf.Q5_K, 0.038}, {gguf.Q6_K, 0.02}} {
		b := QuantizeAs(tc.typ, xs)
		if want, _ := tc.typ.Bytes(uint64(len(xs))); uint64(len(b)) != want {
			t.Fatalf("%s: %d bytes, want %d", tc.typ, len(b), want)
		}
		m := Matrix{Rows: 1, Cols: len(xs), Type: tc.typ, Data: b}
		out := make([]float32, len(xs))
		if err := m.Row(0, out); err != nil {
			t.Fatal(err)
		}
		var se, ss float64
		for i := range xs {
			d := float64(out[i] - xs[i])
			se += d * d
			ss += float64(xs[i]) * float64(xs[i])
		}
		for i := range 256 {
			if out[i] != 0 {
				t.Fatalf("%s: zero block decodes to %v at %d", tc.typ, out[i], i)
			}
		}
		if e := math.Sqrt(se / ss); e > tc.max {
			t.Errorf("%s: relative RMS error %.4f, want ≤ %.3f", tc.typ, e, tc.max)
		}
	}
}

// TestQuantKernels: each type's product with a quantised vector equals
// the float64 sum of its dequantised row times the vector's int8 values
// and scales, for rows of one and several blocks, with extreme values
// (levels at both ends, negative scales for Q6_K).
func TestQuantKernels(t *testing.T) {
	defer func(on, vnni bool) { useAVX2, useVNNI = on, vnni }(useAVX2, useVNNI)
	for _, asm := range []bool{false, avx2Available} {
		for _, vnni := range []bool{false, vnniAvailable} {
			useAVX2, useVNNI = asm, vnni
			testQuantKernels(t)
		}
	}
}

func testQuantKernels(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, typ := range quantTypes {
		for _, n := range []int{256, 768, 2048} {
			w := make([]float32, n)
			x := make([]float32, n)
			for i := range w {
				w[i], x[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
			}
			w[5], w[300%n] = 40, -40
			x[0], x[1] = 1000, -1000
			for i := 64; i < 96; i++ {
				w[i] = 3 + float32(i%5) // a sub-block with a positive minimum
			}
			row := QuantizeAs(typ, w)
			m := Matrix{Rows: 1, Cols: n, Type: typ, Data: row}
			wq := make([]float32, n)
			m.Row(0, wq)
			var v qvec
			quantizeVec(&v, x)
			var want float64
			for i := range wq {
				want += float64(wq[i]) * float64(v.q[i]) * float64(v.d[i/gguf.Q8Block])
			}
			got := dotQuant(typ, row, &v)
			if math.Abs(float64(got)-want) > 1e-4*math.Max(1, math.Abs(want)) {
				t.Errorf("%s, %d values (assembly %v): %v, float64 %v", typ, n, useAVX2, got, want)
			}
			if pair := map[gguf.TensorType]func([]byte, *qvec, *qvec, *[2]float32){gguf.Q4_K: dotQ4Kx2, gguf.Q5_K: dotQ5Kx2, gguf.Q6_K: dotQ6Kx2}[typ]; pair != nil && useAVX2 {
				// Two vectors at once: each bit-identical to one alone.
				var v2 qvec
				quantizeVec(&v2, w)
				var out [2]float32
				pair(row, &v, &v2, &out)
				if out[0] != got || out[1] != dotQuant(typ, row, &v2) {
					t.Errorf("%s two vectors (VNNI %v), %d values: %v, alone %v %v", typ, useVNNI, n, out, got, dotQuant(typ, row, &v2))
				}
			}
		}
	}
}
