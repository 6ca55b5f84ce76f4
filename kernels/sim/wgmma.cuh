// The Hopper helpers of kernels/wgmma.cuh on the CPU, for gemm_wgmma.cu in the host simulation
// (kernels/sim/wgmma_harness.cpp), written from the PTX ISA and the driver's documentation so that
// the kernel's own index arithmetic is checked against them:
//   - shared memory is one buffer (sim_shared); a shared address (smem_addr) is an offset into
//     it, and dynamic shared memory starts 16 bytes past a 1024-byte boundary (all the device
//     promises), so a kernel must align its swizzled stages itself;
//   - a tensor map (TensorMap) is what sim_encode_tiled keeps of cuTensorMapEncodeTiled's
//     arguments, after the driver's checks for a 2-d map of 16-bit elements with 128-byte swizzle;
//   - TMA copies are queued on their mbarrier and land when a thread waits on it: each element of
//     the box from the tensor or, outside it, zero, at the swizzled address (16-byte chunk j of
//     128-byte row r at chunk j ^ (r % 8), i.e. address bits 4–6 XOR bits 7–9, which needs a
//     1024-byte aligned destination), and the box's bytes completed on the barrier. A stage read
//     without waiting for its barrier reads stale data here, as on the device; a barrier that
//     receives more bytes than announced aborts;
//   - mbarrier phases: arrivals and announced bytes, waits by parity (the phase of that parity
//     has completed when the count of completed phases has the other parity);
//   - wgmma.mma_async m64n256k16: queued per thread at issue, run when wgmma.wait_group retires
//     its group (so accumulators read before the wait are stale); each thread computes its own
//     128 accumulators at the documented layout from the operands its descriptors address,
//     summing each k16 step in f64 and rounding to f32 once per instruction.
#pragma once
#include "mma.cuh"
#include <condition_variable>
#include <map>
#include <mutex>

#define __grid_constant__

alignas(1024) inline unsigned char sim_shared[230 * 1024];
#undef DYNAMIC_SMEM
#define DYNAMIC_SMEM(name) unsigned char* name = sim_shared + 16

[[noreturn]] inline void sim_fail(const char* what) {
    printf("simulation: %s\n", what);
    fflush(stdout);
    abort();
}

inline uint32_t smem_addr(const void* p) {
    auto d = (const unsigned char*)p - sim_shared;
    if (d < 0 || d >= (long)sizeof sim_shared) sim_fail("a shared address outside shared memory");
    return (uint32_t)d;
}

struct TensorMap {
    const unsigned char* base;
    uint64_t dim[2];   // elements: innermost first
    uint64_t stride;   // bytes between rows (dimension 1)
    uint32_t box[2];   // elements
};

// cuTensorMapEncodeTiled(CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, rank 2, base, {dim0, dim1}, {stride},
// {box0, box1}, element strides {1, 1}, no interleave, CU_TENSOR_MAP_SWIZZLE_128B, any L2
// promotion, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE (zeros)): nullptr when encoded, else why not. The
// model supports only boxes whose rows are exactly one 128-byte swizzle row.
inline const char* sim_encode_tiled(TensorMap* m, const void* base, uint64_t dim0, uint64_t dim1, uint64_t stride, uint32_t box0, uint32_t box1) {
    if ((uintptr_t)base % 16 != 0) return "global address not 16-byte aligned";
    if (dim0 == 0 || dim1 == 0 || dim0 > (1ull << 32) || dim1 > (1ull << 32)) return "global dimension out of range";
    if (stride % 16 != 0 || stride >= (1ull << 40)) return "global stride not a multiple of 16 below 2^40";
    if (stride < dim0 * 2) return "global stride shorter than a row";
    if (box0 == 0 || box1 == 0 || box0 > 256 || box1 > 256) return "box dimension out of 1…256";
    if (box0 * 2 > 128) return "box row longer than the 128-byte swizzle span";
    if (box0 * 2 != 128) return "box rows other than 128 bytes (not modelled)";
    *m = TensorMap{(const unsigned char*)base, {dim0, dim1}, stride, {box0, box1}};
    return nullptr;
}

struct SimTMA {
    unsigned char* dst;
    TensorMap map;  // by value: the kernel's parameter may be gone when the copy lands
    int c0, c1;
};
struct SimBarrier {
    int count, pending;
    long long tx;
    unsigned phases;  // completed
    std::vector<SimTMA> copies;
};
inline std::mutex sim_bar_mu;
inline std::condition_variable sim_bar_cv;
inline std::map<const void*, SimBarrier> sim_bars;

