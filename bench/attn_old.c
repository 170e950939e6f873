/*
 * attn_old.c — the attention kernels dsv3 had before the GEMM form (per-row
 * forward with a 1x64 dot-product kernel and libm expf; per-pair backward),
 * kept only so bench/kernels.c can time old and new alternately in one
 * process.  Not part of the library.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

enum { QB = 32, KB = 64 }; /* KB = 64: eight 8-wide accumulators in the AVX2 path */

void old_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                          int64_t B, int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale) {
    int64_t nqb = (T + QB - 1) / QB;
    int64_t ntask = B * NH * nqb;
#pragma omp parallel
    {
        /* per-thread scratch, allocated once per call (not per block) */
        float *acc = ds_malloc((size_t)QB * DV * sizeof(float));
        float *kt = ds_calloc((size_t)DQ * KB, sizeof(float)); /* key block transposed: (DQ, KB) */
        float *qs = ds_malloc((size_t)DQ * sizeof(float));
        float s[KB], m[QB], l[QB];
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < ntask; task++) {
            /* largest query blocks first for load balance */
            int64_t qb = nqb - 1 - task % nqb, bh = task / nqb;
            int64_t b = bh / NH, h = bh % NH;
            int64_t t0 = qb * QB, nq = T - t0 < QB ? T - t0 : QB;
            for (int64_t i = 0; i < nq; i++) {
                m[i] = -INFINITY;
                l[i] = 0;
                for (int64_t c = 0; c < DV; c++) acc[i * DV + c] = 0;
            }
            int64_t kend = t0 + nq; /* keys 0 .. kend-1 */
            for (int64_t j0 = 0; j0 < kend; j0 += KB) {
                int64_t nk = kend - j0 < KB ? kend - j0 : KB;
                for (int64_t jj = 0; jj < nk; jj++) {
                    const float *kj = k + ((b * T + j0 + jj) * NH + h) * DQ;
                    for (int64_t c = 0; c < DQ; c++) kt[c * KB + jj] = kj[c];
                }
                for (int64_t i = 0; i < nq; i++) {
                    int64_t t = t0 + i;
                    if (j0 > t) continue; /* no key of this block is visible to query t */
                    const float *qt = q + ((b * T + t) * NH + h) * DQ;
                    int64_t nv = t - j0 + 1 < nk ? t - j0 + 1 : nk; /* causal: keys j0 .. t */
                    for (int64_t c = 0; c < DQ; c++) qs[c] = qt[c];
                    /* s[j] = Σ_c q[c]·k[j][c]: broadcast q[c], FMA across the key block */
#if defined(__AVX2__) && defined(__FMA__)
                    {
                        __m256 r0 = _mm256_setzero_ps(), r1 = r0, r2 = r0, r3 = r0, r4 = r0, r5 = r0, r6 = r0,
                               r7 = r0;
                        for (int64_t c = 0; c < DQ; c++) {
                            const __m256 qc = _mm256_broadcast_ss(qs + c);
                            const float *kr = kt + c * KB;
                            r0 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(kr + 0), r0);
                            r1 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(kr + 8), r1);
                            r2 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(kr + 16), r2);
                            r3 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(kr + 24), r3);
                            r4 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(kr + 32), r4);
                            r5 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(kr + 40), r5);
                            r6 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(kr + 48), r6);
                            r7 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(kr + 56), r7);
                        }
                        _mm256_storeu_ps(s + 0, r0);
                        _mm256_storeu_ps(s + 8, r1);
                        _mm256_storeu_ps(s + 16, r2);
                        _mm256_storeu_ps(s + 24, r3);
                        _mm256_storeu_ps(s + 32, r4);
                        _mm256_storeu_ps(s + 40, r5);
                        _mm256_storeu_ps(s + 48, r6);
                        _mm256_storeu_ps(s + 56, r7);
                    }
