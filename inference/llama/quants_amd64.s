#include "textflag.h"

// The macros of the two-vector Q4_K kernels come first: go vet reads a
// macro as part of the function above it, and their frame offsets are
// the kernels'.

// KSPLIT: the 32 bytes of nibbles at off(SI) as the low (Y1) and high (Y2)
// sub-blocks of a Q4_K/Q5_K pair.
#define KSPLIT(off) \
	VMOVDQU off(SI), Y1 \
	VPSRLW $4, Y1, Y2 \
	VPAND Y10, Y1, Y1 \
	VPAND Y10, Y2, Y2

// KFIFTH: Q5_K's fifth bits (bits s0 and s1 of the qh bytes at 16(SI))
// added to Y1 and Y2 as 16 (Y12 holds 0x01 bytes).
#define KFIFTH(s0, s1) \
	VMOVDQU 16(SI), Y13 \
	VPSRLW $s0, Y13, Y3 \
	VPAND Y12, Y3, Y3 \
	VPSLLW $4, Y3, Y3 \
	VPOR Y3, Y1, Y1 \
	VPSRLW $s1, Y13, Y3 \
	VPAND Y12, Y3, Y3 \
	VPSLLW $4, Y3, Y3 \
	VPOR Y3, Y2, Y2

// KSUMS, KSUMSV: the int32 sums of Y1 and Y2 with the vector's int8 at x
// (VPMADDUBSW+VPMADDWD, or VPDPBUSD: the same sums) into Y3 and Y4.
#define KSUMS(x, x32) \
	VPMADDUBSW x, Y1, Y3 \
	VPMADDUBSW x32, Y2, Y4 \
	VPMADDWD Y7, Y3, Y3 \
	VPMADDWD Y7, Y4, Y4

#define KSUMSV(x, x32) \
	VPXOR Y3, Y3, Y3 \
	VPXOR Y4, Y4, Y4 \
	VPDPBUSD x, Y1, Y3 \
	VPDPBUSD x32, Y2, Y4

// KADD: Y3 and Y4 times their factors at f0, f1(SP), into acc.
#define KADD(f0, f1, acc) \
	VCVTDQ2PS Y3, Y3 \
	VCVTDQ2PS Y4, Y4 \
	VBROADCASTSS f0(SP), Y6 \
	VBROADCASTSS f1(SP), Y8 \
	VFMADD231PS Y6, Y3, acc \
	VFMADD231PS Y8, Y4, acc

// KDOT2, KDOT2V: the pair in Y1, Y2 times both vectors (the second at
// offset R11 from the first), their factors at f0, f1 and 32 above.
#define KDOT2(xoff, f0, f1) \
	KSUMS(xoff(DI), (xoff+32)(DI)) \
	KADD(f0, f1, Y0) \
	KSUMS(xoff(DI)(R11*1), (xoff+32)(DI)(R11*1)) \
	KADD(32+f0, 32+f1, Y5)

#define KDOT2V(xoff, f0, f1) \
	KSUMSV(xoff(DI), (xoff+32)(DI)) \
	KADD(f0, f1, Y0) \
	KSUMSV(xoff(DI)(R11*1), (xoff+32)(DI)(R11*1)) \
	KADD(32+f0, 32+f1, Y5)

// The pair steps of the two-vector kernels: pair p's nibbles at off, the
// vector's blocks at xoff, factors at f0, f1; s0, s1 (Q5_K) its bits.
#define Q4KPAIR2(off, xoff, f0, f1, s0, s1) KSPLIT(off) KDOT2(xoff, f0, f1)
#define Q4KPAIR2V(off, xoff, f0, f1, s0, s1) KSPLIT(off) KDOT2V(xoff, f0, f1)
#define Q5KPAIR2(off, xoff, f0, f1, s0, s1) KSPLIT(off) KFIFTH(s0, s1) KDOT2(xoff, f0, f1)
#define Q5KPAIR2V(off, xoff, f0, f1, s0, s1) KSPLIT(off) KFIFTH(s0, s1) KDOT2V(xoff, f0, f1)

