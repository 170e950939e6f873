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

#include <math.h>
#include <string.h>

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
    for (int64_t i = 0; i < n; i++) dst[i] = t[src[i]];
}

int ds_fp8_format_from_name(const char *name) {
    if (!strcmp(name, "e4m3") || !strcmp(name, "E4M3") || !strcmp(name, "F8_E4M3")) return DS_FP8_E4M3;
    if (!strcmp(name, "e5m2") || !strcmp(name, "E5M2") || !strcmp(name, "F8_E5M2")) return DS_FP8_E5M2;
    return -1;
}
