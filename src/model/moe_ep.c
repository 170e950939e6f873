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

/* the layer's row buffers: memory of the table (ops) that filled them */
#define LAYER_BUFS(l) {&(l)->x, &(l)->out, &(l)->dout, &(l)->dx, &(l)->gate, &(l)->up, &(l)->act, &(l)->dact, \
                       &(l)->dgate, &(l)->dup}
enum { NBUF_H = 4, NBUF = 10 }; /* the first NBUF_H are (rows, H), the others (rows, Im) */

static void layer_free(const struct ds_ops *ops, ds_moe_ep_layer *l) {
    ds_ep_plan_free(&l->plan);
    float **b[] = LAYER_BUFS(l);
    for (int i = 0; i < NBUF; i++)
        if (*b[i]) ops->free(*b[i]), *b[i] = NULL;
}

void ds_moe_ep_free_layers(ds_moe_ep *x, ds_moe_ep_layer *layers) {
    for (int64_t i = 0; layers && i < x->nlayers; i++) layer_free(x->ops, &layers[i]);
    free(layers);
}

void ds_moe_ep_free(ds_moe_ep *x) {
    for (int64_t i = 0; i < x->nlayers; i++) layer_free(x->ops, &x->layers[i]);
    free(x->layers);
    free(x->node_of), free(x->idx_h), free(x->wf), free(x->w8);
    ds_ep_free(&x->ep);
    memset(x, 0, sizeof *x);
}

static void fail(const char *what);

static void reserve(const struct ds_ops *ops, ds_moe_ep_layer *l, int64_t rows, int64_t H, int64_t Im) {
    if (rows <= l->cap && l->x) return;
    int64_t n = rows + rows / 4 + 16;
    float **b[] = LAYER_BUFS(l);
    for (int i = 0; i < NBUF; i++) {
        if (*b[i]) ops->free(*b[i]);
        *b[i] = ops->alloc((size_t)(n * (i < NBUF_H ? H : Im)) * sizeof(float));
        if (!*b[i]) fail("row buffers");
    }
    l->cap = n;
}

static void fail(const char *what) {
    char msg[512];
    snprintf(msg, sizeof msg, "expert parallelism: %s: %s", what, ds_errmsg());
    ds_comm_abort(1, msg);
}

/* this rank's weight pointers (El each) for the grouped entries: gate, up,
 * down and their gradients (wf), the FP8/BF16-resident copies (w8, NULL when none) */
static void local_weights(ds_moe_ep *x, const ds_model *m, const ds_block *p, const ds_grads *g) {
    const int64_t El = x->ep.experts_per_rank, e0 = x->ep.first_expert;
    if (!x->wf) x->wf = ds_calloc((size_t)(6 * El), sizeof *x->wf), x->w8 = ds_calloc((size_t)(3 * El), sizeof *x->w8);
    for (int64_t j = 0; j < El; j++) {
        int64_t e = e0 + j;
        x->wf[j] = p->eg[e], x->wf[El + j] = p->eu[e], x->wf[2 * El + j] = p->ed[e];
        x->w8[j] = p->eg8 ? p->eg8[e] : NULL;
        x->w8[El + j] = p->eu8 ? p->eu8[e] : NULL;
        x->w8[2 * El + j] = p->ed8 ? p->ed8[e] : NULL;
        if (g) {
            x->wf[3 * El + j] = ds_grad_of(g, m, p->eg[e]);
            x->wf[4 * El + j] = ds_grad_of(g, m, p->eu[e]);
            x->wf[5 * El + j] = ds_grad_of(g, m, p->ed[e]);
        }
    }
}

/* per token, the nodes its dispatch reaches (node-limited routing, logged):
 * the expert ids r_idx (N, K) are routing metadata, copied to the host like
 * the load counts; the count is a host loop over those ids */
static void count_nodes(ds_moe_ep *x, const struct ds_ops *ops, const int32_t *r_idx, int64_t N, int64_t K) {
    const int64_t El = x->ep.experts_per_rank;
    if (N * K > x->idx_cap) {
        free(x->idx_h);
        x->idx_cap = N * K + N * K / 4 + 16;
        x->idx_h = ds_malloc((size_t)x->idx_cap * sizeof(int32_t));
    }
    ops->copy_d2h(x->idx_h, r_idx, (size_t)(N * K) * sizeof(int32_t));
    for (int64_t n = 0; n < N; n++) { /* host: ids */
        uint64_t seen = 0;
        int cntn = 0;
        for (int64_t k = 0; k < K; k++) {
            int nd = x->node_of[x->idx_h[n * K + k] / El] & 63;
            if (!(seen >> nd & 1)) seen |= 1ull << nd, cntn++;
        }
        x->node_sum += cntn, x->tok_layers++;
        if (cntn > x->node_max) x->node_max = cntn;
    }
}

