#include "textflag.h"

// func dotQ8AVX2(w *byte, xq *int8, xd *float32, n int) float32
//
// Σ_k f16(w[k].d) · xd[k] · Σ_i w[k].q[i] · xq[32k+i] over n Q8_0 blocks of
// 34 bytes (a half-precision scale, then 32 int8). The int8 products are
// summed exactly in integers (|q| ≤ 127 keeps VPMADDUBSW from saturating);
// each block's eight partial sums are scaled into eight float lanes, and
// the lanes are summed at the end: exactly what dotQ8x4AVX2 does for each
// of its rows, so a row's result does not depend on which kernel ran it.
TEXT ·dotQ8AVX2(SB), NOSPLIT, $0-36
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), DX
	MOVQ n+24(FP), CX
	VXORPS Y0, Y0, Y0
	VPCMPEQW Y7, Y7, Y7
	VPSRLW $15, Y7, Y7 // sixteen int16 ones

loop1:
	TESTQ CX, CX
	JZ    done1
	VMOVDQU (DI), Y2
	VBROADCASTSS (DX), Y8
	VMOVDQU 2(SI), Y1
	VPSIGNB Y1, Y1, Y3
	VPSIGNB Y1, Y2, Y4
	VPMADDUBSW Y4, Y3, Y5
	VPMADDWD Y7, Y5, Y5
	VCVTDQ2PS Y5, Y5
	VPBROADCASTW (SI), X6
	VCVTPH2PS X6, Y6
	VMULPS Y8, Y6, Y6
	VFMADD231PS Y6, Y5, Y0
	ADDQ $34, SI
	ADDQ $32, DI
	ADDQ $4, DX
	DECQ CX
	JMP  loop1

done1:
	VHADDPS Y0, Y0, Y0
	VHADDPS Y0, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VZEROUPPER
	MOVSS X0, ret+32(FP)
	RET

// ROW4 is one row's share of a block in dotQ8x4AVX2: the row at ptr,
// accumulated into acc (Y2 holds x's int8, Y8 x's scale, Y7 int16 ones).
#define ROW4(ptr, acc) \
	VMOVDQU 2(ptr), Y1 \
	VPSIGNB Y1, Y1, Y3 \
	VPSIGNB Y1, Y2, Y4 \
	VPMADDUBSW Y4, Y3, Y5 \
	VPMADDWD Y7, Y5, Y5 \
	VCVTDQ2PS Y5, Y5 \
	VPBROADCASTW (ptr), X6 \
	VCVTPH2PS X6, Y6 \
	VMULPS Y8, Y6, Y6 \
	VFMADD231PS Y6, Y5, acc

// Q8X4BODY is the body of the four-row kernels after their arguments are
// loaded: ROW is the per-row step (ROW4, or ROW4VNNI), lp and dn its labels.
#define Q8X4BODY(ROW, lp, dn) \
	LEAQ (SI)(BX*1), R8 \
	LEAQ (R8)(BX*1), R9 \
	LEAQ (R9)(BX*1), R10 \
	LEAQ (BX)(BX*2), R11 \
	ADDQ BX, R11 \
	VXORPS Y0, Y0, Y0 \
	VXORPS Y9, Y9, Y9 \
	VXORPS Y10, Y10, Y10 \
	VXORPS Y11, Y11, Y11 \
	VPCMPEQW Y7, Y7, Y7 \
	VPSRLW $15, Y7, Y7 \
lp: \
	TESTQ CX, CX \
	JZ    dn \
	VMOVDQU (DI), Y2 \
	VBROADCASTSS (DX), Y8 \
	PREFETCHT0 (SI)(R11*1) \
	PREFETCHT0 (R8)(R11*1) \
	PREFETCHT0 (R9)(R11*1) \
	PREFETCHT0 (R10)(R11*1) \
	ROW(SI, Y0) \
	ROW(R8, Y9) \
	ROW(R9, Y10) \
	ROW(R10, Y11) \
	ADDQ $34, SI \
	ADDQ $34, R8 \
	ADDQ $34, R9 \
	ADDQ $34, R10 \
	ADDQ $32, DI \
	ADDQ $4, DX \
	DECQ CX \
	JMP  lp \
dn: \
	VHADDPS Y9, Y0, Y0 \
	VHADDPS Y11, Y10, Y10 \
	VHADDPS Y10, Y0, Y0 \
	VEXTRACTF128 $1, Y0, X1 \
	VADDPS X1, X0, X0 \
	VMOVUPS X0, (AX) \
	VZEROUPPER \
	RET

