// The kernels of the backward pass and of attribution on the device (rmsnorm_backward_*,
// silu_mul_backward_f32, rope_backward_f32, embedding_backward_f32, gemm_exact*, the attention
// backward and pattern kernels, atp_scores_f64, atp_qk_*, patch_rows_f32, metric_logits_f32) on the CPU
// through the host shims in common.cuh and mma.cuh, against f64 references written here. Gradients
// are added into outputs that start from random values, outputs are poisoned with NaN where they
// are written and a sentinel follows every buffer; batches interleave sequences in a shuffled
// order, shapes are odd (head_dim 20, 48), GQA groups 1–4. The f32-precision products
// (gemm_exact_*) are held to 2e-6: rounding the activation to bf16 misses that by ~1000×. With
// them, the forward ops the decode step shares with the op-by-op path: residual_rmsnorm,
// steer_add/steer_delta and kv_store, held bit for bit to the sums they promise.
// `make kernel-sim` builds and runs it after the other two harnesses.
#include "rmsnorm.cu"
#include "elementwise.cu"
#include "rope.cu"
#include "embedding.cu"
#include "gemm_exact.cu"
#include "attention_backward.cu"
#include "attribution.cu"
#include "steer.cu"
#include "kvcache.cu"
#include <cstdio>
#include <random>
#include <string>
#include <algorithm>
#include <array>
#include "check.h"

static std::mt19937_64 rng(11);
static double randn() { static std::normal_distribution<double> d; return d(rng); }
static const float NaN = NAN;

static std::vector<float> randf(size_t n, double scale = 1, size_t sentinel = 0) {
    std::vector<float> v(n + sentinel, NaN);
    for (size_t i = 0; i < n; i++) v[i] = (float)(scale * randn());
    return v;
}
static std::vector<double> widen(const std::vector<float>& v, size_t n) { return std::vector<double>(v.begin(), v.begin() + n); }
static uint16_t bits16(float f, int dt) { return dt == 1 ? f32_to_bf16_bits(f) : f32_to_f16_bits(f); }
static double value16(uint16_t b, int dt) { return dt == 1 ? to_f32(bf16{b}) : f16_to_f32(b); }
static const char* dtName(int dt) { return dt == 0 ? "f32" : dt == 1 ? "bf16" : "f16"; }

// Weights of dtype dt (0 f32, 1 bf16, 2 f16): raw storage and the exact values.
struct Weights {
    std::vector<float> f;
    std::vector<uint16_t> h;
    std::vector<double> val;
    const void* p(int dt) const { return dt == 0 ? (const void*)f.data() : (const void*)h.data(); }
};
static Weights weights(size_t n, int dt, double scale, double offset = 0) {
    Weights w;
    w.f.resize(n), w.h.resize(n), w.val.resize(n);
    for (size_t i = 0; i < n; i++) {
        float x = (float)(offset + scale * randn());
        w.f[i] = x;
        w.h[i] = bits16(x, dt);
        w.val[i] = dt == 0 ? x : value16(w.h[i], dt);
    }
    return w;
}

static void test_rmsnorm_backward() {
    for (int dt = 0; dt < 3; dt++)
        for (auto s : std::vector<std::pair<int, int>>{{5, 4096}, {3, 67}, {7, 1000}}) {
            int n = s.first, d = s.second;
            float eps = 1e-5f;
            auto x = randf((size_t)n * d, 2), dy = randf((size_t)n * d), dx = randf((size_t)n * d, 1, 8);
            Weights w = weights(d, dt, 0.3, 1.0);
            std::vector<double> want((size_t)n * d);
            for (int i = 0; i < n; i++) {
                double ss = 0, xg = 0;
                for (int k = 0; k < d; k++) ss += (double)x[i * d + k] * x[i * d + k], xg += (double)x[i * d + k] * w.val[k] * dy[i * d + k];
                double r = 1 / sqrt(ss / d + eps);
                for (int k = 0; k < d; k++) want[i * d + k] = dx[i * d + k] + r * w.val[k] * dy[i * d + k] - x[i * d + k] * r * r * r * xg / d;
            }
            sim_launch(n, 1, 1, d >= 512 ? 256 : 128, [&] {
                if (dt == 0) rmsnorm_backward_f32(dx.data(), dy.data(), x.data(), w.f.data(), d, eps);
                if (dt == 1) rmsnorm_backward_bf16(dx.data(), dy.data(), x.data(), (const bf16*)w.h.data(), d, eps);
                if (dt == 2) rmsnorm_backward_f16(dx.data(), dy.data(), x.data(), (const f16*)w.h.data(), d, eps);
            });
            compare(std::string("rmsnorm_backward_") + dtName(dt) + " n=" + std::to_string(n) + " d=" + std::to_string(d), dx, want, 1e-5, 1e-4);
        }
}

