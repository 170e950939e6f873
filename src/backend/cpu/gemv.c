/*
 * gemv.c — out = inp · weightᵀ (+ bias) for the few rows of a decode step
 * (N ≤ DS_GEMV_MAX_ROWS).  BLAS sgemm packs the whole weight matrix on every
 * call, which for one token costs more than the multiply; here each weight
 * row is streamed once and dotted with the N input rows (AVX2/FMA, 8 lanes ×
 * 4 accumulators, scalar fallback), OpenMP over output features.
 * out (N, OC), inp (N, C), weight (OC, C), bias (OC) or NULL.  Reference:
 * ds_matmul_forward_ref (backend/cpu/matmul.c); tests/test_infer.c compares.
 * The same for FP8-resident weights (ds_gemv_fp8w_forward, tested in
 * tests/test_fp8_infer.c) and BF16-resident ones (ds_gemv_bf16w_forward,
 * tests/test_bf16_infer.c).
 */
#include "backend/cpu/gemv.h"
#include "backend/cpu/par.h"

void ds_gemv_forward(float *out, const float *inp, const float *weight, const float *bias, int64_t N, int64_t C,
                     int64_t OC) {
    const int nt = ds_par_threads((double)OC * C * sizeof(float), DS_PAR_MIN_BYTES);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
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
#include "num/fp8_simd.h"
#include "num/quant.h"

#ifdef __AVX2__
static inline float hsum8(__m256 t) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}
#endif

#ifdef DS_E4M3X16
/* the codes as FP32 at 2^-8 of their value (num/fp8_simd.h): the caller
 * folds the 2^8 into the block scale (exact: a power of two).  0x7f (NaN)
 * never occurs in a checkpoint made by a saturating cast. */
static inline void e4m3x16(const uint8_t *p, __m256 *lo, __m256 *hi) {
    const __m256i h = ds_e4m3x16_half(p);
    *lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
    *hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
}

/* res[n] (NN rows, a constant after inlining so the accumulators stay in
 * registers) = Σ_kb Σ_{k in kb} xd[n, k]·w[k] · xs[n, kb]·ws[kb]: per block
 * 8-lane sums over whole 16s of codes, promoted lane-wise into a vector
 * accumulator with the block's scales (one horizontal sum per row, not per
 * block); the < 16 leftover codes of a ragged block are summed in scalar */
static inline __attribute__((always_inline)) void row_fp8(float *res, const float *xd, int64_t C, const float *xs,
                                                          int64_t CB, const uint8_t *wr, const float *wsr, const int NN) {
    __m256 acc[DS_GEMV_MAX_ROWS];
    float accs[DS_GEMV_MAX_ROWS];
    for (int n = 0; n < NN; n++) acc[n] = _mm256_setzero_ps(), accs[n] = 0.0f;
    for (int64_t kb = 0; kb < CB; kb++) {
        const int64_t k0 = kb * DS_QUANT_GROUP, k1 = k0 + DS_QUANT_GROUP < C ? k0 + DS_QUANT_GROUP : C;
        __m256 a0[DS_GEMV_MAX_ROWS], a1[DS_GEMV_MAX_ROWS];
        for (int n = 0; n < NN; n++) a0[n] = a1[n] = _mm256_setzero_ps();
        int64_t k = k0;
        for (; k + 32 <= k1; k += 32) {
            __m256 w0, w1, w2, w3;
            ds_e4m3x32_scaled(wr + k, &w0, &w1, &w2, &w3);
            for (int n = 0; n < NN; n++) {
                a0[n] = _mm256_fmadd_ps(_mm256_loadu_ps(xd + n * C + k), w0, a0[n]);
                a1[n] = _mm256_fmadd_ps(_mm256_loadu_ps(xd + n * C + k + 8), w1, a1[n]);
                a0[n] = _mm256_fmadd_ps(_mm256_loadu_ps(xd + n * C + k + 16), w2, a0[n]);
                a1[n] = _mm256_fmadd_ps(_mm256_loadu_ps(xd + n * C + k + 24), w3, a1[n]);
            }
        }
        for (; k + 16 <= k1; k += 16) {
            __m256 w0, w1;
            e4m3x16(wr + k, &w0, &w1);
            for (int n = 0; n < NN; n++) {
                a0[n] = _mm256_fmadd_ps(_mm256_loadu_ps(xd + n * C + k), w0, a0[n]);
                a1[n] = _mm256_fmadd_ps(_mm256_loadu_ps(xd + n * C + k + 8), w1, a1[n]);
            }
        }
        const float wsc = wsr[kb];
        /* the codes were decoded at 2^-8 of their value: x 2^8 (exact) with the scales */
        for (int n = 0; n < NN; n++)
            acc[n] = _mm256_fmadd_ps(_mm256_add_ps(a0[n], a1[n]), _mm256_set1_ps(xs[n * CB + kb] * wsc * 256.0f), acc[n]);
        if (k < k1) {
            float t[DS_GEMV_MAX_ROWS] = {0};
            for (; k < k1; k++) {
                const float wv = ds_fp8_e4m3_table[wr[k]];
                for (int n = 0; n < NN; n++) t[n] = fmaf(xd[n * C + k], wv, t[n]);
            }
            for (int n = 0; n < NN; n++) accs[n] = fmaf(t[n], xs[n * CB + kb] * wsc, accs[n]);
        }
    }
    for (int n = 0; n < NN; n++) res[n] = hsum8(acc[n]) + accs[n];
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
    ds_fp8_decode(xd, q, N * C, DS_FP8_E4M3);
    const uint8_t *wq = w->q;
    const float *ws = w->scale;
    const int nt = ds_par_threads((double)OC * C, DS_PAR_MIN_BYTES);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t o = 0; o < OC; o++) {
        const uint8_t *wr = wq + o * C;
        const float *wsr = ws + (o / G) * CB;
        float acc[DS_GEMV_MAX_ROWS] = {0};
#ifdef DS_E4M3X16
        switch (N) {
        case 1: row_fp8(acc, xd, C, s, CB, wr, wsr, 1); break;
        case 2: row_fp8(acc, xd, C, s, CB, wr, wsr, 2); break;
        case 3: row_fp8(acc, xd, C, s, CB, wr, wsr, 3); break;
        default: row_fp8(acc, xd, C, s, CB, wr, wsr, 4); break;
        }
#else
        for (int64_t kb = 0; kb < CB; kb++) {
            const int64_t k0 = kb * G, k1 = k0 + G < C ? k0 + G : C;
            float bs[DS_GEMV_MAX_ROWS] = {0};
            for (int64_t k = k0; k < k1; k++) {
                const float wv = ds_fp8_e4m3_table[wr[k]];
                for (int64_t n = 0; n < N; n++) bs[n] = fmaf(xd[n * C + k], wv, bs[n]);
            }
            for (int64_t n = 0; n < N; n++) acc[n] = fmaf(bs[n], s[n * CB + kb] * wsr[kb], acc[n]);
        }
#endif
        const float b = bias ? bias[o] : 0.0f;
        for (int64_t n = 0; n < N; n++) out[n * OC + o] = acc[n] + b;
    }
    if (xd != xf) free(xd);
}

