/*
 * adamw.c — AdamW defaults, the clip coefficient, learning-rate schedule.
 */
#include "train/adamw.h"

#include <math.h>

ds_adamw_hparams ds_adamw_default(double lr) {
    return (ds_adamw_hparams){lr, 0.9, 0.95, 1e-8, 0.1};
}

float ds_clip_coef(double norm, double max_norm) {
    if (!(max_norm > 0)) return 1.0f;
    double coef = max_norm / (norm + 1e-6);
    return coef < 1.0 ? (float)coef : 1.0f;
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
