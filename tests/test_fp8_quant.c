/* test_fp8_quant.c — quantizers and dequantization against torch versions of
 * DeepSeek's casts (fixtures from tools/make_fp8_fixtures.py), plus the
 * properties the fixtures do not pin (zero blocks, UE8M0, bad arguments). */
#include "test.h"
#include "fp8_fixture.h"
#include "num/dtype.h"
#include "num/quant.h"

#include <stdint.h>

enum { QR = 200, QC = 300 };

static void check_case(const char *gran_name, ds_fp8_format fmt, int ue8m0) {
    char qn[128], sn[128];
    const char *fn = fmt == DS_FP8_E4M3 ? "e4m3" : "e5m2";
    snprintf(qn, sizeof qn, "quant_%s_%s%s.u8", gran_name, fn, ue8m0 ? "_ue8m0" : "");
    snprintf(sn, sizeof sn, "quant_%s_%s%s.f32", gran_name, fn, ue8m0 ? "_ue8m0" : "");
    size_t nx = 0, nq = 0, ns = 0;
    float *x = fp8_fixture("quant_x.f32", 4, &nx);
    uint8_t *wq = fp8_fixture(qn, 1, &nq);
    float *ws = fp8_fixture(sn, 4, &ns);
    int gran = ds_quant_gran_from_name(gran_name);
    CHECK(x && wq && ws && nx == QR * QC && nq == nx && gran >= 0);
    if (!x || !wq || !ws || gran < 0) { free(x); free(wq); free(ws); return; }
    CHECK((int64_t)ns == ds_quant_scale_count(gran, QR, QC));
    ds_quant_opts o = ds_quant_defaults(gran);
    o.fmt = fmt;
    o.ue8m0 = ue8m0;
    uint8_t *q = malloc(nx);
    float *s = malloc(ns * 4), *y = malloc(nx * 4);
    CHECK(ds_quantize(q, s, x, QR, QC, &o) == 0);
    int bads = 0, badq = 0;
    for (size_t i = 0; i < ns; i++)
        if (s[i] != ws[i] && bads++ < 5) fprintf(stderr, "  %s scale[%zu] %.9g vs %.9g\n", sn, i, s[i], ws[i]);
    for (size_t i = 0; i < nx; i++)
        if (q[i] != wq[i] && badq++ < 5)
            fprintf(stderr, "  %s [%zu,%zu] x=%.9g got 0x%02x want 0x%02x\n", qn, i / QC, i % QC, x[i], q[i], wq[i]);
    CHECK_MSG(bads == 0 && badq == 0, "%s: %d scales, %d codes differ", qn, bads, badq);
    /* dequantize: every element is decode(q) * its group's scale, and the
     * error is within half an FP8 ulp of the group (relative 2^-4 for E4M3,
     * 2^-3 for E5M2, of the group amax, plus the subnormal step) */
    CHECK(ds_dequantize(y, q, s, QR, QC, fmt, gran) == 0);
    double rel = fmt == DS_FP8_E4M3 ? 0.0625 : 0.125;
    int bady = 0;
    for (int64_t r = 0; r < QR; r++)
        for (int64_t c = 0; c < QC; c++) {
            float sc = ds_quant_scale_at(s, gran, QR, QC, r, c);
            float want = ds_fp8_to_f32(wq[r * QC + c], fmt) * sc;
            if (y[r * QC + c] != want) bady++;
            double err = fabs((double)y[r * QC + c] - x[r * QC + c]);
            double lim = rel * fabs(x[r * QC + c]) + sc * ds_fp8_traits_table[fmt].min_subnormal;
            if (err > lim) bady++;
        }
    CHECK_MSG(bady == 0, "%s: %d dequantized values off", qn, bady);
    free(x); free(wq); free(ws); free(q); free(s); free(y);
}