static void test_silu_mul_backward() {
    int n = 1003;
    auto g = randf(n, 3), u = randf(n), dy = randf(n);
    g[0] = -100, g[1] = 100, g[2] = -88.5f, g[3] = 0;
    for (int which = 0; which < 3; which++) {  // both gradients, dgate only, dup only
        auto dg = randf(n, 1, 8), du = randf(n, 1, 8);
        std::vector<double> wg(n), wu(n);
        for (int i = 0; i < n; i++) {
            double s = 1 / (1 + exp(-(double)g[i]));
            wg[i] = dg[i] + (which != 2 ? dy[i] * u[i] * s * (1 + g[i] * (1 - s)) : 0);
            wu[i] = du[i] + (which != 1 ? dy[i] * g[i] * s : 0);
        }
        sim_launch(3, 1, 1, 256, [&] { silu_mul_backward_f32(which != 2 ? dg.data() : nullptr, which != 1 ? du.data() : nullptr, dy.data(), g.data(), u.data(), n); });
        compare("silu_mul_backward dgate, form " + std::to_string(which), dg, wg, 1e-6, 1e-5);
        compare("silu_mul_backward dup, form " + std::to_string(which), du, wu, 1e-6, 1e-5);
    }
}

static void test_rope_backward() {
    for (auto c : std::vector<std::array<int, 3>>{{7, 4, 128}, {5, 3, 20}, {3, 2, 64}}) {
        int n = c[0], heads = c[1], dim = c[2], half = dim / 2;
        std::vector<int> pos(n);
        for (int i = 0; i < n; i++) pos[i] = i * 37 + (i == n - 1 ? 130000 : 0);
        std::vector<float> inv(half);
        for (int i = 0; i < half; i++) inv[i] = (float)pow(500000.0, -2.0 * i / dim);
        auto x = randf((size_t)n * heads * dim, 1, 8);
        std::vector<double> want((size_t)n * heads * dim);
        for (int i = 0; i < n; i++)
            for (int h = 0; h < heads; h++)
                for (int k = 0; k < half; k++) {
                    float f = inv[k] * (float)pos[i];  // the angle rounded to f32, as HF and the CPU form it
                    double s = sin((double)f), co = cos((double)f);
                    size_t o = ((size_t)i * heads + h) * dim;
                    want[o + k] = x[o + k] * co + x[o + k + half] * s;  // rotation by −f
                    want[o + k + half] = x[o + k + half] * co - x[o + k] * s;
                }
        auto y = x;
        sim_launch(n, 1, 1, 64, [&] { rope_backward_f32(y.data(), pos.data(), inv.data(), heads, dim); });
        compare("rope_backward n=" + std::to_string(n) + " heads=" + std::to_string(heads) + " D=" + std::to_string(dim), y, want, 1e-5, 1e-4);
        sim_launch(n, 1, 1, 64, [&] { rope_f32(y.data(), pos.data(), inv.data(), heads, dim); });  // forward undoes it
        compare("rope_f32 after rope_backward D=" + std::to_string(dim), y, widen(x, want.size()), 1e-5, 1e-4);
    }
}

static void test_embedding_backward() {
    int d = 300, vocab = 40;
    for (bool repeat : {false, true}) {
        std::vector<int> ids = repeat ? std::vector<int>{3, 7, 3, 39, 0, 7, 7} : std::vector<int>{5, 0, 39, 12, 7};
        int n = ids.size();
        auto dy = randf((size_t)n * d), table = randf((size_t)vocab * d, 1, 8);
        std::vector<double> want = widen(table, (size_t)vocab * d);
        for (int i = 0; i < n; i++)
            for (int k = 0; k < d; k++) want[(size_t)ids[i] * d + k] += dy[(size_t)i * d + k];
        int per = repeat ? n : 1;
        sim_launch(2, (n + per - 1) / per, 1, 128, [&] { embedding_backward_f32(table.data(), dy.data(), ids.data(), n, d, per); });
        compare(std::string("embedding_backward ") + (repeat ? "repeated ids" : "distinct ids"), table, want, 1e-6, 1e-6);
    }
}

