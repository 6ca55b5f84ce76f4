// Random fill of device memory, for benchmarks at real shapes without uploading gigabytes.
//
// No CPU counterpart (the values only need to be realistic in size, not reproducible by the CPU):
// x[i] = scale · u_i with u_i uniform in [−√3, √3) (unit variance), from a 64-bit hash of
// (seed, i). Shapes: flat arrays of n elements. Memory traffic: n elements written.
#include "common.cuh"

// ---- device helpers ----

// splitmix64's finaliser: a bijective hash whose low 24 bits are close to uniform.
__device__ __forceinline__ float uniform_pm_sqrt3(unsigned long long seed, unsigned long long i) {
    unsigned long long z = seed * 0x9e3779b97f4a7c15ull + i + 0x632be59bd9b4e019ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    float u = (float)(z >> 40) * (1.f / 16777216.f);  // [0, 1)
    return (2.f * u - 1.f) * 1.7320508f;
}

// ---- kernels ----

extern "C" __global__ void random_bf16(bf16* x, unsigned long long n, unsigned long long seed, float scale) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n; i += (unsigned long long)gridDim.x * blockDim.x)
        x[i].bits = f32_to_bf16_bits(scale * uniform_pm_sqrt3(seed, i));
}

extern "C" __global__ void random_f32(float* x, unsigned long long n, unsigned long long seed, float scale) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n; i += (unsigned long long)gridDim.x * blockDim.x)
        x[i] = scale * uniform_pm_sqrt3(seed, i);
}