TEST(quant_1x128_matches_deepseek_act_quant) { check_case("1x128", DS_FP8_E4M3, 0); }
TEST(quant_128x128_matches_deepseek_block_cast) { check_case("128x128", DS_FP8_E4M3, 0); }
TEST(quant_128x1_matches_transposed_act_quant) { check_case("128x1", DS_FP8_E4M3, 0); }
TEST(quant_row_matches_torch) { check_case("row", DS_FP8_E4M3, 0); }
TEST(quant_tensor_matches_torch) { check_case("tensor", DS_FP8_E4M3, 0); }
TEST(quant_1x128_ue8m0_matches_torch) { check_case("1x128", DS_FP8_E4M3, 1); }
TEST(quant_128x128_ue8m0_matches_torch) { check_case("128x128", DS_FP8_E4M3, 1); }
TEST(quant_1x128_e5m2_matches_torch) { check_case("1x128", DS_FP8_E5M2, 0); }

TEST(quant_zero_block_gives_zeros_and_finite_scale) {
    float x[3 * 5] = {0};
    uint8_t q[15];
    float s[15];
    for (int g = 0; g < DS_QUANT_GRAN_COUNT; g++)
        for (int floor_ = 0; floor_ < 2; floor_++) {
            ds_quant_opts o = ds_quant_defaults(g);
            o.amax_floor = floor_ ? DS_QUANT_AMAX_FLOOR : 0.0f;
            memset(q, 0xaa, sizeof q);
            CHECK(ds_quantize(q, s, x, 3, 5, &o) == 0);
            for (int i = 0; i < 15; i++) CHECK(q[i] == 0);
            for (int64_t i = 0; i < ds_quant_scale_count(g, 3, 5); i++) CHECK(isfinite(s[i]) && s[i] > 0);
        }
}

/* Every granularity against a plain loop (the group's amax with NaN skipped,
 * the floor, scale = amax / 448, each code the scalar cast of x / scale), on
 * data whose groups hold NaN, inf or -inf, or are all tiny with no floor (a
 * subnormal scale): the quantizer's faster cast is for finite groups only. */
static void check_special_groups(const int64_t R, const int64_t C) {
    float *x = malloc(sizeof(float) * R * C), *s = malloc(sizeof(float) * R * C), *am = malloc(sizeof(float) * R * C);
    uint8_t *q = malloc(R * C);
    ds_rng rg;
    ds_rng_seed(&rg, 11);
    for (int64_t i = 0; i < R * C; i++) x[i] = ds_rng_normal(&rg) * 3.0f;
    x[5 * C + 7] = NAN;
    x[(R / 2) * C + C - 10] = INFINITY;
    x[(3 * R / 4) * C + C / 2] = -INFINITY;
    x[(R - 1) * C + C - 1] = -NAN;
    for (int64_t r = 0; r < R; r++) /* rows 10..13 (all columns) tiny: subnormal scales in row groups */
        for (int64_t c = 0; c < C; c++)
            if (r >= 10 && r < 14) x[r * C + c] = (float)(c % 5) * 2.2e-43f; /* amax / 448 rounds to 1 ulp of 1.4e-45: |x / s| to 628 */
    const int64_t cb = (C + 127) / 128;
    for (int g = 0; g < DS_QUANT_GRAN_COUNT; g++)
        for (int fl = 0; fl < 2; fl++) {
            ds_quant_opts o = ds_quant_defaults(g);
            o.amax_floor = fl ? DS_QUANT_AMAX_FLOOR : 0.0f;
            const int64_t ns = ds_quant_scale_count(g, R, C);
            CHECK(ds_quantize(q, s, x, R, C, &o) == 0);
            for (int64_t i = 0; i < ns; i++) am[i] = 0.0f;
            int64_t gi;
#define GROUP(r, c)                                                                                                  \
    (g == DS_QUANT_TENSOR ? 0 : g == DS_QUANT_ROW ? (r) : g == DS_QUANT_TILE_1x128 ? (r) * cb + (c) / 128               \
     : g == DS_QUANT_TILE_128x1 ? ((r) / 128) * C + (c) : ((r) / 128) * cb + (c) / 128)
            for (int64_t r = 0; r < R; r++)
                for (int64_t c = 0; c < C; c++) {
                    gi = GROUP(r, c);
                    if (!isnan(x[r * C + c]) && fabsf(x[r * C + c]) > am[gi]) am[gi] = fabsf(x[r * C + c]);
                }
            int bads = 0, badq = 0;
            for (int64_t i = 0; i < ns; i++) {
                float a = am[i] < o.amax_floor ? o.amax_floor : am[i], want = a / 448.0f;
                if (!(want > 0)) want = 1.0f;
                am[i] = want;
                bads += !(s[i] == want);
            }
            for (int64_t r = 0; r < R; r++)
                for (int64_t c = 0; c < C; c++) {
                    uint8_t want = ds_f32_to_e4m3(x[r * C + c] / am[GROUP(r, c)], DS_FP8_SAT);
                    if (q[r * C + c] != want && badq++ < 3)
                        fprintf(stderr, "  gran %d floor %d [%lld,%lld] x %a: 0x%02x want 0x%02x\n", g, fl, (long long)r,
                                (long long)c, x[r * C + c], q[r * C + c], want);
                }
#undef GROUP
            CHECK_MSG(bads == 0 && badq == 0, "%lldx%lld gran %d floor %d: %d scales, %d codes differ", (long long)R,
                      (long long)C, g, fl, bads, badq);
        }
    free(x); free(s); free(am); free(q);
}