// The split rule and the row tile are the launcher's business (gpu/launch_backward.go,
// exactParts, exactRowTile); here both are given, each row count run with every tile that holds it.
static void test_gemm_exact() {
    struct C { int M, N, K, splits; bool bias, accumulate; };
    for (C c : std::vector<C>{{9, 136, 200, 1, true, false}, {64, 256, 264, 3, false, false}, {130, 72, 1032, 2, true, false},
                              {45, 200, 96, 1, false, true}, {70, 264, 516, 4, false, true}, {1, 8, 40, 2, false, true},
                              {32, 264, 776, 3, true, true}, {20, 136, 520, 2, false, true}})
        for (int bm : {32, 64}) {
            int M = c.M, N = c.N, K = c.K;
            if (bm == 32 && M > 64) continue;  // a 32-row tile takes any M, but the launcher gives it at most 32
            int tiles = (K + EX_BK - 1) / EX_BK, per = (tiles + c.splits - 1) / c.splits, splits = (tiles + per - 1) / per, kchunk = per * EX_BK;
            auto a = randf((size_t)M * K);
            std::string shape = " M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) + " splits=" + std::to_string(splits);
            std::string m = "_m" + std::to_string(bm);
            // Forward: y = x·Wᵀ + bias, W (N, K); it needs K % 8 == 0.
            if (K % 8 == 0) {
                Weights w = weights((size_t)N * K, 1, 1 / sqrt(K)), b = weights(N, 1, 1);
                std::vector<double> want((size_t)M * N);
                for (int i = 0; i < M; i++)
                    for (int n = 0; n < N; n++) {
                        double s = c.bias ? b.val[n] : 0;
                        for (int k = 0; k < K; k++) s += (double)a[(size_t)i * K + k] * w.val[(size_t)n * K + k];
                        want[(size_t)i * N + n] = s;
                    }
                std::vector<float> part((size_t)splits * M * N + 8, NaN), y((size_t)M * N + 8, NaN);
                float* out = splits == 1 ? y.data() : part.data();
                sim_launch((N + EX_BN - 1) / EX_BN, (M + bm - 1) / bm, splits, 256, [&] {
                    const bf16* bias = c.bias ? (const bf16*)b.h.data() : nullptr;
                    if (bm == 32) gemm_exact_m32_bf16(out, a.data(), (const bf16*)w.h.data(), bias, M, N, K, kchunk, 0);
                    else gemm_exact_m64_bf16(out, a.data(), (const bf16*)w.h.data(), bias, M, N, K, kchunk, 0);
                });
                if (splits > 1) sim_launch(3, 1, 1, 256, [&] { gemm_exact_reduce_f32(y.data(), part.data(), (size_t)M * N, splits, 0); });
                compare("gemm_exact" + m + "_bf16" + shape + (c.bias ? " bias" : ""), y, want, 2e-6, 2e-6);
            }
            // Backward: dx += dy·W, W (K, N) as stored.
            Weights w = weights((size_t)K * N, 1, 1 / sqrt(K));
            auto dx = randf((size_t)M * N, 1, 8);
            std::vector<double> want((size_t)M * N);
            for (int i = 0; i < M; i++)
                for (int n = 0; n < N; n++) {
                    double s = c.accumulate ? dx[(size_t)i * N + n] : 0;
                    for (int k = 0; k < K; k++) s += (double)a[(size_t)i * K + k] * w.val[(size_t)k * N + n];
                    want[(size_t)i * N + n] = s;
                }
            if (!c.accumulate) std::fill(dx.begin(), dx.begin() + (size_t)M * N, NaN);
            std::vector<float> part((size_t)splits * M * N + 8, NaN);
            float* out = splits == 1 ? dx.data() : part.data();
            int acc = splits == 1 && c.accumulate;
            sim_launch((N + EX_BN - 1) / EX_BN, (M + bm - 1) / bm, splits, 256, [&] {
                if (bm == 32) gemm_exact_dx_m32_bf16(out, a.data(), (const bf16*)w.h.data(), M, N, K, kchunk, acc);
                else gemm_exact_dx_m64_bf16(out, a.data(), (const bf16*)w.h.data(), M, N, K, kchunk, acc);
            });
            if (splits > 1) sim_launch(3, 1, 1, 256, [&] { gemm_exact_reduce_f32(dx.data(), part.data(), (size_t)M * N, splits, c.accumulate); });
            compare("gemm_exact_dx" + m + "_bf16" + shape + (c.accumulate ? " added into" : ""), dx, want, 2e-6, 2e-6);
        }
}

// A batch of whole sequences in a shuffled order and its index as the launcher builds it
// (gpu/attention_backward.go, gradIndex): rows[base_s + p] is the batch row of position p of
// sequence s; per token its base, length and position; tiles of up to `per` positions.
struct Batch {
    int n;
    std::vector<int> rows, tbase, tlen, pos, seq;
    std::vector<int> lens, bases;
    std::vector<int> tiles(int per) const {
        std::vector<int> t;
        for (size_t s = 0; s < lens.size(); s++)
            for (int p0 = 0; p0 < lens[s]; p0 += per) t.insert(t.end(), {bases[s], p0, std::min(per, lens[s] - p0), lens[s]});
        return t;
    }
};
static Batch batch(std::vector<int> lens) {
    Batch b;
    b.lens = lens;
    std::vector<std::pair<int, int>> toks;
    int total = 0;
    for (size_t s = 0; s < lens.size(); s++) {
        b.bases.push_back(total);
        total += lens[s];
        for (int p = 0; p < lens[s]; p++) toks.push_back({(int)s, p});
    }
    std::shuffle(toks.begin(), toks.end(), rng);
    b.n = total;
    b.rows.resize(total), b.tbase.resize(total), b.tlen.resize(total), b.pos.resize(total), b.seq.resize(total);
    for (int i = 0; i < total; i++) {
        int s = toks[i].first, p = toks[i].second;
        b.rows[b.bases[s] + p] = i;
        b.tbase[i] = b.bases[s], b.tlen[i] = lens[s], b.pos[i] = p, b.seq[i] = s;
    }
    return b;
}