// func dotQ8x4AVX2(w *byte, stride int, xq *int8, xd *float32, n int, out *[4]float32)
//
// dotQ8AVX2 for the four rows at w, w+stride, w+2·stride and w+3·stride:
// x is loaded once for all four, and the four chains of additions overlap.
TEXT ·dotQ8x4AVX2(SB), NOSPLIT, $0-48
	MOVQ w+0(FP), SI
	MOVQ stride+8(FP), BX
	MOVQ xq+16(FP), DI
	MOVQ xd+24(FP), DX
	MOVQ n+32(FP), CX
	MOVQ out+40(FP), AX
	Q8X4BODY(ROW4, loop4, done4)

// ROW4VNNI is ROW4 with the block's int8 products summed by VPDPBUSD.
#define ROW4VNNI(ptr, acc) \
	VMOVDQU 2(ptr), Y1 \
	VPSIGNB Y1, Y1, Y3 \
	VPSIGNB Y1, Y2, Y4 \
	VPXOR Y5, Y5, Y5 \
	VPDPBUSD Y4, Y3, Y5 \
	VCVTDQ2PS Y5, Y5 \
	VPBROADCASTW (ptr), X6 \
	VCVTPH2PS X6, Y6 \
	VMULPS Y8, Y6, Y6 \
	VFMADD231PS Y6, Y5, acc

// func dotQ8x4VNNI(w *byte, stride int, xq *int8, xd *float32, n int, out *[4]float32)
//
// dotQ8x4AVX2 with VPDPBUSD (AVX512-VNNI) for each block's integer sums:
// the same sums, the same results bit for bit.
//
// dotQ8AVX2 for the four rows at w, w+stride, w+2·stride and w+3·stride:
// x is loaded once for all four, and the four chains of additions overlap.
TEXT ·dotQ8x4VNNI(SB), NOSPLIT, $0-48
	MOVQ w+0(FP), SI
	MOVQ stride+8(FP), BX
	MOVQ xq+16(FP), DI
	MOVQ xd+24(FP), DX
	MOVQ n+32(FP), CX
	MOVQ out+40(FP), AX
	Q8X4BODY(ROW4VNNI, loop4v, done4v)

// func dotF32AVX2(w, x *float32, n int) float32
// Σ w[i]·x[i] with four eight-lane FMA accumulators; n is a multiple of 32.
TEXT ·dotF32AVX2(SB), NOSPLIT, $0-28
	MOVQ w+0(FP), SI
	MOVQ x+8(FP), DI
	MOVQ n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

