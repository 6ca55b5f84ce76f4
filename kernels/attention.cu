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
// attention_decode_gqa_{f32,bf16}_d{128,256} — for tokens that are not prefill tiles, over an f32 or bf16
// cache: kernels/attention_decode.cuh (grouped-query heads sharing one read of the cache, work
// that follows each token's position, a fixed order of summation per row).
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

#include "attention_decode.cuh"

// ---- kernels ----

#define DECODE_GQA_ENTRY(NAME, KV, DP)                                                                              \
    extern "C" __global__ void __launch_bounds__(ADG_WARPS * 32)                                                   \
        NAME(float* out, float* part_acc, float* part_ml, int* count, const float* q, KV* kc, KV* vc, const int* pos, \
             const int* table, int stride, int block_size, int heads, int kv_heads, int dim, float scale) {          \
        attention_decode_gqa<KV, false, DP>(out, part_acc, part_ml, count, q, nullptr, nullptr, kc, vc, pos, table,   \
                                            stride, block_size, nullptr, heads, kv_heads, dim, scale);                \
    }
DECODE_GQA_ENTRY(attention_decode_gqa_f32_d128, float, 128)
DECODE_GQA_ENTRY(attention_decode_gqa_f32_d256, float, 256)
DECODE_GQA_ENTRY(attention_decode_gqa_bf16_d128, bf16, 128)
DECODE_GQA_ENTRY(attention_decode_gqa_bf16_d256, bf16, 256)

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

#define FA_ROWS 64    // (query, head) rows per block, 16 per warp
#define FA_KEYS 64    // keys per tile
#define FA_STAGES 3   // key and value tiles in flight in the bf16-cache kernel

// ---- device helpers of the tensor-core prefill ----

// FARows is what one lane of a tensor-core prefill block keeps: its two rows of the C fragments
// (ra, rb), their context lengths, the largest context of the warp, the Q fragments, the output
// accumulators and the online softmax's running max and sum per row.
template <int DP>
struct FARows {
    int ra, rb, len_a, len_b, wmax;
    uint32_t qf[DP / 16][4];
    float o[DP / 8][4];
    float m_a, m_b, l_a, l_b;
};

// fa_setup fills a lane's FARows and returns kmax, the largest context of the block: Q (f32) is
// rounded to bf16 through the staging buffer Qs (FA_ROWS × LD) into A fragments, 16 dims each.
template <int DP>
__device__ __forceinline__ int fa_setup(FARows<DP>& f, bf16* Qs, int* kmax_s, const float* q, const int* ctx, int r0, int rows,
                                        int group, int heads, int kvh, int dim) {
    constexpr int LD = DP + 8, C4 = DP / 4;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2;
    // This lane's two rows of the C fragments, and their context lengths (a padding row past the
    // last query attends to position 0 and is not written).
    f.ra = r0 + warp * 16 + g, f.rb = f.ra + 8;
    f.len_a = f.ra < rows ? ctx[f.ra / group] : 1, f.len_b = f.rb < rows ? ctx[f.rb / group] : 1;
    f.wmax = max(f.len_a, f.len_b);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) f.wmax = max(f.wmax, __shfl_xor_sync(0xffffffffu, f.wmax, o));
    if (threadIdx.x == 0) *kmax_s = 0;
    for (int e = threadIdx.x; e < FA_ROWS * C4; e += 128) {
        int lr = e / C4, d = (e % C4) * 4, r = r0 + lr;
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (r < rows && d < dim) v = *(const float4*)(q + ((size_t)(r / group) * heads + kvh * group + r % group) * dim + d);
        *(uint2*)(Qs + lr * LD + d) = make_uint2(pack2(v.x, v.y, bf16()), pack2(v.z, v.w, bf16()));
    }
    __syncthreads();
    if (lane == 0) atomicMax(kmax_s, f.wmax);
#pragma unroll
    for (int ks = 0; ks < DP / 16; ks++) ldmatrix_x4(f.qf[ks], Qs + (warp * 16 + (lane & 15)) * LD + ks * 16 + (lane >> 4) * 8);
#pragma unroll
    for (int j = 0; j < DP / 8; j++) f.o[j][0] = f.o[j][1] = f.o[j][2] = f.o[j][3] = 0.f;
    f.m_a = f.m_b = -INFINITY, f.l_a = f.l_b = 0.f;
    __syncthreads();
    return *kmax_s;
}

