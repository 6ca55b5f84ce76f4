// Causal grouped-query attention over the paged KV cache.
//
// CPU reference: tensor.CPU.Attention. For token i (sequence s, position p) and query head h,
// with kv head g = h / (heads / kv_heads) and ctx = p + 1:
//   out[i, h] = Σ_{j < ctx} softmax_j(q[i,h]·k_j · scale) v_j,   scale = 1/√D
// where k_j, v_j are cache rows table[i][j / bs]·bs + j % bs (the host flattens each token's
// block table into table (n, max_blocks), and passes ctx (n) = pos + 1).
// Shapes: q (n, heads, D) f32; kc, vc (cache rows, kv_heads, D) f32; out (n, heads·D) f32;
// D ≤ 256.
//
// attention_decode_f32 + attention_combine_f32 — split-KV ("flash decoding"), for any batch:
// block (part, h, i) takes positions [32·part, 32·part + 32) of token i's context; each of 4
// warps scores 8 positions (q·k with lanes along D, 8 loads in flight per lane), then the block
// forms m = max score, p_j = exp(s_j − m), l = Σ p_j and acc = Σ p_j v_j, written as a partial
// result. Partitions past a token's ctx write (m = −inf, l = 0). The combine step takes
// M = max m_p and out = Σ e^{m_p − M} acc_p / Σ e^{m_p − M} l_p (the log-sum-exp merge).
// Memory traffic: each token reads ctx · kv_width · 4 · 2 bytes of cache per query head (the
// query heads of a group re-read the same rows, mostly from L2), plus 2·parts·(D + 2)·4 bytes of
// partials per head.
//
// attention_prefill_f32_d{64,128,256} — flash-style tiles for prefill: block (tile, h) handles 32
// consecutive tokens of one sequence (the host checks that every tile is homogeneous and uses the
// decode kernels otherwise) and walks the keys in shared-memory tiles of BKV positions with an
// online softmax (running max m, sum l and output acc, rescaled by e^{m_old − m_new} per tile).
// Four threads share a query, each holding a quarter of D (dims 4c…4c+3 for chunks c ≡ slice mod 4,
// so the four read adjacent float4s of a key and never collide in a bank); their partial dot
// products meet through two shuffles. D is padded with zeros up to 64/128/256 in shared memory.
// FLOPs: ~2·n·ctx·D·2 per head (half of it masked away on a causal prefill).
#include "common.cuh"

#define MAX_D 256
#define DEC_WARPS 4
#define DEC_PER_WARP 8
#define DEC_PART (DEC_WARPS * DEC_PER_WARP)  // positions per partition

// ---- kernels ----

