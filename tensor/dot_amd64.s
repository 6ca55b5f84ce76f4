//go:build amd64 && !purego

#include "textflag.h"
#include "avx512_amd64.h"

// The inner loops of MatMul for x86-64, in two flavours: AVX-512 (Z registers, masked tails) and
// AVX2+FMA (Y registers; the Go wrappers in dot_amd64.go do the tails of the dot kernels). Every
// kernel computes F32 dot products of exactly widened weights:
//
//	bf16 → f32: zero-extend each 16-bit word to 32 bits, shift left by 16 (VPMOVZXWD, VPSLLD)
//	f16  → f32: VCVTPH2PS (exact: every binary16 is a binary32)
//
// and accumulates with VFMADD231PS (never VDPBF16PS, which would round x to bf16). Only the
// summation order differs from the portable Go. The kernels, per flavour:
//
//	dot       one row · x                           attention, the rows left over by dot4
//	dot4      four rows · x, sharing each x load    decode GEMV
//	dot4BF16EvenOdd  dot4 on an even/odd-permuted x   decode GEMV, bf16 (AVX-512 only)
//	dot4x4    four rows · four tokens               small batches (AVX-512 only)
//	widenBlock rows of weights → F32 tile           GEMM
//	gemm      12 (6 on AVX2) rows × 32 or 16 tokens  GEMM micro-kernel
//	transpose 8×8 blocks (AVX2 for both)            GEMM packing and write-back
//
// Each dot kernel keeps two or four independent accumulators per row so the FMA latency is hidden.
//
// The macros come first, before any TEXT, so that go vet's frame checks do not read their bodies
// as part of a function.

// ---- macros ------------------------------------------------------------------------------------

// Widen 16 bf16 at src into tmp and accumulate tmp·xv into acc.
#define FMA_BF16_Z(src, xv, acc, tmp) \
	VPMOVZXWD   src, tmp       \
	VPSLLD      $16, tmp, tmp  \
	VFMADD231PS xv, tmp, acc

#define FMA_BF16_ZMASK(src, xv, acc, tmp) \
	VPMOVZXWD.Z src, K1, tmp   \
	VPSLLD      $16, tmp, tmp  \
	VFMADD231PS xv, tmp, acc

#define FMA_F16_Z(src, xv, acc, tmp) \
	VCVTPH2PS   src, tmp       \
	VFMADD231PS xv, tmp, acc

#define FMA_F16_ZMASK(src, xv, acc, tmp) \
	VCVTPH2PS.Z src, K1, tmp   \
	VFMADD231PS xv, tmp, acc

#define FMA_F32_Z(src, xv, acc, tmp) \
	VFMADD231PS src, xv, acc

#define FMA_F32_ZMASK(src, xv, acc, tmp) \
	VMOVUPS.Z   src, K1, tmp   \
	VFMADD231PS xv, tmp, acc

// Sum the 16 lanes of Z0 into the low lane of X0.
#define HSUM_Z0 \
	VEXTRACTF64X4 $1, Z0, Y1 \
	VADDPS        Y1, Y0, Y0 \
	VEXTRACTF128  $1, Y0, X1 \
	VADDPS        X1, X0, X0 \
	VHADDPS       X0, X0, X0 \
	VHADDPS       X0, X0, X0

// Sum the lanes of each of Z0..Z3 into X0 = [Σ Z0, Σ Z1, Σ Z2, Σ Z3].
#define HSUM4_Z0_Z3 \
	VEXTRACTF64X4 $1, Z0, Y8  \
	VEXTRACTF64X4 $1, Z1, Y9  \
	VEXTRACTF64X4 $1, Z2, Y10 \
	VEXTRACTF64X4 $1, Z3, Y11 \
	VADDPS        Y8, Y0, Y0  \
	VADDPS        Y9, Y1, Y1  \
	VADDPS        Y10, Y2, Y2 \
	VADDPS        Y11, Y3, Y3 \
	VEXTRACTF128  $1, Y0, X8  \
	VEXTRACTF128  $1, Y1, X9  \
	VEXTRACTF128  $1, Y2, X10 \
	VEXTRACTF128  $1, Y3, X11 \
	VADDPS        X8, X0, X0  \
	VADDPS        X9, X1, X1  \
	VADDPS        X10, X2, X2 \
	VADDPS        X11, X3, X3 \
	VHADDPS       X1, X0, X0  \
	VHADDPS       X3, X2, X2  \
	VHADDPS       X2, X0, X0

// One-row dot, 64 elements a step into four accumulators, then 16 a step, then a masked tail.
// SI = x, R8 = w, CX = n. WS is the size of one weight element in bytes.
#define DOT1_Z(FMA, FMAMASK, WS) \
	ZERO_Z0_Z7                              \
	CMPQ CX, $64                            \
	JLT  step16                             \
loop64:                                     \
	VMOVUPS (SI), Z16                       \
	VMOVUPS 64(SI), Z17                     \
	VMOVUPS 128(SI), Z18                    \
	VMOVUPS 192(SI), Z19                    \
	FMA((R8), Z16, Z0, Z20)                 \
	FMA(16*WS(R8), Z17, Z1, Z21)            \
	FMA(32*WS(R8), Z18, Z2, Z22)            \
	FMA(48*WS(R8), Z19, Z3, Z23)            \
	ADDQ $256, SI                           \
	ADDQ $64*WS, R8                         \
	SUBQ $64, CX                            \
	CMPQ CX, $64                            \
	JGE  loop64                             \
step16:                                     \
	CMPQ CX, $16                            \
	JLT  tail                               \
	VMOVUPS (SI), Z16                       \
	FMA((R8), Z16, Z0, Z20)                 \
	ADDQ $64, SI                            \
	ADDQ $16*WS, R8                         \
	SUBQ $16, CX                            \
	JMP  step16                             \
tail:                                       \
	TESTQ CX, CX                            \
	JZ    reduce                            \
	TAILMASK                                \
	VMOVUPS.Z (SI), K1, Z16                 \
	FMAMASK((R8), Z16, Z1, Z20)             \
reduce:                                     \
	VADDPS Z1, Z0, Z0                       \
	VADDPS Z3, Z2, Z2                       \
	VADDPS Z2, Z0, Z0                       \
	HSUM_Z0

// The four-row kernels prefetch each row DOT4_PREFETCH bytes ahead, one line per 64 bytes they
// read (PREF_LINE) or two per 128 (PREF_LINE2, for F32 weights).
#define DOT4_PREFETCH 1024

#define PREF_LINE(r) \
	PREFETCHT0 DOT4_PREFETCH(r)

#define PREF_LINE2(r) \
	PREFETCHT0 DOT4_PREFETCH(r) \
	PREFETCHT0 DOT4_PREFETCH+64(r)

// Four-row dot: out[r] = Σ_k x[k]·w[r·ldw + k], r = 0..3. 32 elements a step with two
// accumulators per row (Z0..Z3 and Z4..Z7), then 16 a step, then a masked tail.
// SI = x, R8..R11 = the rows, CX = n, DI = out.
#define DOT4_Z(FMA, FMAMASK, WS, PREF) \
	ZERO_Z0_Z7                              \
	CMPQ CX, $32                            \
	JLT  step16                             \
loop32:                                     \
	PREF(R8)                                \
	PREF(R9)                                \
	PREF(R10)                               \
	PREF(R11)                               \
	VMOVUPS (SI), Z16                       \
	VMOVUPS 64(SI), Z17                     \
	FMA((R8), Z16, Z0, Z20)                 \
	FMA(16*WS(R8), Z17, Z4, Z21)            \
	FMA((R9), Z16, Z1, Z22)                 \
	FMA(16*WS(R9), Z17, Z5, Z23)            \
	FMA((R10), Z16, Z2, Z24)                \
	FMA(16*WS(R10), Z17, Z6, Z25)           \
	FMA((R11), Z16, Z3, Z26)                \
	FMA(16*WS(R11), Z17, Z7, Z27)           \
	ADDQ $128, SI                           \
	ADDQ $32*WS, R8                         \
	ADDQ $32*WS, R9                         \
	ADDQ $32*WS, R10                        \
	ADDQ $32*WS, R11                        \
	SUBQ $32, CX                            \
	CMPQ CX, $32                            \
	JGE  loop32                             \
