// Tensor-core helpers shared by gemm.cu and attention.cu: cp.async, ldmatrix and mma.sync
// m16n8k16 with f32 accumulation, and the packing of two f32 into one 32-bit register of two
// 16-bit values. kernels/sim/mma.cuh emulates the same functions on the CPU, lane by lane, from
// the PTX ISA's fragment layouts (g = lane / 4, t = lane % 4):
//   A (16 × 16, row-major): a0 = (row g, k 2t, 2t+1), a1 = (g + 8, 2t…), a2 = (g, 2t + 8…), a3 = (g + 8, 2t + 8…)
//   B (16 × 8, column-major): b0 = (k 2t, 2t+1; col g), b1 = (k 2t + 8, 2t + 9; col g)
//   C (16 × 8, f32): c0, c1 = (row g, cols 2t, 2t+1), c2, c3 = (row g + 8, the same cols)
// ldmatrix.x4 loads four 8 × 8 matrices of 16-bit values; lanes 8i…8i+7 give the row addresses
// of matrix i (16 bytes each, 16-byte aligned) and register i of lane l receives matrix i's row
// l / 4, elements 2(l % 4) and 2(l % 4) + 1 — or, with .trans, the elements of column l / 4 at
// rows 2(l % 4) and 2(l % 4) + 1. The lower element is in the low half of a register throughout.
#pragma once

#include "common.cuh"

// The block's dynamic shared memory as bytes (a macro, so that the CPU shim can give it a buffer).
#define DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

// cp.async of 16 bytes; bytes = 0 writes zeros (the source is not read).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(dst)), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
__device__ __forceinline__ void cp_async_wait1() { asm volatile("cp.async.wait_group 1;" ::: "memory"); }
// Wait until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

// c += a·b for one m16n8k16 tile (a: 4 registers, b: 2, c: 4 f32).
template <typename W>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<bf16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<f16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two f32 packed into one 32-bit word of two 16-bit values, lower address (first) in the low half.
__device__ __forceinline__ uint32_t pack2(float lo, float hi, bf16) {
    return (uint32_t)f32_to_bf16_bits(lo) | ((uint32_t)f32_to_bf16_bits(hi) << 16);
}
__device__ __forceinline__ uint32_t pack2(float lo, float hi, f16) {
    return (uint32_t)f32_to_f16_bits(lo) | ((uint32_t)f32_to_f16_bits(hi) << 16);
}
