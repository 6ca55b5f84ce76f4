//go:build amd64 && !purego

#include "textflag.h"
#include "avx512_amd64.h"

// The kernels of the bf16 compute mode (MatMulBF16), for x86-64 with AVX512-BF16:
//
//	narrowBF16  F32 → bf16, rounded to nearest, ties to even, NaN kept quiet (as BF16FromF32)
//	gemmBF16    the 12×32 (and 12×16) GEMM tile of dot_amd64.s's gemm12x32AVX512, on bf16 pairs
//
// VDPBF16PS multiplies 32 pairs of bf16 a zmm register: acc[i] += a[2i+1]·b[2i+1], then
// += a[2i]·b[2i], each product exact in F32, each sum rounded to nearest (denormals flushed). A
// pair is two consecutive k of a row, so the weights' own bf16 rows serve as the tile's a, one
// 32-bit pair broadcast per row and step, and the tokens are packed as (k/2, 32) pairs: twice the
// multiply-adds of an F32 FMA per instruction, and no widening of the weights at all.
//
// Go's assembler does not know the AVX512-BF16 instructions; DPBF16 encodes the register form by
// hand: EVEX.512.F3.0F38.W0 52 /r, zmm(dst) += pairs of zmm(src2) · zmm(src3), registers given by
// number.

// ---- macros ------------------------------------------------------------------------------------

#define DPBF16(src3, src2, dst) \
	BYTE $0x62 \
	BYTE $((((~(dst>>3))&1)<<7) | (((~(src3>>4))&1)<<6) | (((~(src3>>3))&1)<<5) | (((~(dst>>4))&1)<<4) | 2) \
	BYTE $((((~src2)&15)<<3) | 6) \
	BYTE $(0x40 | (((~(src2>>4))&1)<<3)) \
	BYTE $0x52 \
	BYTE $(0xC0 | ((dst&7)<<3) | (src3&7))

// One step (a k pair) of row i: its pair at src broadcast into tmp (register number t), times the
// 32 tokens' pairs in Z24, Z25, into the accumulators numbered a0, a1.
#define ROW_BF16(src, tmp, t, a0, a1) \
	VBROADCASTSS src, tmp \
	DPBF16(t, 24, a0)     \
	DPBF16(t, 25, a1)

// Step u of an unrolled run: b's row of pairs at b0 (its second half at b1), the rows' pairs at
// u·4 bytes past each row pointer (SI, R8, R9, R10 and DX, 2·DX past them, as in dot_amd64.s).
#define STEP_BF16(b0, b1, u) \
	VMOVUPS b0, Z24                               \
	VMOVUPS b1, Z25                               \
	ROW_BF16((u*4)(SI), Z26, 26, 0, 1)            \
	ROW_BF16((u*4)(SI)(DX*1), Z27, 27, 2, 3)      \
	ROW_BF16((u*4)(SI)(DX*2), Z28, 28, 4, 5)      \
	ROW_BF16((u*4)(R8), Z29, 29, 6, 7)            \
	ROW_BF16((u*4)(R8)(DX*1), Z30, 30, 8, 9)      \
	ROW_BF16((u*4)(R8)(DX*2), Z31, 31, 10, 11)    \
	ROW_BF16((u*4)(R9), Z26, 26, 12, 13)          \
	ROW_BF16((u*4)(R9)(DX*1), Z27, 27, 14, 15)    \
	ROW_BF16((u*4)(R9)(DX*2), Z28, 28, 16, 17)    \
	ROW_BF16((u*4)(R10), Z29, 29, 18, 19)         \
	ROW_BF16((u*4)(R10)(DX*1), Z30, 30, 20, 21)   \
	ROW_BF16((u*4)(R10)(DX*2), Z31, 31, 22, 23)

#define ROW16_BF16(src, tmp, t, a) \
	VBROADCASTSS src, tmp \
	DPBF16(t, 24, a)