step16:                                     \
	CMPQ CX, $16                            \
	JLT  tail                               \
	VMOVUPS (SI), Z16                       \
	FMA((R8), Z16, Z0, Z20)                 \
	FMA((R9), Z16, Z1, Z22)                 \
	FMA((R10), Z16, Z2, Z24)                \
	FMA((R11), Z16, Z3, Z26)                \
	ADDQ $64, SI                            \
	ADDQ $16*WS, R8                         \
	ADDQ $16*WS, R9                         \
	ADDQ $16*WS, R10                        \
	ADDQ $16*WS, R11                        \
	SUBQ $16, CX                            \
tail:                                       \
	TESTQ CX, CX                            \
	JZ    reduce                            \
	TAILMASK                                \
	VMOVUPS.Z (SI), K1, Z16                 \
	FMAMASK((R8), Z16, Z4, Z20)             \
	FMAMASK((R9), Z16, Z5, Z22)             \
	FMAMASK((R10), Z16, Z6, Z24)            \
	FMAMASK((R11), Z16, Z7, Z26)            \
reduce:                                     \
	VADDPS Z4, Z0, Z0                       \
	VADDPS Z5, Z1, Z1                       \
	VADDPS Z6, Z2, Z2                       \
	VADDPS Z7, Z3, Z3                       \
	HSUM4_Z0_Z3                             \
	VMOVUPS X0, (DI)                        \
	VZEROUPPER                              \
	RET

#define DOT4_ARGS(SHIFT) \
	MOVQ x+0(FP), SI             \
	MOVQ w+8(FP), R8             \
	MOVQ ldw+16(FP), DX          \
	MOVQ n+24(FP), CX            \
	MOVQ out+32(FP), DI          \
	SHLQ $SHIFT, DX              \
	LEAQ (R8)(DX*1), R9          \
	LEAQ (R9)(DX*1), R10         \
	LEAQ (R10)(DX*1), R11

// One k step of the 12×32 GEMM tile: the 32 values of b at BX (Z24, Z25) times row i's a value,
// broadcast into tmp, into the accumulators of row i.
#define GEMM_ROW_Z(src, tmp, acc0, acc1) \
	VBROADCASTSS src, tmp           \
	VFMADD231PS  Z24, tmp, acc0     \
	VFMADD231PS  Z25, tmp, acc1

// Step u of an unrolled run of GEMM steps: b's row at b0 (its second half at b1), a at u·4 past
// each row pointer.
#define GEMM_STEP_Z(b0, b1, u) \
	VMOVUPS b0, Z24                          \
	VMOVUPS b1, Z25                          \
	GEMM_ROW_Z((u*4)(SI), Z26, Z0, Z1)       \
	GEMM_ROW_Z((u*4)(SI)(DX*1), Z27, Z2, Z3) \
	GEMM_ROW_Z((u*4)(SI)(DX*2), Z28, Z4, Z5) \
	GEMM_ROW_Z((u*4)(R8), Z29, Z6, Z7)       \
	GEMM_ROW_Z((u*4)(R8)(DX*1), Z30, Z8, Z9) \
	GEMM_ROW_Z((u*4)(R8)(DX*2), Z31, Z10, Z11) \
	GEMM_ROW_Z((u*4)(R9), Z26, Z12, Z13)     \
	GEMM_ROW_Z((u*4)(R9)(DX*1), Z27, Z14, Z15) \
	GEMM_ROW_Z((u*4)(R9)(DX*2), Z28, Z16, Z17) \
	GEMM_ROW_Z((u*4)(R10), Z29, Z18, Z19)    \
	GEMM_ROW_Z((u*4)(R10)(DX*1), Z30, Z20, Z21) \
	GEMM_ROW_Z((u*4)(R10)(DX*2), Z31, Z22, Z23)

// Four steps: b's rows at BX, BX + R12, then (BX moved by 2·R12) the next two; BX ends 4·R12 on.
#define GEMM_STEPS4_Z \
	GEMM_STEP_Z((BX), 64(BX), 0)                   \
	GEMM_STEP_Z((BX)(R12*1), 64(BX)(R12*1), 1)     \
	LEAQ        (BX)(R12*2), BX                    \
	GEMM_STEP_Z((BX), 64(BX), 2)                   \
	GEMM_STEP_Z((BX)(R12*1), 64(BX)(R12*1), 3)     \
	LEAQ        (BX)(R12*2), BX                    \
	GEMM_ADVANCE_Z(4)

// Move a past n steps.
#define GEMM_ADVANCE_Z(n) \
	ADDQ $(n*4), SI   \
	ADDQ $(n*4), R8   \
	ADDQ $(n*4), R9   \
	ADDQ $(n*4), R10

// Prefetch the line at R13 of the row at AX and move AX to the next row.
#define GEMM_PREFETCH_ROW \
	PREFETCHT1 (AX)(R13*1)   \
	ADDQ pfStride+64(FP), AX

// Add the accumulators of row i to the C row at ptr and store them.
#define GEMM_STORE_Z(ptr, acc0, acc1) \
	VADDPS  (ptr), acc0, acc0   \
	VADDPS  64(ptr), acc1, acc1 \
	VMOVUPS acc0, (ptr)         \
	VMOVUPS acc1, 64(ptr)

// The 6×32 tile of gemm6x32AVX512: GEMM_STEP_Z on the first 6 rows (SI and R8).
#define GEMM6_STEP_Z(b0, b1, u) \
	VMOVUPS b0, Z24                          \
	VMOVUPS b1, Z25                          \
	GEMM_ROW_Z((u*4)(SI), Z26, Z0, Z1)       \
	GEMM_ROW_Z((u*4)(SI)(DX*1), Z27, Z2, Z3) \
	GEMM_ROW_Z((u*4)(SI)(DX*2), Z28, Z4, Z5) \
	GEMM_ROW_Z((u*4)(R8), Z29, Z6, Z7)       \
	GEMM_ROW_Z((u*4)(R8)(DX*1), Z30, Z8, Z9) \
	GEMM_ROW_Z((u*4)(R8)(DX*2), Z31, Z10, Z11)

// The 12×16 tile of gemm12x16AVX512: as GEMM_ROW_Z, GEMM_STEP_Z and GEMM_STEPS4_Z on the first
// 16 columns of b (Z24) and one accumulator per row (Z0..Z11).
#define GEMM16_ROW_Z(src, tmp, acc) \
	VBROADCASTSS src, tmp       \
	VFMADD231PS  Z24, tmp, acc

#define GEMM16_STEP_Z(b0, u) \
	VMOVUPS b0, Z24                           \
	GEMM16_ROW_Z((u*4)(SI), Z26, Z0)          \
	GEMM16_ROW_Z((u*4)(SI)(DX*1), Z27, Z1)    \
	GEMM16_ROW_Z((u*4)(SI)(DX*2), Z28, Z2)    \
	GEMM16_ROW_Z((u*4)(R8), Z29, Z3)          \
	GEMM16_ROW_Z((u*4)(R8)(DX*1), Z30, Z4)    \
	GEMM16_ROW_Z((u*4)(R8)(DX*2), Z31, Z5)    \
	GEMM16_ROW_Z((u*4)(R9), Z26, Z6)          \
	GEMM16_ROW_Z((u*4)(R9)(DX*1), Z27, Z7)    \
	GEMM16_ROW_Z((u*4)(R9)(DX*2), Z28, Z8)    \
	GEMM16_ROW_Z((u*4)(R10), Z29, Z9)         \
	GEMM16_ROW_Z((u*4)(R10)(DX*1), Z30, Z10)  \
	GEMM16_ROW_Z((u*4)(R10)(DX*2), Z31, Z11)

#define GEMM16_STEPS4_Z \
	GEMM16_STEP_Z((BX), 0)               \
	GEMM16_STEP_Z((BX)(R12*1), 1)        \
	LEAQ          (BX)(R12*2), BX        \
	GEMM16_STEP_Z((BX), 2)               \
	GEMM16_STEP_Z((BX)(R12*1), 3)        \
	LEAQ          (BX)(R12*2), BX        \
	GEMM_ADVANCE_Z(4)

#define GEMM16_STORE_Z(ptr, acc) \
	VADDPS  (ptr), acc, acc \
	VMOVUPS acc, (ptr)

#define FMA_BF16_Y(src, xv, acc, tmp) \
	VPMOVZXWD   src, tmp       \
	VPSLLD      $16, tmp, tmp  \
	VFMADD231PS xv, tmp, acc

