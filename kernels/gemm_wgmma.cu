// The prefill product on Hopper (sm_90a): y = x·Wᵀ (+ bias) with warpgroup tensor-core
// instructions (wgmma) fed by the tensor memory accelerator (TMA).
//
// CPU reference: tensor.CPU.MatMul: y[t, r] = Σ_k x[t, k] · w[r, k] + bias[r], with x rounded to
// bf16 beforehand (gemm.cu's round_bf16, as for gemm_pipe_bf16): the only departure from an f32
// product. Shapes: x (M, K) bf16, w (N, K) bf16, bias (N) bf16 or null, y (M, N) f32 row-major,
// as gemm.cu's kernels write it. FLOPs 2·M·N·K: at 2048 tokens and the Llama-3.1-8B shapes
// ~1000 FLOP per byte, compute-bound, where mma.sync (gemm_pipe_bf16: 245–289 TFLOP/s on an H200)
// reaches under a third of the card's ~990 TFLOP/s dense bf16.
//
// gemm_wgmma_bf16 — block tile 128 (tokens) × 256 (outputs), k tiles of 64 (128 bytes of each
// row, one 128-byte swizzle span), 3 warpgroups (384 threads):
//   - warpgroup 0, the producer, drops to 40 registers; its thread 0 streams k tiles into a ring
//     of 4 stages (x box 128 × 64: 16 KiB, w box 256 × 64: 32 KiB; 192 KiB in all, one block per
//     SM) by TMA from the tensor maps xmap (dims K × M) and wmap (K × N), each stage's 48 KiB
//     completing on its `full` mbarrier; before refilling a stage it waits on its `empty`
//     mbarrier. Boxes past M, N or K are filled with zeros by the copy engine (ragged edges cost
//     no code);
//   - warpgroups 1 and 2, the consumers, rise to 232 registers; consumer c owns rows 64c…64c+63
//     of the tile and all 256 outputs: 128 f32 accumulators per thread. Per k tile it waits on
//     `full`, issues four wgmma m64n256k16 (both operands K-major from shared memory, descriptors
//     advanced by 32 bytes per k16 step) as one group, waits until only that group is in flight
//     and releases the previous tile's stage (every consumer thread arrives on its `empty`
//     barrier: 256 arrivals), so the tensor cores always have the next group queued;
//   - the epilogue adds the bias and writes the accumulators straight to y (rows < M, columns
//     < N), two consecutive outputs per store when N is even.
// Grid (⌈M/128⌉, ⌈N/256⌉), row tiles fastest: the blocks resident together share a few column
// slices of W, so W is read from DRAM about once and x (M·K·2 bytes) stays in L2.
// Summation order: per output, k tiles in order, each wgmma's 16 products as the tensor core adds
// them; it does not depend on M or on the row's place, but is not gemm_pipe's order.
// Needs K % 8 == 0 and x, w 16-byte aligned (the tensor maps' row strides and base addresses);
// gpu/wgmma.go encodes the maps and launches it on cards of compute capability 9.0.
#include "wgmma.cuh"

#define WG_BM 128
#define WG_BN 256
#define WG_BK 64
#define WG_STAGES 4
#define WG_A_BYTES (WG_BM * WG_BK * 2)
#define WG_B_BYTES (WG_BN * WG_BK * 2)
#define WG_STAGE_BYTES (WG_A_BYTES + WG_B_BYTES)
// Dynamic shared memory the launcher gives: the ring, its 2·STAGES barriers, and up to 1008
// bytes to reach a 1024-byte boundary (the swizzle's period) from the 16 the device promises.
#define WG_SMEM (WG_STAGES * WG_STAGE_BYTES + 2 * WG_STAGES * 8 + 1024)

