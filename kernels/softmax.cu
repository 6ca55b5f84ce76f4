// Row softmax, in place.
//
// CPU reference: tensor.CPU.Softmax: x[i] = exp(x[i] − max) / Σ exp(x[i] − max); subtracting the
// row maximum keeps every exp finite. Shapes: x (rows, d) f32. One block per row: a block max,
// then exp and a block sum, then a rescale (three passes over the row; it stays in L1/L2).
// Memory traffic: ~3 reads and 2 writes of the row; used for sampling distributions.
#include "common.cuh"

// ---- kernels ----

extern "C" __global__ void softmax_f32(float* x, int d) {
    __shared__ float scratch[32];
    float* row = x + (size_t)blockIdx.x * d;
    float m = -INFINITY;
    for (int k = threadIdx.x; k < d; k += blockDim.x) m = fmaxf(m, row[k]);
    m = block_max(m, scratch);
    float s = 0.f;
    for (int k = threadIdx.x; k < d; k += blockDim.x) {
        float e = expf(row[k] - m);
        row[k] = e;
        s += e;
    }
    s = block_sum(s, scratch);
    float inv = 1.f / s;
    for (int k = threadIdx.x; k < d; k += blockDim.x) row[k] *= inv;
}
