/* test_fp8_gemm.c — block-scaled FP8 GEMM and BF16 GEMM.
 * Oracles: a torch float64 fixture of the promoted sum; a float64 GEMM of the
 * dequantized inputs (plain loops here); the original FP32 inputs under
 * DeepGEMM's criterion 1 - 2 sum(xy) / sum(x^2 + y^2) < 1e-3; the scalar
 * references (same block order, so the same bits). */
#include "test.h"
#include "fp8_fixture.h"
#include "backend/cpu/fp8_linear.h"
#include "backend/cpu/gemm_bf16.h"
#include "backend/cpu/gemm_fp8.h"
#include "num/dtype.h"
#include "num/quant.h"

#include <stdint.h>

static double calc_diff(const float *x, const double *y, int64_t n) {
    double sxy = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) { sxy += x[i] * y[i]; s2 += (double)x[i] * x[i] + y[i] * y[i]; }
    return s2 > 0 ? 1.0 - 2.0 * sxy / s2 : 0.0;
}

/* Random normal (R, C), each row scaled by 2^u with u uniform in [-spread, spread]
 * (activations: tokens of different sizes; weights: spread 0), and a few x20
 * outliers. */
static float *rand_mat_s(ds_rng *r, int64_t R, int64_t C, int spread) {
    float *x = malloc(sizeof(float) * (size_t)(R * C > 0 ? R * C : 1));
    for (int64_t i = 0; i < R; i++) {
        float mag = ldexpf(1.0f, (int)ds_rng_below(r, 2 * (uint64_t)spread + 1) - spread);
        for (int64_t j = 0; j < C; j++) x[i * C + j] = ds_rng_normal(r) * mag;
    }
    for (int64_t i = 0; i < (R * C) / 500; i++) x[ds_rng_below(r, (uint64_t)(R * C))] *= 20.0f;
    return x;
}
static float *rand_mat(ds_rng *r, int64_t R, int64_t C) { return rand_mat_s(r, R, C, 3); }
static float *rand_w(ds_rng *r, int64_t R, int64_t C) { return rand_mat_s(r, R, C, 0); }

/* C (M, N) = sum_k A(m, k) B(n, k), float64; A(m,k) = a[m*sam + k*sak]. */
static double *gemm_f64(const float *a, int64_t sam, int64_t sak, const float *b, int64_t sbn, int64_t sbk,
                        int64_t M, int64_t N, int64_t K) {
    double *c = calloc((size_t)(M * N > 0 ? M * N : 1), sizeof(double));
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) s += (double)a[m * sam + k * sak] * b[n * sbn + k * sbk];
            c[m * N + n] = s;
        }
    return c;
}

typedef struct { uint8_t *q; float *s, *deq; } qmat;
static qmat quant(const float *x, int64_t R, int64_t C, ds_quant_gran g) {
    qmat m;
    m.q = malloc((size_t)(R * C + 1));
    m.s = malloc(sizeof(float) * (size_t)(ds_quant_scale_count(g, R, C) + 1));
    m.deq = malloc(sizeof(float) * (size_t)(R * C + 1));
    ds_quant_opts o = ds_quant_defaults(g);
    ds_quantize(m.q, m.s, x, R, C, &o);
    ds_dequantize(m.deq, m.q, m.s, R, C, DS_FP8_E4M3, g);
    return m;
}
static void qfree(qmat m) { free(m.q); free(m.s); free(m.deq); }

TEST(fp8_gemm_matches_torch_fixture) {
    enum { M = 37, N = 150, K = 300 };
    size_t na, nas, nb, nbs, nc;
    uint8_t *a = fp8_fixture("gemm_a.u8", 1, &na), *b = fp8_fixture("gemm_b.u8", 1, &nb);
    float *as = fp8_fixture("gemm_as.f32", 4, &nas), *bs = fp8_fixture("gemm_bs.f32", 4, &nbs);
    float *want = fp8_fixture("gemm_c.f32", 4, &nc);
    CHECK(a && b && as && bs && want && na == M * K && nb == N * K && nc == M * N && nas == M * 3 && nbs == 6);
    TEST_RETURN_IF_FAILED();
    float *c = malloc(sizeof(float) * M * N), *cr = malloc(sizeof(float) * M * N);
    CHECK(ds_fp8_gemm(c, a, as, b, bs, M, N, K, NULL) == 0);
    CHECK(ds_fp8_gemm_ref(cr, a, as, b, bs, M, N, K, NULL) == 0);
    /* FP32 block sums vs float64: relative to the largest |C| */
    CHECK_MSG(ds_test_max_rel(c, want, M * N, 1e-30) < 2e-6, "max rel %g", ds_test_max_rel(c, want, M * N, 1e-30));
    CHECK(memcmp(c, cr, sizeof(float) * M * N) == 0);
    free(a); free(b); free(as); free(bs); free(want); free(c); free(cr);
}