#define FMA_F16_Y(src, xv, acc, tmp) \
	VCVTPH2PS   src, tmp       \
	VFMADD231PS xv, tmp, acc

#define FMA_F32_Y(src, xv, acc, tmp) \
	VFMADD231PS src, xv, acc

#define ZERO_Y0_Y7 \
	VXORPS Y0, Y0, Y0 \
	VXORPS Y1, Y1, Y1 \
	VXORPS Y2, Y2, Y2 \
	VXORPS Y3, Y3, Y3 \
	VXORPS Y4, Y4, Y4 \
	VXORPS Y5, Y5, Y5 \
	VXORPS Y6, Y6, Y6 \
	VXORPS Y7, Y7, Y7

// One-row dot, 32 elements a step into four accumulators, then 16 a step.
#define DOT1_Y(FMA, WS) \
	ZERO_Y0_Y7                              \
	CMPQ CX, $32                            \
	JLT  step16                             \
loop32:                                     \
	VMOVUPS (SI), Y8                        \
	VMOVUPS 32(SI), Y9                      \
	VMOVUPS 64(SI), Y10                     \
	VMOVUPS 96(SI), Y11                     \
	FMA((R8), Y8, Y0, Y12)                  \
	FMA(8*WS(R8), Y9, Y1, Y13)              \
	FMA(16*WS(R8), Y10, Y2, Y14)            \
	FMA(24*WS(R8), Y11, Y3, Y15)            \
	ADDQ $128, SI                           \
	ADDQ $32*WS, R8                         \
	SUBQ $32, CX                            \
	CMPQ CX, $32                            \
	JGE  loop32                             \
step16:                                     \
	CMPQ CX, $16                            \
	JLT  reduce                             \
	VMOVUPS (SI), Y8                        \
	VMOVUPS 32(SI), Y9                      \
	FMA((R8), Y8, Y0, Y12)                  \
	FMA(8*WS(R8), Y9, Y1, Y13)              \
reduce:                                     \
	VADDPS Y1, Y0, Y0                       \
	VADDPS Y3, Y2, Y2                       \
	VADDPS Y2, Y0, Y0                       \
	VEXTRACTF128 $1, Y0, X1                 \
	VADDPS X1, X0, X0                       \
	VHADDPS X0, X0, X0                      \
	VHADDPS X0, X0, X0

// Four-row dot, 16 elements a step, two accumulators per row (Y0..Y3, Y4..Y7).
#define DOT4_Y(FMA, WS, PREF) \
	ZERO_Y0_Y7                              \
	TESTQ CX, CX                            \
	JZ    reduce                            \
loop16:                                     \
	PREF(R8)                                \
	PREF(R9)                                \
	PREF(R10)                               \
	PREF(R11)                               \
	VMOVUPS (SI), Y8                        \
	VMOVUPS 32(SI), Y9                      \
	FMA((R8), Y8, Y0, Y10)                  \
	FMA(8*WS(R8), Y9, Y4, Y11)              \
	FMA((R9), Y8, Y1, Y12)                  \
	FMA(8*WS(R9), Y9, Y5, Y13)              \
	FMA((R10), Y8, Y2, Y14)                 \
	FMA(8*WS(R10), Y9, Y6, Y15)             \
	FMA((R11), Y8, Y3, Y10)                 \
	FMA(8*WS(R11), Y9, Y7, Y11)             \
	ADDQ $64, SI                            \
	ADDQ $16*WS, R8                         \
	ADDQ $16*WS, R9                         \
	ADDQ $16*WS, R10                        \
	ADDQ $16*WS, R11                        \
	SUBQ $16, CX                            \
	JNZ  loop16                             \
reduce:                                     \
	VADDPS Y4, Y0, Y0                       \
	VADDPS Y5, Y1, Y1                       \
	VADDPS Y6, Y2, Y2                       \
	VADDPS Y7, Y3, Y3                       \
	VEXTRACTF128 $1, Y0, X8                 \
	VEXTRACTF128 $1, Y1, X9                 \
	VEXTRACTF128 $1, Y2, X10                \
	VEXTRACTF128 $1, Y3, X11                \
	VADDPS X8, X0, X0                       \
	VADDPS X9, X1, X1                       \
	VADDPS X10, X2, X2                      \
	VADDPS X11, X3, X3                      \
	VHADDPS X1, X0, X0                      \
	VHADDPS X3, X2, X2                      \
	VHADDPS X2, X0, X0                      \
	VMOVUPS X0, (DI)                        \
	VZEROUPPER                              \
	RET

#define GEMM_ROW_Y(src, acc0, acc1) \
	VBROADCASTSS src, Y14           \
	VFMADD231PS  Y12, Y14, acc0     \
	VFMADD231PS  Y13, Y14, acc1

// One step of the 6×16 AVX2 tile: 16 values of b at R9 (its rows R10 bytes apart), the 6 rows of
// a at SI and R8.
#define GEMM_STEP_Y \
	VMOVUPS (R9), Y12              \
	VMOVUPS 32(R9), Y13            \
	GEMM_ROW_Y((SI), Y0, Y1)       \
	GEMM_ROW_Y((SI)(DX*1), Y2, Y3) \
	GEMM_ROW_Y((SI)(DX*2), Y4, Y5) \
	GEMM_ROW_Y((R8), Y6, Y7)       \
	GEMM_ROW_Y((R8)(DX*1), Y8, Y9) \
	GEMM_ROW_Y((R8)(DX*2), Y10, Y11) \
	ADDQ    $4, SI                 \
	ADDQ    $4, R8                 \
	ADDQ    R10, R9

#define GEMM_STORE_Y(ptr, acc0, acc1) \
	VADDPS  (ptr), acc0, acc0   \
	VADDPS  32(ptr), acc1, acc1 \
	VMOVUPS acc0, (ptr)         \
	VMOVUPS acc1, 32(ptr)

// Four rows × four tokens: out[t·4 + r] = Σ_k x[t·ldx + k]·w[r·ldw + k]. Each widened weight
// vector feeds four FMAs, one per token, so a small batch widens every weight once instead of once
// per token. The rows are prefetched as in DOT4_Z (for 16-bit weights every line twice).
// Accumulator Z(4t + r); SI, R12 = tokens 0 and 3 (BX = ldx in bytes); R8..R11 = the rows;
// CX = n; DI = out.
#define DOT4X4_STEP(LOADW) \
	VMOVUPS (SI), Z16                       \
	VMOVUPS (SI)(BX*1), Z17                 \
	VMOVUPS (SI)(BX*2), Z18                 \
	VMOVUPS (R12), Z19                      \
	LOADW((R8), Z20)                     \
	LOADW((R9), Z21)                     \
	LOADW((R10), Z22)                    \
	LOADW((R11), Z23)                    \
	DOT4X4_FMAS

#define DOT4X4_FMAS \
	VFMADD231PS Z16, Z20, Z0  \
	VFMADD231PS Z16, Z21, Z1  \
	VFMADD231PS Z16, Z22, Z2  \
	VFMADD231PS Z16, Z23, Z3  \
	VFMADD231PS Z17, Z20, Z4  \
	VFMADD231PS Z17, Z21, Z5  \
	VFMADD231PS Z17, Z22, Z6  \
	VFMADD231PS Z17, Z23, Z7  \
	VFMADD231PS Z18, Z20, Z8  \
	VFMADD231PS Z18, Z21, Z9  \
	VFMADD231PS Z18, Z22, Z10 \
	VFMADD231PS Z18, Z23, Z11 \
	VFMADD231PS Z19, Z20, Z12 \
	VFMADD231PS Z19, Z21, Z13 \
	VFMADD231PS Z19, Z22, Z14 \
	VFMADD231PS Z19, Z23, Z15

