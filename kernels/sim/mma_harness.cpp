// The tensor-core kernels (gemm.cu's gemm_bf16/f16, gemm_pipe_*, gemm_splitk_*, attention.cu's
// attention_prefill_mma_* and the pipelined attention_prefill_fa_kvbf16_*) on the CPU through the host shims in common.cuh and mma.cuh, against f64 references that round the
// operands to 16 bits as the kernels do. gemm_bf16 and gemm_f16 passed their conformance tests on
// an H100, so they vouch for the emulated fragment layouts; the attention kernel adds ldmatrix
// .trans and the C-to-A reuse of P. Ragged shapes, paged caches with shuffled blocks, prefixes
// already in the cache, GQA groups 1–4, poisoned outputs and a sentinel past their end.
// `make kernel-sim` builds and runs it after harness.cpp.
#include "gemm.cu"
#include "attention.cu"
#include <cstdio>
#include <random>
#include <string>
#include <algorithm>
#include "check.h"

static std::mt19937_64 rng(9);
static double randn() { static std::normal_distribution<double> d; return d(rng); }
static double round16(float f, int dt) { return dt == 1 ? to_f32(bf16{f32_to_bf16_bits(f)}) : f16_to_f32(f32_to_f16_bits(f)); }

static void test_gemm() {
    for (int dt = 1; dt <= 2; dt++)
        for (auto s : std::vector<std::array<int, 3>>{{9, 8, 8}, {130, 136, 200}, {40, 72, 264}, {64, 64, 328}}) {
            int M = s[0], N = s[1], K = s[2];
            std::vector<float> x((size_t)M * K), y((size_t)M * N + 8, NAN);
            std::vector<uint16_t> w((size_t)N * K), bias(N);
            std::vector<double> wd(w.size()), bd(N), want((size_t)M * N);
            for (auto& v : x) v = (float)randn();
            for (size_t i = 0; i < w.size(); i++) {
                float f = (float)(randn() / sqrt(K));
                w[i] = dt == 1 ? f32_to_bf16_bits(f) : f32_to_f16_bits(f);
                wd[i] = round16(f, dt);
            }
            for (int i = 0; i < N; i++) {
                float f = (float)randn();
                bias[i] = dt == 1 ? f32_to_bf16_bits(f) : f32_to_f16_bits(f);
                bd[i] = round16(f, dt);
            }
            for (int m = 0; m < M; m++)
                for (int n = 0; n < N; n++) {
                    double a = bd[n];
                    for (int k = 0; k < K; k++) a += round16(x[(size_t)m * K + k], dt) * wd[(size_t)n * K + k];
                    want[(size_t)m * N + n] = a;
                }
            std::string shape = std::string(dt == 1 ? "bf16" : "f16") + " M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K);
            sim_launch((N + 127) / 128, (M + 127) / 128, 1, 256, [&] {
                if (dt == 1) gemm_bf16(y.data(), x.data(), (const bf16*)w.data(), (const bf16*)bias.data(), M, N, K);
                else gemm_f16(y.data(), x.data(), (const f16*)w.data(), (const f16*)bias.data(), M, N, K);
            });
            compare("gemm " + shape, y, want, 1e-5, 1e-4);
            // The pipelined form: x rounded by round_*, then both operands by cp.async.
            std::vector<uint16_t> x16(x.size() + 8, 0xffff);
            sim_launch(((unsigned)x.size() / 4 + 255) / 256, 1, 1, 256, [&] {
                if (dt == 1) round_bf16((bf16*)x16.data(), x.data(), x.size());
                else round_f16((f16*)x16.data(), x.data(), x.size());
            });
            std::vector<float> y2((size_t)M * N + 8, NAN);
            sim_launch((N + 127) / 128, (M + 127) / 128, 1, 256, [&] {
                if (dt == 1) gemm_pipe_bf16(y2.data(), (const bf16*)x16.data(), (const bf16*)w.data(), (const bf16*)bias.data(), M, N, K);
                else gemm_pipe_f16(y2.data(), (const f16*)x16.data(), (const f16*)w.data(), (const f16*)bias.data(), M, N, K);
            });
            compare("gemm_pipe " + shape, y2, want, 1e-5, 1e-4);
            for (size_t i = x.size(); i < x16.size(); i++)
                if (x16[i] != 0xffff) { fails++; printf("FAIL round wrote past its end\n"); break; }
        }
}