TEST(fp8_gemm_fast_equals_ref_and_meets_deepgemm_criterion) {
    static const int64_t shapes[][3] = {{1, 1, 1},    {7, 13, 129},  {6, 16, 128},  {37, 150, 300},
                                        {130, 257, 385}, {200, 96, 1000}, {97, 300, 256}, {300, 40, 700}};
    ds_rng r;
    ds_rng_seed(&r, 11);
    for (size_t t = 0; t < sizeof shapes / sizeof *shapes; t++) {
        int64_t M = shapes[t][0], N = shapes[t][1], K = shapes[t][2];
        float *x = rand_mat(&r, M, K), *w = rand_w(&r, N, K);
        qmat xq = quant(x, M, K, DS_QUANT_TILE_1x128), wq = quant(w, N, K, DS_QUANT_BLOCK_128x128);
        float *c = malloc(sizeof(float) * M * N), *cr = malloc(sizeof(float) * M * N);
        CHECK(ds_fp8_gemm(c, xq.q, xq.s, wq.q, wq.s, M, N, K, NULL) == 0);
        CHECK(ds_fp8_gemm_ref(cr, xq.q, xq.s, wq.q, wq.s, M, N, K, NULL) == 0);
        /* same block order and exact products: identical bits */
        CHECK_MSG(memcmp(c, cr, sizeof(float) * M * N) == 0, "shape %lld %lld %lld: fast != ref", (long long)M,
                  (long long)N, (long long)K);
        double *cd = gemm_f64(xq.deq, K, 1, wq.deq, K, 1, M, N, K);
        double *co = gemm_f64(x, K, 1, w, K, 1, M, N, K);
        double dq = calc_diff(c, cd, M * N), dor = calc_diff(c, co, M * N);
        /* vs the dequantized inputs only FP32 rounding remains (~1e-14) */
        CHECK_MSG(dq < 1e-9, "shape %lld %lld %lld: diff vs dequantized %g", (long long)M, (long long)N, (long long)K, dq);
        /* vs the unquantized inputs: DeepGEMM's FP8 threshold */
        CHECK_MSG(dor < 1e-3, "shape %lld %lld %lld: diff vs fp32 %g", (long long)M, (long long)N, (long long)K, dor);
        /* accumulate adds exactly the same result on top */
        for (int64_t i = 0; i < M * N; i++) cr[i] = 1.0f;
        ds_fp8_gemm_opts o = {.accumulate = 1};
        CHECK(ds_fp8_gemm(cr, xq.q, xq.s, wq.q, wq.s, M, N, K, &o) == 0);
        float *c1 = malloc(sizeof(float) * M * N);
        for (int64_t i = 0; i < M * N; i++) c1[i] = 1.0f;
        CHECK(ds_fp8_gemm_ref(c1, xq.q, xq.s, wq.q, wq.s, M, N, K, &o) == 0);
        CHECK(memcmp(cr, c1, sizeof(float) * M * N) == 0);
        free(c1);
        free(cd); free(co); free(c); free(cr); free(x); free(w); qfree(xq); qfree(wq);
    }
}

