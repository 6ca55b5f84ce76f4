// Matrix products for prefill and batches: y = x·Wᵀ (+ bias), n > 8 tokens.
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
// gemm_splitk_m{32,64,128}_{bf16,f16} + splitk_reduce_f32 — the same product for decode batches,
// M = 9…128 rows, on x rounded by round_*. There FLOPs are 2·M per weight (≤ 256 per 2-byte weight:
// under the H100/H200 ridge of mma.sync) and the time is W's bytes, N·K·2, streamed once. With
// gemm_pipe's 128-row tiles a batch is one row tile and only N/128 blocks run (32 for q_proj, 112
// for gate/up), each streaming all of K with ~24 KiB in flight: ~0.3–0.5 TB/s. Here a block takes
// all M rows (padded to a row tile BM of 32, 64 or 128: zero-filled, their products discarded) ×
// 128 outputs × one k range of kchunk (a multiple of 64), so the launcher can split K until the
// grid fills the SMs: grid (N/128, splits). 8 warps, warp w owns outputs 16w…16w+15 for every row
// tile: per k16 step one ldmatrix.x4 of W and BM/16 of x, 2·BM/16 mma. W and x arrive by cp.async
// in stages of 64 k (128 bytes of each W row; rows padded to 72 elements = 144 bytes so that
// ldmatrix's 8 row addresses fall in distinct banks): 4 stages ((BM + 128)·144 bytes each, 2
// blocks per SM) for BM ≤ 64, 6 for BM = 128 (216 KiB, 1 block per SM), i.e. ≥ 48 KiB of W in
// flight per SM (Little's law at ~32 GB/s per SM and ~1.5 µs). x (M·K·2 bytes, shared by all
// N/128 column blocks) is reread from L2: at M = 64, BN = 128 its L2 traffic is half of W's. Block
// (bx, s) writes its partial sums to part[s] (M, N) f32, split 0 adding the bias; splitk_reduce_f32
// sums part[0…splits−1] in that order: deterministic, no atomics. One split writes y directly.
// Partial traffic is splits·M·N·8 bytes (written, read back, mostly from L2); the launcher keeps
// splits ≤ K/(8M), i.e. ≤ 1/4 of W's bytes (gpu/launch.go, splitKParts).
// At M = 64 on an H200 (132 SMs, copy ~4.2 TB/s; BM 64, 2 blocks per SM), predicted with the
// rounding pass and the reduction in the time (µs, weights' GB/s ÷ copy):
//   q_proj  4096 × 4096   33.6 MB   8 splits, 256 blocks, partials 8.4 MB   12–16 µs, 0.50–0.65
//   gate/up 14336 × 4096  117 MB    2 splits, 224 blocks, partials 7.3 MB   32–36 µs, 0.78–0.88
//   down    4096 × 14336  117 MB    8 splits, 256 blocks, partials 8.4 MB   32–36 µs, 0.78–0.88
//   lm_head 128256 × 4096 1.05 GB   1 split, 1002 blocks (3.8 waves)        255–275 µs, 0.90–0.97
// against ~65 µs (q_proj, gate/up: a 1 MB column slice per block at ~16 GB/s each) and ~230 µs
// (down, 3.7 MB per block) for gemm_pipe at M = 64.
//
// round_{bf16,f16} — y[i] = x[i] rounded to nearest even in the 16-bit type, 4 per thread.
//
// gemm_tiled_{f32,bf16,f16} — plain f32 FMA, any shape and alignment: 64 × 64 tiles, k steps of
// 16, each of 256 threads computes 4 × 4 outputs. The f32-weight path and the fallback.
// gemm_tiled_dx_{f32,bf16,f16} — the same tiles for the backward's dx += dy·W (CPU reference:
// tensor.CPU.MatMulBackward), W read as stored (along its rows, so both loads are coalesced): the
// fallback of gemm_exact_dx_m*_bf16 (kernels/gemm_exact.cu) for f32 and f16 weights and odd shapes.
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

#define SK_BN 256     // outputs per block: 8 warps × 32
#define SK_BK 64      // k per stage: 128 bytes of each W row
#define SK_LD 72      // padded row length, elements: 144 bytes, 9 × 16, so 8 consecutive rows hit 8 distinct 16-byte bank groups
#define SK_STAGES 4   // 4 × (BM + 256) × 144 bytes: 166, 184, 221 KiB for BM = 32, 64, 128; one block per SM

// One stage holds x rows then W rows.
template <int BM>
struct SplitKShape {
    static constexpr int stage_elems = (BM + SK_BN) * SK_LD;
};

