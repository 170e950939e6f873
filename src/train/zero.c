/*
 * zero.c — ZeRO-1 data parallelism (see zero.h).
 */
#include "train/zero.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

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

/* ds_model_adamw_step's runs of tensors, clipped to [lo, hi); moments and
 * gradient are indexed from lo */
static void adamw_block(ds_model *m, const float *gb, float *m1, float *v1, uint16_t *m16, uint16_t *v16, int64_t lo,
                        int64_t hi, int64_t t, const ds_adamw_hparams *h, int mtp) {
    const ds_layout *L = &m->layout;
    int64_t start = -1, end = -1;
    int dec = 0;
    for (int64_t i = 0; i <= L->n; i++) {
        const ds_param *p = i < L->n ? &L->p[i] : NULL;
        int skip = p && ((p->flags & (DS_PARAM_ALIAS | DS_PARAM_BUFFER)) || ((p->flags & DS_PARAM_MTP) && !mtp));
        if (p && skip) continue;
        int d = p ? p->ndim >= 2 : -1;
        if (p && start >= 0 && d == dec && p->offset == (end + 15) / 16 * 16) {
            end = p->offset + p->numel;
            continue;
        }
        if (start >= 0) {
            int64_t a = start > lo ? start : lo, b = end < hi ? end : hi;
            if (a < b)
                ds_adamw_step(m->params + a, gb + (a - lo), m1 ? m1 + (a - lo) : NULL, v1 ? v1 + (a - lo) : NULL,
                              m16 ? m16 + (a - lo) : NULL, v16 ? v16 + (a - lo) : NULL, b - a, dec, t, h);
        }
        if (!p) break;
        start = p->offset, end = p->offset + p->numel, dec = d;
    }
}

int ds_zero1_step(ds_zero1 *z, ds_model *m, const ds_grads *g, float *m1, float *v1, uint16_t *m16, uint16_t *v16,
                  int64_t t, const ds_adamw_hparams *h, int mtp, double clip, double *gnorm) {
    ds_comm *c = z->comm;
    int64_t nb = z->hi - z->lo;
    ds_comm_set_kind(c, DS_COMM_GRAD);
    if (ds_reduce_scatter(c, g->g, z->gshard, z->counts, DS_COMM_F32)) return -1;
    double s = 0;
    const float *gb = z->gshard;
#pragma omp parallel for reduction(+ : s) schedule(static)
    for (int64_t i = 0; i < nb; i++) s += (double)gb[i] * gb[i];
    if (ds_allreduce(c, &s, 1, DS_COMM_F64, DS_COMM_SUM)) return -1;
    double norm = sqrt(s);
    *gnorm = norm;
    if (clip > 0) {
        double coef = clip / (norm + 1e-6);
        if (coef < 1.0) {
            float cf = (float)coef;
            float *w = z->gshard;
#pragma omp parallel for simd schedule(static)
            for (int64_t i = 0; i < nb; i++) w[i] *= cf;
        }
    }
    adamw_block(m, z->gshard, m1, v1, m16, v16, z->lo, z->hi, t, h, mtp);
    ds_comm_set_kind(c, DS_COMM_PARAM);
    int rc = ds_allgather(c, m->params + z->lo, m->params, z->counts, DS_COMM_F32);
    ds_comm_set_kind(c, DS_COMM_OTHER);
    return rc;
}

int ds_zero1_gather_state(ds_zero1 *z, const void *block, void *full, int esize) {
    ds_comm_set_kind(z->comm, DS_COMM_OTHER);
    return ds_allgather(z->comm, block, full, z->counts, esize == 2 ? DS_COMM_U16 : DS_COMM_F32);
}
