/*
 * attention_backward.c — backward of causal softmax attention (attention.c).
 * The probabilities are recomputed from q, k and the saved log-sum-exp:
 *   P_ij = exp(scale·q_i·k_j − lse_i)   (j ≤ i)
 *   dv_j = Σ_i P_ij dout_i
 *   dS_ij = P_ij (dout_i·v_j − Δ_i),  Δ_i = dout_i·out_i (= Σ_j P_ij dout_i·v_j)
 *   dq_i = scale Σ_j dS_ij k_j,  dk_j = scale Σ_i dS_ij q_i
 * Reference: plain loops with double accumulators.  Fast: flash attention's
 * backward in GEMM form.  OpenMP over (batch, head) — dq, dk and dv of one
 * head are only touched by its own thread.  Per key block of KB (Kᵀ and Vᵀ
 * packed once), dK and dV accumulate in thread-local tiles over the query
 * blocks of QB that see it; per (query block, key block) five tile GEMMs
 * (tile_gemm.h): S = Q·Kᵀ, dP = dO·Vᵀ, dV += Pᵀ·dO, dK += dSᵀ·Q, dQ += dS·K,
 * with P = exp(scale·S − lse) by the vector exp (vmath.h) and
 * dS = scale·P⊙(dP − Δ) in between.
 */
#include "backend/cpu/backward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/tile_gemm.h"
#include "backend/cpu/vmath.h"
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

enum { QB = 64, KB = 64 };

void ds_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                           const float *q, const float *k, const float *v, int64_t B, int64_t T, int64_t NH,
                           int64_t DQ, int64_t DV, float scale) {
    if (B <= 0 || T <= 0 || NH <= 0) return;
    const int64_t sq = NH * DQ, sv = NH * DV; /* stride between positions */
#pragma omp parallel if ((double)B * NH * T * T * (DQ + DV) > 200000.0)
    {
        float *kt = ds_malloc((size_t)DQ * KB * sizeof(float)); /* Kᵀ block (DQ, KB) */
        float *vt = ds_malloc((size_t)DV * KB * sizeof(float)); /* Vᵀ block (DV, KB) */
        float *P = ds_malloc((size_t)QB * KB * sizeof(float));  /* (QB, KB) */
        float *dS = ds_malloc((size_t)QB * KB * sizeof(float)); /* dP, then dS */
        float *dka = ds_malloc((size_t)KB * DQ * sizeof(float));
        float *dva = ds_malloc((size_t)KB * DV * sizeof(float));
        float *delta = ds_malloc((size_t)T * sizeof(float));
#pragma omp for schedule(dynamic, 1)
        for (int64_t bh = 0; bh < B * NH; bh++) {
            const int64_t b = bh / NH, h = bh % NH;
            const int64_t bq = b * T * sq + h * DQ, bv = b * T * sv + h * DV;
            const float *L = lse + (b * NH + h) * T;
            for (int64_t i = 0; i < T; i++) {
                const float *doi = dout + bv + i * sv, *oi = out + bv + i * sv;
                float d = 0;
#pragma omp simd reduction(+ : d)
                for (int64_t c = 0; c < DV; c++) d += doi[c] * oi[c];
                delta[i] = d;
                memset(dq + bq + i * sq, 0, (size_t)DQ * sizeof(float));
            }
            for (int64_t j0 = 0; j0 < T; j0 += KB) {
                const int64_t nk = T - j0 < KB ? T - j0 : KB;
                const float *kb = k + bq + j0 * sq, *vb = v + bv + j0 * sv;
                for (int64_t jj = 0; jj < nk; jj++) {
                    for (int64_t c = 0; c < DQ; c++) kt[c * KB + jj] = kb[jj * sq + c];
                    for (int64_t c = 0; c < DV; c++) vt[c * KB + jj] = vb[jj * sv + c];
                }
                memset(dka, 0, (size_t)(nk * DQ) * sizeof(float));
                memset(dva, 0, (size_t)(nk * DV) * sizeof(float));
                /* query blocks that see a key of this block: i0 + QB > j0 */
                for (int64_t i0 = j0 / QB * QB; i0 < T; i0 += QB) {
                    const int64_t nq = T - i0 < QB ? T - i0 : QB;
                    const float *qb = q + bq + i0 * sq, *dob = dout + bv + i0 * sv;
                    ds_tile_gemm(P, KB, qb, sq, 1, kt, KB, nq, nk, DQ, 0);
                    ds_tile_gemm(dS, KB, dob, sv, 1, vt, KB, nq, nk, DV, 0);
                    for (int64_t i = 0; i < nq; i++) {
                        float *pi = P + i * KB, *di = dS + i * KB;
                        int64_t nv = i0 + i - j0 + 1; /* causal: keys j0 .. i0+i */
                        nv = nv < 0 ? 0 : nv > nk ? nk : nv;
                        const float li = L[i0 + i], de = delta[i0 + i];
                        #pragma omp simd
                        for (int64_t jj = 0; jj < nv; jj++) pi[jj] = pi[jj] * scale - li;
                        ds_vexp(pi, pi, nv);
                        #pragma omp simd
                        for (int64_t jj = 0; jj < nv; jj++) di[jj] = scale * pi[jj] * (di[jj] - de);
                        for (int64_t jj = nv; jj < nk; jj++) pi[jj] = 0.0f, di[jj] = 0.0f;
                    }
                    ds_tile_gemm(dva, DV, P, 1, KB, dob, sv, nk, DV, nq, 1);
                    ds_tile_gemm(dka, DQ, dS, 1, KB, qb, sq, nk, DQ, nq, 1);
                    ds_tile_gemm(dq + bq + i0 * sq, sq, dS, KB, 1, kb, sq, nq, DQ, nk, 1);
                }
                for (int64_t jj = 0; jj < nk; jj++) {
                    memcpy(dk + bq + (j0 + jj) * sq, dka + jj * DQ, (size_t)DQ * sizeof(float));
                    memcpy(dv + bv + (j0 + jj) * sv, dva + jj * DV, (size_t)DV * sizeof(float));
                }
            }
        }
        free(kt), free(vt), free(P), free(dS), free(dka), free(dva), free(delta);
    }
}
