// Elementwise ops on f32 activations.
//
// CPU references: tensor.CPU.SiLUMul (dst = silu(gate) ⊙ up, silu(x) = x / (1 + e^−x)) and
// tensor.CPU.Add (dst = a + b). Shapes: flat arrays of n elements; dst may alias an input (each
// element is read before it is written, by the same thread).
// Memory traffic: 3 · n · 4 bytes each; bandwidth-bound, and latency-bound at decode sizes.
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
