// The backward of causal grouped-query attention over a batch's own tokens, and the explicit path
// through the attention probabilities (the pattern) with its backward.
//
// CPU references: tensor.CPU.AttentionBackward, AttentionPattern, AttentionApply,
// AttentionApplyBackward, AttentionPatternBackward. A recorded batch holds whole sequences from
// position 0 in any order; the host indexes it: rows[base_s + t] is the batch row of position t
// of sequence s, and each token i has its sequence's base (tbase[i]) and length (tlen[i]).
// q, dq (n, heads, D); k, v, dk, dv (n, kv_heads, D); dout (n, heads·D) — hook_z's gradient;
// query head h reads kv head g = h / (heads / kv_heads). Every gradient is added into. All f32:
// the gradients of attribution are read at full precision, and at the contexts attribution runs
// (tens to hundreds of tokens) attention is a few percent of a layer's backward.
//
// attention_backward_rows_f32_d{64,128,256} + attention_backward_keys_f32_d{64,128,256} —
// FlashAttention-2's backward (Dao 2023, algorithm 2) without materialising P, with
// P = softmax(q·kᵀ·scale), dP = dout·vᵀ, dS = P⊙(dP − δ), δ = Σ_t P⊙dP = dout·out:
//   rows (block: a tile of up to R consecutive queries of one sequence × a query head): pass 1
//     walks the keys 0…last query in shared-memory tiles with an online softmax and saves the
//     log-sum-exp L = m + log Σ e^{s−m} and δ (accumulated online as Σ e^{s−m}·dP, rescaled with
//     the sum); pass 2 walks them again, P = e^{s−L} from the saved L (no max, no sum), and adds
//     dq = Σ_t dS_t·k_t·scale. The host passes the tiles: (base, first position, count, length).
//   keys (block: a tile of up to R consecutive keys of one sequence × a kv head): walks the
//     queries from the tile's first position to the sequence's end, for each of the group's
//     query heads in turn (the GQA reduction happens in registers: no atomics, no second pass),
//     P = e^{s−L} from the rows pass, and adds dv = Σ P·dout and dk = Σ dS·q·scale.
// A row of 16 dims per thread: D/16 threads share a query (keys) and hold its q and dout (dq, or
// k, v, dk, dv) in registers, their partial dot products meeting through log₂(D/16) shuffles;
// float4 chunks are interleaved across them (dims 4·(sl + (D/16)·c)…) so that they read adjacent
// 16 bytes of a shared row. 128 threads: R = 32, 16, 8 rows per block for D = 64, 128, 256;
// shared tiles of 4096/D rows (32 KiB for K and V, or q and dout). D is padded with zeros to 64,
// 128 or 256. Nothing is atomic, so every run gives the same bits.
// FLOPs per (query, head, key ≤ query): 4·D (rows: s and dP twice, dq) + 8·D (keys: s, dP, dk, dv)
// = 3× the forward's 4·D; for 64-token prompts at the Llama-3.1-8B shape ~0.1 GFLOP per layer and
// sequence, against ~28 GFLOP of the layer's matrix products (dx only, 3 tensor-core products each).
//
// attention_pattern_f32, attention_apply_f32 — the explicit forward over the paged KV cache, as
// tensor.CPU: p[i, h, t] = softmax_t(q[i,h]·k_t·scale) for t < ctx[i], zeros past it; then
// dst[i, h] = Σ_t p[i,h,t]·v_t. Block (h, i); p is (n, heads, pctx). Cache rows as in
// attention.cu (a block table per token).
// attention_apply_backward_{rows,keys}_f32 — dp[i,h,t] += dout[i,h]·v_t (t ≤ pos), and
// dv[j,g] += Σ_{queries i at or after j, h in g} p[i,h,pos_j]·dout[i,h].
// attention_pattern_backward_{rows,keys}_f32 — δ[i,h] = Σ_t p⊙dp (saved), dq += Σ_t dS_t·k_t·scale,
// and dk[j,g] += Σ dS[i,h,pos_j]·q[i,h]·scale. One block per (token, head), threads over keys or D:
// the pattern is only formed when a hook asks for it (AtP*'s QK fix), at short contexts.
#include "common.cuh"

#define PATTERN_MAX_D 256  // the largest head_dim of the pattern kernels (the forward attention's too)

// ---- device helpers ----

