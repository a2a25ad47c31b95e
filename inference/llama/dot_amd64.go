package llama

import "golang.org/x/sys/cpu"

// avx2Available: every CPU with AVX2 and FMA (Haswell and later, AMD
// Piledriver and later) also has F16C, which the Q8_0 kernel uses for the
// block scales.
var avx2Available = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// useAVX2 selects the assembly kernels.
var useAVX2 = avx2Available

// vnniAvailable: AVX512-VNNI on 256-bit registers (VPDPBUSD, EVEX with
// AVX512VL, and the sixteen more registers Y16–Y31), used by the batched
// kernels; useVNNI selects it.
var vnniAvailable = avx2Available && cpu.X86.HasAVX512F && cpu.X86.HasAVX512VNNI && cpu.X86.HasAVX512VL

var useVNNI = vnniAvailable

//go:noescape
func dotQ8AVX2(w *byte, xq *int8, xd *float32, n int) float32

//go:noescape
func dotF32AVX2(w, x *float32, n int) float32

//go:noescape
func dotQ8x4AVX2(w *byte, stride int, xq *int8, xd *float32, n int, out *[4]float32)

//go:noescape
func axpyAVX2(y *float32, a float32, x *float32, n int)

//go:noescape
func dotQ4KAVX2(w *byte, xq *int8, xd *float32, xs *int32, nsb int) float32

//go:noescape
func dotQ6KAVX2(w *byte, xq *int8, xd *float32, nsb int) float32

//go:noescape
func dotF16AVX2(w *uint16, x *float32, n int) float32

//go:noescape
func dotQ5KAVX2(w *byte, xq *int8, xd *float32, xs *int32, nsb int) float32

//go:noescape
func dotQ40AVX2(w *byte, xq *int8, xd *float32, n int) float32

//go:noescape
func quantizeQ8AVX2(x *float32, q *int8, d *float32, s *int32, n int)

//go:noescape
func attnScoresAVX2(q, k *float32, stride, hd, n int, scale float32, out *float32)

//go:noescape
func attnAccumAVX2(out, w, v *float32, stride, hd, n int)

//go:noescape
func expSubAVX2(x *float32, n int, m float32) float32

//go:noescape
func siluMulAVX2(gate, u *float32, n int)

//go:noescape
func dotQ8x4x2AVX2(w *byte, stride int, xq0 *int8, xd0 *float32, xq1 *int8, xd1 *float32, n int, out *[8]float32)

//go:noescape
func dotQ8x4x2VNNI(w *byte, stride int, xq0 *int8, xd0 *float32, xq1 *int8, xd1 *float32, n int, out *[8]float32)

//go:noescape
func dotQ8x4VNNI(w *byte, stride int, xq *int8, xd *float32, n int, out *[4]float32)

//go:noescape
func dotQ4Kx2AVX2(w *byte, xq0 *int8, xd0 *float32, xs0 *int32, xq1 *int8, xd1 *float32, xs1 *int32, nsb int, out *[2]float32)

//go:noescape
func dotQ4Kx2VNNI(w *byte, xq0 *int8, xd0 *float32, xs0 *int32, xq1 *int8, xd1 *float32, xs1 *int32, nsb int, out *[2]float32)

//go:noescape
func dotBF16AVX2(w *uint16, x *float32, n int) float32

//go:noescape
func dotQ6Kx2AVX2(w *byte, xq0 *int8, xd0 *float32, xq1 *int8, xd1 *float32, nsb int, out *[2]float32)

//go:noescape
func dotF16x2AVX2(w *uint16, x0, x1 *float32, n int, out *[2]float32)

//go:noescape
func dotQ8x4x4VNNI(w *byte, stride int, xq *[4]*int8, xd *[4]*float32, n int, out *[16]float32)

//go:noescape
func dotQ5Kx2AVX2(w *byte, xq0 *int8, xd0 *float32, xs0 *int32, xq1 *int8, xd1 *float32, xs1 *int32, nsb int, out *[2]float32)

//go:noescape
func dotQ5Kx2VNNI(w *byte, xq0 *int8, xd0 *float32, xs0 *int32, xq1 *int8, xd1 *float32, xs1 *int32, nsb int, out *[2]float32)
