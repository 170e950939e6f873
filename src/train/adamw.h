/*
 * adamw.h — AdamW with decoupled weight decay (torch.optim.AdamW semantics),
 * global gradient-norm clipping, and the DeepSeek-V3 learning-rate schedule.
 *
 * Update for one element at step t (1-based), as torch does it:
 *   p <- p * (1 - lr*wd)                      (decay only where decay[i] is set)
 *   m <- m + (1-b1) (g - m)                   (torch: lerp)
 *   v <- b2 v + (1-b2) g^2
 *   p <- p - (lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps)
 * Moments are FP32, or BF16 as in DeepSeek-V3 (computed in FP32, rounded to
 * nearest even on store).
 */
#ifndef DS_ADAMW_H
#define DS_ADAMW_H

#include <stdint.h>

typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
} ds_adamw_hparams;

/* Defaults of DeepSeek-V3: b1 0.9, b2 0.95, eps 1e-8, wd 0.1. */
ds_adamw_hparams ds_adamw_default(double lr);

/* One step over n parameters.  decay: apply weight decay to this range.
 * m, v: FP32 moments (m16/v16 NULL), or m16/v16: BF16 moments (m/v NULL).
 * t: the step number after this update (1 for the first step). */
void ds_adamw_step(float *p, const float *g, float *m, float *v, uint16_t *m16, uint16_t *v16,
                   int64_t n, int decay, int64_t t, const ds_adamw_hparams *h);

/* Global L2 norm of the gradient (accumulated in double). */
double ds_grad_norm(const float *g, int64_t n);
/* torch.nn.utils.clip_grad_norm_: scale all grads by min(1, max/(norm+1e-6)).
 * Returns the norm before clipping. */
double ds_clip_grad_norm(float *g, int64_t n, double max_norm);

/* DeepSeek-V3 schedule (paper §4.2), all boundaries in steps:
 *   [0, warmup)            linear: peak * (step+1) / warmup
 *   [warmup, stable_end)   peak
 *   [stable_end, decay_end) cosine from peak to min_lr
 *   [decay_end, final_start) min_lr
 *   [final_start, ...)      final_lr
 * Zero-length phases are skipped. */
typedef struct {
    double peak, min_lr, final_lr;
    int64_t warmup, stable_end, decay_end, final_start;
} ds_lr_schedule;
double ds_lr_at(const ds_lr_schedule *s, int64_t step);

#endif