// Sum over the TPK consecutive lanes that share a row (TPK a power of two ≤ 32).
template <int TPK>
__device__ __forceinline__ float row_sum(float v) {
#pragma unroll
    for (int o = 1; o < TPK; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// This thread's 16 dims of a row of DP floats: chunk c is dims 4·(sl + TPK·c) … + 3.
template <int TPK>
__device__ __forceinline__ float dot16(const float4 (&a)[4], const float* row, int sl) {
    float s = 0.f;
#pragma unroll
    for (int c = 0; c < 4; c++) {
        float4 b = *(const float4*)(row + (sl + TPK * c) * 4);
        s += a[c].x * b.x + a[c].y * b.y + a[c].z * b.z + a[c].w * b.w;
    }
    return s;
}

template <int TPK>
__device__ __forceinline__ void axpy16(float4 (&y)[4], float a, const float* row, int sl) {
#pragma unroll
    for (int c = 0; c < 4; c++) {
        float4 b = *(const float4*)(row + (sl + TPK * c) * 4);
        y[c].x += a * b.x, y[c].y += a * b.y, y[c].z += a * b.z, y[c].w += a * b.w;
    }
}

// Loads this thread's 16 dims of a global row of dim floats (zeros past dim), scaled by s.
template <int TPK>
__device__ __forceinline__ void load16(float4 (&y)[4], const float* row, int dim, int sl, float s) {
#pragma unroll
    for (int c = 0; c < 4; c++) {
        int d = (sl + TPK * c) * 4;
        y[c].x = d < dim ? row[d] * s : 0.f;
        y[c].y = d + 1 < dim ? row[d + 1] * s : 0.f;
        y[c].z = d + 2 < dim ? row[d + 2] * s : 0.f;
        y[c].w = d + 3 < dim ? row[d + 3] * s : 0.f;
    }
}

// Adds this thread's 16 dims into a global row of dim floats.
template <int TPK>
__device__ __forceinline__ void add16(float* row, const float4 (&y)[4], int dim, int sl) {
#pragma unroll
    for (int c = 0; c < 4; c++) {
        int d = (sl + TPK * c) * 4;
        if (d < dim) row[d] += y[c].x;
        if (d + 1 < dim) row[d + 1] += y[c].y;
        if (d + 2 < dim) row[d + 2] += y[c].z;
        if (d + 3 < dim) row[d + 3] += y[c].w;
    }
}

// Stages rows [p0, p0 + count) of a sequence (batch rows rows[base + p]) of one head of x
// (n, nh, dim) into sh (count × DP, zeros past dim and past last), as 128 threads.
template <int DP>
__device__ __forceinline__ void stage_rows(float* sh, const float* x, const int* rows, int base, int p0, int count, int last,
                                           int nh, int h, int dim) {
    for (int e = threadIdx.x; e < count * DP; e += blockDim.x) {
        int j = e / DP, d = e % DP, p = p0 + j;
        sh[e] = p < last && d < dim ? x[((size_t)rows[base + p] * nh + h) * dim + d] : 0.f;
    }
}

// Walks the keys 0 … kend − 1 of a query tile (kv head g of k and v staged through shared memory,
// KT rows at a time) and calls f(krow, s, dp) for every key t ≤ p of this thread's query: krow the
// key's staged row, s = qv·k_t (qv already scaled), dp = dov·v_t.
template <int DP, int TPK, int KT, typename F>
__device__ __forceinline__ void walk_keys(float* Ks, float* Vs, const float4 (&qv)[4], const float4 (&dov)[4], const float* k,
                                          const float* v, const int* rows, int base, int kend, int p, int kv_heads, int g,
                                          int dim, int sl, F f) {
    for (int t0 = 0; t0 < kend; t0 += KT) {
        int n = min(KT, kend - t0);
        stage_rows<DP>(Ks, k, rows, base, t0, n, kend, kv_heads, g, dim);
        stage_rows<DP>(Vs, v, rows, base, t0, n, kend, kv_heads, g, dim);
        __syncthreads();
        for (int j = 0; j < n; j++) {
            float s = row_sum<TPK>(dot16<TPK>(qv, Ks + j * DP, sl));
            float dp = row_sum<TPK>(dot16<TPK>(dov, Vs + j * DP, sl));
            if (t0 + j <= p) f(Ks + j * DP, s, dp);  // keys past this query are skipped after the shuffles
        }
        __syncthreads();  // the tile is consumed before the next one overwrites it
    }
}

// ---- kernels ----

template <int DP>
__device__ void attention_backward_rows(float* dq, float* lse, float* delta, const float* q, const float* k, const float* v,
                                        const float* dout, const int* rows, const int* tiles, int heads, int kv_heads, int dim,
                                        float scale) {
    constexpr int TPK = DP / 16, KT = 4096 / DP;
    __shared__ __align__(16) float Ks[KT * DP];
    __shared__ __align__(16) float Vs[KT * DP];
    const int* tile = tiles + 4 * blockIdx.x;
    int base = tile[0], p0 = tile[1], count = tile[2];
    int h = blockIdx.y, g = h / (heads / kv_heads);
    int r = threadIdx.x / TPK, sl = threadIdx.x % TPK;
    bool valid = r < count;
    int p = p0 + (valid ? r : 0);  // a padding row repeats the first query and writes nothing
    int i = rows[base + p];
    float4 qv[4], dov[4], dqv[4];
    load16<TPK>(qv, q + ((size_t)i * heads + h) * dim, dim, sl, scale);
    load16<TPK>(dov, dout + ((size_t)i * heads + h) * dim, dim, sl, 1.f);
    int kend = p0 + count;  // keys 0 … the tile's last query

    // Pass 1: L and δ, online (key 0 comes first, so m is finite after it).
    float m = -INFINITY, l = 0.f, dsum = 0.f;
    walk_keys<DP, TPK, KT>(Ks, Vs, qv, dov, k, v, rows, base, kend, p, kv_heads, g, dim, sl, [&](const float*, float s, float dp) {
        float mn = fmaxf(m, s), c = expf(m - mn), e = expf(s - mn);
        l = l * c + e;
        dsum = dsum * c + e * dp;
        m = mn;
    });
    float L = m + logf(l), dl = dsum / l;
    if (valid && sl == 0) lse[(size_t)i * heads + h] = L, delta[(size_t)i * heads + h] = dl;
    if (dq == nullptr) return;

    // Pass 2: dq = Σ_t P_t·(dP_t − δ)·k_t·scale with P_t = e^{s_t − L}.
#pragma unroll
    for (int c = 0; c < 4; c++) dqv[c] = make_float4(0.f, 0.f, 0.f, 0.f);
    walk_keys<DP, TPK, KT>(Ks, Vs, qv, dov, k, v, rows, base, kend, p, kv_heads, g, dim, sl, [&](const float* krow, float s, float dp) {
        axpy16<TPK>(dqv, expf(s - L) * (dp - dl) * scale, krow, sl);
    });
    if (valid) add16<TPK>(dq + ((size_t)i * heads + h) * dim, dqv, dim, sl);
}

template <int DP>
__device__ void attention_backward_keys(float* dk, float* dv, const float* lse, const float* delta, const float* q, const float* k,
                                        const float* v, const float* dout, const int* rows, const int* tiles, int heads, int kv_heads,
                                        int dim, float scale) {
    constexpr int TPK = DP / 16, QT = 4096 / DP;
    __shared__ __align__(16) float Qs[QT * DP];
    __shared__ __align__(16) float Ds[QT * DP];
    __shared__ float Ls[QT], Dl[QT];
    const int* tile = tiles + 4 * blockIdx.x;
    int base = tile[0], p0 = tile[1], count = tile[2], len = tile[3];
    int g = blockIdx.y, group = heads / kv_heads;
    int r = threadIdx.x / TPK, sl = threadIdx.x % TPK;
    bool valid = r < count;
    int pj = p0 + (valid ? r : 0);
    int j = rows[base + pj];
    float4 kv4[4], vv[4], dkv[4], dvv[4];
    load16<TPK>(kv4, k + ((size_t)j * kv_heads + g) * dim, dim, sl, 1.f);
    load16<TPK>(vv, v + ((size_t)j * kv_heads + g) * dim, dim, sl, 1.f);
#pragma unroll
    for (int c = 0; c < 4; c++) dkv[c] = dvv[c] = make_float4(0.f, 0.f, 0.f, 0.f);

    // Queries from the tile's first key to the end of the sequence; earlier ones see none of its keys.
    for (int q0 = p0; q0 < len; q0 += QT) {
        int n = min(QT, len - q0);
        for (int hh = 0; hh < group; hh++) {
            int h = g * group + hh;
            stage_rows<DP>(Qs, q, rows, base, q0, n, len, heads, h, dim);
            stage_rows<DP>(Ds, dout, rows, base, q0, n, len, heads, h, dim);
            if (threadIdx.x < n) {
                size_t at = (size_t)rows[base + q0 + threadIdx.x] * heads + h;
                Ls[threadIdx.x] = lse[at], Dl[threadIdx.x] = delta[at];
            }
            __syncthreads();
            for (int qi = 0; qi < n; qi++) {
                float s = row_sum<TPK>(dot16<TPK>(kv4, Qs + qi * DP, sl)) * scale;
                float dp = row_sum<TPK>(dot16<TPK>(vv, Ds + qi * DP, sl));
                if (q0 + qi < pj) continue;  // this query comes before the key
                float pr = expf(s - Ls[qi]);
                axpy16<TPK>(dvv, pr, Ds + qi * DP, sl);
                axpy16<TPK>(dkv, pr * (dp - Dl[qi]) * scale, Qs + qi * DP, sl);
            }
            __syncthreads();
        }
    }
    if (!valid) return;
    if (dk != nullptr) add16<TPK>(dk + ((size_t)j * kv_heads + g) * dim, dkv, dim, sl);
    if (dv != nullptr) add16<TPK>(dv + ((size_t)j * kv_heads + g) * dim, dvv, dim, sl);
}

#define BACKWARD_ENTRIES(D)                                                                                                          \
    extern "C" __global__ void __launch_bounds__(128) attention_backward_rows_f32_d##D(                                              \
        float* dq, float* lse, float* delta, const float* q, const float* k, const float* v, const float* dout, const int* rows,     \
        const int* tiles, int heads, int kv_heads, int dim, float scale) {                                                           \
        attention_backward_rows<D>(dq, lse, delta, q, k, v, dout, rows, tiles, heads, kv_heads, dim, scale);                         \
    }                                                                                                                                \
    extern "C" __global__ void __launch_bounds__(128) attention_backward_keys_f32_d##D(                                              \
        float* dk, float* dv, const float* lse, const float* delta, const float* q, const float* k, const float* v, const float* dout, \
        const int* rows, const int* tiles, int heads, int kv_heads, int dim, float scale) {                                          \
        attention_backward_keys<D>(dk, dv, lse, delta, q, k, v, dout, rows, tiles, heads, kv_heads, dim, scale);                     \
    }
