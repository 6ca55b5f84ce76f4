// Split-K matrix–vector products for decode: y = x·Wᵀ (+ bias) for n ≤ 8 tokens, streaming W
// once, optionally with the residual add and RMSNorm of a decoder block folded into the same
// launch. Compiled for compute_90 (programmatic dependent launch, common.cuh).
//
// CPU reference: tensor.CPU.MatMul: y[t, r] = Σ_k x[t, k] · w[r, k] + bias[r]; with the norm
// (matvec_rms_*): v = x + xb + alpha[0]·steer (xb, steer optional), y[r] = rsqrt(mean(v²) + eps) ·
// Σ_k v[k]·wn[k]·w[r, k] + bias[r] — tensor.CPU.RMSNorm followed by MatMul, since the norm's scale
// is one number per token and comes out of the sum; and xout = v, the updated residual stream,
// written by block 0. The steering term is the CPU's hook add (hooks.Steer at hook_resid_post of
// the layer before, or hook_resid_pre of the layer this launch begins): resid += alpha·v, after
// the residual add, in f32. Only the *_steer_* entry points read alpha and steer; the others are
// compiled without the add, so an unsteered step runs exactly the kernels it ran before.
// Shapes: x, xb, xout, steer (n, in) f32 (steer: one row); alpha (1) f32, in device memory so
// that a captured decode step reads the current strength; w (out, in) f32/bf16/f16, row-major as Hugging Face stores it;
// wn (in) and bias (out) of w's dtype, or null; y (n, out) f32. NT ∈ {1, 2, 4, 8} is the compiled
// token count (n ≤ NT); the norm forms take one token.
//
// Memory traffic: out·in·(2 or 4) bytes of weights, read once — the whole cost; x (and xb, wn) are
// read by every block, from L1 after the first. Llama-3.1-8B in bf16: q/o 32 MiB, k/v 8 MiB,
// gate/up/down 112 MiB each, lm_head 1002 MiB; at ~3 TB/s, 32 MiB take ~11 µs.
//
// Layout (why split-K): a block of 8 warps owns 4 rows (of each matrix) and splits their K range
// among its warps: warp w takes the 16-byte steps w, w+8, w+16, … of every row (a step is 32 lanes
// × 16 bytes = 512 contiguous bytes of a row). Each lane issues 8 independent 16-byte weight loads
// per iteration (2 steps × 4 rows, or 1 step × 4 rows × gate and up) before it uses any. So a
// block streams 4 rows × in elements with 256 threads, and even the 1024-row k/v projections make
// 256 blocks: every GEMV of a decode step fills the 132 SMs of an H100 with ≥ 3 resident blocks
// (≤ 64 registers: 4 blocks, 32 warps, ~128 KiB of loads in flight per SM), where a block of 16
// rows with whole rows per warp left the small ones under one wave. A warp-shuffle and a shared-
// memory reduction over the 8 warps finish each row; the sum order is fixed (deterministic).
//
// Programmatic dependent launch: the first iteration's weight loads are issued before pdl_wait, so
// in a decode step a GEMV's weights start streaming while the kernel before it (attention, the
// previous GEMV's tail) finishes; x and everything written happen after the wait.
//
// Segments: one launch computes up to three products that share x (q, k and v): blocks [0, nb0)
// do segment 0, the next nb1 segment 1, the rest segment 2 (nb = ceil(out/4)). SwiGLU form
// (*_swiglu_*): rows of gate (w0) and up (w1) in the same block, y = silu(gate·x) · (up·x).
//
// The vector path (vec = 1) needs in to be a multiple of a 16-byte load's elements and w, x, xb,
// wn 16-byte aligned; otherwise the launcher passes vec = 0 and lanes read single elements.
#include "common.cuh"

#define MV_WARPS 8
#define MV_THREADS (MV_WARPS * 32)
#define MV_ROWS 4  // rows of each matrix per block

// ---- device helpers ----