/* the second shape has fewer 128-row bands than threads: 128x128 blocks split
 * into runs of column blocks */
TEST(quant_nan_inf_and_subnormal_scale_groups_match_scalar_loop) {
    check_special_groups(260, 300);
    check_special_groups(100, 700);
    /* UE8M0 scales near FLT_MAX: amax 3e38 rounds its scale up to 2^120 (256 s overflows) */
    float x[256], s[2];
    uint8_t q[256];
    for (int i = 0; i < 256; i++) x[i] = (float)((i * 37) % 101 - 50) * (i < 128 ? 6e36f : 1e-3f);
    ds_quant_opts o = ds_quant_defaults(DS_QUANT_TILE_1x128);
    o.ue8m0 = 1;
    CHECK(ds_quantize(q, s, x, 1, 256, &o) == 0);
    CHECK(s[0] == 0x1p120f);
    int bad = 0;
    for (int i = 0; i < 256; i++) bad += q[i] != ds_f32_to_e4m3(x[i] / s[i / 128], DS_FP8_SAT);
    CHECK_MSG(bad == 0, "UE8M0 near FLT_MAX: %d codes differ", bad);
}

TEST(quant_ue8m0_rounds_up_to_power_of_two) {
    CHECK(ds_quant_ue8m0_ceil(1.0f) == 1.0f);
    CHECK(ds_quant_ue8m0_ceil(1.0000001f) == 2.0f);
    CHECK(ds_quant_ue8m0_ceil(0.75f) == 1.0f);
    CHECK(ds_quant_ue8m0_ceil(0x1p-20f) == 0x1p-20f);
    CHECK(ds_quant_ue8m0_ceil(3e-7f) == 0x1p-21f);
    CHECK(ds_quant_ue8m0_ceil(1e-45f) == 0x1p-126f);  /* exponent clamped to >= 1 */
    CHECK(ds_quant_ue8m0_ceil(3e38f) == 0x1p127f);    /* and <= 254 */
    /* with power-of-two scales the cast never clips: |x / s| <= 448 */
    float x[256];
    ds_rng r;
    ds_rng_seed(&r, 3);
    for (int i = 0; i < 256; i++) x[i] = ds_rng_normal(&r) * 37.0f;
    uint8_t q[256];
    float s[2];
    ds_quant_opts o = ds_quant_defaults(DS_QUANT_TILE_1x128);
    o.ue8m0 = 1;
    CHECK(ds_quantize(q, s, x, 1, 256, &o) == 0);
    for (int i = 0; i < 256; i++) CHECK(fabsf(x[i] / s[i / 128]) <= 448.0f);
}

