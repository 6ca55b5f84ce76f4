// Matrix–vector products for decode: y = x·Wᵀ (+ bias) for n ≤ 8 tokens, streaming W once.
//
// CPU reference: tensor.CPU.MatMul: y[t, r] = Σ_k x[t, k] · w[r, k] + bias[r].
// Shapes: x (n, in) f32; w (out, in) f32/bf16/f16, row-major as Hugging Face stores it; bias
// (out) or null; y (n, out) f32. NT ∈ {1, 2, 4, 8} is the compiled token count (n ≤ NT; rows of
// x past n are staged as zeros and never written).
//
// Memory traffic: out·in·(2 or 4) bytes of weights, read once — the whole cost. For the
// Llama-3.1-8B layer shapes in bf16: q/o 32 MiB, k/v 8 MiB, gate/up/down 112 MiB each,
// lm_head 1002 MiB; at ~3 TB/s a 32 MiB matrix takes ~11 µs. Goal: ≥ 80–90% of the card's
// device-to-device copy bandwidth on the big matrices.
//
// Layout: a block of 4 warps owns 16 consecutive rows, each warp 4 of them. A lane reads 16 bytes
// (8 bf16/f16 or 4 f32) of each of its warp's rows per step, two steps per iteration, so 8
// independent 16-byte loads are in flight per lane; consecutive lanes read consecutive 16-byte
// pieces of a row (512 contiguous bytes per warp and row). x is staged in shared memory as f32,
// in chunks of at most 8192/NT elements per token, and read back as float4. Each lane keeps f32
// partial sums per (row, token); a warp-shuffle reduction finishes them.
//
// Segments: one launch can compute up to three products that share x (q, k and v; gate and up):
// blocks [0, nb0) do segment 0, the next nb1 segment 1, the rest segment 2 (nb = ceil(out/16)).
// SwiGLU form (gemv_swiglu_*): each warp reads the same 4 rows of gate (w0) and up (w1) and
// writes y[t, r] = silu(gate·x) · (up·x) — the MLP's first half in one launch, no (n, ffn)
// round trip through memory for gate and up.
//
// The vector path (vec = 1) needs in to be a multiple of 16 bytes' worth of elements and w, x
// 16-byte aligned; otherwise the launcher passes vec = 0 and lanes read single elements.
#include "common.cuh"

#define GEMV_WARPS 4
#define GEMV_ROWS 4                          // rows per warp
#define GEMV_BLOCK_ROWS (GEMV_WARPS * GEMV_ROWS)
#define GEMV_X_FLOATS 8192                   // shared memory for x: NT · chunk ≤ 8192 floats

// ---- device helpers ----

template <typename W> struct Elems;           // elements per 16-byte load
template <> struct Elems<float> { static const int n = 4; };
template <> struct Elems<bf16> { static const int n = 8; };
template <> struct Elems<f16> { static const int n = 8; };

// dot16 returns Σ_j w_j · x[j] over the elements of one 16-byte load w.
__device__ __forceinline__ float dot16(uint4 w, const float* x, float) {
    float4 a = *(const float4*)x;
    return __uint_as_float(w.x) * a.x + __uint_as_float(w.y) * a.y + __uint_as_float(w.z) * a.z + __uint_as_float(w.w) * a.w;
}
__device__ __forceinline__ float dot16(uint4 w, const float* x, bf16) {
    float4 a = *(const float4*)x, b = *(const float4*)(x + 4);
    return bf16_lo(w.x) * a.x + bf16_hi(w.x) * a.y + bf16_lo(w.y) * a.z + bf16_hi(w.y) * a.w +
           bf16_lo(w.z) * b.x + bf16_hi(w.z) * b.y + bf16_lo(w.w) * b.z + bf16_hi(w.w) * b.w;
}
__device__ __forceinline__ float dot16(uint4 w, const float* x, f16) {
    float4 a = *(const float4*)x, b = *(const float4*)(x + 4);
    return f16_lo(w.x) * a.x + f16_hi(w.x) * a.y + f16_lo(w.y) * a.z + f16_hi(w.y) * a.w +
           f16_lo(w.z) * b.x + f16_hi(w.z) * b.y + f16_lo(w.w) * b.z + f16_hi(w.w) * b.w;
}

