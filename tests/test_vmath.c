/*
 * test_vmath.c — the vector math of backend/cpu/vmath.h against libm in
 * double (the correctly rounded value's neighbourhood): every 997th FP32 bit
 * pattern (all signs, subnormals, huge values, ±inf, NaNs), dense sweeps where
 * the formulas switch (exp's overflow and subnormal edges, tanh at 0.625,
 * sigmoid near 0), and the special values.  The error is counted in units of
 * the last place of the FP32 result (subnormal results: of the subnormal
 * grid).  The AVX-512, AVX2+FMA and scalar paths must return the same bits.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend/cpu/cpu_isa.h"
#include "backend/cpu/vmath.h"
#include "base/base.h"
#include "test.h"

typedef void (*vfn)(float *, const float *, int64_t);

static double ref_exp(double x) { return exp(x); }
static double ref_log(double x) { return log(x); }
static double ref_tanh(double x) { return tanh(x); }
static double ref_sigmoid(double x) { return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x)); }

/* |y − r| in units of the last place of FP32 at r (r in double). */
static double ulp_err(float y, double r) {
    if (isnan(r)) return isnan(y) ? 0 : INFINITY;
    if (isinf(r) || fabs(r) > 3.4028234663852886e38) {
        /* the correctly rounded float is ±inf or ±FLT_MAX */
        float rf = (float)r;
        if (y == rf) return 0;
        if (isinf(rf) && fabsf(y) == 3.40282347e38f && signbit(y) == signbit(rf)) return 1;
        return INFINITY;
    }
    if (isnan(y) || isinf(y)) return INFINITY;
    double a = fabs(r);
    int e;
    frexp(a, &e); /* a = m·2^e, m in [0.5, 1) */
    double ulp = a < 1.1754943508222875e-38 ? 0x1p-149 : ldexp(1.0, e - 24);
    return fabs((double)y - r) / ulp;
}

typedef struct { double max_ulp; float worst_x; } err_stat;

static void measure(err_stat *st, vfn f, double (*ref)(double), const float *x, int64_t n, float *y) {
    f(y, x, n);
    for (int64_t i = 0; i < n; i++) {
        double e = ulp_err(y[i], ref((double)x[i]));
        if (e > st->max_ulp) st->max_ulp = e, st->worst_x = x[i];
    }
}

static float from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* inputs: every 997th bit pattern, dense sweeps in [lo, hi), specials */
static int64_t make_inputs(float *x, int64_t cap, const float (*sweeps)[2], int nsweep) {
    int64_t n = 0;
    for (uint64_t u = 0; u <= 0xffffffffull && n < cap; u += 997) x[n++] = from_bits((uint32_t)u);
    for (int s = 0; s < nsweep; s++)
        for (int i = 0; i < 20000 && n < cap; i++) x[n++] = sweeps[s][0] + (sweeps[s][1] - sweeps[s][0]) * i / 20000.0f;
    const float sp[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, 1.0f, -1.0f, 1e-45f, -1e-45f, 1.17549435e-38f,
                        3.4028235e38f, -3.4028235e38f, 88.72283f, 88.7228394f, -87.33655f, -103.972f, -104.5f, 0.625f,
                        -0.625f, 0.62499994f, 9.0f, -9.0f, 44.0f};
    for (size_t i = 0; i < sizeof sp / sizeof sp[0] && n < cap; i++) x[n++] = sp[i];
    return n;
}

static void check_fn(const char *name, vfn f, double (*ref)(double), double bound, const float (*sweeps)[2],
                     int nsweep) {
    int64_t cap = (int64_t)(0x100000000ull / 997) + 200000;
    float *x = ds_malloc((size_t)cap * 4), *y = ds_malloc((size_t)cap * 4), *y2 = ds_malloc((size_t)cap * 4);
    int64_t n = make_inputs(x, cap, sweeps, nsweep);
    int top = ds_cpu_isa_max(), prev = ds_cpu_isa();
    for (int isa = top; isa >= DS_ISA_SCALAR; isa--) {
        ds_cpu_isa_set(isa);
        err_stat st = {0, 0};
        measure(&st, f, ref, x, n, y);
        printf("  %-8s %-8s max error %.3f ulp (at x = %.9g)\n", name, ds_cpu_isa_name(isa), st.max_ulp,
               (double)st.worst_x);
        CHECK_MSG(st.max_ulp <= bound, "%s/%s: %.3f ulp > %.1f at x = %.9g", name, ds_cpu_isa_name(isa), st.max_ulp,
                  bound, (double)st.worst_x);
        if (isa == top) {
            memcpy(y2, y, (size_t)n * 4);
        } else {
            int64_t diff = 0;
            for (int64_t i = 0; i < n; i++)
                if (memcmp(&y[i], &y2[i], 4) && !(isnan(y[i]) && isnan(y2[i]))) diff++;
            CHECK_MSG(diff == 0, "%s: %lld results of %s differ from %s", name, (long long)diff,
                      ds_cpu_isa_name(isa), ds_cpu_isa_name(top));
        }
    }
    ds_cpu_isa_set(prev);
    free(x), free(y), free(y2);
}

