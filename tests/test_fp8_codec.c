/* test_fp8_codec.c — FP8 E4M3/E5M2 (and BF16/F16) codecs bit-exact against
 * torch conversions (fixtures from tools/make_fp8_fixtures.py). */
#include "test.h"
#include "fp8_fixture.h"
#include "num/dtype.h"
#include "num/convert.h"
#include "num/fp8.h"

#include <stdint.h>

static int same_f32_bits_or_nan(float a, float b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    uint32_t ua, ub;
    memcpy(&ua, &a, 4);
    memcpy(&ub, &b, 4);
    return ua == ub;   /* also tells +0 from -0 */
}

TEST(fp8_decode_all_codes_match_torch) {
    size_t n4, n5;
    float *t4 = fp8_fixture("decode_e4m3.f32", 4, &n4), *t5 = fp8_fixture("decode_e5m2.f32", 4, &n5);
    CHECK(t4 && t5 && n4 == 256 && n5 == 256);
    TEST_RETURN_IF_FAILED();
    for (int i = 0; i < 256; i++) {
        CHECK_MSG(same_f32_bits_or_nan(ds_fp8_e4m3_table[i], t4[i]), "e4m3 code 0x%02x: %g vs torch %g", i, ds_fp8_e4m3_table[i], t4[i]);
        CHECK_MSG(same_f32_bits_or_nan(ds_fp8_e5m2_table[i], t5[i]), "e5m2 code 0x%02x: %g vs torch %g", i, ds_fp8_e5m2_table[i], t5[i]);
        CHECK(same_f32_bits_or_nan(ds_e4m3_to_f32((uint8_t)i), t4[i]));
        CHECK(!isnan(t4[i]) || signbit(ds_fp8_e4m3_table[i]) == signbit(t4[i]));
        CHECK(!isnan(t5[i]) || signbit(ds_fp8_e5m2_table[i]) == signbit(t5[i]));
        CHECK(same_f32_bits_or_nan(ds_fp8_to_f32((uint8_t)i, DS_FP8_E5M2), t5[i]));
    }
    free(t4);
    free(t5);
}

/* The bulk decoder (16 codes at a time where the CPU has AVX2 + F16C, the
 * FP8 GEMM's packs use it) against torch, every code at every offset of a
 * 16-lane group and in the scalar tail; NaN codes keep their sign. */
TEST(fp8_bulk_decode_every_code_matches_torch) {
    size_t n4;
    float *t4 = fp8_fixture("decode_e4m3.f32", 4, &n4);
    CHECK(t4 && n4 == 256);
    TEST_RETURN_IF_FAILED();
    enum { N = 256 + 16 + 7 };
    uint8_t src[N];
    float dst[N];
    for (int shift = 0; shift < 17; shift++) {
        for (int i = 0; i < N; i++) src[i] = (uint8_t)((i * 37 + shift * 11) & 0xff);
        const int n = N - (shift & 7); /* tails of several lengths */
        ds_fp8_decode(dst, src, n, DS_FP8_E4M3);
        for (int i = 0; i < n; i++) {
            const float want = t4[src[i]];
            CHECK_MSG(same_f32_bits_or_nan(dst[i], want), "code 0x%02x at %d: %g vs torch %g", src[i], i, dst[i], want);
            if (isnan(want)) CHECK_MSG(signbit(dst[i]) == signbit(want), "NaN code 0x%02x lost its sign", src[i]);
        }
        TEST_RETURN_IF_FAILED();
    }
    free(t4);
}

