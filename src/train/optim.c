/*
 * optim.c — the optimizer step over a whole model (see optim.h).
 */
#include "train/optim.h"

void ds_model_adamw_step(ds_model *m, const ds_grads *g, float *m1, float *v1, uint16_t *m16, uint16_t *v16,
                         int64_t t, const ds_adamw_hparams *h, int mtp) {
    const ds_layout *lo = &m->layout;
    int64_t start = -1, end = -1;
    int dec = 0;
    for (int64_t i = 0; i <= lo->n; i++) {
        const ds_param *p = i < lo->n ? &lo->p[i] : NULL;
        int skip = p && ((p->flags & (DS_PARAM_ALIAS | DS_PARAM_BUFFER)) || ((p->flags & DS_PARAM_MTP) && !mtp));
        if (p && skip) continue;
        int d = p ? p->ndim >= 2 : -1;
        /* extend the run when this tensor starts where the run's padded end is */
        if (p && start >= 0 && d == dec && p->offset == (end + 15) / 16 * 16) {
            end = p->offset + p->numel;
            continue;
        }
        if (start >= 0)
            ds_adamw_step(m->params + start, g->g + start, m1 ? m1 + start : NULL, v1 ? v1 + start : NULL,
                          m16 ? m16 + start : NULL, v16 ? v16 + start : NULL, end - start, dec, t,
                          h);
        if (!p) break;
        start = p->offset, end = p->offset + p->numel, dec = d;
    }
}
