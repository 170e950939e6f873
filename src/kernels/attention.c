/*
 * attention.c — causal softmax attention (doc §4.2):
 *   S = q·kᵀ·scale (key j ≤ query t), P = softmax(S), out = P·v.
 * The fast version walks key blocks with an online softmax (running max m and
 * sum l per query, as flash attention does), so memory is O(T) per head and
 * no (T, T) matrix exists.  lse = m + log l is saved for the backward pass.
 * OpenMP over (batch, head, query block).
 */
#include "kernels/kernels.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "base/base.h"

void ds_attention_forward_ref(float *out, float *lse, const float *q, const float *k, const float *v,
                              int64_t B, int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale) {
    double *s = ds_malloc((size_t)(T > 0 ? T : 1) * sizeof(double));
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < NH; h++)
            for (int64_t t = 0; t < T; t++) {
                const float *qt = q + ((b * T + t) * NH + h) * DQ;
                double mx = -INFINITY;
                for (int64_t j = 0; j <= t; j++) {
                    const float *kj = k + ((b * T + j) * NH + h) * DQ;
                    double d = 0;
                    for (int64_t c = 0; c < DQ; c++) d += (double)qt[c] * kj[c];
                    s[j] = d * scale;
                    if (s[j] > mx) mx = s[j];
                }
                double sum = 0;
                for (int64_t j = 0; j <= t; j++) sum += (s[j] = exp(s[j] - mx));
                float *o = out + ((b * T + t) * NH + h) * DV;
                for (int64_t c = 0; c < DV; c++) {
                    double a = 0;
                    for (int64_t j = 0; j <= t; j++) a += s[j] * v[((b * T + j) * NH + h) * DV + c];
                    o[c] = (float)(a / sum);
                }
                if (lse) lse[(b * NH + h) * T + t] = (float)(mx + log(sum));
            }
    free(s);
}

enum { QB = 16, KB = 64 };

void ds_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                          int64_t B, int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale) {
    int64_t nqb = (T + QB - 1) / QB;
    int64_t ntask = B * NH * nqb;
#pragma omp parallel
    {
        /* per-thread scratch, allocated once per call (not per block) */
        float *acc = ds_malloc((size_t)QB * DV * sizeof(float));
        float *s = ds_malloc((size_t)QB * KB * sizeof(float));
        float m[QB], l[QB];
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
                for (int64_t i = 0; i < nq; i++) {
                    int64_t t = t0 + i;
                    const float *qt = q + ((b * T + t) * NH + h) * DQ;
                    float *si = s + i * KB;
                    float bmax = -INFINITY;
                    for (int64_t jj = 0; jj < nk; jj++) {
                        int64_t j = j0 + jj;
                        if (j > t) { si[jj] = -INFINITY; continue; }
                        const float *kj = k + ((b * T + j) * NH + h) * DQ;
                        float d = 0;
#pragma omp simd reduction(+ : d)
                        for (int64_t c = 0; c < DQ; c++) d += qt[c] * kj[c];
                        si[jj] = d * scale;
                        if (si[jj] > bmax) bmax = si[jj];
                    }
                    if (bmax == -INFINITY) continue; /* whole block masked for this query */
                    float mnew = m[i] > bmax ? m[i] : bmax;
                    float corr = expf(m[i] - mnew); /* 0 when m[i] = -inf */
                    float *ai = acc + i * DV;
                    l[i] *= corr;
                    for (int64_t c = 0; c < DV; c++) ai[c] *= corr;
                    for (int64_t jj = 0; jj < nk; jj++) {
                        if (si[jj] == -INFINITY) continue;
                        float p = expf(si[jj] - mnew);
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
        free(s);
    }
}
