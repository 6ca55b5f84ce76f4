// KV-cache append: each token's keys and values go to its cache row.
//
// CPU reference: tensor.CPU.StoreKV. The host turns (sequence, position) into a cache row through
// the block table (row = table[seq][pos / block]·block + pos % block) and passes rows (n) int32; a
// row < 0 is an idle row of a decode step and writes nothing.
// Shapes: k, v (n, width) f32 with width = kv_heads·head_dim; kc, vc (cache rows, width) f32, or
// bf16 (kv_store_bf16: each value rounded to nearest even, as tensor's Convert does).
// One block per token; threads stride over width. Memory traffic: n·width·4·2 read, n·width·(4
// or 2)·2 written.
#include "common.cuh"

// ---- device helpers ----

__device__ __forceinline__ void kv_put(float* p, float x) { *p = x; }
__device__ __forceinline__ void kv_put(bf16* p, float x) { p->bits = f32_to_bf16_bits(x); }

template <typename KV>
__device__ void kv_store(KV* kc, KV* vc, const float* k, const float* v, const int* rows, int width) {
    int i = blockIdx.x, row = rows[i];
    if (row < 0) return;
    size_t dst = (size_t)row * width, src = (size_t)i * width;
    for (int e = threadIdx.x; e < width; e += blockDim.x) {
        kv_put(kc + dst + e, k[src + e]);
        kv_put(vc + dst + e, v[src + e]);
    }
}

// ---- kernels ----

extern "C" __global__ void kv_store_f32(float* kc, float* vc, const float* k, const float* v, const int* rows, int width) {
    kv_store(kc, vc, k, v, rows, width);
}
extern "C" __global__ void kv_store_bf16(bf16* kc, bf16* vc, const float* k, const float* v, const int* rows, int width) {
    kv_store(kc, vc, k, v, rows, width);
}