TEST(fp8_gemm_dgrad_and_wgrad_layouts) {
    static const int64_t shapes[][3] = {{64, 96, 80}, {200, 130, 260}, {129, 300, 128}};
    ds_rng r;
    ds_rng_seed(&r, 12);
    for (size_t t = 0; t < sizeof shapes / sizeof *shapes; t++) {
        int64_t M = shapes[t][0], N = shapes[t][1], K = shapes[t][2];
        float *x = rand_mat(&r, M, K), *w = rand_w(&r, N, K), *dy = rand_mat(&r, M, N);
        /* dgrad: dX (M, K) = dY (M, N) W (N, K) */
        qmat dyq = quant(dy, M, N, DS_QUANT_TILE_1x128), wq = quant(w, N, K, DS_QUANT_BLOCK_128x128);
        float *dx = malloc(sizeof(float) * M * K);
        CHECK(ds_fp8_gemm_dgrad(dx, dyq.q, dyq.s, wq.q, wq.s, M, N, K, NULL) == 0);
        double *want = gemm_f64(dyq.deq, N, 1, wq.deq, 1, K, M, K, N);
        double *wo = gemm_f64(dy, N, 1, w, 1, K, M, K, N);
        CHECK_MSG(calc_diff(dx, want, M * K) < 1e-9, "dgrad vs dequantized %g", calc_diff(dx, want, M * K));
        CHECK_MSG(calc_diff(dx, wo, M * K) < 1e-3, "dgrad vs fp32 %g", calc_diff(dx, wo, M * K));
        /* the same through the reference path */
        float *dxr = malloc(sizeof(float) * M * K);
        ds_fp8_operand A = {dyq.q, dyq.s, DS_QUANT_TILE_1x128, 0, DS_FP8_E4M3};
        ds_fp8_operand B = {wq.q, wq.s, DS_QUANT_BLOCK_128x128, 1, DS_FP8_E4M3};
        CHECK(ds_fp8_gemm_ex_ref(dxr, &A, &B, M, K, N, NULL) == 0);
        CHECK(memcmp(dx, dxr, sizeof(float) * M * K) == 0);
        free(want); free(wo); free(dx); free(dxr);
        /* wgrad: dW (N, K) += dY^T (N, M) X (M, K), 128x1 tiles over tokens */
        qmat dyt = quant(dy, M, N, DS_QUANT_TILE_128x1), xt = quant(x, M, K, DS_QUANT_TILE_128x1);
        float *dw = malloc(sizeof(float) * N * K);
        for (int64_t i = 0; i < N * K; i++) dw[i] = 0.5f;
        ds_fp8_gemm_opts o = {.accumulate = 1};
        CHECK(ds_fp8_gemm_wgrad(dw, dyt.q, dyt.s, xt.q, xt.s, M, N, K, &o) == 0);
        want = gemm_f64(dyt.deq, 1, N, xt.deq, 1, K, N, K, M);
        wo = gemm_f64(dy, 1, N, x, 1, K, N, K, M);
        for (int64_t i = 0; i < N * K; i++) { want[i] += 0.5; wo[i] += 0.5; }
        CHECK_MSG(calc_diff(dw, want, N * K) < 1e-9, "wgrad vs dequantized %g", calc_diff(dw, want, N * K));
        CHECK_MSG(calc_diff(dw, wo, N * K) < 1e-3, "wgrad vs fp32 %g", calc_diff(dw, wo, N * K));
        free(want); free(wo); free(dw);
        qfree(dyq); qfree(wq); qfree(dyt); qfree(xt); free(x); free(w); free(dy);
    }
}

TEST(fp8_gemm_limited_accumulator_loses_precision_at_large_k) {
    enum { M = 16, N = 16, K = 4096 };
    ds_rng r;
    ds_rng_seed(&r, 13);
    float *x = rand_mat(&r, M, K), *w = rand_w(&r, N, K);
    qmat xq = quant(x, M, K, DS_QUANT_TILE_1x128), wq = quant(w, N, K, DS_QUANT_BLOCK_128x128);
    double *cd = gemm_f64(xq.deq, K, 1, wq.deq, K, 1, M, N, K);
    float *cp = malloc(sizeof(float) * M * N), *cl = malloc(sizeof(float) * M * N), *cx = malloc(sizeof(float) * M * N);
    CHECK(ds_fp8_gemm(cp, xq.q, xq.s, wq.q, wq.s, M, N, K, NULL) == 0);
    ds_fp8_gemm_opts lim = {.acc = DS_FP8_ACC_LIMITED};
    CHECK(ds_fp8_gemm(cl, xq.q, xq.s, wq.q, wq.s, M, N, K, &lim) == 0);
    /* with a wide accumulator the emulation is (nearly) exact: checks its mechanics */
    ds_fp8_gemm_opts wide = {.acc = DS_FP8_ACC_LIMITED, .acc_bits = 40};
    CHECK(ds_fp8_gemm(cx, xq.q, xq.s, wq.q, wq.s, M, N, K, &wide) == 0);
    double dp = calc_diff(cp, cd, M * N), dl = calc_diff(cl, cd, M * N), dx = calc_diff(cx, cd, M * N);
    CHECK_MSG(dx < 1e-12, "40-bit emulation diff %g", dx);
    CHECK_MSG(dp < 1e-10, "promoted diff %g", dp);
    /* 14 bits truncated: a visibly larger error, orders above the promoted one */
    CHECK_MSG(dl > 1e-8 && dl > 1000 * dp, "limited diff %g vs promoted %g", dl, dp);
    free(cd); free(cp); free(cl); free(cx); free(x); free(w); qfree(xq); qfree(wq);
}

