/*
 * moe_route.c — the DeepSeekMoE router (doc §5.2) and the counting sort of
 * token-slots by expert used to run each expert on contiguous rows.
 *
 * Per token (FP32 throughout, as HF):
 *   s  = sigmoid(logits)  or softmax(logits)          unbiased affinities
 *   sb = s + e_score_correction_bias                   selection only
 *   group limit (G > 1): group score = sum of top-2 sb (noaux_tc) or max
 *     (group_limited_greedy); keep the Gk best groups, others -> -inf
 *   idx = top-K of sb;  w = s[idx];  w /= Σw + 1e-20 if norm_topk;  w *= scaling
 * The K (idx, w) pairs are returned sorted by expert id (the order of HF's
 * topk(sorted=False) is unspecified; the sum over experts does not depend on it
 * beyond rounding).
 */
#include "backend/cpu/kernels.h"
#include "backend/cpu/route_select.h"
#include "backend/cpu/vmath.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

/* One token.  sel (E) scratch; work done in `double` when dbl (reference). */
static void route_one(float *w, int32_t *idx, float *s, const float *logit, const float *bias,
                      const ds_route_params *p, float *sel, float *gs, int dbl) {
    const int64_t E = p->E, K = p->K;
    if (p->sigmoid) {
        if (dbl)
            for (int64_t e = 0; e < E; e++) s[e] = (float)(1.0 / (1.0 + exp(-(double)logit[e])));
        else
            ds_vsigmoid(s, logit, E); /* vmath.h */
    } else {
        float mx = -INFINITY;
        for (int64_t e = 0; e < E; e++) mx = logit[e] > mx ? logit[e] : mx;
        if (dbl) {
            double sum = 0;
            for (int64_t e = 0; e < E; e++) sum += exp((double)logit[e] - mx);
            for (int64_t e = 0; e < E; e++) s[e] = (float)(exp((double)logit[e] - mx) / sum);
        } else {
            float sum = ds_vexp_sum(s, logit, mx, E);
            float inv = 1.0f / sum;
            for (int64_t e = 0; e < E; e++) s[e] *= inv;
        }
    }
    for (int64_t e = 0; e < E; e++) sel[e] = s[e] + (bias ? bias[e] : 0.0f);
    ds_route_select(idx, sel, gs, p);
    if (dbl) {
        double sum = 0;
        for (int64_t k = 0; k < K; k++) sum += s[idx[k]];
        for (int64_t k = 0; k < K; k++) {
            double x = s[idx[k]];
            if (p->norm_topk) x /= sum + 1e-20;
            w[k] = (float)(x * p->scaling);
        }
    } else {
        float sum = 0;
        for (int64_t k = 0; k < K; k++) sum += s[idx[k]];
        for (int64_t k = 0; k < K; k++) {
            float x = s[idx[k]];
            if (p->norm_topk) x /= sum + 1e-20f;
            w[k] = x * p->scaling;
        }
    }
}

void ds_moe_route_forward_ref(float *weights, int32_t *idx, float *scores, const float *logits,
                              const float *bias, const ds_route_params *p, int64_t N) {
    float *sel = ds_malloc((size_t)p->E * sizeof(float));
    float *gs = ds_malloc((size_t)(p->G > 0 ? p->G : 1) * sizeof(float));
    for (int64_t n = 0; n < N; n++)
        route_one(weights + n * p->K, idx + n * p->K, scores + n * p->E, logits + n * p->E, bias, p, sel, gs, 1);
    free(sel);
    free(gs);
}

void ds_moe_route_forward(float *weights, int32_t *idx, float *scores, const float *logits,
                          const float *bias, const ds_route_params *p, int64_t N) {
#pragma omp parallel if (N * p->E > 8192)
    {
        float *sel = ds_malloc((size_t)p->E * sizeof(float));
        float *gs = ds_malloc((size_t)(p->G > 0 ? p->G : 1) * sizeof(float));
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++)
            route_one(weights + n * p->K, idx + n * p->K, scores + n * p->E, logits + n * p->E, bias, p, sel,
                      gs, 0);
        free(sel);
        free(gs);
    }
}

void ds_moe_sort(int64_t *counts, int64_t *offsets, int32_t *order, int32_t *pos,
                 const int32_t *idx, int64_t N, int64_t K, int64_t E) {
    memset(counts, 0, (size_t)E * sizeof(int64_t));
    for (int64_t i = 0; i < N * K; i++) counts[idx[i]]++;
    offsets[0] = 0;
    for (int64_t e = 0; e < E; e++) offsets[e + 1] = offsets[e] + counts[e];
    /* stable placement: slot ids ascending within each expert; offsets[e]
     * serves as the fill pointer and is shifted back afterwards */
    for (int64_t i = 0; i < N * K; i++) {
        int64_t at = offsets[idx[i]]++;
        order[at] = (int32_t)i;
        pos[i] = (int32_t)at;
    }
    for (int64_t e = E; e > 0; e--) offsets[e] = offsets[e - 1];
    offsets[0] = 0;
}
