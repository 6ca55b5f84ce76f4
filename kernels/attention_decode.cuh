// Decode attention with grouped-query heads sharing one read of the cache, for any batch of
// tokens each over its own sequence (included by attention.cu and decode.cu).
//
// CPU reference: tensor.CPU.Attention: for token i at position pos[i] and query head h, with kv
// head g = h / (heads / kv_heads) and ctx = pos[i] + 1,
//   out[i, h] = Σ_{j < ctx} softmax_j(q[i,h]·k_j · scale) v_j
// where k_j, v_j are cache rows table[i·stride + j / bs]·bs + j % bs (f32 or bf16, widened exactly).
// With ROPE (the decode step, decode.cu) q and this token's k are rotated here (rope_f32's formula)
// and the block holding pos writes k and v, rounded to the cache's type, into its row, using them
// as the cache will hold them; without it (attention.cu) RoPE and StoreKV ran before.
// Shapes: q (n, heads, D) f32; k, v (n, kv_heads, D) f32 (ROPE); kc, vc (rows, kv_heads, D);
// pos (n) int32 on the device, < 0 for an idle row (no work; zeros out); table (n, stride) int32;
// out (n, heads·D) f32; part_acc (n, heads, 32, D), part_ml (n, heads, 32, 2) scratch; count
// (n, gridDim.y) int32, zero between launches. D ≤ 256: entry points for D ≤ 128 (*_d128: fewer
// registers, more blocks per SM) and D ≤ 256 (*_d256).
//
// Work that scales with the position: a token's context is cut into ⌈ctx / C⌉ ≤ 32 chunks of
// C = 64·⌈⌈ctx/64⌉/32⌉ positions — a function of ctx alone, so a row's result does not depend on
// the rest of the batch (batch invariance) — and block (p, y, i) takes chunk p of token i; blocks
// past the last chunk return at once. The grid is (32, kv_heads·⌈G/8⌉, n) whatever the
// contexts, so a captured step stays valid as they grow, and work follows the actual positions.
//
// GQA: a block serves up to 8 query heads of one kv head (G = heads / kv_heads; larger groups take
// several blocks): each key and value row is read once for all of them. 4 warps walk the chunk in
// tiles of 32 positions, 8 per warp, every lane loading its 4-element slots of the 8 rows before
// using any; scores are warp sums; the softmax is online over tiles with the block-wide running
// max m per head, each warp keeping its own l and acc over its positions (all rescaled by the
// same e^{m_old − m_new}), added in warp order at the end of the chunk. A chunk leaves (m, l, acc);
// the last of a token's chunks to finish (an atomic count) merges them in chunk order:
//   out = Σ_p e^{m_p − M} acc_p / Σ_p e^{m_p − M} l_p;
// a context of one chunk writes acc / l directly (the same bits). Every sum has a fixed order.
//
// Memory traffic: ctx · kv_width · (4 or 2) · 2 bytes of cache per token, once for all heads of a
// group; partials 2·chunks·heads·(D + 2)·4 bytes per token when ctx > 64.
#pragma once
#include "common.cuh"

#define ADG_MAXP 32                       // most chunks of one context
#define ADG_WARPS 4
#define ADG_PER_WARP 8                    // positions per warp per tile
#define ADG_TILE (ADG_WARPS * ADG_PER_WARP)
#define ADG_MAXG 8                        // query heads per block
#define ADG_MAX_D 256                     // entry points are compiled for D ≤ 128 and D ≤ 256 (DP)

// ---- device helpers ----

// adg_chunk is the chunk length of a context of ctx positions.
__device__ __forceinline__ int adg_chunk(int ctx) {
    int tiles = (ctx + 63) / 64;
    return 64 * ((tiles + ADG_MAXP - 1) / ADG_MAXP);
}

// adg_load4 reads elements e…e+3 of a cache row (as f32; zeros past dim): one 16-byte (f32) or
// 8-byte (bf16) load when vec (dim % 4 == 0, so every row slot is aligned).
__device__ __forceinline__ void adg_load4(const float* r, int e, int dim, bool vec, float (&o)[4]) {
    if (vec && e < dim) {
        float4 v = *(const float4*)(r + e);
        o[0] = v.x, o[1] = v.y, o[2] = v.z, o[3] = v.w;
        return;
    }
#pragma unroll
    for (int c = 0; c < 4; c++) o[c] = e + c < dim ? r[e + c] : 0.f;
}
__device__ __forceinline__ void adg_load4(const bf16* r, int e, int dim, bool vec, float (&o)[4]) {
    if (vec && e < dim) {
        uint2 v = *(const uint2*)(r + e);
        o[0] = bf16_lo(v.x), o[1] = bf16_hi(v.x), o[2] = bf16_lo(v.y), o[3] = bf16_hi(v.y);
        return;
    }
#pragma unroll
    for (int c = 0; c < 4; c++) o[c] = e + c < dim ? to_f32(r[e + c]) : 0.f;
}