// The pair steps of the one-vector kernels, into Y0.
#define Q4KPAIR1(off, xoff, f0, f1, s0, s1) KSPLIT(off) KSUMS(xoff(DI), (xoff+32)(DI)) KADD(f0, f1, Y0)
#define Q5KPAIR1(off, xoff, f0, f1, s0, s1) KSPLIT(off) KFIFTH(s0, s1) KSUMS(xoff(DI), (xoff+32)(DI)) KADD(f0, f1, Y0)

// K1BODY is the body of the one-vector Q4_K and Q5_K kernels after their
// arguments are loaded (SI row, DI xq, DX xd, R8 xs, CX super-blocks),
// leaving the product in X0: PAIR is the per-pair step, base the offset of
// the nibbles, bytes the super-block's size. Per super-block the factor
// d·scale·xd of each sub-block is kept at 0–31(SP); the minimums,
// dmin·min·xd·Σxq, are summed in Y9 apart and subtracted at the end.
#define K1BODY(PAIR, lp, dn, base, bytes) \
	VXORPS Y0, Y0, Y0 \
	VXORPS Y9, Y9, Y9 \
	VPCMPEQW Y7, Y7, Y7 \
	VPSRLW $15, Y7, Y7 \
	MOVL $0x0f0f0f0f, AX \
	VMOVD AX, X10 \
	VPBROADCASTD X10, Y10 \
	MOVL $0x01010101, AX \
	VMOVD AX, X12 \
	VPBROADCASTD X12, Y12 \
lp: \
	TESTQ CX, CX \
	JZ    dn \
	KSCALES \
	VPBROADCASTW (SI), X3 \
	VCVTPH2PS X3, Y3 \
	VPBROADCASTW 2(SI), X4 \
	VCVTPH2PS X4, Y4 \
	VMOVUPS (DX), Y5 \
	VMULPS Y3, Y1, Y1 \
	VMULPS Y5, Y1, Y1 \
	VMOVUPS Y1, 0(SP) \
	VMULPS Y4, Y2, Y2 \
	VMULPS Y5, Y2, Y2 \
	VMOVDQU (R8), Y6 \
	VCVTDQ2PS Y6, Y6 \
	VFMADD231PS Y6, Y2, Y9 \
	PAIR(base, 0, 0, 4, 0, 1) \
	PAIR(base+32, 64, 8, 12, 2, 3) \
	PAIR(base+64, 128, 16, 20, 4, 5) \
	PAIR(base+96, 192, 24, 28, 6, 7) \
	ADDQ $bytes, SI \
	ADDQ $256, DI \
	ADDQ $32, DX \
	ADDQ $32, R8 \
	DECQ CX \
	JMP  lp \
dn: \
	VSUBPS Y9, Y0, Y0 \
	VEXTRACTF128 $1, Y0, X1 \
	VADDPS X1, X0, X0 \
	VHADDPS X0, X0, X0 \
	VHADDPS X0, X0, X0 \
	VZEROUPPER

// KX2BODY is the body of the one-row, two-vector Q4_K and Q5_K kernels
// after their arguments are loaded: PAIR is the per-pair step (Q4KPAIR2,
// Q5KPAIR2, or their VPDPBUSD forms), base the offset of the nibbles and
// bytes the super-block's size; Y12 holds 0x01 bytes for Q5_K's bits.
#define KX2BODY(PAIR, lp, dn, base, bytes) \
	MOVQ AX, 64(SP) \
	SUBQ DI, R11 \
	SUBQ DX, R12 \
	SUBQ R8, R13 \
	VXORPS Y0, Y0, Y0 \
	VXORPS Y5, Y5, Y5 \
	VXORPS Y9, Y9, Y9 \
	VXORPS Y14, Y14, Y14 \
	VPCMPEQW Y7, Y7, Y7 \
	VPSRLW $15, Y7, Y7 \
	MOVL $0x0f0f0f0f, AX \
	VMOVD AX, X10 \
	VPBROADCASTD X10, Y10 \
	MOVL $0x01010101, AX \
	VMOVD AX, X12 \
	VPBROADCASTD X12, Y12 \