TEST(fp8_gemm_bad_arguments) {
    uint8_t q[16] = {0};
    float s[4] = {1, 1, 1, 1}, c[16];
    CHECK(ds_fp8_gemm(c, q, s, q, s, -1, 2, 2, NULL) == -1);
    CHECK(strstr(ds_errmsg(), "negative size") != NULL);
    ds_fp8_operand A = {q, s, DS_QUANT_TILE_128x1, 0, DS_FP8_E4M3}, B = {q, s, DS_QUANT_TENSOR, 0, DS_FP8_E4M3};
    CHECK(ds_fp8_gemm_ex(c, &A, &B, 2, 2, 2, NULL) == -1);
    CHECK(strstr(ds_errmsg(), "128x1") != NULL);
    A.gran = DS_QUANT_ROW;
    A.trans = 1;
    CHECK(ds_fp8_gemm_ex(c, &A, &B, 2, 2, 2, NULL) == -1);
    CHECK(strstr(ds_errmsg(), "fp8 gemm: A") != NULL);
    A.trans = 0;
    B.scale = NULL;
    CHECK(ds_fp8_gemm_ex(c, &A, &B, 2, 2, 2, NULL) == -1);
    CHECK(strstr(ds_errmsg(), "no scales") != NULL);
    B.scale = s;
    ds_fp8_gemm_opts o = {.acc = (ds_fp8_acc)5};
    CHECK(ds_fp8_gemm_ex(c, &A, &B, 2, 2, 2, &o) == -1);
    /* empty sizes are fine */
    CHECK(ds_fp8_gemm_ex(c, &A, &B, 0, 2, 2, NULL) == 0);
    CHECK(ds_fp8_gemm_ex(c, &A, &B, 2, 2, 0, NULL) == 0);
    CHECK(c[0] == 0 && c[3] == 0);
}

TEST(bf16_gemm_fast_equals_ref_all_layouts) {
    static const int64_t shapes[][3] = {{1, 1, 1}, {7, 13, 129}, {37, 150, 300}, {130, 257, 385}};
    ds_rng r;
    ds_rng_seed(&r, 14);
    for (size_t t = 0; t < sizeof shapes / sizeof *shapes; t++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int64_t M = shapes[t][0], N = shapes[t][1], K = shapes[t][2];
                float *a = rand_mat(&r, M, K), *b = rand_mat(&r, N, K);
                uint16_t *ah = malloc(2 * (size_t)(M * K)), *bh = malloc(2 * (size_t)(N * K));
                float *af = malloc(4 * (size_t)(M * K)), *bf = malloc(4 * (size_t)(N * K));
                /* store transposed when asked: element (r, k) at k * R + r */
                for (int64_t i = 0; i < M; i++)
                    for (int64_t k = 0; k < K; k++) {
                        uint16_t h = ds_f32_to_bf16(a[i * K + k]);
                        ah[ta ? k * M + i : i * K + k] = h;
                        af[i * K + k] = ds_bf16_to_f32(h);
                    }
                for (int64_t i = 0; i < N; i++)
                    for (int64_t k = 0; k < K; k++) {
                        uint16_t h = ds_f32_to_bf16(b[i * K + k]);
                        bh[tb ? k * N + i : i * K + k] = h;
                        bf[i * K + k] = ds_bf16_to_f32(h);
                    }
                float *c = malloc(4 * (size_t)(M * N)), *cr = malloc(4 * (size_t)(M * N));
                CHECK(ds_bf16_gemm(c, ah, ta, bh, tb, M, N, K, 0) == 0);
                CHECK(ds_bf16_gemm_ref(cr, ah, ta, bh, tb, M, N, K, 0) == 0);
                CHECK_MSG(memcmp(c, cr, 4 * (size_t)(M * N)) == 0, "bf16 %lld %lld %lld (%d,%d): fast != ref",
                          (long long)M, (long long)N, (long long)K, ta, tb);
                double *cd = gemm_f64(af, K, 1, bf, K, 1, M, N, K);
                /* FP32 accumulation of exact BF16 products: DeepGEMM's BF16 bar 1e-5 */
                CHECK_MSG(calc_diff(c, cd, M * N) < 1e-5, "bf16 diff %g", calc_diff(c, cd, M * N));
                free(a); free(b); free(ah); free(bh); free(af); free(bf); free(c); free(cr); free(cd);
            }
}

