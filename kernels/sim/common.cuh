// A host simulation of the CUDA subset the matvec and decode kernels use, standing in for
// kernels/common.cuh when they are compiled as C++ for the CPU (kernels/sim/harness.cpp): a
// block's threads are std::threads, blocks run one after another, warp shuffles go through
// per-warp buffers and barriers, __shared__ variables are statics (one block at a time), PTX
// loads are plain loads and programmatic dependent launch is a no-op.
#pragma once
#include <stdint.h>
#include <math.h>
#include <string.h>
#include <barrier>
#include <thread>
#include <vector>
#include <functional>

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __restrict__
#define __align__(n) __attribute__((aligned(n)))

struct float4 { float x, y, z, w; };
struct uint4 { uint32_t x, y, z, w; };
struct float2 { float x, y; };
struct uint2 { uint32_t x, y; };
inline float2 make_float2(float a, float b) { return {a, b}; }
inline uint2 make_uint2(uint32_t a, uint32_t b) { return {a, b}; }
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline uint4 make_uint4(uint32_t a, uint32_t b, uint32_t c, uint32_t d) { return {a, b, c, d}; }
struct D3 { unsigned x = 0, y = 0, z = 0; };
inline thread_local D3 threadIdx, blockIdx;
inline D3 blockDim, gridDim;

inline float __uint_as_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
inline uint32_t __float_as_uint(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

struct SimBlock {
    std::barrier<>* block;
    std::vector<std::barrier<>*> warps;
    uint32_t buf[32][32];
};
inline SimBlock* sim_block;

inline void __syncthreads() { sim_block->block->arrive_and_wait(); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __nanosleep(unsigned) {}
inline uint32_t shfl_bits(uint32_t v, int o) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    sim_block->buf[warp][lane] = v;
    sim_block->warps[warp]->arrive_and_wait();
    uint32_t r = sim_block->buf[warp][lane ^ o];
    sim_block->warps[warp]->arrive_and_wait();
    return r;
}
inline float __shfl_xor_sync(unsigned, float v, int o) { return __uint_as_float(shfl_bits(__float_as_uint(v), o)); }
inline int __shfl_xor_sync(unsigned, int v, int o) { return (int)shfl_bits((uint32_t)v, o); }
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline int atomicMax(int* p, int v) {
    int old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
    return old;
}
inline int max(int a, int b) { return a > b ? a : b; }
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline float rsqrtf(float x) { return 1.f / sqrtf(x); }

// sim_launch runs fn for every thread of every block: the block's threads are std::threads that
// walk the blocks in order together, meeting at a barrier between blocks.
inline void sim_launch(unsigned gx, unsigned gy, unsigned gz, unsigned threads, std::function<void()> fn) {
    gridDim = {gx, gy, gz};
    blockDim = {threads, 1, 1};
    SimBlock b;
    std::barrier<> bb(threads);
    b.block = &bb;
    for (unsigned w = 0; w < threads / 32; w++) b.warps.push_back(new std::barrier<>(32));
    sim_block = &b;
    std::vector<std::thread> ts;
    for (unsigned t = 0; t < threads; t++)
        ts.emplace_back([=, &bb] {
            threadIdx = {t, 0, 0};
            for (unsigned z = 0; z < gz; z++)
                for (unsigned y = 0; y < gy; y++)
                    for (unsigned x = 0; x < gx; x++) {
                        blockIdx = {x, y, z};
                        fn();
                        bb.arrive_and_wait();
                    }
        });
    for (auto& t : ts) t.join();
    for (auto* w : b.warps) delete w;
}

struct bf16 { unsigned short bits; };
struct f16 { unsigned short bits; };

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
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
__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(bf16 v) { return __uint_as_float((uint32_t)v.bits << 16); }
__device__ __forceinline__ float f16_to_f32(unsigned short h) { _Float16 f; memcpy(&f, &h, 2); return (float)f; }
__device__ __forceinline__ float to_f32(f16 v) { return f16_to_f32(v.bits); }
__device__ __forceinline__ float silu(float g) { return g / (1.f + expf(-g)); }
__device__ __forceinline__ float bf16_lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }
__device__ __forceinline__ float f16_lo(uint32_t w) { return f16_to_f32((unsigned short)(w & 0xffffu)); }
__device__ __forceinline__ float f16_hi(uint32_t w) { return f16_to_f32((unsigned short)(w >> 16)); }
__device__ __forceinline__ uint4 load_stream16(const void* p) { uint4 v; memcpy(&v, p, 16); return v; }
__device__ __forceinline__ uint4 load_const16(const void* p) { uint4 v; memcpy(&v, p, 16); return v; }
__device__ __forceinline__ float load_cg(const float* p) { return *(const volatile float*)p; }
__device__ __forceinline__ float load_l2(const float* p) { return *(const volatile float*)p; }
__device__ __forceinline__ unsigned short f32_to_bf16_bits(float f) {
    uint32_t u = __float_as_uint(f);  // round to nearest even; the kernels never round a NaN
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
__device__ __forceinline__ unsigned short f32_to_f16_bits(float f) { _Float16 h = (_Float16)f; unsigned short b; memcpy(&b, &h, 2); return b; }
__device__ __forceinline__ void pdl_wait() {}
__device__ __forceinline__ void pdl_trigger() {}
