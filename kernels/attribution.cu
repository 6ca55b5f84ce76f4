// The reductions and writes of attribution patching on the device, so that only scores and metric
// values cross to the host.
//
// atp_scores_f64 — AtP's per-node products (attrib.analysis.score, the CPU path):
//   out[j, h] = Σ_{e in node h} (corrupt[krow_j, e] − clean[crow_j, e]) · grad[crow_j, e]
// over node rows j (a clean batch row crow_j, the corrupt batch row krow_j that patches it), nodes
// of chunk values each (a head of d_head, or the whole row). Activations and gradients are f32
// (n, width); each difference and product is formed in f64 as the CPU forms it, and summed in f64:
// the difference of two nearly equal activations loses nothing, whatever the sum's order. Block
// (h, j), 128 threads strided over the node's elements, the partial sums added in thread order
// through shared memory (the same bits every run). Traffic: 12 bytes per element, once.
//
// patch_rows_f32 — activation patching: x[dst_j, c] = value[src_j, c] for c in [lo, hi), the
// columns of the patched heads (or the whole row). Block j, threads over the columns.
//
// metric_logits_f32 — what a metric reads of a row of logits: the values at cols (ncols per row)
// and, when lse is not null, log Σ_v e^{x_v}: the max, then e^{x − max} in f32 (within 2 ulp, each
// term in (0, 1]) summed in f64 per thread and in thread order across the block, so the result is
// within ~1e-7 of the CPU's all-f64 value (f64's exp costs a stack frame here). Block per row; reads
// the row twice (128256 logits: 0.5 MB, from L2 the second time).
//
// atp_qk_rows_f64 + atp_qk_keys_f64 — AtP*'s QK fix of one layer (attrib/star.go, qkLayer): from
// the clean and patched (corrupt, at the clean position) queries and keys after RoPE and the
// metric's gradient at the pattern dA. For query token i at position p and head h, over the keys
// t ≤ p of its sequence, s_t = qc_i·kc_t·scale, A = softmax(s), base = Σ_t A_t·dA_t:
//   qout[i, h] = Σ_t softmax_t(qd_i·kc_t·scale)·dA_t − base                 (i patched)
//   contrib[i, h, t] = Σ_u softmax_u(s with s_t = qc_i·kd_t·scale)·dA_u − base   (t patched)
//   kout[j, g] = Σ_{h in g} Σ_{queries i at or after j} contrib[i, h, pos_j]
// The sums over u ≠ t of e^{s_u − m} and of e^{s_u − m}·dA_u come from prefix and suffix sums
// (thread 0, in order), never as the total minus term t, which a dominant key would cancel; the
// exponentials are f32 (within 2 ulp, each in (0, 1]) and every sum f64, as the CPU's are. Rows
// block (h, i), 128 threads over the keys: 2·(p + 1) dot products of D (3 where i is patched);
// contexts up to QK_MAX_CTX positions (the launcher refuses longer). Keys block (g, j), one
// thread summing its column of contrib in the CPU's order.
#include "common.cuh"

#define RED_THREADS 128
#define QK_MAX_CTX 2048  // positions the QK fix takes per query: e and e·dA as f64 in shared memory
#define QK_MAX_D 256

// ---- device helpers ----

// Sum of one double per thread of a RED_THREADS block, added in thread order; every thread gets it.
__device__ __forceinline__ double block_sum_ordered(double v, double* scratch) {
    scratch[threadIdx.x] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        double s = 0;
        for (int i = 0; i < RED_THREADS; i++) s += scratch[i];
        scratch[RED_THREADS] = s;
    }
    __syncthreads();
    double s = scratch[RED_THREADS];
    __syncthreads();
    return s;
}

// q·k_row·scale for a query staged in shared memory and key row row of kv head g.
__device__ __forceinline__ float qk_logit(const float* q, const float* k, int row, int kv_heads, int g, int dim, float scale) {
    const float* kr = k + ((size_t)row * kv_heads + g) * dim;
    float a = 0.f;
    for (int d = 0; d < dim; d++) a += q[d] * kr[d];
    return a * scale;
}