// One stage's cp.async: x is BM rows × 64 k (BM·8 pieces of 16 bytes, BM/32 per thread), W is
// 256 rows × 64 k (2048 pieces, 8 per thread); piece c is row c / 8, k (c % 8)·8. Pieces past M,
// N or the split's k_end are zero-filled, so padded rows and the K tail add nothing.
template <typename W, int BM>
__device__ __forceinline__ void gemm_splitk_load(W* stage, const W* x, const W* w, int M, int N, int K, int n0, int k0, int k_end) {
    W* As = stage;
    W* Bs = stage + BM * SK_LD;
#pragma unroll
    for (int i = 0; i < BM / 32; i++) {
        int c = threadIdx.x + 256 * i, row = c / 8, k = (c % 8) * 8;
        bool ok = row < M && k0 + k < k_end;
        cp_async16(As + row * SK_LD + k, ok ? x + (size_t)row * K + k0 + k : x, ok ? 16 : 0);
    }
#pragma unroll
    for (int i = 0; i < SK_BN / 32; i++) {
        int c = threadIdx.x + 256 * i, row = c / 8, k = (c % 8) * 8;
        bool ok = n0 + row < N && k0 + k < k_end;
        cp_async16(Bs + row * SK_LD + k, ok ? w + (size_t)(n0 + row) * K + k0 + k : w, ok ? 16 : 0);
    }
}

// Block (bx, s): outputs 256·bx … 256·bx + 255, all M ≤ BM rows, k in [s·kchunk, (s+1)·kchunk) ∩
// [0, K); writes part[s] (M, N), with the bias added by split 0 only, so that the reduction is a
// plain sum (and a launch with one split writes y directly). Warp w owns outputs 32w … 32w + 31
// (four n-tiles of 8) for all BM/16 row tiles: per k16 step two ldmatrix.x4 of W, reused across
// the rows, and BM/16 of x, reused across the four n-tiles (kernels/NOTES.md: why 32 outputs).
template <typename W, int BM>
__device__ void gemm_splitk(float* __restrict__ part, const W* __restrict__ x, const W* __restrict__ w,
                            const W* __restrict__ bias, int M, int N, int K, int kchunk) {
    using S = SplitKShape<BM>;
    DYNAMIC_SMEM(splitk_smem);
    W* smem = (W*)splitk_smem;  // SK_STAGES × S::stage_elems
    int n0 = blockIdx.x * SK_BN, k_begin = blockIdx.y * kchunk, k_end = min(K, k_begin + kchunk);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, wn = warp * 32;

    float acc[BM / 16][4][4];
#pragma unroll
    for (int i = 0; i < BM / 16; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.f;

    // Prologue: one commit group per stage (empty past the last tile), so that group g holds tile g.
    int tiles = (k_end - k_begin + SK_BK - 1) / SK_BK;
#pragma unroll
    for (int s = 0; s < SK_STAGES - 1; s++) {
        if (s < tiles) gemm_splitk_load<W, BM>(smem + s * S::stage_elems, x, w, M, N, K, n0, k_begin + s * SK_BK, k_end);
        cp_async_commit();
    }

    // ldmatrix row addresses as in gemm_mma: A lanes 0–15 rows 0–15 at k 0, 16–31 at k 8; B lanes
    // 0–7 n 0–7 at k 0, 8–15 n 0–7 at k 8, 16–23 n 8–15 at k 0, 24–31 n 8–15 at k 8 (the second
    // B load the same 16 rows further on).
    int a_row = lane % 16, a_k = (lane / 16) * 8;
    int b_row = (lane & 7) + ((lane >> 4) << 3), b_k = ((lane >> 3) & 1) * 8;

    for (int kt = 0; kt < tiles; kt++) {
        // As in gemm_pipe: group kt is complete, the barrier publishes it and retires tile kt−1's
        // buffer, which the load below refills.
        cp_async_wait<SK_STAGES - 2>();
        __syncthreads();
        int next = kt + SK_STAGES - 1;
        if (next < tiles) gemm_splitk_load<W, BM>(smem + (next % SK_STAGES) * S::stage_elems, x, w, M, N, K, n0, k_begin + next * SK_BK, k_end);
        cp_async_commit();

        const W* As = smem + (kt % SK_STAGES) * S::stage_elems;
        const W* Bs = As + BM * SK_LD;
#pragma unroll
        for (int ks = 0; ks < SK_BK; ks += 16) {
            uint32_t b[2][4];
            ldmatrix_x4(b[0], Bs + (wn + b_row) * SK_LD + ks + b_k);
            ldmatrix_x4(b[1], Bs + (wn + 16 + b_row) * SK_LD + ks + b_k);
#pragma unroll
            for (int i = 0; i < BM / 16; i++) {
                uint32_t a[4];
                ldmatrix_x4(a, As + (i * 16 + a_row) * SK_LD + ks + a_k);
#pragma unroll
                for (int j = 0; j < 4; j++) mma16816<W>(acc[i][j], a, b[j / 2][2 * (j % 2)], b[j / 2][2 * (j % 2) + 1]);
            }
        }
    }
    cp_async_wait<0>();

    float* y = part + (size_t)blockIdx.y * M * N;
    bool with_bias = bias != nullptr && blockIdx.y == 0;
    int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int i = 0; i < BM / 16; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int row = i * 16 + g + h * 8, col = n0 + wn + j * 8 + 2 * t;
                if (row >= M) continue;
                float* dst = y + (size_t)row * N + col;
                if (col < N) dst[0] = acc[i][j][2 * h] + (with_bias ? to_f32(bias[col]) : 0.f);
                if (col + 1 < N) dst[1] = acc[i][j][2 * h + 1] + (with_bias ? to_f32(bias[col + 1]) : 0.f);
            }
}

