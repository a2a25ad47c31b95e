#include "textflag.h"

// func dotQ4KAVX2(w *byte, xq *int8, xd *float32, xs *int32, nsb int) float32
//
// A Q4_K row of nsb super-blocks times a vector quantised in blocks of 32
// (int8 xq, scale xd, sum xs per block). Per super-block: its 6-bit scales
// and mins unpacked to bytes (scales 0–3 are the low six bits of bytes
// 0–3, mins 0–3 of bytes 4–7; scales and mins 4–7 the nibbles of bytes
// 8–11 with their top two bits in the top bits of bytes 0–7); the factor
// d·scale·xd of each sub-block kept on the stack; each sub-block's 32
// nibbles times the vector's int8 summed exactly in integers (VPMADDUBSW:
// nibble × int8, pairs ≤ 3810) and added as floats times its factor; the
// minimums, dmin·min·xd·Σxq, summed in eight lanes apart and subtracted
// at the end.
TEXT ·dotQ4KAVX2(SB), NOSPLIT, $32-44
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), DX
	MOVQ xs+24(FP), R8
	MOVQ nsb+32(FP), CX
	VXORPS Y0, Y0, Y0 // Σ products
	VXORPS Y9, Y9, Y9 // Σ minimums
	VPCMPEQW Y7, Y7, Y7
	VPSRLW $15, Y7, Y7 // sixteen int16 ones
	MOVL $0x0f0f0f0f, AX
	VMOVD AX, X10
	VPBROADCASTD X10, Y10 // low-nibble mask

kloop:
	TESTQ CX, CX
	JZ    kdone
	// Unpack the scales (R10: 0–3, R11: 4–7) and mins (R12: 0–3, R13: 4–7).
	MOVL 4(SI), AX
	MOVL 8(SI), BX
	MOVL 12(SI), R9
	MOVL AX, R10
	ANDL $0x3f3f3f3f, R10
	MOVL BX, R12
	ANDL $0x3f3f3f3f, R12
	MOVL R9, R11
	ANDL $0x0f0f0f0f, R11
	SHRL $6, AX
	ANDL $0x03030303, AX
	SHLL $4, AX
	ORL  AX, R11
	MOVL R9, R13
	SHRL $4, R13
	ANDL $0x0f0f0f0f, R13
	SHRL $6, BX
	ANDL $0x03030303, BX
	SHLL $4, BX
	ORL  BX, R13
	VMOVD R10, X1
	VPINSRD $1, R11, X1, X1
	VPMOVZXBD X1, Y1
	VCVTDQ2PS Y1, Y1 // scales
	VMOVD R12, X2
	VPINSRD $1, R13, X2, X2
	VPMOVZXBD X2, Y2
	VCVTDQ2PS Y2, Y2 // mins
	VPBROADCASTW (SI), X3
	VCVTPH2PS X3, Y3 // d
	VPBROADCASTW 2(SI), X4
	VCVTPH2PS X4, Y4 // dmin
	VMOVUPS (DX), Y5 // the eight blocks' xd
	VMULPS Y3, Y1, Y1
	VMULPS Y5, Y1, Y1
	VMOVUPS Y1, 0(SP) // factor per sub-block
	VMULPS Y4, Y2, Y2
	VMULPS Y5, Y2, Y2
	VMOVDQU (R8), Y6
	VCVTDQ2PS Y6, Y6
	VFMADD231PS Y6, Y2, Y9

#define Q4KPAIR(off, xoff, f0, f1) \
	VMOVDQU off(SI), Y1 \
	VPSRLW $4, Y1, Y2 \
	VPAND Y10, Y1, Y1 \
	VPAND Y10, Y2, Y2 \
	VPMADDUBSW xoff(DI), Y1, Y1 \
	VPMADDUBSW (xoff+32)(DI), Y2, Y2 \
	VPMADDWD Y7, Y1, Y1 \
	VPMADDWD Y7, Y2, Y2 \
	VCVTDQ2PS Y1, Y1 \
	VCVTDQ2PS Y2, Y2 \
	VBROADCASTSS f0(SP), Y3 \
	VBROADCASTSS f1(SP), Y4 \
	VFMADD231PS Y3, Y1, Y0 \
	VFMADD231PS Y4, Y2, Y0

	Q4KPAIR(16, 0, 0, 4)
	Q4KPAIR(48, 64, 8, 12)
	Q4KPAIR(80, 128, 16, 20)
	Q4KPAIR(112, 192, 24, 28)
	ADDQ $144, SI
	ADDQ $256, DI
	ADDQ $32, DX
	ADDQ $32, R8
	DECQ CX
	JMP  kloop

kdone:
	VSUBPS Y9, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VZEROUPPER
	MOVSS X0, ret+40(FP)
	RET