// The f64 reference of attention over a batch's own tokens and of its backward.
struct AttnRef {
    std::vector<double> P;  // (n, heads, ctx)
    std::vector<double> dq, dk, dv;
};
static AttnRef attention_ref(const Batch& b, int heads, int kvh, int dim, int ctx, const std::vector<float>& q, const std::vector<float>& k,
                             const std::vector<float>& v, const std::vector<float>& dout) {
    int group = heads / kvh;
    double scale = 1 / sqrt((double)dim);
    AttnRef r;
    r.P.assign((size_t)b.n * heads * ctx, 0);
    r.dq.assign((size_t)b.n * heads * dim, 0), r.dk.assign((size_t)b.n * kvh * dim, 0), r.dv.assign(r.dk.size(), 0);
    for (int i = 0; i < b.n; i++)
        for (int h = 0; h < heads; h++) {
            int g = h / group, len = b.pos[i] + 1;
            std::vector<double> s(len), dp(len);
            double m = -INFINITY, l = 0;
            for (int t = 0; t < len; t++) {
                int j = b.rows[b.tbase[i] + t];
                double a = 0, c = 0;
                for (int d = 0; d < dim; d++) {
                    a += (double)q[((size_t)i * heads + h) * dim + d] * k[((size_t)j * kvh + g) * dim + d];
                    c += (double)dout[((size_t)i * heads + h) * dim + d] * v[((size_t)j * kvh + g) * dim + d];
                }
                s[t] = a * scale, dp[t] = c, m = std::max(m, s[t]);
            }
            for (int t = 0; t < len; t++) s[t] = exp(s[t] - m), l += s[t];
            double delta = 0;
            for (int t = 0; t < len; t++) s[t] /= l, delta += s[t] * dp[t], r.P[((size_t)i * heads + h) * ctx + t] = s[t];
            for (int t = 0; t < len; t++) {
                int j = b.rows[b.tbase[i] + t];
                double ds = s[t] * (dp[t] - delta);
                for (int d = 0; d < dim; d++) {
                    r.dq[((size_t)i * heads + h) * dim + d] += ds * k[((size_t)j * kvh + g) * dim + d] * scale;
                    r.dk[((size_t)j * kvh + g) * dim + d] += ds * q[((size_t)i * heads + h) * dim + d] * scale;
                    r.dv[((size_t)j * kvh + g) * dim + d] += s[t] * dout[((size_t)i * heads + h) * dim + d];
                }
            }
        }
    return r;
}

static std::vector<double> plus(const std::vector<float>& a, const std::vector<double>& b) {
    std::vector<double> out(b.size());
    for (size_t i = 0; i < b.size(); i++) out[i] = a[i] + b[i];
    return out;
}

static void test_attention_backward() {
    struct C { std::vector<int> lens; int heads, kvh, dim; };
    for (C c : std::vector<C>{{{37, 5, 70}, 4, 2, 20}, {{64}, 8, 2, 128}, {{33, 40}, 6, 3, 48}, {{17, 9}, 2, 2, 64}, {{20}, 4, 1, 256}, {{1, 3}, 3, 1, 128}}) {
        Batch b = batch(c.lens);
        int n = b.n, heads = c.heads, kvh = c.kvh, dim = c.dim;
        float scale = 1 / sqrtf((float)dim);
        auto q = randf((size_t)n * heads * dim), k = randf((size_t)n * kvh * dim), v = randf((size_t)n * kvh * dim), dout = randf((size_t)n * heads * dim);
        auto dq = randf((size_t)n * heads * dim, 1, 8), dk = randf((size_t)n * kvh * dim, 1, 8), dv = randf((size_t)n * kvh * dim, 1, 8);
        int ctx = *std::max_element(c.lens.begin(), c.lens.end());
        AttnRef ref = attention_ref(b, heads, kvh, dim, ctx, q, k, v, dout);
        int DP = dim <= 64 ? 64 : dim <= 128 ? 128 : 256, per = 128 / (DP / 16);
        auto tiles = b.tiles(per);
        auto wq = plus(dq, ref.dq), wk = plus(dk, ref.dk), wv = plus(dv, ref.dv);
        std::vector<float> lse((size_t)n * heads, NaN), delta((size_t)n * heads, NaN);
        std::string what = " lens=" + std::to_string(c.lens[0]) + (c.lens.size() > 1 ? "…" : "") + " heads=" + std::to_string(heads) + "/" +
                           std::to_string(kvh) + " D=" + std::to_string(dim);
        sim_launch(tiles.size() / 4, heads, 1, 128, [&] {
            if (DP == 64) attention_backward_rows_f32_d64(dq.data(), lse.data(), delta.data(), q.data(), k.data(), v.data(), dout.data(), b.rows.data(), tiles.data(), heads, kvh, dim, scale);
            if (DP == 128) attention_backward_rows_f32_d128(dq.data(), lse.data(), delta.data(), q.data(), k.data(), v.data(), dout.data(), b.rows.data(), tiles.data(), heads, kvh, dim, scale);
            if (DP == 256) attention_backward_rows_f32_d256(dq.data(), lse.data(), delta.data(), q.data(), k.data(), v.data(), dout.data(), b.rows.data(), tiles.data(), heads, kvh, dim, scale);
        });
        sim_launch(tiles.size() / 4, kvh, 1, 128, [&] {
            if (DP == 64) attention_backward_keys_f32_d64(dk.data(), dv.data(), lse.data(), delta.data(), q.data(), k.data(), v.data(), dout.data(), b.rows.data(), tiles.data(), heads, kvh, dim, scale);
            if (DP == 128) attention_backward_keys_f32_d128(dk.data(), dv.data(), lse.data(), delta.data(), q.data(), k.data(), v.data(), dout.data(), b.rows.data(), tiles.data(), heads, kvh, dim, scale);
            if (DP == 256) attention_backward_keys_f32_d256(dk.data(), dv.data(), lse.data(), delta.data(), q.data(), k.data(), v.data(), dout.data(), b.rows.data(), tiles.data(), heads, kvh, dim, scale);
        });
        compare("attention_backward dq" + what, dq, wq, 1e-5, 1e-4);
        compare("attention_backward dk" + what, dk, wk, 1e-5, 1e-4);
        compare("attention_backward dv" + what, dv, wv, 1e-5, 1e-4);
    }
}