// adg_rows loads this lane's slots of a warp's 8 positions from the cache c (row offsets rowoff),
// the appended position from cur in shared memory, zeros for dead positions and past dim.
template <typename KV, int SLOTS>
__device__ __forceinline__ void adg_rows(float (&kv)[ADG_PER_WARP][SLOTS][4], const KV* c, const float* cur, const size_t (&rowoff)[ADG_PER_WARP],
                                         const bool (&live)[ADG_PER_WARP], const bool (&iscur)[ADG_PER_WARP], int slots, int dim, bool vec) {
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int u = 0; u < ADG_PER_WARP; u++)
#pragma unroll
        for (int s = 0; s < SLOTS; s++) {
            int e = 4 * lane + 128 * s;
            if (s < slots && live[u] && !iscur[u]) {
                adg_load4(c + rowoff[u], e, dim, vec, kv[u][s]);
            } else {
#pragma unroll
                for (int k = 0; k < 4; k++) kv[u][s][k] = iscur[u] && s < slots && e + k < dim ? cur[e + k] : 0.f;
            }
        }
}

// adg_round is x as a cache of type KV holds it, and adg_store writes it there.
__device__ __forceinline__ float adg_round(float x, float) { return x; }
__device__ __forceinline__ float adg_round(float x, bf16) { return __uint_as_float((uint32_t)f32_to_bf16_bits(x) << 16); }
__device__ __forceinline__ void adg_store(float* p, float x) { *p = x; }
__device__ __forceinline__ void adg_store(bf16* p, float x) { p->bits = f32_to_bf16_bits(x); }

