/*
 * adamw.h — AdamW hyper-parameters (torch.optim.AdamW semantics), the clip
 * coefficient of global gradient-norm clipping, and the DeepSeek-V3
 * learning-rate schedule.  The update itself is the ops entry `adamw`
 * (backend/ops.h; CPU: backend/cpu/optim.c), driven by train/optim.h.
 *
 * Update for one element at step t (1-based), as torch does it:
 *   g <- g * gscale                           (the clip coefficient)
 *   p <- p * (1 - lr*wd)                      (decay only where the segment says)
 *   m <- m + (1-b1) (g - m)                   (torch: lerp)
 *   v <- b2 v + (1-b2) g^2
 *   p <- p - (lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps)
 * Moments are FP32, or BF16 as in DeepSeek-V3 (computed in FP32, rounded to
 * nearest even on store).
 */
#ifndef DS_ADAMW_H
#define DS_ADAMW_H

#include <stdint.h>

#include "backend/ops.h" /* ds_adamw_hparams */

/* Defaults of DeepSeek-V3: b1 0.9, b2 0.95, eps 1e-8, wd 0.1. */
ds_adamw_hparams ds_adamw_default(double lr);

/* torch.nn.utils.clip_grad_norm_'s coefficient for a global gradient norm:
 * min(1, max_norm / (norm + 1e-6)) as a float; 1 when max_norm <= 0 (no
 * clipping).  The `adamw` entry multiplies the gradient by it. */
float ds_clip_coef(double norm, double max_norm);

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
