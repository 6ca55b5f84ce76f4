//go:build amd64 && !purego

#include "textflag.h"
#include "avx512_amd64.h"

// The ops built on e^x, for x86-64 with AVX-512: softmax (attention's probabilities) and the
// SwiGLU gate silu(g)·u. Both use one vector exp, Cephes' expf: within 2 ulp of e^x, where the
// portable code rounds math.Exp's f64 result (at most half an ulp) but costs far more per element.
//
// The macros come first, before any TEXT, so that go vet's frame checks do not read their bodies
// as part of a function.

// ---- macros ------------------------------------------------------------------------------------

#define LOAD_EXP_CONSTANTS \
	VBROADCASTSS expConst<>+0(SB), Z19  \
	VBROADCASTSS expConst<>+4(SB), Z20  \
	VBROADCASTSS expConst<>+8(SB), Z21  \
	VBROADCASTSS expConst<>+12(SB), Z22 \
	VBROADCASTSS expConst<>+16(SB), Z23 \
	VBROADCASTSS expConst<>+20(SB), Z24 \
	VBROADCASTSS expConst<>+24(SB), Z25 \
	VBROADCASTSS expConst<>+28(SB), Z26 \
	VBROADCASTSS expConst<>+32(SB), Z27 \
	VBROADCASTSS expConst<>+36(SB), Z28 \
	VBROADCASTSS expConst<>+40(SB), Z29

// Z1 = exp(Z1), elementwise: n = round(x·log2 e), r = x − n·ln 2 in two parts, e^r by Cephes'
// degree-7 polynomial, times 2^n (VSCALEFPS, which also makes the subnormals and zeros of very
// negative x and the infinities of large x). x is first raised to -104, below which e^x rounds to 0
// in F32, so that -Inf gives 0 rather than NaN (NaN stays NaN). Constants (LOAD_EXP_CONSTANTS) in
// Z19..Z29; Z3..Z5 scratch.
#define EXP_Z1 \
	VMAXPS       Z1, Z19, Z1  \
	VMULPS       Z20, Z1, Z3  \
	VRNDSCALEPS  $0, Z3, Z3   \
	VFNMADD231PS Z21, Z3, Z1  \
	VFNMADD231PS Z22, Z3, Z1  \
	VMOVAPS      Z23, Z4      \
	VFMADD213PS  Z24, Z1, Z4  \
	VFMADD213PS  Z25, Z1, Z4  \
	VFMADD213PS  Z26, Z1, Z4  \
	VFMADD213PS  Z27, Z1, Z4  \
	VFMADD213PS  Z28, Z1, Z4  \
	VMULPS       Z1, Z1, Z5   \
	VFMADD213PS  Z1, Z5, Z4   \
	VADDPS       Z29, Z4, Z4  \
	VSCALEFPS    Z3, Z4, Z1

// ---- constants ---------------------------------------------------------------------------------

// F32 bit patterns of the exp constants: -104, log2 e, ln 2 in a high part (exact in 9 bits, so
// n·hi is exact) and a low part, Cephes' expf coefficients p0..p5, 1, and -Inf.
DATA expConst<>+0(SB)/4, $0xc2d00000  // -104
DATA expConst<>+4(SB)/4, $0x3fb8aa3b  // log2 e = 1.44269504
DATA expConst<>+8(SB)/4, $0x3f318000  // ln 2 high = 0.693359375
DATA expConst<>+12(SB)/4, $0xb95e8083 // ln 2 low = -2.12194440e-4
DATA expConst<>+16(SB)/4, $0x39506967 // p0 = 1.9875691500e-4
DATA expConst<>+20(SB)/4, $0x3ab743ce // p1 = 1.3981999507e-3
DATA expConst<>+24(SB)/4, $0x3c088908 // p2 = 8.3334519073e-3
DATA expConst<>+28(SB)/4, $0x3d2aa9c1 // p3 = 4.1665795894e-2
DATA expConst<>+32(SB)/4, $0x3e2aaaaa // p4 = 1.6666665459e-1
DATA expConst<>+36(SB)/4, $0x3f000000 // p5 = 5.0000001201e-1
DATA expConst<>+40(SB)/4, $0x3f800000 // 1
DATA expConst<>+44(SB)/4, $0xff800000 // -Inf
GLOBL expConst<>(SB), RODATA|NOPTR, $48

// ---- kernels -----------------------------------------------------------------------------------

// func softmaxF32AVX512(x *float32, n int) (m, inv float32)
//
// x = exp(x − max) / Σ exp(x − max) in place, n >= 1: the maximum, then the exponentials and their
// sum in 16 lanes added by one tree, then the product with 1/sum. Returns the maximum and 1/sum,
// from which expF32AVX512 recomputes any element bit for bit: exp(x − m)·inv.
TEXT ·softmaxF32AVX512(SB), NOSPLIT, $0-24
	MOVQ         x+0(FP), DI
	MOVQ         n+8(FP), DX
	VBROADCASTSS expConst<>+44(SB), Z0

	// The maximum, in every lane of Z0.
	MOVQ DI, SI
	MOVQ DX, CX

max16:
	CMPQ   CX, $16
	JLT    maxTail
	VMAXPS (SI), Z0, Z0
	ADDQ   $64, SI
	SUBQ   $16, CX
	JMP    max16

