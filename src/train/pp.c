/*
 * pp.c — the pipeline's 1F1B run of pp.h: receives, the stage's forward and
 * backward, sends, and the step's bubble figures.
 */
#include "train/pp.h"

#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "model/expert_shard.h"
#include "model/moe_ep.h"

#define PP_MAX_STAGES 64

int ds_pp_init(ds_pp *pp, ds_comm *world, const ds_model *m, int S, const char *spec, int M, int64_t Bm, int64_t T,
               int mtp, int flags) {
    memset(pp, 0, sizeof *pp);
    const int P = world->size, R = world->rank;
    if (S < 1 || S > PP_MAX_STAGES) return ds_err("--pp %d: want 1..%d stages", S, PP_MAX_STAGES);
    if (P % S) return ds_err("--pp %d does not divide the %d processes", S, P);
    if (M < S) return ds_err("--micro-batches %d: 1F1B needs at least --pp %d micro-batches", M, S);
    pp->S = S, pp->M = M, pp->Q = P / S, pp->s = R / pp->Q;
    pp->Bm = Bm, pp->T = T, pp->H = m->cfg.hidden_size, pp->world = world;
    pp->prev = pp->s > 0 ? R - pp->Q : -1;
    pp->next = pp->s < S - 1 ? R + pp->Q : -1;
    pp->first = ds_calloc((size_t)S + 1, sizeof(int64_t));
    if (ds_pp_split(&m->cfg, S, spec, T, pp->first)) return -1;
    pp->l0 = pp->first[pp->s], pp->l1 = pp->first[pp->s + 1];
    pp->K = ds_pp_in_flight(S, pp->s, M);
    pp->acts = ds_calloc((size_t)pp->K, sizeof(ds_acts));
    pp->gsend = ds_calloc((size_t)pp->K, sizeof(float *));
    pp->areq = ds_calloc((size_t)pp->K, sizeof(void *));
    pp->greq = ds_calloc((size_t)pp->K, sizeof(void *));
    pp->ops = ds_calloc((size_t)(2 * M), sizeof(ds_pp_op));
    if (ds_pp_1f1b(S, pp->s, M, pp->ops) < 0) return -1;
    const size_t hb = (size_t)(Bm * T * pp->H) * sizeof(float);
    for (int k = 0; k < pp->K; k++) {
        if (ds_acts_create_stage(&pp->acts[k], m, Bm, T, mtp, flags, pp->l0, pp->l1)) return -1;
        if (pp->prev >= 0) pp->gsend[k] = ds_malloc(hb);
    }
    pp->arena_bytes = pp->acts[0].arena_floats * sizeof(float);
    if (pp->prev >= 0) pp->xin = ds_malloc(hb);
    if (pp->next >= 0) pp->dout = ds_malloc(hb);
    return 0;
}

void ds_pp_free(ds_pp *pp) {
    for (int k = 0; pp->eplayers && k < pp->K; k++) ds_moe_ep_free_layers(pp->ep, pp->eplayers[k]);
    free(pp->eplayers);
    for (int k = 0; pp->acts && k < pp->K; k++) {
        ds_acts_free(&pp->acts[k]);
        if (pp->gsend) free(pp->gsend[k]);
    }
    free(pp->acts), free(pp->gsend), free(pp->areq), free(pp->greq), free(pp->ops), free(pp->first);
    free(pp->xin), free(pp->dout);
    memset(pp, 0, sizeof *pp);
}

/* the world's traffic of this call counts as pipeline traffic */
static ds_comm_kind pp_kind(ds_comm *c) {
    ds_comm_kind k = (ds_comm_kind)c->kind;
    ds_comm_set_kind(c, DS_COMM_PP);
    return k;
}