/* Compare one encoder over the whole input set; report the first few misses. */
static void check_encode(const char *file, ds_fp8_format fmt, ds_fp8_mode mode) {
    size_t n, m;
    float *x = fp8_fixture("enc_in.f32", 4, &n);
    uint8_t *want = fp8_fixture(file, 1, &m);
    CHECK(x && want && n == m && n > 4000);
    if (!x || !want) { free(x); free(want); return; }
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t got = ds_f32_to_fp8(x[i], fmt, mode);
        if (got != want[i] && bad++ < 8)
            fprintf(stderr, "  %s: x=%.9g (0x%08x): got 0x%02x want 0x%02x\n", file, x[i],
                    *(uint32_t *)&x[i], got, want[i]);
    }
    CHECK_MSG(bad == 0, "%s: %d of %zu differ", file, bad, n);
    /* the bulk encoder agrees with the scalar one */
    uint8_t *bulk = malloc(n);
    ds_fp8_encode(bulk, x, (int64_t)n, fmt, mode);
    CHECK(memcmp(bulk, want, n) == 0 || bad);
    free(bulk);
    free(x);
    free(want);
}

TEST(fp8_encode_e4m3_matches_torch_saturating) { check_encode("enc_e4m3_torch.u8", DS_FP8_E4M3, DS_FP8_TORCH); }
TEST(fp8_encode_e4m3_sat_is_deepseek_clamp_cast) { check_encode("enc_e4m3_torch.u8", DS_FP8_E4M3, DS_FP8_SAT); }
TEST(fp8_encode_e4m3_nonsat_overflow_is_nan) { check_encode("enc_e4m3_nonsat.u8", DS_FP8_E4M3, DS_FP8_NONSAT); }
TEST(fp8_encode_e5m2_matches_torch_overflow_inf) { check_encode("enc_e5m2_torch.u8", DS_FP8_E5M2, DS_FP8_TORCH); }
TEST(fp8_encode_e5m2_nonsat_equals_torch) { check_encode("enc_e5m2_torch.u8", DS_FP8_E5M2, DS_FP8_NONSAT); }
TEST(fp8_encode_e5m2_sat_matches_torch_clamp_cast) { check_encode("enc_e5m2_sat.u8", DS_FP8_E5M2, DS_FP8_SAT); }

TEST(fp8_roundtrip_every_code) {
    /* decode then encode gives the code back (NaN codes give the canonical NaN) */
    for (int i = 0; i < 256; i++) {
        uint8_t c4 = ds_f32_to_e4m3(ds_fp8_e4m3_table[i], DS_FP8_NONSAT);
        uint8_t c5 = ds_f32_to_e5m2(ds_fp8_e5m2_table[i], DS_FP8_NONSAT);
        int n4 = (i & 0x7f) == 0x7f, n5 = (i & 0x7f) > 0x7c;
        CHECK_MSG(c4 == (n4 ? (i & 0x80) | 0x7f : i), "e4m3 0x%02x -> 0x%02x", i, c4);
        CHECK_MSG(c5 == (n5 ? (i & 0x80) | 0x7f : i), "e5m2 0x%02x -> 0x%02x", i, c5);
    }
    /* traits agree with the tables */
    CHECK(ds_fp8_e4m3_table[0x7e] == ds_fp8_traits_table[DS_FP8_E4M3].max);
    CHECK(ds_fp8_e5m2_table[0x7b] == ds_fp8_traits_table[DS_FP8_E5M2].max);
    CHECK(ds_fp8_e4m3_table[0x01] == ds_fp8_traits_table[DS_FP8_E4M3].min_subnormal);
    CHECK(ds_fp8_e5m2_table[0x04] == ds_fp8_traits_table[DS_FP8_E5M2].min_normal);
    CHECK(ds_fp8_format_from_name("e4m3") == DS_FP8_E4M3 && ds_fp8_format_from_name("x") == -1);
}

