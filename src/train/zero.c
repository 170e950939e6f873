/*
 * zero.c — ZeRO-1 data parallelism (see zero.h).
 */
#include "train/zero.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "train/optim.h"

int ds_zero1_init(ds_zero1 *z, ds_comm *c, int64_t n) {
    memset(z, 0, sizeof *z);
    z->comm = c, z->n = n;
    int P = c->size;
    int64_t *off = ds_malloc((size_t)(P + 1) * sizeof(int64_t));
    ds_comm_blocks(ds_ceil_div(n, 16), P, off);
    z->counts = ds_malloc((size_t)P * sizeof(int64_t));
    for (int r = 0; r < P; r++) {
        int64_t a = off[r] * 16 < n ? off[r] * 16 : n, b = off[r + 1] * 16 < n ? off[r + 1] * 16 : n;
        z->counts[r] = b - a;
        if (r == c->rank) z->lo = a, z->hi = b;
    }
    free(off);
    if (c->size > 1) z->gshard = ds_malloc((size_t)(z->hi - z->lo + 1) * sizeof(float));
    return 0;
}

void ds_zero1_free(ds_zero1 *z) {
    free(z->counts);
    free(z->gshard);
    memset(z, 0, sizeof *z);
}

int ds_zero1_step(ds_zero1 *z, const struct ds_ops *ops, ds_model *m, const ds_grads *g, void *mom, void *vel,
                  int bf16_moments, int64_t t, const ds_adamw_hparams *h, int mtp, double clip, double *gnorm) {
    ds_comm *c = z->comm;
    int64_t nb = z->hi - z->lo;
    ds_comm_set_kind(c, DS_COMM_GRAD);
    if (ds_reduce_scatter(c, g->g, z->gshard, z->counts, DS_COMM_F32)) return -1;
    double s = nb > 0 ? ops->sumsq(z->gshard, nb) : 0;
    if (ds_allreduce(c, &s, 1, DS_COMM_F64, DS_COMM_SUM)) return -1;
    *gnorm = sqrt(s);
    /* the layout's segments clipped to this block, offsets from lo */
    int64_t nseg = 0, k = 0;
    ds_optim_seg *seg = ds_optim_segments(m, mtp, &nseg);
    for (int64_t i = 0; i < nseg; i++) {
        int64_t a = seg[i].off > z->lo ? seg[i].off : z->lo, b = seg[i].off + seg[i].n < z->hi ? seg[i].off + seg[i].n : z->hi;
        if (a < b) seg[k].off = a - z->lo, seg[k].n = b - a, seg[k].decay = seg[i].decay, k++;
    }
    if (k) ops->adamw(m->params + z->lo, z->gshard, mom, vel, bf16_moments, seg, k, t, h, ds_clip_coef(*gnorm, clip));
    free(seg);
    ds_comm_set_kind(c, DS_COMM_PARAM);
    int rc = ds_allgather(c, m->params + z->lo, m->params, z->counts, DS_COMM_F32);
    ds_comm_set_kind(c, DS_COMM_OTHER);
    return rc;
}

int ds_zero1_gather_state(ds_zero1 *z, const void *block, void *full, int esize) {
    ds_comm_set_kind(z->comm, DS_COMM_OTHER);
    return ds_allgather(z->comm, block, full, z->counts, esize == 2 ? DS_COMM_U16 : DS_COMM_F32);
}