/* The FP8 linear layer against FP32 math on the unquantized inputs
 * (DeepGEMM's criterion), and its workspace bound (ASan catches overruns). */
TEST(fp8_linear_forward_backward_close_to_fp32) {
    static const int64_t shapes[][3] = {{64, 96, 80}, {200, 130, 260}, {257, 64, 384}};
    ds_rng r;
    ds_rng_seed(&r, 15);
    for (size_t t = 0; t < sizeof shapes / sizeof *shapes; t++) {
        int64_t M = shapes[t][0], N = shapes[t][1], K = shapes[t][2];
        float *x = rand_mat(&r, M, K), *w = rand_w(&r, N, K), *dy = rand_mat(&r, M, N);
        void *ws = malloc(ds_fp8_linear_workspace(M, N, K));
        float *y = malloc(4 * (size_t)(M * N)), *dx = malloc(4 * (size_t)(M * K)), *dw = malloc(4 * (size_t)(N * K));
        for (int64_t i = 0; i < N * K; i++) dw[i] = 0.25f;
        CHECK(ds_fp8_linear_forward(y, x, w, M, N, K, ws) == 0);
        CHECK(ds_fp8_linear_backward(dx, dw, dy, x, w, M, N, K, ws) == 0);
        double *ry = gemm_f64(x, K, 1, w, K, 1, M, N, K);
        double *rdx = gemm_f64(dy, N, 1, w, 1, K, M, K, N);
        double *rdw = gemm_f64(dy, 1, N, x, 1, K, N, K, M);
        for (int64_t i = 0; i < N * K; i++) rdw[i] += 0.25;
        CHECK_MSG(calc_diff(y, ry, M * N) < 1e-3, "Y diff %g", calc_diff(y, ry, M * N));
        CHECK_MSG(calc_diff(dx, rdx, M * K) < 1e-3, "dX diff %g", calc_diff(dx, rdx, M * K));
        CHECK_MSG(calc_diff(dw, rdw, N * K) < 1e-3, "dW diff %g", calc_diff(dw, rdw, N * K));
        /* skipping a gradient leaves it alone */
        CHECK(ds_fp8_linear_backward(NULL, dw, dy, x, w, M, N, K, ws) == 0);
        CHECK(ds_fp8_linear_backward(dx, NULL, dy, x, w, M, N, K, ws) == 0);
        free(ry); free(rdx); free(rdw); free(x); free(w); free(dy); free(ws); free(y); free(dx); free(dw);
    }
    CHECK(ds_fp8_linear_forward(NULL, NULL, NULL, 2, 2, 2, NULL) == -1);
    CHECK(strstr(ds_errmsg(), "workspace") != NULL);
}

