//go:build amd64 && !purego

#include "textflag.h"
#include "avx512_amd64.h"

// The inner loops of attention for x86-64 with AVX-512, for the queries (heads) of one token that
// share a kv head (the softmax between them is in exp_amd64.s):
//
//	scores   s[t] = scale · Σ_e q[e]·k_t[e]     16 cached keys a block, one accumulator per key
//	mix      out[e] = Σ_t p[t]·v_t[e]            the head's row in registers, one key a step
//
// Each block of keys or row of values is read from memory once for all the queries.
// Keys and values are rows of a layer's cache at element offsets off[t] from the head's first
// element, so the kernels follow the cache's block table without knowing it. The cache is F32 or
// BF16 (widened exactly: VPMOVZXWD, VPSLLD 16); queries, scores and sums are F32. Every result
// depends only on its own query and cache rows, in a fixed order, whatever the batch around it:
// a score accumulates its 16-lane partial sums over e in order and adds the lanes with one tree;
// a mix adds the keys in order t = 0, 1, …
//
// The macros come first, before any TEXT, so that go vet's frame checks do not read their bodies
// as part of a function.

// ---- macros ------------------------------------------------------------------------------------

// Key j of a block: its row offset into AX, then acc += the next 64 elements of its row · Z16..Z19
// (F32 cache, R10 = the chunk's first element of the head, scaled by 4).
#define KEY64_F32(j, acc) \
	MOVQ        (j*8)(R8), AX            \
	VFMADD231PS (R10)(AX*4), Z16, acc    \
	VFMADD231PS 64(R10)(AX*4), Z17, acc  \
	VFMADD231PS 128(R10)(AX*4), Z18, acc \
	VFMADD231PS 192(R10)(AX*4), Z19, acc

#define KEY16_F32(j, acc) \
	MOVQ        (j*8)(R8), AX         \
	VFMADD231PS (R10)(AX*4), Z16, acc

// The same on a BF16 cache (R10 scaled by 2): widen 16 values into Z20 first.
#define WIDEN_FMA(src, qv, acc) \
	VPMOVZXWD   src, Z20     \
	VPSLLD      $16, Z20, Z20 \
	VFMADD231PS qv, Z20, acc

#define KEY64_BF16(j, acc) \
	MOVQ (j*8)(R8), AX                    \
	WIDEN_FMA((R10)(AX*2), Z16, acc)      \
	WIDEN_FMA(32(R10)(AX*2), Z17, acc)    \
	WIDEN_FMA(64(R10)(AX*2), Z18, acc)    \
	WIDEN_FMA(96(R10)(AX*2), Z19, acc)

#define KEY16_BF16(j, acc) \
	MOVQ (j*8)(R8), AX               \
	WIDEN_FMA((R10)(AX*2), Z16, acc)

// Prefetch the first 64 elements of the row at element offset (src) past base, for a cache
// element of ES bytes: four lines of an F32 row, two of a BF16 row (each asked for twice).
#define PF_ROW(src, base, ES) \
	MOVQ       src, AX                  \
	PREFETCHT0 (base)(AX*ES)            \
	PREFETCHT0 (16*ES)(base)(AX*ES)     \
	PREFETCHT0 (32*ES)(base)(AX*ES)     \
	PREFETCHT0 (48*ES)(base)(AX*ES)

// Prefetch the rows of the next block of 16 keys (offsets at R8 + 128; SI = k): a decode step's
// attention reads a layer's cache from memory once, and without this each block's rows arrive
// one cache miss after another. The scores stay bit for bit what they were.
#define PF_BLOCK(ES) \
	MOVQ   k+32(FP), SI               \
	PF_ROW(128(R8), SI, ES)           \
	PF_ROW(136(R8), SI, ES)           \
	PF_ROW(144(R8), SI, ES)           \
	PF_ROW(152(R8), SI, ES)           \
	PF_ROW(160(R8), SI, ES)           \
	PF_ROW(168(R8), SI, ES)           \
	PF_ROW(176(R8), SI, ES)           \
	PF_ROW(184(R8), SI, ES)           \
	PF_ROW(192(R8), SI, ES)           \
	PF_ROW(200(R8), SI, ES)           \
	PF_ROW(208(R8), SI, ES)           \
	PF_ROW(216(R8), SI, ES)           \
	PF_ROW(224(R8), SI, ES)           \
	PF_ROW(232(R8), SI, ES)           \
	PF_ROW(240(R8), SI, ES)           \
	PF_ROW(248(R8), SI, ES)