// The pattern path: a paged cache of the batch's own keys and values (shuffled blocks), the
// pattern and its product with v, then both backward ops on a random pattern gradient.
static void test_pattern() {
    struct C { std::vector<int> lens; int heads, kvh, dim, block; };
    for (C c : std::vector<C>{{{37, 5, 70}, 4, 2, 20, 16}, {{33, 40}, 6, 3, 48, 5}, {{12}, 2, 1, 128, 8}}) {
        Batch b = batch(c.lens);
        int n = b.n, heads = c.heads, kvh = c.kvh, dim = c.dim, width = kvh * dim, bs = c.block, group = heads / kvh;
        float scale = 1 / sqrtf((float)dim);
        int ctx = *std::max_element(c.lens.begin(), c.lens.end()), pctx = ctx + 3;
        auto q = randf((size_t)n * heads * dim), k = randf((size_t)n * kvh * dim), v = randf((size_t)n * kvh * dim), dout = randf((size_t)n * heads * dim);
        AttnRef ref = attention_ref(b, heads, kvh, dim, pctx, q, k, v, dout);
        // The cache: sequence s's blocks are a shuffled run of the pool.
        int maxb = (ctx + bs - 1) / bs, blocks = 0;
        std::vector<std::vector<int>> tables;
        for (int len : c.lens) {
            std::vector<int> t;
            for (int j = 0; j < (len + bs - 1) / bs; j++) t.push_back(blocks++);
            tables.push_back(t);
        }
        std::vector<int> perm(blocks);
        for (int i = 0; i < blocks; i++) perm[i] = i;
        std::shuffle(perm.begin(), perm.end(), rng);
        std::vector<float> kc((size_t)blocks * bs * width, NaN), vc(kc.size(), NaN);
        std::vector<int> table((size_t)n * maxb, 0), cx(n);
        for (int i = 0; i < n; i++) {
            auto& t = tables[b.seq[i]];
            for (size_t j = 0; j < t.size(); j++) table[(size_t)i * maxb + j] = perm[t[j]];
            cx[i] = b.pos[i] + 1;
            size_t row = (size_t)perm[t[b.pos[i] / bs]] * bs + b.pos[i] % bs;
            for (int e = 0; e < width; e++) kc[row * width + e] = k[(size_t)i * width + e], vc[row * width + e] = v[(size_t)i * width + e];
        }
        std::string what = " lens=" + std::to_string(c.lens[0]) + "… heads=" + std::to_string(heads) + "/" + std::to_string(kvh) + " D=" + std::to_string(dim);
        std::vector<float> p((size_t)n * heads * pctx + 8, NaN);
        sim_launch(heads, n, 1, 128, [&] { attention_pattern_f32(p.data(), q.data(), kc.data(), cx.data(), table.data(), maxb, bs, heads, kvh, dim, pctx, scale); });
        compare("attention_pattern" + what, p, ref.P, 1e-6, 1e-5);
        std::vector<double> out((size_t)n * heads * dim, 0);
        for (int i = 0; i < n; i++)
            for (int h = 0; h < heads; h++)
                for (int t = 0; t <= b.pos[i]; t++)
                    for (int d = 0; d < dim; d++)
                        out[((size_t)i * heads + h) * dim + d] += ref.P[((size_t)i * heads + h) * pctx + t] * v[((size_t)b.rows[b.tbase[i] + t] * kvh + h / group) * dim + d];
        std::vector<float> o((size_t)n * heads * dim + 8, NaN);
        sim_launch(heads, n, 1, 128, [&] { attention_apply_f32(o.data(), p.data(), vc.data(), cx.data(), table.data(), maxb, bs, heads, kvh, dim, pctx); });
        compare("attention_apply" + what, o, out, 1e-5, 1e-4);

        // Apply's backward: dp = dout·vᵀ on t ≤ pos, dv = Pᵀ·dout.
        auto dp = randf((size_t)n * heads * pctx, 1, 8), dv = randf((size_t)n * kvh * dim, 1, 8);
        std::vector<double> wdp = widen(dp, (size_t)n * heads * pctx);
        for (int i = 0; i < n; i++)
            for (int h = 0; h < heads; h++)
                for (int t = 0; t <= b.pos[i]; t++) {
                    double a = 0;
                    for (int d = 0; d < dim; d++) a += (double)dout[((size_t)i * heads + h) * dim + d] * v[((size_t)b.rows[b.tbase[i] + t] * kvh + h / group) * dim + d];
                    wdp[((size_t)i * heads + h) * pctx + t] += a;
                }
        auto dp0 = dp;
        auto wv = plus(dv, ref.dv);
        sim_launch(heads, n, 1, 128, [&] { attention_apply_backward_rows_f32(dp.data(), dout.data(), v.data(), b.rows.data(), b.tbase.data(), b.pos.data(), heads, kvh, dim, pctx); });
        sim_launch(kvh, n, 1, 128, [&] { attention_apply_backward_keys_f32(dv.data(), dout.data(), p.data(), b.rows.data(), b.tbase.data(), b.pos.data(), b.tlen.data(), heads, kvh, dim, pctx); });
        compare("attention_apply_backward dp" + what, dp, wdp, 1e-5, 1e-4);
        compare("attention_apply_backward dv" + what, dv, wv, 1e-5, 1e-4);

        // The pattern's backward from the dp of the fused reference: the same dq and dk.
        std::vector<float> g((size_t)n * heads * pctx + 8, NaN);
        for (size_t e = 0; e < (size_t)n * heads * pctx; e++) g[e] = (float)(wdp[e] - dp0[e]);
        auto dq = randf((size_t)n * heads * dim, 1, 8), dk = randf((size_t)n * kvh * dim, 1, 8);
        auto wq = plus(dq, ref.dq), wk = plus(dk, ref.dk);
        std::vector<float> delta((size_t)n * heads, NaN);
        sim_launch(heads, n, 1, 128, [&] { attention_pattern_backward_rows_f32(dq.data(), delta.data(), g.data(), p.data(), k.data(), b.rows.data(), b.tbase.data(), b.pos.data(), heads, kvh, dim, pctx, scale); });
        sim_launch(kvh, n, 1, 128, [&] { attention_pattern_backward_keys_f32(dk.data(), delta.data(), g.data(), p.data(), q.data(), b.rows.data(), b.tbase.data(), b.pos.data(), b.tlen.data(), heads, kvh, dim, pctx, scale); });
        compare("attention_pattern_backward dq" + what, dq, wq, 1e-5, 1e-4);
        compare("attention_pattern_backward dk" + what, dk, wk, 1e-5, 1e-4);
    }
}