// DP (128 or 256) bounds D; a lane holds DP / 128 slots of 4 elements: e = 4·lane + 128·slot + c.
template <typename KV, bool ROPE, int DP>
__device__ void attention_decode_gqa(float* out, float* part_acc, float* part_ml, int* count, const float* q,
                                     const float* knew, const float* vnew, KV* kc, KV* vc, const int* pos_p,
                                     const int* table, int stride, int block_size, const float* inv_freq, int heads,
                                     int kv_heads, int dim, float scale) {
    constexpr int ADG_SLOTS = DP / 128;
    __shared__ __align__(16) float qs[ADG_MAXG][DP];  // scaled (and rotated) queries
    __shared__ __align__(16) float red[ADG_MAXG][DP];  // the warps' acc, summed in warp order
    __shared__ __align__(16) float kcur[DP], vcur[DP];
    __shared__ float cs[DP / 2], sn[DP / 2];
    __shared__ float ps[ADG_MAXG][ADG_TILE];  // a tile's scores, then its weights
    __shared__ float mtile[ADG_MAXG], lred[ADG_MAXG];
    __shared__ int last;
    pdl_wait();
    pdl_trigger();
    const int p = blockIdx.x, i = blockIdx.z;
    const int group = heads / kv_heads, subs = (group + ADG_MAXG - 1) / ADG_MAXG;
    const int g = blockIdx.y / subs, sub = blockIdx.y % subs;
    const int h0 = g * group + sub * ADG_MAXG, hn = min(ADG_MAXG, group - sub * ADG_MAXG);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int width = kv_heads * dim, pos = pos_p[i];
    const bool vec = dim % 4 == 0;
    float* o = out + ((size_t)i * heads + h0) * dim;
    if (pos < 0) {
        if (p == 0)
            for (int e = threadIdx.x; e < hn * dim; e += blockDim.x) o[e] = 0.f;
        return;
    }
    const int ctx = pos + 1, clen = adg_chunk(ctx), chunks = (ctx + clen - 1) / clen;
    if (p >= chunks) return;
    const int start = p * clen, end = min(start + clen, ctx);
    const int* tab = table + (size_t)i * stride;
    const bool holds = ROPE && end == ctx;  // this chunk holds pos: the new key and value

    // Queries (and, holding pos, the new key and value) into shared memory.
    const float* qi = q + ((size_t)i * heads + h0) * dim;
    if (ROPE) {
        const int half = dim / 2;
        const float fp = (float)pos;
        for (int e = threadIdx.x; e < half; e += blockDim.x) {
            float s, c;
            sincosf(inv_freq[e] * fp, &s, &c);
            sn[e] = s, cs[e] = c;
        }
        __syncthreads();
        for (int t = threadIdx.x; t < hn * half; t += blockDim.x) {
            int h = t / half, e = t % half;
            float a = qi[h * dim + e], b = qi[h * dim + e + half], c = cs[e], s = sn[e];
            float r0 = a * c - b * s, r1 = b * c + a * s;  // rope_f32's rounding, then the scale
            qs[h][e] = r0 * scale, qs[h][e + half] = r1 * scale;
        }
        if (holds) {
            const float* kg = knew + ((size_t)i * kv_heads + g) * dim;
            const float* vg = vnew + ((size_t)i * kv_heads + g) * dim;
            for (int e = threadIdx.x; e < half; e += blockDim.x) {
                float a = kg[e], b = kg[e + half], c = cs[e], s = sn[e];
                kcur[e] = adg_round(a * c - b * s, KV()), kcur[e + half] = adg_round(b * c + a * s, KV());
            }
            for (int e = threadIdx.x; e < dim; e += blockDim.x) vcur[e] = adg_round(vg[e], KV());
        }
    } else {
        for (int t = threadIdx.x; t < hn * dim; t += blockDim.x) qs[t / dim][t % dim] = qi[t] * scale;
    }
    __syncthreads();
    if (holds && sub == 0) {  // the cache row of pos, once per kv head; no block of this launch reads it
        size_t r = ((size_t)tab[pos / block_size] * block_size + pos % block_size) * width + (size_t)g * dim;
        for (int e = threadIdx.x; e < dim; e += blockDim.x) adg_store(kc + r + e, kcur[e]), adg_store(vc + r + e, vcur[e]);
    }

    float m[ADG_MAXG], lw[ADG_MAXG], acc[ADG_MAXG][ADG_SLOTS][4];
#pragma unroll
    for (int h = 0; h < ADG_MAXG; h++) {
        m[h] = -INFINITY, lw[h] = 0.f;
#pragma unroll
        for (int s = 0; s < ADG_SLOTS; s++)
#pragma unroll
            for (int c = 0; c < 4; c++) acc[h][s][c] = 0.f;
    }
    const int slots = (dim + 127) / 128;

    for (int t0 = start; t0 < end; t0 += ADG_TILE) {
        // This warp's 8 positions: every key slot loaded before any is used.
        float kv[ADG_PER_WARP][ADG_SLOTS][4];
        size_t rowoff[ADG_PER_WARP];
        bool live[ADG_PER_WARP], cur[ADG_PER_WARP];
#pragma unroll
        for (int u = 0; u < ADG_PER_WARP; u++) {
            int j = t0 + warp * ADG_PER_WARP + u;
            live[u] = j < end;
            cur[u] = holds && j == pos;
            rowoff[u] = live[u] && !cur[u] ? ((size_t)tab[j / block_size] * block_size + j % block_size) * width + (size_t)g * dim : 0;
        }
        adg_rows<KV, ADG_SLOTS>(kv, kc, kcur, rowoff, live, cur, slots, dim, vec);
#pragma unroll
        for (int h = 0; h < ADG_MAXG; h++) {
            if (h >= hn) break;
#pragma unroll
            for (int u = 0; u < ADG_PER_WARP; u++) {
                float s = 0.f;
#pragma unroll
                for (int sl = 0; sl < ADG_SLOTS; sl++) {
                    int e = 4 * lane + 128 * sl;
                    if (sl < slots)
#pragma unroll
                        for (int c = 0; c < 4; c++)
                            if (e + c < dim) s += qs[h][e + c] * kv[u][sl][c];
                }
                s = warp_sum(s);
                if (lane == 0) ps[h][warp * ADG_PER_WARP + u] = live[u] ? s : -INFINITY;
            }
        }
        __syncthreads();
        // The tile's max per head: warp w reduces heads w, w + 4.
        for (int h = warp; h < hn; h += ADG_WARPS) {
            float v = warp_max(ps[h][lane]);
            if (lane == 0) mtile[h] = v;
        }
        __syncthreads();
        float alpha[ADG_MAXG];
#pragma unroll
        for (int h = 0; h < ADG_MAXG; h++) {
            float mn = h < hn ? fmaxf(m[h], mtile[h]) : 0.f;
            alpha[h] = h < hn ? expf(m[h] - mn) : 0.f;  // e^{−inf} = 0 before the first tile
            m[h] = mn;
        }
        for (int t = threadIdx.x; t < hn * ADG_TILE; t += blockDim.x) {
            int h = t / ADG_TILE;
            float mh = 0.f;
#pragma unroll
            for (int hh = 0; hh < ADG_MAXG; hh++)
                if (hh == h) mh = m[hh];
            ps[h][t % ADG_TILE] = expf(ps[h][t % ADG_TILE] - mh);  // e^{−inf} = 0 past end
        }
        // Values of the same positions, loaded while the weights are written.
        adg_rows<KV, ADG_SLOTS>(kv, vc, vcur, rowoff, live, cur, slots, dim, vec);
        __syncthreads();
#pragma unroll
        for (int h = 0; h < ADG_MAXG; h++) {
            if (h >= hn) break;
            float l = lw[h] * alpha[h];
#pragma unroll
            for (int s = 0; s < ADG_SLOTS; s++)
#pragma unroll
                for (int c = 0; c < 4; c++) acc[h][s][c] *= alpha[h];
#pragma unroll
            for (int u = 0; u < ADG_PER_WARP; u++) {
                float w = ps[h][warp * ADG_PER_WARP + u];
                l += w;
#pragma unroll
                for (int s = 0; s < ADG_SLOTS; s++)
#pragma unroll
                    for (int c = 0; c < 4; c++) acc[h][s][c] += w * kv[u][s][c];
            }
            lw[h] = l;
        }
        __syncthreads();  // ps is rewritten by the next tile
    }

    // The warps' sums, added in warp order.
    for (int w = 0; w < ADG_WARPS; w++) {
        if (warp == w) {
#pragma unroll
            for (int h = 0; h < ADG_MAXG; h++) {
                if (h >= hn) break;
#pragma unroll
                for (int s = 0; s < ADG_SLOTS; s++)
#pragma unroll
                    for (int c = 0; c < 4; c++) {
                        int e = 4 * lane + 128 * s + c;
                        if (e < dim) red[h][e] = w == 0 ? acc[h][s][c] : red[h][e] + acc[h][s][c];
                    }
                if (lane == 0) lred[h] = w == 0 ? lw[h] : lred[h] + lw[h];
            }
        }
        __syncthreads();
    }
    if (chunks == 1) {
        for (int t = threadIdx.x; t < hn * dim; t += blockDim.x) o[t] = red[t / dim][t % dim] / lred[t / dim];
        return;
    }
    for (int t = threadIdx.x; t < hn * dim; t += blockDim.x) {
        size_t slot = ((size_t)i * heads + h0 + t / dim) * ADG_MAXP + p;
        part_acc[slot * dim + t % dim] = red[t / dim][t % dim];
    }
    if (threadIdx.x < hn) {  // thread h writes head h's (m, l); every thread holds every m
        size_t slot = ((size_t)i * heads + h0 + threadIdx.x) * ADG_MAXP + p;
        float mh = 0.f;
#pragma unroll
        for (int hh = 0; hh < ADG_MAXG; hh++)
            if (hh == (int)threadIdx.x) mh = m[hh];
        part_ml[2 * slot] = mh, part_ml[2 * slot + 1] = lred[threadIdx.x];
    }

    // The last chunk of this token and head group to finish merges them (threadFenceReduction).
    __threadfence();
    __syncthreads();
    int* cnt = count + (size_t)i * gridDim.y + blockIdx.y;
    if (threadIdx.x == 0) last = atomicAdd(cnt, 1) == chunks - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    for (int t = threadIdx.x; t < hn * dim; t += blockDim.x) {
        int h = t / dim, e = t % dim;
        const float* ml = part_ml + 2 * ((size_t)i * heads + h0 + h) * ADG_MAXP;
        const float* pa = part_acc + ((size_t)i * heads + h0 + h) * ADG_MAXP * dim + e;
        float M = -INFINITY;
        for (int r = 0; r < chunks; r++) M = fmaxf(M, load_l2(ml + 2 * r));
        float L = 0.f, a = 0.f;
        for (int r = 0; r < chunks; r++) {
            float w = expf(load_l2(ml + 2 * r) - M);
            L += w * load_l2(ml + 2 * r + 1);
            a += w * load_l2(pa + (size_t)r * dim);
        }
        o[t] = a / L;
    }
    if (threadIdx.x == 0) *cnt = 0;  // every chunk of this launch has counted
}