lp: \
	TESTQ CX, CX \
	JZ    dn \
	KSCALES \
	VPBROADCASTW (SI), X3 \
	VCVTPH2PS X3, Y3 \
	VPBROADCASTW 2(SI), X4 \
	VCVTPH2PS X4, Y4 \
	VMULPS Y3, Y1, Y1 \
	VMULPS Y4, Y2, Y2 \
	VMOVUPS (DX), Y3 \
	VMULPS Y3, Y1, Y4 \
	VMOVUPS Y4, 0(SP) \
	VMULPS Y3, Y2, Y4 \
	VMOVDQU (R8), Y6 \
	VCVTDQ2PS Y6, Y6 \
	VFMADD231PS Y6, Y4, Y9 \
	VMOVUPS (DX)(R12*1), Y3 \
	VMULPS Y3, Y1, Y4 \
	VMOVUPS Y4, 32(SP) \
	VMULPS Y3, Y2, Y4 \
	VMOVDQU (R8)(R13*1), Y6 \
	VCVTDQ2PS Y6, Y6 \
	VFMADD231PS Y6, Y4, Y14 \
	PAIR(base, 0, 0, 4, 0, 1) \
	PAIR(base+32, 64, 8, 12, 2, 3) \
	PAIR(base+64, 128, 16, 20, 4, 5) \
	PAIR(base+96, 192, 24, 28, 6, 7) \
	ADDQ $bytes, SI \
	ADDQ $256, DI \
	ADDQ $32, DX \
	ADDQ $32, R8 \
	DECQ CX \
	JMP  lp \
dn: \
	MOVQ 64(SP), AX \
	VSUBPS Y9, Y0, Y0 \
	VEXTRACTF128 $1, Y0, X1 \
	VADDPS X1, X0, X0 \
	VHADDPS X0, X0, X0 \
	VHADDPS X0, X0, X0 \
	VMOVSS X0, (AX) \
	VSUBPS Y14, Y5, Y5 \
	VEXTRACTF128 $1, Y5, X1 \
	VADDPS X1, X5, X5 \
	VHADDPS X5, X5, X5 \
	VHADDPS X5, X5, X5 \
	VMOVSS X5, 4(AX) \
	VZEROUPPER \
	RET


// KSCALES unpacks the 6-bit scales and mins of the Q4_K/Q5_K super-block
// at SI into floats: Y1 the eight scales, Y2 the eight mins (AX, BX, R9,
// R10 clobbered). Scales 0–3 are the low six bits of bytes 0–3 and mins
// 0–3 of bytes 4–7; scales and mins 4–7 the nibbles of bytes 8–11 with
// their top two bits in the top bits of bytes 0–3 and 4–7.
#define KSCALES \
	MOVL 4(SI), AX \
	MOVL 8(SI), BX \
	MOVL 12(SI), R9 \
	MOVL AX, R10 \
	ANDL $0x3f3f3f3f, R10 \
	VMOVD R10, X1 \
	MOVL BX, R10 \
	ANDL $0x3f3f3f3f, R10 \
	VMOVD R10, X2 \
	MOVL R9, R10 \
	ANDL $0x0f0f0f0f, R10 \
	SHRL $6, AX \
	ANDL $0x03030303, AX \
	SHLL $4, AX \
	ORL  AX, R10 \
	VPINSRD $1, R10, X1, X1 \
	MOVL R9, R10 \
	SHRL $4, R10 \
	ANDL $0x0f0f0f0f, R10 \
	SHRL $6, BX \
	ANDL $0x03030303, BX \
	SHLL $4, BX \
	ORL  BX, R10 \
	VPINSRD $1, R10, X2, X2 \
	VPMOVZXBD X1, Y1 \
	VCVTDQ2PS Y1, Y1 \
	VPMOVZXBD X2, Y2 \
	VCVTDQ2PS Y2, Y2

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
	K1BODY(Q4KPAIR1, kloop, kdone, 16, 144)
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
// 192+8h, x blocks 4h..4h+3), each group of 32 handed to GROUP (Q6KGROUP,
// or Q6KGROUP2 for two vectors).
#define Q6KHALF(GROUP, ql, qh, sc, x, xd) \
	VMOVDQU qh(SI), Y4 \
	VMOVDQU ql(SI), Y5 \
	VMOVDQU (ql+32)(SI), Y6 \
	VPAND Y9, Y5, Y1 \
	VPAND Y10, Y4, Y2 \
	VPSLLW $4, Y2, Y2 \
	VPOR Y2, Y1, Y1 \
	GROUP(x, sc, xd) \
	VPAND Y9, Y6, Y1 \
	VPSRLW $2, Y4, Y2 \
	VPAND Y10, Y2, Y2 \
	VPSLLW $4, Y2, Y2 \
	VPOR Y2, Y1, Y1 \
	GROUP(x+32, sc+2, xd+4) \
	VPSRLW $4, Y5, Y1 \
	VPAND Y9, Y1, Y1 \
	VPSRLW $4, Y4, Y2 \
	VPAND Y10, Y2, Y2 \
	VPSLLW $4, Y2, Y2 \
	VPOR Y2, Y1, Y1 \
	GROUP(x+64, sc+4, xd+8) \
	VPSRLW $4, Y6, Y1 \
	VPAND Y9, Y1, Y1 \
	VPSRLW $6, Y4, Y2 \
	VPAND Y10, Y2, Y2 \
	VPSLLW $4, Y2, Y2 \
	VPOR Y2, Y1, Y1 \
	GROUP(x+96, sc+6, xd+12)