TEST(quant_bad_arguments_fail_with_message) {
    float x[4] = {1, 2, 3, 4};
    uint8_t q[4];
    float s[4];
    ds_quant_opts o = ds_quant_defaults(DS_QUANT_TILE_1x128);
    CHECK(ds_quantize(q, s, x, -1, 4, &o) == -1);
    CHECK(strstr(ds_errmsg(), "negative shape") != NULL);
    o.gran = (ds_quant_gran)99;
    CHECK(ds_quantize(q, s, x, 1, 4, &o) == -1);
    CHECK(strstr(ds_errmsg(), "granularity") != NULL);
    o = ds_quant_defaults(DS_QUANT_ROW);
    o.fmt = (ds_fp8_format)7;
    CHECK(ds_quantize(q, s, x, 1, 4, &o) == -1);
    CHECK(strstr(ds_errmsg(), "format") != NULL);
    CHECK(ds_dequantize(x, q, s, 2, -3, DS_FP8_E4M3, DS_QUANT_ROW) == -1);
    CHECK(ds_quant_gran_from_name("64x64") == -1);
}

/* Error statistics against plain loops over torch's codes and scales. */
TEST(quant_error_stats_match_torch_casts) {
    static const char *const names[] = {"tensor", "row", "1x128", "128x128"};
    size_t nx;
    float *x = fp8_fixture("quant_x.f32", 4, &nx);
    CHECK(x && nx == QR * QC);
    TEST_RETURN_IF_FAILED();
    double prev_rms = INFINITY;
    for (int i = 0; i < 4; i++) {
        char qn[64], sn[64];
        snprintf(qn, sizeof qn, "quant_%s_e4m3.u8", names[i]);
        snprintf(sn, sizeof sn, "quant_%s_e4m3.f32", names[i]);
        size_t nq, ns;
        uint8_t *wq = fp8_fixture(qn, 1, &nq);
        float *ws = fp8_fixture(sn, 4, &ns);
        CHECK(wq && ws);
        if (!wq || !ws) { free(wq); free(ws); continue; }
        int g = ds_quant_gran_from_name(names[i]);
        double sae = 0, se = 0, sx = 0, mx = 0;
        int64_t nz = 0, nfl = 0;
        for (int64_t r = 0; r < QR; r++)
            for (int64_t c = 0; c < QC; c++) {
                double xv = x[r * QC + c];
                double y = (double)ds_e4m3_to_f32(wq[r * QC + c]) * ds_quant_scale_at(ws, g, QR, QC, r, c);
                sae += fabs(y - xv); se += (y - xv) * (y - xv); sx += xv * xv;
                if (fabs(y - xv) > mx) mx = fabs(y - xv);
                if (xv != 0) { nz++; nfl += y == 0; }
            }
        ds_quant_err e;
        ds_quant_opts o = ds_quant_defaults(g);
        CHECK(ds_quant_error(&e, x, QR, QC, &o) == 0);
        CHECK(e.n == QR * QC && e.n_nonfinite == 0);
        CHECK_NEAR(e.mae, sae / (QR * QC), 1e-12 * (1 + sae));
        CHECK_NEAR(e.rel_rms, sqrt(se / sx), 1e-9);
        CHECK(e.max_err == mx);
        CHECK(e.amax == 3000);
        CHECK(e.frac_clamped == 0);                       /* amax scaling never clips */
        CHECK_NEAR(e.frac_flushed, (double)nfl / nz, 1e-15);
        /* finer groups: less error (row magnitudes span 2^-12..2^5 here) */
        if (i == 2) CHECK(e.rel_rms < prev_rms);
        if (i == 0) CHECK(e.frac_flushed > 0.3);           /* one scale for all: most small rows underflow */
        prev_rms = e.rel_rms;
        free(wq);
        free(ws);
    }
    /* clamping shows with a scale that is too small, non-finite inputs are counted */
    float y[4] = {1, -3, NAN, INFINITY}, s1 = 1.0f / 448.0f; /* 1 -> 448, -3 -> clipped */
    uint8_t q[4];
    for (int i = 0; i < 4; i++) q[i] = ds_f32_to_e4m3(y[i] / s1, DS_FP8_SAT);
    ds_quant_err e;
    ds_quant_error_of(&e, y, q, &s1, 1, 4, DS_FP8_E4M3, DS_QUANT_TENSOR);
    CHECK(e.n == 2 && e.n_nonfinite == 2 && e.frac_clamped == 0.5);
    free(x);
}