extern "C" __global__ void __launch_bounds__(DEC_WARPS * 32) attention_decode_f32(
    float* part_acc, float* part_ml, const float* q, const float* kc, const float* vc, const int* ctx,
    const int* table, int max_blocks, int block_size, int heads, int kv_heads, int dim, int parts, float scale) {
    __shared__ float qs[MAX_D];
    __shared__ float ps[DEC_PART];
    __shared__ int rows[DEC_PART];
    int p = blockIdx.x, h = blockIdx.y, i = blockIdx.z;
    int g = h / (heads / kv_heads), width = kv_heads * dim;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int start = p * DEC_PART, end = min(start + DEC_PART, ctx[i]);
    size_t slot = ((size_t)i * heads + h) * parts + p;
    float* acc = part_acc + slot * dim;
    if (start >= end) {
        for (int e = threadIdx.x; e < dim; e += blockDim.x) acc[e] = 0.f;
        if (threadIdx.x == 0) part_ml[2 * slot] = -INFINITY, part_ml[2 * slot + 1] = 0.f;
        return;
    }
    const float* qh = q + ((size_t)i * heads + h) * dim;
    for (int e = threadIdx.x; e < dim; e += blockDim.x) qs[e] = qh[e] * scale;
    if (threadIdx.x < DEC_PART) {
        int j = start + threadIdx.x;
        rows[threadIdx.x] = j < end ? table[(size_t)i * max_blocks + j / block_size] * block_size + j % block_size : 0;
    }
    __syncthreads();

    // Scores of this warp's 8 positions: all 8 key loads of an e-step are issued together.
    float s[DEC_PER_WARP];
    const float* kp[DEC_PER_WARP];
#pragma unroll
    for (int u = 0; u < DEC_PER_WARP; u++) {
        s[u] = 0.f;
        kp[u] = kc + (size_t)rows[warp * DEC_PER_WARP + u] * width + g * dim;
    }
    bool live[DEC_PER_WARP];
#pragma unroll
    for (int u = 0; u < DEC_PER_WARP; u++) live[u] = start + warp * DEC_PER_WARP + u < end;
    for (int e = lane; e < dim; e += 32) {
        float qe = qs[e];
#pragma unroll
        for (int u = 0; u < DEC_PER_WARP; u++)
            if (live[u]) s[u] += qe * kp[u][e];
    }
#pragma unroll
    for (int u = 0; u < DEC_PER_WARP; u++) {
        float v = warp_sum(s[u]);
        if (lane == 0) ps[warp * DEC_PER_WARP + u] = live[u] ? v : -INFINITY;
    }
    __syncthreads();

    // Every thread reads the 32 scores (a broadcast) for the max; then weights replace scores.
    float m = -INFINITY;
#pragma unroll
    for (int j = 0; j < DEC_PART; j++) m = fmaxf(m, ps[j]);
    __syncthreads();
    if (threadIdx.x < DEC_PART) ps[threadIdx.x] = expf(ps[threadIdx.x] - m);  // exp(−inf) = 0
    __syncthreads();
    float l = 0.f;
#pragma unroll
    for (int j = 0; j < DEC_PART; j++) l += ps[j];

    int n = end - start;
    for (int e = threadIdx.x; e < dim; e += blockDim.x) {
        float a = 0.f;
        for (int j = 0; j < n; j++) a += ps[j] * vc[(size_t)rows[j] * width + g * dim + e];
        acc[e] = a;
    }
    if (threadIdx.x == 0) part_ml[2 * slot] = m, part_ml[2 * slot + 1] = l;
}

extern "C" __global__ void attention_combine_f32(float* out, const float* part_acc, const float* part_ml, int heads, int dim, int parts) {
    int h = blockIdx.x, i = blockIdx.y;
    size_t slot0 = ((size_t)i * heads + h) * parts;
    const float* ml = part_ml + 2 * slot0;
    float M = -INFINITY;
    for (int p = 0; p < parts; p++) M = fmaxf(M, ml[2 * p]);
    float L = 0.f;
    for (int p = 0; p < parts; p++) L += expf(ml[2 * p] - M) * ml[2 * p + 1];
    float inv = 1.f / L;
    float* o = out + ((size_t)i * heads + h) * dim;
    for (int e = threadIdx.x; e < dim; e += blockDim.x) {
        float a = 0.f;
        for (int p = 0; p < parts; p++) {
            float w = expf(ml[2 * p] - M);
            if (w != 0.f) a += w * part_acc[(slot0 + p) * dim + e];
        }
        o[e] = a * inv;
    }
}

#define PRE_QUERIES 32  // tokens per block; 4 threads each

