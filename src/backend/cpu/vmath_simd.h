/*
 * vmath_simd.h — exp, log, tanh and sigmoid on SIMD registers (AVX2+FMA: 8
 * lanes, AVX-512: 16 lanes) and on scalars, for kernels that want them inline.
 * All three forms run the same operations in the same order (explicit FMAs,
 * no reliance on contraction), so they return identical bits: a result does
 * not depend on the machine's ISA.  Accuracy and special values: vmath.h.
 *
 * exp: x = n·ln2 + r (ln2 in two parts, |r| ≤ ln2/2), e^r by a degree-7
 *   polynomial (Cephes expf's), times 2^n applied as 2^(n/2)·2^(n−n/2) so
 *   that subnormal results round once and x near 88.7 overflows to +inf
 *   exactly where expf does.
 * log: x = m·2^e with m in [√½, √2) (subnormals scaled by 2^23 first),
 *   log m by Cephes logf's polynomial in m − 1, plus e·ln2 in two parts.
 * tanh: |x| < 0.625 odd polynomial (Cephes tanhf), else 1 − 2/(e^{2|x|}+1).
 * sigmoid: e = exp(−|x|), (x ≥ 0 ? 1 : e)/(1 + e) — accurate in both tails.
 */
#ifndef DS_VMATH_SIMD_H
#define DS_VMATH_SIMD_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend/cpu/cpu_isa.h"

#ifdef DS_X86_SIMD
#include <immintrin.h>
#endif

#define DS_VM_EXP_HI 89.0f
#define DS_VM_EXP_LO (-104.0f)
#define DS_VM_LOG2E 1.44269504088896341f
#define DS_VM_LN2HI 0.693359375f
#define DS_VM_LN2LO (-2.12194440e-4f)
#define DS_VM_E0 1.9875691500E-4f
#define DS_VM_E1 1.3981999507E-3f
#define DS_VM_E2 8.3334519073E-3f
#define DS_VM_E3 4.1665795894E-2f
#define DS_VM_E4 1.6666665459E-1f
#define DS_VM_E5 5.0000001201E-1f
#define DS_VM_SQRTHF 0.707106781186547524f
#define DS_VM_L0 7.0376836292E-2f
#define DS_VM_L1 (-1.1514610310E-1f)
#define DS_VM_L2 1.1676998740E-1f
#define DS_VM_L3 (-1.2420140846E-1f)
#define DS_VM_L4 1.4249322787E-1f
#define DS_VM_L5 (-1.6668057665E-1f)
#define DS_VM_L6 2.0000714765E-1f
#define DS_VM_L7 (-2.4999993993E-1f)
#define DS_VM_L8 3.3333331174E-1f
#define DS_VM_T0 (-5.70498872745E-3f)
#define DS_VM_T1 2.06390887954E-2f
#define DS_VM_T2 (-5.37397155531E-2f)
#define DS_VM_T3 1.33314422036E-1f
#define DS_VM_T4 (-3.33332819422E-1f)

/* ---- scalar (the same arithmetic, lane by lane) ---------------------------- */
static inline float ds_vm_bits2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t ds_vm_f2bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static inline float ds_exp_s(float x) {
    if (x != x) return x + x;
    float xc = x > DS_VM_EXP_HI ? DS_VM_EXP_HI : x < DS_VM_EXP_LO ? DS_VM_EXP_LO : x;
    float n = nearbyintf(xc * DS_VM_LOG2E);
    float r = fmaf(-n, DS_VM_LN2HI, xc);
    r = fmaf(-n, DS_VM_LN2LO, r);
    float p = fmaf(DS_VM_E0, r, DS_VM_E1);
    p = fmaf(p, r, DS_VM_E2);
    p = fmaf(p, r, DS_VM_E3);
    p = fmaf(p, r, DS_VM_E4);
    p = fmaf(p, r, DS_VM_E5);
    float r2 = r * r;
    float y = fmaf(p, r2, r) + 1.0f;
    int32_t ni = (int32_t)n, n1 = ni >> 1, n2 = ni - n1;
    return y * ds_vm_bits2f((uint32_t)(n1 + 127) << 23) * ds_vm_bits2f((uint32_t)(n2 + 127) << 23);
}

