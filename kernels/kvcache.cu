// KV-cache append: each token's keys and values go to its cache row.
//
// CPU reference: tensor.CPU.StoreKV. The host turns (sequence, position) into a cache row through
// the block table (row = table[seq][pos / block]·block + pos % block) and passes rows (n) int32.
// Shapes: k, v (n, width) f32 with width = kv_heads·head_dim; kc, vc (cache rows, width) f32.
// One block per token; threads stride over width. Memory traffic: 2·n·width·4 read and written.
#include "common.cuh"

// ---- kernels ----

extern "C" __global__ void kv_store_f32(float* kc, float* vc, const float* k, const float* v, const int* rows, int width) {
    int i = blockIdx.x;
    size_t dst = (size_t)rows[i] * width, src = (size_t)i * width;
    for (int e = threadIdx.x; e < width; e += blockDim.x) {
        kc[dst + e] = k[src + e];
        vc[dst + e] = v[src + e];
    }
}
