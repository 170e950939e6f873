/*
 * zero.c — ZeRO-1 data parallelism (see zero.h).
 */
#include "train/zero.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "model/expert_shard.h"
#include "train/optim.h"

/* balanced 16-float blocks of n over c: counts, and this rank's [lo, hi) */
static int64_t *blocks(ds_comm *c, int64_t n, int64_t *lo, int64_t *hi) {
    int P = c->size;
    int64_t *off = ds_malloc((size_t)(P + 1) * sizeof(int64_t));
    ds_comm_blocks(ds_ceil_div(n, 16), P, off);
    int64_t *counts = ds_malloc((size_t)P * sizeof(int64_t));
    for (int r = 0; r < P; r++) {
        int64_t a = off[r] * 16 < n ? off[r] * 16 : n, b = off[r + 1] * 16 < n ? off[r + 1] * 16 : n;
        counts[r] = b - a;
        if (r == c->rank) *lo = a, *hi = b;
    }
    free(off);
    return counts;
}

int ds_zero1_init(ds_zero1 *z, ds_comm *c, int64_t n) { return ds_zero1_init_ep(z, c, n, NULL, 0); }

int ds_zero1_init_ep(ds_zero1 *z, ds_comm *c, int64_t n, ds_comm *dp, int64_t ne) {
    memset(z, 0, sizeof *z);
    z->comm = c, z->n = n;
    z->counts = blocks(c, n, &z->lo, &z->hi);
    if (dp && ne > 0) z->dp = dp, z->ne = ne, z->ecounts = blocks(dp, ne, &z->elo, &z->ehi);
    if (c->size > 1) z->gshard = ds_malloc((size_t)(ds_zero1_block(z) + 1) * sizeof(float));
    return 0;
}

int ds_zero1_set_mem(ds_zero1 *z, const struct ds_ops *mem) {
    if (!mem || mem->host_visible || z->comm->size <= 1) return 0;
    if (z->dp) return ds_err("ZeRO-1: an expert-sharded run keeps its buffers on the host");
    z->dshard = mem->alloc((size_t)(z->hi - z->lo + 1) * sizeof(float));
    z->hstage = ds_malloc((size_t)(z->n + 1) * sizeof(float));
    if (!z->dshard) return -1;
    z->mem = mem;
    return 0;
}

void ds_zero1_free(ds_zero1 *z) {
    if (z->mem) z->mem->free(z->dshard);
    free(z->hstage);
    free(z->counts);
    free(z->ecounts);
    free(z->gshard);
    memset(z, 0, sizeof *z);
}

/* AdamW of the buffer range [lo, hi) (params + lo, its gradient block gb,
 * moments mom, vel at their block): the layout's segments clipped to it */
static void adamw_range(const struct ds_ops *ops, ds_model *m, int64_t lo, int64_t hi, const float *gb, void *mom,
                        void *vel, int bf16_moments, int64_t t, const ds_adamw_hparams *h, int mtp, double coef) {
    int64_t nseg = 0, k = 0;
    ds_optim_seg *seg = ds_optim_segments(m, mtp, &nseg);
    for (int64_t i = 0; i < nseg; i++) {
        int64_t a = seg[i].off > lo ? seg[i].off : lo, b = seg[i].off + seg[i].n < hi ? seg[i].off + seg[i].n : hi;
        if (a < b) seg[k].off = a - lo, seg[k].n = b - a, seg[k].decay = seg[i].decay, k++;
    }
    if (k) ops->adamw(m->params + lo, gb, mom, vel, bf16_moments, seg, k, t, h, coef);
    free(seg);
}

