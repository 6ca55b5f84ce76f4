// Elementwise ops on f32 activations.
//
// CPU references: tensor.CPU.SiLUMul (dst = silu(gate) ⊙ up, silu(x) = x / (1 + e^−x)) and
// tensor.CPU.Add (dst = a + b). Shapes: flat arrays of n elements; dst may alias an input (each
// element is read before it is written, by the same thread).
// Memory traffic: 3 · n · 4 bytes each; bandwidth-bound, and latency-bound at decode sizes.
//
// silu_mul_backward_f32 — the backward of y = silu(g)⊙u (tensor.CPU.SiLUMulBackward), added into
// the gradients (either may be null, then not computed), with σ = 1/(1 + e^−g):
//   dg += dy⊙u⊙σ⊙(1 + g⊙(1 − σ));   du += dy⊙silu(g)
// Traffic: 7 · n · 4 bytes (dy, g, u read; dg, du read and written).
#include "common.cuh"

// ---- kernels ----

extern "C" __global__ void silu_mul_f32(float* dst, const float* gate, const float* up, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        float g = gate[i];
        // expf(−g) overflows to inf for g < −88: g / inf = −0, the right limit.
        dst[i] = g / (1.f + expf(-g)) * up[i];
    }
}

extern "C" __global__ void add_f32(float* dst, const float* a, const float* b, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) dst[i] = a[i] + b[i];
}

extern "C" __global__ void silu_mul_backward_f32(float* dgate, float* dup, const float* dy, const float* gate, const float* up, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        float g = gate[i], s = 1.f / (1.f + expf(-g));  // s = 0 for g < −88: both terms vanish
        if (dgate != nullptr) dgate[i] += dy[i] * up[i] * s * (1.f + g * (1.f - s));
        if (dup != nullptr) dup[i] += dy[i] * g * s;
    }
}
