// The kernels of the decode step (matvec.cu, decode.cu with attention_decode.cuh) run on the CPU
// through the host shim in common.cuh, against f64 references: every matvec form, dtype and token
// count at odd sizes with poisoned outputs and a sentinel past their ends, the decode attention
// with and without the fused RoPE and cache append (outputs, the cache rows it writes, a second
// launch, each row alone against the batch), argmax + advance (ties, NaN, short last blocks).
// `make kernel-sim` builds and runs it; it takes minutes (a std::thread per CUDA thread), and it
// proves the indexing and the arithmetic, not what only a GPU shows (memory ordering between
// blocks, programmatic dependent launch, speed).
#include "matvec.cu"
#include "decode.cu"  // without hold_ns (PTX asm), cut by the Makefile rule
#include <cstdio>
#include <random>
#include <algorithm>
#include <cstdlib>
#include "check.h"

static std::mt19937_64 rng(7);
static double randn() { static std::normal_distribution<double> d; return d(rng); }
static uint16_t bf16_bits(float f) { uint32_t u = __float_as_uint(f); u += 0x7fff + ((u >> 16) & 1); return u >> 16; }
static uint16_t f16_bits(float f) { _Float16 h = (_Float16)f; uint16_t b; memcpy(&b, &h, 2); return b; }

struct Mat {
    std::vector<uint8_t> raw; std::vector<double> val; int rows, cols, dt;
    const void* p() const { return raw.data(); }
};
static Mat make(int rows, int cols, int dt, double scale, double offset = 0) {
    Mat m{{}, {}, rows, cols, dt};
    int sz = dt == 0 ? 4 : 2;
    m.raw.resize((size_t)rows * cols * sz + 64);
    m.val.resize((size_t)rows * cols);
    for (size_t i = 0; i < m.val.size(); i++) {
        float f = (float)(offset + scale * randn());
        if (dt == 0) { memcpy(&m.raw[i * 4], &f, 4); m.val[i] = f; }
        else if (dt == 1) { uint16_t b = bf16_bits(f); memcpy(&m.raw[i * 2], &b, 2); m.val[i] = to_f32(bf16{b}); }
        else { uint16_t b = f16_bits(f); memcpy(&m.raw[i * 2], &b, 2); m.val[i] = to_f32(f16{b}); }
    }
    return m;
}
static std::vector<float> randf(size_t n, double scale) { std::vector<float> v(n); for (auto& x : v) x = (float)(scale * randn()); return v; }
static std::vector<double> linear(const std::vector<double>& x, const Mat& w, const Mat* b, int n, int in, int out) {
    std::vector<double> y((size_t)n * out);
    for (int t = 0; t < n; t++) for (int r = 0; r < out; r++) {
        double s = 0; for (int k = 0; k < in; k++) s += x[(size_t)t * in + k] * w.val[(size_t)r * in + k];
        if (b) s += b->val[r];
        y[(size_t)t * out + r] = s;
    }
    return y;
}

typedef void (*MV)(const float*, const float*, const void*, float*, const float*, const float*, float, int, int, int, const void*, const void*, float*, int,
                   const void*, const void*, float*, int, const void*, const void*, float*, int);
#define F(name) reinterpret_cast<MV>(&name)
static MV plain[3][4] = {{F(matvec_n1_f32), F(matvec_n2_f32), F(matvec_n4_f32), F(matvec_n8_f32)},
                         {F(matvec_n1_bf16), F(matvec_n2_bf16), F(matvec_n4_bf16), F(matvec_n8_bf16)},
                         {F(matvec_n1_f16), F(matvec_n2_f16), F(matvec_n4_f16), F(matvec_n8_f16)}};
static MV swiglu[3][4] = {{F(matvec_swiglu_n1_f32), F(matvec_swiglu_n2_f32), F(matvec_swiglu_n4_f32), F(matvec_swiglu_n8_f32)},
                          {F(matvec_swiglu_n1_bf16), F(matvec_swiglu_n2_bf16), F(matvec_swiglu_n4_bf16), F(matvec_swiglu_n8_bf16)},
                          {F(matvec_swiglu_n1_f16), F(matvec_swiglu_n2_f16), F(matvec_swiglu_n4_f16), F(matvec_swiglu_n8_f16)}};
