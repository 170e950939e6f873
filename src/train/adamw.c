/*
 * adamw.c — AdamW step, gradient clipping, learning-rate schedule.
 */
#include "train/adamw.h"

#include <math.h>

#include "num/dtype.h"

ds_adamw_hparams ds_adamw_default(double lr) {
    return (ds_adamw_hparams){lr, 0.9, 0.95, 1e-8, 0.1};
}

void ds_adamw_step(float *p, const float *g, float *m, float *v, uint16_t *m16, uint16_t *v16,
                   int64_t n, int decay, int64_t t, const ds_adamw_hparams *h) {
    /* scalars rounded to float once, as torch's CPU kernels see them */
    const float lr = (float)h->lr, b1 = (float)h->beta1, b2 = (float)h->beta2;
    const float one_m_b1 = (float)(1.0 - h->beta1), one_m_b2 = (float)(1.0 - h->beta2);
    const float wd_mul = decay ? (float)(1.0 - h->lr * h->weight_decay) : 1.0f;
    const double bc1 = 1.0 - pow(h->beta1, (double)t), bc2 = 1.0 - pow(h->beta2, (double)t);
    const float step_size = (float)(h->lr / bc1), bc2_sqrt = (float)sqrt(bc2), eps = (float)h->eps;
    (void)lr; (void)b1;
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i];
        float mi = m ? m[i] : ds_bf16_to_f32(m16[i]);
        float vi = v ? v[i] : ds_bf16_to_f32(v16[i]);
        float pi = p[i] * wd_mul;
        mi = mi + one_m_b1 * (gi - mi);
        vi = vi * b2 + one_m_b2 * gi * gi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        pi = pi - step_size * (mi / denom);
        p[i] = pi;
        if (m) { m[i] = mi; v[i] = vi; }
        else { m16[i] = ds_f32_to_bf16(mi); v16[i] = ds_f32_to_bf16(vi); }
    }
}

double ds_grad_norm(const float *g, int64_t n) {
    double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static)
    for (int64_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return sqrt(s);
}

double ds_clip_grad_norm(float *g, int64_t n, double max_norm) {
    double norm = ds_grad_norm(g, n);
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) {
        float c = (float)coef;
#pragma omp parallel for simd schedule(static)
        for (int64_t i = 0; i < n; i++) g[i] *= c;
    }
    return norm;
}

double ds_lr_at(const ds_lr_schedule *s, int64_t step) {
    if (step < s->warmup) return s->peak * (double)(step + 1) / (double)s->warmup;
    if (step < s->stable_end) return s->peak;
    if (step < s->decay_end) {
        double x = (double)(step - s->stable_end) / (double)(s->decay_end - s->stable_end);
        return s->min_lr + 0.5 * (s->peak - s->min_lr) * (1.0 + cos(M_PI * x));
    }
    if (step < s->final_start) return s->min_lr;
    return s->final_lr;
}