template <typename W> struct MVElems;  // elements per 16-byte load
template <> struct MVElems<float> { static const int n = 4; };
template <> struct MVElems<bf16> { static const int n = 8; };
template <> struct MVElems<f16> { static const int n = 8; };

// The activations one 16-byte load of weights meets: 8 for 16-bit weights, 4 (in a) for f32.
struct X8 {
    float4 a, b;
};

template <typename W>
__device__ __forceinline__ X8 load_x(const float* p) {
    X8 v;
    v.a = *(const float4*)p;
    v.b = MVElems<W>::n == 8 ? *(const float4*)(p + 4) : make_float4(0.f, 0.f, 0.f, 0.f);
    return v;
}

__device__ __forceinline__ float4 add4(float4 a, float4 b) { return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w); }
__device__ __forceinline__ float4 mul4(float4 a, float4 b) { return make_float4(a.x * b.x, a.y * b.y, a.z * b.z, a.w * b.w); }
// a·x + y, the steering add.
__device__ __forceinline__ float4 axpy4(float a, float4 x, float4 y) {
    return make_float4(fmaf(a, x.x, y.x), fmaf(a, x.y, y.y), fmaf(a, x.z, y.z), fmaf(a, x.w, y.w));
}
__device__ __forceinline__ float sq4(float4 a) { return a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w; }

// widen turns one 16-byte load of weights into the X8 it multiplies.
__device__ __forceinline__ X8 widen(uint4 w, float) {
    X8 v;
    v.a = make_float4(__uint_as_float(w.x), __uint_as_float(w.y), __uint_as_float(w.z), __uint_as_float(w.w));
    v.b = make_float4(0.f, 0.f, 0.f, 0.f);
    return v;
}
__device__ __forceinline__ X8 widen(uint4 w, bf16) {
    X8 v;
    v.a = make_float4(bf16_lo(w.x), bf16_hi(w.x), bf16_lo(w.y), bf16_hi(w.y));
    v.b = make_float4(bf16_lo(w.z), bf16_hi(w.z), bf16_lo(w.w), bf16_hi(w.w));
    return v;
}
__device__ __forceinline__ X8 widen(uint4 w, f16) {
    X8 v;
    v.a = make_float4(f16_lo(w.x), f16_hi(w.x), f16_lo(w.y), f16_hi(w.y));
    v.b = make_float4(f16_lo(w.z), f16_hi(w.z), f16_lo(w.w), f16_hi(w.w));
    return v;
}

// dot is Σ_j w_j · x_j over one 16-byte load of weights.
template <typename W>
__device__ __forceinline__ float dot(uint4 w, const X8& x) {
    X8 f = widen(w, W());
    float s = f.a.x * x.a.x + f.a.y * x.a.y + f.a.z * x.a.z + f.a.w * x.a.w;
    if (MVElems<W>::n == 8) s += f.b.x * x.b.x + f.b.y * x.b.y + f.b.z * x.b.z + f.b.w * x.b.w;
    return s;
}

// ---- kernels ----

