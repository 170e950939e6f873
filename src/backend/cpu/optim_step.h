/*
 * optim_step.h — the optimizer's arithmetic shared by the CPU (optim.c) and
 * the CUDA backend (backend/cuda/engine.cu), so every device runs one update:
 * AdamW's scalars and its update of one element (the CPU's reference and its
 * fast FP32 and BF16-moment loops, the CUDA kernel), and the balancing bias
 * update.  AdamW is torch.optim.AdamW's update, with the scalars rounded to float
 * once as torch's CPU kernels see them:
 *   g <- g * gscale
 *   p <- p * (1 - lr*wd)                    (decay segments only)
 *   m <- m + (1-b1) (g - m)
 *   v <- b2 v + (1-b2) g^2
 *   p <- p - (lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps)
 * (Compilers may still contract a product and a sum into an FMA differently
 * for different targets: the CPU and CUDA results agree to rounding.)
 */
#ifndef DS_CPU_OPTIM_STEP_H
#define DS_CPU_OPTIM_STEP_H

#include <math.h>
#include <stdint.h>

#include "backend/hd.h"
#include "backend/ops.h"

typedef struct {
    float gs, b2, omb1, omb2, wd_mul, step, bc2s, eps;
} ds_adamw_k;

/* the scalars of step t (from 1) for a segment with (decay 1) or without weight decay */
static inline ds_adamw_k ds_adamw_consts(const ds_adamw_hparams *h, int64_t t, float gscale, int decay) {
    const double bc1 = 1.0 - pow(h->beta1, (double)t), bc2 = 1.0 - pow(h->beta2, (double)t);
    ds_adamw_k k;
    k.gs = gscale;
    k.b2 = (float)h->beta2;
    k.omb1 = (float)(1.0 - h->beta1);
    k.omb2 = (float)(1.0 - h->beta2);
    k.wd_mul = decay ? (float)(1.0 - h->lr * h->weight_decay) : 1.0f;
    k.step = (float)(h->lr / bc1);
    k.bc2s = (float)sqrt(bc2);
    k.eps = (float)h->eps;
    return k;
}

typedef struct {
    float p, m, v;
} ds_adamw_pmv;

/* one element: the new parameter and moments from p, its gradient g and the moments m, v */
DS_HD ds_adamw_pmv ds_adamw_step(float p, float g, float m, float v, const ds_adamw_k k) {
    const float gi = g * k.gs, pi = p * k.wd_mul;
    ds_adamw_pmv r;
    r.m = m + k.omb1 * (gi - m);
    r.v = v * k.b2 + k.omb2 * gi * gi;
    const float denom = sqrtf(r.v) / k.bc2s + k.eps;
    r.p = pi - k.step * (r.m / denom);
    return r;
}

/* the auxiliary-loss-free balancing: bias[i] += gamma * sign(mean(load) - load[i])
 * over the E experts (the mean in double) */
DS_HD void ds_bias_step(float *bias, const int64_t *load, int64_t E, float gamma) {
    double mean = 0;
    for (int64_t i = 0; i < E; i++) mean += (double)load[i];
    mean /= (double)E;
    for (int64_t i = 0; i < E; i++) {
        const double d = mean - (double)load[i];
        bias[i] += d > 0 ? gamma : d < 0 ? -gamma : 0.0f;
    }
}

#endif