inline SimBarrier& sim_bar(const void* p) {
    auto it = sim_bars.find(p);
    if (it == sim_bars.end()) sim_fail("mbarrier used before mbarrier.init");
    return it->second;
}
inline void sim_bar_step(SimBarrier& b) {
    if (b.pending < 0) sim_fail("more arrivals on an mbarrier phase than its count");
    if (b.tx < 0) sim_fail("more bytes completed on an mbarrier phase than announced");
    if (b.pending == 0 && b.tx == 0) b.phases++, b.pending = b.count;
    sim_bar_cv.notify_all();
}
inline void sim_tma_land(const SimTMA& c) {
    const TensorMap& m = c.map;
    if (smem_addr(c.dst) % 1024 != 0) sim_fail("TMA with 128-byte swizzle into shared memory not 1024-byte aligned");
    for (uint32_t r = 0; r < m.box[1]; r++)
        for (uint32_t e = 0; e < m.box[0]; e++) {
            uint64_t row = (uint64_t)c.c1 + r, col = (uint64_t)c.c0 + e;
            uint16_t v = 0;
            if (c.c0 >= 0 && c.c1 >= 0 && row < m.dim[1] && col < m.dim[0]) memcpy(&v, m.base + row * m.stride + col * 2, 2);
            uint32_t a = smem_addr(c.dst) + (r * m.box[0] + e) * 2;
            a ^= ((a >> 7) & 7) << 4;
            if (a + 2 > sizeof sim_shared) sim_fail("TMA box past the end of shared memory");
            memcpy(sim_shared + a, &v, 2);
        }
}

inline void mbar_init(uint64_t* bar, int count) {
    std::lock_guard<std::mutex> l(sim_bar_mu);
    sim_bars[bar] = SimBarrier{count, count, 0, 0, {}};
}
inline void mbar_init_fence() {}
inline void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
    std::lock_guard<std::mutex> l(sim_bar_mu);
    SimBarrier& b = sim_bar(bar);
    b.tx += bytes, b.pending--;
    sim_bar_step(b);
}
inline void mbar_arrive(uint64_t* bar) {
    std::lock_guard<std::mutex> l(sim_bar_mu);
    SimBarrier& b = sim_bar(bar);
    b.pending--;
    sim_bar_step(b);
}
inline void mbar_wait(uint64_t* bar, int parity) {
    std::unique_lock<std::mutex> l(sim_bar_mu);
    for (;;) {
        SimBarrier& b = sim_bar(bar);
        for (const SimTMA& c : b.copies) {
            sim_tma_land(c);
            b.tx -= 2ll * c.map.box[0] * c.map.box[1];
            sim_bar_step(b);
        }
        b.copies.clear();
        if ((int)(b.phases & 1) != parity) return;
        sim_bar_cv.wait(l);
    }
}

inline void tma_load_2d(void* dst, const TensorMap* map, uint64_t* bar, int c0, int c1) {
    std::lock_guard<std::mutex> l(sim_bar_mu);
    sim_bar(bar).copies.push_back(SimTMA{(unsigned char*)dst, *map, c0, c1});
    sim_bar_cv.notify_all();
}
inline void tma_prefetch_map(const TensorMap*) {}

inline uint64_t wgmma_desc_sw128(const void* p) {
    return (uint64_t)((smem_addr(p) & 0x3ffff) >> 4) | (uint64_t)1 << 16 | (uint64_t)(1024 >> 4) << 32 | (uint64_t)1 << 62;
}

template <int R> inline void setmaxnreg_inc() {}
template <int R> inline void setmaxnreg_dec() {}

// Element (row, k) of a K-major bf16 operand with 128-byte swizzle, by its descriptor.
inline float sim_desc_elem(uint64_t desc, int row, int k) {
    if (desc >> 62 != 1) sim_fail("wgmma descriptor: swizzle mode other than 128 bytes (not modelled)");
    if ((desc >> 49 & 7) != 0) sim_fail("wgmma descriptor: base offset other than 0 (not modelled)");
    uint32_t start = (uint32_t)(desc & 0x3fff) << 4, sbo = (uint32_t)(desc >> 32 & 0x3fff) << 4;
    uint32_t a = start + (row / 8) * sbo + (row % 8) * 128 + 2 * k;
    a ^= ((a >> 7) & 7) << 4;
    if (a + 2 > sizeof sim_shared) sim_fail("wgmma operand past the end of shared memory");
    uint16_t v;
    memcpy(&v, sim_shared + a, 2);
    return to_f32(bf16{v});
}

struct SimWGMMA {
    float* d;
    uint64_t da, db;
};
inline thread_local std::vector<SimWGMMA> sim_wgmma_open;
inline thread_local std::vector<std::vector<SimWGMMA>> sim_wgmma_groups;

inline void wgmma_m64n256k16_bf16(float (&d)[128], uint64_t da, uint64_t db) { sim_wgmma_open.push_back({d, da, db}); }
inline void wgmma_fence() {}
inline void wgmma_fence_acc(float (&)[128]) {}
inline void wgmma_commit() {
    sim_wgmma_groups.push_back(sim_wgmma_open);
    sim_wgmma_open.clear();
}
template <int N> inline void wgmma_wait() {
    int t = threadIdx.x % 128, w = t / 32, g = (t % 32) / 4, q = t % 4;
    while ((int)sim_wgmma_groups.size() > N) {
        for (const SimWGMMA& op : sim_wgmma_groups.front())
            for (int i = 0; i < 128; i++) {
                int row = 16 * w + g + 8 * ((i / 2) % 2), col = 8 * (i / 4) + 2 * q + i % 2;
                double s = op.d[i];
                for (int k = 0; k < 16; k++) s += (double)sim_desc_elem(op.da, row, k) * sim_desc_elem(op.db, col, k);
                op.d[i] = (float)s;
            }
        sim_wgmma_groups.erase(sim_wgmma_groups.begin());
    }
}
