// Steering additions made on the device: the hook additions of llama.Runner's passes and of the
// decode step's steered points, from the vectors (uploaded once) and each row's strengths.
//
// CPU reference: hooks.Set.At with Steer additions (h += alpha·v per addition, each row with its
// own strength, 0 where an addition does not select the row). Here the additions at one point are
// first summed, in registration order from 0 with one rounding per term,
//   s[i, k] = fma(alpha[T−1][i], v_{T−1}[k], … fma(alpha[0][i], v_0[k], 0)),
// then added: the CPU's order of f32 sums differs when a point has two or more additions.
//
// steer_add_f32   — x (n, d) f32 += s.
// steer_delta_f32 — delta (n, d) f32 = s, for a launch that adds it to the residual stream where
//                   it normalises it (the decode step's residual_rmsnorm and matvec_rms_*).
// vecs: terms device addresses of (d) f32 vectors; alpha (terms, n) f32. Grid-stride over n·d.
// Memory traffic: n·d·4 bytes written (and read, for steer_add), terms·d·4 read (mostly L2).
#include "common.cuh"

// ---- device helpers ----

__device__ __forceinline__ float steer_sum(const float* const* vecs, const float* alpha, int n, int terms, int i, int k) {
    float s = 0.f;
    for (int t = 0; t < terms; t++) s = fmaf(alpha[(size_t)t * n + i], vecs[t][k], s);
    return s;
}

// ---- kernels ----

extern "C" __global__ void steer_add_f32(float* x, const float* const* vecs, const float* alpha, int n, int d, int terms) {
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < (size_t)n * d; e += (size_t)gridDim.x * blockDim.x)
        x[e] += steer_sum(vecs, alpha, n, terms, (int)(e / d), (int)(e % d));
}

extern "C" __global__ void steer_delta_f32(float* delta, const float* const* vecs, const float* alpha, int n, int d, int terms) {
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < (size_t)n * d; e += (size_t)gridDim.x * blockDim.x)
        delta[e] = steer_sum(vecs, alpha, n, terms, (int)(e / d), (int)(e % d));
}