// fa_tile is one warp's work on a tile of keys t0…t0+63 held in shared memory as bf16 (rows of LD
// elements; zeros past kmax, so that p = 0 meets finite values):
//   S (16 × 64) = Q·Kᵀ: mma.sync m16n8k16, Q fragments held in registers for the whole walk, K
//     fragments by ldmatrix (keys are rows, D contiguous: the B operand);
//   masking (key ≥ ctx of the row → −inf) only in tiles that reach past a row's context;
//   online softmax in f32 on the C fragments: each row lives in a quad of 4 lanes, so its max is
//     two shuffles; s is scaled by scale·log2 e (sl2) and exponentiated with exp2;
//   O (16 × D) += P·V: P's C fragments, rounded to bf16, are the A fragments of the next mma as
//     they are (two 8-key C tiles form one 16-key A tile), V fragments by ldmatrix.trans.
// A warp whose 16 rows all end before the tile skips it (warp-uniform).
template <int DP>
__device__ __forceinline__ void fa_tile(FARows<DP>& f, const bf16* Ks, const bf16* Vs, int t0, float sl2) {
    constexpr int LD = DP + 8;
    if (t0 >= f.wmax) return;
    int lane = threadIdx.x & 31, t = lane & 3;
    // ldmatrix row addresses within a tile. K (B of Q·Kᵀ, keys as rows): lanes 0–7 keys 0–7 at
    // dims 0–7, 8–15 the same keys at dims 8–15, 16–31 keys 8–15: b0, b1 of two 8-key tiles.
    // V (B of P·V with .trans, keys as rows): lanes 0–7 keys 0–7, 8–15 keys 8–15 at dims 0–7,
    // 16–31 the same at dims 8–15: b0, b1 of two 8-dim tiles.
    int k_row = (lane & 7) + ((lane >> 4) << 3), k_col = ((lane >> 3) & 1) * 8;
    int v_row = (lane & 7) + (((lane >> 3) & 1) << 3), v_col = (lane >> 4) * 8;
    float s[FA_KEYS / 8][4];
#pragma unroll
    for (int j = 0; j < FA_KEYS / 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < DP / 16; ks++)
#pragma unroll
        for (int jj = 0; jj < FA_KEYS / 16; jj++) {
            uint32_t r[4];
            ldmatrix_x4(r, Ks + (jj * 16 + k_row) * LD + ks * 16 + k_col);
            mma16816<bf16>(s[2 * jj], f.qf[ks], r[0], r[1]);
            mma16816<bf16>(s[2 * jj + 1], f.qf[ks], r[2], r[3]);
        }
    bool whole = t0 + FA_KEYS <= min(f.len_a, f.len_b);
    float mx_a = f.m_a, mx_b = f.m_b;
#pragma unroll
    for (int j = 0; j < FA_KEYS / 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            s[j][e] *= sl2;
            if (!whole && t0 + j * 8 + 2 * t + (e & 1) >= (e < 2 ? f.len_a : f.len_b)) s[j][e] = -INFINITY;
        }
#pragma unroll
    for (int j = 0; j < FA_KEYS / 8; j++) mx_a = fmaxf(mx_a, fmaxf(s[j][0], s[j][1])), mx_b = fmaxf(mx_b, fmaxf(s[j][2], s[j][3]));
    mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 1));
    mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 2));
    mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 1));
    mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 2));
    // Finite: position 0 is in every row's context and in the first tile. exp2(−inf) = 0
    // rescales the empty start, and masked scores give p = 0.
    float c_a = exp2f(f.m_a - mx_a), c_b = exp2f(f.m_b - mx_b);
    f.m_a = mx_a, f.m_b = mx_b;
    f.l_a *= c_a, f.l_b *= c_b;
#pragma unroll
    for (int j = 0; j < DP / 8; j++) f.o[j][0] *= c_a, f.o[j][1] *= c_a, f.o[j][2] *= c_b, f.o[j][3] *= c_b;
#pragma unroll
    for (int j = 0; j < FA_KEYS / 8; j++) {
        s[j][0] = exp2f(s[j][0] - f.m_a), s[j][1] = exp2f(s[j][1] - f.m_a);
        s[j][2] = exp2f(s[j][2] - f.m_b), s[j][3] = exp2f(s[j][3] - f.m_b);
        f.l_a += s[j][0] + s[j][1], f.l_b += s[j][2] + s[j][3];
    }