#define KEYS16(KEY) \
	KEY(0, Z0)   \
	KEY(1, Z1)   \
	KEY(2, Z2)   \
	KEY(3, Z3)   \
	KEY(4, Z4)   \
	KEY(5, Z5)   \
	KEY(6, Z6)   \
	KEY(7, Z7)   \
	KEY(8, Z8)   \
	KEY(9, Z9)   \
	KEY(10, Z10) \
	KEY(11, Z11) \
	KEY(12, Z12) \
	KEY(13, Z13) \
	KEY(14, Z14) \
	KEY(15, Z15)

// Add the 16 lanes of each of Z0..Z15 into lane j of Z0 (before the final permutation), with the
// same tree for every key: 256-bit halves, then 128-bit quarters, then pairs, then singles.
#define PAIR(imm_lo, imm_hi, SHUF, a, b, t) \
	SHUF   $imm_hi, b, a, t \
	SHUF   $imm_lo, b, a, a \
	VADDPS t, a, a

#define REDUCE16 \
	PAIR(0x44, 0xEE, VSHUFF32X4, Z0, Z1, Z16)   \
	PAIR(0x44, 0xEE, VSHUFF32X4, Z2, Z3, Z17)   \
	PAIR(0x44, 0xEE, VSHUFF32X4, Z4, Z5, Z18)   \
	PAIR(0x44, 0xEE, VSHUFF32X4, Z6, Z7, Z19)   \
	PAIR(0x44, 0xEE, VSHUFF32X4, Z8, Z9, Z16)   \
	PAIR(0x44, 0xEE, VSHUFF32X4, Z10, Z11, Z17) \
	PAIR(0x44, 0xEE, VSHUFF32X4, Z12, Z13, Z18) \
	PAIR(0x44, 0xEE, VSHUFF32X4, Z14, Z15, Z19) \
	PAIR(0x88, 0xDD, VSHUFF32X4, Z0, Z2, Z16)   \
	PAIR(0x88, 0xDD, VSHUFF32X4, Z4, Z6, Z17)   \
	PAIR(0x88, 0xDD, VSHUFF32X4, Z8, Z10, Z18)  \
	PAIR(0x88, 0xDD, VSHUFF32X4, Z12, Z14, Z19) \
	PAIR(0x44, 0xEE, VSHUFPS, Z0, Z4, Z16)      \
	PAIR(0x44, 0xEE, VSHUFPS, Z8, Z12, Z17)     \
	PAIR(0x88, 0xDD, VSHUFPS, Z0, Z8, Z16)

// The scores kernel, for a cache element of ES bytes: KEY64 and KEY16 process 64 and 16 elements
// of one key's row. For each block of 16 keys, every query in turn: the block's rows stay in L1
// for the queries after the first. Registers: DI the block's column of s, DX query j's row of s,
// R8 the block's offsets, CX keys left, R9 query j's elements, R10 the rows' current chunk, R11
// elements left, R12 the stride of s in bytes, R13 queries left.
#define SCORES(KEY64, KEY16, ES) \
	MOVQ         s+0(FP), DI                 \
	MOVQ         lds+8(FP), R12              \
	SHLQ         $2, R12                     \
	MOVQ         off+40(FP), R8              \
	MOVQ         n+48(FP), CX                \
	VBROADCASTSS scale+64(FP), Z31           \
	VMOVDQU32    scoresOrder<>(SB), Z30      \
block:                                       \
	TESTQ        CX, CX                      \
	JLE          done                        \
	CMPQ         CX, $16                     \
	JLE          nopf                        \
	PF_BLOCK(ES)                             \
nopf:                                        \
	MOVQ         q+16(FP), R9                \
	MOVQ         DI, DX                      \
	MOVQ         nq+24(FP), R13              \
