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

#ifdef __AVX2__
#include <immintrin.h>
#endif

static inline float dot(const float *a, const float *b, int64_t n) {
    int64_t i = 0;
    float s = 0;
#ifdef __AVX2__
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
    __m256 t = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    s = _mm_cvtss_f32(h);
#endif
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

void ds_gemv_forward(float *out, const float *inp, const float *weight, const float *bias, int64_t N, int64_t C,
                     int64_t OC) {
#pragma omp parallel for schedule(static) if (OC * C >= 65536)
    for (int64_t o = 0; o < OC; o++) {
        const float *w = weight + o * C;
        const float b = bias ? bias[o] : 0.0f;
        for (int64_t n = 0; n < N; n++) out[n * OC + o] = dot(inp + n * C, w, C) + b;
    }
}