static inline float ds_log_s(float x) {
    if (x != x) return x + x;
    if (x < 0.0f) return NAN;
    if (x == 0.0f) return -INFINITY;
    if (x == INFINITY) return x;
    float eadj = 0.0f;
    if (x < 1.17549435e-38f) x *= 8388608.0f, eadj = -23.0f;
    uint32_t u = ds_vm_f2bits(x);
    float e = (float)((int32_t)(u >> 23) - 126) + eadj;
    float m = ds_vm_bits2f((u & 0x007fffffu) | 0x3f000000u); /* [0.5, 1) */
    float f;
    if (m < DS_VM_SQRTHF) e = e - 1.0f, f = (m + m) - 1.0f;
    else f = m - 1.0f;
    float z = f * f;
    float p = fmaf(DS_VM_L0, f, DS_VM_L1);
    p = fmaf(p, f, DS_VM_L2);
    p = fmaf(p, f, DS_VM_L3);
    p = fmaf(p, f, DS_VM_L4);
    p = fmaf(p, f, DS_VM_L5);
    p = fmaf(p, f, DS_VM_L6);
    p = fmaf(p, f, DS_VM_L7);
    p = fmaf(p, f, DS_VM_L8);
    float y = (f * z) * p;
    y = fmaf(e, DS_VM_LN2LO, y);
    y = fmaf(-0.5f, z, y);
    float res = f + y;
    return fmaf(e, DS_VM_LN2HI, res);
}

static inline float ds_tanh_s(float x) {
    float a = fabsf(x);
    if (a < 0.625f) {
        float z = x * x;
        float p = fmaf(DS_VM_T0, z, DS_VM_T1);
        p = fmaf(p, z, DS_VM_T2);
        p = fmaf(p, z, DS_VM_T3);
        p = fmaf(p, z, DS_VM_T4);
        return copysignf(fmaf(p * z, x, x), x); /* keeps −0 */
    }
    float e = ds_exp_s(a + a);
    float t = 1.0f - 2.0f / (e + 1.0f);
    return copysignf(t, x); /* NaN: a = NaN fails a < 0.625, e = NaN, t = NaN */
}

static inline float ds_sigmoid_s(float x) {
    float e = ds_exp_s(-fabsf(x));
    return (x >= 0.0f ? 1.0f : e) / (1.0f + e);
}