// func dotQ6KAVX2(w *byte, xq *int8, xd *float32, nsb int) float32
//
// A Q6_K row times a vector quantised in blocks of 32. Each group of 32
// values (low nibbles from ql, two high bits from qh) is made signed
// (−32..31); |q| × sign-adjusted xq summed in int16 pairs (≤ 8128), and the
// pairs of each sub-block of 16 multiplied by its int8 scale in VPMADDWD,
// so one int32 vector holds the scaled sums of the group's two sub-blocks;
// added as floats times d·xd.
TEXT ·dotQ6KAVX2(SB), NOSPLIT, $0-36
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), DX
	MOVQ nsb+24(FP), CX
	VXORPS Y0, Y0, Y0
	MOVL $0x0f0f0f0f, AX
	VMOVD AX, X9
	VPBROADCASTD X9, Y9 // 0x0f
	MOVL $0x03030303, AX
	VMOVD AX, X10
	VPBROADCASTD X10, Y10 // 0x03
	MOVL $0x20202020, AX
	VMOVD AX, X11
	VPBROADCASTD X11, Y11 // 32

// Q6KGROUP: the group in Y1 (unsigned 0..63) times the x block at xoff
// with the scales at soff, soff+1 and the block scale at doff.
#define Q6KGROUP(xoff, soff, doff) \
	VPSUBB Y11, Y1, Y1 \
	VPSIGNB Y1, Y1, Y2 \
	VMOVDQU xoff(DI), Y3 \
	VPSIGNB Y1, Y3, Y3 \
	VPMADDUBSW Y3, Y2, Y2 \
	MOVBQSX soff(SI), AX \
	MOVBQSX (soff+1)(SI), BX \
	VMOVD AX, X12 \
	VPBROADCASTW X12, X12 \
	VMOVD BX, X13 \
	VPBROADCASTW X13, X13 \
	VINSERTI128 $1, X13, Y12, Y12 \
	VPMADDWD Y12, Y2, Y2 \
	VCVTDQ2PS Y2, Y2 \
	VBROADCASTSS doff(DX), Y3 \
	VMULPS Y8, Y3, Y3 \
	VFMADD231PS Y3, Y2, Y0

// Q6KHALF: the 128 values of half h (ql at 64h, qh at 128+32h, scales at
// 192+8h, x blocks 4h..4h+3).
#define Q6KHALF(ql, qh, sc, x, xd) \
	VMOVDQU qh(SI), Y4 \
	VMOVDQU ql(SI), Y5 \
	VMOVDQU (ql+32)(SI), Y6 \
	VPAND Y9, Y5, Y1 \
	VPAND Y10, Y4, Y2 \
	VPSLLW $4, Y2, Y2 \
	VPOR Y2, Y1, Y1 \
	Q6KGROUP(x, sc, xd) \
	VPAND Y9, Y6, Y1 \
	VPSRLW $2, Y4, Y2 \
	VPAND Y10, Y2, Y2 \
	VPSLLW $4, Y2, Y2 \
	VPOR Y2, Y1, Y1 \
	Q6KGROUP(x+32, sc+2, xd+4) \
	VPSRLW $4, Y5, Y1 \
	VPAND Y9, Y1, Y1 \
	VPSRLW $4, Y4, Y2 \
	VPAND Y10, Y2, Y2 \
	VPSLLW $4, Y2, Y2 \
	VPOR Y2, Y1, Y1 \
	Q6KGROUP(x+64, sc+4, xd+8) \
	VPSRLW $4, Y6, Y1 \
	VPAND Y9, Y1, Y1 \
	VPSRLW $6, Y4, Y2 \
	VPAND Y10, Y2, Y2 \
	VPSLLW $4, Y2, Y2 \
	VPOR Y2, Y1, Y1 \
	Q6KGROUP(x+96, sc+6, xd+12)

qloop:
	TESTQ CX, CX
	JZ    qdone
	VPBROADCASTW 208(SI), X8
	VCVTPH2PS X8, Y8 // d
	Q6KHALF(0, 128, 192, 0, 0)
	Q6KHALF(64, 160, 200, 128, 16)
	ADDQ $210, SI
	ADDQ $256, DI
	ADDQ $32, DX
	DECQ CX
	JMP  qloop

qdone:
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VZEROUPPER
	MOVSS X0, ret+32(FP)
	RET

// func dotF16AVX2(w *uint16, x *float32, n int) float32
// Σ w[i]·x[i] for half-precision w (converted in the kernel, VCVTPH2PS)
// with four eight-lane FMA accumulators; n is a multiple of 32.
TEXT ·dotF16AVX2(SB), NOSPLIT, $0-28
	MOVQ w+0(FP), SI
	MOVQ x+8(FP), DI
	MOVQ n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

hloop:
	TESTQ CX, CX
	JZ    hdone
	VCVTPH2PS (SI), Y4
	VCVTPH2PS 16(SI), Y5
	VCVTPH2PS 32(SI), Y6
	VCVTPH2PS 48(SI), Y7
	VFMADD231PS (DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ $64, SI
	ADDQ $128, DI
	SUBQ $32, CX
	JMP  hloop

hdone:
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
