/*
 * vmath.c — array forms of the vmath_simd.h functions, dispatched on the
 * run-time ISA level (cpu_isa.h).  Tails use masked loads/stores, so a row of
 * any length is one pass.
 */
#include "backend/cpu/vmath.h"

#include "backend/cpu/vmath_simd.h"

float ds_expf_fast(float x) { return ds_exp_s(x); }
float ds_logf_fast(float x) { return ds_log_s(x); }
float ds_tanhf_fast(float x) { return ds_tanh_s(x); }
float ds_sigmoidf_fast(float x) { return ds_sigmoid_s(x); }

#ifdef DS_X86_SIMD
#define DEF_ARRAY(name, f8, f16, fs)                                                                                \
    DS_TARGET_AVX512 static void name##_512(float *y, const float *x, int64_t n) {                                \
        int64_t i = 0;                                                                                             \
        for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, f16(_mm512_loadu_ps(x + i)));                        \
        if (i < n) {                                                                                               \
            __mmask16 k = (__mmask16)((1u << (n - i)) - 1);                                                        \
            _mm512_mask_storeu_ps(y + i, k, f16(_mm512_maskz_loadu_ps(k, x + i)));                                 \
        }                                                                                                          \
    }                                                                                                              \
    DS_TARGET_AVX2 static void name##_256(float *y, const float *x, int64_t n) {                                  \
        int64_t i = 0;                                                                                             \
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, f8(_mm256_loadu_ps(x + i)));                          \
        if (i < n) {                                                                                               \
            __m256i k = ds_mask8(n - i);                                                                           \
            _mm256_maskstore_ps(y + i, k, f8(_mm256_maskload_ps(x + i, k)));                                       \
        }                                                                                                          \
    }                                                                                                              \
    void name(float *y, const float *x, int64_t n) {                                                               \
        int isa = ds_cpu_isa();                                                                                    \
        if (isa == DS_ISA_AVX512) name##_512(y, x, n);                                                             \
        else if (isa == DS_ISA_AVX2) name##_256(y, x, n);                                                          \
        else                                                                                                       \
            for (int64_t i = 0; i < n; i++) y[i] = fs(x[i]);                                                       \
    }
#else
#define DEF_ARRAY(name, f8, f16, fs)                                                                                \
    void name(float *y, const float *x, int64_t n) {                                                               \
        for (int64_t i = 0; i < n; i++) y[i] = fs(x[i]);                                                           \
    }
#endif

DEF_ARRAY(ds_vexp, ds_exp8, ds_exp16, ds_exp_s)
DEF_ARRAY(ds_vlog, ds_log8, ds_log16, ds_log_s)
DEF_ARRAY(ds_vtanh, ds_tanh8, ds_tanh16, ds_tanh_s)
DEF_ARRAY(ds_vsigmoid, ds_sigmoid8, ds_sigmoid16, ds_sigmoid_s)

#ifdef DS_X86_SIMD
DS_TARGET_AVX512 static float vexp_sum_512(float *y, const float *x, float shift, int64_t n) {
    __m512 s = _mm512_setzero_ps(), sh = _mm512_set1_ps(shift);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 e = ds_exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), sh));
        if (y) _mm512_storeu_ps(y + i, e);
        s = _mm512_add_ps(s, e);
    }
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        __m512 e = ds_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), sh));
        if (y) _mm512_mask_storeu_ps(y + i, k, e);
        s = _mm512_add_ps(s, _mm512_maskz_mov_ps(k, e));
    }
    return _mm512_reduce_add_ps(s);
}
DS_TARGET_AVX2 static float vexp_sum_256(float *y, const float *x, float shift, int64_t n) {
    __m256 s = _mm256_setzero_ps(), sh = _mm256_set1_ps(shift);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = ds_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh));
        if (y) _mm256_storeu_ps(y + i, e);
        s = _mm256_add_ps(s, e);
    }
    if (i < n) {
        __m256i k = ds_mask8(n - i);
        __m256 e = ds_exp8(_mm256_sub_ps(_mm256_maskload_ps(x + i, k), sh));
        if (y) _mm256_maskstore_ps(y + i, k, e);
        s = _mm256_add_ps(s, _mm256_and_ps(_mm256_castsi256_ps(k), e));
    }
    return ds_hsum8(s);
}
DS_TARGET_AVX512 static float vmax_512(const float *x, int64_t n) {
    __m512 m = _mm512_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) m = _mm512_max_ps(_mm512_loadu_ps(x + i), m); /* NaN in x: keeps m */
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        m = _mm512_mask_max_ps(m, k, _mm512_maskz_loadu_ps(k, x + i), m);
    }
    return _mm512_reduce_max_ps(m);
}
DS_TARGET_AVX2 static float vmax_256(const float *x, int64_t n) {
    __m256 m = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) m = _mm256_max_ps(_mm256_loadu_ps(x + i), m);
    float r = ds_hmax8(m);
    for (; i < n; i++) r = x[i] > r ? x[i] : r;
    return r;
}
#endif

float ds_vexp_sum(float *y, const float *x, float shift, int64_t n) {
#ifdef DS_X86_SIMD
    int isa = ds_cpu_isa();
    if (isa == DS_ISA_AVX512) return vexp_sum_512(y, x, shift, n);
    if (isa == DS_ISA_AVX2) return vexp_sum_256(y, x, shift, n);
#endif
    float s = 0;
    for (int64_t i = 0; i < n; i++) {
        float e = ds_exp_s(x[i] - shift);
        if (y) y[i] = e;
        s += e;
    }
    return s;
}

float ds_vmax(const float *x, int64_t n) {
#ifdef DS_X86_SIMD
    int isa = ds_cpu_isa();
    if (isa == DS_ISA_AVX512) return vmax_512(x, n);
    if (isa == DS_ISA_AVX2) return vmax_256(x, n);
#endif
    float r = -INFINITY;
    for (int64_t i = 0; i < n; i++) r = x[i] > r ? x[i] : r;
    return r;
}
