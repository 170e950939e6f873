/*
 * attention.c — causal softmax attention (doc §4.2):
 *   S = q·kᵀ·scale (key j ≤ query t), P = softmax(S), out = P·v.
 * The fast version is flash attention's forward recurrence in GEMM form: for a
 * block of QB queries it walks key blocks of KB, S = Q·Kᵀ on the tile GEMM
 * (tile_gemm.h), the online softmax per row (running max m and sum l, the
 * vector exp of vmath.h), acc = acc·e^{m_old − m_new} + P·V on the tile
 * GEMM; memory is O(QB·KB) per thread and no (T, T) matrix exists.
 * lse = m + log l is saved for the backward pass.  OpenMP over (batch, head,
 * query block), largest blocks first.
 */
#include "backend/cpu/kernels.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

#include "backend/cpu/tile_gemm.h"
#include "backend/cpu/vmath.h"
#include "backend/cpu/vmath_simd.h"

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

enum { QB = 64, KB = 64 };

void ds_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                          int64_t B, int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale) {
    if (B <= 0 || T <= 0 || NH <= 0) return;
    const int64_t sq = NH * DQ, sv = NH * DV; /* stride between positions */
    const int64_t nqb = (T + QB - 1) / QB, ntask = B * NH * nqb;
    /* a thread per task only when the work pays for the fork */
#pragma omp parallel if ((double)B * NH * T * T * (DQ + DV) > 400000.0)
    {
        /* per-thread scratch, allocated once per call (not per block) */
        float *acc = ds_malloc((size_t)QB * DV * sizeof(float));
        /* the keys of one (batch, head) transposed, (DQ, ldk): kept across this
         * thread's tasks while they stay on that head, extended as needed */
        const int64_t ldk = (T + 15) / 16 * 16 + 16; /* not a power of two: no cache-set conflicts */
        float *kt = ds_malloc((size_t)(DQ * ldk) * sizeof(float));
        int64_t kt_bh = -1, kt_have = 0;
        float *S = ds_malloc((size_t)QB * KB * sizeof(float));  /* scores, then probabilities */
        float m[QB], l[QB];
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < ntask; task++) {
            int64_t qb = nqb - 1 - task % nqb, bh = task / nqb;
            int64_t b = bh / NH, h = bh % NH;
            int64_t t0 = qb * QB, nq = T - t0 < QB ? T - t0 : QB;
            const float *qblk = q + (b * T + t0) * sq + h * DQ;
            for (int64_t i = 0; i < nq; i++) m[i] = -INFINITY, l[i] = 0;
            memset(acc, 0, (size_t)(nq * DV) * sizeof(float));
            int64_t kend = t0 + nq; /* keys 0 .. kend-1 */
            if (kt_bh != bh) kt_bh = bh, kt_have = 0;
            for (; kt_have < kend; kt_have += 16) { /* 16 keys at a time: whole lines written */
                const float *kj = k + (b * T + kt_have) * sq + h * DQ;
                int64_t nj = T - kt_have < 16 ? T - kt_have : 16;
                for (int64_t c = 0; c < DQ; c++)
                    #pragma omp simd
                    for (int64_t jj = 0; jj < nj; jj++) kt[c * ldk + kt_have + jj] = kj[jj * sq + c];
            }
            for (int64_t j0 = 0; j0 < kend; j0 += KB) {
                int64_t nk = kend - j0 < KB ? kend - j0 : KB;
                ds_tile_gemm(S, KB, qblk, sq, 1, kt + j0, ldk, nq, nk, DQ, 0);
                for (int64_t i = 0; i < nq; i++) {
                    float *si = S + i * KB;
                    int64_t nv = t0 + i - j0 + 1; /* causal: keys j0 .. t0+i */
                    nv = nv < 0 ? 0 : nv > nk ? nk : nv;
                    #pragma omp simd
                    for (int64_t jj = 0; jj < nv; jj++) si[jj] *= scale;
                    for (int64_t jj = nv; jj < nk; jj++) si[jj] = 0.0f;
                    if (nv == 0) continue;
                    float bmax = ds_vmax(si, nv);
                    float mnew = m[i] > bmax ? m[i] : bmax;
                    float corr = ds_exp_s(m[i] - mnew); /* 0 when m[i] = -inf */
                    l[i] = l[i] * corr + ds_vexp_sum(si, si, mnew, nv);
                    m[i] = mnew;
                    if (corr != 1.0f) {
                        float *ai = acc + i * DV;
                        #pragma omp simd
                        for (int64_t c = 0; c < DV; c++) ai[c] *= corr;
                    }
                }
                ds_tile_gemm(acc, DV, S, KB, 1, v + (b * T + j0) * sv + h * DV, sv, nq, DV, nk, 1);
            }
            for (int64_t i = 0; i < nq; i++) {
                int64_t t = t0 + i;
                float inv = 1.0f / l[i];
                float *o = out + (b * T + t) * sv + h * DV;
                #pragma omp simd
                for (int64_t c = 0; c < DV; c++) o[c] = acc[i * DV + c] * inv;
                if (lse) lse[(b * NH + h) * T + t] = m[i] + ds_log_s(l[i]);
            }
        }
        free(acc);
        free(kt);
        free(S);
    }
}