// Sum the lanes of each of four accumulators a..d into Xa = [Σ a, Σ b, Σ c, Σ d] (Z16, Z17 are
// free by then).
#define HSUM4(Za, Ya, Xa, Zb, Yb, Xb, Zc, Yc, Xc, Zd, Yd, Xd) \
	VEXTRACTF64X4 $1, Za, Y16 \
	VADDPS        Y16, Ya, Ya \
	VEXTRACTF64X4 $1, Zb, Y17 \
	VADDPS        Y17, Yb, Yb \
	VEXTRACTF64X4 $1, Zc, Y16 \
	VADDPS        Y16, Yc, Yc \
	VEXTRACTF64X4 $1, Zd, Y17 \
	VADDPS        Y17, Yd, Yd \
	VEXTRACTF32X4 $1, Ya, X16 \
	VADDPS        X16, Xa, Xa  \
	VEXTRACTF32X4 $1, Yb, X17 \
	VADDPS        X17, Xb, Xb  \
	VEXTRACTF32X4 $1, Yc, X17 \
	VADDPS        X17, Xc, Xc  \
	VEXTRACTF32X4 $1, Yd, X17 \
	VADDPS        X17, Xd, Xd  \
	VHADDPS       Xb, Xa, Xa  \
	VHADDPS       Xd, Xc, Xc  \
	VHADDPS       Xc, Xa, Xa

#define DOT4X4_Z(LOADW, LOADMASK, WS) \
	VPXORD Z8, Z8, Z8                       \
	VPXORD Z9, Z9, Z9                       \
	VPXORD Z10, Z10, Z10                    \
	VPXORD Z11, Z11, Z11                    \
	VPXORD Z12, Z12, Z12                    \
	VPXORD Z13, Z13, Z13                    \
	VPXORD Z14, Z14, Z14                    \
	VPXORD Z15, Z15, Z15                    \
	ZERO_Z0_Z7                              \
	CMPQ CX, $16                            \
	JLT  tail                               \
loop16:                                     \
	PREF_LINE(R8)                           \
	PREF_LINE(R9)                           \
	PREF_LINE(R10)                          \
	PREF_LINE(R11)                          \
	DOT4X4_STEP(LOADW)                      \
	ADDQ $64, SI                            \
	ADDQ $64, R12                           \
	ADDQ $16*WS, R8                         \
	ADDQ $16*WS, R9                         \
	ADDQ $16*WS, R10                        \
	ADDQ $16*WS, R11                        \
	SUBQ $16, CX                            \
	CMPQ CX, $16                            \
	JGE  loop16                             \
tail:                                       \
	TESTQ CX, CX                            \
	JZ    reduce                            \
	TAILMASK                                \
	VMOVUPS.Z (SI), K1, Z16                 \
	VMOVUPS.Z (SI)(BX*1), K1, Z17           \
	VMOVUPS.Z (SI)(BX*2), K1, Z18           \
	VMOVUPS.Z (R12), K1, Z19                \
	LOADMASK((R8), Z20)                     \
	LOADMASK((R9), Z21)                     \
	LOADMASK((R10), Z22)                    \
	LOADMASK((R11), Z23)                    \
	DOT4X4_FMAS                             \
reduce:                                     \
	HSUM4(Z0, Y0, X0, Z1, Y1, X1, Z2, Y2, X2, Z3, Y3, X3)         \
	HSUM4(Z4, Y4, X4, Z5, Y5, X5, Z6, Y6, X6, Z7, Y7, X7)         \
	HSUM4(Z12, Y12, X12, Z13, Y13, X13, Z14, Y14, X14, Z15, Y15, X15) \
	VMOVUPS X0, (DI)                        \
	VMOVUPS X4, 16(DI)                      \
	VMOVUPS X12, 48(DI)                     \
	HSUM4(Z8, Y8, X8, Z9, Y9, X9, Z10, Y10, X10, Z11, Y11, X11)   \
	VMOVUPS X8, 32(DI)                      \
	VZEROUPPER                              \
	RET

#define DOT4X4_ARGS(SHIFT) \
	MOVQ x+0(FP), SI             \
	MOVQ ldx+8(FP), BX           \
	SHLQ $2, BX                  \
	LEAQ (SI)(BX*2), R12         \
	ADDQ BX, R12                 \
	MOVQ w+16(FP), R8            \
	MOVQ ldw+24(FP), DX          \
	MOVQ n+32(FP), CX            \
	MOVQ out+40(FP), DI          \
	SHLQ $SHIFT, DX              \
	LEAQ (R8)(DX*1), R9          \
	LEAQ (R9)(DX*1), R10         \
	LEAQ (R10)(DX*1), R11

// Widen a block of rows into dst, (rows, cols) contiguous. LOAD16 reads 16 elements at src into a
// register; LOADMASK the first CX (< 16) of them.
// DI = dst, SI = src, R8 = source row stride in bytes, R9 = rows, R10 = cols.
#define WIDEN_BLOCK_Z(LOAD16, LOADMASK, WS) \
	TESTQ R9, R9                            \
	JZ    done                              \
row:                                        \
	MOVQ  SI, R11                           \
	MOVQ  R10, CX                           \
	CMPQ  CX, $32                           \
	JLT   step16                            \
loop32:                                     \
	LOAD16((R11), Z0)                       \
	LOAD16(16*WS(R11), Z1)                  \
	VMOVUPS Z0, (DI)                        \
	VMOVUPS Z1, 64(DI)                      \
	ADDQ  $32*WS, R11                       \
	ADDQ  $128, DI                          \
	SUBQ  $32, CX                           \
	CMPQ  CX, $32                           \
	JGE   loop32                            \
step16:                                     \
	CMPQ  CX, $16                           \
	JLT   tail                              \
	LOAD16((R11), Z0)                       \
	VMOVUPS Z0, (DI)                        \
	ADDQ  $16*WS, R11                       \
	ADDQ  $64, DI                           \
	SUBQ  $16, CX                           \
tail:                                       \
	TESTQ CX, CX                            \
	JZ    next                              \
	TAILMASK                                \
	LOADMASK((R11), Z0)                     \
	VMOVUPS Z0, K1, (DI)                    \
	LEAQ  (DI)(CX*4), DI                    \
next:                                       \
	ADDQ  R8, SI                            \
	DECQ  R9                                \
	JNZ   row                               \
done:                                       \
	VZEROUPPER                              \
	RET

#define LOAD_BF16_Z(src, z) \
	VPMOVZXWD src, z    \
	VPSLLD    $16, z, z

#define LOADMASK_BF16_Z(src, z) \
	VPMOVZXWD.Z src, K1, z \
	VPSLLD      $16, z, z

#define LOAD_F16_Z(src, z) \
	VCVTPH2PS src, z

#define LOADMASK_F16_Z(src, z) \
	VCVTPH2PS.Z src, K1, z

#define LOAD_F32_Z(src, z) \
	VMOVUPS src, z

#define LOADMASK_F32_Z(src, z) \
	VMOVUPS.Z src, K1, z

// The AVX2 form: 8 elements a step, then one at a time. LOAD8 reads 8 elements into Y0, LOAD1 one
// element into X0.
#define WIDEN_BLOCK_Y(LOAD8, LOAD1, WS) \
	TESTQ R9, R9                            \
	JZ    done                              \
row:                                        \
	MOVQ  SI, R11                           \
	MOVQ  R10, CX                           \
	CMPQ  CX, $16                           \
	JLT   step8                             \
loop16:                                     \
	LOAD8((R11), Y0)                        \
	LOAD8(8*WS(R11), Y1)                    \
	VMOVUPS Y0, (DI)                        \
	VMOVUPS Y1, 32(DI)                      \
	ADDQ  $16*WS, R11                       \
	ADDQ  $64, DI                           \
	SUBQ  $16, CX                           \
	CMPQ  CX, $16                           \
	JGE   loop16                            \
step8:                                      \
	CMPQ  CX, $8                            \
	JLT   tail                              \
	LOAD8((R11), Y0)                        \
	VMOVUPS Y0, (DI)                        \
	ADDQ  $8*WS, R11                        \
	ADDQ  $32, DI                           \
	SUBQ  $8, CX                            \
tail:                                       \
	TESTQ CX, CX                            \
	JZ    next                              \
one:                                        \
	LOAD1((R11))                            \
	VMOVSS X0, (DI)                         \
	ADDQ  $WS, R11                          \
	ADDQ  $4, DI                            \
	DECQ  CX                                \
	JNZ   one                               \
next:                                       \
	ADDQ  R8, SI                            \
	DECQ  R9                                \
	JNZ   row                               \
done:                                       \
	VZEROUPPER                              \
	RET

#define LOAD_BF16_Y(src, y) \
	VPMOVZXWD src, y    \
	VPSLLD    $16, y, y

#define LOAD_F16_Y(src, y) \
	VCVTPH2PS src, y

