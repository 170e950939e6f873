/*
 * optim.c — the optimizer step over a whole model (see optim.h).
 */
#include "train/optim.h"

#include <stdlib.h>

#include "base/base.h"

ds_optim_seg *ds_optim_segments(const ds_model *m, int mtp, int64_t *nseg) {
    const ds_layout *lo = &m->layout;
    ds_optim_seg *seg = ds_malloc((size_t)(lo->n > 0 ? lo->n : 1) * sizeof *seg);
    int64_t ns = 0;
    for (int64_t i = 0; i < lo->n; i++) {
        const ds_param *p = &lo->p[i];
        if ((p->flags & (DS_PARAM_ALIAS | DS_PARAM_BUFFER)) || ((p->flags & DS_PARAM_MTP) && !mtp) || p->offset < 0) continue;
        int d = p->ndim >= 2;
        ds_optim_seg *last = ns ? &seg[ns - 1] : NULL;
        /* extend the segment when this tensor starts where its padded end is */
        if (last && last->decay == d && p->offset == (last->off + last->n + 15) / 16 * 16) {
            last->n = p->offset + p->numel - last->off;
            continue;
        }
        seg[ns++] = (ds_optim_seg){p->offset, p->numel, d};
    }
    *nseg = ns;
    return seg;
}

void ds_model_adamw_step(const struct ds_ops *ops, ds_model *m, const ds_grads *g, void *mom, void *vel,
                         int bf16_moments, int64_t t, const ds_adamw_hparams *h, float gscale, int mtp) {
    int64_t ns;
    ds_optim_seg *seg = ds_optim_segments(m, mtp, &ns);
    ops->adamw(m->params, g->g, mom, vel, bf16_moments, seg, ns, t, h, gscale);
    free(seg);
}
