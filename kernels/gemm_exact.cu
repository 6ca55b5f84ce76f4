// Matrix products at f32 precision, for analysis (attribution patching, gradients): the forward
// y = x·Wᵀ + bias and the activation gradient dx += dy·W of a linear layer.
//
// CPU references: tensor.CPU.MatMul (y) and tensor.CPU.MatMulBackward (dx, no weight gradients).
// Shapes. Forward: a = x (M, K = in) f32, w (N = out, K) bf16, bias (N) bf16 or null, y (M, N) f32.
// Backward: a = dy (M, K = out) f32, w (K, N = in) read as it is stored (B[k][n] = w[k·N + n]: W
// transposed relative to the forward), y = dx (M, N) f32, added into.
//
// gemm_exact_m{32,64}_bf16, gemm_exact_dx_m{32,64}_bf16 — tensor cores. mma.sync multiplies 16-bit operands into an
// f32 sum. W is exact in bf16; the activation is not, and rounding it to bf16 (as gemm_pipe does
// for inference) costs up to 2⁻⁸ of each product. Here each activation is cut into three bf16
// pieces, a = a₀ + a₁ + a₂ with a₀ = bf16(a), a₁ = bf16(a − a₀), a₂ = bf16(a − a₀ − a₁): each
// difference is exact in f32 and holds at most 16, then 8, significant bits, so the three pieces
// hold a's 24 bits exactly (for |a| above 2⁻¹¹⁰), and each product a_p·w (8 × 8 bits) is exact.
// The result then differs from an f32 FMA product only in how the sum is ordered and rounded —
// nothing is rounded to bf16, as the gradients of attribution need — for 3 tensor-core products
// where the inference GEMM does 1. The pieces are made in registers from the f32 tile as the A
// fragments are built (the smallest piece's product first).
// Block tile BM (rows: 64, or 32 for at most 32 rows) × 128 (outputs) × 32 (k), 8 warps, each
// warp 32 rows × 32 outputs (2 × 4 mma tiles; BM = 32: 32 × 16). A arrives by cp.async as f32 (rows padded from 32 to 40 floats, 160 bytes, so that the
// 64-bit fragment loads of a half-warp fall in 32 distinct banks); B as bf16, in the forward as
// gemm_pipe stages it (outputs as rows, k contiguous, padded to 40 elements, ldmatrix), in the
// backward as W is stored (k as rows, outputs contiguous, padded to 136 elements = 272 bytes so
// that ldmatrix's 8 row addresses fall in distinct 16-byte bank groups, ldmatrix.trans giving the
// column-major B fragment). A 4-stage cp.async pipeline, 80 KiB of dynamic shared memory, two
// blocks per SM. For few rows the launcher splits K over blockIdx.z (a multiple of 32 per split):
// split s writes its partial sums to y + s·M·N (the bias in split 0 only) and
// gemm_exact_reduce_f32 adds them in split order into y — deterministic, no atomics. Needs K % 4
// == 0 (16-byte pieces of A), K % 8 == 0 in the forward and N % 8 == 0 in the backward (16-byte
// pieces of W), 16-byte aligned bases; the launcher uses gemm.cu's gemm_tiled_* (forward) and
// gemm_tiled_dx_* (backward) otherwise, and for f32 and f16 weights (f16 pieces would underflow:
// a gradient of 1e-7 is below f16's normal range).
// FLOPs: 3 × 2·M·N·K on tensor cores. Bytes: W once per row tile (N·K·2), A once per 128-column
// tile (M·K·4), y once (M·N·4, twice when added into). At 64 rows (one attribution pair) the
// backward is bound by W's bytes (96 tensor-core FLOP per W byte, under mma.sync's ridge of ~140
// on an H200); at 512 rows by the tensor cores.
#include "mma.cuh"

#define EX_BN 128
#define EX_BK 32
#define EX_STAGES 4
#define EX_LDA 40    // f32 elements per A row in shared memory
#define EX_LDB 40    // bf16 elements per forward B row (an output's 32 k)
#define EX_LDBT 136  // bf16 elements per backward B row (a k's 128 outputs)
#define EX_A_BYTES (64 * EX_LDA * 4)                   // 10240: the larger row tile's
#define EX_B_BYTES (EX_BN * EX_LDB * 2)                // 10240, ≥ EX_BK × EX_LDBT × 2 = 8704
#define EX_STAGE_BYTES (EX_A_BYTES + EX_B_BYTES)        // 20480; 4 stages = 80 KiB

// ---- device helpers ----

