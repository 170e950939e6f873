/*
 * fp8.c — FP8 E4M3 / E5M2 encode (RNE, subnormals, NaN, saturating or not) and
 * table decode.  See fp8.h for the overflow rules.
 *
 * Encoding works on the FP32 bit pattern: a normal result keeps the top
 * man_bits of the FP32 mantissa, rounded to nearest even by adding
 * (half - 1 + lsb) before the shift (a carry into the exponent is the correct
 * rounding up to the next binade).  A subnormal result is rounded by adding a
 * magic constant whose ulp is the format's smallest subnormal, which makes the
 * FPU do the RNE.
 */
#include "num/fp8.h"
#include "num/dtype.h"
#include "num/fp8_simd.h"

#include <math.h>
#include <string.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

const ds_fp8_traits ds_fp8_traits_table[2] = {
    [DS_FP8_E4M3] = {"e4m3", 4, 3, 7, 448.0f, 0x1p-6f, 0x1p-9f, 0},
    [DS_FP8_E5M2] = {"e5m2", 5, 2, 15, 57344.0f, 0x1p-14f, 0x1p-16f, 1},
};

float ds_fp8_e4m3_table[256];
float ds_fp8_e5m2_table[256];

__attribute__((constructor)) static void fp8_tables_init(void) {
    for (int i = 0; i < 256; i++) {
        /* copysign: NaN codes keep their sign, as torch's decode does */
        ds_fp8_e4m3_table[i] = copysignf(ds_e4m3_to_f32((uint8_t)i), (i & 0x80) ? -1.0f : 1.0f);
        ds_fp8_e5m2_table[i] = copysignf(ds_e5m2_to_f32((uint8_t)i), (i & 0x80) ? -1.0f : 1.0f);
    }
}

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* E4M3: codes 0x00..0x7e finite, 0x7f NaN.  Thresholds as FP32 bits:
 * 464 = 0x43e80000 is the tie between 448 and the (absent) 480; it rounds to
 * 448 (even), so only |x| > 464 overflows.  2^-6 = 0x3c800000 is the smallest
 * normal. */
uint8_t ds_f32_to_e4m3(float f, ds_fp8_mode mode) {
    uint32_t u = f2u(f);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7f;                  /* NaN */
    int sat = mode != DS_FP8_NONSAT;                           /* torch saturates E4M3 */
    if (a > 0x43e80000u) return sign | (sat ? 0x7e : 0x7f);    /* beyond max (inf too) */
    if (a < 0x3c800000u) {                                     /* subnormal or zero */
        /* 16384 = 2^14 has ulp 2^(14-23) = 2^-9: the sum is rounded RNE */
        float t = u2f(a) + 16384.0f;
        return sign | (uint8_t)(f2u(t) - 0x46800000u);         /* 0..8 (8 = 2^-6) */
    }
    a += 0x7ffffu + ((a >> 20) & 1);                           /* RNE to 3 mantissa bits */
    return sign | (uint8_t)((a >> 20) - (120u << 3));          /* rebias 127 -> 7 */
}

/* E5M2: inf 0x7c, NaN 0x7d..0x7f.  61440 = 0x47700000 is the tie between 57344
 * (odd mantissa) and 65536, so it rounds up: |x| >= 61440 overflows.  2^-14 =
 * 0x38800000 is the smallest normal. */
uint8_t ds_f32_to_e5m2(float f, ds_fp8_mode mode) {
    uint32_t u = f2u(f);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7f;                  /* NaN */
    int sat = mode == DS_FP8_SAT;                              /* torch does not saturate E5M2 */
    if (sat && a > 0x47600000u) return sign | 0x7b;            /* > 57344 (inf too) -> max */
    if (a >= 0x47700000u) return sign | 0x7c;                  /* overflow -> inf */
    if (a < 0x38800000u) {
        /* 128 = 2^7 has ulp 2^-16 */
        float t = u2f(a) + 128.0f;
        return sign | (uint8_t)(f2u(t) - 0x43000000u);         /* 0..4 (4 = 2^-14) */
    }
    a += 0xfffffu + ((a >> 21) & 1);                           /* RNE to 2 mantissa bits */
    return sign | (uint8_t)((a >> 21) - (112u << 2));          /* rebias 127 -> 15 */
}

void ds_fp8_encode(uint8_t *dst, const float *src, int64_t n, ds_fp8_format fmt, ds_fp8_mode mode) {
    if (fmt == DS_FP8_E4M3)
        for (int64_t i = 0; i < n; i++) dst[i] = ds_f32_to_e4m3(src[i], mode);
    else
        for (int64_t i = 0; i < n; i++) dst[i] = ds_f32_to_e5m2(src[i], mode);
}

