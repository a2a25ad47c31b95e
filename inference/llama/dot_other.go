//go:build !amd64

package llama

const avx2Available = false

var useAVX2 = false

const vnniAvailable = false

var useVNNI = false

func dotQ8AVX2(w *byte, xq *int8, xd *float32, n int) float32 { panic("no AVX2") }

func dotF32AVX2(w, x *float32, n int) float32 { panic("no AVX2") }

func dotQ8x4AVX2(w *byte, stride int, xq *int8, xd *float32, n int, out *[4]float32) {
	panic("no AVX2")
}

func axpyAVX2(y *float32, a float32, x *float32, n int) { panic("no AVX2") }

func dotQ4KAVX2(w *byte, xq *int8, xd *float32, xs *int32, nsb int) float32 { panic("no AVX2") }

func dotQ6KAVX2(w *byte, xq *int8, xd *float32, nsb int) float32 { panic("no AVX2") }

func dotF16AVX2(w *uint16, x *float32, n int) float32 { panic("no AVX2") }

func dotQ5KAVX2(w *byte, xq *int8, xd *float32, xs *int32, nsb int) float32 { panic("no AVX2") }

func dotQ40AVX2(w *byte, xq *int8, xd *float32, n int) float32 { panic("no AVX2") }

func quantizeQ8AVX2(x *float32, q *int8, d *float32, s *int32, n int) { panic("no AVX2") }

func attnScoresAVX2(q, k *float32, stride, hd, n int, scale float32, out *float32) { panic("no AVX2") }

func attnAccumAVX2(out, w, v *float32, stride, hd, n int) { panic("no AVX2") }

func expSubAVX2(x *float32, n int, m float32) float32 { panic("no AVX2") }

func siluMulAVX2(gate, u *float32, n int) { panic("no AVX2") }

func dotQ8x4x2AVX2(w *byte, stride int, xq0 *int8, xd0 *float32, xq1 *int8, xd1 *float32, n int, out *[8]float32) {
	panic("no AVX2")
}

func dotQ8x4x2VNNI(w *byte, stride int, xq0 *int8, xd0 *float32, xq1 *int8, xd1 *float32, n int, out *[8]float32) {
	panic("no AVX512-VNNI")
}

func dotQ8x4VNNI(w *byte, stride int, xq *int8, xd *float32, n int, out *[4]float32) {
	panic("no AVX512-VNNI")
}

func dotQ4Kx2AVX2(w *byte, xq0 *int8, xd0 *float32, xs0 *int32, xq1 *int8, xd1 *float32, xs1 *int32, nsb int, out *[2]float32) {
	panic("no AVX2")
}

func dotQ4Kx2VNNI(w *byte, xq0 *int8, xd0 *float32, xs0 *int32, xq1 *int8, xd1 *float32, xs1 *int32, nsb int, out *[2]float32) {
	panic("no AVX512-VNNI")
}

func dotBF16AVX2(w *uint16, x *float32, n int) float32 { panic("no AVX2") }

func dotQ6Kx2AVX2(w *byte, xq0 *int8, xd0 *float32, xq1 *int8, xd1 *float32, nsb int, out *[2]float32) {
	panic("no AVX2")
}

func dotF16x2AVX2(w *uint16, x0, x1 *float32, n int, out *[2]float32) { panic("no AVX2") }

func dotQ8x4x4VNNI(w *byte, stride int, xq *[4]*int8, xd *[4]*float32, n int, out *[16]float32) {
	panic("no AVX512-VNNI")
}

func dotQ5Kx2AVX2(w *byte, xq0 *int8, xd0 *float32, xs0 *int32, xq1 *int8, xd1 *float32, xs1 *int32, nsb int, out *[2]float32) {
	panic("no AVX2")
}

func dotQ5Kx2VNNI(w *byte, xq0 *int8, xd0 *float32, xs0 *int32, xq1 *int8, xd1 *float32, xs1 *int32, nsb int, out *[2]float32) {
	panic("no AVX512-VNNI")
}