int ds_pp_run(ds_pp *pp, const ds_model *m, const struct ds_ops *ops, ds_grads *g, ds_bwd *w, const int32_t *ids,
              const int32_t *tgt, const ds_loss_opts *lo, int64_t mtp_depth, double *sum, int64_t *load, int64_t Ee) {
    const int64_t T = pp->T, rows = pp->Bm * T, n = rows * pp->H, E = m->cfg.n_routed_experts;
    const int64_t L = m->cfg.num_hidden_layers;
    ds_comm *c = pp->world;
    ds_moe_ep *ep = m->ep;
    ds_moe_ep_layer *ep_own = ep ? ep->layers : NULL;
    if (ep && !pp->eplayers) {
        pp->ep = ep;
        pp->eplayers = ds_calloc((size_t)pp->K, sizeof *pp->eplayers);
        for (int k = 0; k < pp->K; k++) pp->eplayers[k] = ds_calloc((size_t)ep->nlayers, sizeof(ds_moe_ep_layer));
    }
    ds_comm_kind k0 = pp_kind(c);
    int rc = 0;
    double t0 = ds_now();
    for (int i = 0; i < 2 * pp->M && !rc; i++) {
        const int mb = pp->ops[i].mb, slot = mb % pp->K;
        ds_acts *a = &pp->acts[slot];
        if (ep) ep->layers = pp->eplayers[slot]; /* this micro-batch's expert rows */
        const int32_t *x_ids = ids + (size_t)(mb * rows), *x_tgt = tgt + (size_t)(mb * rows);
        if (pp->ops[i].dir == DS_PP_FWD) {
            /* the slot's previous output must have left before it is overwritten */
            if (ds_wait(c, &pp->areq[slot]) || (pp->prev >= 0 && ds_recv(c, pp->xin, n, DS_COMM_F32, pp->prev, 2 * mb))) {
                rc = -1;
                break;
            }
            double t = ds_now();
            if (ds_model_forward_stage(m, a, ops, x_ids, pp->prev >= 0 ? pp->xin : NULL)) {
                rc = -1;
                break;
            }
            pp->busy_f += ds_now() - t, pp->nf++;
            int64_t nrun = a->mtp ? m->nblocks : L;
            for (int64_t l = pp->l0; l < nrun; l++) {
                if (l >= pp->l1 && l < L) continue;
                if (m->blocks[l].moe)
                    for (int64_t e = 0; e < E; e++) load[l * Ee + e] += a->blk[l].counts_h[e];
            }
            if (pp->next >= 0 &&
                ds_isend(c, ds_acts_stage_out(a), n, DS_COMM_F32, pp->next, 2 * mb, &pp->areq[slot])) {
                rc = -1;
                break;
            }
        } else {
            if (pp->next >= 0 && ds_recv(c, pp->dout, n, DS_COMM_F32, pp->next, 2 * mb + 1)) {
                rc = -1;
                break;
            }
            if (pp->prev >= 0 && ds_wait(c, &pp->greq[slot])) {
                rc = -1;
                break;
            }
            double t = ds_now();
            ds_loss_terms lt;
            if (ds_model_backward_stage(m, a, ops, g, w, x_tgt, lo, &lt, pp->next >= 0 ? pp->dout : NULL,
                                        pp->prev >= 0 ? pp->gsend[slot] : NULL)) {
                rc = -1;
                break;
            }
            pp->busy_b += ds_now() - t, pp->nb++;
            sum[0] += lt.loss, sum[1] += lt.ce, sum[2] += lt.bal;
            for (int64_t d = 0; d < mtp_depth; d++) sum[3] += lt.mtp_ce[d] / (double)mtp_depth;
            if (pp->prev >= 0 &&
                ds_isend(c, pp->gsend[slot], n, DS_COMM_F32, pp->prev, 2 * mb + 1, &pp->greq[slot])) {
                rc = -1;
                break;
            }
        }
    }
    for (int k = 0; k < pp->K && !rc; k++)
        if (ds_wait(c, &pp->areq[k]) || ds_wait(c, &pp->greq[k])) rc = -1;
    if (ep) ep->layers = ep_own;
    pp->t_sched += ds_now() - t0;
    ds_comm_set_kind(c, k0);
    return rc;
}