static MV rms[3] = {F(matvec_rms_n1_f32), F(matvec_rms_n1_bf16), F(matvec_rms_n1_f16)};
static MV rmsswiglu[3] = {F(matvec_rms_swiglu_n1_f32), F(matvec_rms_swiglu_n1_bf16), F(matvec_rms_swiglu_n1_f16)};
static MV rmsSteer[3] = {F(matvec_rms_steer_n1_f32), F(matvec_rms_steer_n1_bf16), F(matvec_rms_steer_n1_f16)};
static MV rmsswigluSteer[3] = {F(matvec_rms_swiglu_steer_n1_f32), F(matvec_rms_swiglu_steer_n1_bf16), F(matvec_rms_swiglu_steer_n1_f16)};
static int ntIndex(int n) { return n <= 1 ? 0 : n <= 2 ? 1 : n <= 4 ? 2 : 3; }
static const float NaN = NAN;

static void test_matvec() {
    const char* dts[] = {"f32", "bf16", "f16"};
    for (int dt = 0; dt < 3; dt++) {
        int E = dt == 0 ? 4 : 8;
        for (auto s : std::vector<std::pair<int, int>>{{4096, 50}, {264, 33}, {67, 20}, {1000, 17}, {9000, 9}}) {
            int in = s.first;
            int outs[3] = {s.second, 16, 7};
            Mat w[3] = {make(outs[0], in, dt, 1 / sqrt(in)), make(outs[1], in, dt, 1 / sqrt(in)), make(outs[2], in, dt, 1 / sqrt(in))};
            Mat b0 = make(outs[0], 1, dt, 1), b2 = make(outs[2], 1, dt, 1);
            Mat up = make(outs[0], in, dt, 1 / sqrt(in));
            const Mat* bias[3] = {&b0, nullptr, &b2};
            int vec = in % E == 0 && in % 4 == 0;
            int blocks = 0; for (int j = 0; j < 3; j++) blocks += (outs[j] + 3) / 4;
            for (int n : {1, 2, 3, 5, 8}) {
                auto x = randf((size_t)n * in, 1);
                std::vector<double> xd(x.begin(), x.end());
                std::vector<float> y[3];
                for (int j = 0; j < 3; j++) y[j].assign((size_t)n * outs[j] + 8, NaN);
                MV fn = plain[dt][ntIndex(n)];
                sim_launch(blocks, 1, 1, 256, [&] { fn(x.data(), nullptr, nullptr, nullptr, nullptr, nullptr, 0, n, in, vec, w[0].p(), b0.p(), y[0].data(), outs[0],
                                                       w[1].p(), nullptr, y[1].data(), outs[1], w[2].p(), b2.p(), y[2].data(), outs[2]); });
                for (int j = 0; j < 3; j++) {
                    compare("matvec " + std::string(dts[dt]) + " in=" + std::to_string(in) + " n=" + std::to_string(n) + " seg " + std::to_string(j), y[j].data(), linear(xd, w[j], bias[j], n, in, outs[j]));
                    for (int i = n * outs[j]; i < n * outs[j] + 8; i++) if (!std::isnan(y[j][i])) { fails++; printf("FAIL write past end\n"); }
                }
                std::vector<float> ys((size_t)n * outs[0], NaN);
                MV sf = swiglu[dt][ntIndex(n)];
                sim_launch((outs[0] + 3) / 4, 1, 1, 256, [&] { sf(x.data(), nullptr, nullptr, nullptr, nullptr, nullptr, 0, n, in, vec, w[0].p(), b0.p(), ys.data(), outs[0],
                                                                 up.p(), nullptr, nullptr, 0, nullptr, nullptr, nullptr, 0); });
                auto g = linear(xd, w[0], &b0, n, in, outs[0]), u = linear(xd, up, nullptr, n, in, outs[0]);
                for (size_t i = 0; i < g.size(); i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
                compare("swiglu " + std::string(dts[dt]) + " in=" + std::to_string(in) + " n=" + std::to_string(n), ys.data(), g);
            }
            // norm forms
            Mat wn = make(in, 1, dt, 0.3, 1.0);
            for (int form = 0; form < 3; form++) {
                // form 0: x alone; 1: x + xb; 2: x + xb + alpha·steer (the decoder's steering add)
                int withDelta = form > 0, withSteer = form == 2;
                auto x = randf(in, 2), xb = randf(in, 1), steer = randf(in, 1);
                float alpha = -1.75f;
                std::vector<double> v(in);
                double ss = 0;
                for (int k = 0; k < in; k++) { v[k] = (double)x[k] + (withDelta ? (double)xb[k] : 0); }
                // the kernel adds in f32: match that
                for (int k = 0; k < in; k++) {
                    float f = x[k] + (withDelta ? xb[k] : 0.f);
                    if (withSteer) f = fmaf(alpha, steer[k], f);
                    v[k] = f;
                    ss += v[k] * v[k];
                }
                double sc = 1 / sqrt(ss / in + 1e-5);
                std::vector<double> uu(in);
                for (int k = 0; k < in; k++) uu[k] = v[k] * sc * wn.val[k];
                std::vector<float> xout(in, NaN);
                std::vector<float> y[3];
                for (int j = 0; j < 3; j++) y[j].assign(outs[j], NaN);
                sim_launch(blocks, 1, 1, 256, [&] { (withSteer ? rmsSteer : rms)[dt](x.data(), withDelta ? xb.data() : nullptr, wn.p(), xout.data(), withSteer ? &alpha : nullptr, withSteer ? steer.data() : nullptr, 1e-5f, 1, in, vec, w[0].p(), b0.p(), y[0].data(), outs[0],
                                                            w[1].p(), nullptr, y[1].data(), outs[1], w[2].p(), b2.p(), y[2].data(), outs[2]); });
                std::string what = std::string(dts[dt]) + " in=" + std::to_string(in) + " delta=" + std::to_string(withDelta) + " steer=" + std::to_string(withSteer);
                for (int j = 0; j < 3; j++) compare("rms " + what + " seg " + std::to_string(j), y[j].data(), linear(uu, w[j], bias[j], 1, in, outs[j]));
                compare("rms xout " + what, xout.data(), v, 0, 0);
                std::vector<float> ys(outs[0], NaN);
                xout.assign(in, NaN);
                sim_launch((outs[0] + 3) / 4, 1, 1, 256, [&] { (withSteer ? rmsswigluSteer : rmsswiglu)[dt](x.data(), withDelta ? xb.data() : nullptr, wn.p(), xout.data(), withSteer ? &alpha : nullptr, withSteer ? steer.data() : nullptr, 1e-5f, 1, in, vec, w[0].p(), b0.p(), ys.data(), outs[0],
                                                                     up.p(), nullptr, nullptr, 0, nullptr, nullptr, nullptr, 0); });
                auto g = linear(uu, w[0], &b0, 1, in, outs[0]), u = linear(uu, up, nullptr, 1, in, outs[0]);
                for (size_t i = 0; i < g.size(); i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
                compare("rms swiglu " + what, ys.data(), g);
                compare("rms swiglu xout " + what, xout.data(), v, 0, 0);
            }
        }
    }
}

// The decode step's attention (attention_decode.cuh, ROPE as decode.cu launches it, and without
// as attention.cu does) for a batch of rows of different positions, one idle, over f32 and bf16
// caches with shuffled block tables: outputs against an f64 reference on the keys and values as
// the cache holds them; the new key and value in the cache; the counters reset; a second launch
// identical; each row's output the same bits alone as in the batch (batch invariance).
static uint16_t bf16_round_bits(float f) { return bf16_bits(f); }
template <typename KV> static float kv_val(KV v);
template <> float kv_val(float v) { return v; }
template <> float kv_val(bf16 v) { return to_f32(v); }
template <typename KV> static KV kv_make(float f);
template <> float kv_make(float f) { return f; }
template <> bf16 kv_make(float f) { return bf16{bf16_round_bits(f)}; }

template <typename KV, bool ROPE>
static void attention_case(int heads, int kvh, int dim, int block, std::vector<int> positions) {
    int n = (int)positions.size(), width = kvh * dim, group = heads / kvh, half = dim / 2;
    int subs = (group + 7) / 8, ys = kvh * subs;
    int maxpos = *std::max_element(positions.begin(), positions.end());
    int per = (maxpos + 1 + block - 1) / block + 1;           // blocks per row's table
    int nblocks = n * per + 3;
    std::vector<int> perm(nblocks);
    for (int b = 0; b < nblocks; b++) perm[b] = b;
    std::shuffle(perm.begin(), perm.end(), rng);
    int stride = per + 2;
    std::vector<int> table((size_t)n * stride, -1);
    for (int i = 0; i < n; i++)
        for (int b = 0; b < per; b++) table[(size_t)i * stride + b] = perm[i * per + b];
    std::vector<KV> kc((size_t)nblocks * block * width), vc = kc;
    for (auto& x : kc) x = kv_make<KV>(NAN);
    for (auto& x : vc) x = kv_make<KV>(NAN);
    auto rowOf = [&](int i, int j) { return (size_t)table[(size_t)i * stride + j / block] * block + j % block; };
    for (int i = 0; i < n; i++)
        for (int j = 0; j < positions[i] + (ROPE ? 0 : 1); j++)  // without ROPE the cache holds pos too
            for (int e = 0; e < width; e++) {
                kc[rowOf(i, j) * width + e] = kv_make<KV>((float)randn());
                vc[rowOf(i, j) * width + e] = kv_make<KV>((float)randn());
            }
    auto q = randf((size_t)n * heads * dim, 1), k = randf((size_t)n * width, 1), v = randf((size_t)n * width, 1);
    std::vector<float> inv(half);
    for (int e = 0; e < half; e++) inv[e] = (float)pow(500000.0, -2.0 * e / dim);
    double scale = 1 / sqrt((double)dim);
    // Reference: q (and the new k) rotated in f32 as rope_f32 does, the new k and v rounded as the
    // cache stores them, then attention in f64.
    std::vector<double> want((size_t)n * heads * dim, 0);
    std::vector<std::vector<float>> newk(n, std::vector<float>(width)), newv(n, std::vector<float>(width));
    for (int i = 0; i < n; i++) {
        int pos = positions[i];
        if (pos < 0) continue;
        std::vector<float> qr(q.begin() + (size_t)i * heads * dim, q.begin() + (size_t)(i + 1) * heads * dim);
        auto rope = [&](float* x) {
            for (int e = 0; e < half; e++) {
                float s, c; sincosf(inv[e] * (float)pos, &s, &c);
                float a = x[e], b = x[e + half];
                x[e] = a * c - b * s, x[e + half] = b * c + a * s;
            }
        };
        for (int e = 0; e < width; e++) newk[i][e] = k[(size_t)i * width + e], newv[i][e] = v[(size_t)i * width + e];
        if (ROPE) {
            for (int h = 0; h < heads; h++) rope(&qr[h * dim]);
            for (int g = 0; g < kvh; g++) rope(&newk[i][g * dim]);
            for (int e = 0; e < width; e++) newk[i][e] = kv_val(kv_make<KV>(newk[i][e])), newv[i][e] = kv_val(kv_make<KV>(newv[i][e]));
        }
        auto key = [&](int j, int e) { return ROPE && j == pos ? (double)newk[i][e] : (double)kv_val(kc[rowOf(i, j) * width + e]); };
        auto val = [&](int j, int e) { return ROPE && j == pos ? (double)newv[i][e] : (double)kv_val(vc[rowOf(i, j) * width + e]); };
        for (int h = 0; h < heads; h++) {
            int g = h / group;
            std::vector<double> sc(pos + 1);
            double m = -INFINITY;
            for (int j = 0; j <= pos; j++) {
                double s = 0;
                for (int e = 0; e < dim; e++) s += (double)(qr[h * dim + e] * (float)scale) * key(j, g * dim + e);
                sc[j] = s; m = std::max(m, s);
            }
            double l = 0;
            for (auto& x : sc) { x = exp(x - m); l += x; }
            for (int e = 0; e < dim; e++) {
                double a = 0;
                for (int j = 0; j <= pos; j++) a += sc[j] * val(j, g * dim + e);
                want[((size_t)i * heads + h) * dim + e] = a / l;
            }
        }
    }
    std::vector<float> acc((size_t)n * heads * 32 * dim, NAN), ml((size_t)n * heads * 32 * 2, NAN);
    std::vector<int> count((size_t)n * ys, 0);
    auto run = [&](int rows, int first, std::vector<float>& out) {
        // rows consecutive rows starting at first, as a batch of their own.
        std::vector<int> pos(positions.begin() + first, positions.begin() + first + rows);
        const int* tab = table.data() + (size_t)first * stride;
        const float* qq = q.data() + (size_t)first * heads * dim;
        const float* kk = k.data() + (size_t)first * width;
        const float* vv = v.data() + (size_t)first * width;
        sim_launch(32, ys, rows, 128, [&] {
            auto fn = dim <= 128 ? attention_decode_gqa<KV, ROPE, 128> : attention_decode_gqa<KV, ROPE, 256>;
            fn(out.data() + (size_t)first * heads * dim, acc.data(), ml.data(), count.data(), qq, kk, vv,
                                           kc.data(), vc.data(), pos.data(), tab, stride, block, inv.data(), heads, kvh, dim, (float)scale);
        });
    };
    char what[240];
    snprintf(what, sizeof what, "attention_decode_gqa %s rope=%d heads=%d/%d D=%d block=%d n=%d maxpos=%d", sizeof(KV) == 4 ? "f32" : "bf16", ROPE, heads, kvh, dim, block, n, maxpos);
    std::vector<float> out((size_t)n * heads * dim, NAN), first;
    for (int rep = 0; rep < 2; rep++) {
        out.assign(out.size(), NAN);
        run(n, 0, out);
        compare(std::string(what) + " rep " + std::to_string(rep), out.data(), want, 1e-5, 1e-4);
        for (int c : count) if (c != 0) { fails++; printf("FAIL %s: count not reset\n", what); break; }
        if (rep == 0) first = out;
        else if (memcmp(first.data(), out.data(), out.size() * 4) != 0) { fails++; printf("FAIL %s: a second launch differs\n", what); }
    }
    if (ROPE)
        for (int i = 0; i < n; i++) {
            if (positions[i] < 0) continue;
            std::vector<double> kw(newk[i].begin(), newk[i].end()), vw(newv[i].begin(), newv[i].end());
            std::vector<float> kg(width), vg(width);
            for (int e = 0; e < width; e++) kg[e] = kv_val(kc[rowOf(i, positions[i]) * width + e]), vg[e] = kv_val(vc[rowOf(i, positions[i]) * width + e]);
            compare(std::string(what) + " k row", kg.data(), kw, 0, 0);
            compare(std::string(what) + " v row", vg.data(), vw, 0, 0);
        }
    // Each row alone: the same bits as in the batch.
    checks++;
    for (int i = 0; i < n; i++) {
        std::vector<float> alone(out.size(), NAN);
        run(1, i, alone);
        if (memcmp(alone.data() + (size_t)i * heads * dim, out.data() + (size_t)i * heads * dim, (size_t)heads * dim * 4) != 0) {
            fails++; printf("FAIL %s: row %d alone differs from the batch\n", what, i); break;
        }
    }
}

static void test_attention() {
    // positions: ≤ 64 (one chunk, written directly), 65–2048 (chunks of 64), past 2048 (of 128), an idle row.
    attention_case<float, true>(8, 2, 128, 16, {100, 0, -1, 37});
    attention_case<bf16, true>(32, 8, 128, 16, {64, 130, 2100});
    attention_case<float, true>(6, 2, 20, 3, {31, 5});
    attention_case<bf16, true>(12, 1, 48, 5, {70});                 // a group of 12: two blocks of heads
    attention_case<float, true>(2, 1, 256, 8, {63, 200});
    attention_case<bf16, true>(4, 4, 22, 7, {9, 66});               // D % 4 ≠ 0: scalar loads
    attention_case<float, false>(8, 2, 128, 16, {100, 3, -1});
    attention_case<bf16, false>(6, 2, 64, 16, {500, 12});
    attention_case<float, false>(3, 1, 18, 4, {40});
}

static void test_argmax() {
    int tb[8] = {5, 2, 7, 1, 0, 3, 6, 4};
    struct C { int d; std::vector<std::pair<int, float>> set; int want; };
    for (C c : std::vector<C>{{128256, {{77777, 50}}, 77777}, {128256, {{5, 60}, {100000, 60}}, 5}, {128256, {{128255, 70}, {3, NAN}}, 128255},
                              {1000, {{0, 80}}, 0}, {7, {{6, 9}, {2, 9}}, 2}, {3000, {{-1, NAN}}, 0}, {4097, {{4096, 9}}, 4096}}) {
        auto x = randf(c.d, 1);
        for (auto [i, v] : c.set) { if (i < 0) x.assign(c.d, v); else x[i] = v; }
        int tok = -1, pos = 9, ctx = 0, row = 0, count = 0, hist[32] = {0};
        std::vector<float> cv(256); std::vector<int> ci(256);
        int blocks = std::max(1, std::min(256, (c.d + 2047) / 2048));
        for (int step = 0; step < 2; step++) {
            sim_launch(blocks, 1, 1, 1024, [&] { argmax_advance_f32(&tok, x.data(), c.d, cv.data(), ci.data(), &count, &pos, &ctx, &row, tb, 4, hist); });
            int p = 10 + step;
            checks++;
            if (tok != c.want || pos != p || ctx != p + 1 || row != tb[p / 4] * 4 + p % 4 || hist[p] != c.want || count != 0) {
                fails++; printf("FAIL argmax d=%d step %d: tok %d pos %d ctx %d row %d hist %d count %d; want tok %d\n", c.d, step, tok, pos, ctx, row, hist[p], count, c.want);
            }
        }
    }
}

int main() {
    quiet_ok = true;
    test_argmax();
    printf("argmax done\n"); fflush(stdout);
    test_attention();
    printf("attention done\n"); fflush(stdout);
    if (!getenv("SKIP_MATVEC")) test_matvec();
    printf("%d checks, %d failures\n", checks, fails);
    return fails != 0;
}