// The small-batch split-K GEMM: x rounded by round_*, gemm_splitk_m{32,64,128}_* into per-split
// partial sums (bias in split 0), splitk_reduce_f32 summing them in split order. Row counts across
// the three row tiles (9…128, padded rows zero-filled), N within and past a 256-column block, K
// with a ragged last 64-wide tile and a last split shorter than the others, one split (y written
// directly) and several, with and without bias; M·N a multiple of 4 (the reduction's 16-byte
// path) and not (its element path).
static void test_gemm_splitk() {
    struct C { int M, N, K, splits; bool bias; };
    for (int dt = 1; dt <= 2; dt++)
        for (C c : std::vector<C>{{9, 136, 264, 3, true}, {16, 72, 200, 1, true}, {33, 200, 520, 4, false},
                                  {64, 136, 1032, 2, true}, {64, 300, 1032, 2, true},
                                  {45, 301, 776, 3, false}, {100, 40, 456, 3, true}, {128, 130, 1544, 2, false}}) {
            int M = c.M, N = c.N, K = c.K;
            std::vector<float> x((size_t)M * K);
            std::vector<uint16_t> w((size_t)N * K), bias(N);
            std::vector<double> wd(w.size()), bd(N, 0.0), want((size_t)M * N);
            for (auto& v : x) v = (float)randn();
            for (size_t i = 0; i < w.size(); i++) {
                float f = (float)(randn() / sqrt(K));
                w[i] = dt == 1 ? f32_to_bf16_bits(f) : f32_to_f16_bits(f);
                wd[i] = round16(f, dt);
            }
            for (int i = 0; i < N; i++) {
                float f = (float)randn();
                bias[i] = dt == 1 ? f32_to_bf16_bits(f) : f32_to_f16_bits(f);
                if (c.bias) bd[i] = round16(f, dt);
            }
            for (int m = 0; m < M; m++)
                for (int n = 0; n < N; n++) {
                    double a = bd[n];
                    for (int k = 0; k < K; k++) a += round16(x[(size_t)m * K + k], dt) * wd[(size_t)n * K + k];
                    want[(size_t)m * N + n] = a;
                }
            std::vector<uint16_t> x16(x.size());
            sim_launch(((unsigned)x.size() / 4 + 255) / 256, 1, 1, 256, [&] {
                if (dt == 1) round_bf16((bf16*)x16.data(), x.data(), x.size());
                else round_f16((f16*)x16.data(), x.data(), x.size());
            });
            int tiles = (K + SK_BK - 1) / SK_BK, per = (tiles + c.splits - 1) / c.splits, splits = (tiles + per - 1) / per;
            int bm = M <= 32 ? 32 : M <= 64 ? 64 : 128;
            const uint16_t* bp = c.bias ? bias.data() : nullptr;
            std::vector<float> part((size_t)splits * M * N + 8, NAN), y((size_t)M * N + 8, NAN);
            std::vector<float>& direct = splits == 1 ? y : part;
            sim_launch((N + SK_BN - 1) / SK_BN, splits, 1, 256, [&] {
                auto xb = (const bf16*)x16.data();
                auto wb = (const bf16*)w.data();
                auto bb = (const bf16*)bp;
                auto xh = (const f16*)x16.data();
                auto wh = (const f16*)w.data();
                auto bh = (const f16*)bp;
                int kc = per * SK_BK;
                float* out = direct.data();
                if (dt == 1 && bm == 32) gemm_splitk_m32_bf16(out, xb, wb, bb, M, N, K, kc);
                if (dt == 1 && bm == 64) gemm_splitk_m64_bf16(out, xb, wb, bb, M, N, K, kc);
                if (dt == 1 && bm == 128) gemm_splitk_m128_bf16(out, xb, wb, bb, M, N, K, kc);
                if (dt == 2 && bm == 32) gemm_splitk_m32_f16(out, xh, wh, bh, M, N, K, kc);
                if (dt == 2 && bm == 64) gemm_splitk_m64_f16(out, xh, wh, bh, M, N, K, kc);
                if (dt == 2 && bm == 128) gemm_splitk_m128_f16(out, xh, wh, bh, M, N, K, kc);
            });
            if (splits > 1)
                sim_launch(4, 1, 1, 256, [&] { splitk_reduce_f32(y.data(), part.data(), (size_t)M * N, splits); });
            std::string shape = std::string(dt == 1 ? "bf16" : "f16") + " M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) +
                                " splits=" + std::to_string(splits) + (c.bias ? " bias" : "");
            compare("gemm_splitk_m" + std::to_string(bm) + " " + shape, y, want, 1e-5, 1e-4);
        }
}