// ---- kernels ----

extern "C" __global__ void __launch_bounds__(RED_THREADS) atp_scores_f64(double* out, const float* clean, const float* corrupt, const float* grad,
                                                                          const int* crow, const int* krow, int width, int chunk) {
    __shared__ double scratch[RED_THREADS + 1];
    int h = blockIdx.x, j = blockIdx.y;
    size_t c = (size_t)crow[j] * width + (size_t)h * chunk, k = (size_t)krow[j] * width + (size_t)h * chunk;
    double s = 0;
    for (int e = threadIdx.x; e < chunk; e += RED_THREADS)
        s += ((double)corrupt[k + e] - (double)clean[c + e]) * (double)grad[c + e];
    s = block_sum_ordered(s, scratch);
    if (threadIdx.x == 0) out[(size_t)j * gridDim.x + h] = s;
}

extern "C" __global__ void patch_rows_f32(float* x, const float* value, const int* dst, const int* src, int width, int lo, int hi) {
    int j = blockIdx.x;
    float* to = x + (size_t)dst[j] * width;
    const float* from = value + (size_t)src[j] * width;
    for (int c = lo + threadIdx.x; c < hi; c += blockDim.x) to[c] = from[c];
}

extern "C" __global__ void __launch_bounds__(RED_THREADS) metric_logits_f32(float* vals, double* lse, const float* logits, const int* cols,
                                                                             int ncols, int vocab) {
    __shared__ double scratch[RED_THREADS + 1];
    __shared__ float fscratch[32];
    int r = blockIdx.x;
    const float* row = logits + (size_t)r * vocab;
    for (int c = threadIdx.x; c < ncols; c += RED_THREADS) vals[(size_t)r * ncols + c] = row[cols[(size_t)r * ncols + c]];
    if (lse == nullptr) return;
    float m = -INFINITY;
    for (int v = threadIdx.x; v < vocab; v += RED_THREADS) m = fmaxf(m, row[v]);
    m = block_max(m, fscratch);
    double s = 0;
    for (int v = threadIdx.x; v < vocab; v += RED_THREADS) s += (double)expf(row[v] - m);
    s = block_sum_ordered(s, scratch);
    if (threadIdx.x == 0) lse[r] = (double)m + log(s);
}
// Block (h, i): AtP*'s QK fix for query token i at head h (g = h / group), over the keys t ≤ p of
// its sequence (p = pos[i], key t at batch row rows[tbase[i] + t]). qc, qd (n, heads, D) and kc, kd
// (n, kv_heads, D) are the clean and patched queries and keys after RoPE, dA (n, heads, pctx) the
// metric's gradient at the pattern. changed (n) flags the tokens whose own q and k are patched.
extern "C" __global__ void __launch_bounds__(RED_THREADS) atp_qk_rows_f64(double* qout, double* contrib, const float* qc, const float* kc,
                                                                           const float* qd, const float* kd, const float* dA, const int* changed,
                                                                           const int* rows, const int* tbase, const int* pos, int heads,
                                                                           int kv_heads, int dim, int pctx, float scale) {
    __shared__ float qs[QK_MAX_D], qds[QK_MAX_D], s[QK_MAX_CTX];
    __shared__ double ex[QK_MAX_CTX], wx[QK_MAX_CTX], scratch[RED_THREADS + 1];
    __shared__ float fscratch[32];
    int h = blockIdx.x, i = blockIdx.y, g = h / (heads / kv_heads), len = pos[i] + 1;
    const float* da = dA + ((size_t)i * heads + h) * pctx;
    const int* row = rows + tbase[i];
    for (int d = threadIdx.x; d < dim; d += RED_THREADS) {
        qs[d] = qc[((size_t)i * heads + h) * dim + d];
        qds[d] = qd[((size_t)i * heads + h) * dim + d];
    }
    __syncthreads();
    // The clean row: logits, the max, e^{s−m} and e^{s−m}·dA, and base = Σ A·dA.
    float m = -INFINITY;
    for (int t = threadIdx.x; t < len; t += RED_THREADS) {
        s[t] = qk_logit(qs, kc, row[t], kv_heads, g, dim, scale);
        m = fmaxf(m, s[t]);
    }
    m = block_max(m, fscratch);
    double z = 0, sw = 0;
    for (int t = threadIdx.x; t < len; t += RED_THREADS) {
        ex[t] = (double)expf(s[t] - m);
        wx[t] = ex[t] * da[t];
        z += ex[t], sw += wx[t];
    }
    z = block_sum_ordered(z, scratch);
    sw = block_sum_ordered(sw, scratch);
    double base = sw / z;

    // The query node: the whole row's softmax with the patched query (its logits formed twice,
    // for the max and for the sums, rather than kept).
    if (changed[i]) {
        float m2 = -INFINITY;
        for (int t = threadIdx.x; t < len; t += RED_THREADS) m2 = fmaxf(m2, qk_logit(qds, kc, row[t], kv_heads, g, dim, scale));
        m2 = block_max(m2, fscratch);
        double z2 = 0, sw2 = 0;
        for (int t = threadIdx.x; t < len; t += RED_THREADS) {
            double e = (double)expf(qk_logit(qds, kc, row[t], kv_heads, g, dim, scale) - m2);
            z2 += e, sw2 += e * da[t];
        }
        z2 = block_sum_ordered(z2, scratch);
        sw2 = block_sum_ordered(sw2, scratch);
        if (threadIdx.x == 0) qout[(size_t)i * heads + h] = sw2 / z2 - base;
    }

    // Key nodes: one logit of the row changes. Σ_{u≠t} of e and of e·dA from prefix and suffix sums
    // (thread 0, in order), never the total minus term t, which a dominant key would cancel.
    __syncthreads();
    if (threadIdx.x == 0) {
        double se = 0, sx = 0;
        for (int t = len - 1; t >= 0; t--) {
            double e = ex[t], w = wx[t];
            ex[t] = se, wx[t] = sx;  // now the sums over u > t
            se += e, sx += w;
        }
        double pe = 0, px = 0;
        for (int t = 0; t < len; t++) {
            double e = (double)expf(s[t] - m);
            ex[t] += pe, wx[t] += px;  // now the sums over u ≠ t
            pe += e, px += e * da[t];
        }
    }
    __syncthreads();
    double* out = contrib + ((size_t)i * heads + h) * pctx;
    for (int t = threadIdx.x; t < len; t += RED_THREADS) {
        double c = 0;
        if (changed[row[t]]) {
            float st = qk_logit(qs, kd, row[t], kv_heads, g, dim, scale), m2 = fmaxf(m, st);
            double shift = (double)expf(m - m2), et = (double)expf(st - m2);
            c = (et * da[t] + wx[t] * shift) / (ex[t] * shift + et) - base;
        }
        out[t] = c;
    }
}

// Block (g, j), one thread: kout[j, g] = Σ_{h in g} Σ_{queries i at or after j} contrib[i, h, pos_j],
// heads outer and queries in position order, as the CPU sums.
extern "C" __global__ void atp_qk_keys_f64(double* kout, const double* contrib, const int* rows, const int* tbase, const int* pos,
                                           const int* tlen, int heads, int kv_heads, int pctx) {
    int g = blockIdx.x, j = blockIdx.y, group = heads / kv_heads, pj = pos[j];
    if (threadIdx.x != 0) return;
    double a = 0;
    for (int h = g * group; h < (g + 1) * group; h++)
        for (int t = pj; t < tlen[j]; t++) a += contrib[((size_t)rows[tbase[j] + t] * heads + h) * pctx + pj];
    kout[(size_t)j * kv_heads + g] = a;
}