#define STEP16_BF16(b0, u) \
	VMOVUPS b0, Z24                            \
	ROW16_BF16((u*4)(SI), Z26, 26, 0)          \
	ROW16_BF16((u*4)(SI)(DX*1), Z27, 27, 1)    \
	ROW16_BF16((u*4)(SI)(DX*2), Z28, 28, 2)    \
	ROW16_BF16((u*4)(R8), Z29, 29, 3)          \
	ROW16_BF16((u*4)(R8)(DX*1), Z30, 30, 4)    \
	ROW16_BF16((u*4)(R8)(DX*2), Z31, 31, 5)    \
	ROW16_BF16((u*4)(R9), Z26, 26, 6)          \
	ROW16_BF16((u*4)(R9)(DX*1), Z27, 27, 7)    \
	ROW16_BF16((u*4)(R9)(DX*2), Z28, 28, 8)    \
	ROW16_BF16((u*4)(R10), Z29, 29, 9)         \
	ROW16_BF16((u*4)(R10)(DX*1), Z30, 30, 10)  \
	ROW16_BF16((u*4)(R10)(DX*2), Z31, 31, 11)

#define ADVANCE_BF16 \
	ADDQ R12, BX \
	ADDQ $4, SI  \
	ADDQ $4, R8  \
	ADDQ $4, R9  \
	ADDQ $4, R10

// The arguments of both GEMM kernels: SI and R8..R10 rows 0, 3, 6, 9 of a (DX the row stride in
// bytes), BX the pairs of b (R12 its row stride in bytes), DI c, CX the pairs of k.
#define GEMM_BF16_ARGS \
	MOVQ a+0(FP), SI      \
	MOVQ lda+8(FP), DX    \
	SHLQ $1, DX           \
	MOVQ b+16(FP), BX     \
	MOVQ ldb+24(FP), R12  \
	SHLQ $2, R12          \
	MOVQ c+32(FP), DI     \
	MOVQ kc+48(FP), CX    \
	SHRQ $1, CX           \
	LEAQ (SI)(DX*2), R8   \
	ADDQ DX, R8           \
	LEAQ (R8)(DX*2), R9   \
	ADDQ DX, R9           \
	LEAQ (R9)(DX*2), R10  \
	ADDQ DX, R10          \
	MOVQ ldc+40(FP), R11  \
	SHLQ $2, R11

// c row += acc (one or two zmm), then the next row.
#define STORE2(acc0, acc1) \
	VADDPS  (DI), acc0, acc0   \
	VADDPS  64(DI), acc1, acc1 \
	VMOVUPS acc0, (DI)         \
	VMOVUPS acc1, 64(DI)       \
	ADDQ    R11, DI

#define STORE1(acc) \
	VADDPS  (DI), acc, acc \
	VMOVUPS acc, (DI)      \
	ADDQ    R11, DI

// Z1 = the bf16 of each F32 of Z0, in the low half of its lane: Z28 = 0x7fff, Z29 = 1, Z30 = 0x40
// in every lane; K2 marks the NaNs.
#define NARROW_Z0 \
	VPSRLD    $16, Z0, Z1     \
	VPANDD    Z29, Z1, Z2     \
	VPADDD    Z28, Z0, Z3     \
	VPADDD    Z2, Z3, Z3      \
	VPSRLD    $16, Z3, Z3     \
	VCMPPS    $3, Z0, Z0, K2  \
	VPORD     Z30, Z1, Z4     \
	VMOVDQA32 Z3, Z1          \
	VMOVDQA32 Z4, K2, Z1

// ---- kernels -----------------------------------------------------------------------------------

// func gemm12x32BF16AVX512(a *uint16, lda int, b *uint32, ldb int, c *float32, ldc, kc int)
//
// c[i·ldc + t] += Σ_{k<kc} a[i·lda + k]·b's pair element (k, t), for i < 12, t < 32: a the bf16
// weight rows (lda in elements), b (kc/2, ldb) pairs of which 32 columns are read, kc even.
TEXT ·gemm12x32BF16AVX512(SB), NOSPLIT, $0-56
	GEMM_BF16_ARGS
	ZERO_Z0_Z15
	VPXORD Z16, Z16, Z16
	VPXORD Z17, Z17, Z17
	VPXORD Z18, Z18, Z18
	VPXORD Z19, Z19, Z19
	VPXORD Z20, Z20, Z20
	VPXORD Z21, Z21, Z21
	VPXORD Z22, Z22, Z22
	VPXORD Z23, Z23, Z23