TEST(vmath_exp_vs_libm) {
    const float sw[][2] = {{-1, 1}, {80, 89}, {-110, -80}, {-1e-3f, 1e-3f}};
    check_fn("exp", ds_vexp, ref_exp, 1.5, sw, 4);
    /* the edges exactly where expf has them */
    float x[] = {88.72283f, 88.72284f, -1000.0f, -INFINITY, INFINITY}, y[5];
    ds_vexp(y, x, 5);
    CHECK(isfinite(y[0]) && isinf(y[1]) && y[2] == 0 && y[3] == 0 && isinf(y[4]));
}

TEST(vmath_log_vs_libm) {
    const float sw[][2] = {{0.5f, 2.0f}, {0.99f, 1.01f}, {1e-40f, 1e-37f}};
    check_fn("log", ds_vlog, ref_log, 1.5, sw, 3);
    float x[] = {0.0f, -0.0f, -1.0f, INFINITY, -INFINITY, 1.0f}, y[6];
    ds_vlog(y, x, 6);
    CHECK(y[0] == -INFINITY && y[1] == -INFINITY && isnan(y[2]) && y[3] == INFINITY && isnan(y[4]) && y[5] == 0);
}

TEST(vmath_tanh_vs_libm) {
    const float sw[][2] = {{-1, 1}, {0.6f, 0.65f}, {-0.65f, -0.6f}, {5, 12}};
    check_fn("tanh", ds_vtanh, ref_tanh, 2.0, sw, 4);
    float x[] = {INFINITY, -INFINITY, -0.0f}, y[3];
    ds_vtanh(y, x, 3);
    CHECK(y[0] == 1 && y[1] == -1 && y[2] == 0 && signbit(y[2]));
}

TEST(vmath_sigmoid_vs_libm) {
    const float sw[][2] = {{-2, 2}, {-110, -80}, {15, 20}};
    check_fn("sigmoid", ds_vsigmoid, ref_sigmoid, 3.0, sw, 3);
    float x[] = {INFINITY, -INFINITY, 0.0f, -100.0f}, y[4];
    ds_vsigmoid(y, x, 4);
    CHECK(y[0] == 1 && y[1] == 0 && y[2] == 0.5f && y[3] > 0);
}

TEST(vmath_exp_sum_and_max) {
    /* odd lengths (masked tails): against double sums of libm */
    ds_rng r;
    ds_rng_seed(&r, 7);
    float x[203], y[203];
    for (int i = 0; i < 203; i++) x[i] = 4 * ds_rng_normal(&r);
    int top = ds_cpu_isa_max(), prev = ds_cpu_isa();
    for (int isa = top; isa >= DS_ISA_SCALAR; isa--) {
        ds_cpu_isa_set(isa);
        for (int n = 0; n <= 203; n += (n < 40 ? 1 : 17)) {
            double mx = -INFINITY, s = 0;
            for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
            CHECK(ds_vmax(x, n) == (float)mx);
            for (int i = 0; i < n; i++) s += exp((double)x[i] - (float)mx);
            float got = ds_vexp_sum(y, x, (float)mx, n);
            CHECK_MSG(fabs(got - s) <= 1e-6 * s + 1e-30, "%s n=%d: %.9g vs %.9g", ds_cpu_isa_name(isa), n, got, s);
            for (int i = 0; i < n; i++) CHECK(ulp_err(y[i], exp((double)(x[i] - (float)mx))) <= 2);
        }
    }
    ds_cpu_isa_set(prev);
}