maxTail:
	TESTQ   CX, CX
	JZ      maxAll
	TAILMASK
	VMOVAPS Z0, Z1
	VMOVUPS (SI), K1, Z1
	VMAXPS  Z1, Z0, Z0

maxAll:
	VSHUFF32X4 $0x4E, Z0, Z0, Z1
	VMAXPS     Z1, Z0, Z0
	VSHUFF32X4 $0xB1, Z0, Z0, Z1
	VMAXPS     Z1, Z0, Z0
	VPERMILPS  $0x4E, Z0, Z1
	VMAXPS     Z1, Z0, Z0
	VPERMILPS  $0xB1, Z0, Z1
	VMAXPS     Z1, Z0, Z0

	// The exponentials, stored, and their sum in Z2.
	LOAD_EXP_CONSTANTS
	VPXORD       Z2, Z2, Z2
	MOVQ         DI, SI
	MOVQ         DX, CX

exp16:
	CMPQ    CX, $16
	JLT     expTail
	VMOVUPS (SI), Z1
	VSUBPS  Z0, Z1, Z1
	EXP_Z1
	VMOVUPS Z1, (SI)
	VADDPS  Z1, Z2, Z2
	ADDQ    $64, SI
	SUBQ    $16, CX
	JMP     exp16

expTail:
	TESTQ     CX, CX
	JZ        sum
	TAILMASK
	VMOVUPS.Z (SI), K1, Z1
	VSUBPS    Z0, Z1, Z1
	EXP_Z1
	VMOVUPS   Z1, K1, (SI)
	VADDPS    Z1, Z2, K1, Z2

sum:
	VEXTRACTF64X4 $1, Z2, Y3
	VADDPS        Y3, Y2, Y2
	VEXTRACTF128  $1, Y2, X3
	VADDPS        X3, X2, X2
	VPERMILPS     $0x4E, X2, X3
	VADDPS        X3, X2, X2
	VPERMILPS     $0xB1, X2, X3
	VADDSS        X3, X2, X2
	VDIVSS        X2, X29, X2
	VMOVSS        X2, inv+20(FP)
	VMOVSS        X0, m+16(FP)
	VBROADCASTSS  X2, Z2

	// The products with 1/sum.
	MOVQ DI, SI
	MOVQ DX, CX

scale16:
	CMPQ    CX, $16
	JLT     scaleTail
	VMULPS  (SI), Z2, Z1
	VMOVUPS Z1, (SI)
	ADDQ    $64, SI
	SUBQ    $16, CX
	JMP     scale16

scaleTail:
	TESTQ     CX, CX
	JZ        done
	TAILMASK
	VMOVUPS.Z (SI), K1, Z1
	VMULPS    Z2, Z1, Z1
	VMOVUPS   Z1, K1, (SI)

done:
	VZEROUPPER
	RET

// func siluMulF32AVX512(out, gate, u *float32, n int)
//
// out = gate / (1 + e^−gate) · u, elementwise, as the portable code computes it but for the exp.
TEXT ·siluMulF32AVX512(SB), NOSPLIT, $0-32
	MOVQ   out+0(FP), DI
	MOVQ   gate+8(FP), SI
	MOVQ   u+16(FP), DX
	MOVQ   n+24(FP), CX
	LOAD_EXP_CONSTANTS
	VPXORD Z18, Z18, Z18

silu16:
	CMPQ    CX, $16
	JLT     siluTail
	VMOVUPS (SI), Z6
	VSUBPS  Z6, Z18, Z1
	EXP_Z1
	VADDPS  Z29, Z1, Z1
	VDIVPS  Z1, Z6, Z6
	VMULPS  (DX), Z6, Z6
	VMOVUPS Z6, (DI)
	ADDQ    $64, SI
	ADDQ    $64, DX
	ADDQ    $64, DI
	SUBQ    $16, CX
	JMP     silu16

siluTail:
	TESTQ     CX, CX
	JZ        done
	TAILMASK
	VMOVUPS.Z (SI), K1, Z6
	VMOVUPS.Z (DX), K1, Z7
	VSUBPS    Z6, Z18, Z1
	EXP_Z1
	VADDPS    Z29, Z1, Z1
	VDIVPS    Z1, Z6, Z6
	VMULPS    Z7, Z6, Z6
	VMOVUPS   Z6, K1, (DI)

done:
	VZEROUPPER
	RET

// func expF32AVX512(x *float32, n int)
//
// x = exp(x), elementwise and in place, with softmaxF32AVX512's exp (the same instructions, so the
// same bits).
TEXT ·expF32AVX512(SB), NOSPLIT, $0-16
	MOVQ x+0(FP), DI
	MOVQ n+8(FP), CX
	LOAD_EXP_CONSTANTS

exp16:
	CMPQ    CX, $16
	JLT     expTail
	VMOVUPS (DI), Z1
	EXP_Z1
	VMOVUPS Z1, (DI)
	ADDQ    $64, DI
	SUBQ    $16, CX
	JMP     exp16

expTail:
	TESTQ     CX, CX
	JZ        done
	TAILMASK
	VMOVUPS.Z (DI), K1, Z1
	EXP_Z1
	VMOVUPS   Z1, K1, (DI)

done:
	VZEROUPPER
	RET
