/*
 * gemv.c — out = inp · weightᵀ (+ bias) for the few rows of a decode step
 * (N ≤ DS_GEMV_MAX_ROWS).  BLAS sgemm packs the whole weight matrix on every
 * call, which for one token costs more than the multiply; here each weight
 * row is streamed once and dotted with the N input rows (AVX2/FMA, 8 lanes ×
 * 4 accumulators, scalar fallback), OpenMP over output features.
 * out (N, OC), inp (N, C), weight (OC, C), bias (OC) or NULL.  Reference:
 * ds_matmul_forward_ref (kernels/matmul.c); tests/test_infer.c compares.
 */
#include "infer/gemv.h"

void ds_gemv_forward(float *out, const float *inp, const float *weight, const float *bias, int64_t N, int64_t C,
                     int64_t OC) {
#pragma omp parallel for schedule(static) if (OC * C >= 65536)
    for (int64_t o = 0; o < OC; o++) {
        const float *w = weight + o * C;
        const float b = bias ? bias[o] : 0.0f;
        for (int64_t n = 0; n < N; n++) out[n * OC + o] = ds_dot_f32(inp + n * C, w, C) + b;
    }
}

/* ---- FP8 weights ----------------------------------------------------------------- */

#include <math.h>
#include <stdlib.h>

#include "base/base.h"
#include "num/fp8.h"
#include "num/quant.h"

#ifdef __AVX2__
/* 8 E4M3 codes -> FP32: a normal magnitude m (8..126) is the FP32 pattern
 * (m << 20) + (120 << 23) (exponent rebias 7 -> 127); a subnormal (m < 8) is
 * m · 2^-9 (int -> float, no FP32 denormals); the sign bit goes on top.
 * 0x7f (NaN) never occurs in a checkpoint made by a saturating cast. */
static inline __m256 e4m3x8(const uint8_t *p) {
    const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
    const __m256i mag = _mm256_and_si256(v, _mm256_set1_epi32(0x7f));
    const __m256 fn = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_slli_epi32(mag, 20), _mm256_set1_epi32(120 << 23)));
    const __m256 fs = _mm256_mul_ps(_mm256_cvtepi32_ps(mag), _mm256_set1_ps(0x1p-9f));
    const __m256 sub = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(8), mag));
    const __m256 f = _mm256_blendv_ps(fn, fs, sub);
    const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(v, _mm256_set1_epi32(0x80)), 24);
    return _mm256_or_ps(f, _mm256_castsi256_ps(sign));
}

static inline float hsum8(__m256 t) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}
#endif

void ds_gemv_fp8w_forward(float *out, const float *inp, const ds_fp8w *w, const float *bias, int64_t N, int64_t C,
                          int64_t OC) {
    if (N <= 0 || OC <= 0) return;
    if (N > DS_GEMV_MAX_ROWS) {
        ds_linear_fp8w_forward(out, inp, w, bias, N, C, OC);
        return;
    }
    const int64_t G = DS_QUANT_GROUP, CB = ds_ceil_div(C, G);
    uint8_t *q;
    float *s;
    ds_fp8w_workspace(N, C, &q, &s);
    ds_quant_opts qo = ds_quant_defaults(DS_QUANT_TILE_1x128);
    (void)ds_quantize(q, s, inp, N, C, &qo);
    /* the activation codes decoded once: (N, C) floats, exact */
    float xf[DS_GEMV_MAX_ROWS * 2048], *xd = C <= 2048 ? xf : ds_malloc((size_t)(N * C) * sizeof(float));
    for (int64_t i = 0; i < N * C; i++) xd[i] = ds_fp8_e4m3_table[q[i]];
    const uint8_t *wq = w->q;
    const float *ws = w->scale;
#pragma omp parallel for schedule(static) if (OC * C >= 65536)
    for (int64_t o = 0; o < OC; o++) {
        const uint8_t *wr = wq + o * C;
        const float *wsr = ws + (o / G) * CB;
        float acc[DS_GEMV_MAX_ROWS] = {0};
        for (int64_t kb = 0; kb < CB; kb++) {
            const int64_t k0 = kb * G, k1 = k0 + G < C ? k0 + G : C;
            float bs[DS_GEMV_MAX_ROWS] = {0};
            int64_t k = k0;
#ifdef __AVX2__
            __m256 a0[DS_GEMV_MAX_ROWS], a1[DS_GEMV_MAX_ROWS];
            for (int64_t n = 0; n < N; n++) a0[n] = a1[n] = _mm256_setzero_ps();
            for (; k + 16 <= k1; k += 16) {
                const __m256 w0 = e4m3x8(wr + k), w1 = e4m3x8(wr + k + 8);
                for (int64_t n = 0; n < N; n++) {
                    a0[n] = _mm256_fmadd_ps(_mm256_loadu_ps(xd + n * C + k), w0, a0[n]);
                    a1[n] = _mm256_fmadd_ps(_mm256_loadu_ps(xd + n * C + k + 8), w1, a1[n]);
                }
            }
            for (; k + 8 <= k1; k += 8) {
                const __m256 w0 = e4m3x8(wr + k);
                for (int64_t n = 0; n < N; n++) a0[n] = _mm256_fmadd_ps(_mm256_loadu_ps(xd + n * C + k), w0, a0[n]);
            }
            for (int64_t n = 0; n < N; n++) bs[n] = hsum8(_mm256_add_ps(a0[n], a1[n]));
#endif
            for (; k < k1; k++) {
                const float wv = ds_fp8_e4m3_table[wr[k]];
                for (int64_t n = 0; n < N; n++) bs[n] = fmaf(xd[n * C + k], wv, bs[n]);
            }
            const float wsc = wsr[kb];
            for (int64_t n = 0; n < N; n++) acc[n] = fmaf(bs[n], s[n * CB + kb] * wsc, acc[n]);
        }
        const float b = bias ? bias[o] : 0.0f;
        for (int64_t n = 0; n < N; n++) out[n * OC + o] = acc[n] + b;
    }
    if (xd != xf) free(xd);
}