/* the kernels that use the vector math, on every ISA path, against their
 * double-precision references: cross-entropy (loss and dlogits, an ignored
 * row, odd V), SwiGLU forward and backward, the sigmoid and softmax routers */
#include "backend/cpu/backward.h"
#include "backend/cpu/kernels.h"
double ds_test_max_rel(const float *a, const float *b, size_t n, double floor_);

TEST(vmath_kernels_match_refs_every_isa) {
    ds_rng r;
    ds_rng_seed(&r, 8);
    const int64_t N = 5, V = 1001, I = 333, E = 24;
    float *z = ds_malloc(N * V * 4), *dz = ds_malloc(N * V * 4), *dzr = ds_malloc(N * V * 4);
    float loss[5], lossr[5];
    int32_t tg[5] = {3, 1000, -100, 0, 517};
    for (int64_t i = 0; i < N * V; i++) z[i] = 3 * ds_rng_normal(&r);
    float *g = ds_malloc(N * I * 4), *u = ds_malloc(N * I * 4), *d = ds_malloc(N * I * 4);
    float *o = ds_malloc(N * I * 4), *orf = ds_malloc(N * I * 4), *dg = ds_malloc(N * I * 4),
          *du = ds_malloc(N * I * 4), *dgr = ds_malloc(N * I * 4), *dur = ds_malloc(N * I * 4);
    for (int64_t i = 0; i < N * I; i++) g[i] = 6 * ds_rng_normal(&r), u[i] = ds_rng_normal(&r), d[i] = ds_rng_normal(&r);
    float lg[5 * 24], wr[5 * 4], w[5 * 4], sr[5 * 24], s[5 * 24];
    int32_t ir[5 * 4], ix[5 * 4];
    for (int i = 0; i < 5 * 24; i++) lg[i] = 2 * ds_rng_normal(&r);
    double tr = ds_cross_entropy_ref(dzr, lossr, NULL, z, tg, N, V, -100, 0.25f);
    ds_swiglu_forward_ref(orf, g, u, N, I);
    ds_swiglu_backward_ref(dgr, dur, d, g, u, N, I);
    int top = ds_cpu_isa_max(), prev = ds_cpu_isa();
    for (int isa = top; isa >= DS_ISA_SCALAR; isa--) {
        ds_cpu_isa_set(isa);
        const char *nm = ds_cpu_isa_name(isa);
        int64_t cnt = 0;
        double t = ds_cross_entropy(dz, loss, &cnt, z, tg, N, V, -100, 0.25f);
        CHECK_MSG(fabs(t - tr) < 1e-5 * fabs(tr) && cnt == 4, "%s: ce %.9g vs %.9g", nm, t, tr);
        CHECK_MSG(ds_test_max_rel(dz, dzr, (size_t)(N * V), 1e-6) < 1e-5, "%s: dlogits", nm);
        ds_swiglu_forward(o, g, u, N, I);
        ds_swiglu_backward(dg, du, d, g, u, N, I);
        CHECK_MSG(ds_test_max_rel(o, orf, (size_t)(N * I), 1e-6) < 1e-5, "%s: swiglu", nm);
        CHECK_MSG(ds_test_max_rel(dg, dgr, (size_t)(N * I), 1e-6) < 1e-5, "%s: swiglu dgate", nm);
        CHECK_MSG(ds_test_max_rel(du, dur, (size_t)(N * I), 1e-6) < 1e-5, "%s: swiglu dup", nm);
        for (int sig = 0; sig < 2; sig++) {
            ds_route_params p = {E, 4, 4, 2, sig, sig, 1, 2.5f};
            ds_moe_route_forward_ref(wr, ir, sr, lg, NULL, &p, N);
            ds_moe_route_forward(w, ix, s, lg, NULL, &p, N);
            CHECK_MSG(!memcmp(ix, ir, sizeof ix), "%s: route idx sigmoid=%d", nm, sig);
            CHECK_MSG(ds_test_max_rel(w, wr, 20, 1e-6) < 1e-5 && ds_test_max_rel(s, sr, 120, 1e-6) < 1e-5,
                      "%s: route weights sigmoid=%d", nm, sig);
        }
    }
    ds_cpu_isa_set(prev);
    free(z), free(dz), free(dzr), free(g), free(u), free(d), free(o), free(orf), free(dg), free(du), free(dgr),
        free(dur);
}
