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
//
// attention_prefill_mma_bf16_d{64,128} — the same prefill on tensor cores (D ≤ 128, D % 4 == 0).
// Rows are (query, head) pairs of one GQA group: row r of the group's n·G rows (G = heads /
// kv_heads) is query r / G at head kvh·G + r % G, so the G heads that share a kv head share every
// key and value tile. Block (b, kvh), 4 warps, takes 64 consecutive rows (64 / G queries, all of
// one sequence: the host checks) and walks keys [0, kmax) in tiles of 64, kmax the largest ctx
// among its queries: tiles past every query's context are never loaded (the causal skip), and a
// warp whose 16 rows all end before a tile skips its arithmetic. Each tile is read from the paged
// f32 cache, rounded to bf16 into shared memory (rows padded from D to D + 8 elements so that
// ldmatrix's 8 row addresses fall in distinct banks), then per warp:
//   S (16 × 64) = Q·Kᵀ: mma.sync m16n8k16, Q fragments held in registers for the whole walk (one
//     ldmatrix per 16 dims), K fragments by ldmatrix (keys are rows, D contiguous: the B operand);
//   masking (key ≥ ctx of the row → −inf) only in tiles that reach past a row's context;
//   online softmax in f32 on the C fragments: each row lives in a quad of 4 lanes, so its max is
//     two shuffles; s is scaled by scale·log2 e and exponentiated with exp2;
//   O (16 × D) += P·V: P's C fragments, rounded to bf16, are the A fragments of the next mma as
//     they are (two 8-key C tiles form one 16-key A tile), V fragments by ldmatrix.trans.
// At the end O / l goes out as f32. Precision: q, k, v and p are rounded to bf16 (relative 2⁻⁹
// each); accumulation and the softmax are f32. The longest blocks (the last queries) are issued
// first, so that the short ones fill the tail.
// FLOPs: 4·D per (query, head, key ≤ position): 34.4 GFLOP per layer for a causal prefill of 2048
// tokens at Llama-3.1-8B (32/8 heads of 128). Traffic: each block reads ~kmax·D·8 bytes of f32
// cache (mostly L2 hits: one layer's K and V at 2048 tokens is 16 MB), ~1.1 GB per such layer.
#include "mma.cuh"

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

#define FA_ROWS 64  // (query, head) rows per block, 16 per warp
#define FA_KEYS 64  // keys per tile

template <int DP>
__device__ void attention_prefill_mma(float* out, const float* q, const float* kc, const float* vc, const int* ctx,
                                      const int* table, int n, int max_blocks, int block_size, int heads, int kv_heads,
                                      int dim, float scale) {
    constexpr int LD = DP + 8;  // padded row, elements (a 16-byte multiple: 16-byte stores and ldmatrix rows)
    constexpr int C4 = DP / 4;  // float4 per row
    constexpr int LOADS = FA_KEYS * C4 / 128;  // float4 of K (and of V) per thread per tile
    __shared__ __align__(16) bf16 Ks[FA_KEYS * LD];
    __shared__ __align__(16) bf16 Vs[FA_KEYS * LD];
    __shared__ int kmax_s;
    int group = heads / kv_heads, kvh = blockIdx.y, width = kv_heads * dim, rows = n * group;
    int r0 = (gridDim.x - 1 - blockIdx.x) * FA_ROWS;  // the longest blocks first
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;

    // This lane's two rows of the C fragments, and their context lengths (a padding row past the
    // last query attends to position 0 and is not written).
    int ra = r0 + warp * 16 + g, rb = ra + 8;
    int len_a = ra < rows ? ctx[ra / group] : 1, len_b = rb < rows ? ctx[rb / group] : 1;
    int wmax = max(len_a, len_b);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) wmax = max(wmax, __shfl_xor_sync(0xffffffffu, wmax, o));
    if (threadIdx.x == 0) kmax_s = 0;

    // Q: f32 → bf16 through the K buffer into registers (A fragments, 16 dims each).
    bf16* Qs = Ks;
    for (int f = threadIdx.x; f < FA_ROWS * C4; f += 128) {
        int lr = f / C4, d = (f % C4) * 4, r = r0 + lr;
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (r < rows && d < dim) v = *(const float4*)(q + ((size_t)(r / group) * heads + kvh * group + r % group) * dim + d);
        *(uint2*)(Qs + lr * LD + d) = make_uint2(pack2(v.x, v.y, bf16()), pack2(v.z, v.w, bf16()));
    }
    __syncthreads();
    if (lane == 0) atomicMax(&kmax_s, wmax);
    uint32_t qf[DP / 16][4];
