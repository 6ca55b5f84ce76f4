// Kernels of the device-resident decode step (gpu.Decoder, one token of one sequence per step),
// each fusing what the generic ops do in several launches. Compiled for compute_90: they wait on
// the kernel before them with programmatic dependent launch (common.cuh) and may overlap it.
//
// attention_decode_rope_gqa_{f32,bf16}_d{128,256} — RoPE of q and k, the KV-cache append and decode
// attention with its merge in one launch (five before: rope q, rope k, kv_store, attention,
// combine), for every row of a decode step: kernels/attention_decode.cuh with ROPE. The block
// that holds a token's position rotates its key, rounds key and value to the cache's type, writes
// them into the cache row of that position and attends over them as the cache now holds them.
// CPU reference: tensor.CPU.RoPE of q and k at pos, tensor.CPU.StoreKV, then tensor.CPU.Attention.
// Shapes: q (n, heads, D), k and v (n, kv_heads, D) f32 as the q/k/v projection wrote them (k not
// yet rotated); the rest as attention_decode.cuh says; D even.
//
// argmax_advance_f32 — greedy sampling and the position update of the decode loop in one launch,
// over many blocks. CPU reference: llama.argmax (largest value, lowest index on a tie, NaN never
// wins; a row without a winner gives 0) and the host's position bookkeeping. Block b reduces a
// contiguous slice of x (d) to one (value, index) candidate; the last block to finish (atomic
// count) reduces the candidates in block order, writes tok, then pos += 1, ctx = pos + 1, row =
// the cache row of pos, hist[pos] = tok — as argmax_f32 followed by advance_i32.
//
// hold_ns — one thread sleeps for ns nanoseconds. The profiler queues it before a step so that the
// host can queue the whole step behind it; the step's kernels then run back to back and the
// events between them time the kernels, not the host's launches.
#include "common.cuh"

#include "attention_decode.cuh"

// ---- device helpers ----

// better reports whether (v, i) beats (bv, bi): larger value, or equal value and lower index.
__device__ __forceinline__ bool better(float v, int i, float bv, int bi) { return v > bv || (v == bv && i < bi); }

__device__ __forceinline__ void argmax_warp(float& bv, int& bi) {
    for (int o = 16; o > 0; o >>= 1) {
        float v = __shfl_xor_sync(0xffffffffu, bv, o);
        int i = __shfl_xor_sync(0xffffffffu, bi, o);
        if (better(v, i, bv, bi)) bv = v, bi = i;
    }
}

// argmax_block reduces every thread's (bv, bi) to thread 0's (blockDim.x ≤ 1024).
__device__ __forceinline__ void argmax_block(float& bv, int& bi) {
    __shared__ float sv[32];
    __shared__ int si[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    argmax_warp(bv, bi);
    if (lane == 0) sv[warp] = bv, si[warp] = bi;
    __syncthreads();
    if (warp == 0) {
        int warps = blockDim.x >> 5;
        bv = lane < warps ? sv[lane] : -INFINITY;
        bi = lane < warps ? si[lane] : 0x7fffffff;
        argmax_warp(bv, bi);
    }
    __syncthreads();
}

// ---- kernels ----

#define DECODE_ROPE_ENTRY(NAME, KV, DP)                                                                               \
    extern "C" __global__ void __launch_bounds__(ADG_WARPS * 32)                                                     \
        NAME(float* out, float* part_acc, float* part_ml, int* count, const float* q, const float* k, const float* v,  \
             KV* kc, KV* vc, const int* pos, const int* table, int stride, int block_size, const float* inv_freq,     \
             int heads, int kv_heads, int dim, float scale) {                                                        \
        attention_decode_gqa<KV, true, DP>(out, part_acc, part_ml, count, q, k, v, kc, vc, pos, table, stride,        \
                                           block_size, inv_freq, heads, kv_heads, dim, scale);                        \
    }
DECODE_ROPE_ENTRY(attention_decode_rope_gqa_f32_d128, float, 128)
DECODE_ROPE_ENTRY(attention_decode_rope_gqa_f32_d256, float, 256)
DECODE_ROPE_ENTRY(attention_decode_rope_gqa_bf16_d128, bf16, 128)
DECODE_ROPE_ENTRY(attention_decode_rope_gqa_bf16_d256, bf16, 256)

extern "C" __global__ void __launch_bounds__(1024) argmax_advance_f32(
    int* tok, const float* x, int d, float* cand_v, int* cand_i, int* count, int* pos, int* ctx, int* row,
    const int* table, int block_size, int* hist) {
    __shared__ int last;
    pdl_wait();
    pdl_trigger();
    int per = (d + gridDim.x - 1) / gridDim.x;
    int lo = blockIdx.x * per, hi = min(lo + per, d);
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int k = lo + threadIdx.x; k < hi; k += blockDim.x) {
        float v = x[k];
        if (better(v, k, bv, bi)) bv = v, bi = k;
    }
    argmax_block(bv, bi);
    if (threadIdx.x == 0) cand_v[blockIdx.x] = bv, cand_i[blockIdx.x] = bi;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(count, 1) == (int)gridDim.x - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    bv = -INFINITY, bi = 0x7fffffff;
    for (int b = threadIdx.x; b < gridDim.x; b += blockDim.x) {
        float v = load_cg(cand_v + b);
        int i = (int)__float_as_uint(load_cg((const float*)cand_i + b));
        if (better(v, i, bv, bi)) bv = v, bi = i;
    }
    argmax_block(bv, bi);
    if (threadIdx.x == 0) {
        int t = bi == 0x7fffffff ? 0 : bi;
        tok[0] = t;
        int p = pos[0] + 1;
        pos[0] = p;
        ctx[0] = p + 1;
        row[0] = table[p / block_size] * block_size + p % block_size;
        hist[p] = t;
        count[0] = 0;
    }
}

extern "C" __global__ void hold_ns(unsigned long long ns) {
    pdl_wait();
    if (threadIdx.x != 0) return;
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do {
        __nanosleep(1000);
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    } while (t - t0 < ns);
}
