// The tensor-core helpers of kernels/mma.cuh on the CPU: ldmatrix and mma.sync gather the 32
// lanes' operands through a per-warp buffer (the lanes are threads that meet at the warp's
// barrier) and hand each lane its part by the PTX ISA's fragment layouts, written out here
// element by element so that the kernels' own index arithmetic is checked against them. cp.async
// copies are deferred to the wait_group that must complete them (zeros when bytes = 0).
#pragma once
#include "common.cuh"
#include <cstdio>
#include <cstdlib>

struct SimWarpOperands {
    const void* addr[32][32];    // [warp][lane]: ldmatrix row addresses
    uint32_t regs[32][32][6];    // [warp][lane]: a0..a3, b0, b1 of mma.sync
};
inline SimWarpOperands sim_ops;

// Dynamic shared memory: one buffer, since blocks run one at a time.
alignas(16) inline unsigned char sim_dynamic_smem[228 * 1024];
#define DYNAMIC_SMEM(name) unsigned char* name = sim_dynamic_smem

inline void sim_warp_sync() { sim_block->warps[threadIdx.x >> 5]->arrive_and_wait(); }

// cp.async: each thread queues its copies and commit closes a group; a copy lands only when a
// wait_group lets fewer groups stay in flight than are committed, oldest first. So a kernel that
// reads a stage before waiting for it reads stale data here as it would on the device.
struct SimCopy { void* dst; const void* src; int bytes; };
inline thread_local std::vector<SimCopy> sim_open_group;
inline thread_local std::vector<std::vector<SimCopy>> sim_groups;
inline void cp_async16(void* dst, const void* src, int bytes) { sim_open_group.push_back({dst, src, bytes}); }
inline void cp_async_commit() {
    sim_groups.push_back(sim_open_group);
    sim_open_group.clear();
}
template <int N> inline void cp_async_wait() {
    while ((int)sim_groups.size() > N) {
        for (auto& c : sim_groups.front()) {
            if (c.bytes == 16) memcpy(c.dst, c.src, 16);
            else memset(c.dst, 0, 16);
        }
        sim_groups.erase(sim_groups.begin());
    }
}
inline void cp_async_wait1() { cp_async_wait<1>(); }

// Register i of lane l: matrix i (rows from lanes 8i…8i+7), row l/4, elements 2(l%4), 2(l%4)+1;
// with trans, column l/4 at rows 2(l%4), 2(l%4)+1.
inline void sim_ldmatrix(uint32_t (&r)[4], const void* p, bool trans) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    if ((uintptr_t)p % 16 != 0) { printf("ldmatrix: row address %p of lane %d not 16-byte aligned\n", p, lane); abort(); }
    sim_ops.addr[warp][lane] = p;
    sim_warp_sync();
    for (int i = 0; i < 4; i++) {
        uint32_t e[2];
        for (int h = 0; h < 2; h++) {
            int row = trans ? 2 * t + h : g, col = trans ? g : 2 * t + h;
            e[h] = ((const uint16_t*)sim_ops.addr[warp][8 * i + row])[col];
        }
        r[i] = e[0] | e[1] << 16;
    }
    sim_warp_sync();
}
inline void ldmatrix_x4(uint32_t (&r)[4], const void* p) { sim_ldmatrix(r, p, false); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) { sim_ldmatrix(r, p, true); }

template <typename W> inline float sim_widen(uint32_t bits) { return to_f32(W{(unsigned short)bits}); }

// D = A·B + C for m16n8k16: A (16 × 16) element (row, k) is in lane 4·(row % 8) + (k % 8)/2,
// register (row ≥ 8) + 2·(k ≥ 8), half k % 2; B (16 × 8) element (k, n) in lane 4n + (k % 8)/2,
// register k ≥ 8, half k % 2; C element (row, n) in lane 4·(row % 8) + n/2, register
// 2·(row ≥ 8) + n % 2.
template <typename W>
inline void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    uint32_t* mine = sim_ops.regs[warp][lane];
    mine[0] = a[0], mine[1] = a[1], mine[2] = a[2], mine[3] = a[3], mine[4] = b0, mine[5] = b1;
    sim_warp_sync();
    auto A = [&](int row, int k) {
        uint32_t w = sim_ops.regs[warp][4 * (row % 8) + (k % 8) / 2][(row >= 8) + 2 * (k >= 8)];
        return sim_widen<W>(k % 2 ? w >> 16 : w & 0xffff);
    };
    auto B = [&](int k, int n) {
        uint32_t w = sim_ops.regs[warp][4 * n + (k % 8) / 2][4 + (k >= 8)];
        return sim_widen<W>(k % 2 ? w >> 16 : w & 0xffff);
    };
    float d[4];
    for (int e = 0; e < 4; e++) {
        int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
        double s = c[e];
        for (int k = 0; k < 16; k++) s += (double)A(row, k) * B(k, col);
        d[e] = (float)s;
    }
    sim_warp_sync();
    for (int e = 0; e < 4; e++) c[e] = d[e];
}

inline uint32_t pack2(float lo, float hi, bf16) { return (uint32_t)f32_to_bf16_bits(lo) | ((uint32_t)f32_to_bf16_bits(hi) << 16); }
inline uint32_t pack2(float lo, float hi, f16) { return (uint32_t)f32_to_f16_bits(lo) | ((uint32_t)f32_to_f16_bits(hi) << 16); }