qloop:
	TESTQ CX, CX
	JZ    qdone
	VPBROADCASTW 208(SI), X8
	VCVTPH2PS X8, Y8 // d
	Q6KHALF(Q6KGROUP, 0, 128, 192, 0, 0)
	Q6KHALF(Q6KGROUP, 64, 160, 200, 128, 16)
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

// func dotQ5KAVX2(w *byte, xq *int8, xd *float32, xs *int32, nsb int) float32
//
// dotQ4KAVX2 for Q5_K: the same scales and mins; each sub-block's values
// are its nibbles plus 16 times their fifth bit (bit 2p of qh byte l for
// element 64p+l, bit 2p+1 for element 64p+32+l); pairs ≤ 7874 in int16.
// (The body is dotQ4KAVX2's, K1BODY, with the fifth bits in each pair.)
TEXT ·dotQ5KAVX2(SB), NOSPLIT, $32-44
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), DX
	MOVQ xs+24(FP), R8
	MOVQ nsb+32(FP), CX
	K1BODY(Q5KPAIR1, k5loop, k5done, 48, 176)
	MOVSS X0, ret+40(FP)
	RET

// func dotQ40AVX2(w *byte, xq *int8, xd *float32, n int) float32
//
// A Q4_0 row of n blocks times a vector quantised in blocks of 32: each
// block's 16 bytes unpacked to 32 nibbles in element order (low nibbles
// are elements 0–15, high ones 16–31), made signed (−8..7), and summed
// with the vector's int8 exactly in integers as dotQ8AVX2 does.
TEXT ·dotQ40AVX2(SB), NOSPLIT, $0-36
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), DX
	MOVQ n+24(FP), CX
	VXORPS Y0, Y0, Y0
	VPCMPEQW Y7, Y7, Y7
	VPSRLW $15, Y7, Y7
	MOVL $0x0f0f0f0f, AX
	VMOVD AX, X10
	VPBROADCASTD X10, Y10
	MOVL $0x08080808, AX
	VMOVD AX, X11
	VPBROADCASTD X11, Y11

q4loop:
	TESTQ CX, CX
	JZ    q4done
	VMOVDQU 2(SI), X1
	VPSRLW $4, X1, X2
	VINSERTI128 $1, X2, Y1, Y1
	VPAND Y10, Y1, Y1
	VPSUBB Y11, Y1, Y1
	VMOVDQU (DI), Y2
	VPSIGNB Y1, Y1, Y3
	VPSIGNB Y1, Y2, Y4
	VPMADDUBSW Y4, Y3, Y5
	VPMADDWD Y7, Y5, Y5
	VCVTDQ2PS Y5, Y5
	VPBROADCASTW (SI), X6
	VCVTPH2PS X6, Y6
	VBROADCASTSS (DX), Y8
	VMULPS Y8, Y6, Y6
	VFMADD231PS Y6, Y5, Y0
	ADDQ $18, SI
	ADDQ $32, DI
	ADDQ $4, DX
	DECQ CX
	JMP  q4loop