void ds_moe_ep_forward(const ds_model *m, const struct ds_ops *ops, const ds_block *p, const ds_block_acts *a, int64_t N) {
    ds_moe_ep *x = m->ep;
    ds_moe_ep_layer *l = &x->layers[p - m->blocks];
    const ds_config *c = &m->cfg;
    const int64_t H = c->hidden_size, Im = c->moe_intermediate_size, K = c->num_experts_per_tok;
    const int64_t El = x->ep.experts_per_rank;
    if (!x->ops) x->ops = ops;
    DS_ASSERT(x->ops == ops); /* the row buffers belong to one table */
    int64_t R = ds_ep_plan_make(&x->ep, &l->plan, a->counts_h);
    if (R < 0) fail("count exchange");
    reserve(ops, l, R, H, Im);
    if (ds_ep_send(&x->ep, ops, &l->plan, a->xs, l->x, H, DS_EP_TO_OWNER, x->dispatch, DS_COMM_DISPATCH))
        fail("dispatch");
    x->rows_in += N * K, x->rows_local += R;
    count_nodes(x, ops, a->r_idx, N, K);
    /* the local experts' grouped SwiGLU on the rows that arrived (counts, offsets: the plan's, host) */
    const int64_t *off = l->plan.local_offsets, *cnt = l->plan.local_counts;
    local_weights(x, m, p, NULL);
    const float *const *w = (const float *const *)x->wf;
    const ds_fp8w *const *w8 = x->w8;
    ops->grouped_linear_forward(ops, l->gate, l->x, w, p->eg8 ? w8 : NULL, cnt, off, El, H, Im);
    ops->grouped_linear_forward(ops, l->up, l->x, w + El, p->eu8 ? w8 + El : NULL, cnt, off, El, H, Im);
    ops->swiglu_forward(l->act, l->gate, l->up, R, Im);
    ops->grouped_linear_forward(ops, l->out, l->act, w + 2 * El, p->ed8 ? w8 + 2 * El : NULL, cnt, off, El, Im, H);
    if (ds_ep_send(&x->ep, ops, &l->plan, l->out, a->e_out, H, DS_EP_TO_HOME, x->combine, DS_COMM_COMBINE))
        fail("combine");
}

void ds_moe_ep_backward(const ds_model *m, const struct ds_ops *ops, const ds_block *p, const ds_grads *g,
                        const float *de_out, float *dxs, int64_t N) {
    ds_moe_ep *x = m->ep;
    ds_moe_ep_layer *l = &x->layers[p - m->blocks];
    const ds_config *c = &m->cfg;
    const int64_t H = c->hidden_size, Im = c->moe_intermediate_size;
    const int64_t El = x->ep.experts_per_rank, R = l->plan.R_recv;
    (void)N;
    if (ds_ep_send(&x->ep, ops, &l->plan, de_out, l->dout, H, DS_EP_TO_OWNER, x->combine, DS_COMM_COMBINE))
        fail("combine gradient");
    const int64_t *off = l->plan.local_offsets, *cnt = l->plan.local_counts;
    local_weights(x, m, p, g);
    const float *const *w = (const float *const *)x->wf;
    float *const *dw = x->wf + 3 * El;
    ops->grouped_linear_backward(ops, l->dact, dw + 2 * El, l->dout, l->act, w + 2 * El, cnt, off, El, Im, H, 0);
    ops->swiglu_backward(l->dgate, l->dup, l->dact, l->gate, l->up, R, Im);
    ops->grouped_linear_backward(ops, l->dx, dw, l->dgate, l->x, w, cnt, off, El, H, Im, 0);
    ops->grouped_linear_backward(ops, l->dx, dw + El, l->dup, l->x, w + El, cnt, off, El, H, Im, 1);
    if (ds_ep_send(&x->ep, ops, &l->plan, l->dx, dxs, H, DS_EP_TO_HOME, x->combine, DS_COMM_DISPATCH))
        fail("dispatch gradient");
}
