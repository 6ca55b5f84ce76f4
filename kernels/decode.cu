// Kernels of the device-resident decode step (gpu.Decoder, one token of one sequence per step),
// each fusing what the generic ops do in several launches. Compiled for compute_90: they wait on
// the kernel before them with programmatic dependent launch (common.cuh) and may overlap it.
//
// attention_decode_rope_f32 — RoPE of q and k, KV-cache append and split-KV attention with its
// log-sum-exp merge, in one launch (five before: rope q, rope k, kv_store, attention, combine).
// CPU reference: tensor.CPU.RoPE of q and k at position pos, tensor.CPU.StoreKV, then
// tensor.CPU.Attention of the one query over positions 0…pos:
//   out[h] = Σ_{j ≤ pos} softmax_j(rope(q[h])·k_j · scale) v_j,  k_pos = rope(k[g]), v_pos = v[g]
// with g = h / (heads / kv_heads) and cache row table[j / bs]·bs + j % bs of position j.
// Shapes: q (heads, D), k and v (kv_heads, D) f32 as the q/k/v projection wrote them (k not yet
// rotated); kc, vc (cache rows, kv_heads, D) f32; pos (1) int32 on the device; inv_freq (D/2);
// out (heads·D) f32; part_acc (heads, parts, D) and part_ml (heads, parts, 2) scratch; count
// (heads) int32, zero between launches. D ≤ 256, even.
// Block (p, h) takes positions [32p, 32p + 32) of head h: it rotates q (and, in the block holding
// pos, k) in shared memory with the same f32 angle and sincosf as rope_f32; keys and values of
// positions < pos come from the cache, those of pos from the rotated k and from v (the cache row
// of pos is written by one block per kv head, the first query head of its group, and read by no
// block of this launch). Scores as attention_decode_f32; the values are summed by 4 warps of 8
// positions each with every load of a warp in flight at once, then added across warps. Each block
// leaves (m, l, acc); the last block of a head to finish (an atomic count, reset by that block)
// merges the partitions: out = Σ e^{m_p − M} acc_p / Σ e^{m_p − M} l_p. Partitions past pos
// write only (m = −inf, l = 0). Memory traffic: (pos + 1)·kv_width·4·2 bytes of cache per query
// head (the heads of a group share rows through L2) and the partials; latency-bound at short
// contexts, where it replaces five launches by one.
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

#define AD_WARPS 4
#define AD_PER_WARP 8
#define AD_PART (AD_WARPS * AD_PER_WARP)  // positions per block
#define AD_MAX_D 256
#define AD_LANES (AD_MAX_D / 32)           // head dims per lane

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

