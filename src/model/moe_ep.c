/*
 * moe_ep.c — routed experts over an expert-parallel group (see moe_ep.h).
 */
#include "model/moe_ep.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "base/base.h"

int ds_moe_ep_create(ds_moe_ep *x, const ds_model *m, ds_comm *world, int ep_size, int dispatch, int ranks_per_node) {
    memset(x, 0, sizeof *x);
    if (m->cfg.n_routed_experts <= 0) return ds_err("--ep: the model has no routed experts");
    int node = 0, nn = 1;
    ds_comm *nc = ds_comm_split_node(world, ranks_per_node, &node, &nn);
    if (!nc) return -1;
    ds_comm_free(nc);
    if (ds_ep_init(&x->ep, world, ep_size, m->cfg.n_routed_experts)) return -1;
    int64_t *nodes = ds_malloc((size_t)ep_size * sizeof(int64_t)), *one = ds_malloc((size_t)ep_size * sizeof(int64_t));
    for (int i = 0; i < ep_size; i++) one[i] = 1;
    nodes[x->ep.rank] = node;
    if (ds_allgather(x->ep.comm, nodes + x->ep.rank, nodes, one, DS_COMM_I64)) {
        free(nodes), free(one);
        return -1;
    }
    x->node_of = ds_malloc((size_t)ep_size * sizeof(int));
    for (int i = 0; i < ep_size; i++) x->node_of[i] = (int)nodes[i];
    x->nnodes = nn;
    free(nodes), free(one);
    x->dispatch = dispatch;
    x->combine = dispatch == DS_EP_FP32 ? DS_EP_FP32 : DS_EP_BF16;
    x->nlayers = m->nblocks;
    x->layers = ds_calloc((size_t)m->nblocks, sizeof *x->layers);
    return 0;
}

static void layer_free(ds_moe_ep_layer *l) {
    ds_ep_plan_free(&l->plan);
    free(l->x), free(l->gate), free(l->up), free(l->act), free(l->out);
    free(l->dout), free(l->dact), free(l->dgate), free(l->dup), free(l->dx);
}

void ds_moe_ep_free(ds_moe_ep *x) {
    for (int64_t i = 0; i < x->nlayers; i++) layer_free(&x->layers[i]);
    free(x->layers);
    free(x->node_of);
    ds_ep_free(&x->ep);
    memset(x, 0, sizeof *x);
}

static void reserve(ds_moe_ep_layer *l, int64_t rows, int64_t H, int64_t Im) {
    if (rows <= l->cap && l->x) return;
    int64_t n = rows + rows / 4 + 16;
    float **bh[] = {&l->x, &l->out, &l->dout, &l->dx}, **bi[] = {&l->gate, &l->up, &l->act, &l->dact, &l->dgate, &l->dup};
    for (size_t i = 0; i < sizeof bh / sizeof bh[0]; i++) free(*bh[i]), *bh[i] = ds_malloc((size_t)(n * H) * sizeof(float));
    for (size_t i = 0; i < sizeof bi / sizeof bi[0]; i++) free(*bi[i]), *bi[i] = ds_malloc((size_t)(n * Im) * sizeof(float));
    l->cap = n;
}

static void fail(const char *what) {
    char msg[512];
    snprintf(msg, sizeof msg, "expert parallelism: %s: %s", what, ds_errmsg());
    ds_comm_abort(1, msg);
}