#define LOAD_F32_Y(src, y) \
	VMOVUPS src, y

#define LOAD1_BF16(src) \
	MOVWLZX src, AX  \
	SHLL    $16, AX  \
	MOVL    AX, X0

#define LOAD1_F16(src) \
	MOVWLZX   src, AX \
	MOVL      AX, X0  \
	VCVTPH2PS X0, X0

#define LOAD1_F32(src) \
	VMOVSS src, X0

#define WIDEN_BLOCK_ARGS(SHIFT) \
	MOVQ dst+0(FP), DI           \
	MOVQ src+8(FP), SI           \
	MOVQ lds+16(FP), R8          \
	SHLQ $SHIFT, R8              \
	MOVQ rows+24(FP), R9         \
	MOVQ cols+32(FP), R10

// Transpose the 8×8 block in Y0..Y7 (row i in Yi) into Y8..Y15 (column j in Y(8+j)).
#define TRANSPOSE8 \
	VUNPCKLPS  Y1, Y0, Y8        \
	VUNPCKHPS  Y1, Y0, Y9        \
	VUNPCKLPS  Y3, Y2, Y10       \
	VUNPCKHPS  Y3, Y2, Y11       \
	VUNPCKLPS  Y5, Y4, Y12       \
	VUNPCKHPS  Y5, Y4, Y13       \
	VUNPCKLPS  Y7, Y6, Y14       \
	VUNPCKHPS  Y7, Y6, Y15       \
	VSHUFPS    $0x44, Y10, Y8, Y0  \
	VSHUFPS    $0xEE, Y10, Y8, Y1  \
	VSHUFPS    $0x44, Y11, Y9, Y2  \
	VSHUFPS    $0xEE, Y11, Y9, Y3  \
	VSHUFPS    $0x44, Y14, Y12, Y4 \
	VSHUFPS    $0xEE, Y14, Y12, Y5 \
	VSHUFPS    $0x44, Y15, Y13, Y6 \
	VSHUFPS    $0xEE, Y15, Y13, Y7 \
	VPERM2F128 $0x20, Y4, Y0, Y8   \
	VPERM2F128 $0x20, Y5, Y1, Y9   \
	VPERM2F128 $0x20, Y6, Y2, Y10  \
	VPERM2F128 $0x20, Y7, Y3, Y11  \
	VPERM2F128 $0x31, Y4, Y0, Y12  \
	VPERM2F128 $0x31, Y5, Y1, Y13  \
	VPERM2F128 $0x31, Y6, Y2, Y14  \
	VPERM2F128 $0x31, Y7, Y3, Y15

// ---- AVX-512 -------------------------------------------------------------------------------------

// func dotF32AVX512(x *float32, w *float32, n int) float32
TEXT ·dotF32AVX512(SB), NOSPLIT, $0-28
	MOVQ x+0(FP), SI
	MOVQ w+8(FP), R8
	MOVQ n+16(FP), CX
	DOT1_Z(FMA_F32_Z, FMA_F32_ZMASK, 4)
	VMOVSS     X0, ret+24(FP)
	VZEROUPPER
	RET

// func dotBF16AVX512(x *float32, w *uint16, n int) float32
TEXT ·dotBF16AVX512(SB), NOSPLIT, $0-28
	MOVQ x+0(FP), SI
	MOVQ w+8(FP), R8
	MOVQ n+16(FP), CX
	DOT1_Z(FMA_BF16_Z, FMA_BF16_ZMASK, 2)
	VMOVSS     X0, ret+24(FP)
	VZEROUPPER
	RET

// func dotF16AVX512(x *float32, w *uint16, n int) float32
TEXT ·dotF16AVX512(SB), NOSPLIT, $0-28
	MOVQ x+0(FP), SI
	MOVQ w+8(FP), R8
	MOVQ n+16(FP), CX
	DOT1_Z(FMA_F16_Z, FMA_F16_ZMASK, 2)
	VMOVSS     X0, ret+24(FP)
	VZEROUPPER
	RET

// func dot4F32AVX512(x *float32, w *float32, ldw, n int, out *[4]float32)
TEXT ·dot4F32AVX512(SB), NOSPLIT, $0-40
	DOT4_ARGS(2)
	DOT4_Z(FMA_F32_Z, FMA_F32_ZMASK, 4, PREF_LINE2)

// func dot4BF16AVX512(x *float32, w *uint16, ldw, n int, out *[4]float32)
TEXT ·dot4BF16AVX512(SB), NOSPLIT, $0-40
	DOT4_ARGS(1)
	DOT4_Z(FMA_BF16_Z, FMA_BF16_ZMASK, 2, PREF_LINE)

// func dot4F16AVX512(x *float32, w *uint16, ldw, n int, out *[4]float32)
TEXT ·dot4F16AVX512(SB), NOSPLIT, $0-40
	DOT4_ARGS(1)
	DOT4_Z(FMA_F16_Z, FMA_F16_ZMASK, 2, PREF_LINE)

// func dot4x4F32AVX512(x *float32, ldx int, w *float32, ldw, n int, out *[16]float32)
TEXT ·dot4x4F32AVX512(SB), NOSPLIT, $0-48
	DOT4X4_ARGS(2)
	DOT4X4_Z(LOAD_F32_Z, LOADMASK_F32_Z, 4)

// func dot4x4BF16AVX512(x *float32, ldx int, w *uint16, ldw, n int, out *[16]float32)
TEXT ·dot4x4BF16AVX512(SB), NOSPLIT, $0-48
	DOT4X4_ARGS(1)
	DOT4X4_Z(LOAD_BF16_Z, LOADMASK_BF16_Z, 2)

// func dot4x4F16AVX512(x *float32, ldx int, w *uint16, ldw, n int, out *[16]float32)
TEXT ·dot4x4F16AVX512(SB), NOSPLIT, $0-48
	DOT4X4_ARGS(1)
	DOT4X4_Z(LOAD_F16_Z, LOADMASK_F16_Z, 2)

// func widenBlockF32AVX512(dst *float32, src *float32, lds, rows, cols int)
TEXT ·widenBlockF32AVX512(SB), NOSPLIT, $0-40
	WIDEN_BLOCK_ARGS(2)
	WIDEN_BLOCK_Z(LOAD_F32_Z, LOADMASK_F32_Z, 4)

// func widenBlockBF16AVX512(dst *float32, src *uint16, lds, rows, cols int)
TEXT ·widenBlockBF16AVX512(SB), NOSPLIT, $0-40
	WIDEN_BLOCK_ARGS(1)
	WIDEN_BLOCK_Z(LOAD_BF16_Z, LOADMASK_BF16_Z, 2)

// func widenBlockF16AVX512(dst *float32, src *uint16, lds, rows, cols int)
TEXT ·widenBlockF16AVX512(SB), NOSPLIT, $0-40
	WIDEN_BLOCK_ARGS(1)
	WIDEN_BLOCK_Z(LOAD_F16_Z, LOADMASK_F16_Z, 2)

// func gemm12x32AVX512(a *float32, lda int, b *float32, ldb int, c *float32, ldc, kc int, pf uintptr, pfStride int)
//
// C[i][0:32] += Σ_k A[i·lda + k] · B[k·ldb + 0:32] for the 12 rows i of a tile: a is 12 rows of a
// widened weight slice, b a panel of 32 tokens packed k-major (ldb = 32; the backward's panels of
// widened weights lie side by side, ldb = their total width), c a tile of the transposed output.
// The 24 accumulators Z0..Z23 stay in registers for all kc steps; each step loads 32 floats of b and
// broadcasts 12 of a, 24 FMAs for 14 loads. Unless pf is 0, every 32 steps the kernel also
// prefetches one line (64 bytes) of each of 12 rows at pf + i·pfStride into L2, the next line each
// time: so while it computes it fetches the weights that the next slice will widen, in small bursts
// spread over the work rather than one burst that would stall the pipeline.
TEXT ·gemm12x32AVX512(SB), NOSPLIT, $0-72
	MOVQ a+0(FP), SI
	MOVQ lda+8(FP), DX
	SHLQ $2, DX
	MOVQ b+16(FP), BX
	MOVQ ldb+24(FP), R12
	SHLQ $2, R12          // b's row stride in bytes, until the store
	MOVQ c+32(FP), DI
	MOVQ kc+48(FP), CX
	MOVQ pf+56(FP), R11
	XORQ R13, R13         // prefetch offset within the rows
	LEAQ (SI)(DX*2), R8
	ADDQ DX, R8           // row 3
	LEAQ (R8)(DX*2), R9
	ADDQ DX, R9           // row 6
	LEAQ (R9)(DX*2), R10
	ADDQ DX, R10          // row 9
	ZERO_Z0_Z7
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	VPXORD Z12, Z12, Z12
	VPXORD Z13, Z13, Z13
	VPXORD Z14, Z14, Z14
	VPXORD Z15, Z15, Z15
	VPXORD Z16, Z16, Z16
	VPXORD Z17, Z17, Z17
	VPXORD Z18, Z18, Z18
	VPXORD Z19, Z19, Z19
	VPXORD Z20, Z20, Z20
	VPXORD Z21, Z21, Z21
	VPXORD Z22, Z22, Z22
	VPXORD Z23, Z23, Z23

