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
// gemm_pipe_{bf16,f16} — the same product from x already in the weights' 16-bit type (round_*
// below makes it: M·K·6 bytes, ~17 µs for 2048 × 4096 on an H100, 2–4 % of the GEMM it feeds), so
// that both operands arrive by cp.async and the k loop is a 4-stage pipeline: tiles kt+1…kt+3 are
// in flight while tile kt is multiplied, one barrier per k step, no register staging. Same block
// tile (128 × 128 × 32), warp layout, padded rows and fragment addressing as gemm_*; 4 stages of
// (128 + 128) × 40 × 2 bytes = 80 KiB of dynamic shared memory (above the 48 KiB default: the
// launcher raises the limit), 2 blocks per SM. Needs K % 8 == 0 and x, w 16-byte aligned.
//
// round_{bf16,f16} — y[i] = x[i] rounded to nearest even in the 16-bit type, 4 per thread.
//
// gemm_tiled_{f32,bf16,f16} — plain f32 FMA, any shape and alignment: 64 × 64 tiles, k steps of
// 16, each of 256 threads computes 4 × 4 outputs. The f32-weight path and the fallback.
#include "mma.cuh"

#define MMA_BM 128
#define MMA_BN 128
#define MMA_BK 32
#define MMA_LD 40  // padded row length in shared memory, elements

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

#define PIPE_STAGES 4
#define PIPE_STAGE_ELEMS ((MMA_BM + MMA_BN) * MMA_LD)  // A then B of one stage, elements

// One stage's cp.async: A (x) and B (w) are 128 rows × 32 k of 16-bit values each, 512 pieces
// of 16 bytes; thread t copies pieces t and t + 256 of each: row c / 4, k (c % 4)·8. Pieces past
// M, N or K are zero-filled.
template <typename W>
__device__ __forceinline__ void gemm_pipe_load(W* stage, const W* x, const W* w, int M, int N, int K, int m0, int n0, int k0) {
    W* As = stage;
    W* Bs = stage + MMA_BM * MMA_LD;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int c = threadIdx.x + 256 * i, row = c / 4, k = (c % 4) * 8;
        bool okk = k0 + k < K;
        bool oka = okk && m0 + row < M, okb = okk && n0 + row < N;
        cp_async16(As + row * MMA_LD + k, oka ? x + (size_t)(m0 + row) * K + k0 + k : x, oka ? 16 : 0);
        cp_async16(Bs + row * MMA_LD + k, okb ? w + (size_t)(n0 + row) * K + k0 + k : w, okb ? 16 : 0);
    }
}

template <typename W>
__device__ void gemm_pipe(float* __restrict__ y, const W* __restrict__ x, const W* __restrict__ w,
                          const W* __restrict__ bias, int M, int N, int K) {
    DYNAMIC_SMEM(pipe_smem);
    W* smem = (W*)pipe_smem;  // PIPE_STAGES × PIPE_STAGE_ELEMS
    int m0 = blockIdx.y * MMA_BM, n0 = blockIdx.x * MMA_BN;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int wm = (warp / 4) * 64, wn = (warp % 4) * 32;

    float acc[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.f;

    // Prologue: tiles 0 … STAGES−2, one commit group each (empty past the last tile), so that
    // group g always holds tile g.
    int tiles = (K + MMA_BK - 1) / MMA_BK;
#pragma unroll
    for (int s = 0; s < PIPE_STAGES - 1; s++) {
        if (s < tiles) gemm_pipe_load<W>(smem + s * PIPE_STAGE_ELEMS, x, w, M, N, K, m0, n0, s * MMA_BK);
        cp_async_commit();
    }

    int a_row = lane % 16, a_k = (lane / 16) * 8;
    int b_row = (lane & 7) + ((lane >> 4) << 3), b_k = ((lane >> 3) & 1) * 8;

    for (int kt = 0; kt < tiles; kt++) {
        // STAGES−1 + kt groups are committed; with at most STAGES−2 in flight, group kt (tile kt)
        // is complete for this thread, and the barrier makes every thread's part visible. It also
        // ends every warp's reads of tile kt−1, whose buffer the load below refills.
        cp_async_wait<PIPE_STAGES - 2>();
        __syncthreads();
        int next = kt + PIPE_STAGES - 1;
        if (next < tiles) gemm_pipe_load<W>(smem + (next % PIPE_STAGES) * PIPE_STAGE_ELEMS, x, w, M, N, K, m0, n0, next * MMA_BK);
        cp_async_commit();

        const W* As = smem + (kt % PIPE_STAGES) * PIPE_STAGE_ELEMS;
        const W* Bs = As + MMA_BM * MMA_LD;
#pragma unroll
        for (int ks = 0; ks < MMA_BK; ks += 16) {
            uint32_t a[4][4], b[4][2];
#pragma unroll
            for (int i = 0; i < 4; i++) ldmatrix_x4(a[i], As + (wm + i * 16 + a_row) * MMA_LD + ks + a_k);
#pragma unroll
            for (int j = 0; j < 2; j++) {
                uint32_t r[4];
                ldmatrix_x4(r, Bs + (wn + j * 16 + b_row) * MMA_LD + ks + b_k);
                b[2 * j][0] = r[0], b[2 * j][1] = r[1], b[2 * j + 1][0] = r[2], b[2 * j + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) mma16816<W>(acc[i][j], a[i], b[j][0], b[j][1]);
        }
    }
    cp_async_wait<0>();  // no copy may outlive the block (the trailing groups are empty)

    int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int row = m0 + wm + i * 16 + g + h * 8, col = n0 + wn + j * 8 + 2 * t;
                if (row >= M) continue;
                float* dst = y + (size_t)row * N + col;
                if (col < N) dst[0] = acc[i][j][2 * h] + (bias != nullptr ? to_f32(bias[col]) : 0.f);
                if (col + 1 < N) dst[1] = acc[i][j][2 * h + 1] + (bias != nullptr ? to_f32(bias[col + 1]) : 0.f);
            }
}

extern "C" __global__ void __launch_bounds__(256, 2) gemm_pipe_bf16(float* y, const bf16* x, const bf16* w, const bf16* bias, int M, int N, int K) {
    gemm_pipe<bf16>(y, x, w, bias, M, N, K);
}
extern "C" __global__ void __launch_bounds__(256, 2) gemm_pipe_f16(float* y, const f16* x, const f16* w, const f16* bias, int M, int N, int K) {
    gemm_pipe<f16>(y, x, w, bias, M, N, K);
}

// n % 4 == 0 and 16-byte aligned x (the launcher's K % 8 rule gives both).
template <typename W>
__device__ void round16(W* y, const float* x, size_t n) {
    for (size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * 4; i < n; i += (size_t)gridDim.x * blockDim.x * 4) {
        float4 v = *(const float4*)(x + i);
        *(uint2*)(y + i) = make_uint2(pack2(v.x, v.y, W()), pack2(v.z, v.w, W()));
    }
}
extern "C" __global__ void round_bf16(bf16* y, const float* x, size_t n) { round16<bf16>(y, x, n); }
extern "C" __global__ void round_f16(f16* y, const float* x, size_t n) { round16<f16>(y, x, n); }

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