/* The skeleton's BF16/F16 scalar codecs, against torch on the same inputs. */
TEST(bf16_f16_encode_match_torch) {
    size_t n, nb, nh;
    float *x = fp8_fixture("enc_in.f32", 4, &n);
    uint16_t *b = fp8_fixture("enc_bf16.u16", 2, &nb), *h = fp8_fixture("enc_f16.u16", 2, &nh);
    CHECK(x && b && h && nb == n && nh == n);
    TEST_RETURN_IF_FAILED();
    int badb = 0, badh = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t gb = ds_f32_to_bf16(x[i]), gh = ds_f32_to_f16(x[i]);
        /* NaN payloads and signs differ (torch's BF16 NaN is 0xffff for
         * every input NaN); both must be NaN */
        if (isnan(x[i])) {
            CHECK(isnan(ds_bf16_to_f32(gb)) && isnan(ds_bf16_to_f32(b[i])));
            CHECK(isnan(ds_f16_to_f32(gh)) && isnan(ds_f16_to_f32(h[i])));
            continue;
        }
        if (gb != b[i] && badb++ < 5) fprintf(stderr, "  bf16 x=%.9g got 0x%04x want 0x%04x\n", x[i], gb, b[i]);
        if (gh != h[i] && badh++ < 5) fprintf(stderr, "  f16 x=%.9g got 0x%04x want 0x%04x\n", x[i], gh, h[i]);
        CHECK(same_f32_bits_or_nan(ds_bf16_to_f32(b[i]), (float)ds_bf16_to_f32(gb)));
    }
    CHECK_MSG(badb == 0 && badh == 0, "bf16 %d, f16 %d differ", badb, badh);
    free(x);
    free(b);
    free(h);
}

/* The quantizers' vector cast (x / s, saturate) gives the scalar encoder's
 * bits on every input of the fixture (ties, subnormals, NaN, inf, overflow),
 * and the vector amax skips NaN like fmaxf. */
TEST(fp8_vector_cast_equals_scalar) {
    size_t n = 0;
    float *x = fp8_fixture("enc_in.f32", 4, &n);
    CHECK(x != NULL);
    TEST_RETURN_IF_FAILED();
    uint8_t *q = malloc(n), *qv = malloc(n);
    float *s = malloc(n * 4);
    const float divs[] = {1.0f, 0.375f, 3.0f, 1e-3f};
    for (int f = 0; f < 2; f++)
        for (int d = 0; d < 4; d++) {
            ds_fp8_encode_div_sat(q, x, (int64_t)n, divs[d], (ds_fp8_format)f);
            int bad = 0;
            for (size_t i = 0; i < n; i++) bad += q[i] != ds_f32_to_fp8(x[i] / divs[d], (ds_fp8_format)f, DS_FP8_SAT);
            CHECK_MSG(bad == 0, "fmt %d div %g: %d differ", f, divs[d], bad);
        }
    for (size_t i = 0; i < n; i++) s[i] = 0.5f + (float)(i % 7);
    ds_fp8_encode_divv_sat(qv, x, s, (int64_t)n, DS_FP8_E4M3);
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad += qv[i] != ds_f32_to_e4m3(x[i] / s[i], DS_FP8_SAT);
    CHECK_MSG(bad == 0, "divv: %d differ", bad);
    float v[40];
    for (int i = 0; i < 40; i++) v[i] = (float)(i - 20);
    v[3] = NAN;
    v[33] = NAN;
    CHECK(ds_f32_amax(v, 40) == 20.0f);
    v[17] = -1e30f;
    CHECK(ds_f32_amax(v, 40) == 1e30f);
    CHECK(ds_f32_amax(v, 0) == 0.0f);
    { /* 2D patches (a 128x128 block, 1x128 tiles, ragged edges) against the scalar max:
       * the largest magnitude in each place (vector part, tail column, last row), NaNs skipped */
        enum { LD = 150, R = 130 };
        float *p = malloc(sizeof(float) * LD * R);
        ds_rng r;
        ds_rng_seed(&r, 77);
        const int64_t shapes[][2] = {{128, 128}, {1, 128}, {130, 150}, {7, 31}, {3, 16}, {5, 1}, {0, 9}};
        for (size_t t = 0; t < sizeof shapes / sizeof *shapes; t++)
            for (int where = 0; where < 3; where++) {
                int64_t nr = shapes[t][0], nc = shapes[t][1];
                for (int64_t i = 0; i < LD * R; i++) p[i] = ds_rng_normal(&r);
                for (int64_t i = 0; i < LD * R; i += 37) p[i] = NAN;
                if (nr > 0) { /* the maximum: row 0 col 0, the last column, the last row's middle */
                    int64_t rr = where == 2 ? nr - 1 : 0, cc = where == 0 ? 0 : where == 1 ? nc - 1 : nc / 2;
                    p[rr * LD + cc] = -9.5f - (float)where;
                }
                float want = 0.0f;
                for (int64_t i = 0; i < nr; i++)
                    for (int64_t j = 0; j < nc; j++) want = fmaxf(want, fabsf(p[i * LD + j]));
                CHECK_MSG(ds_f32_amax_2d(p, LD, nr, nc) == want, "%lldx%lld where %d", (long long)nr, (long long)nc, where);
            }
        free(p);
    }
    free(x); free(q); free(qv); free(s);
}