// The three bf16 pieces of x and y, packed in pairs (x in the low half): p[0] = bf16 of the
// value, p[1] = bf16 of what remains, p[2] = the rest.
__device__ __forceinline__ void split3(float x, float y, uint32_t (&p)[3]) {
#pragma unroll
    for (int i = 0; i < 3; i++) {
        unsigned short hx = f32_to_bf16_bits(x), hy = f32_to_bf16_bits(y);
        p[i] = (uint32_t)hx | ((uint32_t)hy << 16);
        x -= to_f32(bf16{hx});
        y -= to_f32(bf16{hy});
    }
}

// One stage's cp.async. A: BM rows × 32 k f32 = BM·8 pieces of 16 bytes (4 k), BM/32 per thread:
// piece c is row c / 8, k (c % 8)·4. B forward: 128 outputs × 32 k = 512 pieces (8 k), row c / 4,
// k (c % 4)·8. B backward: 32 k × 128 outputs = 512 pieces (8 outputs), k c / 16, outputs
// (c % 16)·8. Pieces past M, N or the split's k_end are zero-filled.
template <bool TRANS, int BM>
__device__ __forceinline__ void exact_load(unsigned char* stage, const float* a, const bf16* w, int M, int N, int K,
                                           int m0, int n0, int k0, int k_end) {
    float* As = (float*)stage;
    bf16* Bs = (bf16*)(stage + EX_A_BYTES);
#pragma unroll
    for (int i = 0; i < BM / 32; i++) {
        int c = threadIdx.x + 256 * i, row = c / 8, k = (c % 8) * 4;
        bool ok = m0 + row < M && k0 + k < k_end;
        cp_async16(As + row * EX_LDA + k, ok ? a + (size_t)(m0 + row) * K + k0 + k : a, ok ? 16 : 0);
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int c = threadIdx.x + 256 * i;
        if (!TRANS) {
            int row = c / 4, k = (c % 4) * 8;
            bool ok = n0 + row < N && k0 + k < k_end;
            cp_async16(Bs + row * EX_LDB + k, ok ? w + (size_t)(n0 + row) * K + k0 + k : w, ok ? 16 : 0);
        } else {
            int kr = c / 16, n = (c % 16) * 8;
            bool ok = k0 + kr < k_end && n0 + n < N;
            cp_async16(Bs + kr * EX_LDBT + n, ok ? w + (size_t)(k0 + kr) * N + n0 + n : w, ok ? 16 : 0);
        }
    }
}

// ---- kernels ----