static void test_attribution() {
    // AtP products: 3 node rows of a width-96 point, nodes of 32 (heads) and of 96 (the row).
    int width = 96, n = 6, nk = 4;
    auto clean = randf((size_t)n * width), corrupt = randf((size_t)nk * width), grad = randf((size_t)n * width);
    clean[5] = 1e8f, corrupt[5 + 2 * width] = 1e8f + 8;  // large and nearly equal: the difference is 8
    std::vector<int> crow = {0, 3, 5}, krow = {2, 0, 3};
    for (int chunk : {32, 96}) {
        int nodes = width / chunk;
        std::vector<double> got(crow.size() * nodes + 1, NAN), want(crow.size() * nodes, 0);
        for (size_t j = 0; j < crow.size(); j++)
            for (int e = 0; e < width; e++)
                want[j * nodes + e / chunk] += ((double)corrupt[krow[j] * width + e] - (double)clean[crow[j] * width + e]) * grad[crow[j] * width + e];
        sim_launch(nodes, crow.size(), 1, RED_THREADS, [&] { atp_scores_f64(got.data(), clean.data(), corrupt.data(), grad.data(), crow.data(), krow.data(), width, chunk); });
        std::vector<float> g32(got.begin(), got.end());
        compare("atp_scores_f64 chunk=" + std::to_string(chunk), g32, want, 1e-12, 2e-7);
    }
    // Patching: rows 4 and 1 of x take rows 0 and 2 of the value at columns [32, 64).
    auto x = randf((size_t)n * width), value = randf((size_t)3 * width);
    std::vector<double> want = widen(x, x.size());
    std::vector<int> dst = {4, 1}, src = {0, 2};
    for (int j = 0; j < 2; j++)
        for (int c = 32; c < 64; c++) want[(size_t)dst[j] * width + c] = value[(size_t)src[j] * width + c];
    sim_launch(2, 1, 1, 128, [&] { patch_rows_f32(x.data(), value.data(), dst.data(), src.data(), width, 32, 64); });
    compare("patch_rows_f32", x, want, 0, 0);
    // Metric values: 3 rows of 1001 logits, 2 columns each, and the log-sum-exp.
    int vocab = 1001, rows = 3;
    auto logits = randf((size_t)rows * vocab, 4);
    logits[17] = 60;  // a dominant logit: the max must be taken out before the exponentials
    std::vector<int> cols = {17, 500, 0, 1000, 3, 3};
    std::vector<float> vals(rows * 2 + 8, NaN);
    std::vector<double> lse(rows + 1, NAN), wv(rows * 2), wl(rows);
    for (int r = 0; r < rows; r++) {
        double m = -INFINITY, s = 0;
        for (int v = 0; v < vocab; v++) m = std::max(m, (double)logits[r * vocab + v]);
        for (int v = 0; v < vocab; v++) s += exp(logits[r * vocab + v] - m);
        wl[r] = m + log(s);
        for (int c = 0; c < 2; c++) wv[r * 2 + c] = logits[r * vocab + cols[r * 2 + c]];
    }
    sim_launch(rows, 1, 1, RED_THREADS, [&] { metric_logits_f32(vals.data(), lse.data(), logits.data(), cols.data(), 2, vocab); });
    compare("metric_logits_f32 values", vals, wv, 0, 0);
    std::vector<float> l32(lse.begin(), lse.end());
    compare("metric_logits_f32 log-sum-exp", l32, wl, 1e-6, 1e-7);
}

