// Embedding gather: dst[i, :] = f32(table[ids[i], :]).
//
// CPU reference: tensor.CPU.Embedding (widenRow of the table's row ids[i]).
// Shapes: table (vocab, d) f32/bf16/f16; ids (n) int32, already checked against vocab on the host;
// dst (n, d) f32. One block per token; threads stride over d.
// Memory traffic: n·d·(2 or 4) bytes read, n·d·4 written — negligible beside any matmul. The
// runner also uses the f32 variant to gather the rows of the residual stream that produce logits.
//
// embedding_backward_f32 — the backward (tensor.CPU.EmbeddingBackward): dtable[ids[i]] += dy[i],
// summed over repeated ids; with f32 tables it is also the scatter of rows back into a batch.
// Block (x, y) adds columns of ids y·per … y·per + per − 1 in order, a thread per column (grid-
// stride over d). The launcher passes per = 1 (a block per id, all in parallel) when the ids are
// distinct and per = n (every id in one pass, in order) when some repeat, so that no two blocks
// add into one row: no atomics, the same sum order as the CPU, every run the same bits.
#include "common.cuh"

// ---- kernels ----

template <typename T>
__device__ void embedding(float* dst, const T* table, const int* ids, int d) {
    int i = blockIdx.x;
    const T* row = table + (size_t)ids[i] * d;
    float* out = dst + (size_t)i * d;
    for (int k = threadIdx.x; k < d; k += blockDim.x) out[k] = to_f32(row[k]);
}

extern "C" __global__ void embedding_f32(float* dst, const float* table, const int* ids, int d) { embedding(dst, table, ids, d); }
extern "C" __global__ void embedding_bf16(float* dst, const bf16* table, const int* ids, int d) { embedding(dst, table, ids, d); }
extern "C" __global__ void embedding_f16(float* dst, const f16* table, const int* ids, int d) { embedding(dst, table, ids, d); }

extern "C" __global__ void embedding_backward_f32(float* dtable, const float* dy, const int* ids, int n, int d, int per) {
    int first = blockIdx.y * per, last = min(n, first + per);
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < d; k += gridDim.x * blockDim.x)
        for (int i = first; i < last; i++) dtable[(size_t)ids[i] * d + k] += dy[(size_t)i * d + k];
}