void ds_moe_ep_forward(const ds_model *m, const struct ds_ops *ops, const ds_block *p, const ds_block_acts *a, int64_t N) {
    ds_moe_ep *x = m->ep;
    ds_moe_ep_layer *l = &x->layers[p - m->blocks];
    const ds_config *c = &m->cfg;
    const int64_t H = c->hidden_size, Im = c->moe_intermediate_size, K = c->num_experts_per_tok;
    const int64_t El = x->ep.experts_per_rank, e0 = x->ep.first_expert;
    int64_t R = ds_ep_plan_make(&x->ep, &l->plan, a->counts_h);
    if (R < 0) fail("count exchange");
    reserve(l, R, H, Im);
    if (ds_ep_send(&x->ep, &l->plan, a->xs, l->x, H, DS_EP_TO_OWNER, x->dispatch, DS_COMM_DISPATCH)) fail("dispatch");
    x->rows_in += N * K, x->rows_local += R;
    for (int64_t n = 0; n < N; n++) { /* nodes each token's dispatch reaches */
        uint64_t seen = 0;
        int cntn = 0;
        for (int64_t k = 0; k < K; k++) {
            int nd = x->node_of[a->r_idx[n * K + k] / El] & 63;
            if (!(seen >> nd & 1)) seen |= 1ull << nd, cntn++;
        }
        x->node_sum += cntn, x->tok_layers++;
        if (cntn > x->node_max) x->node_max = cntn;
    }
    const int64_t *off = l->plan.local_offsets, *cnt = l->plan.local_counts;
    int par = R >= 64 * El;
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int64_t j = 0; j < El; j++) {
        if (!cnt[j]) continue;
        int64_t e = e0 + j;
        ds_linear_any(ops, l->gate + off[j] * Im, l->x + off[j] * H, p->eg[e], p->eg8 ? p->eg8[e] : NULL, NULL, cnt[j], H, Im);
        ds_linear_any(ops, l->up + off[j] * Im, l->x + off[j] * H, p->eu[e], p->eu8 ? p->eu8[e] : NULL, NULL, cnt[j], H, Im);
    }
    ops->swiglu_forward(l->act, l->gate, l->up, R, Im);
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int64_t j = 0; j < El; j++) {
        if (!cnt[j]) continue;
        int64_t e = e0 + j;
        ds_linear_any(ops, l->out + off[j] * H, l->act + off[j] * Im, p->ed[e], p->ed8 ? p->ed8[e] : NULL, NULL, cnt[j], Im, H);
    }
    if (ds_ep_send(&x->ep, &l->plan, l->out, a->e_out, H, DS_EP_TO_HOME, x->combine, DS_COMM_COMBINE)) fail("combine");
}

void ds_moe_ep_backward(const ds_model *m, const struct ds_ops *ops, const ds_block *p, const ds_grads *g,
                        const float *de_out, float *dxs, int64_t N) {
    ds_moe_ep *x = m->ep;
    ds_moe_ep_layer *l = &x->layers[p - m->blocks];
    const ds_config *c = &m->cfg;
    const int64_t H = c->hidden_size, Im = c->moe_intermediate_size;
    const int64_t El = x->ep.experts_per_rank, e0 = x->ep.first_expert, R = l->plan.R_recv;
    if (ds_ep_send(&x->ep, &l->plan, de_out, l->dout, H, DS_EP_TO_OWNER, x->combine, DS_COMM_COMBINE))
        fail("combine gradient");
    const int64_t *off = l->plan.local_offsets, *cnt = l->plan.local_counts;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t j = 0; j < El; j++) {
        int64_t o = off[j], n = cnt[j], e = e0 + j;
        if (!n) continue;
        ops->linear_backward(l->dact + o * Im, ds_grad_of(g, m, p->ed[e]), NULL, l->dout + o * H, l->act + o * Im,
                             p->ed[e], n, Im, H, 0);
        ops->swiglu_backward(l->dgate + o * Im, l->dup + o * Im, l->dact + o * Im, l->gate + o * Im, l->up + o * Im, n, Im);
        ops->linear_backward(l->dx + o * H, ds_grad_of(g, m, p->eg[e]), NULL, l->dgate + o * Im, l->x + o * H, p->eg[e],
                             n, H, Im, 0);
        ops->linear_backward(l->dx + o * H, ds_grad_of(g, m, p->eu[e]), NULL, l->dup + o * Im, l->x + o * H, p->eu[e],
                             n, H, Im, 1);
    }
    (void)R;
    if (ds_ep_send(&x->ep, &l->plan, l->dx, dxs, H, DS_EP_TO_HOME, x->combine, DS_COMM_DISPATCH))
        fail("dispatch gradient");
}