loop32:
	CMPQ  CX, $32
	JLT   loop4
	TESTQ R11, R11
	JZ    steps32
	MOVQ  R11, AX
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	ADDQ  $64, R13

steps32:
	MOVQ $8, AX

steps4:
	GEMM_STEPS4_Z
	DECQ AX
	JNZ  steps4
	SUBQ $32, CX
	JMP  loop32

loop4:
	CMPQ CX, $4
	JLT  loop1
	GEMM_STEPS4_Z
	SUBQ $4, CX
	JMP  loop4

loop1:
	TESTQ CX, CX
	JZ    store
	GEMM_STEP_Z((BX), 64(BX), 0)
	ADDQ  R12, BX
	GEMM_ADVANCE_Z(1)
	DECQ  CX
	JMP   loop1

store:
	MOVQ ldc+40(FP), R12
	SHLQ $2, R12
	GEMM_STORE_Z(DI, Z0, Z1)
	ADDQ R12, DI
	GEMM_STORE_Z(DI, Z2, Z3)
	ADDQ R12, DI
	GEMM_STORE_Z(DI, Z4, Z5)
	ADDQ R12, DI
	GEMM_STORE_Z(DI, Z6, Z7)
	ADDQ R12, DI
	GEMM_STORE_Z(DI, Z8, Z9)
	ADDQ R12, DI
	GEMM_STORE_Z(DI, Z10, Z11)
	ADDQ R12, DI
	GEMM_STORE_Z(DI, Z12, Z13)
	ADDQ R12, DI
	GEMM_STORE_Z(DI, Z14, Z15)
	ADDQ R12, DI
	GEMM_STORE_Z(DI, Z16, Z17)
	ADDQ R12, DI
	GEMM_STORE_Z(DI, Z18, Z19)
	ADDQ R12, DI
	GEMM_STORE_Z(DI, Z20, Z21)
	ADDQ R12, DI
	GEMM_STORE_Z(DI, Z22, Z23)
	VZEROUPPER
	RET

// func gemm12x16AVX512(a *float32, lda int, b *float32, ldb int, c *float32, ldc, kc int, pf uintptr, pfStride int)
//
// gemm12x32AVX512 on the first 16 columns of b and c only, for a last panel of 16 tokens or fewer:
// half the FMAs of a whole panel, with the same prefetching.
TEXT ·gemm12x16AVX512(SB), NOSPLIT, $0-72
	MOVQ a+0(FP), SI
	MOVQ lda+8(FP), DX
	SHLQ $2, DX
	MOVQ b+16(FP), BX
	MOVQ ldb+24(FP), R12
	SHLQ $2, R12          // b's row stride in bytes, until the store
	MOVQ c+32(FP), DI
	MOVQ kc+48(FP), CX
	MOVQ pf+56(FP), R11
	XORQ R13, R13         // prefetch offset within the rows
	LEAQ (SI)(DX*2), R8
	ADDQ DX, R8           // row 3
	LEAQ (R8)(DX*2), R9
	ADDQ DX, R9           // row 6
	LEAQ (R9)(DX*2), R10
	ADDQ DX, R10          // row 9
	ZERO_Z0_Z7
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11

h_loop32:
	CMPQ  CX, $32
	JLT   h_loop4
	TESTQ R11, R11
	JZ    h_steps32
	MOVQ  R11, AX
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	ADDQ  $64, R13

h_steps32:
	MOVQ $8, AX

h_steps4:
	GEMM16_STEPS4_Z
	DECQ AX
	JNZ  h_steps4
	SUBQ $32, CX
	JMP  h_loop32

h_loop4:
	CMPQ CX, $4
	JLT  h_loop1
	GEMM16_STEPS4_Z
	SUBQ $4, CX
	JMP  h_loop4

h_loop1:
	TESTQ CX, CX
	JZ    h_store
	GEMM16_STEP_Z((BX), 0)
	ADDQ  R12, BX
	GEMM_ADVANCE_Z(1)
	DECQ  CX
	JMP   h_loop1

h_store:
	MOVQ ldc+40(FP), R12
	SHLQ $2, R12
	GEMM16_STORE_Z(DI, Z0)
	ADDQ R12, DI
	GEMM16_STORE_Z(DI, Z1)
	ADDQ R12, DI
	GEMM16_STORE_Z(DI, Z2)
	ADDQ R12, DI
	GEMM16_STORE_Z(DI, Z3)
	ADDQ R12, DI
	GEMM16_STORE_Z(DI, Z4)
	ADDQ R12, DI
	GEMM16_STORE_Z(DI, Z5)
	ADDQ R12, DI
	GEMM16_STORE_Z(DI, Z6)
	ADDQ R12, DI
	GEMM16_STORE_Z(DI, Z7)
	ADDQ R12, DI
	GEMM16_STORE_Z(DI, Z8)
	ADDQ R12, DI
	GEMM16_STORE_Z(DI, Z9)
	ADDQ R12, DI
	GEMM16_STORE_Z(DI, Z10)
	ADDQ R12, DI
	GEMM16_STORE_Z(DI, Z11)
	VZEROUPPER
	RET

// func gemm6x32AVX512(a *float32, lda int, b *float32, ldb int, c *float32, ldc, kc int)
//
// gemm12x32AVX512 on 6 rows, without prefetching: the last rows of MatMulBackward's activation
// gradient, where a 12-row tile would be mostly padding (64 tokens are 5 tiles of 12 and one of 6).
TEXT ·gemm6x32AVX512(SB), NOSPLIT, $0-56
	MOVQ a+0(FP), SI
	MOVQ lda+8(FP), DX
	SHLQ $2, DX
	MOVQ b+16(FP), BX
	MOVQ ldb+24(FP), R12
	SHLQ $2, R12          // b's row stride in bytes, until the store
	MOVQ c+32(FP), DI
	MOVQ kc+48(FP), CX
	LEAQ (SI)(DX*2), R8
	ADDQ DX, R8           // row 3
	ZERO_Z0_Z7
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11

s_loop2:
	CMPQ CX, $2
	JLT  s_loop1
	GEMM6_STEP_Z((BX), 64(BX), 0)
	GEMM6_STEP_Z((BX)(R12*1), 64(BX)(R12*1), 1)
	LEAQ (BX)(R12*2), BX
	ADDQ $8, SI
	ADDQ $8, R8
	SUBQ $2, CX
	JMP  s_loop2

s_loop1:
	TESTQ CX, CX
	JZ    s_store
	GEMM6_STEP_Z((BX), 64(BX), 0)

s_store:
	MOVQ ldc+40(FP), R12
	SHLQ $2, R12
	GEMM_STORE_Z(DI, Z0, Z1)
	ADDQ R12, DI
	GEMM_STORE_Z(DI, Z2, Z3)
	ADDQ R12, DI
	GEMM_STORE_Z(DI, Z4, Z5)
	ADDQ R12, DI
	GEMM_STORE_Z(DI, Z6, Z7)
	ADDQ R12, DI
	GEMM_STORE_Z(DI, Z8, Z9)
	ADDQ R12, DI
	GEMM_STORE_Z(DI, Z10, Z11)
	VZEROUPPER
	RET

// ---- AVX2 + FMA ----------------------------------------------------------------------------------
// In the dot kernels n is a multiple of 16; the Go wrappers do the rest.

