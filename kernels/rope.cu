// Rotary position embedding in Hugging Face's half-rotation layout, in place.
//
// CPU reference: tensor.CPU.RoPE. With D = head_dim, h = D/2 and f_k = f32(inv_freq[k] · pos):
//   x'[k]   = x[k]·cos f_k − x[k+h]·sin f_k
//   x'[k+h] = x[k+h]·cos f_k + x[k]·sin f_k
// The angle is rounded to f32 before cos and sin, as HF forms it; sincosf (no fast math) is
// within an ulp or two of the correctly rounded values the CPU uses, also at positions ~1e5.
// Shapes: x (n, heads, D) f32; pos (n) int32; inv_freq (D/2) f32 (Llama 3 scaling already
// applied on the host). One block per token; threads stride over (head, k) pairs.
// Memory traffic: n·heads·D·4 read and written; latency-bound in decode.
//
// rope_backward_f32 — the backward (tensor.CPU.RoPEBackward): RoPE's Jacobian is the rotation by
// +f_k, whose transpose is the rotation by −f_k, applied in place to the gradient (the one backward
// op that overwrites rather than adds). Same angle rule, same layout.
#include "common.cuh"

// ---- kernels ----

// sign = +1 rotates by +f (forward), −1 by −f (backward).
__device__ __forceinline__ void rope(float* x, const int* pos, const float* inv_freq, int heads, int dim, float sign) {
    int i = blockIdx.x, half = dim / 2;
    float p = (float)pos[i];
    float* row = x + (size_t)i * heads * dim;
    for (int idx = threadIdx.x; idx < heads * half; idx += blockDim.x) {
        int h = idx / half, k = idx - h * half;
        float s, c;
        sincosf(inv_freq[k] * p, &s, &c);
        s *= sign;
        float* v = row + h * dim;
        float a = v[k], b = v[k + half];
        v[k] = a * c - b * s;
        v[k + half] = b * c + a * s;
    }
}

extern "C" __global__ void rope_f32(float* x, const int* pos, const float* inv_freq, int heads, int dim) { rope(x, pos, inv_freq, heads, dim, 1.f); }
extern "C" __global__ void rope_backward_f32(float* x, const int* pos, const float* inv_freq, int heads, int dim) { rope(x, pos, inv_freq, heads, dim, -1.f); }