#pragma unroll
    for (int ks = 0; ks < DP / 16; ks++) ldmatrix_x4(qf[ks], Qs + (warp * 16 + (lane & 15)) * LD + ks * 16 + (lane >> 4) * 8);
    __syncthreads();
    int kmax = kmax_s;
    const int* tab = table + (size_t)(r0 / group) * max_blocks;  // every query of the block shares it

    // ldmatrix row addresses within a tile. K (B of Q·Kᵀ, keys as rows): lanes 0–7 keys 0–7 at
    // dims 0–7, 8–15 the same keys at dims 8–15, 16–31 keys 8–15: b0, b1 of two 8-key tiles.
    // V (B of P·V with .trans, keys as rows): lanes 0–7 keys 0–7, 8–15 keys 8–15 at dims 0–7,
    // 16–31 the same at dims 8–15: b0, b1 of two 8-dim tiles.
    int k_row = (lane & 7) + ((lane >> 4) << 3), k_col = ((lane >> 3) & 1) * 8;
    int v_row = (lane & 7) + (((lane >> 3) & 1) << 3), v_col = (lane >> 4) * 8;

    float o[DP / 8][4];
#pragma unroll
    for (int j = 0; j < DP / 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.f, l_b = 0.f;
    float sl2 = scale * 1.4426950408889634f;  // scores in log2 units: exp(x·scale) = 2^(x·sl2)

    for (int t0 = 0; t0 < kmax; t0 += FA_KEYS) {
        // The tile: K and V rows t0…t0+63 (zeros past kmax, so that p = 0 meets finite values).
#pragma unroll
        for (int i0 = 0; i0 < LOADS; i0 += 2) {
            float4 kx[2], vx[2];
#pragma unroll
            for (int i = 0; i < 2; i++) {
                int f = threadIdx.x + 128 * (i0 + i), j = f / C4, d = (f % C4) * 4, pos = t0 + j;
                kx[i] = vx[i] = make_float4(0.f, 0.f, 0.f, 0.f);
                if (pos < kmax && d < dim) {
                    size_t off = ((size_t)tab[pos / block_size] * block_size + pos % block_size) * width + kvh * dim + d;
                    kx[i] = *(const float4*)(kc + off);
                    vx[i] = *(const float4*)(vc + off);
                }
            }
#pragma unroll
            for (int i = 0; i < 2; i++) {
                int f = threadIdx.x + 128 * (i0 + i), j = f / C4, d = (f % C4) * 4;
                *(uint2*)(Ks + j * LD + d) = make_uint2(pack2(kx[i].x, kx[i].y, bf16()), pack2(kx[i].z, kx[i].w, bf16()));
                *(uint2*)(Vs + j * LD + d) = make_uint2(pack2(vx[i].x, vx[i].y, bf16()), pack2(vx[i].z, vx[i].w, bf16()));
            }
        }
        __syncthreads();

        if (t0 < wmax) {  // warp-uniform: some row of this warp reaches into the tile
            float s[FA_KEYS / 8][4];
#pragma unroll
            for (int j = 0; j < FA_KEYS / 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
            for (int ks = 0; ks < DP / 16; ks++)
#pragma unroll
                for (int jj = 0; jj < FA_KEYS / 16; jj++) {
                    uint32_t r[4];
                    ldmatrix_x4(r, Ks + (jj * 16 + k_row) * LD + ks * 16 + k_col);
                    mma16816<bf16>(s[2 * jj], qf[ks], r[0], r[1]);
                    mma16816<bf16>(s[2 * jj + 1], qf[ks], r[2], r[3]);
                }
            bool whole = t0 + FA_KEYS <= min(len_a, len_b);
            float mx_a = m_a, mx_b = m_b;
#pragma unroll
            for (int j = 0; j < FA_KEYS / 8; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    s[j][e] *= sl2;
                    if (!whole && t0 + j * 8 + 2 * t + (e & 1) >= (e < 2 ? len_a : len_b)) s[j][e] = -INFINITY;
                }
#pragma unroll
            for (int j = 0; j < FA_KEYS / 8; j++) mx_a = fmaxf(mx_a, fmaxf(s[j][0], s[j][1])), mx_b = fmaxf(mx_b, fmaxf(s[j][2], s[j][3]));
            mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 1));
            mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 2));
            mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 1));
            mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 2));
            // Finite: position 0 is in every row's context and in the first tile. exp2(−inf) = 0
            // rescales the empty start, and masked scores give p = 0.
            float c_a = exp2f(m_a - mx_a), c_b = exp2f(m_b - mx_b);
            m_a = mx_a, m_b = mx_b;
            l_a *= c_a, l_b *= c_b;