q4done:
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VZEROUPPER
	MOVSS X0, ret+32(FP)
	RET

DATA q8perm<>+0(SB)/4, $0
DATA q8perm<>+4(SB)/4, $4
DATA q8perm<>+8(SB)/4, $1
DATA q8perm<>+12(SB)/4, $5
DATA q8perm<>+16(SB)/4, $2
DATA q8perm<>+20(SB)/4, $6
DATA q8perm<>+24(SB)/4, $3
DATA q8perm<>+28(SB)/4, $7
GLOBL q8perm<>(SB), RODATA|NOPTR, $32

// func quantizeQ8AVX2(x *float32, q *int8, d *float32, s *int32, n int)
//
// quantizeVec's arithmetic for n blocks of 32, bit for bit: d = max|x| /
// 127, inv = 1/d (0 for an all-zero block), q = trunc(|x·inv| + 0.5) with
// x·inv's sign, s = Σq. The int32 levels are packed to int8 (two saturating
// packs within 128-bit lanes, then a dword permutation back to element
// order).
TEXT ·quantizeQ8AVX2(SB), NOSPLIT, $0-40
	MOVQ x+0(FP), SI
	MOVQ q+8(FP), DI
	MOVQ d+16(FP), DX
	MOVQ s+24(FP), R8
	MOVQ n+32(FP), CX
	VPCMPEQD Y15, Y15, Y15
	VPSRLD $1, Y15, Y15 // |·| mask
	MOVL $0x3f000000, AX
	VMOVD AX, X14
	VBROADCASTSS X14, Y14 // 0.5
	MOVL $0x42fe0000, AX
	VMOVD AX, X13 // 127
	MOVL $0x3f800000, AX
	VMOVD AX, X12 // 1
	VMOVDQU q8perm<>(SB), Y11

qvloop:
	TESTQ CX, CX
	JZ    qvdone
	VMOVUPS (SI), Y0
	VMOVUPS 32(SI), Y1
	VMOVUPS 64(SI), Y2
	VMOVUPS 96(SI), Y3
	VANDPS Y15, Y0, Y4
	VANDPS Y15, Y1, Y5
	VMAXPS Y5, Y4, Y4
	VANDPS Y15, Y2, Y5
	VANDPS Y15, Y3, Y6
	VMAXPS Y6, Y5, Y5
	VMAXPS Y5, Y4, Y4
	VEXTRACTF128 $1, Y4, X5
	VMAXPS X5, X4, X4
	VPERMILPS $0x4e, X4, X5
	VMAXPS X5, X4, X4
	VPERMILPS $0xb1, X4, X5
	VMAXPS X5, X4, X4 // amax in every lane
	VDIVSS X13, X4, X4 // d
	VMOVSS X4, (DX)
	VXORPS X5, X5, X5
	VUCOMISS X5, X4
	JEQ   qvzero
	VDIVSS X4, X12, X5 // 1/d
qvzero:
	VBROADCASTSS X5, Y5 // inv (0 for a zero block)
	VMULPS Y5, Y0, Y0
	VMULPS Y5, Y1, Y1
	VMULPS Y5, Y2, Y2
	VMULPS Y5, Y3, Y3