// The FMA tiles of the backward's dx += dy·W (gemm_tiled_dx_*), W (K, N) as stored, any shape,
// every weight dtype, added into random values.
static void test_gemm_tiled_dx() {
    for (int dt = 0; dt <= 2; dt++)
        for (auto s : std::vector<std::array<int, 3>>{{45, 67, 33}, {3, 130, 70}, {70, 20, 17}}) {
            int M = s[0], N = s[1], K = s[2];
            std::vector<float> dy((size_t)M * K), wf((size_t)K * N), dx((size_t)M * N + 8, NAN);
            std::vector<uint16_t> wh(wf.size());
            std::vector<double> wd(wf.size()), want((size_t)M * N);
            for (auto& v : dy) v = (float)randn();
            for (size_t i = 0; i < wf.size(); i++) {
                wf[i] = (float)(randn() / sqrt(K));
                wh[i] = dt == 2 ? f32_to_f16_bits(wf[i]) : f32_to_bf16_bits(wf[i]);
                wd[i] = dt == 0 ? wf[i] : round16(wf[i], dt);
            }
            for (int i = 0; i < M * N; i++) dx[i] = (float)randn();
            for (int m = 0; m < M; m++)
                for (int n = 0; n < N; n++) {
                    double a = dx[(size_t)m * N + n];
                    for (int k = 0; k < K; k++) a += (double)dy[(size_t)m * K + k] * wd[(size_t)k * N + n];
                    want[(size_t)m * N + n] = a;
                }
            sim_launch((N + TILE - 1) / TILE, (M + TILE - 1) / TILE, 1, 256, [&] {
                if (dt == 0) gemm_tiled_dx_f32(dx.data(), dy.data(), wf.data(), M, N, K);
                if (dt == 1) gemm_tiled_dx_bf16(dx.data(), dy.data(), (const bf16*)wh.data(), M, N, K);
                if (dt == 2) gemm_tiled_dx_f16(dx.data(), dy.data(), (const f16*)wh.data(), M, N, K);
            });
            compare(std::string("gemm_tiled_dx_") + (dt == 0 ? "f32" : dt == 1 ? "bf16" : "f16") + " M=" + std::to_string(M) + " N=" + std::to_string(N) +
                        " K=" + std::to_string(K), dx, want, 2e-6, 2e-6);
        }
}

