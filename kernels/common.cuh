// Device helpers shared by the kernel files: warp and block reductions, and widening of the
// weight dtypes (bf16, f16, f32) to f32. Every kernel computes and accumulates in f32.
#pragma once

#include <stdint.h>

// The 16-bit weight dtypes as their raw bits. The conversions below are single PTX instructions,
// so no CUDA header beyond the compiler's own is needed (the toolchain prefix has no libcu++).
struct bf16 { unsigned short bits; };
struct f16 { unsigned short bits; };

// Sum and max over the 32 lanes of a warp; every lane gets the result.
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over a whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the
// result. scratch holds 32 floats; the call ends with a barrier, so it may be reused at once.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.f;
    v = warp_sum(v);
    __syncthreads();
    return v;
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_max(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : -INFINITY;
    v = warp_max(v);
    __syncthreads();
    return v;
}

// Widening of one element of each weight dtype. bf16 is the top half of an f32, so it widens
// by a shift; f16 goes through the hardware conversion.
__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(bf16 v) { return __uint_as_float((uint32_t)v.bits << 16); }
__device__ __forceinline__ float f16_to_f32(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ float to_f32(f16 v) { return f16_to_f32(v.bits); }

// silu(g) = g·sigmoid(g); expf(−g) overflows to inf for g < −88, and g / inf = −0 is the limit.
__device__ __forceinline__ float silu(float g) { return g / (1.f + expf(-g)); }

// Narrowing of f32, round to nearest even (the tensor-core GEMM stages activations this way).
__device__ __forceinline__ unsigned short f32_to_bf16_bits(float f) {
    unsigned short h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
__device__ __forceinline__ unsigned short f32_to_f16_bits(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// The low and high element of a 32-bit word holding two bf16 or two f16.
__device__ __forceinline__ float bf16_lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }
__device__ __forceinline__ float f16_lo(uint32_t w) { return f16_to_f32((unsigned short)(w & 0xffffu)); }
__device__ __forceinline__ float f16_hi(uint32_t w) { return f16_to_f32((unsigned short)(w >> 16)); }

// A 16-byte load of weights that are read once: not cached in L1, so that L1 stays with what
// is reused.
__device__ __forceinline__ uint4 load_stream16(const void* p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

// Programmatic dependent launch (sm_90). A kernel launched with the programmatic-serialization
// attribute may start while the kernel before it in the stream still runs; pdl_wait blocks until
// that kernel (and so every earlier one) has finished and its writes are visible. Code before
// pdl_wait may touch only what no earlier kernel writes (the weights); everything else follows it.
// pdl_trigger lets the next kernel start launching once every block of this one has called it.
// Compiled for an earlier target, or launched without the attribute, both are no-ops.
__device__ __forceinline__ void pdl_wait() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// A 16-byte load of constant data that many blocks reuse (norm weights): through L1.
__device__ __forceinline__ uint4 load_const16(const void* p) {
    uint4 v;
    asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}

// A load that bypasses L1 (cached in L2 only): for values other blocks of the same launch wrote,
// which an earlier read on this multiprocessor may have left stale in its L1.
__device__ __forceinline__ float load_cg(const float* p) {
    float v;
    asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p) : "memory");
    return v;
}

// An L2 load (L1 bypassed, as load_cg) that the compiler may schedule like any load, so that a
// loop of them keeps several in flight; it still stays after the fences and barriers before it.
__device__ __forceinline__ float load_l2(const float* p) { return __ldcg(p); }