#else
                    for (int64_t jj = 0; jj < KB; jj++) s[jj] = 0;
                    for (int64_t c = 0; c < DQ; c++) {
                        const float qc = qs[c], *kr = kt + c * KB;
#pragma omp simd
                        for (int64_t jj = 0; jj < KB; jj++) s[jj] += qc * kr[jj];
                    }
#endif
                    float bmax = -INFINITY;
                    for (int64_t jj = 0; jj < nv; jj++) {
                        s[jj] *= scale;
                        bmax = s[jj] > bmax ? s[jj] : bmax;
                    }
                    float mnew = m[i] > bmax ? m[i] : bmax;
                    float corr = expf(m[i] - mnew); /* 0 when m[i] = -inf */
                    float *ai = acc + i * DV;
                    l[i] *= corr;
#pragma omp simd
                    for (int64_t c = 0; c < DV; c++) ai[c] *= corr;
                    for (int64_t jj = 0; jj < nv; jj++) {
                        float p = expf(s[jj] - mnew);
                        l[i] += p;
                        const float *vj = v + ((b * T + j0 + jj) * NH + h) * DV;
#pragma omp simd
                        for (int64_t c = 0; c < DV; c++) ai[c] += p * vj[c];
                    }
                    m[i] = mnew;
                }
            }
            for (int64_t i = 0; i < nq; i++) {
                int64_t t = t0 + i;
                float inv = 1.0f / l[i];
                float *o = out + ((b * T + t) * NH + h) * DV;
                for (int64_t c = 0; c < DV; c++) o[c] = acc[i * DV + c] * inv;
                if (lse) lse[(b * NH + h) * T + t] = m[i] + logf(l[i]);
            }
        }
        free(acc);
        free(kt);
        free(qs);
    }
}

void old_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                           const float *q, const float *k, const float *v, int64_t B, int64_t T, int64_t NH,
                           int64_t DQ, int64_t DV, float scale) {
    const int64_t sq = NH * DQ, sv = NH * DV; /* stride between positions */
#pragma omp parallel for schedule(dynamic, 1) collapse(2) if (B * NH * T * T * (DQ + DV) > 200000)
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < NH; h++) {
            const int64_t bq = b * T * sq + h * DQ, bv = b * T * sv + h * DV;
            for (int64_t j = 0; j < T; j++) {
                memset(dk + bq + j * sq, 0, (size_t)DQ * sizeof(float));
                memset(dv + bv + j * sv, 0, (size_t)DV * sizeof(float));
            }
            for (int64_t i = 0; i < T; i++) {
                const float *qi = q + bq + i * sq, *doi = dout + bv + i * sv, *oi = out + bv + i * sv;
                float *dqi = dq + bq + i * sq;
                float L = lse[(b * NH + h) * T + i], delta = 0;
#pragma omp simd reduction(+ : delta)
                for (int64_t d = 0; d < DV; d++) delta += doi[d] * oi[d];
                for (int64_t d = 0; d < DQ; d++) dqi[d] = 0;
                for (int64_t j = 0; j <= i; j++) {
                    const float *kj = k + bq + j * sq, *vj = v + bv + j * sv;
                    float s = 0, dp = 0;
#pragma omp simd reduction(+ : s)
                    for (int64_t d = 0; d < DQ; d++) s += qi[d] * kj[d];
#pragma omp simd reduction(+ : dp)
                    for (int64_t d = 0; d < DV; d++) dp += doi[d] * vj[d];
                    float p = expf(scale * s - L), gs = scale * p * (dp - delta);
                    float *dvj = dv + bv + j * sv, *dkj = dk + bq + j * sq;
                    for (int64_t d = 0; d < DV; d++) dvj[d] += p * doi[d];
                    for (int64_t d = 0; d < DQ; d++) {
                        dqi[d] += gs * kj[d];
                        dkj[d] += gs * qi[d];
                    }
                }
            }
        }
}