// func dotF32AVX2(x *float32, w *float32, n int) float32
TEXT ·dotF32AVX2(SB), NOSPLIT, $0-28
	MOVQ x+0(FP), SI
	MOVQ w+8(FP), R8
	MOVQ n+16(FP), CX
	DOT1_Y(FMA_F32_Y, 4)
	VMOVSS     X0, ret+24(FP)
	VZEROUPPER
	RET

// func dotBF16AVX2(x *float32, w *uint16, n int) float32
TEXT ·dotBF16AVX2(SB), NOSPLIT, $0-28
	MOVQ x+0(FP), SI
	MOVQ w+8(FP), R8
	MOVQ n+16(FP), CX
	DOT1_Y(FMA_BF16_Y, 2)
	VMOVSS     X0, ret+24(FP)
	VZEROUPPER
	RET

// func dotF16AVX2(x *float32, w *uint16, n int) float32
TEXT ·dotF16AVX2(SB), NOSPLIT, $0-28
	MOVQ x+0(FP), SI
	MOVQ w+8(FP), R8
	MOVQ n+16(FP), CX
	DOT1_Y(FMA_F16_Y, 2)
	VMOVSS     X0, ret+24(FP)
	VZEROUPPER
	RET

// func dot4F32AVX2(x *float32, w *float32, ldw, n int, out *[4]float32)
TEXT ·dot4F32AVX2(SB), NOSPLIT, $0-40
	DOT4_ARGS(2)
	DOT4_Y(FMA_F32_Y, 4, PREF_LINE2)

// func dot4BF16AVX2(x *float32, w *uint16, ldw, n int, out *[4]float32)
TEXT ·dot4BF16AVX2(SB), NOSPLIT, $0-40
	DOT4_ARGS(1)
	DOT4_Y(FMA_BF16_Y, 2, PREF_LINE)

// func dot4F16AVX2(x *float32, w *uint16, ldw, n int, out *[4]float32)
TEXT ·dot4F16AVX2(SB), NOSPLIT, $0-40
	DOT4_ARGS(1)
	DOT4_Y(FMA_F16_Y, 2, PREF_LINE)

// func widenBlockF32AVX2(dst *float32, src *float32, lds, rows, cols int)
TEXT ·widenBlockF32AVX2(SB), NOSPLIT, $0-40
	WIDEN_BLOCK_ARGS(2)
	WIDEN_BLOCK_Y(LOAD_F32_Y, LOAD1_F32, 4)

// func widenBlockBF16AVX2(dst *float32, src *uint16, lds, rows, cols int)
TEXT ·widenBlockBF16AVX2(SB), NOSPLIT, $0-40
	WIDEN_BLOCK_ARGS(1)
	WIDEN_BLOCK_Y(LOAD_BF16_Y, LOAD1_BF16, 2)

// func widenBlockF16AVX2(dst *float32, src *uint16, lds, rows, cols int)
TEXT ·widenBlockF16AVX2(SB), NOSPLIT, $0-40
	WIDEN_BLOCK_ARGS(1)
	WIDEN_BLOCK_Y(LOAD_F16_Y, LOAD1_F16, 2)

