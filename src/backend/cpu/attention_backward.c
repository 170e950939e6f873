/*
 * attention_backward.c — backward of causal softmax attention (attention.c).
 * The probabilities are recomputed from q, k and the saved log-sum-exp:
 *   P_ij = exp(scale·q_i·k_j − lse_i)   (j ≤ i)
 *   dv_j = Σ_i P_ij dout_i
 *   dS_ij = P_ij (dout_i·v_j − Δ_i),  Δ_i = dout_i·out_i (= Σ_j P_ij dout_i·v_j)
 *   dq_i = scale Σ_j dS_ij k_j,  dk_j = scale Σ_i dS_ij q_i
 * Reference: plain loops with double accumulators.  Fast: OpenMP over
 * (batch, head) — dk and dv of one head are only touched by its own thread —
 * one pass over the (i, j ≤ i) pairs, no scratch memory; the dot products
 * are SIMD reductions (`omp simd`: vectorised partial sums).
 */
#include "backend/cpu/backward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

void ds_attention_backward_ref(float *dq, float *dk, float *dv, const float *dout, const float *out,
                               const float *lse, const float *q, const float *k, const float *v, int64_t B,
                               int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale) {
    memset(dk, 0, (size_t)(B * T * NH * DQ) * sizeof(float));
    memset(dv, 0, (size_t)(B * T * NH * DV) * sizeof(float));
    double *P = ds_malloc((size_t)T * sizeof(double));
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < NH; h++)
            for (int64_t i = 0; i < T; i++) {
                const float *qi = q + ((b * T + i) * NH + h) * DQ;
                const float *doi = dout + ((b * T + i) * NH + h) * DV, *oi = out + ((b * T + i) * NH + h) * DV;
                double L = lse[(b * NH + h) * T + i], delta = 0;
                for (int64_t d = 0; d < DV; d++) delta += (double)doi[d] * oi[d];
                double dqi[1024];
                DS_ASSERT(DQ <= 1024);
                for (int64_t d = 0; d < DQ; d++) dqi[d] = 0;
                for (int64_t j = 0; j <= i; j++) {
                    const float *kj = k + ((b * T + j) * NH + h) * DQ, *vj = v + ((b * T + j) * NH + h) * DV;
                    double s = 0, dp = 0;
                    for (int64_t d = 0; d < DQ; d++) s += (double)qi[d] * kj[d];
                    P[j] = exp(scale * s - L);
                    for (int64_t d = 0; d < DV; d++) dp += (double)doi[d] * vj[d];
                    double ds = P[j] * (dp - delta);
                    float *dkj = dk + ((b * T + j) * NH + h) * DQ, *dvj = dv + ((b * T + j) * NH + h) * DV;
                    for (int64_t d = 0; d < DV; d++) dvj[d] += (float)(P[j] * doi[d]);
                    for (int64_t d = 0; d < DQ; d++) {
                        dqi[d] += scale * ds * kj[d];
                        dkj[d] += (float)(scale * ds * qi[d]);
                    }
                }
                for (int64_t d = 0; d < DQ; d++) dq[((b * T + i) * NH + h) * DQ + d] = (float)dqi[d];
            }
    free(P);
}

void ds_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
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