// AtP*'s QK fix against the plain f64 formula (each patched softmax recomputed whole): two
// sequences in a shuffled batch, GQA groups of 3, some rows saturated (one key takes nearly all
// the weight, where "total minus one term" would cancel), patched tokens at random.
static void test_qk() {
    Batch b = batch({23, 14});
    int n = b.n, heads = 6, kvh = 2, dim = 20, group = heads / kvh, pctx = 26;
    float scale = 1 / sqrtf((float)dim);
    auto qc = randf((size_t)n * heads * dim), kc = randf((size_t)n * kvh * dim), dA = randf((size_t)n * heads * pctx);
    for (int e = 0; e < dim; e++) qc[(size_t)(2 * heads + 1) * dim + e] *= 40, qc[(size_t)(9 * heads + 4) * dim + e] *= 40;
    auto qd = qc, kd = kc;
    std::vector<int> changed(n);
    for (int i = 0; i < n; i++) {
        changed[i] = b.pos[i] >= 3 && randn() > 0;
        if (!changed[i]) continue;
        for (int e = 0; e < heads * dim; e++) qd[(size_t)i * heads * dim + e] += (float)(0.5 * randn());
        for (int e = 0; e < kvh * dim; e++) kd[(size_t)i * kvh * dim + e] += (float)(0.5 * randn());
    }
    auto logit = [&](const std::vector<float>& q, int i, int h, const std::vector<float>& k, int j) {
        double a = 0;
        for (int e = 0; e < dim; e++) a += (double)q[((size_t)i * heads + h) * dim + e] * k[((size_t)j * kvh + h / group) * dim + e];
        return a * scale;
    };
    std::vector<double> wq((size_t)n * heads, 0), wk((size_t)n * kvh, 0);
    for (int i = 0; i < n; i++)
        for (int h = 0; h < heads; h++) {
            int len = b.pos[i] + 1;
            const float* da = &dA[((size_t)i * heads + h) * pctx];
            auto mean = [&](std::vector<double> s) {
                double m = -INFINITY, z = 0, w = 0;
                for (double v : s) m = std::max(m, v);
                for (int t = 0; t < len; t++) z += exp(s[t] - m), w += exp(s[t] - m) * da[t];
                return w / z;
            };
            std::vector<double> s(len), s2(len);
            for (int t = 0; t < len; t++) s[t] = logit(qc, i, h, kc, b.rows[b.tbase[i] + t]), s2[t] = logit(qd, i, h, kc, b.rows[b.tbase[i] + t]);
            double base = mean(s);
            if (changed[i]) wq[(size_t)i * heads + h] = mean(s2) - base;
            for (int t = 0; t < len; t++) {
                int j = b.rows[b.tbase[i] + t];
                if (!changed[j]) continue;
                auto s3 = s;
                s3[t] = logit(qc, i, h, kd, j);
                wk[(size_t)j * kvh + h / group] += mean(s3) - base;
            }
        }
    std::vector<double> qout((size_t)n * heads, 0), kout((size_t)n * kvh + 1, NAN), contrib((size_t)n * heads * pctx, NAN);
    sim_launch(heads, n, 1, RED_THREADS, [&] { atp_qk_rows_f64(qout.data(), contrib.data(), qc.data(), kc.data(), qd.data(), kd.data(), dA.data(), changed.data(), b.rows.data(), b.tbase.data(), b.pos.data(), heads, kvh, dim, pctx, scale); });
    sim_launch(kvh, n, 1, 32, [&] { atp_qk_keys_f64(kout.data(), contrib.data(), b.rows.data(), b.tbase.data(), b.pos.data(), b.tlen.data(), heads, kvh, pctx); });
    compare("atp_qk query nodes", std::vector<float>(qout.begin(), qout.end()), wq, 1e-6, 1e-5);
    compare("atp_qk key nodes", std::vector<float>(kout.begin(), kout.end()), wk, 1e-6, 1e-5);
}

// The forward ops the decode step shares with the op-by-op path: residual_rmsnorm with the
// steering rows (the resid update bit for bit as an add and a steer add, and rmsnorm_* over it
// giving its output bit for bit), steer_add/steer_delta (the fma chain over terms, bit for bit),
// kv_store into f32 and bf16 caches (rounding to nearest even, idle rows untouched).
static int threadsFor(int d) { return d >= 2048 ? 512 : d >= 512 ? 256 : 128; }

static void test_residual_rmsnorm() {
    for (int dt = 0; dt < 3; dt++)
        for (int d : {4096, 100, 33}) {
            const int n = 3;
            const float eps = 1e-5f;
            auto resid = randf((size_t)n * d, 2), delta = randf((size_t)n * d, 1), sdelta = randf((size_t)n * d, 0.5);
            Weights w = weights(d, dt, 0.3, 1.0);
            for (int form = 0; form < 3; form++) {  // 0: no deltas; 1: delta; 2: delta and steering rows
                auto r = resid;
                std::vector<float> dst((size_t)n * d + 8, NaN), want_r((size_t)n * d);
                for (size_t e = 0; e < want_r.size(); e++) {
                    float v = r[e];
                    if (form > 0) v += delta[e];
                    if (form > 1) v += sdelta[e];
                    want_r[e] = v;
                }
                const float* dp = form > 0 ? delta.data() : nullptr;
                const float* sp = form > 1 ? sdelta.data() : nullptr;
                sim_launch(n, 1, 1, threadsFor(d), [&] {
                    if (dt == 0) residual_rmsnorm_f32(dst.data(), r.data(), dp, sp, w.f.data(), d, eps);
                    if (dt == 1) residual_rmsnorm_bf16(dst.data(), r.data(), dp, sp, (const bf16*)w.h.data(), d, eps);
                    if (dt == 2) residual_rmsnorm_f16(dst.data(), r.data(), dp, sp, (const f16*)w.h.data(), d, eps);
                });
                std::string what = std::string("residual_rmsnorm_") + dtName(dt) + " d=" + std::to_string(d) + " form " + std::to_string(form);
                checks++;
                if (memcmp(r.data(), want_r.data(), want_r.size() * 4) != 0) { fails++; printf("FAIL %s: resid is not (resid + delta) + sdelta bit for bit\n", what.c_str()); }
                std::vector<double> want((size_t)n * d);
                for (int i = 0; i < n; i++) {
                    double ss = 0;
                    for (int k = 0; k < d; k++) ss += (double)want_r[(size_t)i * d + k] * want_r[(size_t)i * d + k];
                    double sc = 1 / sqrt(ss / d + eps);
                    for (int k = 0; k < d; k++) want[(size_t)i * d + k] = want_r[(size_t)i * d + k] * sc * w.val[k];
                }
                compare(what, dst, want, 1e-5, 1e-4);
                std::vector<float> plain((size_t)n * d, NaN);
                sim_launch(n, 1, 1, threadsFor(d), [&] {
                    if (dt == 0) rmsnorm_f32(plain.data(), r.data(), w.f.data(), d, eps);
                    if (dt == 1) rmsnorm_bf16(plain.data(), r.data(), (const bf16*)w.h.data(), d, eps);
                    if (dt == 2) rmsnorm_f16(plain.data(), r.data(), (const f16*)w.h.data(), d, eps);
                });
                checks++;
                if (memcmp(plain.data(), dst.data(), plain.size() * 4) != 0) { fails++; printf("FAIL %s: rmsnorm of the updated stream differs from the fused output\n", what.c_str()); }
            }
        }
}