int ds_pp_step_report(ds_pp *pp, double bytes0, ds_pp_report *r) {
    const int S = pp->S;
    memset(r, 0, sizeof *r);
    /* per stage: busy, forward and backward seconds and counts (summed over
     * its ranks), the bytes; then the slowest schedule */
    double v[4 * PP_MAX_STAGES + 1];
    memset(v, 0, sizeof v);
    v[4 * pp->s + 0] = pp->busy_f, v[4 * pp->s + 1] = pp->busy_b;
    v[4 * pp->s + 2] = (double)pp->nf, v[4 * pp->s + 3] = (double)pp->nb;
    v[4 * S] = pp->world->stats.bytes[DS_COMM_PP] - bytes0;
    double tmax = pp->t_sched;
    if (ds_allreduce(pp->world, v, 4 * S + 1, DS_COMM_F64, DS_COMM_SUM) ||
        ds_allreduce(pp->world, &tmax, 1, DS_COMM_F64, DS_COMM_MAX))
        return -1;
    double f[PP_MAX_STAGES], b[PP_MAX_STAGES], mean = 0;
    for (int s = 0; s < S; s++) {
        r->busy[s] = (v[4 * s] + v[4 * s + 1]) / pp->Q;
        mean += r->busy[s] / S;
        f[s] = v[4 * s + 2] > 0 ? v[4 * s] / v[4 * s + 2] : 0;
        b[s] = v[4 * s + 3] > 0 ? v[4 * s + 1] / v[4 * s + 3] : 0;
    }
    r->bubble = tmax > 0 ? 1 - mean / tmax : 0;
    if (r->bubble < 0) r->bubble = 0;
    r->analytic = ds_pp_bubble_1f1b(S, pp->M);
    if (ds_pp_simulate(S, pp->M, f, b, NULL, &r->model) < 0) r->model = 0;
    r->bytes = v[4 * S];
    r->act_bytes = (double)(pp->Bm * pp->T * pp->H) * sizeof(float);
    pp->busy_f = pp->busy_b = pp->t_sched = 0;
    pp->nf = pp->nb = 0;
    return 0;
}