query:                                       \
	ZERO_Z0_Z15                              \
	MOVQ         k+32(FP), R10               \
	MOVQ         d+56(FP), R11               \
chunk64:                                     \
	CMPQ         R11, $64                    \
	JLT          chunk16                     \
	VMOVUPS      (R9), Z16                   \
	VMOVUPS      64(R9), Z17                 \
	VMOVUPS      128(R9), Z18                \
	VMOVUPS      192(R9), Z19                \
	KEYS16(KEY64)                            \
	ADDQ         $256, R9                    \
	ADDQ         $64*ES, R10                 \
	SUBQ         $64, R11                    \
	JMP          chunk64                     \
chunk16:                                     \
	CMPQ         R11, $16                    \
	JLT          reduce                      \
	VMOVUPS      (R9), Z16                   \
	KEYS16(KEY16)                            \
	ADDQ         $64, R9                     \
	ADDQ         $16*ES, R10                 \
	SUBQ         $16, R11                    \
	JMP          chunk16                     \
reduce:                                      \
	REDUCE16                                 \
	VPERMPS      Z0, Z30, Z0                 \
	VMULPS       Z31, Z0, Z0                 \
	CMPQ         CX, $16                     \
	JLT          part                        \
	VMOVUPS      Z0, (DX)                    \
	JMP          next                        \
part:                                        \
	TAILMASK                               \
	VMOVUPS      Z0, K1, (DX)                \
next:                                        \
	ADDQ         R12, DX                     \
	DECQ         R13                         \
	JNZ          query                       \
	ADDQ         $64, DI                     \
	ADDQ         $128, R8                    \
	SUBQ         $16, CX                     \
	JMP          block                       \
done:                                        \
	VZEROUPPER                               \
	RET

// The mix loads each key's row chunk once for all its queries: V64 widens 64 elements of the row
// at AX into Z16..Z19, V16 16 of them into Z16 (F32 or BF16 cache, DX the chunk's first element).
#define V64_F32 \
	VMOVUPS (DX)(AX*4), Z16    \
	VMOVUPS 64(DX)(AX*4), Z17  \
	VMOVUPS 128(DX)(AX*4), Z18 \
	VMOVUPS 192(DX)(AX*4), Z19

#define V16_F32 \
	VMOVUPS (DX)(AX*4), Z16

#define WIDEN(src, dst) \
	VPMOVZXWD src, dst \
	VPSLLD    $16, dst, dst

#define V64_BF16 \
	WIDEN((DX)(AX*2), Z16)   \
	WIDEN(32(DX)(AX*2), Z17) \
	WIDEN(64(DX)(AX*2), Z18) \
	WIDEN(96(DX)(AX*2), Z19)

#define V16_BF16 \
	WIDEN((DX)(AX*2), Z16)

// acc0..acc3 += p · Z16..Z19, p broadcast from src.
#define ACC64(src, acc0, acc1, acc2, acc3) \
	VBROADCASTSS src, Z20        \
	VFMADD231PS  Z16, Z20, acc0  \
	VFMADD231PS  Z17, Z20, acc1  \
	VFMADD231PS  Z18, Z20, acc2  \
	VFMADD231PS  Z19, Z20, acc3

// Query j's probability of the current key: R9 points at query 0's, R12 is the stride of p in
// bytes and R13 three strides.
#define Q1_64 ACC64((R9), Z0, Z1, Z2, Z3)
#define Q2_64 Q1_64 \
	ACC64((R9)(R12*1), Z4, Z5, Z6, Z7)
#define Q3_64 Q2_64 \
	ACC64((R9)(R12*2), Z8, Z9, Z10, Z11)
#define Q4_64 Q3_64 \
	ACC64((R9)(R13*1), Z12, Z13, Z14, Z15)

// Store query j's 64 sums at DI + j·d·4 (AX = d·4, R11 = 3·d·4).
#define STORE64(base, acc0, acc1, acc2, acc3) \
	VMOVUPS acc0, base     \
	VMOVUPS acc1, 64 base  \
	VMOVUPS acc2, 128 base \
	VMOVUPS acc3, 192 base