void ds_fp8_decode(float *dst, const uint8_t *src, int64_t n, ds_fp8_format fmt) {
    const float *t = fmt == DS_FP8_E4M3 ? ds_fp8_e4m3_table : ds_fp8_e5m2_table;
    int64_t i = 0;
#ifdef DS_E4M3X16
    if (fmt == DS_FP8_E4M3)
        for (; i + 16 <= n; i += 16) ds_e4m3x16_to_f32(dst + i, src + i);
#endif
    for (; i < n; i++) dst[i] = t[src[i]];
}

#if defined(__AVX2__)
/* 8 lanes of ds_f32_to_e4m3(y, DS_FP8_SAT) as int32 codes. */
static inline __m256i e4m3_sat8(__m256 y) {
    const __m256i absm = _mm256_set1_epi32(0x7fffffff);
    __m256i u = _mm256_castps_si256(y);
    __m256i a = _mm256_and_si256(u, absm);
    __m256i sign = _mm256_and_si256(_mm256_srli_epi32(u, 24), _mm256_set1_epi32(0x80));
    __m256i nan = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7f800000));
    a = _mm256_min_epi32(a, _mm256_set1_epi32(0x43e00000));              /* clamp to 448 (inf too) */
    /* normal: RNE to 3 mantissa bits, rebias */
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(a, 20), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(a, _mm256_add_epi32(_mm256_set1_epi32(0x7ffff), lsb));
    __m256i cn = _mm256_sub_epi32(_mm256_srli_epi32(r, 20), _mm256_set1_epi32(120 << 3));
    /* subnormal: the FPU rounds a + 2^14 to a multiple of 2^-9 */
    __m256 t = _mm256_add_ps(_mm256_castsi256_ps(a), _mm256_set1_ps(16384.0f));
    __m256i cs = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(0x46800000));
    __m256i sub = _mm256_cmpgt_epi32(_mm256_set1_epi32(0x3c800000), a);
    __m256i c = _mm256_blendv_epi8(cn, cs, sub);
    c = _mm256_blendv_epi8(c, _mm256_set1_epi32(0x7f), nan);
    return _mm256_or_si256(c, sign);
}
/* 32 int32 codes (4 vectors) -> 32 bytes in order. */
static inline void store32(uint8_t *dst, __m256i c0, __m256i c1, __m256i c2, __m256i c3) {
    __m256i p01 = _mm256_packs_epi32(c0, c1), p23 = _mm256_packs_epi32(c2, c3);
    __m256i b = _mm256_packus_epi16(p01, p23);
    b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)dst, b);
}
#endif

void ds_fp8_encode_div_sat(uint8_t *dst, const float *src, int64_t n, float s, ds_fp8_format fmt) {
    int64_t i = 0;
#if defined(__AVX2__)
    if (fmt == DS_FP8_E4M3) {
        const __m256 vs = _mm256_set1_ps(s);
        for (; i + 32 <= n; i += 32)
            store32(dst + i, e4m3_sat8(_mm256_div_ps(_mm256_loadu_ps(src + i), vs)),
                    e4m3_sat8(_mm256_div_ps(_mm256_loadu_ps(src + i + 8), vs)),
                    e4m3_sat8(_mm256_div_ps(_mm256_loadu_ps(src + i + 16), vs)),
                    e4m3_sat8(_mm256_div_ps(_mm256_loadu_ps(src + i + 24), vs)));
    }
#endif
    for (; i < n; i++) dst[i] = ds_f32_to_fp8(src[i] / s, fmt, DS_FP8_SAT);
}

void ds_fp8_encode_divv_sat(uint8_t *dst, const float *src, const float *s, int64_t n, ds_fp8_format fmt) {
    int64_t i = 0;
#if defined(__AVX2__)
    if (fmt == DS_FP8_E4M3)
        for (; i + 32 <= n; i += 32)
            store32(dst + i, e4m3_sat8(_mm256_div_ps(_mm256_loadu_ps(src + i), _mm256_loadu_ps(s + i))),
                    e4m3_sat8(_mm256_div_ps(_mm256_loadu_ps(src + i + 8), _mm256_loadu_ps(s + i + 8))),
                    e4m3_sat8(_mm256_div_ps(_mm256_loadu_ps(src + i + 16), _mm256_loadu_ps(s + i + 16))),
                    e4m3_sat8(_mm256_div_ps(_mm256_loadu_ps(src + i + 24), _mm256_loadu_ps(s + i + 24))));
#endif
    for (; i < n; i++) dst[i] = ds_f32_to_fp8(src[i] / s[i], fmt, DS_FP8_SAT);
}