static void test_steer() {
    const int n = 5, d = 37;
    for (int terms = 0; terms <= 3; terms++) {
        std::vector<std::vector<float>> vs;
        std::vector<const float*> vecs;
        for (int t = 0; t < terms; t++) vs.push_back(randf(d, 1));
        for (auto& v : vs) vecs.push_back(v.data());
        auto alpha = randf((size_t)terms * n, 3);
        if (terms > 0) alpha[1] = 0;  // an unsteered row of the first term
        auto x = randf((size_t)n * d, 2), x0 = x;
        std::vector<float> delta((size_t)n * d, NaN), want_s((size_t)n * d), want_x((size_t)n * d);
        for (int i = 0; i < n; i++)
            for (int k = 0; k < d; k++) {
                float s = 0;
                for (int t = 0; t < terms; t++) s = fmaf(alpha[(size_t)t * n + i], vs[t][k], s);
                want_s[(size_t)i * d + k] = s, want_x[(size_t)i * d + k] = x0[(size_t)i * d + k] + s;
            }
        sim_launch(2, 1, 1, 64, [&] { steer_add_f32(x.data(), vecs.data(), alpha.data(), n, d, terms); });
        sim_launch(3, 1, 1, 32, [&] { steer_delta_f32(delta.data(), vecs.data(), alpha.data(), n, d, terms); });
        checks++;
        if (memcmp(x.data(), want_x.data(), x.size() * 4) != 0 || memcmp(delta.data(), want_s.data(), delta.size() * 4) != 0) {
            fails++; printf("FAIL steer_add/steer_delta with %d terms: not the fma chain bit for bit\n", terms);
        } else printf("ok   steer_add_f32, steer_delta_f32 with %d terms\n", terms);
    }
}

static void test_kv_store() {
    const int n = 4, width = 40, rows = 9;
    int rowOf[n] = {5, -1, 0, 7};
    auto k = randf((size_t)n * width, 1), v = randf((size_t)n * width, 1);
    k[0] = 1.00390625f;  // 1 + 2^-8: a tie, rounds to even (1.0)
    k[1] = 1.01171875f;  // 1 + 3·2^-8: a tie, rounds to even (1 + 2^-6)
    std::vector<float> kf((size_t)rows * width, NaN), vf = kf;
    std::vector<uint16_t> kb((size_t)rows * width, 0x7fc1), vb = kb;
    sim_launch(n, 1, 1, 64, [&] {
        kv_store_f32(kf.data(), vf.data(), k.data(), v.data(), rowOf, width);
        kv_store_bf16((bf16*)kb.data(), (bf16*)vb.data(), k.data(), v.data(), rowOf, width);
    });
    checks++;
    int bad = 0;
    for (int r = 0; r < rows; r++)
        for (int e = 0; e < width; e++) {
            int i = -1;
            for (int t = 0; t < n; t++) if (rowOf[t] == r) i = t;
            size_t at = (size_t)r * width + e;
            if (i < 0) { bad += !std::isnan(kf[at]) || kb[at] != 0x7fc1 || vb[at] != 0x7fc1; continue; }
            size_t src = (size_t)i * width + e;
            bad += kf[at] != k[src] || vf[at] != v[src] || kb[at] != f32_to_bf16_bits(k[src]) || vb[at] != f32_to_bf16_bits(v[src]);
        }
    if (kb[(size_t)5 * width] != 0x3f80 || kb[(size_t)5 * width + 1] != 0x3f82) bad++;
    if (bad) { fails++; printf("FAIL kv_store: %d bad values\n", bad); }
    else printf("ok   kv_store_f32, kv_store_bf16 (ties to even, idle rows untouched)\n");
}

int main() {
    test_residual_rmsnorm();
    test_steer();
    test_kv_store();
    test_qk();
    test_attention_backward();
    test_pattern();
    test_rmsnorm_backward();
    test_silu_mul_backward();
    test_rope_backward();
    test_embedding_backward();
    test_attribution();
    test_gemm_exact();
    printf("%d checks, %d failures\n", checks, fails);
    return fails != 0;
}