#define S1_64 STORE64((DI), Z0, Z1, Z2, Z3)
#define S2_64 S1_64 \
	STORE64((DI)(AX*1), Z4, Z5, Z6, Z7)
#define S3_64 S2_64 \
	STORE64((DI)(AX*2), Z8, Z9, Z10, Z11)
#define S4_64 S3_64 \
	STORE64((DI)(R11*1), Z12, Z13, Z14, Z15)

#define Q1_16 \
	VBROADCASTSS (R9), Z20       \
	VFMADD231PS  Z16, Z20, Z0
#define Q2_16 Q1_16 \
	VBROADCASTSS (R9)(R12*1), Z20 \
	VFMADD231PS  Z16, Z20, Z4
#define Q3_16 Q2_16 \
	VBROADCASTSS (R9)(R12*2), Z20 \
	VFMADD231PS  Z16, Z20, Z8
#define Q4_16 Q3_16 \
	VBROADCASTSS (R9)(R13*1), Z20 \
	VFMADD231PS  Z16, Z20, Z12

#define S1_16 VMOVUPS Z0, (DI)
#define S2_16 S1_16 \
	VMOVUPS Z4, (DI)(AX*1)
#define S3_16 S2_16 \
	VMOVUPS Z8, (DI)(AX*2)
#define S4_16 S3_16 \
	VMOVUPS Z12, (DI)(R11*1)

// The mix kernel for NQ <= 4 queries, a cache element of ES bytes: 64 elements of every query's
// output row at a time over every key, then 16, each key's chunk loaded once. Registers: DI the
// output chunk of query 0, DX the rows' current chunk, BX elements left, R8 the offsets, CX keys,
// R9 query 0's probability of key t, R10 key t's offset, R11 keys left, R12 and R13 one and three
// strides of p in bytes.
#define MIX(V64, Q64, S64, V16, Q16, S16, ES) \
	MOVQ   out+0(FP), DI     \
	MOVQ   ldp+16(FP), R12   \
	SHLQ   $2, R12           \
	LEAQ   (R12)(R12*2), R13 \
	MOVQ   v+24(FP), DX      \
	MOVQ   off+32(FP), R8    \
	MOVQ   n+40(FP), CX      \
	MOVQ   d+48(FP), BX      \
part64:                      \
	CMPQ   BX, $64           \
	JLT    part16            \
	ZERO_Z0_Z15              \
	MOVQ   p+8(FP), R9       \
	MOVQ   R8, R10           \
	MOVQ   CX, R11           \
keys64:                      \
	CMPQ   R11, $16          \
	JLE    nopf64            \
	PF_ROW(128(R10), DX, ES) \
nopf64:                      \
	MOVQ   (R10), AX         \
	V64                      \
	Q64                      \
	ADDQ   $4, R9            \
	ADDQ   $8, R10           \
	DECQ   R11               \
	JNZ    keys64            \
	MOVQ   d+48(FP), AX      \
	SHLQ   $2, AX            \
	LEAQ   (AX)(AX*2), R11   \
	S64                      \
	ADDQ   $256, DI          \
	ADDQ   $64*ES, DX        \
	SUBQ   $64, BX           \
	JMP    part64            \
part16:                      \
	CMPQ   BX, $16           \
	JLT    done              \
	ZERO_Z0_Z15              \
	MOVQ   p+8(FP), R9       \
	MOVQ   R8, R10           \
	MOVQ   CX, R11           \
keys16:                      \
	MOVQ   (R10), AX         \
	V16                      \
	Q16                      \
	ADDQ   $4, R9            \
	ADDQ   $8, R10           \
	DECQ   R11               \
	JNZ    keys16            \
	MOVQ   d+48(FP), AX      \
	SHLQ   $2, AX            \
	LEAQ   (AX)(AX*2), R11   \
	S16                      \
	ADDQ   $64, DI           \
	ADDQ   $16*ES, DX        \
	SUBQ   $16, BX           \
	JMP    part16            \
done:                        \
	VZEROUPPER               \
	RET

// ---- constants ---------------------------------------------------------------------------------