#if defined(__AVX2__) && defined(__F16C__)
/* 8 codes of x / s as 16-bit lanes (the code in the high byte), for finite x
 * with |x / s| <= 448 (1 + 2^-22); s256 = 256 s.
 * - y = x / (256 s) is RN(x / s) / 256 exactly (a power of two scales a
 *   rounding; below 2^-118 both round to a zero code);
 * - E4M3's grid at y's binade (exponent e, at least -14: the subnormals' step)
 *   has step 2^(e-3), the ulp of m = 1.5 * 2^(e+20); y + m stays in m's binade
 *   for either sign, so (y + m) - m is y rounded to that grid, ties to even by
 *   the FPU (m / ulp is even), the subtraction exact;
 * - the rounded value is an FP16 (exponent 1..15, 3 mantissa bits, or a
 *   subnormal k 2^-17), converted exactly: s 0 eeee mmm 0000000 is the code
 *   s.eeee.mmm with a zero bit between, closed by h + (h & 0x3fff);
 * - a value that rounds to zero takes its sign back from y (-0 is 0x80). */
static inline __m128i e4m3_bounded8(__m256 x, __m256 s256) {
    const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u));
    __m256 y = _mm256_div_ps(x, s256);
    __m256i e = _mm256_max_epi32(_mm256_and_si256(_mm256_castps_si256(y), _mm256_set1_epi32(0x7f800000)),
                                 _mm256_set1_epi32(113 << 23));                  /* 2^-14 */
    __m256 m = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_set1_epi32((20 << 23) | 0x400000)));
    __m256 r = _mm256_or_ps(_mm256_sub_ps(_mm256_add_ps(y, m), m), _mm256_and_ps(y, sign));
    return _mm256_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
/* 16 FP16 patterns (two halves) -> 16 codes as 16-bit lanes, low byte */
static inline __m256i e4m3_close16(__m128i h0, __m128i h1) {
    __m256i h = _mm256_inserti128_si256(_mm256_castsi128_si256(h0), h1, 1);
    h = _mm256_add_epi16(h, _mm256_and_si256(h, _mm256_set1_epi16(0x3fff)));
    return _mm256_srli_epi16(h, 8);
}
static inline void store32_16(uint8_t *dst, __m256i c0, __m256i c1) {
    __m256i b = _mm256_permute4x64_epi64(_mm256_packus_epi16(c0, c1), 0xd8);
    _mm256_storeu_si256((__m256i *)dst, b);
}
#endif

void ds_fp8_e4m3_encode_div_bounded(uint8_t *dst, const float *src, int64_t n, float s) {
    int64_t i = 0;
#if defined(__AVX2__) && defined(__F16C__)
    const __m256 v = _mm256_set1_ps(256.0f * s);
    for (; i + 32 <= n; i += 32)
        store32_16(dst + i,
                   e4m3_close16(e4m3_bounded8(_mm256_loadu_ps(src + i), v), e4m3_bounded8(_mm256_loadu_ps(src + i + 8), v)),
                   e4m3_close16(e4m3_bounded8(_mm256_loadu_ps(src + i + 16), v),
                                e4m3_bounded8(_mm256_loadu_ps(src + i + 24), v)));
#endif
    for (; i < n; i++) dst[i] = ds_f32_to_e4m3(src[i] / s, DS_FP8_SAT);
}

void ds_fp8_e4m3_encode_divv_bounded(uint8_t *dst, const float *src, const float *s256, int64_t n) {
    int64_t i = 0;
#if defined(__AVX2__) && defined(__F16C__)
    for (; i + 32 <= n; i += 32)
        store32_16(dst + i,
                   e4m3_close16(e4m3_bounded8(_mm256_loadu_ps(src + i), _mm256_loadu_ps(s256 + i)),
                                e4m3_bounded8(_mm256_loadu_ps(src + i + 8), _mm256_loadu_ps(s256 + i + 8))),
                   e4m3_close16(e4m3_bounded8(_mm256_loadu_ps(src + i + 16), _mm256_loadu_ps(s256 + i + 16)),
                                e4m3_bounded8(_mm256_loadu_ps(src + i + 24), _mm256_loadu_ps(s256 + i + 24))));
#endif
    for (; i < n; i++) dst[i] = ds_f32_to_e4m3(src[i] / (s256[i] * 0x1p-8f), DS_FP8_SAT);
}