int ds_zero1_step(ds_zero1 *z, const struct ds_ops *ops, ds_model *m, const ds_grads *g, void *mom, void *vel,
                  int bf16_moments, int64_t t, const ds_adamw_hparams *h, int mtp, double clip, double *gnorm) {
    ds_comm *c = z->comm;
    int64_t nb = z->hi - z->lo, ne = z->ehi - z->elo;
    float *ge = z->gshard + nb; /* the expert block */
    const struct ds_ops *mem = z->mem; /* device-resident: the exchanges through the host */
    const size_t nbytes = (size_t)z->n * sizeof(float), bbytes = (size_t)nb * sizeof(float);
    ds_comm_set_kind(c, DS_COMM_GRAD);
    if (mem) mem->copy_d2h(z->hstage, g->g, nbytes);
    if (ds_reduce_scatter(c, mem ? z->hstage : g->g, z->gshard, z->counts, DS_COMM_F32)) return -1;
    float *gb = z->gshard; /* the reduced block where AdamW reads it */
    if (mem) mem->copy_h2d(z->dshard, z->gshard, bbytes), gb = z->dshard;
    if (z->dp) {
        ds_comm_set_kind(z->dp, DS_COMM_GRAD);
        if (ds_reduce_scatter(z->dp, g->g + z->n, ge, z->ecounts, DS_COMM_F32)) return -1;
    }
    double s = (nb > 0 ? ops->sumsq(gb, nb) : 0) + (ne > 0 ? ops->sumsq(ge, ne) : 0);
    int64_t a = z->skip_lo > z->lo ? z->skip_lo : z->lo, b = z->skip_hi < z->hi ? z->skip_hi : z->hi;
    if (a < b) { /* the block without [a, b): its two sides */
        s = (a > z->lo ? ops->sumsq(gb, a - z->lo) : 0) + (z->hi > b ? ops->sumsq(gb + (b - z->lo), z->hi - b) : 0) +
            (ne > 0 ? ops->sumsq(ge, ne) : 0);
    }
    if (ds_allreduce(z->norm ? z->norm : c, &s, 1, DS_COMM_F64, DS_COMM_SUM)) return -1;
    *gnorm = sqrt(s);
    double coef = ds_clip_coef(*gnorm, clip);
    size_t es = bf16_moments ? 2 : 4;
    adamw_range(ops, m, z->lo, z->hi, gb, mom, vel, bf16_moments, t, h, mtp, coef);
    if (z->dp)
        adamw_range(ops, m, z->n + z->elo, z->n + z->ehi, ge, (char *)mom + (size_t)nb * es,
                    (char *)vel + (size_t)nb * es, bf16_moments, t, h, mtp, coef);
    ds_comm_set_kind(c, DS_COMM_PARAM);
    int rc;
    if (mem) {
        mem->copy_d2h(z->hstage + z->lo, m->params + z->lo, bbytes);
        rc = ds_allgather(c, z->hstage + z->lo, z->hstage, z->counts, DS_COMM_F32);
        if (!rc) mem->copy_h2d(m->params, z->hstage, nbytes);
    } else {
        rc = ds_allgather(c, m->params + z->lo, m->params, z->counts, DS_COMM_F32);
    }
    if (!rc && z->dp) {
        ds_comm_set_kind(z->dp, DS_COMM_PARAM);
        rc = ds_allgather(z->dp, m->params + z->n + z->elo, m->params + z->n, z->ecounts, DS_COMM_F32);
        ds_comm_set_kind(z->dp, DS_COMM_OTHER);
    }
    ds_comm_set_kind(c, DS_COMM_OTHER);
    return rc;
}

int ds_zero1_gather_state(ds_zero1 *z, const void *block, void *full, int esize) {
    ds_comm_set_kind(z->comm, DS_COMM_OTHER);
    return ds_allgather(z->comm, block, full, z->counts, esize == 2 ? DS_COMM_U16 : DS_COMM_F32);
}

int ds_zero1_gather_root(ds_zero1 *z, const void *block, void *rep, void *exp, int esize) {
    ds_comm_dtype dt = esize == 2 ? DS_COMM_U16 : DS_COMM_F32;
    ds_comm_set_kind(z->comm, DS_COMM_OTHER);
    if (ds_gather_root(z->comm, block, rep, z->counts, dt, 0)) return -1;
    if (!z->dp) return 0;
    ds_comm_set_kind(z->dp, DS_COMM_OTHER);
    return ds_gather_root(z->dp, (const char *)block + (size_t)(z->hi - z->lo) * (size_t)esize, exp, z->ecounts, dt, 0);
}
