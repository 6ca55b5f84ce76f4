// The kernel simulation harnesses' one comparison of a kernel's output with its f64 reference, and
// the counts each harness prints at its end.
#pragma once
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

static int fails = 0, checks = 0;
// quiet_ok: print failures only (harness.cpp, whose hundreds of checks would bury them).
static bool quiet_ok = false;

// compare checks got[i] against want[i] within atol + rtol·|want[i]| for every i < want.size(),
// and that the n - want.size() elements after them (the sentinel a buffer ends with) are still NaN.
static void compare(const std::string& what, const float* got, size_t n, const std::vector<double>& want, double atol, double rtol) {
    checks++;
    double worst = 0;
    size_t at = 0;
    int bad = 0;
    for (size_t i = 0; i < want.size(); i++) {
        double d = fabs(got[i] - want[i]);
        if (!(d <= atol + rtol * fabs(want[i]))) {
            if (!bad) at = i;
            bad++;
        }
        if (!(d <= worst)) worst = d;
    }
    for (size_t i = want.size(); i < n; i++)
        if (!std::isnan(got[i])) {
            if (!bad) at = i;
            bad++;
        }
    if (bad) {
        fails++;
        printf("FAIL %s: %d of %zu bad, first at %zu got %g want %g (max err %g)\n", what.c_str(), bad, want.size(), at, got[at],
               at < want.size() ? want[at] : NAN, worst);
    } else if (!quiet_ok)
        printf("ok   %s (max err %.2e)\n", what.c_str(), worst);
    fflush(stdout);
}

static void compare(const std::string& what, const std::vector<float>& got, const std::vector<double>& want, double atol, double rtol) {
    compare(what, got.data(), got.size(), want, atol, rtol);
}

// The form for outputs whose sentinel a harness checks itself: exactly want.size() elements.
static void compare(const std::string& what, const float* got, const std::vector<double>& want, double atol = 1e-5, double rtol = 1e-4) {
    compare(what, got, want.size(), want, atol, rtol);
}