uint32_t ds_f32_absmax_bits_2d(const float *x, int64_t ld, int64_t nr, int64_t nc) {
    uint32_t a = 0;
    int64_t c16 = 0;
#if defined(__AVX2__)
    /* |x| as integers: their order is the values' for finite ones, and NaN's
     * and inf's bits are above every finite one */
    const __m256i absm = _mm256_set1_epi32(0x7fffffff);
    __m256i m0 = _mm256_setzero_si256(), m1 = m0;
    c16 = nc & ~(int64_t)15;
    for (int64_t r = 0; r < nr; r++) {
        const float *src = x + r * ld;
        for (int64_t i = 0; i < c16; i += 16) {
            m0 = _mm256_max_epi32(_mm256_and_si256(_mm256_loadu_si256((const __m256i *)(src + i)), absm), m0);
            m1 = _mm256_max_epi32(_mm256_and_si256(_mm256_loadu_si256((const __m256i *)(src + i + 8)), absm), m1);
        }
    }
    m0 = _mm256_max_epi32(m0, m1);
    __m128i h = _mm_max_epi32(_mm256_castsi256_si128(m0), _mm256_extracti128_si256(m0, 1));
    h = _mm_max_epi32(h, _mm_shuffle_epi32(h, 0x4e));
    h = _mm_max_epi32(h, _mm_shuffle_epi32(h, 0xb1));
    a = (uint32_t)_mm_cvtsi128_si32(h);
#endif
    for (int64_t r = 0; r < nr && c16 < nc; r++)
        for (int64_t i = c16; i < nc; i++) {
            uint32_t u;
            memcpy(&u, x + r * ld + i, 4);
            u &= 0x7fffffffu;
            if (u > a) a = u;
        }
    return a;
}

void ds_f32_absmax_bits_update(uint32_t *am, const float *src, int64_t n) {
    int64_t i = 0;
#if defined(__AVX2__)
    const __m256i absm = _mm256_set1_epi32(0x7fffffff);
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_si256((__m256i *)(am + i),
                            _mm256_max_epi32(_mm256_and_si256(_mm256_loadu_si256((const __m256i *)(src + i)), absm),
                                             _mm256_loadu_si256((const __m256i *)(am + i))));
#endif
    for (; i < n; i++) {
        uint32_t u;
        memcpy(&u, src + i, 4);
        u &= 0x7fffffffu;
        if (u > am[i]) am[i] = u;
    }
}

#if defined(__AVX2__)
/* max over the lanes; no NaN reaches the accumulators (see ds_f32_amax_2d) */
static inline float hmax8(__m256 m) {
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}
#endif

float ds_f32_amax_2d(const float *x, int64_t ld, int64_t nr, int64_t nc) {
    float a = 0.0f;
    int64_t c16 = 0;
#if defined(__AVX2__)
    /* max_ps(x, acc) returns acc when x is NaN: NaN is skipped; one
     * reduction for the whole patch (a 1x128 tile or a 128x128 block) */
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m0 = _mm256_setzero_ps(), m1 = m0;
    c16 = nc & ~(int64_t)15;
    for (int64_t r = 0; r < nr; r++) {
        const float *src = x + r * ld;
        for (int64_t i = 0; i < c16; i += 16) {
            m0 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(src + i), absm), m0);
            m1 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(src + i + 8), absm), m1);
        }
    }
    a = hmax8(_mm256_max_ps(m0, m1));
#endif
    for (int64_t r = 0; r < nr && c16 < nc; r++)
        for (int64_t i = c16; i < nc; i++) a = fmaxf(a, fabsf(x[r * ld + i]));
    return a;
}

float ds_f32_amax(const float *src, int64_t n) { return ds_f32_amax_2d(src, n, 1, n); }

void ds_f32_amax_update(float *am, const float *src, int64_t n) {
    int64_t i = 0;
#if defined(__AVX2__)
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(am + i, _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(src + i), absm), _mm256_loadu_ps(am + i)));
#endif
    for (; i < n; i++) am[i] = fmaxf(am[i], fabsf(src[i]));
}

int ds_fp8_format_from_name(const char *name) {
    if (!strcmp(name, "e4m3") || !strcmp(name, "E4M3") || !strcmp(name, "F8_E4M3")) return DS_FP8_E4M3;
    if (!strcmp(name, "e5m2") || !strcmp(name, "E5M2") || !strcmp(name, "F8_E5M2")) return DS_FP8_E5M2;
    return -1;
}