#ifdef DS_X86_SIMD
/* ---- AVX2 + FMA: 8 lanes --------------------------------------------------- */
DS_TARGET_AVX2 static inline __m256 ds_exp8(__m256 x) {
    __m256 xc = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(DS_VM_EXP_HI)), _mm256_set1_ps(DS_VM_EXP_LO));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(DS_VM_LOG2E)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(DS_VM_LN2HI), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(DS_VM_LN2LO), r);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(DS_VM_E0), r, _mm256_set1_ps(DS_VM_E1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(DS_VM_E2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(DS_VM_E3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(DS_VM_E4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(DS_VM_E5));
    __m256 r2 = _mm256_mul_ps(r, r);
    __m256 y = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0f));
    __m256i ni = _mm256_cvtps_epi32(n), n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    __m256i b = _mm256_set1_epi32(127);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, b), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, b), 23));
    y = _mm256_mul_ps(_mm256_mul_ps(y, s1), s2);
    return _mm256_blendv_ps(y, _mm256_add_ps(x, x), _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

DS_TARGET_AVX2 static inline __m256 ds_log8(__m256 x) {
    const __m256 zero = _mm256_setzero_ps();
    __m256 tiny = _mm256_cmp_ps(x, _mm256_set1_ps(1.17549435e-38f), _CMP_LT_OQ);
    __m256 xs = _mm256_blendv_ps(x, _mm256_mul_ps(x, _mm256_set1_ps(8388608.0f)), tiny);
    __m256 eadj = _mm256_and_ps(tiny, _mm256_set1_ps(-23.0f));
    __m256i u = _mm256_castps_si256(xs);
    __m256 e = _mm256_add_ps(
        _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(u, 23), _mm256_set1_epi32(126))), eadj);
    __m256 m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(u, _mm256_set1_epi32(0x007fffff)),
                                                   _mm256_set1_epi32(0x3f000000)));
    __m256 lt = _mm256_cmp_ps(m, _mm256_set1_ps(DS_VM_SQRTHF), _CMP_LT_OQ);
    e = _mm256_sub_ps(e, _mm256_and_ps(lt, _mm256_set1_ps(1.0f)));
    __m256 f = _mm256_sub_ps(_mm256_add_ps(m, _mm256_and_ps(lt, m)), _mm256_set1_ps(1.0f));
    __m256 z = _mm256_mul_ps(f, f);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(DS_VM_L0), f, _mm256_set1_ps(DS_VM_L1));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(DS_VM_L2));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(DS_VM_L3));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(DS_VM_L4));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(DS_VM_L5));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(DS_VM_L6));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(DS_VM_L7));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(DS_VM_L8));
    __m256 y = _mm256_mul_ps(_mm256_mul_ps(f, z), p);
    y = _mm256_fmadd_ps(e, _mm256_set1_ps(DS_VM_LN2LO), y);
    y = _mm256_fmadd_ps(_mm256_set1_ps(-0.5f), z, y);
    __m256 res = _mm256_fmadd_ps(e, _mm256_set1_ps(DS_VM_LN2HI), _mm256_add_ps(f, y));
    /* specials: +inf stays, 0 -> -inf, < 0 -> NaN, NaN propagates */
    res = _mm256_blendv_ps(res, x, _mm256_cmp_ps(x, _mm256_set1_ps(INFINITY), _CMP_EQ_OQ));
    res = _mm256_blendv_ps(res, _mm256_set1_ps(-INFINITY), _mm256_cmp_ps(x, zero, _CMP_EQ_OQ));
    res = _mm256_blendv_ps(res, _mm256_set1_ps(NAN), _mm256_cmp_ps(x, zero, _CMP_LT_OQ));
    return _mm256_blendv_ps(res, _mm256_add_ps(x, x), _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

DS_TARGET_AVX2 static inline __m256 ds_tanh8(__m256 x) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 a = _mm256_andnot_ps(sign, x);
    __m256 z = _mm256_mul_ps(x, x);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(DS_VM_T0), z, _mm256_set1_ps(DS_VM_T1));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(DS_VM_T2));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(DS_VM_T3));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(DS_VM_T4));
    __m256 small = _mm256_or_ps(_mm256_fmadd_ps(_mm256_mul_ps(p, z), x, x), _mm256_and_ps(x, sign));
    __m256 e = ds_exp8(_mm256_add_ps(a, a));
    __m256 t = _mm256_sub_ps(_mm256_set1_ps(1.0f),
                             _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, _mm256_set1_ps(1.0f))));
    t = _mm256_or_ps(t, _mm256_and_ps(x, sign));
    return _mm256_blendv_ps(t, small, _mm256_cmp_ps(a, _mm256_set1_ps(0.625f), _CMP_LT_OQ));
}

DS_TARGET_AVX2 static inline __m256 ds_sigmoid8(__m256 x) {
    __m256 e = ds_exp8(_mm256_or_ps(x, _mm256_set1_ps(-0.0f)));
    __m256 one = _mm256_set1_ps(1.0f);
    __m256 num = _mm256_blendv_ps(e, one, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ));
    return _mm256_div_ps(num, _mm256_add_ps(one, e));
}

DS_TARGET_AVX2 static inline float ds_hsum8(__m256 v) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

DS_TARGET_AVX2 static inline float ds_hmax8(__m256 v) {
    __m128 lo = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    lo = _mm_max_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_max_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

/* lanes [0, n) set (n in 0..8), for maskload/maskstore */
DS_TARGET_AVX2 static inline __m256i ds_mask8(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* ---- AVX-512: 16 lanes ----------------------------------------------------- */
DS_TARGET_AVX512 static inline __m512 ds_exp16(__m512 x) {
    __m512 xc = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(DS_VM_EXP_HI)), _mm512_set1_ps(DS_VM_EXP_LO));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(DS_VM_LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(DS_VM_LN2HI), xc);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(DS_VM_LN2LO), r);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(DS_VM_E0), r, _mm512_set1_ps(DS_VM_E1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(DS_VM_E2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(DS_VM_E3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(DS_VM_E4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(DS_VM_E5));
    __m512 r2 = _mm512_mul_ps(r, r);
    __m512 y = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0f));
    __m512i ni = _mm512_cvtps_epi32(n), n1 = _mm512_srai_epi32(ni, 1), n2 = _mm512_sub_epi32(ni, n1);
    __m512i b = _mm512_set1_epi32(127);
    __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, b), 23));
    __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, b), 23));
    y = _mm512_mul_ps(_mm512_mul_ps(y, s1), s2);
    return _mm512_mask_add_ps(y, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x, x);
}

