/*
 * gemv.h — the few-row matmul of decode steps (gemv.c).
 */
#ifndef DS_GEMV_H
#define DS_GEMV_H

#include <stdint.h>

#include "backend/cpu/linear_fp8w.h"

#ifdef __AVX2__
#include <immintrin.h>
#endif

/* Σ a[i]·b[i] (n), 32 lanes of FMA accumulators, scalar tail */
static inline float ds_dot_f32(const float *a, const float *b, int64_t n) {
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

/* y[i] += a·x[i] (n) */
static inline void ds_axpy_f32(float *y, float a, const float *x, int64_t n) {
    int64_t i = 0;
#ifdef __AVX2__
    const __m256 va = _mm256_set1_ps(a);
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
#endif
    for (; i < n; i++) y[i] += a * x[i];
}


#define DS_GEMV_MAX_ROWS 4
/* The CPU linear entries (table.c) keep up to this many rows on the GEMVs
 * (row by row arithmetic: a batched decode step equals batch-1 steps) */
#define DS_LINEAR_ROWWISE_MAX 16

/* out (N, OC) = inp (N, C) · weight (OC, C)ᵀ + bias (OC or NULL); any N, meant for N ≤ DS_GEMV_MAX_ROWS */
void ds_gemv_forward(float *out, const float *inp, const float *weight, const float *bias, int64_t N, int64_t C,
                     int64_t OC);

/* The same for an FP8 weight (linear_fp8w.h semantics): inp quantized 1x128,
 * then per output feature and 128-block an FP32 block sum of decoded codes
 * (weights read as bytes, E4M3 -> FP16 bits -> FP32 in registers, F16C), promoted with
 * fmaf(bsum, x_s · w_s, acc) as the GEMM does.  Reference:
 * ds_linear_fp8w_forward_ref; equal up to FP32 reassociation inside the
 * block sums (8 lanes x 2 accumulators here, sequential there; the
 * products themselves are exact in FP32). */
void ds_gemv_fp8w_forward(float *out, const float *inp, const ds_fp8w *w, const float *bias, int64_t N, int64_t C,
                          int64_t OC);

/* The same for a BF16-resident weight (w->b16): each weight row streamed once
 * as BF16 (AVX2: 8 x u16 zero-extended, shifted left 16 = the exact FP32;
 * scalar fallback) and dotted with the N FP32 input rows, 8 lanes x 4
 * accumulators per row.  Reference: ds_linear_bf16w_forward_ref; equal up to
 * FP32 reassociation (the products are the same FP32 fmas, their sum order
 * differs). */
void ds_gemv_bf16w_forward(float *out, const float *inp, const ds_fp8w *w, const float *bias, int64_t N, int64_t C,
                           int64_t OC);

#endif