// scoresOrder undoes REDUCE16's placement: key j ends in lane 4·(j mod 4) + j/4.
DATA scoresOrder<>+0(SB)/4, $0
DATA scoresOrder<>+4(SB)/4, $4
DATA scoresOrder<>+8(SB)/4, $8
DATA scoresOrder<>+12(SB)/4, $12
DATA scoresOrder<>+16(SB)/4, $1
DATA scoresOrder<>+20(SB)/4, $5
DATA scoresOrder<>+24(SB)/4, $9
DATA scoresOrder<>+28(SB)/4, $13
DATA scoresOrder<>+32(SB)/4, $2
DATA scoresOrder<>+36(SB)/4, $6
DATA scoresOrder<>+40(SB)/4, $10
DATA scoresOrder<>+44(SB)/4, $14
DATA scoresOrder<>+48(SB)/4, $3
DATA scoresOrder<>+52(SB)/4, $7
DATA scoresOrder<>+56(SB)/4, $11
DATA scoresOrder<>+60(SB)/4, $15
GLOBL scoresOrder<>(SB), RODATA|NOPTR, $64

// ---- kernels -----------------------------------------------------------------------------------

// func attnScoresF32AVX512(s *float32, lds int, q *float32, nq int, k *float32, off *int, n, d int, scale float32)
TEXT ·attnScoresF32AVX512(SB), NOSPLIT, $0-68
	SCORES(KEY64_F32, KEY16_F32, 4)

// func attnScoresBF16AVX512(s *float32, lds int, q *float32, nq int, k *uint16, off *int, n, d int, scale float32)
TEXT ·attnScoresBF16AVX512(SB), NOSPLIT, $0-68
	SCORES(KEY64_BF16, KEY16_BF16, 2)

// func attnMixF32Q1AVX512(out, p *float32, ldp int, v *float32, off *int, n, d int)
TEXT ·attnMixF32Q1AVX512(SB), NOSPLIT, $0-56
	MIX(V64_F32, Q1_64, S1_64, V16_F32, Q1_16, S1_16, 4)

// func attnMixF32Q2AVX512(out, p *float32, ldp int, v *float32, off *int, n, d int)
TEXT ·attnMixF32Q2AVX512(SB), NOSPLIT, $0-56
	MIX(V64_F32, Q2_64, S2_64, V16_F32, Q2_16, S2_16, 4)

// func attnMixF32Q3AVX512(out, p *float32, ldp int, v *float32, off *int, n, d int)
TEXT ·attnMixF32Q3AVX512(SB), NOSPLIT, $0-56
	MIX(V64_F32, Q3_64, S3_64, V16_F32, Q3_16, S3_16, 4)

// func attnMixF32Q4AVX512(out, p *float32, ldp int, v *float32, off *int, n, d int)
TEXT ·attnMixF32Q4AVX512(SB), NOSPLIT, $0-56
	MIX(V64_F32, Q4_64, S4_64, V16_F32, Q4_16, S4_16, 4)

// func attnMixBF16Q1AVX512(out, p *float32, ldp int, v *uint16, off *int, n, d int)
TEXT ·attnMixBF16Q1AVX512(SB), NOSPLIT, $0-56
	MIX(V64_BF16, Q1_64, S1_64, V16_BF16, Q1_16, S1_16, 2)

// func attnMixBF16Q2AVX512(out, p *float32, ldp int, v *uint16, off *int, n, d int)
TEXT ·attnMixBF16Q2AVX512(SB), NOSPLIT, $0-56
	MIX(V64_BF16, Q2_64, S2_64, V16_BF16, Q2_16, S2_16, 2)

// func attnMixBF16Q3AVX512(out, p *float32, ldp int, v *uint16, off *int, n, d int)
TEXT ·attnMixBF16Q3AVX512(SB), NOSPLIT, $0-56
	MIX(V64_BF16, Q3_64, S3_64, V16_BF16, Q3_16, S3_16, 2)

// func attnMixBF16Q4AVX512(out, p *float32, ldp int, v *uint16, off *int, n, d int)
TEXT ·attnMixBF16Q4AVX512(SB), NOSPLIT, $0-56
	MIX(V64_BF16, Q4_64, S4_64, V16_BF16, Q4_16, S4_16, 2)