/* E5M2 operands and tensor/row scales go through the same driver. */
TEST(fp8_gemm_e5m2_and_coarse_scales) {
    enum { M = 50, N = 70, K = 333 };
    ds_rng r;
    ds_rng_seed(&r, 16);
    float *x = rand_mat(&r, M, K), *w = rand_w(&r, N, K);
    const ds_quant_gran ga[] = {DS_QUANT_TENSOR, DS_QUANT_ROW, DS_QUANT_TILE_1x128};
    for (int f = 0; f < 2; f++)
        for (int g = 0; g < 3; g++) {
            ds_quant_opts oa = ds_quant_defaults(ga[g]), ob = ds_quant_defaults(DS_QUANT_ROW);
            oa.fmt = ob.fmt = (ds_fp8_format)f;
            uint8_t *aq = malloc(M * K), *bq = malloc(N * K);
            float *as = malloc(4 * (size_t)ds_quant_scale_count(ga[g], M, K)), *bs = malloc(4 * N);
            float *ad = malloc(4 * M * K), *bd = malloc(4 * N * K), *c = malloc(4 * M * N), *cr = malloc(4 * M * N);
            CHECK(ds_quantize(aq, as, x, M, K, &oa) == 0 && ds_quantize(bq, bs, w, N, K, &ob) == 0);
            ds_dequantize(ad, aq, as, M, K, (ds_fp8_format)f, ga[g]);
            ds_dequantize(bd, bq, bs, N, K, (ds_fp8_format)f, DS_QUANT_ROW);
            ds_fp8_operand A = {aq, as, ga[g], 0, (ds_fp8_format)f}, B = {bq, bs, DS_QUANT_ROW, 0, (ds_fp8_format)f};
            CHECK(ds_fp8_gemm_ex(c, &A, &B, M, N, K, NULL) == 0);
            CHECK(ds_fp8_gemm_ex_ref(cr, &A, &B, M, N, K, NULL) == 0);
            CHECK(memcmp(c, cr, 4 * M * N) == 0);
            double *cd = gemm_f64(ad, K, 1, bd, K, 1, M, N, K);
            CHECK_MSG(calc_diff(c, cd, M * N) < 1e-9, "fmt %d gran %d: %g", f, g, calc_diff(c, cd, M * N));
            free(aq); free(bq); free(as); free(bs); free(ad); free(bd); free(c); free(cr); free(cd);
        }
    free(x);
    free(w);
}

/* Random shapes, layouts and granularities: the fast path gives the
 * reference's bits every time (edges, transposed packs, partial blocks). */
TEST(fp8_gemm_random_layouts_fast_equals_ref) {
    ds_rng r;
    ds_rng_seed(&r, 17);
    for (int t = 0; t < 40; t++) {
        int64_t M = 1 + (int64_t)ds_rng_below(&r, 140), N = 1 + (int64_t)ds_rng_below(&r, 140);
        int64_t K = 1 + (int64_t)ds_rng_below(&r, 420);
        ds_fp8_operand op[2];
        uint8_t *q[2];
        float *s[2], *x[2];
        int64_t R[2] = {M, N};
        for (int i = 0; i < 2; i++) {
            int trans = (int)ds_rng_below(&r, 2);
            static const ds_quant_gran g0[] = {DS_QUANT_TENSOR, DS_QUANT_ROW, DS_QUANT_TILE_1x128, DS_QUANT_BLOCK_128x128};
            static const ds_quant_gran g1[] = {DS_QUANT_TENSOR, DS_QUANT_TILE_128x1, DS_QUANT_BLOCK_128x128};
            ds_quant_gran g = trans ? g1[ds_rng_below(&r, 3)] : g0[ds_rng_below(&r, 4)];
            /* stored (R, K) or (K, R) */
            int64_t rows = trans ? K : R[i], cols = trans ? R[i] : K;
            x[i] = rand_mat(&r, rows, cols);
            q[i] = malloc((size_t)(rows * cols));
            s[i] = malloc(4 * (size_t)ds_quant_scale_count(g, rows, cols));
            ds_quant_opts o = ds_quant_defaults(g);
            o.fmt = ds_rng_below(&r, 4) == 0 ? DS_FP8_E5M2 : DS_FP8_E4M3;
            CHECK(ds_quantize(q[i], s[i], x[i], rows, cols, &o) == 0);
            op[i] = (ds_fp8_operand){q[i], s[i], g, trans, o.fmt};
        }
        float *c = malloc(4 * (size_t)(M * N)), *cr = malloc(4 * (size_t)(M * N));
        ds_fp8_gemm_opts o = {.accumulate = (int)ds_rng_below(&r, 2)};
        for (int64_t i = 0; i < M * N; i++) c[i] = cr[i] = (float)(i % 5);
        CHECK(ds_fp8_gemm_ex(c, &op[0], &op[1], M, N, K, &o) == 0);
        CHECK(ds_fp8_gemm_ex_ref(cr, &op[0], &op[1], M, N, K, &o) == 0);
        CHECK_MSG(memcmp(c, cr, 4 * (size_t)(M * N)) == 0, "M %lld N %lld K %lld trans %d/%d gran %d/%d",
                  (long long)M, (long long)N, (long long)K, op[0].trans, op[1].trans, op[0].gran, op[1].gran);
        for (int i = 0; i < 2; i++) { free(x[i]); free(q[i]); free(s[i]); }
        free(c);
        free(cr);
    }
}