// QLEVEL: the level of each lane of y (into t): trunc(|y| + 0.5), signed.
#define QLEVEL(y, t) \
	VANDPS Y15, y, t \
	VADDPS Y14, t, t \
	VCVTTPS2DQ t, t \
	VPSIGND y, t, t

	QLEVEL(Y0, Y6)
	QLEVEL(Y1, Y7)
	QLEVEL(Y2, Y8)
	QLEVEL(Y3, Y9)
	VPADDD Y7, Y6, Y10
	VPADDD Y8, Y10, Y10
	VPADDD Y9, Y10, Y10
	VEXTRACTI128 $1, Y10, X0
	VPADDD X0, X10, X10
	VPSHUFD $0x4e, X10, X0
	VPADDD X0, X10, X10
	VPSHUFD $0xb1, X10, X0
	VPADDD X0, X10, X10
	VMOVD X10, AX
	MOVL AX, (R8)
	VPACKSSDW Y7, Y6, Y6
	VPACKSSDW Y9, Y8, Y8
	VPACKSSWB Y8, Y6, Y6
	VPERMD Y6, Y11, Y6
	VMOVDQU Y6, (DI)
	ADDQ $128, SI
	ADDQ $32, DI
	ADDQ $4, DX
	ADDQ $4, R8
	DECQ CX
	JMP  qvloop

qvdone:
	VZEROUPPER
	RET

// func dotQ4Kx2AVX2(w *byte, xq0 *int8, xd0 *float32, xs0 *int32, xq1 *int8, xd1 *float32, xs1 *int32, nsb int, out *[2]float32)
//
// dotQ4KAVX2 for one row times two vectors: each super-block's scales and
// mins unpacked, and its nibbles split, once for both; each vector's
// arithmetic is dotQ4KAVX2's, so out[v] is bit-identical to it. The
// second vector is addressed as offsets from the first (R11, R12, R13).
TEXT ·dotQ4Kx2AVX2(SB), NOSPLIT, $72-72
	MOVQ out+64(FP), AX
	MOVQ w+0(FP), SI
	MOVQ xq0+8(FP), DI
	MOVQ xd0+16(FP), DX
	MOVQ xs0+24(FP), R8
	MOVQ xq1+32(FP), R11
	MOVQ xd1+40(FP), R12
	MOVQ xs1+48(FP), R13
	MOVQ nsb+56(FP), CX
	KX2BODY(Q4KPAIR2, k2loop, k2done, 16, 144)

// func dotQ4Kx2VNNI(w *byte, xq0 *int8, xd0 *float32, xs0 *int32, xq1 *int8, xd1 *float32, xs1 *int32, nsb int, out *[2]float32)
//
// dotQ4Kx2AVX2 with VPDPBUSD (AVX512-VNNI): nibbles × int8 summed straight
// into int32, the same sums, the same results bit for bit.
TEXT ·dotQ4Kx2VNNI(SB), NOSPLIT, $72-72
	MOVQ out+64(FP), AX
	MOVQ w+0(FP), SI
	MOVQ xq0+8(FP), DI
	MOVQ xd0+16(FP), DX
	MOVQ xs0+24(FP), R8
	MOVQ xq1+32(FP), R11
	MOVQ xd1+40(FP), R12
	MOVQ xs1+48(FP), R13
	MOVQ nsb+56(FP), CX
	KX2BODY(Q4KPAIR2V, k2vloop, k2vdone, 16, 144)

