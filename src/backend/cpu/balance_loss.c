/*
 * balance_loss.c — sequence-wise and DeepSeek-V2 balance losses (balance_loss.h).
 * Small (T x E per layer and sequence): plain loops in double.
 */
#include "backend/cpu/balance_loss.h"

#include <string.h>

#include "base/base.h"

ds_balance_terms ds_balance_loss_forward(float *coef, const float *s, const uint8_t *sel, int64_t T,
                                         int64_t E, int64_t K, int64_t D, int64_t M, int normalize,
                                         double a_exp, double a_dev, double a_comm) {
    ds_balance_terms r = {0, 0, 0};
    DS_ASSERT(T > 0 && E > 0 && K > 0 && D > 0 && E % D == 0 && M > 0);
    /* called per layer and sequence inside the training step: no heap allocation
     * (E and D are small, at most a few hundred) */
    double P[E], f[E], g[D];
    memset(P, 0, sizeof P);
    memset(f, 0, sizeof f);
    memset(g, 0, sizeof g);
    int64_t per = E / D;
    for (int64_t t = 0; t < T; t++) {
        const float *st = s + t * E;
        const uint8_t *selt = sel + t * E;
        double S = 0;
        if (normalize) for (int64_t i = 0; i < E; i++) S += st[i];
        for (int64_t i = 0; i < E; i++) {
            P[i] += normalize ? st[i] / S : st[i];
            f[i] += selt[i] ? 1.0 : 0.0;
        }
        for (int64_t d = 0; d < D; d++) {
            int any = 0;
            for (int64_t i = d * per; i < (d + 1) * per; i++) any |= selt[i] != 0;
            g[d] += any;
        }
    }
    for (int64_t i = 0; i < E; i++) { P[i] /= (double)T; f[i] *= (double)E / ((double)K * T); }
    for (int64_t d = 0; d < D; d++) {
        double fd = 0, Pd = 0, gd = (double)D / ((double)M * T) * g[d];
        for (int64_t i = d * per; i < (d + 1) * per; i++) { fd += f[i]; Pd += P[i]; }
        fd /= (double)per;
        r.device += fd * Pd;
        r.comm += gd * Pd;
        for (int64_t i = d * per; i < (d + 1) * per; i++) {
            r.expert += f[i] * P[i];
            if (coef) coef[i] = (float)(a_exp * f[i] + a_dev * fd + a_comm * gd);
        }
    }
    return r;
}

void ds_balance_loss_backward(float *ds, const float *coef, const float *s, int64_t T, int64_t E,
                              int normalize, double scale) {
    const double k = scale / (double)T;
    for (int64_t t = 0; t < T; t++) {
        const float *st = s + t * E;
        float *dst = ds + t * E;
        if (!normalize) {
            for (int64_t i = 0; i < E; i++) dst[i] += (float)(k * coef[i]);
            continue;
        }
        /* d/ds_j Σ_i c_i s_i / S = c_j / S - Σ_i c_i s_i / S² */
        double S = 0, cs = 0;
        for (int64_t i = 0; i < E; i++) { S += st[i]; cs += (double)coef[i] * st[i]; }
        for (int64_t j = 0; j < E; j++) dst[j] += (float)(k * (coef[j] / S - cs / (S * S)));
    }
}

void ds_balance_loss_seq(float *ds, float *coef, uint8_t *sel, const float *s, const int32_t *idx, int64_t T,
                         int64_t E, int64_t K, int64_t D, int64_t M, int normalize, double a_exp, double a_dev,
                         double a_comm, double scale, ds_balance_terms *terms) {
    memset(sel, 0, (size_t)(T * E));
    for (int64_t i = 0; i < T; i++)
        for (int64_t k = 0; k < K; k++) sel[i * E + idx[i * K + k]] = 1;
    *terms = ds_balance_loss_forward(coef, s, sel, T, E, K, D, M, normalize, a_exp, a_dev, a_comm);
    ds_balance_loss_backward(ds, coef, s, T, E, normalize, scale);
}
