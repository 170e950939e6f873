/*
 * expert_shard.c — the expert shard of a model (see expert_shard.h).
 */
#include "model/expert_shard.h"

#include <stdlib.h>
#include <string.h>

#include "base/base.h"

int64_t ds_layout_expert_of(const ds_param *p) {
    if (!(p->flags & DS_PARAM_EXPERT)) return -1;
    const char *s = strstr(p->name, "mlp.experts.");
    return s ? atoll(s + strlen("mlp.experts.")) : -1;
}

void ds_layout_copy(ds_layout *dst, const ds_layout *src) {
    *dst = *src;
    dst->p = ds_malloc((size_t)(src->n > 0 ? src->n : 1) * sizeof(ds_param));
    memcpy(dst->p, src->p, (size_t)src->n * sizeof(ds_param));
}

static int64_t pad16(int64_t n) { return (n + 15) / 16 * 16; }

int ds_stage_keeps(const ds_stage_keep *k, const ds_param *p) {
    if (!k) return 1;
    if (p->layer >= k->L) return k->last;                         /* MTP modules */
    if (p->layer >= 0) return p->layer >= k->l0 && p->layer < k->l1;
    if (!strcmp(p->name, "model.embed_tokens.weight")) return k->first || k->last;
    return k->last;                                                /* final norm, output head */
}

void ds_layout_shard(ds_layout *lo, int64_t n_experts, int ep_size, int ep_rank) {
    ds_layout_shard_stage(lo, n_experts, ep_size, ep_rank, NULL);
}

void ds_layout_shard_stage(ds_layout *lo, int64_t n_experts, int ep_size, int ep_rank, const ds_stage_keep *k) {
    DS_ASSERT(lo->ep_size == 0 && ep_size > 0 && (n_experts <= 0 || n_experts % ep_size == 0));
    const int64_t per = n_experts / ep_size, e0 = ep_rank * per;
    int64_t total = 0;
    for (int pass = 0; pass < 2; pass++) /* replicated, then local experts */
        for (int64_t i = 0; i < lo->n; i++) {
            ds_param *p = &lo->p[i];
            if (p->flags & (DS_PARAM_ALIAS | DS_PARAM_REMOTE)) continue; /* REMOTE: left out in pass 0 */
            DS_ASSERT(p->offset >= 0);
            int64_t e = ds_layout_expert_of(p);
            if ((e >= 0) != pass) continue;
            if ((e >= 0 && (e < e0 || e >= e0 + per)) || !ds_stage_keeps(k, p)) {
                p->flags |= DS_PARAM_REMOTE, p->offset = -1;
                continue;
            }
            p->offset = total;
            total += pad16(p->numel);
        }
    for (int64_t i = 0, rep = 0; i < lo->n; i++) { /* rep: the end of the replicated part */
        ds_param *p = &lo->p[i];
        if (p->flags & DS_PARAM_ALIAS) p->offset = lo->p[p->alias_of].offset;
        else if (p->offset < 0) continue;
        else if (!(p->flags & DS_PARAM_EXPERT) && p->offset + pad16(p->numel) > rep) rep = lo->rep = p->offset + pad16(p->numel);
    }
    lo->total = total;
    lo->ep_size = ep_size, lo->ep_rank = ep_rank;
}

int ds_model_shard(ds_model *m, int ep_size, int ep_rank) {
    if (m->fp8w) return ds_err("expert shard: the model holds FP8/BF16-resident weights");
    if (m->mem && !m->mem->host_visible) return ds_err("expert shard: the weights are not in host-visible memory");
    if (m->layout.ep_size) return ds_err("expert shard: the model is already a shard");
    ds_layout sh;
    ds_layout_copy(&sh, &m->layout);
    ds_layout_shard(&sh, m->cfg.n_routed_experts, ep_size, ep_rank);
    float *np = ds_model_mem_alloc(m->mem, (size_t)sh.total * sizeof(float));
    if (!np) {
        ds_layout_free(&sh);
        return ds_err("expert shard: could not allocate %lld floats", (long long)sh.total);
    }
    ds_shard_copy(&m->layout, &sh, m->params, np, 0, sh.total, 4, 0);
    ds_model_mem_free(m->mem, m->params);
    ds_layout_free(&m->layout);
    m->layout = sh, m->params = np;
    ds_model_rebind(m);
    return 0;
}

void ds_shard_copy(const ds_layout *full, const ds_layout *sh, const void *src, void *dst, int64_t lo, int64_t hi,
                   int esize, int to_full) {
    for (int64_t i = 0; i < sh->n; i++) {
        const ds_param *p = &sh->p[i];
        if ((p->flags & DS_PARAM_ALIAS) || p->offset < 0) continue;
        int64_t a = p->offset > lo ? p->offset : lo, b = p->offset + p->numel < hi ? p->offset + p->numel : hi;
        if (a >= b) continue;
        int64_t f = full->p[i].offset + (a - p->offset);
        size_t n = (size_t)(b - a) * (size_t)esize;
        if (to_full) memcpy((char *)dst + (size_t)f * esize, (const char *)src + (size_t)(a - lo) * esize, n);
        else memcpy((char *)dst + (size_t)(a - lo) * esize, (const char *)src + (size_t)f * esize, n);
    }
}

int ds_gather_root(ds_comm *c, const void *send, void *recv, const int64_t *counts, ds_comm_dtype dt, int root) {
    int P = c->size;
    int64_t *v = ds_calloc((size_t)(4 * P), sizeof(int64_t)), *sc = v, *sd = v + P, *rc = v + 2 * P, *rd = v + 3 * P;
    sc[root] = counts[c->rank];
    int64_t o = 0;
    for (int r = 0; r < P && c->rank == root; o += counts[r], r++) rc[r] = counts[r], rd[r] = o;
    char dummy[16];
    int bad = ds_alltoallv(c, send, sc, sd, recv ? recv : dummy, rc, rd, dt);
    free(v);
    return bad;
}

int ds_shard_gather_model(ds_model *full, const ds_model *m, ds_comm *g, int root) {
    memset(full, 0, sizeof *full);
    const ds_layout *sh = &m->layout;
    DS_ASSERT(sh->ep_size == g->size && sh->ep_rank == g->rank);
    const int64_t nx = sh->total - sh->rep, G = g->size;
    int64_t *counts = ds_malloc((size_t)G * sizeof(int64_t));
    for (int64_t r = 0; r < G; r++) counts[r] = nx;
    float *all = g->rank == root ? ds_malloc((size_t)(G * nx + 1) * sizeof(float)) : NULL;
    ds_comm_set_kind(g, DS_COMM_OTHER);
    int bad = ds_gather_root(g, m->params + sh->rep, all, counts, DS_COMM_F32, root);
    free(counts);
    if (bad || g->rank != root) {
        free(all);
        return bad ? -1 : 0;
    }
    if (ds_model_create(full, &m->cfg)) {
        free(all);
        return -1;
    }
    ds_shard_copy(&full->layout, sh, m->params, full->params, 0, sh->rep, 4, 1);
    for (int64_t j = 0; j < G; j++) { /* shard j's experts, in its layout order */
        ds_layout lj;
        ds_layout_copy(&lj, &full->layout);
        ds_layout_shard(&lj, m->cfg.n_routed_experts, (int)G, (int)j);
        ds_shard_copy(&full->layout, &lj, all + j * nx, full->params, lj.rep, lj.total, 4, 1);
        ds_layout_free(&lj);
    }
    free(all);
    return 0;
}