extern "C" __global__ void __launch_bounds__(AD_WARPS * 32) attention_decode_rope_f32(
    float* out, float* part_acc, float* part_ml, int* count, const float* q, const float* k, const float* v,
    float* kc, float* vc, const int* pos_p, const int* table, const float* inv_freq, int block_size, int heads,
    int kv_heads, int dim, int parts, float scale) {
    __shared__ float qs[AD_MAX_D], kcur[AD_MAX_D], cs[AD_MAX_D / 2], sn[AD_MAX_D / 2];
    __shared__ float ps[AD_PART];
    __shared__ const float* kptr[AD_PART];
    __shared__ const float* vptr[AD_PART];
    __shared__ float vsum[AD_WARPS][AD_MAX_D];
    __shared__ int last;
    const int p = blockIdx.x, h = blockIdx.y;
    const int group = heads / kv_heads, g = h / group, width = kv_heads * dim, half = dim / 2;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    pdl_wait();
    pdl_trigger();
    const int pos = pos_p[0];
    const int start = p * AD_PART, end = min(start + AD_PART, pos + 1);
    const size_t slot = (size_t)h * parts + p;

    if (start < end) {
        const bool holds_pos = pos < end;  // and start ≤ pos, as start < end ≤ pos + 1
        const float fp = (float)pos;
        for (int i = threadIdx.x; i < half; i += blockDim.x) {
            float s, c;
            sincosf(inv_freq[i] * fp, &s, &c);
            sn[i] = s, cs[i] = c;
        }
        __syncthreads();
        const float* qh = q + (size_t)h * dim;
        const float* kh = k + (size_t)g * dim;
        for (int i = threadIdx.x; i < half; i += blockDim.x) {
            float c = cs[i], s = sn[i];
            float a = qh[i], b = qh[i + half];
            float r0 = a * c - b * s, r1 = b * c + a * s;  // rope_f32's rounding, then the scale
            qs[i] = r0 * scale, qs[i + half] = r1 * scale;
            if (holds_pos) {
                a = kh[i], b = kh[i + half];
                kcur[i] = a * c - b * s, kcur[i + half] = b * c + a * s;
            }
        }
        if (threadIdx.x < AD_PART) {
            int j = start + threadIdx.x;
            const float *kp = kc, *vp = vc;  // never read for j ≥ end
            if (j == pos) {
                kp = kcur, vp = v + (size_t)g * dim;
            } else if (j < end) {
                size_t r = (size_t)table[j / block_size] * block_size + j % block_size;
                kp = kc + r * width + g * dim, vp = vc + r * width + g * dim;
            }
            kptr[threadIdx.x] = kp, vptr[threadIdx.x] = vp;
        }
        __syncthreads();

        // Scores of this warp's 8 positions, lanes along D: every load issued before any is used.
        float s[AD_PER_WARP];
        const float* kp[AD_PER_WARP];
        bool live[AD_PER_WARP];
#pragma unroll
        for (int u = 0; u < AD_PER_WARP; u++) {
            int jj = warp * AD_PER_WARP + u;
            s[u] = 0.f, kp[u] = kptr[jj], live[u] = start + jj < end;
        }
#pragma unroll
        for (int i = 0; i < AD_LANES; i++) {
            int e = lane + 32 * i;
            if (e < dim) {
                float qe = qs[e];
#pragma unroll
                for (int u = 0; u < AD_PER_WARP; u++)
                    if (live[u]) s[u] += qe * kp[u][e];
            }
        }
#pragma unroll
        for (int u = 0; u < AD_PER_WARP; u++) {
            float t = warp_sum(s[u]);
            if (lane == 0) ps[warp * AD_PER_WARP + u] = live[u] ? t : -INFINITY;
        }
        __syncthreads();
        float m = -INFINITY;
#pragma unroll
        for (int j = 0; j < AD_PART; j++) m = fmaxf(m, ps[j]);
        __syncthreads();
        if (threadIdx.x < AD_PART) ps[threadIdx.x] = expf(ps[threadIdx.x] - m);  // exp(−inf) = 0
        __syncthreads();
        float l = 0.f;
#pragma unroll
        for (int j = 0; j < AD_PART; j++) l += ps[j];

        // Values: warp w sums its 8 positions, lanes along D; then the 4 warps' sums are added.
        float a[AD_LANES];
#pragma unroll
        for (int i = 0; i < AD_LANES; i++) a[i] = 0.f;
#pragma unroll
        for (int u = 0; u < AD_PER_WARP; u++) {
            int jj = warp * AD_PER_WARP + u;
            if (!live[u]) continue;
            float pj = ps[jj];
            const float* vr = vptr[jj];
#pragma unroll
            for (int i = 0; i < AD_LANES; i++) {
                int e = lane + 32 * i;
                if (e < dim) a[i] += pj * vr[e];
            }
        }
#pragma unroll
        for (int i = 0; i < AD_LANES; i++) {
            int e = lane + 32 * i;
            if (e < dim) vsum[warp][e] = a[i];
        }
        __syncthreads();
        float* acc = part_acc + slot * dim;
        for (int e = threadIdx.x; e < dim; e += blockDim.x) acc[e] = vsum[0][e] + vsum[1][e] + vsum[2][e] + vsum[3][e];
        if (threadIdx.x == 0) part_ml[2 * slot] = m, part_ml[2 * slot + 1] = l;

        // The current token's key and value into the cache, once per kv head.
        if (holds_pos && h % group == 0) {
            size_t r = ((size_t)table[pos / block_size] * block_size + pos % block_size) * width + g * dim;
            for (int e = threadIdx.x; e < dim; e += blockDim.x) kc[r + e] = kcur[e], vc[r + e] = v[(size_t)g * dim + e];
        }
    } else if (threadIdx.x == 0) {
        part_ml[2 * slot] = -INFINITY, part_ml[2 * slot + 1] = 0.f;
    }

    // The last block of head h to finish merges the partitions (threadFenceReduction pattern).
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(&count[h], 1) == parts - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    const float* ml = part_ml + 2 * (size_t)h * parts;
    float M = -INFINITY;
    for (int r = 0; r < parts; r++) M = fmaxf(M, load_cg(ml + 2 * r));
    float L = 0.f;
    for (int r = 0; r < parts; r++) L += expf(load_cg(ml + 2 * r) - M) * load_cg(ml + 2 * r + 1);
    float inv = 1.f / L;
    for (int e = threadIdx.x; e < dim; e += blockDim.x) {
        float o = 0.f;
        for (int r = 0; r < parts; r++) {
            float w = expf(load_cg(ml + 2 * r) - M);
            if (w != 0.f) o += w * load_cg(part_acc + ((size_t)h * parts + r) * dim + e);
        }
        out[(size_t)h * dim + e] = o * inv;
    }
    if (threadIdx.x == 0) count[h] = 0;  // every block of this launch has counted
}

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
