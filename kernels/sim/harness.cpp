// The kernels of the fused decode step (matvec.cu, decode.cu) run on the CPU through the host
// shim in common.cuh, against f64 references: every matvec form, dtype and token count at odd
// sizes with poisoned outputs and a sentinel past their ends, the fused attention (output, the
// cache rows it writes, a second launch), argmax + advance (ties, NaN, short last blocks).
// `make kernel-sim` builds and runs it; it takes minutes (a std::thread per CUDA thread), and it
// proves the indexing and the arithmetic, not what only a GPU shows (memory ordering between
// blocks, programmatic dependent launch, speed).
#include "matvec.cu"
#include "decode.cu"  // without hold_ns (PTX asm), cut by the Makefile rule
#include <cstdio>
#include <random>
#include <algorithm>
#include <cstdlib>

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
static int fails = 0, checks = 0;
static void compare(const std::string& what, const float* got, const std::vector<double>& want, double atol = 1e-5, double rtol = 1e-4) {
    checks++;
    double worst = 0; size_t at = 0; int bad = 0;
    for (size_t i = 0; i < want.size(); i++) {
        double d = fabs(got[i] - want[i]);
        if (!(d <= atol + rtol * fabs(want[i]))) { if (!bad) at = i; bad++; }
        if (!(d <= worst)) worst = d;
    }
    if (bad) { fails++; printf("FAIL %s: %d of %zu bad, first at %zu got %g want %g (max err %g)\n", what.c_str(), bad, want.size(), at, got[at], want[at], worst); }
}
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

static void test_attention() {
    struct C { int heads, kvh, dim, block, pos, capacity; };
    for (C c : std::vector<C>{{8, 2, 128, 16, 100, 130}, {6, 2, 20, 3, 37, 64}, {4, 4, 64, 16, 0, 40}, {2, 1, 256, 8, 63, 64},
                              {32, 8, 128, 16, 64, 200}, {3, 1, 48, 5, 31, 33}, {4, 2, 128, 16, 300, 300}}) {
        int width = c.kvh * c.dim, group = c.heads / c.kvh, half = c.dim / 2;
        int nblocks = (c.capacity + 1 + c.block - 1) / c.block + 3;
        // table: a permutation, offset
        std::vector<int> table;
        for (int i = 0; i < nblocks; i++) table.push_back(nblocks - 1 - i);
        std::shuffle(table.begin(), table.end(), rng);
        std::vector<float> kc((size_t)nblocks * c.block * width, NaN), vc = kc;
        auto rowOf = [&](int j) { return table[j / c.block] * c.block + j % c.block; };
        for (int j = 0; j < c.pos; j++) for (int e = 0; e < width; e++) { kc[(size_t)rowOf(j) * width + e] = randn(); vc[(size_t)rowOf(j) * width + e] = randn(); }
        auto q = randf(c.heads * c.dim, 1), k = randf(width, 1), v = randf(width, 1);
        std::vector<float> inv(half);
        for (int i = 0; i < half; i++) inv[i] = (float)pow(500000.0, -2.0 * i / c.dim);
        // reference (f32 rope as the CPU does, then double attention)
        std::vector<double> qr(c.heads * c.dim), kr(width);
        auto rope = [&](const float* x, double* o) {
            for (int i = 0; i < half; i++) { float s, co; sincosf(inv[i] * (float)c.pos, &s, &co); float a = x[i], b = x[i + half];
                o[i] = (float)(a * co - b * s); o[i + half] = (float)(b * co + a * s); }
        };
        for (int h = 0; h < c.heads; h++) rope(&q[h * c.dim], &qr[h * c.dim]);
        for (int g = 0; g < c.kvh; g++) rope(&k[g * c.dim], &kr[g * c.dim]);
        std::vector<double> want(c.heads * c.dim);
        double scale = 1 / sqrt((double)c.dim);
        for (int h = 0; h < c.heads; h++) {
            int g = h / group;
            std::vector<double> sc(c.pos + 1);
            double m = -INFINITY;
            for (int j = 0; j <= c.pos; j++) {
                double s = 0;
                for (int e = 0; e < c.dim; e++) s += qr[h * c.dim + e] * (j == c.pos ? kr[g * c.dim + e] : kc[(size_t)rowOf(j) * width + g * c.dim + e]);
                sc[j] = s * scale; m = std::max(m, sc[j]);
            }
            double l = 0; for (auto& s : sc) { s = exp(s - m); l += s; }
            for (int e = 0; e < c.dim; e++) { double a = 0; for (int j = 0; j <= c.pos; j++) a += sc[j] * (j == c.pos ? v[g * c.dim + e] : vc[(size_t)rowOf(j) * width + g * c.dim + e]); want[h * c.dim + e] = a / l; }
        }
        int parts = (c.capacity + 32) / 32;
        std::vector<float> out(c.heads * c.dim, NaN), acc((size_t)c.heads * parts * c.dim, NaN), ml(c.heads * parts * 2, NaN);
        std::vector<int> count(c.heads, 0);
        int pos = c.pos;
        char what[200]; snprintf(what, sizeof what, "attention heads=%d/%d D=%d block=%d pos=%d cap=%d", c.heads, c.kvh, c.dim, c.block, c.pos, c.capacity);
        for (int rep = 0; rep < 2; rep++) {
            out.assign(out.size(), NaN);
            sim_launch(parts, c.heads, 1, 128, [&] { attention_decode_rope_f32(out.data(), acc.data(), ml.data(), count.data(), q.data(), k.data(), v.data(), kc.data(), vc.data(),
                                                                               &pos, table.data(), inv.data(), c.block, c.heads, c.kvh, c.dim, parts, (float)scale); });
            compare(std::string(what) + " rep " + std::to_string(rep), out.data(), want, 1e-5, 1e-4);
            for (int h = 0; h < c.heads; h++) if (count[h] != 0) { fails++; printf("FAIL %s count not reset\n", what); break; }
        }
        std::vector<double> kw(kr.begin(), kr.end()), vw(v.begin(), v.end());
        compare(std::string(what) + " k row", &kc[(size_t)rowOf(c.pos) * width], kw, 0, 0);
        compare(std::string(what) + " v row", &vc[(size_t)rowOf(c.pos) * width], vw, 0, 0);
    }
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
    test_argmax();
    printf("argmax done\n"); fflush(stdout);
    test_attention();
    printf("attention done\n"); fflush(stdout);
    if (!getenv("SKIP_MATVEC")) test_matvec();
    printf("%d checks, %d failures\n", checks, fails);
    return fails != 0;
}