#pragma unroll
            for (int j = 0; j < DP / 8; j++) o[j][0] *= c_a, o[j][1] *= c_a, o[j][2] *= c_b, o[j][3] *= c_b;
#pragma unroll
            for (int j = 0; j < FA_KEYS / 8; j++) {
                s[j][0] = exp2f(s[j][0] - m_a), s[j][1] = exp2f(s[j][1] - m_a);
                s[j][2] = exp2f(s[j][2] - m_b), s[j][3] = exp2f(s[j][3] - m_b);
                l_a += s[j][0] + s[j][1], l_b += s[j][2] + s[j][3];
            }
#pragma unroll
            for (int kk = 0; kk < FA_KEYS / 16; kk++) {
                uint32_t a[4] = {pack2(s[2 * kk][0], s[2 * kk][1], bf16()), pack2(s[2 * kk][2], s[2 * kk][3], bf16()),
                                 pack2(s[2 * kk + 1][0], s[2 * kk + 1][1], bf16()), pack2(s[2 * kk + 1][2], s[2 * kk + 1][3], bf16())};
#pragma unroll
                for (int jj = 0; jj < DP / 16; jj++) {
                    uint32_t r[4];
                    ldmatrix_x4_trans(r, Vs + (kk * 16 + v_row) * LD + jj * 16 + v_col);
                    mma16816<bf16>(o[2 * jj], a, r[0], r[1]);
                    mma16816<bf16>(o[2 * jj + 1], a, r[2], r[3]);
                }
            }
        }
        __syncthreads();  // the tile is consumed before the next one overwrites it
    }

    // l: each lane summed its own columns; the quad's four lanes hold the row between them.
    l_a += __shfl_xor_sync(0xffffffffu, l_a, 1);
    l_a += __shfl_xor_sync(0xffffffffu, l_a, 2);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, 1);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, 2);
    float inv_a = 1.f / l_a, inv_b = 1.f / l_b;
    float* oa = out + ((size_t)(ra / group) * heads + kvh * group + ra % group) * dim;
    float* ob = out + ((size_t)(rb / group) * heads + kvh * group + rb % group) * dim;
#pragma unroll
    for (int j = 0; j < DP / 8; j++) {
        int d = j * 8 + 2 * t;  // D % 4 == 0: d < D covers d + 1 too
        if (d < dim) {
            if (ra < rows) *(float2*)(oa + d) = make_float2(o[j][0] * inv_a, o[j][1] * inv_a);
            if (rb < rows) *(float2*)(ob + d) = make_float2(o[j][2] * inv_b, o[j][3] * inv_b);
        }
    }
}

#define PREFILL_MMA_ENTRY(NAME, DP)                                                                               \
    extern "C" __global__ void __launch_bounds__(128) NAME(                                                        \
        float* out, const float* q, const float* kc, const float* vc, const int* ctx, const int* table, int n,    \
        int max_blocks, int block_size, int heads, int kv_heads, int dim, float scale) {                          \
        attention_prefill_mma<DP>(out, q, kc, vc, ctx, table, n, max_blocks, block_size, heads, kv_heads, dim,   \
                                  scale);                                                                         \
    }
PREFILL_MMA_ENTRY(attention_prefill_mma_bf16_d64, 64)
PREFILL_MMA_ENTRY(attention_prefill_mma_bf16_d128, 128)