// ---- kernels ----

// SWIGLU = false: a warp's 8 loads per iteration are 2 steps × 4 rows of one matrix.
// SWIGLU = true:  they are 1 step × 4 rows of gate (w0) and the same 4 rows of up (w1).
template <typename W, int NT, bool SWIGLU>
__device__ void gemv(const float* __restrict__ x, int n, int in, int vec,
                     const W* w0, const W* b0, float* y0, int out0,
                     const W* w1, const W* b1, float* y1, int out1,
                     const W* w2, const W* b2, float* y2, int out2) {
    extern __shared__ float4 xs4[];
    float* xs = (float*)xs4;
    constexpr int E = Elems<W>::n;
    constexpr int MATS = SWIGLU ? 2 : 1;       // matrices a warp reads
    constexpr int STEPS = SWIGLU ? 1 : 2;      // 16-byte steps along k per iteration

    // Which segment, and which 16 rows of it, this block computes.
    const W *w = w0, *bias = b0, *wu = w1, *biasu = b1;
    float* y = y0;
    int out = out0, blk = blockIdx.x;
    if (!SWIGLU) {
        int nb0 = (out0 + GEMV_BLOCK_ROWS - 1) / GEMV_BLOCK_ROWS, nb1 = (out1 + GEMV_BLOCK_ROWS - 1) / GEMV_BLOCK_ROWS;
        if (blk >= nb0 + nb1) w = w2, bias = b2, y = y2, out = out2, blk -= nb0 + nb1;
        else if (blk >= nb0) w = w1, bias = b1, y = y1, out = out1, blk -= nb0;
    }
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int row0 = blk * GEMV_BLOCK_ROWS + warp * GEMV_ROWS;

    float acc[MATS * GEMV_ROWS][NT];
#pragma unroll
    for (int r = 0; r < MATS * GEMV_ROWS; r++)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[r][t] = 0.f;

    const int chunk = GEMV_X_FLOATS / NT;  // a multiple of 8·32, so vector steps never straddle
    for (int k0 = 0; k0 < in; k0 += chunk) {
        int kc = min(chunk, in - k0);
        __syncthreads();  // the previous chunk's readers are done
        if (vec) {
            int q = kc / 4;
            for (int e = threadIdx.x; e < NT * q; e += blockDim.x) {
                int t = e / q, k = (e - t * q) * 4;
                xs4[e] = t < n ? *(const float4*)(x + (size_t)t * in + k0 + k) : make_float4(0.f, 0.f, 0.f, 0.f);
            }
        } else {
            for (int e = threadIdx.x; e < NT * kc; e += blockDim.x) {
                int t = e / kc, k = e - t * kc;
                xs[e] = t < n ? x[(size_t)t * in + k0 + k] : 0.f;
            }
        }
        __syncthreads();

        if (vec) {
            for (int k = lane * E; k < kc; k += 32 * E * STEPS) {
                uint4 wv[STEPS * MATS * GEMV_ROWS];
                // All loads first, so that they are in flight together.
#pragma unroll
                for (int s = 0; s < STEPS; s++)
#pragma unroll
                    for (int m = 0; m < MATS; m++)
#pragma unroll
                        for (int r = 0; r < GEMV_ROWS; r++) {
                            int kk = k + s * 32 * E, row = row0 + r;
                            const W* src = m == 0 ? w : wu;
                            wv[(s * MATS + m) * GEMV_ROWS + r] =
                                row < out && kk < kc ? load_stream16(src + (size_t)row * in + k0 + kk) : make_uint4(0, 0, 0, 0);
                        }
#pragma unroll
                for (int s = 0; s < STEPS; s++) {
                    int kk = k + s * 32 * E;
                    if (kk >= kc) break;
#pragma unroll
                    for (int m = 0; m < MATS; m++)
#pragma unroll
                        for (int r = 0; r < GEMV_ROWS; r++)
#pragma unroll
                            for (int t = 0; t < NT; t++)
                                acc[m * GEMV_ROWS + r][t] += dot16(wv[(s * MATS + m) * GEMV_ROWS + r], xs + t * kc + kk, W());
                }
            }
        } else {
            for (int k = lane; k < kc; k += 32) {
#pragma unroll
                for (int m = 0; m < MATS; m++)
#pragma unroll
                    for (int r = 0; r < GEMV_ROWS; r++) {
                        int row = row0 + r;
                        const W* src = m == 0 ? w : wu;
                        float wk = row < out ? to_f32(src[(size_t)row * in + k0 + k]) : 0.f;
#pragma unroll
                        for (int t = 0; t < NT; t++) acc[m * GEMV_ROWS + r][t] += wk * xs[t * kc + k];
                    }
            }
        }
    }

#pragma unroll
    for (int r = 0; r < MATS * GEMV_ROWS; r++)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[r][t] = warp_sum(acc[r][t]);
    if (lane != 0) return;
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) {
        int row = row0 + r;
        if (row >= out) continue;
        float bg = bias != nullptr ? to_f32(bias[row]) : 0.f;
        float bu = SWIGLU && biasu != nullptr ? to_f32(biasu[row]) : 0.f;
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (t >= n) break;
            float v = acc[r][t] + bg;
            if (SWIGLU) v = silu(v) * (acc[GEMV_ROWS + r][t] + bu);
            y[(size_t)t * out + row] = v;
        }
    }
}

