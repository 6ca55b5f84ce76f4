// The Hopper model of kernels/sim/wgmma.cuh (TMA tile loads with 128-byte swizzle and zero fill,
// mbarrier phases, wgmma m64n256k16 from shared-memory descriptors) against f64 products, then
// gemm_wgmma_bf16 (kernels/gemm_wgmma.cu) on it. `make kernel-sim` builds and runs it after
// mma_harness.cpp.
#include "gemm_wgmma.cu"
#include <cstdio>
#include <random>
#include <string>
#include "check.h"

static std::mt19937_64 rng(16);
static double randn() { static std::normal_distribution<double> d; return d(rng); }

// Random bf16 values (as bits) and their f64 values.
static void random_bf16(std::vector<uint16_t>& bits, std::vector<double>& vals, size_t n, double scale) {
    bits.resize(n), vals.resize(n);
    for (size_t i = 0; i < n; i++) {
        bits[i] = f32_to_bf16_bits((float)(randn() * scale));
        vals[i] = to_f32(bf16{bits[i]});
    }
}

// One warpgroup multiplies a 64-row box of A (rows m0…, of Ma) by a 256-row box of B (rows n0…,
// of Nb) over all of K: per 64-wide k tile, thread 0 announces the bytes and issues both TMA
// loads into one of two stages, every thread waits on the stage's barrier (parity alternating
// per reuse), runs four wgmma k16 steps (descriptor start +32 bytes each) and retires them. Boxes
// past Ma, Nb or K must read zeros: the f64 product counts only what is inside.
static void test_model() {
    struct C { int Ma, Nb, K, m0, n0; };
    for (C c : std::vector<C>{{64, 256, 128, 0, 0}, {100, 300, 200, 64, 256}, {70, 40, 520, 0, 0}, {200, 600, 72, 128, 256}}) {
        std::vector<uint16_t> a, b;
        std::vector<double> ad, bd;
        random_bf16(a, ad, (size_t)c.Ma * c.K, 1);
        random_bf16(b, bd, (size_t)c.Nb * c.K, 1 / sqrt(c.K));
        TensorMap am, bm;
        const char* why = sim_encode_tiled(&am, a.data(), c.K, c.Ma, 2ull * c.K, 64, 64);
        if (!why) why = sim_encode_tiled(&bm, b.data(), c.K, c.Nb, 2ull * c.K, 64, 256);
        if (why) sim_fail(why);
        std::vector<float> out(64 * 256, NAN);
        const int A = 64 * 128, B = 256 * 128, stage = A + B;
        sim_launch(1, 1, 1, 128, [&] {
            DYNAMIC_SMEM(raw);
            unsigned char* smem = raw + (1024 - smem_addr(raw) % 1024) % 1024;
            uint64_t* full = (uint64_t*)(smem + 2 * stage);
            if (threadIdx.x == 0) mbar_init(&full[0], 1), mbar_init(&full[1], 1);
            __syncthreads();
            float d[128];
            for (float& v : d) v = 0;
            for (int kt = 0; kt < (c.K + 63) / 64; kt++) {
                int s = kt % 2;
                unsigned char* as = smem + s * stage;
                if (threadIdx.x == 0) {
                    mbar_arrive_expect_tx(&full[s], stage);
                    tma_load_2d(as, &am, &full[s], kt * 64, c.m0);
                    tma_load_2d(as + A, &bm, &full[s], kt * 64, c.n0);
                }
                mbar_wait(&full[s], (kt / 2) & 1);
                uint64_t da = wgmma_desc_sw128(as), db = wgmma_desc_sw128(as + A);
                wgmma_fence();
                for (int k = 0; k < 4; k++) wgmma_m64n256k16_bf16(d, da + 2 * k, db + 2 * k);
                wgmma_commit();
                wgmma_wait<0>();
                __syncthreads();  // stage s is read by all before it is refilled
            }
            int t = threadIdx.x, w = t / 32, g = (t % 32) / 4, q = t % 4;
            for (int i = 0; i < 128; i++) out[(16 * w + g + 8 * ((i / 2) % 2)) * 256 + 8 * (i / 4) + 2 * q + i % 2] = d[i];
        });
        std::vector<double> want(64 * 256, 0.0);
        for (int m = 0; m < 64 && c.m0 + m < c.Ma; m++)
            for (int n = 0; n < 256 && c.n0 + n < c.Nb; n++) {
                double s = 0;
                for (int k = 0; k < c.K; k++) s += ad[(size_t)(c.m0 + m) * c.K + k] * bd[(size_t)(c.n0 + n) * c.K + k];
                want[m * 256 + n] = s;
            }
        compare("model: TMA boxes + wgmma m64n256k16 A " + std::to_string(c.Ma) + "x" + std::to_string(c.K) + " at row " + std::to_string(c.m0) + ", B " +
                    std::to_string(c.Nb) + "x" + std::to_string(c.K) + " at row " + std::to_string(c.n0),
                out, want, 1e-5, 1e-5);
    }
    // The driver's refusals that the launcher must avoid.
    struct R { uint64_t dim0, stride; uint32_t box0; const char* what; };
    std::vector<uint16_t> buf(4096);
    for (R r : std::vector<R>{{100, 200, 64, "a row stride not a multiple of 16"}, {64, 128, 32, "a 64-byte box row"}, {64, 64, 64, "a stride shorter than a row"}}) {
        TensorMap m;
        checks++;
        if (sim_encode_tiled(&m, buf.data(), r.dim0, 8, r.stride, r.box0, 8) == nullptr) {
            fails++;
            printf("FAIL model: encoding a tensor map with %s succeeded\n", r.what);
        }
    }
}

