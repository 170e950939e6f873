/*
 * moe.c — the MoE layer (moe.h, docs/engine.md §2.4, doc §5): the shape of
 * the code that expert parallelism extends (an exchange of the sorted rows
 * to the experts' owners around the grouped GEMMs).  Every tensor operation
 * is an ops entry; the host sees only the per-expert load counts, copied
 * once per layer for the GEMM sizes.
 */
#include "model/moe.h"
#include "model/moe_ep.h"

void ds_moe_forward(ds_block_acts *a, const ds_block *p, const ds_model *m, const struct ds_ops *ops, int64_t N) {
    const ds_config *c = &m->cfg;
    const int64_t H = c->hidden_size, E = c->n_routed_experts, K = c->num_experts_per_tok;
    const int64_t Im = c->moe_intermediate_size, R = N * K;
    ds_route_params rp = ds_route_params_of(c);
    ds_matmul_any(ops, a->r_logits, a->ln2, p->router, p->router8, N, H, E);
    ops->moe_route_forward(a->r_w, a->r_idx, a->r_scores, a->r_logits, p->router_bias, &rp, N);
    ops->moe_sort(a->counts, a->offsets, a->order, a->pos, a->r_idx, N, K, E); /* the load count */
    ops->copy_d2h(a->counts_h, a->counts, (size_t)E * sizeof(int64_t));      /* GEMM sizes, logs, bias update */
    ops->copy_d2h(a->offsets_h, a->offsets, (size_t)(E + 1) * sizeof(int64_t));
    ops->moe_permute(a->xs, a->ln2, a->order, N, K, H);
    if (m->ep) { /* expert parallelism (model/moe_ep.h): the rows go to their experts' owners and back */
        ds_moe_ep_forward(m, ops, p, a, N);
    } else {
        const int64_t *cnt = a->counts_h, *off = a->offsets_h;
        ops->grouped_linear_forward(ops, a->e_gate, a->xs, (const float *const *)p->eg, p->eg8, cnt, off, E, H, Im);
        ops->grouped_linear_forward(ops, a->e_up, a->xs, (const float *const *)p->eu, p->eu8, cnt, off, E, H, Im);
        ds_fp8_act_store(ops, &a->fp8_xs, a->xs, R, H); /* FP8 cache (no-op when off), before e_act reuses the staging */
        ops->swiglu_forward(a->e_act, a->e_gate, a->e_up, R, Im);
        ops->grouped_linear_forward(ops, a->e_out, a->e_act, (const float *const *)p->ed, p->ed8, cnt, off, E, Im, H);
        ds_fp8_act_store(ops, &a->fp8_e_act, a->e_act, R, Im);
    }
    /* combine: mlp_out[n] = Σ_k w[n,k]·e_out[pos[n,k]]  (+ shared experts below) */
    ops->moe_combine_forward(a->mlp_out, a->e_out, a->r_w, a->pos, N, K, H);
    if (p->inter > 0) {
        ds_linear_any(ops, a->h_gate, a->ln2, p->gate, p->gate8, NULL, N, H, p->inter);
        ds_linear_any(ops, a->h_up, a->ln2, p->up, p->up8, NULL, N, H, p->inter);
        ops->swiglu_forward(a->h_act, a->h_gate, a->h_up, N, p->inter);
        ds_linear_any(ops, a->attn_proj, a->h_act, p->down, p->down8, NULL, N, p->inter, H); /* scratch reuse */
        ds_fp8_act_store(ops, &a->fp8_h_act, a->h_act, N, p->inter);
        ops->residual_forward(a->mlp_out, a->mlp_out, a->attn_proj, N * H);
    }
}

void ds_moe_backward(const float *dy, const float *dscores, const ds_block_acts *a, const ds_block *p,
                     const ds_model *m, const struct ds_ops *ops, ds_grads *g, ds_bwd *w, int64_t N) {
    const ds_config *c = &m->cfg;
    const int64_t H = c->hidden_size, E = c->n_routed_experts, K = c->num_experts_per_tok;
    const int64_t Im = c->moe_intermediate_size, R = N * K;
    ds_route_params rp = ds_route_params_of(c);
    const int64_t *cnt = a->counts_h, *off = a->offsets_h;
    float **dg = w->expert_grads, **du = dg + E, **dd = du + E; /* [host] E pointers each */
    for (int64_t e = 0; e < E; e++) {
        dg[e] = ds_grad_of(g, m, p->eg[e]);
        du[e] = ds_grad_of(g, m, p->eu[e]);
        dd[e] = ds_grad_of(g, m, p->ed[e]);
    }
    ops->moe_combine_backward(w->de_out, w->dw, dy, a->e_out, a->r_w, a->pos, N, K, H);
    if (m->ep) {
        ds_moe_ep_backward(m, ops, p, g, w->de_out, w->dxs, N);
    } else {
        /* with the FP8 cache, e_act and xs share one staging buffer: the down +
         * SwiGLU pass after e_act's dequantization, the gate/up pass after xs's */
        ds_fp8_act_load(ops, a->e_act, &a->fp8_e_act, R, Im);
        ops->grouped_linear_backward(ops, w->de_act, dd, w->de_out, a->e_act, (const float *const *)p->ed, cnt, off, E,
                                     Im, H, 0);
        ops->swiglu_backward(w->de_gate, w->de_up, w->de_act, a->e_gate, a->e_up, R, Im);
        ds_fp8_act_load(ops, a->xs, &a->fp8_xs, R, H);
        ops->grouped_linear_backward(ops, w->dxs, dg, w->de_gate, a->xs, (const float *const *)p->eg, cnt, off, E, H,
                                     Im, 0);
        ops->grouped_linear_backward(ops, w->dxs, du, w->de_up, a->xs, (const float *const *)p->eu, cnt, off, E, H, Im,
                                     1);
    }
    ops->memset(w->dln2, 0, (size_t)(N * H) * sizeof(float));
    ops->moe_permute_backward(w->dln2, w->dxs, a->pos, N, K, H);
    ops->moe_route_backward(w->dr_logits, w->dw, dscores, a->r_scores, a->r_idx, &rp, N);
    ops->matmul_backward(w->dln2, ds_grad_of(g, m, p->router), NULL, w->dr_logits, a->ln2, p->router, N, H, E, 1);
}
