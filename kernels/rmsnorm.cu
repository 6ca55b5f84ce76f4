// RMSNorm, and RMSNorm fused with the residual add (and a steering-vector add).
//
// CPU reference: tensor.CPU.RMSNorm: dst[i] = x[i] · rsqrt(mean(x[i]²) + eps) ⊙ w, in f32.
// Shapes: x, dst (n, d) f32, may alias; w (d) f32/bf16/f16. One block per row: each thread
// accumulates x² over its strided elements, a block reduction gives the mean, then each thread
// rescales the same elements (so dst may alias x: every read of a row precedes the barrier in
// the reduction, every write follows it).
//
// Fused form (residual_rmsnorm_*), one launch instead of two or three in a decode step:
//   resid[i] = (resid[i] + delta[i]) + sdelta[i]   (delta, sdelta optional: null pointers)
//   dst[i]   = rmsnorm(resid[i]) ⊙ w
// sdelta (n, d) f32 is the steering additions of each row (steer.cu's steer_delta_f32): the same
// sums, in the same order, as an add of delta and then steer_add_f32 — and rmsnorm_* on the
// result gives the same bits as this launch, so the fused and the op-by-op forms agree exactly.
//
// Memory traffic: read n·d·4 (x) + d·(2 or 4) (w), write n·d·4; the fused form reads delta and
// writes resid too. Latency-bound in decode (one row of 4096): a few µs, mostly launch.
//
// Backward (rmsnorm_backward_*), the activation gradient only (tensor.CPU.RMSNormBackward with
// dw = nil), added into dx as every backward op does:
//   r = rsqrt(mean(x²) + eps);   dx[i] += r·(w⊙dy[i]) − x[i]·r³·mean(x[i]⊙w⊙dy[i])
// x, dy, dx (n, d) f32; one block per row, both sums in one pass over the row. Traffic: read x and
// dy, read and write dx: 16·n·d bytes (2 MB for 64 tokens of 4096), bandwidth-bound.
#include "common.cuh"

// ---- kernels ----

template <typename W>
__device__ void rmsnorm(float* dst, const float* x, const W* w, int d, float eps) {
    __shared__ float scratch[32];
    const float* xr = x + (size_t)blockIdx.x * d;
    float* out = dst + (size_t)blockIdx.x * d;
    float ss = 0.f;
    for (int k = threadIdx.x; k < d; k += blockDim.x) ss += xr[k] * xr[k];
    ss = block_sum(ss, scratch);
    float scale = rsqrtf(ss / (float)d + eps);
    for (int k = threadIdx.x; k < d; k += blockDim.x) out[k] = xr[k] * scale * to_f32(w[k]);
}

extern "C" __global__ void rmsnorm_f32(float* dst, const float* x, const float* w, int d, float eps) { rmsnorm(dst, x, w, d, eps); }
extern "C" __global__ void rmsnorm_bf16(float* dst, const float* x, const bf16* w, int d, float eps) { rmsnorm(dst, x, w, d, eps); }
extern "C" __global__ void rmsnorm_f16(float* dst, const float* x, const f16* w, int d, float eps) { rmsnorm(dst, x, w, d, eps); }

template <typename W>
__device__ void residual_rmsnorm(float* dst, float* resid, const float* delta, const float* sdelta, const W* w, int d, float eps) {
    __shared__ float scratch[32];
    int i = blockIdx.x;
    float* r = resid + (size_t)i * d;
    float ss = 0.f;
    for (int k = threadIdx.x; k < d; k += blockDim.x) {
        float v = r[k];
        if (delta != nullptr) v += delta[(size_t)i * d + k];
        if (sdelta != nullptr) v += sdelta[(size_t)i * d + k];
        r[k] = v;
        ss += v * v;
    }
    ss = block_sum(ss, scratch);
    float scale = rsqrtf(ss / (float)d + eps);
    float* out = dst + (size_t)i * d;
    for (int k = threadIdx.x; k < d; k += blockDim.x) out[k] = r[k] * scale * to_f32(w[k]);
}

extern "C" __global__ void residual_rmsnorm_f32(float* dst, float* resid, const float* delta, const float* sdelta, const float* w, int d, float eps) { residual_rmsnorm(dst, resid, delta, sdelta, w, d, eps); }
extern "C" __global__ void residual_rmsnorm_bf16(float* dst, float* resid, const float* delta, const float* sdelta, const bf16* w, int d, float eps) { residual_rmsnorm(dst, resid, delta, sdelta, w, d, eps); }
extern "C" __global__ void residual_rmsnorm_f16(float* dst, float* resid, const float* delta, const float* sdelta, const f16* w, int d, float eps) { residual_rmsnorm(dst, resid, delta, sdelta, w, d, eps); }

template <typename W>
__device__ void rmsnorm_backward(float* dx, const float* dy, const float* x, const W* w, int d, float eps) {
    __shared__ float scratch[32];
    size_t row = (size_t)blockIdx.x * d;
    float ss = 0.f, xg = 0.f;  // Σ x², Σ x⊙w⊙dy
    for (int k = threadIdx.x; k < d; k += blockDim.x) {
        float xv = x[row + k];
        ss += xv * xv;
        xg += xv * to_f32(w[k]) * dy[row + k];
    }
    ss = block_sum(ss, scratch);
    xg = block_sum(xg, scratch);
    float r = rsqrtf(ss / (float)d + eps);
    float c = r * r * r * xg / (float)d;
    for (int k = threadIdx.x; k < d; k += blockDim.x) dx[row + k] += r * to_f32(w[k]) * dy[row + k] - x[row + k] * c;
}

extern "C" __global__ void rmsnorm_backward_f32(float* dx, const float* dy, const float* x, const float* w, int d, float eps) { rmsnorm_backward(dx, dy, x, w, d, eps); }
extern "C" __global__ void rmsnorm_backward_bf16(float* dx, const float* dy, const float* x, const bf16* w, int d, float eps) { rmsnorm_backward(dx, dy, x, w, d, eps); }
extern "C" __global__ void rmsnorm_backward_f16(float* dx, const float* dy, const float* x, const f16* w, int d, float eps) { rmsnorm_backward(dx, dy, x, w, d, eps); }
