/*
 * moe_backward.c — backward of the MoE router weights (moe_route.c) and of
 * the combine / gather steps of the MoE layer (model.c).
 *
 * Router (doc §5.2): s = σ(z) or softmax(z) over the E experts (unbiased);
 * the K chosen experts idx get w_k = c·s_{idx_k} / S, S = Σ_k s_{idx_k} + 1e-20
 * with norm_topk (S = 1 without), c = routed_scaling_factor.
 *   ds_{idx_j} = c·(dw_j / S − Σ_k dw_k s_{idx_k} / S²)   (norm_topk)
 *              = c·dw_j                                   (otherwise)
 *   dz = ds ⊙ s ⊙ (1 − s)                   (sigmoid)
 *   dz_i = s_i (ds_i − Σ_j ds_j s_j)        (softmax)
 * The biased scores used for the selection carry no gradient.
 */
#include "backend/cpu/backward.h"

#include <math.h>
#include <string.h>

#include "base/base.h"

void ds_moe_route_backward_ref(float *dlogits, const float *dw, const float *dscores, const float *scores,
                               const int32_t *idx, const ds_route_params *p, int64_t N) {
    const int64_t E = p->E, K = p->K;
    double ds[1024];
    DS_ASSERT(E <= 1024);
    for (int64_t n = 0; n < N; n++) {
        const float *s = scores + n * E;
        for (int64_t i = 0; i < E; i++) ds[i] = dscores ? dscores[n * E + i] : 0.0;
        if (p->norm_topk) {
            double S = 1e-20, ws = 0;
            for (int64_t k = 0; k < K; k++) S += s[idx[n * K + k]];
            for (int64_t k = 0; k < K; k++) ws += (double)dw[n * K + k] * s[idx[n * K + k]];
            for (int64_t k = 0; k < K; k++) ds[idx[n * K + k]] += p->scaling * (dw[n * K + k] / S - ws / (S * S));
        } else {
            for (int64_t k = 0; k < K; k++) ds[idx[n * K + k]] += (double)p->scaling * dw[n * K + k];
        }
        if (p->sigmoid) {
            for (int64_t i = 0; i < E; i++) dlogits[n * E + i] = (float)(ds[i] * s[i] * (1.0 - s[i]));
        } else {
            double dot = 0;
            for (int64_t i = 0; i < E; i++) dot += ds[i] * s[i];
            for (int64_t i = 0; i < E; i++) dlogits[n * E + i] = (float)(s[i] * (ds[i] - dot));
        }
    }
}

void ds_moe_route_backward(float *dlogits, const float *dw, const float *dscores, const float *scores,
                           const int32_t *idx, const ds_route_params *p, int64_t N) {
    const int64_t E = p->E, K = p->K;
    DS_ASSERT(E <= 1024);
#pragma omp parallel for schedule(static) if (N * E > 65536)
    for (int64_t n = 0; n < N; n++) {
        const float *s = scores + n * E;
        float ds[1024];
        for (int64_t i = 0; i < E; i++) ds[i] = dscores ? dscores[n * E + i] : 0.0f;
        if (p->norm_topk) {
            float S = 1e-20f, ws = 0;
            for (int64_t k = 0; k < K; k++) S += s[idx[n * K + k]];
            for (int64_t k = 0; k < K; k++) ws += dw[n * K + k] * s[idx[n * K + k]];
            float inv = 1.0f / S, t = ws * inv * inv;
            for (int64_t k = 0; k < K; k++) ds[idx[n * K + k]] += p->scaling * (dw[n * K + k] * inv - t);
        } else {
            for (int64_t k = 0; k < K; k++) ds[idx[n * K + k]] += p->scaling * dw[n * K + k];
        }
        float *dz = dlogits + n * E;
        if (p->sigmoid) {
            for (int64_t i = 0; i < E; i++) dz[i] = ds[i] * s[i] * (1.0f - s[i]);
        } else {
            float dot = 0;
            for (int64_t i = 0; i < E; i++) dot += ds[i] * s[i];
            for (int64_t i = 0; i < E; i++) dz[i] = s[i] * (ds[i] - dot);
        }
    }
}

void ds_moe_combine_backward_ref(float *de_out, float *dw, const float *dy, const float *e_out, const float *w,
                                 const int32_t *pos, int64_t N, int64_t K, int64_t H) {
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++) {
            int64_t s = pos[n * K + k];
            double dot = 0;
            for (int64_t i = 0; i < H; i++) {
                dot += (double)dy[n * H + i] * e_out[s * H + i];
                de_out[s * H + i] = w[n * K + k] * dy[n * H + i];
            }
            dw[n * K + k] = (float)dot;
        }
}

void ds_moe_combine_backward(float *de_out, float *dw, const float *dy, const float *e_out, const float *w,
                             const int32_t *pos, int64_t N, int64_t K, int64_t H) {
#pragma omp parallel for schedule(static) if (N * K * H > 65536)
    for (int64_t n = 0; n < N; n++) {
        const float *g = dy + n * H;
        for (int64_t k = 0; k < K; k++) {
            int64_t s = pos[n * K + k];
            const float *eo = e_out + s * H;
            float *de = de_out + s * H, wk = w[n * K + k], dot = 0;
            for (int64_t i = 0; i < H; i++) {
                dot += g[i] * eo[i];
                de[i] = wk * g[i];
            }
            dw[n * K + k] = dot;
        }
    }
}

void ds_moe_permute_backward_ref(float *dx, const float *dxs, const int32_t *pos, int64_t N, int64_t K, int64_t H) {
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++)
            for (int64_t i = 0; i < H; i++) dx[n * H + i] += dxs[(int64_t)pos[n * K + k] * H + i];
}

void ds_moe_permute_backward(float *dx, const float *dxs, const int32_t *pos, int64_t N, int64_t K, int64_t H) {
#pragma omp parallel for schedule(static) if (N * K * H > 65536)
    for (int64_t n = 0; n < N; n++) {
        float *d = dx + n * H;
        for (int64_t k = 0; k < K; k++) {
            const float *src = dxs + (int64_t)pos[n * K + k] * H;
            for (int64_t i = 0; i < H; i++) d[i] += src[i];
        }
    }
}