#pragma unroll
    for (int kk = 0; kk < FA_KEYS / 16; kk++) {
        uint32_t a[4] = {pack2(s[2 * kk][0], s[2 * kk][1], bf16()), pack2(s[2 * kk][2], s[2 * kk][3], bf16()),
                         pack2(s[2 * kk + 1][0], s[2 * kk + 1][1], bf16()), pack2(s[2 * kk + 1][2], s[2 * kk + 1][3], bf16())};
#pragma unroll
        for (int jj = 0; jj < DP / 16; jj++) {
            uint32_t r[4];
            ldmatrix_x4_trans(r, Vs + (kk * 16 + v_row) * LD + jj * 16 + v_col);
            mma16816<bf16>(f.o[2 * jj], a, r[0], r[1]);
            mma16816<bf16>(f.o[2 * jj + 1], a, r[2], r[3]);
        }
    }
}

// fa_store writes O / l of the lane's two rows (padding rows past the last query are not written).
template <int DP>
__device__ __forceinline__ void fa_store(FARows<DP>& f, float* out, int rows, int group, int heads, int kvh, int dim) {
    int t = threadIdx.x & 3;
    // l: each lane summed its own columns; the quad's four lanes hold the row between them.
    f.l_a += __shfl_xor_sync(0xffffffffu, f.l_a, 1);
    f.l_a += __shfl_xor_sync(0xffffffffu, f.l_a, 2);
    f.l_b += __shfl_xor_sync(0xffffffffu, f.l_b, 1);
    f.l_b += __shfl_xor_sync(0xffffffffu, f.l_b, 2);
    float inv_a = 1.f / f.l_a, inv_b = 1.f / f.l_b;
    float* oa = out + ((size_t)(f.ra / group) * heads + kvh * group + f.ra % group) * dim;
    float* ob = out + ((size_t)(f.rb / group) * heads + kvh * group + f.rb % group) * dim;
#pragma unroll
    for (int j = 0; j < DP / 8; j++) {
        int d = j * 8 + 2 * t;  // D % 4 == 0: d < D covers d + 1 too
        if (d < dim) {
            if (f.ra < rows) *(float2*)(oa + d) = make_float2(f.o[j][0] * inv_a, f.o[j][1] * inv_a);
            if (f.rb < rows) *(float2*)(ob + d) = make_float2(f.o[j][2] * inv_b, f.o[j][3] * inv_b);
        }
    }
}

// ---- the tensor-core prefill kernels ----

// attention_prefill_mma: an f32 cache, read through registers and rounded to bf16 into shared
// memory tile by tile (the next tile's loads wait for the current tile's arithmetic).
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
    FARows<DP> f;
    int kmax = fa_setup<DP>(f, Ks, &kmax_s, q, ctx, r0, rows, group, heads, kvh, dim);
    const int* tab = table + (size_t)(r0 / group) * max_blocks;  // every query of the block shares it
    float sl2 = scale * 1.4426950408889634f;  // scores in log2 units: exp(x·scale) = 2^(x·sl2)

    for (int t0 = 0; t0 < kmax; t0 += FA_KEYS) {
        // The tile: K and V rows t0…t0+63 (zeros past kmax).
#pragma unroll
        for (int i0 = 0; i0 < LOADS; i0 += 2) {
            float4 kx[2], vx[2];
#pragma unroll
            for (int i = 0; i < 2; i++) {
                int e = threadIdx.x + 128 * (i0 + i), j = e / C4, d = (e % C4) * 4, pos = t0 + j;
                kx[i] = vx[i] = make_float4(0.f, 0.f, 0.f, 0.f);
                if (pos < kmax && d < dim) {
                    size_t off = ((size_t)tab[pos / block_size] * block_size + pos % block_size) * width + kvh * dim + d;
                    kx[i] = *(const float4*)(kc + off);
                    vx[i] = *(const float4*)(vc + off);
                }
            }
#pragma unroll
            for (int i = 0; i < 2; i++) {
                int e = threadIdx.x + 128 * (i0 + i), j = e / C4, d = (e % C4) * 4;
                *(uint2*)(Ks + j * LD + d) = make_uint2(pack2(kx[i].x, kx[i].y, bf16()), pack2(kx[i].z, kx[i].w, bf16()));
                *(uint2*)(Vs + j * LD + d) = make_uint2(pack2(vx[i].x, vx[i].y, bf16()), pack2(vx[i].z, vx[i].w, bf16()));
            }
        }
        __syncthreads();
        fa_tile<DP>(f, Ks, Vs, t0, sl2);
        __syncthreads();  // the tile is consumed before the next one overwrites it
    }
    fa_store<DP>(f, out, rows, group, heads, kvh, dim);
}

