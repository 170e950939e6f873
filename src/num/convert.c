/*
 * convert.c — bulk float conversions through FP32 (see convert.h).  The
 * element conversions are the scalar references of num/dtype.h and
 * num/fp8.h; loops are split across threads.
 */
#include "num/convert.h"
#include "num/fp8.h"
#include "base/base.h"

#include <string.h>

#define PAR _Pragma("omp parallel for schedule(static) if (n > 65536)")

static void f32_to(float *d, const void *s, int64_t n) { memcpy(d, s, sizeof(float) * (size_t)n); }
static void f32_from(void *d, const float *s, int64_t n) { memcpy(d, s, sizeof(float) * (size_t)n); }
static void f64_to(float *d, const void *s, int64_t n) {
    const double *x = s;
    PAR for (int64_t i = 0; i < n; i++) d[i] = (float)x[i];
}
static void f64_from(void *d, const float *s, int64_t n) {
    double *y = d;
    PAR for (int64_t i = 0; i < n; i++) y[i] = s[i];
}
static void f16_to(float *d, const void *s, int64_t n) {
    const uint16_t *x = s;
    PAR for (int64_t i = 0; i < n; i++) d[i] = ds_f16_to_f32(x[i]);
}
static void f16_from(void *d, const float *s, int64_t n) {
    uint16_t *y = d;
    PAR for (int64_t i = 0; i < n; i++) y[i] = ds_f32_to_f16(s[i]);
}
static void bf16_to(float *d, const void *s, int64_t n) {
    const uint16_t *x = s;
    PAR for (int64_t i = 0; i < n; i++) d[i] = ds_bf16_to_f32(x[i]);
}
static void bf16_from(void *d, const float *s, int64_t n) {
    uint16_t *y = d;
    PAR for (int64_t i = 0; i < n; i++) y[i] = ds_f32_to_bf16(s[i]);
}
static void e4m3_to(float *d, const void *s, int64_t n) {
    const uint8_t *x = s; /* chunks through the vector decode */
    const int64_t ch = 1 << 16, nch = (n + ch - 1) / ch;
    PAR for (int64_t k = 0; k < nch; k++) {
        const int64_t o = k * ch;
        ds_fp8_decode(d + o, x + o, n - o < ch ? n - o : ch, DS_FP8_E4M3);
    }
}
static void e4m3_from(void *d, const float *s, int64_t n) {
    uint8_t *y = d;
    PAR for (int64_t i = 0; i < n; i++) y[i] = ds_f32_to_e4m3(s[i], DS_FP8_TORCH);
}
static void e5m2_to(float *d, const void *s, int64_t n) {
    const uint8_t *x = s;
    PAR for (int64_t i = 0; i < n; i++) d[i] = ds_fp8_e5m2_table[x[i]];
}
static void e5m2_from(void *d, const float *s, int64_t n) {
    uint8_t *y = d;
    PAR for (int64_t i = 0; i < n; i++) y[i] = ds_f32_to_e5m2(s[i], DS_FP8_TORCH);
}

static const ds_convert_traits table[DS_DTYPE_COUNT] = {
    [DS_F32] = {f32_to, f32_from},     [DS_F64] = {f64_to, f64_from},
    [DS_F16] = {f16_to, f16_from},     [DS_BF16] = {bf16_to, bf16_from},
    [DS_F8_E4M3] = {e4m3_to, e4m3_from}, [DS_F8_E5M2] = {e5m2_to, e5m2_from},
};

const ds_convert_traits *ds_convert_traits_of(ds_dtype t) {
    if ((unsigned)t >= DS_DTYPE_COUNT || !table[t].to_f32) return NULL;
    return &table[t];
}

int ds_convert(void *dst, ds_dtype dt, const void *src, ds_dtype st, int64_t n) {
    const ds_convert_traits *a = ds_convert_traits_of(st), *b = ds_convert_traits_of(dt);
    if (!a || !b)
        return ds_err("convert: %s -> %s: not a float type", (unsigned)st < DS_DTYPE_COUNT ? ds_dtype_table[st].st_name : "?",
                      (unsigned)dt < DS_DTYPE_COUNT ? ds_dtype_table[dt].st_name : "?");
    if (n < 0) return ds_err("convert: negative count %lld", (long long)n);
    if (dt == st) {
        memcpy(dst, src, ds_dtype_table[dt].size * (size_t)n);
        return 0;
    }
    if (st == DS_F32) { b->from_f32(dst, src, n); return 0; }
    if (dt == DS_F32) { a->to_f32(dst, src, n); return 0; }
    /* through FP32 in chunks */
    float buf[4096];
    const char *s = src;
    char *d = dst;
    for (int64_t i = 0; i < n; i += 4096) {
        int64_t m = n - i < 4096 ? n - i : 4096;
        a->to_f32(buf, s + (size_t)i * ds_dtype_table[st].size, m);
        b->from_f32(d + (size_t)i * ds_dtype_table[dt].size, buf, m);
    }
    return 0;
}
