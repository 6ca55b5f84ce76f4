// Matrix products for prefill and large batches: y = x·Wᵀ (+ bias), n > 8 tokens.
//
// CPU reference: tensor.CPU.MatMul: y[t, r] = Σ_k x[t, k] · w[r, k] + bias[r].
// Shapes: x (M = n, K = in) f32; w (N = out, K) f32/bf16/f16; bias (N) or null; y (M, N) f32.
// FLOPs: 2·M·N·K. At 2048 tokens and the Llama-3.1-8B layer shapes this is compute-bound
// (arithmetic intensity ~1000 FLOP/byte); the goal is a large fraction of the card's tensor-core
// rate (measured beside it with a bf16 matmul by bench/peers/hf_baseline.py).
//
// gemm_bf16, gemm_f16 — tensor cores. mma.sync.m16n8k16 with f32 accumulation. x is rounded to
// the weight's 16-bit type when it is staged into shared memory: that rounding (relative 2⁻⁹ for
// bf16) is this kernel's only departure from an f32 product, and the reason its conformance
// tolerance is a bf16 one. Block tile 128 (tokens) × 128 (outputs) × 32 (k), 8 warps as 2 × 4,
// each warp 64 × 32 = 4 × 4 mma tiles. Both operands are k-contiguous in shared memory, so
// ldmatrix without .trans yields the A (row-major) and B (column-major) fragments directly. Rows
// are padded from 32 to 40 elements (80 bytes) so that the 8 row addresses of each ldmatrix phase
// fall in distinct banks. W tiles arrive by cp.async (16 bytes, zero-filled past the edges); x
// tiles go through registers (f32 → 16-bit) — the next tile's loads are issued before the
// current tile's mma so both pipelines overlap (double buffering). Needs K % 8 == 0 and w, x
// 16-byte aligned; the launcher uses gemm_tiled_* otherwise.
//
// gemm_tiled_{f32,bf16,f16} — plain f32 FMA, any shape and alignment: 64 × 64 tiles, k steps of
// 16, each of 256 threads computes 4 × 4 outputs. The f32-weight path and the fallback.
#include "common.cuh"

#define MMA_BM 128
#define MMA_BN 128
#define MMA_BK 32
#define MMA_LD 40  // padded row length in shared memory, elements

// ---- device helpers ----

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

// cp.async of 16 bytes; bytes = 0 writes zeros (the source is not read).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(dst)), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
__device__ __forceinline__ void cp_async_wait1() { asm volatile("cp.async.wait_group 1;" ::: "memory"); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

// c += a·b for one m16n8k16 tile (a: 4 registers, b: 2, c: 4 f32).
template <typename W>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<bf16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<f16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two f32 packed into one 32-bit word of two 16-bit values, lower address (first) in the low half.
__device__ __forceinline__ uint32_t pack2(float lo, float hi, bf16) {
    return (uint32_t)f32_to_bf16_bits(lo) | ((uint32_t)f32_to_bf16_bits(hi) << 16);
}
__device__ __forceinline__ uint32_t pack2(float lo, float hi, f16) {
    return (uint32_t)f32_to_f16_bits(lo) | ((uint32_t)f32_to_f16_bits(hi) << 16);
}

// ---- kernels ----

// Tile loads. A (x): 128 rows × 32 k f32 = 1024 float4, 4 per thread: float4 f = tid + 256·i is
// row f / 8, k (f % 8)·4. B (w): 128 rows × 32 k 16-bit = 512 pieces of 16 bytes, 2 per thread:
// piece c = tid + 256·i is row c / 4, k (c % 4)·8.
template <typename W>
__device__ __forceinline__ void gemm_load_a(float4 (&ra)[4], const float* x, int M, int K, int m0, int k0) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int f = threadIdx.x + 256 * i, row = m0 + f / 8, k = k0 + (f % 8) * 4;
        ra[i] = row < M && k < K ? *(const float4*)(x + (size_t)row * K + k) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
}

template <typename W>
__device__ __forceinline__ void gemm_store_a(W* As, const float4 (&ra)[4]) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int f = threadIdx.x + 256 * i, row = f / 8, k = (f % 8) * 4;
        uint2 v = make_uint2(pack2(ra[i].x, ra[i].y, W()), pack2(ra[i].z, ra[i].w, W()));
        *(uint2*)(As + row * MMA_LD + k) = v;
    }
}

template <typename W>
__device__ __forceinline__ void gemm_load_b(W* Bs, const W* w, int N, int K, int n0, int k0) {
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int c = threadIdx.x + 256 * i, row = c / 4, k = (c % 4) * 8;
        bool ok = n0 + row < N && k0 + k < K;
        const W* src = ok ? w + (size_t)(n0 + row) * K + k0 + k : w;
        cp_async16(Bs + row * MMA_LD + k, src, ok ? 16 : 0);
    }
}