// A prefill of n tokens at positions p0…p0+n−1 of one sequence whose earlier p0 positions are
// already in a paged cache of shuffled blocks.
static void test_attention_mma() {
    struct C { int n, p0, heads, kvh, dim, block; };
    for (C c : std::vector<C>{{100, 0, 8, 2, 128, 16}, {70, 0, 6, 2, 20, 3}, {33, 0, 4, 4, 64, 16}, {37, 0, 4, 1, 128, 8},
                              {50, 45, 6, 3, 64, 5}, {80, 29, 8, 2, 128, 16}}) {
        int group = c.heads / c.kvh, width = c.kvh * c.dim, total = c.p0 + c.n;
        int nblocks = (total + c.block - 1) / c.block + 2;
        std::vector<int> perm(nblocks);
        for (int i = 0; i < nblocks; i++) perm[i] = i;
        std::shuffle(perm.begin(), perm.end(), rng);
        int maxb = (total + c.block - 1) / c.block;
        std::vector<int> table((size_t)c.n * maxb), ctx(c.n);
        for (int i = 0; i < c.n; i++) {
            ctx[i] = c.p0 + i + 1;
            for (int b = 0; b < maxb; b++) table[(size_t)i * maxb + b] = perm[b];
        }
        std::vector<float> kc((size_t)nblocks * c.block * width, NAN), vc(kc.size(), NAN);
        std::vector<double> kd((size_t)total * width), vd(kd.size());
        for (int p = 0; p < total; p++)
            for (int e = 0; e < width; e++) {
                size_t row = (size_t)perm[p / c.block] * c.block + p % c.block;
                float k = (float)randn(), v = (float)randn();
                kc[row * width + e] = k, vc[row * width + e] = v;
                kd[(size_t)p * width + e] = round16(k, 1), vd[(size_t)p * width + e] = round16(v, 1);
            }
        std::vector<float> q((size_t)c.n * c.heads * c.dim), out(q.size() + 8, NAN);
        for (auto& v : q) v = (float)randn();
        float scale = 1 / sqrtf((float)c.dim);
        std::vector<double> want(q.size());
        for (int i = 0; i < c.n; i++)
            for (int h = 0; h < c.heads; h++) {
                int g = h / group;
                std::vector<double> s(ctx[i]);
                double m = -INFINITY, l = 0;
                for (int j = 0; j < ctx[i]; j++) {
                    double a = 0;
                    for (int d = 0; d < c.dim; d++) a += round16(q[((size_t)i * c.heads + h) * c.dim + d], 1) * kd[(size_t)j * width + g * c.dim + d];
                    s[j] = a * scale, m = std::max(m, s[j]);
                }
                for (int j = 0; j < ctx[i]; j++) s[j] = exp(s[j] - m), l += s[j];
                for (int d = 0; d < c.dim; d++) {
                    double a = 0;
                    for (int j = 0; j < ctx[i]; j++) a += s[j] * vd[(size_t)j * width + g * c.dim + d];
                    want[((size_t)i * c.heads + h) * c.dim + d] = a / l;
                }
            }
        int bx = (c.n * group + FA_ROWS - 1) / FA_ROWS;
        sim_launch(bx, c.kvh, 1, 128, [&] {
            if (c.dim <= 64) attention_prefill_mma_bf16_d64(out.data(), q.data(), kc.data(), vc.data(), ctx.data(), table.data(), c.n, maxb, c.block, c.heads, c.kvh, c.dim, scale);
            else attention_prefill_mma_bf16_d128(out.data(), q.data(), kc.data(), vc.data(), ctx.data(), table.data(), c.n, maxb, c.block, c.heads, c.kvh, c.dim, scale);
        });
        // What remains after rounding q, k, v as the kernel does: p rounded to bf16, 2⁻⁹ relative
        // per weight, so at most 2⁻⁹·max |v| ≈ 8e-3 for unit-variance v (a layout slip gives O(1)).
        std::string what = " n=" + std::to_string(c.n) + " p0=" + std::to_string(c.p0) + " heads=" + std::to_string(c.heads) + "/" +
                           std::to_string(c.kvh) + " D=" + std::to_string(c.dim) + " block=" + std::to_string(c.block);
        compare("attention_prefill_mma" + what, out, want, 8e-3, 1e-2);
        if (c.dim % 8 != 0) continue;
        // The pipelined kernel over the same keys and values in a bf16 cache: the same arithmetic
        // on the same bf16 operands, so the f32-cache kernel's output bit for bit.
        std::vector<bf16> kb(kc.size()), vb(vc.size());
        for (size_t e = 0; e < kc.size(); e++) kb[e] = bf16{f32_to_bf16_bits(std::isnan(kc[e]) ? 0.f : kc[e])}, vb[e] = bf16{f32_to_bf16_bits(std::isnan(vc[e]) ? 0.f : vc[e])};
        std::vector<float> fa(out.size(), NAN);
        sim_launch(bx, c.kvh, 1, 128, [&] {
            if (c.dim <= 64) attention_prefill_fa_kvbf16_d64(fa.data(), q.data(), kb.data(), vb.data(), ctx.data(), table.data(), c.n, maxb, c.block, c.heads, c.kvh, c.dim, scale);
            else attention_prefill_fa_kvbf16_d128(fa.data(), q.data(), kb.data(), vb.data(), ctx.data(), table.data(), c.n, maxb, c.block, c.heads, c.kvh, c.dim, scale);
        });
        compare("attention_prefill_fa (bf16 cache)" + what, fa, want, 8e-3, 1e-2);
        checks++;
        if (memcmp(fa.data(), out.data(), want.size() * 4) != 0) { fails++; printf("FAIL attention_prefill_fa%s: not the f32-cache kernel's output bit for bit\n", what.c_str()); }
    }
}

int main() {
    test_gemm();
    test_gemm_tiled_dx();
    test_gemm_splitk();
    test_attention_mma();
    printf("%d checks, %d failures\n", checks, fails);
    return fails != 0;
}