// func transposeAVX2(dst *float32, ldd int, src *float32, lds, rows, cols int)
//
// dst[j·ldd + i] = src[i·lds + j] for i < rows, j < cols, both multiples of 8, in 8×8 blocks:
// packs the tokens into GEMM panels and writes the GEMM's transposed output back.
TEXT ·transposeAVX2(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ ldd+8(FP), R10
	SHLQ $2, R10
	MOVQ src+16(FP), SI
	MOVQ lds+24(FP), DX
	SHLQ $2, DX
	MOVQ rows+32(FP), R11

rowblock:
	CMPQ R11, $8
	JLT  done
	MOVQ cols+40(FP), CX
	MOVQ SI, R8           // row 0 of the block, at the current column
	MOVQ DI, R9           // column 0 of the block in dst, at the block's first row

colblock:
	CMPQ    CX, $8
	JLT     nextrows
	VMOVUPS (R8), Y0
	VMOVUPS (R8)(DX*1), Y1
	VMOVUPS (R8)(DX*2), Y2
	LEAQ    (R8)(DX*2), R13
	VMOVUPS (R13)(DX*1), Y3
	LEAQ    (R8)(DX*4), R12
	VMOVUPS (R12), Y4
	VMOVUPS (R12)(DX*1), Y5
	VMOVUPS (R12)(DX*2), Y6
	LEAQ    (R12)(DX*2), R13
	VMOVUPS (R13)(DX*1), Y7
	TRANSPOSE8
	VMOVUPS Y8, (R9)
	VMOVUPS Y9, (R9)(R10*1)
	VMOVUPS Y10, (R9)(R10*2)
	LEAQ    (R9)(R10*2), R13
	VMOVUPS Y11, (R13)(R10*1)
	LEAQ    (R9)(R10*4), R12
	VMOVUPS Y12, (R12)
	VMOVUPS Y13, (R12)(R10*1)
	VMOVUPS Y14, (R12)(R10*2)
	LEAQ    (R12)(R10*2), R13
	VMOVUPS Y15, (R13)(R10*1)
	ADDQ    $32, R8
	LEAQ    (R9)(R10*8), R9
	SUBQ    $8, CX
	JMP     colblock

nextrows:
	LEAQ (SI)(DX*8), SI
	ADDQ $32, DI
	SUBQ $8, R11
	JMP  rowblock

done:
	VZEROUPPER
	RET

// func gemm6x32AVX2(a *float32, lda int, b *float32, ldb int, c *float32, ldc, kc int, pf uintptr, pfStride int)
//
// The AVX2 form of gemm12x32AVX512 for 6 rows: sixteen Y registers hold a 6×16 tile, so the 32
// tokens of the panel are done in two passes of 16 (the 6 rows of a stay in L1 between them). The
// first pass prefetches as the AVX-512 kernel does, one line of each of the 6 rows every 32 steps.
TEXT ·gemm6AVX2(SB), NOSPLIT, $0-80
	MOVQ c+32(FP), DI
	MOVQ b+16(FP), BX
	MOVQ halves+72(FP), R11 // passes left

pass:
	MOVQ a+0(FP), SI
	MOVQ lda+8(FP), DX
	SHLQ $2, DX
	MOVQ ldb+24(FP), R10
	SHLQ $2, R10          // b's row stride in bytes
	MOVQ ldc+40(FP), R12
	SHLQ $2, R12
	MOVQ kc+48(FP), CX
	XORQ R13, R13         // prefetch offset within the rows
	LEAQ (SI)(DX*2), R8
	ADDQ DX, R8           // row 3
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	MOVQ   BX, R9

loop32:
	CMPQ CX, $32
	JLT  loop1
	CMPQ R11, halves+72(FP)
	JNE  steps32
	MOVQ pf+56(FP), AX
	TESTQ AX, AX
	JZ   steps32
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	GEMM_PREFETCH_ROW
	ADDQ $64, R13

steps32:
	MOVQ $32, AX

step:
	GEMM_STEP_Y
	DECQ AX
	JNZ  step
	SUBQ $32, CX
	JMP  loop32

loop1:
	TESTQ CX, CX
	JZ    store
	GEMM_STEP_Y
	DECQ  CX
	JMP   loop1

store:
	MOVQ DI, R9
	GEMM_STORE_Y(R9, Y0, Y1)
	ADDQ R12, R9
	GEMM_STORE_Y(R9, Y2, Y3)
	ADDQ R12, R9
	GEMM_STORE_Y(R9, Y4, Y5)
	ADDQ R12, R9
	GEMM_STORE_Y(R9, Y6, Y7)
	ADDQ R12, R9
	GEMM_STORE_Y(R9, Y8, Y9)
	ADDQ R12, R9
	GEMM_STORE_Y(R9, Y10, Y11)
	ADDQ $64, BX
	ADDQ $64, DI
	DECQ R11
	JNZ  pass
	VZEROUPPER
	RET

// ---- the decode GEMV's bf16 kernel on an even/odd x --------------------------------------------

// dot4BF16EvenOdd is dot4BF16 with fewer instructions per weight: the decode GEMV is bound by
// the bytes of w, and a core that spends fewer cycles per line keeps its loads in flight more of
// the time. A 64-byte load of 32 bf16 holds, in dword lane j, the weights 2j (low word) and 2j+1
// (high word): VPSLLD $16 widens the even ones and VPANDD with 0xffff0000 the odd ones, two
// instructions and no shuffle where dot4BF16 spends two zero-extending shuffles and two shifts.
// x comes permuted to match (each block of 32: its 16 even elements, then its 16 odd ones), so
// lane j of the even accumulator sums element 2j of every block, lane j of the odd one element
// 2j+1, each in block order: exactly the sums that lane 2j, 2j+1 (mod 16) of dot4BF16's two
// accumulators form. The epilogue puts the lanes back in dot4BF16's places (VPERMT2PS) and
// reduces them as it does, so both kernels return the same bits. n is a multiple of 32.
//
// It issues no software prefetches: the hardware prefetcher follows its four sequential streams,
// and the decode GEMV of the Llama-3.2-1B shape's layers read its weights at 0.84-1.0 of the
// machine's read bandwidth without them against 0.70-0.92 with dot4BF16's (AMD Zen 4, 2 threads).
//
// SI = the permuted x, R8..R11 = the rows, CX = n, DI = out; Z0..Z3 the even sums, Z4..Z7 the
// odd ones, Z31 the mask.
#define DOT4_EVENODD_ROW(r, even, odd) \
	VPSLLD      $16, (r), Z20     \
	VPANDD      (r), Z31, Z21     \
	VFMADD231PS Z16, Z20, even    \
	VFMADD231PS Z17, Z21, odd

// Lanes j < 8 of even and odd into lanes 2j, 2j+1 of even, lanes j ≥ 8 into lanes 2j-16, 2j-15
// of odd (Z28, Z29: the two index vectors; Z30 scratch).
#define DOT4_EVENODD_UNDO(even, odd) \
	VMOVAPS   even, Z30             \
	VPERMT2PS odd, Z28, even        \
	VPERMT2PS odd, Z29, Z30         \
	VMOVAPS   Z30, odd

// The four sums of a quad of bf16 rows at R8–R11 with the permuted x at SI over CX elements, into
// X0, from accumulators Z0–Z7 zeroed by the caller (Z31: the odd-weight mask; Z28, Z29: the
// UNDO indices). One function may use it once (its label).
#define DOT4_EVENODD_SUMS \
evenOddStep:                          \
	VMOVUPS    (SI), Z16              \
	VMOVUPS    64(SI), Z17            \
	DOT4_EVENODD_ROW(R8, Z0, Z4)      \
	DOT4_EVENODD_ROW(R9, Z1, Z5)      \
	DOT4_EVENODD_ROW(R10, Z2, Z6)     \
	DOT4_EVENODD_ROW(R11, Z3, Z7)     \
	ADDQ       $128, SI               \
	ADDQ       $64, R8                \
	ADDQ       $64, R9                \
	ADDQ       $64, R10               \
	ADDQ       $64, R11               \
	SUBQ       $32, CX                \
	JNZ        evenOddStep            \
	DOT4_EVENODD_UNDO(Z0, Z4)         \
	DOT4_EVENODD_UNDO(Z1, Z5)         \
	DOT4_EVENODD_UNDO(Z2, Z6)         \
	DOT4_EVENODD_UNDO(Z3, Z7)         \
	VADDPS     Z4, Z0, Z0             \
	VADDPS     Z5, Z1, Z1             \
	VADDPS     Z6, Z2, Z2             \
	VADDPS     Z7, Z3, Z3             \
	HSUM4_Z0_Z3

// func dot4BF16EvenOddAVX512(x *float32, w *uint16, ldw, n int, out *[4]float32)
TEXT ·dot4BF16EvenOddAVX512(SB), NOSPLIT, $0-40
	DOT4_ARGS(1)
	ZERO_Z0_Z7
	MOVL         $0xffff0000, AX
	VPBROADCASTD AX, Z31
	VMOVDQU32    evenOddLow<>(SB), Z28
	VMOVDQU32    evenOddHigh<>(SB), Z29
	DOT4_EVENODD_SUMS
	VMOVUPS      X0, (DI)
	VZEROUPPER
	RET

// func gemvBF16EvenOddAVX512(x *float32, w *uint16, n, q int, out *float32)
//
// dot4BF16EvenOddAVX512 for the rows [0, 4q) of w (rows of n elements, n a multiple of 32), quad
// i taking rows i, i+q, i+2q and i+3q, their sums written to out[i], out[i+q], out[i+2q] and
// out[i+3q]: each quad's loop and epilogue are that kernel's, so every sum has its bits, but the
// whole range is one call. R12 = x, R13 = n, BX = row i, DX = the quad's row stride in bytes
// (q·n·2), AX = the output stride in bytes (q·4), R14 = quads left.
TEXT ·gemvBF16EvenOddAVX512(SB), NOSPLIT, $0-40
	MOVQ         x+0(FP), R12
	MOVQ         w+8(FP), BX
	MOVQ         n+16(FP), R13
	MOVQ         q+24(FP), R14
	MOVQ         out+32(FP), DI
	MOVQ         R14, AX
	SHLQ         $2, AX
	MOVQ         R14, DX
	IMULQ        R13, DX
	SHLQ         $1, DX
	MOVL         $0xffff0000, CX
	VPBROADCASTD CX, Z31
	VMOVDQU32    evenOddLow<>(SB), Z28
	VMOVDQU32    evenOddHigh<>(SB), Z29
quad:
	MOVQ       R12, SI
	MOVQ       R13, CX
	MOVQ       BX, R8
	LEAQ       (R8)(DX*1), R9
	LEAQ       (R9)(DX*1), R10
	LEAQ       (R10)(DX*1), R11
	ZERO_Z0_Z7
	DOT4_EVENODD_SUMS
	VMOVSS     X0, (DI)
	VEXTRACTPS $1, X0, (DI)(AX*1)
	VEXTRACTPS $2, X0, (DI)(AX*2)
	LEAQ       (DI)(AX*2), R8
	VEXTRACTPS $3, X0, (R8)(AX*1)
	ADDQ       $4, DI
	LEAQ       (BX)(R13*2), BX
	DECQ       R14
	JNZ        quad
	VZEROUPPER
	RET

// evenOddLow and evenOddHigh are VPERMT2PS's indices for DOT4_EVENODD_UNDO: lane 2j takes lane j
// of the even sums (index j), lane 2j+1 lane j of the odd ones (index 16+j); High the same from
// lane 8 on.
DATA evenOddLow<>+0(SB)/4, $0
DATA evenOddLow<>+4(SB)/4, $16
DATA evenOddLow<>+8(SB)/4, $1
DATA evenOddLow<>+12(SB)/4, $17
DATA evenOddLow<>+16(SB)/4, $2
DATA evenOddLow<>+20(SB)/4, $18
DATA evenOddLow<>+24(SB)/4, $3
DATA evenOddLow<>+28(SB)/4, $19
DATA evenOddLow<>+32(SB)/4, $4
DATA evenOddLow<>+36(SB)/4, $20
DATA evenOddLow<>+40(SB)/4, $5
DATA evenOddLow<>+44(SB)/4, $21
DATA evenOddLow<>+48(SB)/4, $6
DATA evenOddLow<>+52(SB)/4, $22
DATA evenOddLow<>+56(SB)/4, $7
DATA evenOddLow<>+60(SB)/4, $23
GLOBL evenOddLow<>(SB), RODATA|NOPTR, $64

DATA evenOddHigh<>+0(SB)/4, $8
DATA evenOddHigh<>+4(SB)/4, $24
DATA evenOddHigh<>+8(SB)/4, $9
DATA evenOddHigh<>+12(SB)/4, $25
DATA evenOddHigh<>+16(SB)/4, $10
DATA evenOddHigh<>+20(SB)/4, $26
DATA evenOddHigh<>+24(SB)/4, $11
DATA evenOddHigh<>+28(SB)/4, $27
DATA evenOddHigh<>+32(SB)/4, $12
DATA evenOddHigh<>+36(SB)/4, $28
DATA evenOddHigh<>+40(SB)/4, $13
DATA evenOddHigh<>+44(SB)/4, $29
DATA evenOddHigh<>+48(SB)/4, $14
DATA evenOddHigh<>+52(SB)/4, $30
DATA evenOddHigh<>+56(SB)/4, $15
DATA evenOddHigh<>+60(SB)/4, $31
GLOBL evenOddHigh<>(SB), RODATA|NOPTR, $64
