// Greedy sampling on the device, and the position update of a device-resident decode loop.
//
// CPU reference: llama.argmax: the index of the largest value, the lowest index on a tie (NaN
// never wins). Shapes: x (rows, d) f32; out (rows) int32. One block per row; each thread keeps
// its best (value, index), then a warp and a block reduction pick the best of those.
//
// advance_i32 moves a decode loop of one sequence on by one token without the host: pos += 1,
// ctx = pos + 1, row = the KV-cache row of pos through the block table (table[pos / bs]·bs +
// pos % bs), and hist[pos] = tok (the token argmax just chose, which the next step reads at pos),
// so that a captured CUDA graph can be replayed token after token.
#include "common.cuh"

// ---- device helpers ----

// better reports whether (v, i) beats (bv, bi): larger value, or equal value and lower index.
__device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
    return v > bv || (v == bv && i < bi);
}

// ---- kernels ----

extern "C" __global__ void argmax_f32(int* out, const float* x, int d) {
    __shared__ float sv[32];
    __shared__ int si[32];
    const float* row = x + (size_t)blockIdx.x * d;
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int k = threadIdx.x; k < d; k += blockDim.x)
        if (better(row[k], k, bv, bi)) bv = row[k], bi = k;
    for (int o = 16; o > 0; o >>= 1) {
        float v = __shfl_xor_sync(0xffffffffu, bv, o);
        int i = __shfl_xor_sync(0xffffffffu, bi, o);
        if (better(v, i, bv, bi)) bv = v, bi = i;
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) sv[warp] = bv, si[warp] = bi;
    __syncthreads();
    if (warp == 0) {
        int warps = blockDim.x >> 5;
        bv = lane < warps ? sv[lane] : -INFINITY;
        bi = lane < warps ? si[lane] : 0x7fffffff;
        for (int o = 16; o > 0; o >>= 1) {
            float v = __shfl_xor_sync(0xffffffffu, bv, o);
            int i = __shfl_xor_sync(0xffffffffu, bi, o);
            if (better(v, i, bv, bi)) bv = v, bi = i;
        }
        // A row of NaNs (or −inf) leaves no winner: answer 0, as the CPU's loop does.
        if (lane == 0) out[blockIdx.x] = bi == 0x7fffffff ? 0 : bi;
    }
}

extern "C" __global__ void advance_i32(int* pos, int* ctx, int* row, const int* table, int block_size, const int* tok, int* hist) {
    int p = pos[0] + 1;
    pos[0] = p;
    ctx[0] = p + 1;
    row[0] = table[p / block_size] * block_size + p % block_size;
    hist[p] = tok[0];
}