#define GEMV_ENTRY(NAME, W, NT)                                                                                   \
    extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32) NAME(                                           \
        const float* x, int n, int in, int vec, const W* w0, const W* b0, float* y0, int out0, const W* w1,       \
        const W* b1, float* y1, int out1, const W* w2, const W* b2, float* y2, int out2) {                        \
        gemv<W, NT, false>(x, n, in, vec, w0, b0, y0, out0, w1, b1, y1, out1, w2, b2, y2, out2);                 \
    }
#define SWIGLU_ENTRY(NAME, W, NT)                                                                                 \
    extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32) NAME(                                           \
        const float* x, int n, int in, int vec, const W* wg, const W* bg, const W* wu, const W* bu, float* y,     \
        int out) {                                                                                                \
        gemv<W, NT, true>(x, n, in, vec, wg, bg, y, out, wu, bu, y, out, nullptr, nullptr, nullptr, 0);           \
    }

GEMV_ENTRY(gemv_n1_f32, float, 1)
GEMV_ENTRY(gemv_n2_f32, float, 2)
GEMV_ENTRY(gemv_n4_f32, float, 4)
GEMV_ENTRY(gemv_n8_f32, float, 8)
GEMV_ENTRY(gemv_n1_bf16, bf16, 1)
GEMV_ENTRY(gemv_n2_bf16, bf16, 2)
GEMV_ENTRY(gemv_n4_bf16, bf16, 4)
GEMV_ENTRY(gemv_n8_bf16, bf16, 8)
GEMV_ENTRY(gemv_n1_f16, f16, 1)
GEMV_ENTRY(gemv_n2_f16, f16, 2)
GEMV_ENTRY(gemv_n4_f16, f16, 4)
GEMV_ENTRY(gemv_n8_f16, f16, 8)
SWIGLU_ENTRY(gemv_swiglu_n1_f32, float, 1)
SWIGLU_ENTRY(gemv_swiglu_n2_f32, float, 2)
SWIGLU_ENTRY(gemv_swiglu_n4_f32, float, 4)
SWIGLU_ENTRY(gemv_swiglu_n8_f32, float, 8)
SWIGLU_ENTRY(gemv_swiglu_n1_bf16, bf16, 1)
SWIGLU_ENTRY(gemv_swiglu_n2_bf16, bf16, 2)
SWIGLU_ENTRY(gemv_swiglu_n4_bf16, bf16, 4)
SWIGLU_ENTRY(gemv_swiglu_n8_bf16, bf16, 8)
SWIGLU_ENTRY(gemv_swiglu_n1_f16, f16, 1)
SWIGLU_ENTRY(gemv_swiglu_n2_f16, f16, 2)
SWIGLU_ENTRY(gemv_swiglu_n4_f16, f16, 4)
SWIGLU_ENTRY(gemv_swiglu_n8_f16, f16, 8)