#define SPLITK_ENTRY(bm, name, W)                                                                                         \
    extern "C" __global__ void __launch_bounds__(256, 1)                                                                 \
        gemm_splitk_m##bm##_##name(float* part, const W* x, const W* w, const W* bias, int M, int N, int K, int kchunk) { \
        gemm_splitk<W, bm>(part, x, w, bias, M, N, K, kchunk);                                                            \
    }
SPLITK_ENTRY(32, bf16, bf16)
SPLITK_ENTRY(64, bf16, bf16)
SPLITK_ENTRY(128, bf16, bf16)
SPLITK_ENTRY(32, f16, f16)
SPLITK_ENTRY(64, f16, f16)
SPLITK_ENTRY(128, f16, f16)

// y[i] = Σ_s part[s·n + i] for s = 0 … splits−1 in that order: the deterministic end of a split-K
// product (n = M·N; the bias is already in split 0). Four consecutive elements per thread, as one
// 16-byte access when n % 4 == 0 and both buffers are 16-byte aligned, and the split loop unrolled
// by 4 so that four splits' loads are in flight together rather than one L2 round trip per split.
extern "C" __global__ void splitk_reduce_f32(float* y, const float* part, size_t n, int splits) {
    bool vec = n % 4 == 0 && ((uintptr_t)y | (uintptr_t)part) % 16 == 0;
    for (size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * 4; i < n; i += (size_t)gridDim.x * blockDim.x * 4) {
        if (vec) {
            float4 s = *(const float4*)(part + i);
#pragma unroll 4
            for (int p = 1; p < splits; p++) {
                float4 v = *(const float4*)(part + (size_t)p * n + i);
                s.x += v.x, s.y += v.y, s.z += v.z, s.w += v.w;
            }
            *(float4*)(y + i) = s;
            continue;
        }
        for (size_t j = i; j < n && j < i + 4; j++) {
            float s = part[j];
#pragma unroll 4
            for (int p = 1; p < splits; p++) s += part[(size_t)p * n + j];
            y[j] = s;
        }
    }
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

// DX is the backward's dx += dy·W: x is dy (M, K = out), W (K, N = in) is read as stored, along
// its rows (outputs contiguous, coalesced), and the tile is added into y; no bias.
template <typename W, bool DX>
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
            if (!DX) {
                Bs[k][r] = n0 + r < N && k0 + k < K ? to_f32(w[(size_t)(n0 + r) * K + k0 + k]) : 0.f;
            } else {
                int kb = e / TILE, c = e % TILE;
                Bs[kb][c] = k0 + kb < K && n0 + c < N ? to_f32(w[(size_t)(k0 + kb) * N + n0 + c]) : 0.f;
            }
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
            if (DX && row < M && col < N) y[(size_t)row * N + col] += acc[i][j];
            if (!DX && row < M && col < N) y[(size_t)row * N + col] = acc[i][j] + (bias != nullptr ? to_f32(bias[col]) : 0.f);
        }
}

extern "C" __global__ void __launch_bounds__(256) gemm_tiled_f32(float* y, const float* x, const float* w, const float* bias, int M, int N, int K) {
    gemm_tiled<float, false>(y, x, w, bias, M, N, K);
}
extern "C" __global__ void __launch_bounds__(256) gemm_tiled_bf16(float* y, const float* x, const bf16* w, const bf16* bias, int M, int N, int K) {
    gemm_tiled<bf16, false>(y, x, w, bias, M, N, K);
}
extern "C" __global__ void __launch_bounds__(256) gemm_tiled_f16(float* y, const float* x, const f16* w, const f16* bias, int M, int N, int K) {
    gemm_tiled<f16, false>(y, x, w, bias, M, N, K);
}
extern "C" __global__ void __launch_bounds__(256) gemm_tiled_dx_f32(float* dx, const float* dy, const float* w, int M, int N, int K) {
    gemm_tiled<float, true>(dx, dy, w, nullptr, M, N, K);
}
extern "C" __global__ void __launch_bounds__(256) gemm_tiled_dx_bf16(float* dx, const float* dy, const bf16* w, int M, int N, int K) {
    gemm_tiled<bf16, true>(dx, dy, w, nullptr, M, N, K);
}
extern "C" __global__ void __launch_bounds__(256) gemm_tiled_dx_f16(float* dx, const float* dy, const f16* w, int M, int N, int K) {
    gemm_tiled<f16, true>(dx, dy, w, nullptr, M, N, K);
}