extern "C" __global__ void __launch_bounds__(384, 1)
    gemm_wgmma_bf16(float* __restrict__ y, const bf16* __restrict__ bias, int M, int N, int K,
                    const __grid_constant__ TensorMap xmap, const __grid_constant__ TensorMap wmap) {
    DYNAMIC_SMEM(raw);
    unsigned char* smem = raw + (1024 - smem_addr(raw) % 1024) % 1024;
    uint64_t* full = (uint64_t*)(smem + WG_STAGES * WG_STAGE_BYTES);
    uint64_t* empty = full + WG_STAGES;
    int m0 = blockIdx.x * WG_BM, n0 = blockIdx.y * WG_BN;
    int tiles = (K + WG_BK - 1) / WG_BK;
    int wg = threadIdx.x / 128;

    if (threadIdx.x == 0) {
        for (int s = 0; s < WG_STAGES; s++) mbar_init(&full[s], 1), mbar_init(&empty[s], 256);
        mbar_init_fence();
    }
    __syncthreads();

    if (wg == 0) {
        setmaxnreg_dec<40>();
        if (threadIdx.x == 0) {
            tma_prefetch_map(&xmap);
            tma_prefetch_map(&wmap);
            for (int kt = 0; kt < tiles; kt++) {
                int s = kt % WG_STAGES;
                // Round r of stage s reuses it after the consumers' r-th release (phase r − 1).
                if (kt >= WG_STAGES) mbar_wait(&empty[s], (kt / WG_STAGES - 1) & 1);
                unsigned char* st = smem + s * WG_STAGE_BYTES;
                mbar_arrive_expect_tx(&full[s], WG_STAGE_BYTES);
                tma_load_2d(st, &xmap, &full[s], kt * WG_BK, m0);
                tma_load_2d(st + WG_A_BYTES, &wmap, &full[s], kt * WG_BK, n0);
            }
        }
        return;
    }

    setmaxnreg_inc<232>();
    int c = wg - 1;
    float acc[128];
#pragma unroll
    for (int i = 0; i < 128; i++) acc[i] = 0.f;
    for (int kt = 0; kt < tiles; kt++) {
        int s = kt % WG_STAGES;
        mbar_wait(&full[s], (kt / WG_STAGES) & 1);
        unsigned char* st = smem + s * WG_STAGE_BYTES;
        // This consumer's 64 rows of the x box (64 × 128 bytes = 8 swizzle periods in), and the w box.
        uint64_t da = wgmma_desc_sw128(st + c * 64 * 128), db = wgmma_desc_sw128(st + WG_A_BYTES);
        wgmma_fence();
#pragma unroll
        for (int k = 0; k < WG_BK / 16; k++) wgmma_m64n256k16_bf16(acc, da + 2 * k, db + 2 * k);
        wgmma_commit();
        // Tile kt−1's group is done (its shared-memory reads too): its stage may be refilled.
        wgmma_wait<1>();
        wgmma_fence_acc(acc);
        if (kt > 0) mbar_arrive(&empty[(kt - 1) % WG_STAGES]);
    }
    wgmma_wait<0>();
    wgmma_fence_acc(acc);

    int t = threadIdx.x % 128, w = t / 32, g = (t % 32) / 4, q = t % 4;
    bool pairs = N % 2 == 0;
#pragma unroll
    for (int j = 0; j < 32; j++) {
        int col = n0 + 8 * j + 2 * q;
        float b0 = bias != nullptr && col < N ? to_f32(bias[col]) : 0.f;
        float b1 = bias != nullptr && col + 1 < N ? to_f32(bias[col + 1]) : 0.f;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int row = m0 + 64 * c + 16 * w + g + 8 * h;
            if (row >= M || col >= N) continue;
            float* dst = y + (size_t)row * N + col;
            float v0 = acc[4 * j + 2 * h] + b0, v1 = acc[4 * j + 2 * h + 1] + b1;
            if (pairs) {
                *(float2*)dst = make_float2(v0, v1);
            } else {
                dst[0] = v0;
                if (col + 1 < N) dst[1] = v1;
            }
        }
    }
}