// gemm_wgmma_bf16 against an f64 product of the same bf16 operands (x rounded as round_bf16
// does). Small ragged shapes run every block: rows past M and columns past N (even and odd N),
// K with a ragged last tile, K of more than 4 tiles (the ring reused, barrier phases alternating),
// with and without bias. The Llama-3.1-8B and Llama-3.2-1B products (out × in) run with a ragged
// row count at the blocks of the last row tile and the first and last column slices only: the
// rows and columns those blocks read hold random values, every other element of x and w is a
// NaN, so a block that reads outside its tile poisons its outputs; y starts as NaN, with a
// sentinel past its end.
static void test_gemm_wgmma() {
    struct C { const char* name; int M, N, K; bool bias, all; };
    for (C c : std::vector<C>{{"", 200, 300, 200, true, true}, {"", 128, 256, 576, false, true}, {"", 9, 40, 72, true, true},
                              {"", 130, 301, 1032, true, true}, {"", 300, 520, 328, false, true},
                              {"8B q/o_proj", 300, 4096, 4096, false, false}, {"8B k/v_proj", 2049, 1024, 4096, false, false},
                              {"8B gate/up_proj", 300, 14336, 4096, false, false}, {"8B down_proj", 141, 4096, 14336, false, false},
                              {"1B q/o_proj", 77, 2048, 2048, true, false}, {"1B k/v_proj", 300, 512, 2048, false, false},
                              {"1B gate/up_proj", 300, 8192, 2048, false, false}, {"1B down_proj", 300, 2048, 8192, false, false}}) {
        int M = c.M, N = c.N, K = c.K, gx = (M + WG_BM - 1) / WG_BM, gy = (N + WG_BN - 1) / WG_BN;
        auto run = [&](int bx, int by) { return c.all || (bx == gx - 1 && (by == 0 || by == gy - 1)); };
        const uint16_t nan = 0x7fc0;
        std::vector<uint16_t> x((size_t)M * K, nan), w((size_t)N * K, nan), bias(N);
        std::vector<float> y((size_t)M * N + 8, NAN);
        for (int m = 0; m < M; m++)
            if (c.all || m / WG_BM == gx - 1)
                for (int k = 0; k < K; k++) x[(size_t)m * K + k] = f32_to_bf16_bits((float)randn());
        for (int n = 0; n < N; n++)
            if (c.all || n / WG_BN == 0 || n / WG_BN == gy - 1)
                for (int k = 0; k < K; k++) w[(size_t)n * K + k] = f32_to_bf16_bits((float)(randn() / sqrt(K)));
        for (auto& v : bias) v = f32_to_bf16_bits((float)randn());
        TensorMap xmap, wmap;
        const char* why = sim_encode_tiled(&xmap, x.data(), K, M, 2ull * K, WG_BK, WG_BM);
        if (!why) why = sim_encode_tiled(&wmap, w.data(), K, N, 2ull * K, WG_BK, WG_BN);
        if (why) sim_fail(why);
        const bf16* bp = c.bias ? (const bf16*)bias.data() : nullptr;
        sim_launch(gx, gy, 1, 384, [&] {
            if (run(blockIdx.x, blockIdx.y)) gemm_wgmma_bf16(y.data(), bp, M, N, K, xmap, wmap);
        });
        std::vector<float> got;
        std::vector<double> want;
        bool untouched = true;
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) {
                float v = y[(size_t)m * N + n];
                if (!run(m / WG_BM, n / WG_BN)) {
                    untouched = untouched && std::isnan(v);
                    continue;
                }
                double s = c.bias ? to_f32(bf16{bias[n]}) : 0.0;
                for (int k = 0; k < K; k++) s += (double)to_f32(bf16{x[(size_t)m * K + k]}) * to_f32(bf16{w[(size_t)n * K + k]});
                got.push_back(v), want.push_back(s);
            }
        for (size_t i = (size_t)M * N; i < y.size(); i++) untouched = untouched && std::isnan(y[i]);
        std::string what = std::string("gemm_wgmma_bf16 ") + c.name + (c.name[0] ? " " : "") + "M=" + std::to_string(M) + " N=" + std::to_string(N) +
                           " K=" + std::to_string(K) + (c.bias ? " bias" : "") + (c.all ? "" : " (last row tile, first and last column slices)");
        compare(what, got, want, 1e-5, 1e-4);
        checks++;
        if (!untouched) fails++, printf("FAIL %s: wrote outside its blocks' tiles or past the end of y\n", what.c_str());
    }
}

int main() {
    test_model();
    test_gemm_wgmma();
    printf("%d checks, %d failures\n", checks, fails);
    return fails != 0;
}
