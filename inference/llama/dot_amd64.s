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
	LEAQ (SI)(BX*1), R8
	LEAQ (R8)(BX*1), R9
	LEAQ (R9)(BX*1), R10
	LEAQ (BX)(BX*2), R11
	ADDQ BX, R11 // 4·stride
	VXORPS Y0, Y0, Y0
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	VPCMPEQW Y7, Y7, Y7
	VPSRLW $15, Y7, Y7

loop4:
	TESTQ CX, CX
	JZ    done4
	VMOVDQU (DI), Y2
	VBROADCASTSS (DX), Y8
	// The next four rows follow these: fetch them while these are done.
	PREFETCHT0 (SI)(R11*1)
	PREFETCHT0 (R8)(R11*1)
	PREFETCHT0 (R9)(R11*1)
	PREFETCHT0 (R10)(R11*1)
	ROW4(SI, Y0)
	ROW4(R8, Y9)
	ROW4(R9, Y10)
	ROW4(R10, Y11)
	ADDQ $34, SI
	ADDQ $34, R8
	ADDQ $34, R9
	ADDQ $34, R10
	ADDQ $32, DI
	ADDQ $4, DX
	DECQ CX
	JMP  loop4

done4:
	// Per row: lanes (0+1)+(2+3) and (4+5)+(6+7), then their sum, as in
	// dotQ8AVX2.
	VHADDPS Y9, Y0, Y0
	VHADDPS Y11, Y10, Y10
	VHADDPS Y10, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VMOVUPS X0, (AX)
	VZEROUPPER
	RET

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