loop4:
	CMPQ CX, $4
	JLT  loop1
	STEP_BF16((BX), 64(BX), 0)
	STEP_BF16((BX)(R12*1), 64(BX)(R12*1), 1)
	LEAQ (BX)(R12*2), BX
	STEP_BF16((BX), 64(BX), 2)
	STEP_BF16((BX)(R12*1), 64(BX)(R12*1), 3)
	LEAQ (BX)(R12*2), BX
	ADDQ $16, SI
	ADDQ $16, R8
	ADDQ $16, R9
	ADDQ $16, R10
	SUBQ $4, CX
	JMP  loop4

loop1:
	TESTQ CX, CX
	JZ    store
	STEP_BF16((BX), 64(BX), 0)
	ADVANCE_BF16
	DECQ  CX
	JMP   loop1

store:
	STORE2(Z0, Z1)
	STORE2(Z2, Z3)
	STORE2(Z4, Z5)
	STORE2(Z6, Z7)
	STORE2(Z8, Z9)
	STORE2(Z10, Z11)
	STORE2(Z12, Z13)
	STORE2(Z14, Z15)
	STORE2(Z16, Z17)
	STORE2(Z18, Z19)
	STORE2(Z20, Z21)
	STORE2(Z22, Z23)
	VZEROUPPER
	RET

// func gemm12x16BF16AVX512(a *uint16, lda int, b *uint32, ldb int, c *float32, ldc, kc int)
//
// gemm12x32BF16AVX512 on the first 16 columns of b and c only: a last panel of 16 tokens or fewer.
TEXT ·gemm12x16BF16AVX512(SB), NOSPLIT, $0-56
	GEMM_BF16_ARGS
	ZERO_Z0_Z15

h_loop4:
	CMPQ CX, $4
	JLT  h_loop1
	STEP16_BF16((BX), 0)
	STEP16_BF16((BX)(R12*1), 1)
	LEAQ (BX)(R12*2), BX
	STEP16_BF16((BX), 2)
	STEP16_BF16((BX)(R12*1), 3)
	LEAQ (BX)(R12*2), BX
	ADDQ $16, SI
	ADDQ $16, R8
	ADDQ $16, R9
	ADDQ $16, R10
	SUBQ $4, CX
	JMP  h_loop4

h_loop1:
	TESTQ CX, CX
	JZ    h_store
	STEP16_BF16((BX), 0)
	ADVANCE_BF16
	DECQ  CX
	JMP   h_loop1

h_store:
	STORE1(Z0)
	STORE1(Z1)
	STORE1(Z2)
	STORE1(Z3)
	STORE1(Z4)
	STORE1(Z5)
	STORE1(Z6)
	STORE1(Z7)
	STORE1(Z8)
	STORE1(Z9)
	STORE1(Z10)
	STORE1(Z11)
	VZEROUPPER
	RET

// func narrowBF16AVX512(dst *uint16, src *float32, n int)
//
// dst[i] = bf16(src[i]), rounded to nearest, ties to even: bits + 0x7fff + the lowest kept bit,
// shifted down; a NaN keeps its top half with the quiet bit set.
TEXT ·narrowBF16AVX512(SB), NOSPLIT, $0-24
	MOVQ         dst+0(FP), DI
	MOVQ         src+8(FP), SI
	MOVQ         n+16(FP), CX
	MOVL         $0x7fff, AX
	VPBROADCASTD AX, Z28
	MOVL         $1, AX
	VPBROADCASTD AX, Z29
	MOVL         $0x40, AX
	VPBROADCASTD AX, Z30

narrow16:
	CMPQ      CX, $16
	JLT       narrowTail
	VMOVDQU32 (SI), Z0
	NARROW_Z0
	VPMOVDW   Z1, (DI)
	ADDQ      $64, SI
	ADDQ      $32, DI
	SUBQ      $16, CX
	JMP       narrow16

narrowTail:
	TESTQ       CX, CX
	JZ          done
	TAILMASK
	VMOVDQU32.Z (SI), K1, Z0
	NARROW_Z0
	VPMOVDW     Z1, K1, (DI)

done:
	VZEROUPPER
	RET