template <int DP, int BKV>
__device__ void attention_prefill(float* out, const float* q, const float* kc, const float* vc, const int* ctx,
                                  const int* table, int n, int max_blocks, int block_size, int heads, int kv_heads,
                                  int dim, float scale) {
    __shared__ __align__(16) float Ks[BKV][DP];
    __shared__ __align__(16) float Vs[BKV][DP];
    __shared__ int kmax_s;
    constexpr int C = DP / 16;  // float4 chunks per thread
    int h = blockIdx.y, g = h / (heads / kv_heads), width = kv_heads * dim;
    int qi = threadIdx.x >> 2, sl = threadIdx.x & 3;
    int i0 = blockIdx.x * PRE_QUERIES, i = i0 + qi;
    bool valid = i < n;
    int len = valid ? ctx[i] : 1;  // a padding query attends to position 0 and is not written

    float4 qv[C], acc[C];
    const float* qh = q + ((size_t)(valid ? i : i0) * heads + h) * dim;
#pragma unroll
    for (int c = 0; c < C; c++) {
        int d = (sl + 4 * c) * 4;
        qv[c].x = d < dim ? qh[d] * scale : 0.f;
        qv[c].y = d + 1 < dim ? qh[d + 1] * scale : 0.f;
        qv[c].z = d + 2 < dim ? qh[d + 2] * scale : 0.f;
        qv[c].w = d + 3 < dim ? qh[d + 3] * scale : 0.f;
        acc[c] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
    const int* tab = table + (size_t)i0 * max_blocks;  // every token of the tile shares it
    if (threadIdx.x == 0) kmax_s = 0;
    __syncthreads();
    if (sl == 0) atomicMax(&kmax_s, len);
    __syncthreads();
    int kmax = kmax_s;

    float m = -INFINITY, l = 0.f;
    for (int t0 = 0; t0 < kmax; t0 += BKV) {
        for (int e = threadIdx.x; e < BKV * DP; e += blockDim.x) {
            int j = e / DP, d = e % DP, pos = t0 + j;
            float kx = 0.f, vx = 0.f;
            if (pos < kmax && d < dim) {
                size_t off = ((size_t)tab[pos / block_size] * block_size + pos % block_size) * width + g * dim + d;
                kx = kc[off], vx = vc[off];
            }
            Ks[j][d] = kx, Vs[j][d] = vx;
        }
        __syncthreads();

        float s[BKV], tmax = -INFINITY;
#pragma unroll
        for (int j = 0; j < BKV; j++) {
            float part = 0.f;
#pragma unroll
            for (int c = 0; c < C; c++) {
                float4 k4 = *(const float4*)&Ks[j][(sl + 4 * c) * 4];
                part += qv[c].x * k4.x + qv[c].y * k4.y + qv[c].z * k4.z + qv[c].w * k4.w;
            }
            part += __shfl_xor_sync(0xffffffffu, part, 1);
            part += __shfl_xor_sync(0xffffffffu, part, 2);
            s[j] = t0 + j < len ? part : -INFINITY;
            tmax = fmaxf(tmax, s[j]);
        }
        float mn = fmaxf(m, tmax);  // finite: position 0 is in every query's first tile
        float corr = expf(m - mn);
        l *= corr;
#pragma unroll
        for (int c = 0; c < C; c++) acc[c].x *= corr, acc[c].y *= corr, acc[c].z *= corr, acc[c].w *= corr;
#pragma unroll
        for (int j = 0; j < BKV; j++) {
            float p = expf(s[j] - mn);
            l += p;
#pragma unroll
            for (int c = 0; c < C; c++) {
                float4 v4 = *(const float4*)&Vs[j][(sl + 4 * c) * 4];
                acc[c].x += p * v4.x, acc[c].y += p * v4.y, acc[c].z += p * v4.z, acc[c].w += p * v4.w;
            }
        }
        m = mn;
        __syncthreads();  // the tile is consumed before the next one overwrites it
    }
    if (!valid) return;
    float inv = 1.f / l;
    float* o = out + ((size_t)i * heads + h) * dim;
#pragma unroll
    for (int c = 0; c < C; c++) {
        int d = (sl + 4 * c) * 4;
        if (d < dim) o[d] = acc[c].x * inv;
        if (d + 1 < dim) o[d + 1] = acc[c].y * inv;
        if (d + 2 < dim) o[d + 2] = acc[c].z * inv;
        if (d + 3 < dim) o[d + 3] = acc[c].w * inv;
    }
}

#define PREFILL_ENTRY(NAME, DP, BKV)                                                                              \
    extern "C" __global__ void __launch_bounds__(PRE_QUERIES * 4) NAME(                                           \
        float* out, const float* q, const float* kc, const float* vc, const int* ctx, const int* table, int n,    \
        int max_blocks, int block_size, int heads, int kv_heads, int dim, float scale) {                          \
        attention_prefill<DP, BKV>(out, q, kc, vc, ctx, table, n, max_blocks, block_size, heads, kv_heads, dim,  \
                                   scale);                                                                        \
    }
PREFILL_ENTRY(attention_prefill_f32_d64, 64, 64)
PREFILL_ENTRY(attention_prefill_f32_d128, 128, 32)
PREFILL_ENTRY(attention_prefill_f32_d256, 256, 16)