int ds_pp_gather(ds_comm *world, ds_comm *stagec, ds_comm *epc, ds_comm *roots, ds_zero1 *z, const ds_model *m,
                 const ds_layout *full_lo, const int64_t *first, int S, int G, const void *mom, const void *vel, int es,
                 ds_model *full, void **fm, void **fv) {
    memset(full, 0, sizeof *full);
    if (fm) *fm = *fv = NULL;
    const ds_layout *sh = &m->layout;
    const int64_t rep = sh->rep, nx = sh->total - sh->rep, L = m->cfg.num_hidden_layers;
    const int q = stagec->rank, sroot = q == 0, lead = world->rank == 0;
    const ds_comm_dtype dt = es == 2 ? DS_COMM_U16 : DS_COMM_F32;
    const size_t pb = (size_t)(rep + G * nx + 1);
    int64_t bad = 0;
    /* the stage's moments: replicated blocks to its root, expert blocks to each shard's data-parallel root */
    void *rm = mom && sroot ? ds_calloc((size_t)rep + 1, (size_t)es) : NULL, *rv = mom && sroot ? ds_calloc((size_t)rep + 1, (size_t)es) : NULL;
    int xroot = z->dp && z->dp->rank == 0;
    void *xm = mom && xroot ? ds_calloc((size_t)nx + 1, (size_t)es) : NULL, *xv = mom && xroot ? ds_calloc((size_t)nx + 1, (size_t)es) : NULL;
    if (mom) bad = ds_zero1_gather_root(z, mom, rm, xm, es) || ds_zero1_gather_root(z, vel, rv, xv, es);
    /* the stage's buffers on its root: [replicated | shard 0 .. G-1 experts] */
    float *pbuf = sroot ? ds_malloc(pb * sizeof(float)) : NULL;
    char *mbuf = mom && sroot ? ds_calloc(pb, (size_t)es) : NULL, *vbuf = mom && sroot ? ds_calloc(pb, (size_t)es) : NULL;
    if (sroot) {
        memcpy(pbuf, m->params, (size_t)rep * sizeof(float));
        if (mom) memcpy(mbuf, rm, (size_t)rep * (size_t)es), memcpy(vbuf, rv, (size_t)rep * (size_t)es);
    }
    if (!bad && q < G && nx > 0) { /* ranks 0..G-1 of the stage hold shards 0..G-1 */
        int64_t *counts = ds_malloc((size_t)G * sizeof(int64_t));
        for (int j = 0; j < G; j++) counts[j] = nx;
        if (G > 1) {
            ds_comm_set_kind(epc, DS_COMM_OTHER);
            bad = ds_gather_root(epc, m->params + rep, sroot ? pbuf + rep : NULL, counts, DS_COMM_F32, 0) ||
                  (mom && (ds_gather_root(epc, xm, sroot ? mbuf + (size_t)rep * es : NULL, counts, dt, 0) ||
                           ds_gather_root(epc, xv, sroot ? vbuf + (size_t)rep * es : NULL, counts, dt, 0)));
        } else {
            memcpy(pbuf + rep, m->params + rep, (size_t)nx * sizeof(float));
            if (mom) memcpy(mbuf + (size_t)rep * es, xm, (size_t)nx * es), memcpy(vbuf + (size_t)rep * es, xv, (size_t)nx * es);
        }
        free(counts);
    }
    /* the stages' buffers to rank 0 */
    int64_t *counts = ds_calloc((size_t)S, sizeof(int64_t)), tot = 0;
    float *allp = NULL;
    char *allm = NULL, *allv = NULL;
    if (!bad && sroot) {
        int64_t *one = ds_malloc((size_t)S * sizeof(int64_t));
        for (int s = 0; s < S; s++) one[s] = 1;
        counts[roots->rank] = rep + G * nx;
        ds_comm_set_kind(roots, DS_COMM_OTHER);
        bad = ds_allgather(roots, counts + roots->rank, counts, one, DS_COMM_I64);
        free(one);
        for (int s = 0; s < S; s++) tot += counts[s];
        if (lead) {
            allp = ds_malloc((size_t)(tot + 1) * sizeof(float));
            if (mom) allm = ds_calloc((size_t)tot + 1, (size_t)es), allv = ds_calloc((size_t)tot + 1, (size_t)es);
        }
        if (!bad)
            bad = ds_gather_root(roots, pbuf, allp, counts, DS_COMM_F32, 0) ||
                  (mom && (ds_gather_root(roots, mbuf, allm, counts, dt, 0) || ds_gather_root(roots, vbuf, allv, counts, dt, 0)));
    }
    if (!bad && lead) { /* stage s, shard j: its layout maps its part into the whole model's */
        bad = ds_model_create(full, &m->cfg) != 0;
        if (!bad && mom) *fm = ds_calloc((size_t)full_lo->total + 1, (size_t)es), *fv = ds_calloc((size_t)full_lo->total + 1, (size_t)es);
        for (int s = 0, off = 0; s < S && !bad; off += (int)counts[s], s++) {
            ds_stage_keep k = {first[s], first[s + 1], L, s == 0, s == S - 1};
            for (int j = 0; j < G; j++) {
                ds_layout lj;
                ds_layout_copy(&lj, full_lo);
                ds_layout_shard_stage(&lj, m->cfg.n_routed_experts, G, j, &k);
                const int64_t nxs = lj.total - lj.rep, x0 = off + lj.rep + j * nxs;
                if (j == 0) ds_shard_copy(full_lo, &lj, allp + off, full->params, 0, lj.rep, 4, 1);
                ds_shard_copy(full_lo, &lj, allp + x0, full->params, lj.rep, lj.total, 4, 1);
                if (mom) {
                    if (j == 0) {
                        ds_shard_copy(full_lo, &lj, allm + (size_t)off * es, *fm, 0, lj.rep, es, 1);
                        ds_shard_copy(full_lo, &lj, allv + (size_t)off * es, *fv, 0, lj.rep, es, 1);
                    }
                    ds_shard_copy(full_lo, &lj, allm + (size_t)x0 * es, *fm, lj.rep, lj.total, es, 1);
                    ds_shard_copy(full_lo, &lj, allv + (size_t)x0 * es, *fv, lj.rep, lj.total, es, 1);
                }
                ds_layout_free(&lj);
            }
        }
    }
    free(rm), free(rv), free(xm), free(xv), free(pbuf), free(mbuf), free(vbuf), free(counts), free(allp), free(allm),
        free(allv);
    return bad ? ds_err("pipeline: gathering the model from the stages failed") : 0;
}