BACKWARD_ENTRIES(64)
BACKWARD_ENTRIES(128)
BACKWARD_ENTRIES(256)

// Block (h, i): p[i, h, ·] over the cache, f32 throughout as tensor.CPU.AttentionPattern.
extern "C" __global__ void attention_pattern_f32(float* p, const float* q, const float* kc, const int* ctx, const int* table, int max_blocks,
                                                 int block_size, int heads, int kv_heads, int dim, int pctx, float scale) {
    __shared__ float qs[PATTERN_MAX_D];
    __shared__ float scratch[32];
    int h = blockIdx.x, i = blockIdx.y, g = h / (heads / kv_heads), width = kv_heads * dim, len = ctx[i];
    float* row = p + ((size_t)i * heads + h) * pctx;
    for (int d = threadIdx.x; d < dim; d += blockDim.x) qs[d] = q[((size_t)i * heads + h) * dim + d];
    __syncthreads();
    float m = -INFINITY;
    for (int t = threadIdx.x; t < len; t += blockDim.x) {
        const float* kt = kc + ((size_t)table[(size_t)i * max_blocks + t / block_size] * block_size + t % block_size) * width + g * dim;
        float s = 0.f;
        for (int d = 0; d < dim; d++) s += qs[d] * kt[d];
        row[t] = s * scale;
        m = fmaxf(m, s * scale);
    }
    m = block_max(m, scratch);
    float l = 0.f;
    for (int t = threadIdx.x; t < len; t += blockDim.x) {
        float e = expf(row[t] - m);
        row[t] = e;
        l += e;
    }
    float inv = 1.f / block_sum(l, scratch);
    for (int t = threadIdx.x; t < pctx; t += blockDim.x) row[t] = t < len ? row[t] * inv : 0.f;
}