template <typename W, int NT, bool SWIGLU, bool NORM, bool STEER>
__device__ __forceinline__ void matvec(const float* __restrict__ x, const float* __restrict__ xb, const W* __restrict__ wn,
                                       float* __restrict__ xout, const float* __restrict__ alpha, const float* __restrict__ steer,
                                       float eps, int n, int in, int vec,
                                       const W* w0, const W* b0, float* y0, int out0,
                                       const W* w1, const W* b1, float* y1, int out1,
                                       const W* w2, const W* b2, float* y2, int out2) {
    constexpr int E = MVElems<W>::n;
    constexpr int MATS = SWIGLU ? 2 : 1;      // matrices a block reads
    constexpr int U = SWIGLU ? 1 : 2;         // steps along k per iteration: MATS·4·U = 8 loads
    constexpr int L = MATS * MV_ROWS;         // rows a lane accumulates
    constexpr int STEP = 32 * E;              // elements of a row one warp step covers
    __shared__ float red[MV_WARPS][L * NT + 1];

    // Which segment, and which 4 rows of it, this block computes.
    const W *w = w0, *bias = b0, *wu = w1, *biasu = b1;
    float* y = y0;
    int out = out0, blk = blockIdx.x;
    if (!SWIGLU) {
        int nb0 = (out0 + MV_ROWS - 1) / MV_ROWS, nb1 = (out1 + MV_ROWS - 1) / MV_ROWS;
        if (blk >= nb0 + nb1) w = w2, bias = b2, y = y2, out = out2, blk -= nb0 + nb1;
        else if (blk >= nb0) w = w1, bias = b1, y = y1, out = out1, blk -= nb0;
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int row0 = blk * MV_ROWS;

    float acc[L][NT];
#pragma unroll
    for (int i = 0; i < L; i++)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[i][t] = 0.f;
    float ss = 0.f;  // Σ v² over this thread's elements (norm forms)

    if (vec) {
        uint4 wv[U][L];
        // load issues the 8 weight loads of the iteration starting at step s0.
        auto load = [&](int s0) {
#pragma unroll
            for (int u = 0; u < U; u++) {
                int k = (s0 + u * MV_WARPS) * STEP + lane * E;
#pragma unroll
                for (int i = 0; i < L; i++) {
                    int row = row0 + i % MV_ROWS;
                    const W* src = i < MV_ROWS ? w : wu;
                    wv[u][i] = k < in && row < out ? load_stream16(src + (size_t)row * in + k) : make_uint4(0, 0, 0, 0);
                }
            }
        };
        int s0 = warp;
        load(s0);  // weights only: safe before the wait
        pdl_wait();
        pdl_trigger();
        for (; s0 * STEP < in; s0 += MV_WARPS * U) {
            if (s0 != warp) load(s0);
#pragma unroll
            for (int u = 0; u < U; u++) {
                int k = (s0 + u * MV_WARPS) * STEP + lane * E;
                if (k >= in) continue;
#pragma unroll
                for (int t = 0; t < NT; t++) {
                    X8 xv = load_x<W>(x + (size_t)(t < n ? t : 0) * in + k);
                    if (NORM) {
                        if (xb != nullptr) {
                            X8 d = load_x<W>(xb + k);
                            xv.a = add4(xv.a, d.a), xv.b = add4(xv.b, d.b);
                        }
                        if (STEER) {
                            float a = *alpha;
                            X8 d = load_x<W>(steer + k);
                            xv.a = axpy4(a, d.a, xv.a), xv.b = axpy4(a, d.b, xv.b);
                        }
                        ss += sq4(xv.a) + sq4(xv.b);
                        X8 g = widen(load_const16(wn + k), W());
                        xv.a = mul4(xv.a, g.a), xv.b = mul4(xv.b, g.b);
                    }
#pragma unroll
                    for (int i = 0; i < L; i++) acc[i][t] += dot<W>(wv[u][i], xv);
                }
            }
        }
    } else {
        pdl_wait();
        pdl_trigger();
        float a = STEER ? *alpha : 0.f;
        for (int k = warp * 32 + lane; k < in; k += MV_THREADS) {
            float xv[NT];
#pragma unroll
            for (int t = 0; t < NT; t++) xv[t] = x[(size_t)(t < n ? t : 0) * in + k];
            if (NORM) {
                float v = xv[0] + (xb != nullptr ? xb[k] : 0.f);
                if (STEER) v = fmaf(a, steer[k], v);
                ss += v * v;
                xv[0] = v * to_f32(wn[k]);
            }
#pragma unroll
            for (int i = 0; i < L; i++) {
                int row = row0 + i % MV_ROWS;
                const W* src = i < MV_ROWS ? w : wu;
                float wk = row < out ? to_f32(src[(size_t)row * in + k]) : 0.f;
#pragma unroll
                for (int t = 0; t < NT; t++) acc[i][t] += wk * xv[t];
            }
        }
    }

    // The updated residual stream, once per launch (other blocks read x and xb, never xout).
    if (NORM && xout != nullptr && blockIdx.x == 0) {
        float a = STEER ? *alpha : 0.f;
        for (int k = threadIdx.x; k < in; k += MV_THREADS) {
            float v = x[k] + (xb != nullptr ? xb[k] : 0.f);
            if (STEER) v = fmaf(a, steer[k], v);
            xout[k] = v;
        }
    }

#pragma unroll
    for (int i = 0; i < L; i++)
#pragma unroll
        for (int t = 0; t < NT; t++) {
            float v = warp_sum(acc[i][t]);
            if (lane == 0) red[warp][i * NT + t] = v;
        }
    if (NORM) {
        float v = warp_sum(ss);
        if (lane == 0) red[warp][L * NT] = v;
    }
    __syncthreads();
    float scale = 1.f;
    if (NORM) {
        float s = 0.f;
#pragma unroll
        for (int q = 0; q < MV_WARPS; q++) s += red[q][L * NT];
        scale = rsqrtf(s / (float)in + eps);
    }
    for (int j = threadIdx.x; j < MV_ROWS * NT; j += MV_THREADS) {
        int r = j / NT, t = j - r * NT, row = row0 + r;
        if (row >= out || t >= n) continue;
        float g = 0.f;
#pragma unroll
        for (int q = 0; q < MV_WARPS; q++) g += red[q][r * NT + t];
        float v = g * scale + (bias != nullptr ? to_f32(bias[row]) : 0.f);
        if (SWIGLU) {
            float u = 0.f;
#pragma unroll
            for (int q = 0; q < MV_WARPS; q++) u += red[q][(MV_ROWS + r) * NT + t];
            v = silu(v) * (u * scale + (biasu != nullptr ? to_f32(biasu[row]) : 0.f));
        }
        y[(size_t)t * out + row] = v;
    }
}

// One parameter list for every entry point; the SwiGLU forms read gate = w0, up = w1 and write y0.
#define MV_ENTRY(NAME, W, NT, SWIGLU, NORM, STEER)                                                             \
    extern "C" __global__ void __launch_bounds__(MV_THREADS) NAME(                                                     \
        const float* x, const float* xb, const W* wn, float* xout, const float* alpha, const float* steer,             \
        float eps, int n, int in, int vec, const W* w0, const W* b0, float* y0, int out0, const W* w1,                 \
        const W* b1, float* y1, int out1, const W* w2, const W* b2, float* y2, int out2) {                             \
        matvec<W, NT, SWIGLU, NORM, STEER>(x, xb, wn, xout, alpha, steer, eps, n, in, vec, w0, b0, y0, out0, w1, b1, \
                                           y1, out1, w2, b2, y2, out2);                                                \
    }
#define MV_DTYPE(DT, W)                                                  \
    MV_ENTRY(matvec_n1_##DT, W, 1, false, false, false)                  \
    MV_ENTRY(matvec_n2_##DT, W, 2, false, false, false)                  \
    MV_ENTRY(matvec_n4_##DT, W, 4, false, false, false)                  \
    MV_ENTRY(matvec_n8_##DT, W, 8, false, false, false)                  \
    MV_ENTRY(matvec_swiglu_n1_##DT, W, 1, true, false, false)            \
    MV_ENTRY(matvec_swiglu_n2_##DT, W, 2, true, false, false)            \
    MV_ENTRY(matvec_swiglu_n4_##DT, W, 4, true, false, false)            \
    MV_ENTRY(matvec_swiglu_n8_##DT, W, 8, true, false, false)            \
    MV_ENTRY(matvec_rms_n1_##DT, W, 1, false, true, false)               \
    MV_ENTRY(matvec_rms_swiglu_n1_##DT, W, 1, true, true, false)         \
    MV_ENTRY(matvec_rms_steer_n1_##DT, W, 1, false, true, true)          \
    MV_ENTRY(matvec_rms_swiglu_steer_n1_##DT, W, 1, true, true, true)

MV_DTYPE(f32, float)
MV_DTYPE(bf16, bf16)
MV_DTYPE(f16, f16)