// func dotQ6Kx2AVX2(w *byte, xq0 *int8, xd0 *float32, xq1 *int8, xd1 *float32, nsb int, out *[2]float32)
//
// dotQ6KAVX2 for one row times two vectors: each group's levels, their
// magnitudes and its sub-block scales made once for both; each vector's
// arithmetic is dotQ6KAVX2's, so out[v] is bit-identical to it. The second
// vector is addressed as offsets from the first (R11, R12).
TEXT ·dotQ6Kx2AVX2(SB), NOSPLIT, $0-56
	MOVQ w+0(FP), SI
	MOVQ xq0+8(FP), DI
	MOVQ xd0+16(FP), DX
	MOVQ xq1+24(FP), R11
	SUBQ DI, R11
	MOVQ xd1+32(FP), R12
	SUBQ DX, R12
	MOVQ nsb+40(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y7, Y7, Y7
	MOVL $0x0f0f0f0f, AX
	VMOVD AX, X9
	VPBROADCASTD X9, Y9
	MOVL $0x03030303, AX
	VMOVD AX, X10
	VPBROADCASTD X10, Y10
	MOVL $0x20202020, AX
	VMOVD AX, X11
	VPBROADCASTD X11, Y11

#define Q6KGROUP2(xoff, soff, doff) \
	VPSUBB Y11, Y1, Y1 \
	VPSIGNB Y1, Y1, Y2 \
	MOVBQSX soff(SI), AX \
	MOVBQSX (soff+1)(SI), BX \
	VMOVD AX, X12 \
	VPBROADCASTW X12, X12 \
	VMOVD BX, X13 \
	VPBROADCASTW X13, X13 \
	VINSERTI128 $1, X13, Y12, Y12 \
	VMOVDQU xoff(DI), Y3 \
	VPSIGNB Y1, Y3, Y3 \
	VPMADDUBSW Y3, Y2, Y3 \
	VPMADDWD Y12, Y3, Y3 \
	VCVTDQ2PS Y3, Y3 \
	VBROADCASTSS doff(DX), Y13 \
	VMULPS Y8, Y13, Y13 \
	VFMADD231PS Y13, Y3, Y0 \
	VMOVDQU xoff(DI)(R11*1), Y3 \
	VPSIGNB Y1, Y3, Y3 \
	VPMADDUBSW Y3, Y2, Y3 \
	VPMADDWD Y12, Y3, Y3 \
	VCVTDQ2PS Y3, Y3 \
	VBROADCASTSS doff(DX)(R12*1), Y13 \
	VMULPS Y8, Y13, Y13 \
	VFMADD231PS Y13, Y3, Y7

q2loop:
	TESTQ CX, CX
	JZ    q2done
	VPBROADCASTW 208(SI), X8
	VCVTPH2PS X8, Y8
	Q6KHALF(Q6KGROUP2, 0, 128, 192, 0, 0)
	Q6KHALF(Q6KGROUP2, 64, 160, 200, 128, 16)
	ADDQ $210, SI
	ADDQ $256, DI
	ADDQ $32, DX
	DECQ CX
	JMP  q2loop

q2done:
	MOVQ out+48(FP), AX
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VMOVSS X0, (AX)
	VEXTRACTF128 $1, Y7, X1
	VADDPS X1, X7, X7
	VHADDPS X7, X7, X7
	VHADDPS X7, X7, X7
	VMOVSS X7, 4(AX)
	VZEROUPPER
	RET

// func dotQ5Kx2AVX2(w *byte, xq0 *int8, xd0 *float32, xs0 *int32, xq1 *int8, xd1 *float32, xs1 *int32, nsb int, out *[2]float32)
//
// dotQ5KAVX2 for one row times two vectors (bit-identical to it for each).
TEXT ·dotQ5Kx2AVX2(SB), NOSPLIT, $72-72
	MOVQ out+64(FP), AX
	MOVQ w+0(FP), SI
	MOVQ xq0+8(FP), DI
	MOVQ xd0+16(FP), DX
	MOVQ xs0+24(FP), R8
	MOVQ xq1+32(FP), R11
	MOVQ xd1+40(FP), R12
	MOVQ xs1+48(FP), R13
	MOVQ nsb+56(FP), CX
	KX2BODY(Q5KPAIR2, k5loop2, k5done2, 48, 176)

// func dotQ5Kx2VNNI(w *byte, xq0 *int8, xd0 *float32, xs0 *int32, xq1 *int8, xd1 *float32, xs1 *int32, nsb int, out *[2]float32)
//
// dotQ5Kx2AVX2 with VPDPBUSD (bit-identical).
TEXT ·dotQ5Kx2VNNI(SB), NOSPLIT, $72-72
	MOVQ out+64(FP), AX
	MOVQ w+0(FP), SI
	MOVQ xq0+8(FP), DI
	MOVQ xd0+16(FP), DX
	MOVQ xs0+24(FP), R8
	MOVQ xq1+32(FP), R11
	MOVQ xd1+40(FP), R12
	MOVQ xs1+48(FP), R13
	MOVQ nsb+56(FP), CX
	KX2BODY(Q5KPAIR2V, k5vloop2, k5vdone2, 48, 176)