// Block (h, i): dst[i, h] = Σ_{t < ctx} p[i,h,t]·v_t over the cache, a thread per dim.
extern "C" __global__ void attention_apply_f32(float* dst, const float* p, const float* vc, const int* ctx, const int* table, int max_blocks,
                                               int block_size, int heads, int kv_heads, int dim, int pctx) {
    int h = blockIdx.x, i = blockIdx.y, g = h / (heads / kv_heads), width = kv_heads * dim, len = ctx[i];
    const float* row = p + ((size_t)i * heads + h) * pctx;
    for (int d = threadIdx.x; d < dim; d += blockDim.x) {
        float a = 0.f;
        for (int t = 0; t < len; t++)
            a += row[t] * vc[((size_t)table[(size_t)i * max_blocks + t / block_size] * block_size + t % block_size) * width + g * dim + d];
        dst[((size_t)i * heads + h) * dim + d] = a;
    }
}

// Block (h, i): dp[i, h, t] += dout[i,h]·v_t for t ≤ pos[i], a thread per key.
extern "C" __global__ void attention_apply_backward_rows_f32(float* dp, const float* dout, const float* v, const int* rows, const int* tbase,
                                                             const int* pos, int heads, int kv_heads, int dim, int pctx) {
    __shared__ float ds[PATTERN_MAX_D];
    int h = blockIdx.x, i = blockIdx.y, g = h / (heads / kv_heads);
    for (int d = threadIdx.x; d < dim; d += blockDim.x) ds[d] = dout[((size_t)i * heads + h) * dim + d];
    __syncthreads();
    for (int t = threadIdx.x; t <= pos[i]; t += blockDim.x) {
        const float* vt = v + ((size_t)rows[tbase[i] + t] * kv_heads + g) * dim;
        float s = 0.f;
        for (int d = 0; d < dim; d++) s += ds[d] * vt[d];
        dp[((size_t)i * heads + h) * pctx + t] += s;
    }
}