// Block (bx, by, z): outputs 128·bx…, rows BM·by…, k in [z·kchunk, (z+1)·kchunk) ∩ [0, K), into
// y + z·M·N. TRANS: the backward's B (W as stored, k rows). accumulate: add into y (one split only).
// BM = 64: 8 warps as 2 × 4, each 32 rows × 32 outputs; BM = 32 (a pair's rows after its first
// difference, where a 64-row tile would multiply as many zeros as rows): 1 × 8, each 32 × 16.
template <bool TRANS, int BM>
__device__ void gemm_exact(float* __restrict__ y, const float* __restrict__ a, const bf16* __restrict__ w,
                           const bf16* __restrict__ bias, int M, int N, int K, int kchunk, int accumulate) {
    constexpr int WARPS_N = 8 / (BM / 32), WN = EX_BN / WARPS_N, NT = WN / 8;  // NT n-tiles of 8 per warp
    DYNAMIC_SMEM(exact_smem);
    int m0 = blockIdx.y * BM, n0 = blockIdx.x * EX_BN;
    int k_begin = blockIdx.z * kchunk, k_end = min(K, k_begin + kchunk);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    int wm = (warp / WARPS_N) * 32, wn = (warp % WARPS_N) * WN;  // the warp's 32 × WN corner of the tile

    float acc[2][NT][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.f;

    // Prologue: one commit group per stage (empty past the last tile), so that group g holds tile g.
    int tiles = (k_end - k_begin + EX_BK - 1) / EX_BK;
#pragma unroll
    for (int s = 0; s < EX_STAGES - 1; s++) {
        if (s < tiles) exact_load<TRANS, BM>(exact_smem + s * EX_STAGE_BYTES, a, w, M, N, K, m0, n0, k_begin + s * EX_BK, k_end);
        cp_async_commit();
    }

    // ldmatrix row addresses. Forward B (outputs as rows, as in gemm_pipe): lanes 0–7 give
    // outputs 0–7 at k 0, 8–15 outputs 0–7 at k 8, 16–31 outputs 8–15: b0, b1 of two n-tiles.
    // Backward B (k as rows, .trans): lanes 0–7 give k 0–7, 8–15 k 8–15 at outputs 0–7, 16–31
    // the same at outputs 8–15: again b0, b1 of two n-tiles.
    int b_row = (lane & 7) + ((lane >> 4) << 3), b_k = ((lane >> 3) & 1) * 8;
    int bt_row = (lane & 7) + (((lane >> 3) & 1) << 3), bt_col = (lane >> 4) * 8;

    for (int kt = 0; kt < tiles; kt++) {
        // As in gemm_pipe: group kt is complete, the barrier publishes it to every warp and ends
        // every warp's reads of tile kt−1, whose buffer the load below refills.
        cp_async_wait<EX_STAGES - 2>();
        __syncthreads();
        int next = kt + EX_STAGES - 1;
        if (next < tiles) exact_load<TRANS, BM>(exact_smem + (next % EX_STAGES) * EX_STAGE_BYTES, a, w, M, N, K, m0, n0, k_begin + next * EX_BK, k_end);
        cp_async_commit();

        const float* As = (const float*)(exact_smem + (kt % EX_STAGES) * EX_STAGE_BYTES);
        const bf16* Bs = (const bf16*)((const unsigned char*)As + EX_A_BYTES);
#pragma unroll
        for (int ks = 0; ks < EX_BK; ks += 16) {
            uint32_t b[NT][2];
#pragma unroll
            for (int j = 0; j < NT / 2; j++) {
                uint32_t r[4];
                if (!TRANS) ldmatrix_x4(r, Bs + (wn + j * 16 + b_row) * EX_LDB + ks + b_k);
                else ldmatrix_x4_trans(r, Bs + (ks + bt_row) * EX_LDBT + wn + j * 16 + bt_col);
                b[2 * j][0] = r[0], b[2 * j][1] = r[1], b[2 * j + 1][0] = r[2], b[2 * j + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < 2; i++) {
                // The A fragment of rows wm + 16i…: a0 (row g, k 2t, 2t+1), a1 (row g + 8), a2
                // (row g, k 2t + 8), a3 (row g + 8, k 2t + 8), each two f32, cut into pieces.
                const float* f = As + (wm + i * 16 + g) * EX_LDA + ks + 2 * t;
                float2 v[4] = {*(const float2*)f, *(const float2*)(f + 8 * EX_LDA), *(const float2*)(f + 8),
                               *(const float2*)(f + 8 * EX_LDA + 8)};
                uint32_t p[4][3], piece[4];
#pragma unroll
                for (int r = 0; r < 4; r++) split3(v[r].x, v[r].y, p[r]);
#pragma unroll
                for (int q = 2; q >= 0; q--) {
#pragma unroll
                    for (int r = 0; r < 4; r++) piece[r] = p[r][q];
#pragma unroll
                    for (int j = 0; j < NT; j++) mma16816<bf16>(acc[i][j], piece, b[j][0], b[j][1]);
                }
            }
        }
    }
    cp_async_wait<0>();  // no copy may outlive the block (the trailing groups are empty)

    float* out = y + (size_t)blockIdx.z * M * N;
    bool with_bias = bias != nullptr && blockIdx.z == 0;
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int row = m0 + wm + i * 16 + g + h * 8, col = n0 + wn + j * 8 + 2 * t;
                if (row >= M) continue;
                float* dst = out + (size_t)row * N + col;
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    if (col + e >= N) continue;
                    float v = acc[i][j][2 * h + e] + (with_bias ? to_f32(bias[col + e]) : 0.f);
                    dst[e] = accumulate ? dst[e] + v : v;
                }
            }
}

#define EXACT_ENTRIES(BM)                                                                                                    \
    extern "C" __global__ void __launch_bounds__(256, 2) gemm_exact_m##BM##_bf16(float* y, const float* x, const bf16* w,     \
                                                                                  const bf16* bias, int M, int N, int K,     \
                                                                                  int kchunk, int accumulate) {              \
        gemm_exact<false, BM>(y, x, w, bias, M, N, K, kchunk, accumulate);                                                   \
    }                                                                                                                        \
    extern "C" __global__ void __launch_bounds__(256, 2) gemm_exact_dx_m##BM##_bf16(float* dx, const float* dy, const bf16* w, \
                                                                                     int M, int N, int K, int kchunk,          \
                                                                                     int accumulate) {                         \
        gemm_exact<true, BM>(dx, dy, w, nullptr, M, N, K, kchunk, accumulate);                                               \
    }
EXACT_ENTRIES(32)
EXACT_ENTRIES(64)

// y[i] = (accumulate ? y[i] : 0) + Σ_s part[s·n + i], s = 0 … splits−1 in that order: the end of
// a split product (the bias is already in split 0).
extern "C" __global__ void gemm_exact_reduce_f32(float* y, const float* part, size_t n, int splits, int accumulate) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float s = part[i];
        for (int p = 1; p < splits; p++) s += part[(size_t)p * n + i];
        y[i] = accumulate ? y[i] + s : s;
    }
}