// attention_prefill_fa: a bf16 cache, its tiles copied by cp.async straight into shared memory
// FA_STAGES deep (FlashAttention-2's pipeline): while a tile is multiplied the next two are on
// their way, one barrier per tile.
template <int DP>
__device__ void attention_prefill_fa(float* out, const float* q, const bf16* kc, const bf16* vc, const int* ctx,
                                     const int* table, int n, int max_blocks, int block_size, int heads, int kv_heads,
                                     int dim, float scale) {
    constexpr int LD = DP + 8;
    constexpr int KV_TILE = FA_KEYS * LD;       // elements of one K (or V) tile
    constexpr int CH = DP / 8;                  // 16-byte chunks per row
    constexpr int CPT = FA_KEYS * CH / 128;     // chunks of K (and of V) per thread per tile
    DYNAMIC_SMEM(fa_smem);
    bf16* tiles = (bf16*)fa_smem;  // stage s: K at 2s·KV_TILE, V at (2s + 1)·KV_TILE
    __shared__ int kmax_s;
    int group = heads / kv_heads, kvh = blockIdx.y, width = kv_heads * dim, rows = n * group;
    int r0 = (gridDim.x - 1 - blockIdx.x) * FA_ROWS;  // the longest blocks first
    FARows<DP> f;
    int kmax = fa_setup<DP>(f, tiles, &kmax_s, q, ctx, r0, rows, group, heads, kvh, dim);
    const int* tab = table + (size_t)(r0 / group) * max_blocks;
    float sl2 = scale * 1.4426950408889634f;
    int tiles_n = (kmax + FA_KEYS - 1) / FA_KEYS;

    // load queues tile t's copies (zeros past kmax or past the last tile) as one cp.async group.
    auto load = [&](int t) {
        bf16* K = tiles + (size_t)(t % FA_STAGES) * 2 * KV_TILE;
        bf16* V = K + KV_TILE;
#pragma unroll
        for (int i = 0; i < CPT; i++) {
            int e = threadIdx.x + 128 * i, j = e / CH, d = (e % CH) * 8, pos = t * FA_KEYS + j;
            bool live = t < tiles_n && pos < kmax && d < dim;
            size_t off = live ? ((size_t)tab[pos / block_size] * block_size + pos % block_size) * width + kvh * dim + d : 0;
            cp_async16(K + j * LD + d, kc + off, live ? 16 : 0);
            cp_async16(V + j * LD + d, vc + off, live ? 16 : 0);
        }
        cp_async_commit();
    };
#pragma unroll
    for (int t = 0; t < FA_STAGES - 1; t++) load(t);
    for (int t = 0; t < tiles_n; t++) {
        cp_async_wait<FA_STAGES - 2>();  // this thread's copies of tile t have landed
        __syncthreads();                 // everyone's have, and everyone is done with tile t − 1
        load(t + FA_STAGES - 1);         // into the stage tile t − 1 used
        const bf16* K = tiles + (size_t)(t % FA_STAGES) * 2 * KV_TILE;
        fa_tile<DP>(f, K, K + KV_TILE, t * FA_KEYS, sl2);
    }
    cp_async_wait<0>();
    fa_store<DP>(f, out, rows, group, heads, kvh, dim);
}

// FN over a cache of KV, for D ≤ DP.
#define PREFILL_TC_ENTRY(NAME, FN, KV, DP)                                                                         \
    extern "C" __global__ void __launch_bounds__(128) NAME(                                                        \
        float* out, const float* q, const KV* kc, const KV* vc, const int* ctx, const int* table, int n,          \
        int max_blocks, int block_size, int heads, int kv_heads, int dim, float scale) {                          \
        FN<DP>(out, q, kc, vc, ctx, table, n, max_blocks, block_size, heads, kv_heads, dim, scale);               \
    }
PREFILL_TC_ENTRY(attention_prefill_mma_bf16_d64, attention_prefill_mma, float, 64)
PREFILL_TC_ENTRY(attention_prefill_mma_bf16_d128, attention_prefill_mma, float, 128)
PREFILL_TC_ENTRY(attention_prefill_fa_kvbf16_d64, attention_prefill_fa, bf16, 64)
PREFILL_TC_ENTRY(attention_prefill_fa_kvbf16_d128, attention_prefill_fa, bf16, 128)