floop:
	TESTQ CX, CX
	JZ    fdone
	VMOVUPS (SI), Y4
	VMOVUPS 32(SI), Y5
	VMOVUPS 64(SI), Y6
	VMOVUPS 96(SI), Y7
	VFMADD231PS (DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ $128, SI
	ADDQ $128, DI
	SUBQ $32, CX
	JMP  floop

fdone:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// func axpyAVX2(y *float32, a float32, x *float32, n int)
// y[i] += a·x[i]; n is a multiple of 8.
TEXT ·axpyAVX2(SB), NOSPLIT, $0-32
	MOVQ y+0(FP), DI
	VBROADCASTSS a+8(FP), Y0
	MOVQ x+16(FP), SI
	MOVQ n+24(FP), CX

aloop:
	TESTQ CX, CX
	JZ    adone
	VMOVUPS (DI), Y1
	VFMADD231PS (SI), Y0, Y1
	VMOVUPS Y1, (DI)
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP  aloop

adone:
	VZEROUPPER
	RET

DATA ones16<>+0(SB)/8, $0x0001000100010001
DATA ones16<>+8(SB)/8, $0x0001000100010001
DATA ones16<>+16(SB)/8, $0x0001000100010001
DATA ones16<>+24(SB)/8, $0x0001000100010001
GLOBL ones16<>(SB), RODATA|NOPTR, $32

// X2ROW is one row's share of a block in dotQ8x4x2AVX2: the row at ptr
// times both vectors (Y9, Y10 their int8; xd0, xd1 their scales), into
// acc0 and acc1.
#define X2ROW(ptr, acc0, acc1) \
	VMOVDQU 2(ptr), Y14 \
	VPSIGNB Y14, Y14, Y13 \
	VPBROADCASTW (ptr), X15 \
	VCVTPH2PS X15, Y15 \
	VPSIGNB Y14, Y9, Y8 \
	VPMADDUBSW Y8, Y13, Y8 \
	VPMADDWD ones16<>(SB), Y8, Y8 \
	VCVTDQ2PS Y8, Y8 \
	VBROADCASTSS (DX), Y11 \
	VMULPS Y11, Y15, Y11 \
	VFMADD231PS Y11, Y8, acc0 \
	VPSIGNB Y14, Y10, Y8 \
	VPMADDUBSW Y8, Y13, Y8 \
	VPMADDWD ones16<>(SB), Y8, Y8 \
	VCVTDQ2PS Y8, Y8 \
	VBROADCASTSS (R13), Y11 \
	VMULPS Y11, Y15, Y11 \
	VFMADD231PS Y11, Y8, acc1

// X2SUM stores acc's sum to off(AX) as dotQ8AVX2 sums its lanes.
#define X2SUM(acc, xacc, off) \
	VHADDPS acc, acc, acc \
	VHADDPS acc, acc, acc \
	VEXTRACTF128 $1, acc, X8 \
	VADDPS X8, xacc, xacc \
	VMOVSS xacc, off(AX)

// X2BODY is the body of the four-row, two-vector kernels after their
// arguments are loaded: ROW is the per-row step (X2ROW, or X2ROWVNNI).
#define X2BODY(ROW, lp, dn) \
	LEAQ (SI)(BX*1), R8 \
	LEAQ (R8)(BX*1), R9 \
	LEAQ (R9)(BX*1), R10 \
	VXORPS Y0, Y0, Y0 \
	VXORPS Y1, Y1, Y1 \
	VXORPS Y2, Y2, Y2 \
	VXORPS Y3, Y3, Y3 \
	VXORPS Y4, Y4, Y4 \
	VXORPS Y5, Y5, Y5 \
	VXORPS Y6, Y6, Y6 \
	VXORPS Y7, Y7, Y7 \
lp: \
	TESTQ CX, CX \
	JZ    dn \
	VMOVDQU (DI), Y9 \
	VMOVDQU (R12), Y10 \
	ROW(SI, Y0, Y1) \
	ROW(R8, Y2, Y3) \
	ROW(R9, Y4, Y5) \
	ROW(R10, Y6, Y7) \
	ADDQ $34, SI \
	ADDQ $34, R8 \
	ADDQ $34, R9 \
	ADDQ $34, R10 \
	ADDQ $32, DI \
	ADDQ $32, R12 \
	ADDQ $4, DX \
	ADDQ $4, R13 \
	DECQ CX \
	JMP  lp \
dn: \
	X2SUM(Y0, X0, 0) \
	X2SUM(Y1, X1, 4) \
	X2SUM(Y2, X2, 8) \
	X2SUM(Y3, X3, 12) \
	X2SUM(Y4, X4, 16) \
	X2SUM(Y5, X5, 20) \
	X2SUM(Y6, X6, 24) \
	X2SUM(Y7, X7, 28) \
	VZEROUPPER \
	RET

// func dotQ8x4x2AVX2(w *byte, stride int, xq0 *int8, xd0 *float32, xq1 *int8, xd1 *float32, n int, out *[8]float32)
//
// dotQ8AVX2 for four rows (w + i·stride) times two vectors at once: each
// block of x is loaded once for four rows, each row's block once for two
// vectors; out[2i+v] is row i times vector v, bit-identical to dotQ8AVX2's.
TEXT ·dotQ8x4x2AVX2(SB), NOSPLIT, $0-64
	MOVQ w+0(FP), SI
	MOVQ stride+8(FP), BX
	MOVQ xq0+16(FP), DI
	MOVQ xd0+24(FP), DX
	MOVQ xq1+32(FP), R12
	MOVQ xd1+40(FP), R13
	MOVQ n+48(FP), CX
	MOVQ out+56(FP), AX
	X2BODY(X2ROW, x2loop, x2done)

// X2ROWVNNI is X2ROW with each block's int8 products summed by VPDPBUSD
// (AVX512-VNNI on 256-bit registers): the same exact int32 lane sums as
// VPMADDUBSW+VPMADDWD, so the same results, bit for bit.
#define X2ROWVNNI(ptr, acc0, acc1) \
	VMOVDQU 2(ptr), Y14 \
	VPSIGNB Y14, Y14, Y13 \
	VPBROADCASTW (ptr), X15 \
	VCVTPH2PS X15, Y15 \
	VPSIGNB Y14, Y9, Y8 \
	VPXOR Y12, Y12, Y12 \
	VPDPBUSD Y8, Y13, Y12 \
	VCVTDQ2PS Y12, Y12 \
	VBROADCASTSS (DX), Y11 \
	VMULPS Y11, Y15, Y11 \
	VFMADD231PS Y11, Y12, acc0 \
	VPSIGNB Y14, Y10, Y8 \
	VPXOR Y12, Y12, Y12 \
	VPDPBUSD Y8, Y13, Y12 \
	VCVTDQ2PS Y12, Y12 \
	VBROADCASTSS (R13), Y11 \
	VMULPS Y11, Y15, Y11 \
	VFMADD231PS Y11, Y12, acc1

// func dotQ8x4x2VNNI(w *byte, stride int, xq0 *int8, xd0 *float32, xq1 *int8, xd1 *float32, n int, out *[8]float32)
TEXT ·dotQ8x4x2VNNI(SB), NOSPLIT, $0-64
	MOVQ w+0(FP), SI
	MOVQ stride+8(FP), BX
	MOVQ xq0+16(FP), DI
	MOVQ xd0+24(FP), DX
	MOVQ xq1+32(FP), R12
	MOVQ xd1+40(FP), R13
	MOVQ n+48(FP), CX
	MOVQ out+56(FP), AX
	X2BODY(X2ROWVNNI, v2loop, v2done)

// func dotBF16AVX2(w *uint16, x *float32, n int) float32
// Σ w[i]·x[i] for bfloat16 w (widened in the kernel: the top half of a
// float32) with four eight-lane FMA accumulators; n is a multiple of 32.
TEXT ·dotBF16AVX2(SB), NOSPLIT, $0-28
	MOVQ w+0(FP), SI
	MOVQ x+8(FP), DI
	MOVQ n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

bloop:
	TESTQ CX, CX
	JZ    bdone
	VPMOVZXWD (SI), Y4
	VPMOVZXWD 16(SI), Y5
	VPMOVZXWD 32(SI), Y6
	VPMOVZXWD 48(SI), Y7
	VPSLLD $16, Y4, Y4
	VPSLLD $16, Y5, Y5
	VPSLLD $16, Y6, Y6
	VPSLLD $16, Y7, Y7
	VFMADD231PS (DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ $64, SI
	ADDQ $128, DI
	SUBQ $32, CX
	JMP  bloop

bdone:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// func dotF16x2AVX2(w *uint16, x0, x1 *float32, n int, out *[2]float32)
// dotF16AVX2 for two vectors: each chunk of the row converted once; each
// vector's four accumulators and their sum as dotF16AVX2's (bit-identical).
TEXT ·dotF16x2AVX2(SB), NOSPLIT, $0-40
	MOVQ w+0(FP), SI
	MOVQ x0+8(FP), DI
	MOVQ x1+16(FP), R8
	MOVQ n+24(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11

h2loop:
	TESTQ CX, CX
	JZ    h2done
	VCVTPH2PS (SI), Y4
	VCVTPH2PS 16(SI), Y5
	VCVTPH2PS 32(SI), Y6
	VCVTPH2PS 48(SI), Y7
	VFMADD231PS (DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	VFMADD231PS (R8), Y4, Y8
	VFMADD231PS 32(R8), Y5, Y9
	VFMADD231PS 64(R8), Y6, Y10
	VFMADD231PS 96(R8), Y7, Y11
	ADDQ $64, SI
	ADDQ $128, DI
	ADDQ $128, R8
	SUBQ $32, CX
	JMP  h2loop

h2done:
	MOVQ out+32(FP), AX
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VMOVSS X0, (AX)
	VADDPS Y9, Y8, Y8
	VADDPS Y11, Y10, Y10
	VADDPS Y10, Y8, Y8
	VEXTRACTF128 $1, Y8, X9
	VADDPS X9, X8, X8
	VHADDPS X8, X8, X8
	VHADDPS X8, X8, X8
	VMOVSS X8, 4(AX)
	VZEROUPPER
	RET

// X4PAIR: row (w in Y14, |w| in Y13, its scale in Y15) times vector v
// (int8 in xv, scale broadcast in xdv) into acc (an EVEX-only register).
#define X4PAIR(xv, xdv, acc) \
	VPSIGNB Y14, xv, Y8 \
	VPXOR Y7, Y7, Y7 \
	VPDPBUSD Y8, Y13, Y7 \
	VCVTDQ2PS Y7, Y7 \
	VMULPS xdv, Y15, Y6 \
	VFMADD231PS Y6, Y7, acc

#define X4ROW(ptr, a0, a1, a2, a3) \
	VMOVDQU 2(ptr), Y14 \
	VPSIGNB Y14, Y14, Y13 \
	VPBROADCASTW (ptr), X15 \
	VCVTPH2PS X15, Y15 \
	X4PAIR(Y9, Y0, a0) \
	X4PAIR(Y10, Y1, a1) \
	X4PAIR(Y11, Y2, a2) \
	X4PAIR(Y12, Y3, a3)

// X4SUM stores acc's sum (moved to Y4 first: VHADDPS has no EVEX form) to
// off(AX), as dotQ8AVX2 sums its lanes.
#define X4SUM(acc, off) \
	VMOVAPS acc, Y4 \
	VHADDPS Y4, Y4, Y4 \
	VHADDPS Y4, Y4, Y4 \
	VEXTRACTF128 $1, Y4, X5 \
	VADDPS X5, X4, X4 \
	VMOVSS X4, off(AX)

// func dotQ8x4x4VNNI(w *byte, stride int, xq *[4]*int8, xd *[4]*float32, n int, out *[16]float32)
//
// dotQ8AVX2 for four rows times four vectors (AVX512-VNNI with AVX512VL:
// the sixteen accumulators live in Y16–Y31): out[4i+v] is row i times
// vector v, bit-identical to dotQ8AVX2's.
TEXT ·dotQ8x4x4VNNI(SB), NOSPLIT, $0-48
	MOVQ w+0(FP), SI
	MOVQ stride+8(FP), BX
	MOVQ xq+16(FP), AX
	MOVQ 0(AX), DI
	MOVQ 8(AX), R11
	MOVQ 16(AX), R12
	MOVQ 24(AX), R13
	MOVQ xd+24(FP), AX
	MOVQ 0(AX), DX
	MOVQ 8(AX), R14
	MOVQ 16(AX), R15
	MOVQ 24(AX), AX
	MOVQ n+32(FP), CX
	LEAQ (SI)(BX*1), R8
	LEAQ (R8)(BX*1), R9
	LEAQ (R9)(BX*1), R10
	VPXORD Y16, Y16, Y16
	VPXORD Y17, Y17, Y17
	VPXORD Y18, Y18, Y18
	VPXORD Y19, Y19, Y19
	VPXORD Y20, Y20, Y20
	VPXORD Y21, Y21, Y21
	VPXORD Y22, Y22, Y22
	VPXORD Y23, Y23, Y23
	VPXORD Y24, Y24, Y24
	VPXORD Y25, Y25, Y25
	VPXORD Y26, Y26, Y26
	VPXORD Y27, Y27, Y27
	VPXORD Y28, Y28, Y28
	VPXORD Y29, Y29, Y29
	VPXORD Y30, Y30, Y30
	VPXORD Y31, Y31, Y31

x4loop:
	TESTQ CX, CX
	JZ    x4done
	VMOVDQU (DI), Y9
	VMOVDQU (R11), Y10
	VMOVDQU (R12), Y11
	VMOVDQU (R13), Y12
	VBROADCASTSS (DX), Y0
	VBROADCASTSS (R14), Y1
	VBROADCASTSS (R15), Y2
	VBROADCASTSS (AX), Y3
	X4ROW(SI, Y16, Y17, Y18, Y19)
	X4ROW(R8, Y20, Y21, Y22, Y23)
	X4ROW(R9, Y24, Y25, Y26, Y27)
	X4ROW(R10, Y28, Y29, Y30, Y31)
	ADDQ $34, SI
	ADDQ $34, R8
	ADDQ $34, R9
	ADDQ $34, R10
	ADDQ $32, DI
	ADDQ $32, R11
	ADDQ $32, R12
	ADDQ $32, R13
	ADDQ $4, DX
	ADDQ $4, R14
	ADDQ $4, R15
	ADDQ $4, AX
	DECQ CX
	JMP  x4loop

x4done:
	MOVQ out+40(FP), AX
	X4SUM(Y16, 0)
	X4SUM(Y17, 4)
	X4SUM(Y18, 8)
	X4SUM(Y19, 12)
	X4SUM(Y20, 16)
	X4SUM(Y21, 20)
	X4SUM(Y22, 24)
	X4SUM(Y23, 28)
	X4SUM(Y24, 32)
	X4SUM(Y25, 36)
	X4SUM(Y26, 40)
	X4SUM(Y27, 44)
	X4SUM(Y28, 48)
	X4SUM(Y29, 52)
	X4SUM(Y30, 56)
	X4SUM(Y31, 60)
	VZEROUPPER
	RET