DS_TARGET_AVX512 static inline __m512 ds_log16(__m512 x) {
    const __m512 zero = _mm512_setzero_ps();
    __mmask16 tiny = _mm512_cmp_ps_mask(x, _mm512_set1_ps(1.17549435e-38f), _CMP_LT_OQ);
    __m512 xs = _mm512_mask_mul_ps(x, tiny, x, _mm512_set1_ps(8388608.0f));
    __m512 eadj = _mm512_maskz_mov_ps(tiny, _mm512_set1_ps(-23.0f));
    __m512i u = _mm512_castps_si512(xs);
    __m512 e = _mm512_add_ps(
        _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(u, 23), _mm512_set1_epi32(126))), eadj);
    __m512 m = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(u, _mm512_set1_epi32(0x007fffff)),
                                                   _mm512_set1_epi32(0x3f000000)));
    __mmask16 lt = _mm512_cmp_ps_mask(m, _mm512_set1_ps(DS_VM_SQRTHF), _CMP_LT_OQ);
    e = _mm512_mask_sub_ps(e, lt, e, _mm512_set1_ps(1.0f));
    __m512 f = _mm512_sub_ps(_mm512_mask_add_ps(m, lt, m, m), _mm512_set1_ps(1.0f));
    __m512 z = _mm512_mul_ps(f, f);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(DS_VM_L0), f, _mm512_set1_ps(DS_VM_L1));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(DS_VM_L2));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(DS_VM_L3));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(DS_VM_L4));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(DS_VM_L5));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(DS_VM_L6));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(DS_VM_L7));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(DS_VM_L8));
    __m512 y = _mm512_mul_ps(_mm512_mul_ps(f, z), p);
    y = _mm512_fmadd_ps(e, _mm512_set1_ps(DS_VM_LN2LO), y);
    y = _mm512_fmadd_ps(_mm512_set1_ps(-0.5f), z, y);
    __m512 res = _mm512_fmadd_ps(e, _mm512_set1_ps(DS_VM_LN2HI), _mm512_add_ps(f, y));
    res = _mm512_mask_mov_ps(res, _mm512_cmp_ps_mask(x, _mm512_set1_ps(INFINITY), _CMP_EQ_OQ), x);
    res = _mm512_mask_mov_ps(res, _mm512_cmp_ps_mask(x, zero, _CMP_EQ_OQ), _mm512_set1_ps(-INFINITY));
    res = _mm512_mask_mov_ps(res, _mm512_cmp_ps_mask(x, zero, _CMP_LT_OQ), _mm512_set1_ps(NAN));
    return _mm512_mask_add_ps(res, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x, x);
}

DS_TARGET_AVX512 static inline __m512 ds_tanh16(__m512 x) {
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    __m512 a = _mm512_castsi512_ps(_mm512_andnot_si512(sign, _mm512_castps_si512(x)));
    __m512 z = _mm512_mul_ps(x, x);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(DS_VM_T0), z, _mm512_set1_ps(DS_VM_T1));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(DS_VM_T2));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(DS_VM_T3));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(DS_VM_T4));
    __m512 small = _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_castps_si512(_mm512_fmadd_ps(_mm512_mul_ps(p, z), x, x)), _mm512_and_si512(_mm512_castps_si512(x), sign)));
    __m512 e = ds_exp16(_mm512_add_ps(a, a));
    __m512 t = _mm512_sub_ps(_mm512_set1_ps(1.0f),
                             _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, _mm512_set1_ps(1.0f))));
    t = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(t),
                                            _mm512_and_si512(_mm512_castps_si512(x), sign)));
    return _mm512_mask_mov_ps(t, _mm512_cmp_ps_mask(a, _mm512_set1_ps(0.625f), _CMP_LT_OQ), small);
}

DS_TARGET_AVX512 static inline __m512 ds_sigmoid16(__m512 x) {
    __m512 e = ds_exp16(_mm512_castsi512_ps(
        _mm512_or_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u))));
    __m512 one = _mm512_set1_ps(1.0f);
    __m512 num = _mm512_mask_mov_ps(e, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ), one);
    return _mm512_div_ps(num, _mm512_add_ps(one, e));
}
#endif /* DS_X86_SIMD */

#endif
