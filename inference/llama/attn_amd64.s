#include "textflag.h"

// func attnScoresAVX2(q, k *float32, stride, hd, n int, scale float32, out *float32)
//
// out[i] = (q · k[i·stride : i·stride+hd]) · scale for n keys; hd is a
// multiple of 8. Two accumulators per key, summed lane-wise then across.
TEXT ·attnScoresAVX2(SB), NOSPLIT, $0-56
	MOVQ q+0(FP), SI
	MOVQ k+8(FP), DI
	MOVQ stride+16(FP), BX
	SHLQ $2, BX
	MOVQ hd+24(FP), R9
	MOVQ n+32(FP), CX
	VMOVSS scale+40(FP), X7
	MOVQ out+48(FP), DX

skey:
	TESTQ CX, CX
	JZ    sdone
	VXORPS Y0, Y0, Y0
	XORQ  AX, AX
	MOVQ  R9, R10

sdim:
	VMOVUPS (SI)(AX*4), Y1
	VFMADD231PS (DI)(AX*4), Y1, Y0
	ADDQ $8, AX
	SUBQ $8, R10
	JNZ  sdim
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VMULSS X7, X0, X0
	VMOVSS X0, (DX)
	ADDQ BX, DI
	ADDQ $4, DX
	DECQ CX
	JMP  skey

sdone:
	VZEROUPPER
	RET

// func attnAccumAVX2(out, w, v *float32, stride, hd, n int)
//
// out[j] += Σ_i w[i] · v[i·stride + j] for n values of hd (a multiple of 8)
// dimensions.
TEXT ·attnAccumAVX2(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DX
	MOVQ w+8(FP), SI
	MOVQ v+16(FP), DI
	MOVQ stride+24(FP), BX
	SHLQ $2, BX
	MOVQ hd+32(FP), R9
	MOVQ n+40(FP), CX

aval:
	TESTQ CX, CX
	JZ    adone2
	VBROADCASTSS (SI), Y7
	XORQ AX, AX
	MOVQ R9, R10

adim:
	VMOVUPS (DX)(AX*4), Y1
	VFMADD231PS (DI)(AX*4), Y7, Y1
	VMOVUPS Y1, (DX)(AX*4)
	ADDQ $8, AX
	SUBQ $8, R10
	JNZ  adim
	ADDQ BX, DI
	ADDQ $4, SI
	DECQ CX
	JMP  aval

adone2:
	VZEROUPPER
	RET

// EXPCONST loads the constants of EXP: log2 e (Y13), ln 2 in two parts
// (Y12, Y11), 1 (Y9).
#define EXPCONST \
	MOVL $0x3fb8aa3b, AX \
	VMOVD AX, X13 \
	VBROADCASTSS X13, Y13 \
	MOVL $0x3f318000, AX \
	VMOVD AX, X12 \
	VBROADCASTSS X12, Y12 \
	MOVL $0xb95e8083, AX \
	VMOVD AX, X11 \
	VBROADCASTSS X11, Y11 \
	MOVL $0x3f800000, AX \
	VMOVD AX, X9 \
	VBROADCASTSS X9, Y9

// EXP: Y3 = exp(Y0) for Y0 within [−87, 88] (Y1, Y2, Y4 clobbered): 2^k ·
// e^r with k = round(t·log2 e), r = t − k·ln 2 (ln 2 in two parts), e^r by
// Cephes' expf polynomial (within 2 ulp).
#define EXP \
	VMULPS Y13, Y0, Y1 \
	VROUNDPS $0, Y1, Y1 \
	VMOVAPS Y0, Y2 \
	VFNMADD231PS Y12, Y1, Y2 \
	VFNMADD231PS Y11, Y1, Y2 \
	MOVL $0x39506967, AX \
	VMOVD AX, X3 \
	VBROADCASTSS X3, Y3 \
	MOVL $0x3ab743ce, AX \
	VMOVD AX, X4 \
	VBROADCASTSS X4, Y4 \
	VFMADD213PS Y4, Y2, Y3 \
	MOVL $0x3c088908, AX \
	VMOVD AX, X4 \
	VBROADCASTSS X4, Y4 \
	VFMADD213PS Y4, Y2, Y3 \
	MOVL $0x3d2aa9c1, AX \
	VMOVD AX, X4 \
	VBROADCASTSS X4, Y4 \
	VFMADD213PS Y4, Y2, Y3 \
	MOVL $0x3e2aaaaa, AX \
	VMOVD AX, X4 \
	VBROADCASTSS X4, Y4 \
	VFMADD213PS Y4, Y2, Y3 \
	MOVL $0x3f000000, AX \
	VMOVD AX, X4 \
	VBROADCASTSS X4, Y4 \
	VFMADD213PS Y4, Y2, Y3 \
	VMULPS Y2, Y2, Y4 \
	VFMADD213PS Y2, Y4, Y3 \
	VADDPS Y9, Y3, Y3 \
	VCVTPS2DQ Y1, Y1 \
	VPSLLD $23, Y1, Y1 \
	VPADDD Y1, Y3, Y3

// func expSubAVX2(x *float32, n int, m float32) float32
//
// x[i] = exp(x[i] − m) in place (x[i] ≤ m), returning their sum; n is a
// multiple of 8. t = x[i] − m below −87 (e^t < 1.7e-38) gives 0.
TEXT ·expSubAVX2(SB), NOSPLIT, $0-28
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS m+16(FP), Y15
	VXORPS Y14, Y14, Y14 // sum
	EXPCONST
	MOVL $0xc2ae0000, AX // −87
	VMOVD AX, X10
	VBROADCASTSS X10, Y10

eloop:
	TESTQ CX, CX
	JZ    edone
	VMOVUPS (SI), Y0
	VSUBPS Y15, Y0, Y0 // t
	VCMPPS $1, Y10, Y0, Y8 // t < −87: the lanes that give 0
	VMAXPS Y10, Y0, Y0
	EXP
	VANDNPS Y3, Y8, Y3
	VMOVUPS Y3, (SI)
	VADDPS Y3, Y14, Y14
	ADDQ $32, SI
	SUBQ $8, CX
	JMP  eloop

edone:
	VEXTRACTF128 $1, Y14, X1
	VADDPS X1, X14, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// func siluMulAVX2(gate, u *float32, n int)
//
// g[i] = g[i] / (1 + exp(−g[i])) · u[i] (SwiGLU); n is a multiple of 8.
// exp's argument is clamped to [−87, 88]: beyond, silu is g or 0 to
// within float32.
TEXT ·siluMulAVX2(SB), NOSPLIT, $0-24
	MOVQ gate+0(FP), SI
	MOVQ u+8(FP), DI
	MOVQ n+16(FP), CX
	EXPCONST
	MOVL $0xc2ae0000, AX // −87
	VMOVD AX, X10
	VBROADCASTSS X10, Y10
	MOVL $0x42b00000, AX // 88
	VMOVD AX, X8
	VBROADCASTSS X8, Y8
	VXORPS Y7, Y7, Y7

sloop:
	TESTQ CX, CX
	JZ    sdone2
	VMOVUPS (SI), Y6 // g
	VSUBPS Y6, Y7, Y0 // −g
	VMAXPS Y10, Y0, Y0
	VMINPS Y8, Y0, Y0
	EXP
	VADDPS Y9, Y3, Y3 // 1 + e^−g
	VMULPS (DI), Y6, Y6 // g·u
	VDIVPS Y3, Y6, Y6
	VMOVUPS Y6, (SI)
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP  sloop

sdone2:
	VZEROUPPER
	RET
