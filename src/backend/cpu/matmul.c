/*
 * matmul.c — FP32 linear layer forward: out (N, OC) = inp (N, C) · weight (OC, C)ᵀ + bias.
 * Fast path: OpenBLAS sgemm, threaded by us: the product is cut into one
 * slab per OpenMP thread (along the larger of N and OC)
 * and each thread runs a single-threaded sgemm on its slab.  OpenBLAS's own
 * thread pool is kept at one thread, because two pools that spin-wait on the
 * same cores (OpenMP for the other ops, pthreads inside OpenBLAS) halve the
 * speed on a busy machine.  Fallback (NO_BLAS=1 builds, and tested always):
 * a register-blocked AVX2/FMA kernel (4 rows x 8-wide dot products),
 * OpenMP over row blocks.  Reference: plain triple loop with a double
 * accumulator.
 */
#include "backend/cpu/kernels.h"

#include "backend/cpu/par.h"
#include "base/base.h"

#include <stddef.h>
#ifdef DS_HAVE_OPENBLAS
#include <cblas.h>
void openblas_set_num_threads(int);
int openblas_get_num_threads(void);
#endif
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

void ds_matmul_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
                           int64_t N, int64_t C, int64_t OC) {
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < OC; o++) {
            double acc = bias ? bias[o] : 0.0;
            const float *x = inp + n * C, *w = weight + o * C;
            for (int64_t c = 0; c < C; c++) acc += (double)x[c] * (double)w[c];
            out[n * OC + o] = (float)acc;
        }
}

#if defined(__AVX2__) && defined(__FMA__)
static inline float hsum8(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_hadd_ps(lo, lo);
    lo = _mm_hadd_ps(lo, lo);
    return _mm_cvtss_f32(lo);
}
#endif

/* Dot products of up to 4 input rows with 4 weight rows at a time; C is
 * walked in one pass so each loaded weight vector is used by 4 rows. */
void ds_matmul_forward_blocked(float *out, const float *inp, const float *weight, const float *bias,
                               int64_t N, int64_t C, int64_t OC) {
    const int64_t RB = 4, OB = 4;
    int64_t nrb = (N + RB - 1) / RB;
#pragma omp parallel for schedule(dynamic, 1) collapse(2)
    for (int64_t rb = 0; rb < nrb; rb++) {
        for (int64_t ob = 0; ob < (OC + OB - 1) / OB; ob++) {
            int64_t n0 = rb * RB, o0 = ob * OB;
            int64_t nr = N - n0 < RB ? N - n0 : RB, no = OC - o0 < OB ? OC - o0 : OB;
            float acc[4][4] = {{0}};
            int64_t c = 0;
#if defined(__AVX2__) && defined(__FMA__)
            if (nr == RB && no == OB) {
                __m256 a[4][4];
                for (int i = 0; i < 4; i++)
                    for (int j = 0; j < 4; j++) a[i][j] = _mm256_setzero_ps();
                for (; c + 8 <= C; c += 8) {
                    __m256 w0 = _mm256_loadu_ps(weight + (o0 + 0) * C + c);
                    __m256 w1 = _mm256_loadu_ps(weight + (o0 + 1) * C + c);
                    __m256 w2 = _mm256_loadu_ps(weight + (o0 + 2) * C + c);
                    __m256 w3 = _mm256_loadu_ps(weight + (o0 + 3) * C + c);
                    for (int i = 0; i < 4; i++) {
                        __m256 x = _mm256_loadu_ps(inp + (n0 + i) * C + c);
                        a[i][0] = _mm256_fmadd_ps(x, w0, a[i][0]);
                        a[i][1] = _mm256_fmadd_ps(x, w1, a[i][1]);
                        a[i][2] = _mm256_fmadd_ps(x, w2, a[i][2]);
                        a[i][3] = _mm256_fmadd_ps(x, w3, a[i][3]);
                    }
                }
                for (int i = 0; i < 4; i++)
                    for (int j = 0; j < 4; j++) acc[i][j] = hsum8(a[i][j]);
            }
#endif
            for (int64_t i = 0; i < nr; i++)
                for (int64_t j = 0; j < no; j++) {
                    const float *x = inp + (n0 + i) * C, *w = weight + (o0 + j) * C;
                    float s = acc[i][j];
                    for (int64_t cc = c; cc < C; cc++) s += x[cc] * w[cc];
                    out[(n0 + i) * OC + o0 + j] = s + (bias ? bias[o0 + j] : 0.0f);
                }
        }
    }
}

int ds_matmul_uses_blas(void) {
#ifdef DS_HAVE_OPENBLAS
    return 1;
#else
    return 0;
#endif
}

#ifdef DS_HAVE_OPENBLAS
/* rows [a, a+n) of out (by_rows) or its columns [a, a+n) */
static void forward_slab(float *out, const float *inp, const float *weight, const float *bias, int64_t N, int64_t C,
                         int64_t OC, int by_rows, int64_t a, int64_t n) {
    if (by_rows)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)OC, (int)C, 1.0f, inp + a * C, (int)C,
                    weight, (int)C, 0.0f, out + a * OC, (int)OC);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)n, (int)C, 1.0f, inp, (int)C,
                    weight + a * C, (int)C, 0.0f, out + a, (int)OC);
    if (bias) {
        int64_t r0 = by_rows ? a : 0, r1 = by_rows ? a + n : N, c0 = by_rows ? 0 : a, c1 = by_rows ? OC : a + n;
        for (int64_t r = r0; r < r1; r++)
            for (int64_t o = c0; o < c1; o++) out[r * OC + o] += bias[o];
    }
}
#endif

void ds_matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                       int64_t N, int64_t C, int64_t OC) {
    if (N <= 0 || OC <= 0) return;
#ifdef DS_HAVE_OPENBLAS
    if (C <= 0) {
        for (int64_t n = 0; n < N; n++)
            for (int64_t o = 0; o < OC; o++) out[n * OC + o] = bias ? bias[o] : 0.0f;
        return;
    }
    /* cblas takes int sizes */
    DS_ASSERT(N <= INT32_MAX && C <= INT32_MAX && OC <= INT32_MAX);
    if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
    const int nt = ds_par_threads_top(2.0 * N * C * OC, DS_PAR_MIN_FLOPS);
    /* output columns (the weight rows) when OC >= N, else the input rows */
    int by_rows;
    const int64_t step = ds_par_slab(N, OC, nt, &by_rows), len = by_rows ? N : OC;
    int64_t nslab = (len + step - 1) / step;
    /* one slab (an expert's GEMM in the MoE loop): no nested region to set up */
    if (nslab == 1) {
        forward_slab(out, inp, weight, bias, N, C, OC, by_rows, 0, len);
        return;
    }
#pragma omp parallel for schedule(static, 1) num_threads(nt)
    for (int64_t s = 0; s < nslab; s++) {
        int64_t a = s * step, n = len - a < step ? len - a : step;
        forward_slab(out, inp, weight, bias, N, C, OC, by_rows, a, n);
    }
#else
    ds_matmul_forward_blocked(out, inp, weight, bias, N, C, OC);
#endif
}