/* The bounded E4M3 casts (finite x, |x / s| <= 448 (1 + 2^-22): the
 * quantizers' groups) against the scalar encoder: every code's value, every
 * tie between neighbours and the floats either side of it, both signs, -0,
 * values too small for the smallest subnormal, the bound itself, over scales
 * from the smallest normal float to 2^100; tails of every length. */
TEST(fp8_bounded_cast_equals_scalar_on_every_tie) {
    enum { NV = 127 * 8 + 16 };
    float v[NV];
    int nv = 0;
    for (int c = 0; c < 127; c++) {
        float a = ds_fp8_e4m3_table[c], b = ds_fp8_e4m3_table[c + 1 < 127 ? c + 1 : c];
        float t = (a + b) / 2; /* exact: the table's values have 4 significant bits */
        v[nv++] = a;
        v[nv++] = t;
        v[nv++] = nextafterf(t, 0.0f);
        v[nv++] = nextafterf(t, 1e30f);
    }
    const float extra[] = {0.0f, 0x1p-10f, 0x1.8p-10f, 0x1p-11f, 1e-30f, 0x1p-130f, 448.0f, 448.0f * (1.0f + 0x1p-22f),
                           447.99997f, 0x1p-6f, nextafterf(0x1p-6f, 0.0f), 0x1.ep-7f};
    for (size_t i = 0; i < sizeof extra / sizeof *extra; i++) v[nv++] = extra[i];
    const float scales[] = {1.0f, 0.375f, 3.0f, 1e-3f, 0x1p-126f, 0x1.8p-126f, 0x1p100f, 7.1234567e-5f, 1.0f / 448.0f};
    enum { N = 2 * NV };
    float *x = malloc(sizeof(float) * N), *s256 = malloc(sizeof(float) * N), *sv = malloc(sizeof(float) * N);
    uint8_t *q = malloc(N), *qv = malloc(N);
    int bad = 0, tried = 0;
    for (size_t k = 0; k < sizeof scales / sizeof *scales; k++) {
        const float sc = scales[k];
        int n = 0;
        for (int i = 0; i < nv; i++)
            for (int sg = 0; sg < 2; sg++) {
                float xi = (sg ? -v[i] : v[i]) * sc;
                /* keep what the precondition allows (x * s / s may not return v) */
                if (!isfinite(xi) || fabsf(xi / sc) > 448.0f * (1.0f + 0x1p-22f)) continue;
                x[n] = xi;
                sv[n] = sc * (float)(1 + (n % 3));       /* divv: per-element scales */
                s256[n] = 256.0f * sv[n];
                n++;
            }
        for (int len = n - 33; len <= n; len += 11) {
            ds_fp8_e4m3_encode_div_bounded(q, x, len, sc);
            ds_fp8_e4m3_encode_divv_bounded(qv, x, s256, len);
            for (int i = 0; i < len; i++) {
                tried++;
                uint8_t want = ds_f32_to_e4m3(x[i] / sc, DS_FP8_SAT), wantv = ds_f32_to_e4m3(x[i] / sv[i], DS_FP8_SAT);
                if ((q[i] != want || qv[i] != wantv) && bad++ < 5)
                    fprintf(stderr, "  s %a x %a: div 0x%02x want 0x%02x, divv 0x%02x want 0x%02x\n", sc, x[i], q[i], want,
                            qv[i], wantv);
            }
        }
    }
    CHECK_MSG(bad == 0 && tried > 20000, "%d of %d differ", bad, tried);
    /* |x| as bits over a patch, NaN and inf seen (each in the vector part and the tail) */
    float p[3 * 40];
    for (int i = 0; i < 120; i++) p[i] = (float)(i % 13) - 6.5f;
    p[41] = -9.25f;
    CHECK(ds_f32_absmax_bits_2d(p, 40, 3, 35) == 0x41140000u); /* 9.25 */
    CHECK(ds_f32_absmax_bits_2d(p, 40, 3, 0) == 0u);
    p[45] = -INFINITY;
    CHECK(ds_f32_absmax_bits_2d(p, 40, 3, 35) == 0x7f800000u);
    p[45] = 1.0f;
    p[113] = NAN; /* row 2, column 33: the tail */
    CHECK(ds_f32_absmax_bits_2d(p, 40, 3, 35) > 0x7f800000u);
    CHECK(ds_f32_absmax_bits_2d(p, 40, 3, 33) == 0x41140000u);
    uint32_t am[35] = {0};
    for (int r = 0; r < 3; r++) ds_f32_absmax_bits_update(am, p + 40 * r, 35);
    CHECK(am[1] == 0x41140000u && am[33] > 0x7f800000u && am[34] == 0x40600000u); /* 9.25, NaN, 3.5 */
    free(x); free(s256); free(sv); free(q); free(qv);
}