/* ---- BF16 weights ---------------------------------------------------------------- */

#include "num/dtype.h"

#ifdef __AVX2__
/* 8 BF16 -> 8 FP32 (exact) */
static inline __m256 bf16x8(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

/* res[n] (NN rows, a constant after inlining) = Σ_k x[n, k]·widen(w[k]) */
static inline __attribute__((always_inline)) void row_bf16(float *res, const float *x, int64_t C,
                                                           const uint16_t *wr, const int NN) {
    __m256 a0[DS_GEMV_MAX_ROWS], a1[DS_GEMV_MAX_ROWS], a2[DS_GEMV_MAX_ROWS], a3[DS_GEMV_MAX_ROWS];
    for (int n = 0; n < NN; n++) a0[n] = a1[n] = a2[n] = a3[n] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= C; k += 32) {
        const __m256 w0 = bf16x8(wr + k), w1 = bf16x8(wr + k + 8), w2 = bf16x8(wr + k + 16), w3 = bf16x8(wr + k + 24);
        for (int n = 0; n < NN; n++) {
            a0[n] = _mm256_fmadd_ps(_mm256_loadu_ps(x + n * C + k), w0, a0[n]);
            a1[n] = _mm256_fmadd_ps(_mm256_loadu_ps(x + n * C + k + 8), w1, a1[n]);
            a2[n] = _mm256_fmadd_ps(_mm256_loadu_ps(x + n * C + k + 16), w2, a2[n]);
            a3[n] = _mm256_fmadd_ps(_mm256_loadu_ps(x + n * C + k + 24), w3, a3[n]);
        }
    }
    for (; k + 8 <= C; k += 8) {
        const __m256 w0 = bf16x8(wr + k);
        for (int n = 0; n < NN; n++) a0[n] = _mm256_fmadd_ps(_mm256_loadu_ps(x + n * C + k), w0, a0[n]);
    }
    for (int n = 0; n < NN; n++) {
        float s = hsum8(_mm256_add_ps(_mm256_add_ps(a0[n], a1[n]), _mm256_add_ps(a2[n], a3[n])));
        for (int64_t j = k; j < C; j++) s = fmaf(x[n * C + j], ds_bf16_to_f32(wr[j]), s);
        res[n] = s;
    }
}
#endif

void ds_gemv_bf16w_forward(float *out, const float *inp, const ds_fp8w *w, const float *bias, int64_t N, int64_t C,
                           int64_t OC) {
    if (N <= 0 || OC <= 0) return;
    if (N > DS_GEMV_MAX_ROWS) {
        ds_linear_bf16w_forward(out, inp, w, bias, N, C, OC);
        return;
    }
    const uint16_t *wb = w->b16;
    const int nt = ds_par_threads((double)OC * C * 2, DS_PAR_MIN_BYTES);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t o = 0; o < OC; o++) {
        const uint16_t *wr = wb + o * C;
        float acc[DS_GEMV_MAX_ROWS] = {0};
#ifdef __AVX2__
        switch (N) {
        case 1: row_bf16(acc, inp, C, wr, 1); break;
        case 2: row_bf16(acc, inp, C, wr, 2); break;
        case 3: row_bf16(acc, inp, C, wr, 3); break;
        default: row_bf16(acc, inp, C, wr, 4); break;
        }
#else
        for (int64_t k = 0; k < C; k++) {
            const float wv = ds_bf16_to_f32(wr[k]);
            for (int64_t n = 0; n < N; n++) acc[n] = fmaf(inp[n * C + k], wv, acc[n]);
        }
#endif
        const float b = bias ? bias[o] : 0.0f;
        for (int64_t n = 0; n < N; n++) out[n * OC + o] = acc[n] + b;
    }
}