template <typename W>
__device__ void gemm_mma(float* __restrict__ y, const float* __restrict__ x, const W* __restrict__ w,
                         const W* __restrict__ bias, int M, int N, int K) {
    __shared__ __align__(16) W As[2][MMA_BM * MMA_LD];
    __shared__ __align__(16) W Bs[2][MMA_BN * MMA_LD];
    int m0 = blockIdx.y * MMA_BM, n0 = blockIdx.x * MMA_BN;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int wm = (warp / 4) * 64, wn = (warp % 4) * 32;  // the warp's 64 × 32 corner of the tile

    float acc[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.f;

    float4 ra[4];
    int tiles = (K + MMA_BK - 1) / MMA_BK;
    gemm_load_a<W>(ra, x, M, K, m0, 0);
    gemm_store_a<W>(As[0], ra);
    gemm_load_b<W>(Bs[0], w, N, K, n0, 0);
    cp_async_commit();

    // ldmatrix row addresses. A: lanes 0–15 give rows 0–15 at k 0, lanes 16–31 rows 0–15 at k 8,
    // so the four 8×8 matrices are (rows 0–7, k 0–7), (8–15, 0–7), (0–7, 8–15), (8–15, 8–15) =
    // a0..a3 of the m16n8k16 A fragment. B (rows = outputs n, k contiguous): lanes 0–7 give n 0–7
    // at k 0, 8–15 n 0–7 at k 8, 16–23 n 8–15 at k 0, 24–31 n 8–15 at k 8, so the matrices are
    // b0, b1 of the n-tile at n 0–7 and b0, b1 of the n-tile at n 8–15.
    int a_row = lane % 16, a_k = (lane / 16) * 8;
    int b_row = (lane & 7) + ((lane >> 4) << 3), b_k = ((lane >> 3) & 1) * 8;

    for (int kt = 0; kt < tiles; kt++) {
        int cur = kt & 1;
        bool more = kt + 1 < tiles;
        if (more) {
            gemm_load_b<W>(Bs[cur ^ 1], w, N, K, n0, (kt + 1) * MMA_BK);
            gemm_load_a<W>(ra, x, M, K, m0, (kt + 1) * MMA_BK);
        }
        cp_async_commit();  // possibly empty, so that wait_group 1 always means "tile kt is in"
        cp_async_wait1();
        __syncthreads();  // tile kt of A (plain stores) and B (cp.async) visible to every warp

#pragma unroll
        for (int ks = 0; ks < MMA_BK; ks += 16) {
            uint32_t a[4][4], b[4][2];
#pragma unroll
            for (int i = 0; i < 4; i++) ldmatrix_x4(a[i], As[cur] + (wm + i * 16 + a_row) * MMA_LD + ks + a_k);
#pragma unroll
            for (int j = 0; j < 2; j++) {
                uint32_t r[4];
                ldmatrix_x4(r, Bs[cur] + (wn + j * 16 + b_row) * MMA_LD + ks + b_k);
                b[2 * j][0] = r[0], b[2 * j][1] = r[1], b[2 * j + 1][0] = r[2], b[2 * j + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) mma16816<W>(acc[i][j], a[i], b[j][0], b[j][1]);
        }
        __syncthreads();  // every warp is done with buffer cur before it is refilled
        if (more) gemm_store_a<W>(As[cur ^ 1], ra);
    }

    // C fragment: c0, c1 at (row g, cols 2t, 2t+1), c2, c3 at (row g+8, same cols), g = lane/4,
    // t = lane%4.
    int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int row = m0 + wm + i * 16 + g + (e >> 1) * 8, col = n0 + wn + j * 8 + 2 * t + (e & 1);
                if (row < M && col < N) y[(size_t)row * N + col] = acc[i][j][e] + (bias != nullptr ? to_f32(bias[col]) : 0.f);
            }
}

extern "C" __global__ void __launch_bounds__(256) gemm_bf16(float* y, const float* x, const bf16* w, const bf16* bias, int M, int N, int K) {
    gemm_mma<bf16>(y, x, w, bias, M, N, K);
}
extern "C" __global__ void __launch_bounds__(256) gemm_f16(float* y, const float* x, const f16* w, const f16* bias, int M, int N, int K) {
    gemm_mma<f16>(y, x, w, bias, M, N, K);
}

#define TILE 64
#define TILE_K 16

template <typename W>
__device__ void gemm_tiled(float* __restrict__ y, const float* __restrict__ x, const W* __restrict__ w,
                           const W* __restrict__ bias, int M, int N, int K) {
    // As[k][m] and Bs[k][n]: transposed so that the compute loop reads along m and n; the +1
    // keeps the transposing stores (16 lanes at one m, consecutive k) out of one bank.
    __shared__ float As[TILE_K][TILE + 1], Bs[TILE_K][TILE + 1];
    int m0 = blockIdx.y * TILE, n0 = blockIdx.x * TILE;
    int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    float acc[4][4] = {};
    for (int k0 = 0; k0 < K; k0 += TILE_K) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int e = threadIdx.x + 256 * i, r = e / TILE_K, k = e % TILE_K;
            As[k][r] = m0 + r < M && k0 + k < K ? x[(size_t)(m0 + r) * K + k0 + k] : 0.f;
            Bs[k][r] = n0 + r < N && k0 + k < K ? to_f32(w[(size_t)(n0 + r) * K + k0 + k]) : 0.f;
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < TILE_K; k++) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; i++) a[i] = As[k][ty + 16 * i], b[i] = Bs[k][tx + 16 * i];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int row = m0 + ty + 16 * i, col = n0 + tx + 16 * j;
            if (row < M && col < N) y[(size_t)row * N + col] = acc[i][j] + (bias != nullptr ? to_f32(bias[col]) : 0.f);
        }
}

extern "C" __global__ void __launch_bounds__(256) gemm_tiled_f32(float* y, const float* x, const float* w, const float* bias, int M, int N, int K) {
    gemm_tiled<float>(y, x, w, bias, M, N, K);
}
extern "C" __global__ void __launch_bounds__(256) gemm_tiled_bf16(float* y, const float* x, const bf16* w, const bf16* bias, int M, int N, int K) {
    gemm_tiled<bf16>(y, x, w, bias, M, N, K);
}
extern "C" __global__ void __launch_bounds__(256) gemm_tiled_f16(float* y, const float* x, const f16* w, const f16* bias, int M, int N, int K) {
    gemm_tiled<f16>(y, x, w, bias, M, N, K);
}