/* Bulk conversions match torch on the fixture inputs, through every pair. */
TEST(convert_bulk_matches_torch) {
    size_t n, n4, n5, nb;
    float *x = fp8_fixture("enc_in.f32", 4, &n);
    uint8_t *e4 = fp8_fixture("enc_e4m3_torch.u8", 1, &n4), *e5 = fp8_fixture("enc_e5m2_torch.u8", 1, &n5);
    uint16_t *bf = fp8_fixture("enc_bf16.u16", 2, &nb);
    CHECK(x && e4 && e5 && bf);
    TEST_RETURN_IF_FAILED();
    uint8_t *q = malloc(n);
    uint16_t *h = malloc(2 * n);
    float *y = malloc(4 * n), *z = malloc(4 * n);
    CHECK(ds_convert(q, DS_F8_E4M3, x, DS_F32, (int64_t)n) == 0);
    CHECK(memcmp(q, e4, n) == 0);
    CHECK(ds_convert(q, DS_F8_E5M2, x, DS_F32, (int64_t)n) == 0);
    CHECK(memcmp(q, e5, n) == 0);
    CHECK(ds_convert(h, DS_BF16, x, DS_F32, (int64_t)n) == 0);
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad += !isnan(x[i]) && h[i] != bf[i];
    CHECK(bad == 0);
    /* BF16 -> E4M3 directly equals BF16 -> F32 -> E4M3 */
    CHECK(ds_convert(q, DS_F8_E4M3, h, DS_BF16, (int64_t)n) == 0);
    CHECK(ds_convert(y, DS_F32, h, DS_BF16, (int64_t)n) == 0);
    for (size_t i = 0; i < n; i++) CHECK(q[i] == ds_f32_to_e4m3(y[i], DS_FP8_TORCH));
    /* E4M3 -> F16 -> F32 is exact (every E4M3 value is an F16 value) */
    CHECK(ds_convert(h, DS_F16, e4, DS_F8_E4M3, (int64_t)n) == 0);
    CHECK(ds_convert(z, DS_F32, h, DS_F16, (int64_t)n) == 0);
    for (size_t i = 0; i < n; i++) CHECK((isnan(z[i]) && isnan(ds_fp8_e4m3_table[e4[i]])) || z[i] == ds_fp8_e4m3_table[e4[i]]);
    CHECK(ds_convert(q, DS_I32, x, DS_F32, 4) == -1);
    CHECK(strstr(ds_errmsg(), "I32") != NULL);
    CHECK(ds_convert_traits_of(DS_BOOL) == NULL && ds_convert_traits_of(DS_BF16) != NULL);
    free(x); free(e4); free(e5); free(bf); free(q); free(h); free(y); free(z);
}