// Block (g, j): dv[j, g] += Σ_{t ≥ pos_j} Σ_{h in g} p[i_t, h, pos_j]·dout[i_t, h], a thread per dim.
extern "C" __global__ void attention_apply_backward_keys_f32(float* dv, const float* dout, const float* p, const int* rows, const int* tbase,
                                                             const int* pos, const int* tlen, int heads, int kv_heads, int dim, int pctx) {
    int g = blockIdx.x, j = blockIdx.y, group = heads / kv_heads, pj = pos[j];
    for (int d = threadIdx.x; d < dim; d += blockDim.x) {
        float a = 0.f;
        for (int t = pj; t < tlen[j]; t++) {
            int i = rows[tbase[j] + t];
            for (int h = g * group; h < (g + 1) * group; h++)
                a += p[((size_t)i * heads + h) * pctx + pj] * dout[((size_t)i * heads + h) * dim + d];
        }
        dv[((size_t)j * kv_heads + g) * dim + d] += a;
    }
}

// Block (h, i): δ = Σ_{t ≤ pos} p⊙dp (saved for the keys), and dq[i,h] += Σ_t p_t·(dp_t − δ)·k_t·scale.
extern "C" __global__ void attention_pattern_backward_rows_f32(float* dq, float* delta, const float* dp, const float* p, const float* k,
                                                               const int* rows, const int* tbase, const int* pos, int heads, int kv_heads,
                                                               int dim, int pctx, float scale) {
    __shared__ float scratch[32];
    int h = blockIdx.x, i = blockIdx.y, g = h / (heads / kv_heads), len = pos[i] + 1;
    const float* pr = p + ((size_t)i * heads + h) * pctx;
    const float* dpr = dp + ((size_t)i * heads + h) * pctx;
    float s = 0.f;
    for (int t = threadIdx.x; t < len; t += blockDim.x) s += pr[t] * dpr[t];
    float dl = block_sum(s, scratch);
    if (threadIdx.x == 0) delta[(size_t)i * heads + h] = dl;
    if (dq == nullptr) return;
    for (int d = threadIdx.x; d < dim; d += blockDim.x) {
        float a = 0.f;
        for (int t = 0; t < len; t++) a += pr[t] * (dpr[t] - dl) * k[((size_t)rows[tbase[i] + t] * kv_heads + g) * dim + d];
        dq[((size_t)i * heads + h) * dim + d] += a * scale;
    }
}

// Block (g, j): dk[j, g] += Σ_{t ≥ pos_j} Σ_{h in g} p[i_t,h,pos_j]·(dp[i_t,h,pos_j] − δ[i_t,h])·q[i_t,h]·scale.
extern "C" __global__ void attention_pattern_backward_keys_f32(float* dk, const float* delta, const float* dp, const float* p, const float* q,
                                                               const int* rows, const int* tbase, const int* pos, const int* tlen, int heads,
                                                               int kv_heads, int dim, int pctx, float scale) {
    int g = blockIdx.x, j = blockIdx.y, group = heads / kv_heads, pj = pos[j];
    for (int d = threadIdx.x; d < dim; d += blockDim.x) {
        float a = 0.f;
        for (int t = pj; t < tlen[j]; t++) {
            int i = rows[tbase[j] + t];
            for (int h = g * group; h < (g + 1) * group; h++) {
                size_t ih = (size_t)i * heads + h;
                a += p[ih * pctx + pj] * (dp[ih * pctx + pj] - delta[ih]) * q[ih * dim + d];
            }
        }
        dk[((size_t)j * kv_heads + g) * dim + d] += a * scale;
    }
}
