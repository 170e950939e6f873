/*
 * backward.c — losses and the FP32 backward pass of the main model and the
 * MTP modules (backward.h), the mirror of model.c's forward (the MoE layer's
 * in moe.c), through the ops table.  Parameter gradients are added into ds_grads;
 * activation gradients live in the ds_bwd scratch (allocated once).
 */
#include "model/backward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "io/safetensors.h"
#include "model/moe.h"

/* ---- gradient buffer --------------------------------------------------------- */

int ds_grads_create(ds_grads *g, const ds_model *m) {
    g->n = m->layout.total;
    g->mem = m->mem;
    g->g = ds_model_mem_alloc(g->mem, (size_t)g->n * sizeof(float)); /* zero-filled */
    if (!g->g) return ds_err("gradients: the %s device could not allocate them", g->mem->name);
    return 0;
}

void ds_grads_free(ds_grads *g) {
    ds_model_mem_free(g->mem, g->g);
    memset(g, 0, sizeof *g);
}

void ds_grads_zero(ds_grads *g) {
    if (g->mem) g->mem->memset(g->g, 0, (size_t)g->n * sizeof(float));
    else memset(g->g, 0, (size_t)g->n * sizeof(float));
}

/* one reduction over the whole buffer (finite iff every element is, the sum
 * being in double); per tensor only to name the bad one */
const char *ds_grads_check_finite(const ds_grads *g, const ds_model *m, const struct ds_ops *ops) {
    if (isfinite(ops->sumsq(g->g, g->n))) return NULL;
    for (int64_t i = 0; i < m->layout.n; i++) {
        const ds_param *p = &m->layout.p[i];
        if ((p->flags & (DS_PARAM_ALIAS | DS_PARAM_BUFFER)) || p->offset < 0) continue;
        if (!isfinite(ops->sumsq(g->g + p->offset, p->numel))) return p->name;
    }
    return NULL;
}

ds_loss_opts ds_loss_opts_default(void) {
    ds_loss_opts o;
    memset(&o, 0, sizeof o);
    o.ignore = DS_IGNORE_INDEX;
    return o;
}

int ds_loss_opts_parse_balance(ds_loss_opts *o, const char *spec) {
    double a = -1, b = -1, c = -1;
    char tail;
    if (strcmp(spec, "none") == 0) {
        o->balance = DS_BAL_NONE;
        return 0;
    }
    if (strncmp(spec, "seq:", 4) == 0) {
        if (sscanf(spec + 4, "%lf%c", &a, &tail) != 1 || !(a >= 0) || !isfinite(a))
            return ds_err("--balance-loss %s: expected seq:ALPHA with ALPHA >= 0 (e.g. seq:0.0001)", ds_quote(spec));
        o->balance = DS_BAL_SEQ;
        o->alpha = a;
        return 0;
    }
    if (strncmp(spec, "v2:", 3) == 0) {
        if (sscanf(spec + 3, "%lf,%lf,%lf%c", &a, &b, &c, &tail) != 3 || !(a >= 0 && b >= 0 && c >= 0) ||
            !isfinite(a + b + c))
            return ds_err("--balance-loss %s: expected v2:A1,A2,A3 with weights >= 0 (e.g. v2:0.003,0.05,0.02)",
                          ds_quote(spec));
        o->balance = DS_BAL_V2;
        o->a1 = a, o->a2 = b, o->a3 = c;
        return 0;
    }
    return ds_err("--balance-loss %s: expected seq:ALPHA, v2:A1,A2,A3 or none", ds_quote(spec));
}

/* ---- scratch ------------------------------------------------------------------ */

typedef ds_carver carver; /* base.h */
#define carve ds_carve

static void carve_bwd(carver *cv, ds_bwd *w, const ds_model *m) {
    const ds_config *c = &m->cfg;
    const int64_t N = w->B * w->T, H = c->hidden_size, V = c->vocab_size;
    const int64_t nh = c->num_attention_heads, dq = ds_config_qk_head_dim(c), dn = c->qk_nope_head_dim;
    const int64_t dv = c->v_head_dim, dr = c->qk_rope_head_dim, rq = c->q_lora_rank, rkv = c->kv_lora_rank;
    const int64_t E = c->n_routed_experts, K = c->num_experts_per_tok, Im = c->moe_intermediate_size;
    const int64_t D = c->num_nextn_predict_layers;
    int64_t inter = 1;
    for (int64_t l = 0; l < m->nblocks; l++)
        if (m->blocks[l].inter > inter) inter = m->blocks[l].inter;
    w->dlogits = carve(cv, N * V);
    w->dx = carve(cv, N * H);
    w->dx2 = carve(cv, N * H);
    for (int64_t k = 0; k <= D; k++) {
        float *p = carve(cv, N * H);
        if (cv->base) w->dh[k] = p;
    }
    w->dln1 = carve(cv, N * H);
    w->dqa = carve(cv, N * (rq > 0 ? rq : 1));
    w->dqa_n = carve(cv, N * (rq > 0 ? rq : 1));
    w->dq = carve(cv, N * nh * dq);
    w->dkva = carve(cv, N * (rkv + dr));
    w->dckv = carve(cv, N * rkv);
    w->dkv = carve(cv, N * nh * (dn + dv));
    w->dk = carve(cv, N * nh * dq);
    w->dv = carve(cv, N * nh * dv);
    w->datt = carve(cv, N * nh * dv);
    w->dxmid = carve(cv, N * H);
    w->dln2 = carve(cv, N * H);
    w->dh_gate = carve(cv, N * inter);
    w->dh_up = carve(cv, N * inter);
    w->dh_act = carve(cv, N * inter);
    w->dtmp = carve(cv, N * H);
    w->dscores = carve(cv, N * (E > 0 ? E : 1));
    w->dr_logits = carve(cv, N * (E > 0 ? E : 1));
    w->dw = carve(cv, N * (K > 0 ? K : 1));
    w->dxs = carve(cv, N * K * H);
    w->de_gate = carve(cv, N * K * Im);
    w->de_up = carve(cv, N * K * Im);
    w->de_act = carve(cv, N * K * Im);
    w->de_out = carve(cv, N * K * H);
    w->coef = carve(cv, E > 0 ? E : 1);
    w->sel = carve(cv, (w->T * (E > 0 ? E : 1) + 3) / 4);
    w->targets = carve(cv, N);
    w->mtp_targets = carve(cv, N);
    w->dm_cat = carve(cv, N * 2 * H);
    w->row_loss = carve(cv, N);
}

int ds_bwd_create(ds_bwd *w, const ds_model *m, int64_t B, int64_t T) {
    memset(w, 0, sizeof *w);
    if (B <= 0 || T <= 0) return ds_err("backward: batch and sequence length must be positive");
    int64_t N;
    if (__builtin_mul_overflow(B, T, &N) || N > ((int64_t)1 << 32))
        return ds_err("backward: batch %lld x sequence length %lld is too many tokens", (long long)B, (long long)T);
    w->B = B;
    w->T = T;
    w->dh = ds_calloc((size_t)(m->cfg.num_nextn_predict_layers + 1), sizeof(float *));
    w->expert_grads = ds_calloc((size_t)(3 * m->cfg.n_routed_experts + 1), sizeof(float *));
    w->targets_h = ds_calloc((size_t)N, sizeof(int32_t));
    w->ids_h = ds_calloc((size_t)N, sizeof(int32_t));
    carver cv = {NULL, 0};
    carve_bwd(&cv, w, m);
    /* the count saturates (ds_carve); checked before allocating */
    char what[96];
    snprintf(what, sizeof what, "backward buffers for %lld x %lld tokens", (long long)B, (long long)T);
    if (ds_mem_check(cv.off > (size_t)INT64_MAX / sizeof(float) ? -1 : (int64_t)(cv.off * sizeof(float)), what)) {
        ds_bwd_free(w);
        return -1;
    }
    w->arena_floats = cv.off;
    w->mem = m->mem;
    w->arena = ds_model_mem_alloc(w->mem, cv.off * sizeof(float));
    if (!w->arena) {
        ds_bwd_free(w);
        return ds_err("%s: the %s device could not allocate them", what, m->mem->name);
    }
    cv = (carver){w->arena, 0};
    carve_bwd(&cv, w, m);
    return 0;
}

void ds_bwd_free(ds_bwd *w) {
    ds_model_mem_free(w->mem, w->arena);
    free(w->dh);
    free(w->expert_grads);
    free(w->targets_h);
    free(w->ids_h);
    memset(w, 0, sizeof *w);
}

/* ---- targets -------------------------------------------------------------------- */

void ds_targets_from_ids(int32_t *targets, const int32_t *ids, int64_t B, int64_t T, int32_t ignore) {
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) targets[b * T + t] = t + 1 < T ? ids[b * T + t + 1] : ignore; /* host: ids */
}

int64_t ds_count_targets(const int32_t *targets, int64_t B, int64_t T, int64_t k, int32_t ignore) {
    int64_t n = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i + k < T; i++) n += targets[b * T + i + k] != ignore; /* host: ids */
    return n;
}

/* ---- block backward -------------------------------------------------------------- */


/* Dense MLP or shared experts: y = down(silu(gate(x)) ⊙ up(x)); dln2 gets
 * dx written (acc 0) or added (acc 1). */
static void mlp_backward(float *dln2, const float *dy, const ds_block_acts *a, const ds_block *p, const ds_model *m,
                         const struct ds_ops *ops, ds_grads *g, ds_bwd *w, int64_t N, int acc) {
    const int64_t H = m->cfg.hidden_size, I = p->inter;
    ds_fp8_act_load(ops, a->h_act, &a->fp8_h_act, N, I); /* FP8 cache -> staging (no-op when off) */
    ops->linear_backward(w->dh_act, ds_grad_of(g, m, p->down), NULL, dy, a->h_act, p->down, N, I, H, 0);
    ops->swiglu_backward(w->dh_gate, w->dh_up, w->dh_act, a->h_gate, a->h_up, N, I);
    ds_fp8_act_load(ops, a->ln2, &a->fp8_ln2, N, H); /* dense layers; overwrites h_act's staging */
    ops->linear_backward(dln2, ds_grad_of(g, m, p->gate), NULL, w->dh_gate, a->ln2, p->gate, N, H, I, acc);
    ops->linear_backward(dln2, ds_grad_of(g, m, p->up), NULL, w->dh_up, a->ln2, p->up, N, H, I, 1);
}

/* dinp (B*T, H) written = ∂L/∂inp given dout (B*T, H) = ∂L/∂out; dscores
 * (B*T, E) gradient reaching the router affinities directly (balance losses)
 * or NULL.  Mirror of model.c's block_forward. */
static void block_backward(float *dinp, const float *dout, const float *inp, const ds_block_acts *a,
                           const ds_block *p, const ds_model *m, const struct ds_ops *ops, ds_grads *g, ds_bwd *w,
                           const float *cos_t,
                           const float *sin_t, int64_t B, int64_t T, const float *dscores) {
    const ds_config *c = &m->cfg;
    const int64_t N = B * T, H = c->hidden_size;
    const int64_t nh = c->num_attention_heads, dq = ds_config_qk_head_dim(c), dn = c->qk_nope_head_dim;
    const int64_t dv = c->v_head_dim, dr = c->qk_rope_head_dim, rq = c->q_lora_rank, rkv = c->kv_lora_rank;
    const float eps = (float)c->rms_norm_eps, eps_lat = 1e-6f;
    const int halves = !c->rope_interleave;
#define G(x) ds_grad_of(g, m, (x))

    /* out = x_mid + mlp_out */
    ops->copy_d2d(w->dxmid, dout, (size_t)(N * H) * sizeof(float));
    if (p->moe) {
        ds_moe_backward(dout, dscores, a, p, m, ops, g, w, N); /* moe.c */
        if (p->inter > 0) mlp_backward(w->dln2, dout, a, p, m, ops, g, w, N, 1);
    } else {
        mlp_backward(w->dln2, dout, a, p, m, ops, g, w, N, 0);
    }
    ops->rmsnorm_backward(w->dxmid, G(p->post_norm), w->dln2, a->x_mid, p->post_norm, a->ln2_rstd, N, H, H, H, H, eps);

    /* MLA: x_mid = inp + o_proj(attention) */
    ops->linear_backward(w->datt, G(p->o_proj), G(p->o_bias), w->dxmid, a->att, p->o_proj, N, nh * dv, H, 0);
    ops->attention_backward(w->dq, w->dk, w->dv, w->datt, a->att, a->lse, a->q, a->k, a->v, B, T, nh, dq, dv,
                          m->softmax_scale);
    /* k = [k_nope (per head) | k_pe (shared)], v: back into kv and kva */
    ops->mla_kv_assemble_backward(w->dkv, w->dkva, w->dk, w->dv, N, nh, dn, dv, rkv, dr);
    ds_fp8_act_load(ops, a->ckv, &a->fp8_ckv, N, rkv); /* FP8 cache -> staging (no-op when off) */
    ops->linear_backward(w->dckv, G(p->kv_b), NULL, w->dkv, a->ckv, p->kv_b, N, rkv, nh * (dn + dv), 0);
    ops->rope_backward(w->dkva, cos_t, sin_t, B, T, 1, rkv + dr, rkv, dr, halves);
    ops->rmsnorm_backward(w->dkva, G(p->kv_a_norm), w->dckv, a->kva, p->kv_a_norm, a->ckv_rstd, N, rkv, rkv + dr, rkv,
                        rkv + dr, eps_lat);
    ds_fp8_act_load(ops, a->ln1, &a->fp8_ln1, N, H);
    ops->linear_backward(w->dln1, G(p->kv_a), G(p->kv_a_bias), w->dkva, a->ln1, p->kv_a, N, H, rkv + dr, 0);
    ops->rope_backward(w->dq, cos_t, sin_t, B, T, nh, dq, dn, dr, halves);
    if (rq > 0) {
        ds_fp8_act_load(ops, a->qa_n, &a->fp8_qa_n, N, rq);
        ops->linear_backward(w->dqa_n, G(p->q_b), NULL, w->dq, a->qa_n, p->q_b, N, rq, nh * dq, 0);
        ops->memset(w->dqa, 0, (size_t)(N * rq) * sizeof(float));
        ops->rmsnorm_backward(w->dqa, G(p->q_a_norm), w->dqa_n, a->qa, p->q_a_norm, a->qa_rstd, N, rq, rq, rq, rq,
                            eps_lat);
        ops->linear_backward(w->dln1, G(p->q_a), G(p->q_a_bias), w->dqa, a->ln1, p->q_a, N, H, rq, 1);
    } else {
        ops->linear_backward(w->dln1, G(p->q_proj), NULL, w->dq, a->ln1, p->q_proj, N, H, nh * dq, 1);
    }
    ops->copy_d2d(dinp, w->dxmid, (size_t)(N * H) * sizeof(float));
    ops->rmsnorm_backward(dinp, G(p->in_norm), w->dln1, inp, p->in_norm, a->ln1_rstd, N, H, H, H, H, eps);
#undef G
}

/* Balance losses of one main-model MoE layer: adds α·∂/∂s into dscores (B*T, E)
 * and returns the layer's total (after α, averaged over seq_denom sequences). */
static double balance_layer(float *dscores, const ds_block_acts *a, const ds_model *m, const struct ds_ops *ops,
                            ds_bwd *w, const ds_loss_opts *o, double seq_denom, ds_loss_terms *t) {
    const ds_config *c = &m->cfg;
    const int64_t B = w->B, T = w->T, E = c->n_routed_experts, K = c->num_experts_per_tok;
    const int normalize = c->scoring_func == DS_SCORE_SIGMOID;
    int64_t D = 1, M = 1;
    double ae = o->alpha, ad = 0, ac = 0;
    if (o->balance == DS_BAL_V2) {
        D = c->n_group > 0 ? c->n_group : 1;
        M = c->topk_group > 0 ? c->topk_group : 1;
        ae = o->a1, ad = o->a2, ac = o->a3;
    }
    double total = 0;
    for (int64_t b = 0; b < B; b++) {
        ds_balance_terms r;
        ops->balance_loss(dscores + b * T * E, w->coef, w->sel, a->r_scores + b * T * E, a->r_idx + b * T * K, T, E,
                          K, D, M, normalize, ae, ad, ac, 1.0 / seq_denom, &r);
        t->bal_expert += ae * r.expert / seq_denom;
        t->bal_device += ad * r.device / seq_denom;
        t->bal_comm += ac * r.comm / seq_denom;
        total += (ae * r.expert + ad * r.device + ac * r.comm) / seq_denom;
    }
    return total;
}

/* ---- model backward ------------------------------------------------------------- */

static int backward_range(const ds_model *m, ds_acts *a, const struct ds_ops *ops, ds_grads *g, ds_bwd *w,
                          const int32_t *targets, const ds_loss_opts *o, ds_loss_terms *t, const float *dout, float *dinp);

int ds_model_backward(const ds_model *m, ds_acts *a, const struct ds_ops *ops, ds_grads *g, ds_bwd *w,
                      const int32_t *targets,                      const ds_loss_opts *o, ds_loss_terms *t) {
    if (a->l0 != 0 || a->l1 != m->cfg.num_hidden_layers) return ds_err("backward: these activations are a pipeline stage's");
    return backward_range(m, a, ops, g, w, targets, o, t, NULL, NULL);
}

int ds_model_backward_stage(const ds_model *m, ds_acts *a, const struct ds_ops *ops, ds_grads *g, ds_bwd *w,
                            const int32_t *targets, const ds_loss_opts *o, ds_loss_terms *t, const float *dout,
                            float *dinp) {
    if (a->l1 < m->cfg.num_hidden_layers && !dout) return ds_err("backward of a stage before the last: no output gradient");
    if (a->l0 > 0 && !dinp) return ds_err("backward of a stage after the first: nowhere to put the input gradient");
    return backward_range(m, a, ops, g, w, targets, o, t, dout, dinp);
}

/* the backward of main layers [a->l0, a->l1): from the losses when a->l1 =
 * L, else from dout (the next stage's input gradient); ends with the
 * embedding's gradient when a->l0 = 0, else the input gradient in dinp */
static int backward_range(const ds_model *m, ds_acts *a, const struct ds_ops *ops, ds_grads *g, ds_bwd *w,
                          const int32_t *targets, const ds_loss_opts *o, ds_loss_terms *t, const float *dout, float *dinp) {
    const ds_config *c = &m->cfg;
    const int64_t B = a->B, T = a->T, N = B * T, H = c->hidden_size, V = c->vocab_size;
    const int64_t L = c->num_hidden_layers, D = c->num_nextn_predict_layers;
    const float eps = (float)c->rms_norm_eps;
    memset(t, 0, sizeof *t);
    if (ds_model_require_f32(m, "backward")) return -1;
    if (w->B != B || w->T != T)
        return ds_err("backward: scratch is for B=%lld, T=%lld but the activations are B=%lld, T=%lld",
                      (long long)w->B, (long long)w->T, (long long)B, (long long)T);
    if (o->mtp_lambda < 0 || o->alpha < 0 || o->a1 < 0 || o->a2 < 0 || o->a3 < 0)
        return ds_err("backward: loss weights must be >= 0");
    const int last = a->l1 == L;
    const int use_mtp = last && o->mtp_lambda > 0 && D > 0;
    if (use_mtp && !a->mtp) return ds_err("backward: --mtp-lambda needs the forward to run the MTP modules");
    if (use_mtp && D > DS_MAX_MTP) return ds_err("backward: at most %d MTP modules", DS_MAX_MTP);
    if (o->balance == DS_BAL_V2 && c->n_routed_experts % (c->n_group > 0 ? c->n_group : 1))
        return ds_err("backward: v2 balance loss: n_routed_experts %lld is not a multiple of n_group %lld",
                      (long long)c->n_routed_experts, (long long)c->n_group);
    if (!last) {
        /* a stage before the last: from the gradient of its output */
        ops->copy_h2d(w->dx, dout, (size_t)(N * H) * sizeof(float));
    } else if (targets) {
        for (int64_t n = 0; n < N; n++) /* host: ids */
            if (targets[n] != o->ignore && (targets[n] < 0 || targets[n] >= V))
                return ds_err("backward: target %lld at sequence %lld, position %lld is outside the vocabulary [0, "
                              "%lld) and not the ignore id %d",
                              (long long)targets[n], (long long)(n / T), (long long)(n % T), (long long)V, o->ignore);
        ops->copy_h2d(w->targets, targets, (size_t)N * sizeof(int32_t));
        memcpy(w->targets_h, targets, (size_t)N * sizeof(int32_t)); /* host: ids */
    } else {
        ops->copy_d2h(w->ids_h, a->ids, (size_t)N * sizeof(int32_t));
        ds_targets_from_ids(w->targets_h, w->ids_h, B, T, o->ignore);
        ops->copy_h2d(w->targets, w->targets_h, (size_t)N * sizeof(int32_t));
    }
    const int32_t *tg = w->targets_h; /* [host] */
#define G(x) ds_grad_of(g, m, (x))
    if (last) {
    for (int64_t k = 0; k <= D; k++) ops->memset(w->dh[k], 0, (size_t)(N * H) * sizeof(float));

    /* MTP modules, last to first: module k's input gradient flows into h^{k-1} */
    if (use_mtp) {
        for (int64_t k = D; k >= 1; k--) {
            const int64_t Tk = T - k, Tp = T - k + 1, Nk = B * Tk;
            if (Tk <= 0) continue;
            const ds_block_acts *x2 = &a->blk[L + k - 1];
            const ds_block *p = &m->blocks[L + k - 1];
            for (int64_t b = 0; b < B; b++) /* the targets of depth k: staged in ids_h, then to the device */
                for (int64_t i = 0; i < Tk; i++) w->ids_h[b * Tk + i] = tg[b * T + i + k]; /* host: ids */
            ops->copy_h2d(w->mtp_targets, w->ids_h, (size_t)Nk * sizeof(int32_t));
            int64_t cnt = ds_count_targets(tg, B, T, k, o->ignore);
            double denom = o->mtp_denom[k - 1] > 0 ? o->mtp_denom[k - 1] : (double)cnt;
            double wk = o->mtp_lambda / (double)D;
            double sum = ops->cross_entropy(w->dlogits, w->row_loss, NULL, a->mtp_logits[k - 1], w->mtp_targets, Nk, V, o->ignore,
                                          denom > 0 ? (float)(wk / denom) : 0.0f);
            t->mtp_count[k - 1] = cnt;
            t->mtp_ce[k - 1] = denom > 0 ? sum / denom : 0.0;
            t->mtp += wk * t->mtp_ce[k - 1];
            if (cnt == 0) ds_log(DS_LOG_INFO, "warning: MTP depth %lld has no counted targets: loss 0", (long long)k);
            /* logits = head(shared_head.norm(h^k)) */
            ops->matmul_backward(w->dtmp, G(m->lm_head), NULL, w->dlogits, x2->m_hn, m->lm_head, Nk, H, V, 0);
            ops->rmsnorm_backward(w->dh[k], G(p->head_norm), w->dtmp, x2->out, p->head_norm, x2->m_hn_rstd, Nk, H, H, H,
                                H, eps);
            block_backward(w->dx, w->dh[k], x2->m_x, x2, p, m, ops, g, w, a->cos_t, a->sin_t, B, Tk, NULL);
            /* x = eh_proj([enorm(emb) ; hnorm(h^{k-1})]) */
            ops->matmul_backward(w->dm_cat, G(p->eh_proj), NULL, w->dx, x2->m_cat, p->eh_proj, Nk, 2 * H, H, 0);
            ops->memset(w->dtmp, 0, (size_t)(Nk * H) * sizeof(float));
            /* rstd NULL: recomputed by the entry from its input (the same
             * float sums as the forward's rmsnorm before it saved them) */
            ops->rmsnorm_backward(w->dtmp, G(p->enorm), w->dm_cat, x2->m_emb, p->enorm, NULL, Nk, H, H, 2 * H, H, eps);
            const float *hprev = k == 1 ? a->hfinal : a->blk[L + k - 2].out;
            for (int64_t b = 0; b < B; b++) {
                ops->embedding_backward(G(m->embed), w->dtmp + b * Tk * H, a->ids + b * T + k, Tk, H);
                ops->rmsnorm_backward(w->dh[k - 1] + b * Tp * H, G(p->hnorm), w->dm_cat + b * Tk * 2 * H + H,
                                    hprev + b * Tp * H, p->hnorm, NULL, Tk, H, H, 2 * H, H, eps);
            }
        }
    }

    /* main model: CE, head, final norm */
    int64_t cnt = 0;
    int64_t cnt_all = ds_count_targets(tg, B, T, 0, o->ignore);
    double denom = o->ce_denom > 0 ? o->ce_denom : (double)cnt_all;
    double sum = ops->cross_entropy(w->dlogits, w->row_loss, &cnt, a->logits, w->targets, N, V, o->ignore, denom > 0 ? (float)(1.0 / denom) : 0.0f);
    t->ce_count = cnt;
    t->ce = denom > 0 ? sum / denom : 0.0;
    if (cnt == 0) ds_log(DS_LOG_INFO, "warning: no counted targets in the batch (all ignored): CE loss 0, no CE gradient");
    ops->matmul_backward(w->dh[0], G(m->lm_head), NULL, w->dlogits, a->hfinal, m->lm_head, N, H, V, 1);
    const float *xl = L > 0 ? a->blk[L - 1].out : a->emb;
    ops->memset(w->dx, 0, (size_t)(N * H) * sizeof(float));
    ops->rmsnorm_backward(w->dx, G(m->norm), w->dh[0], xl, m->norm, a->hfinal_rstd, N, H, H, H, H, eps);
    } /* last */

    /* blocks, last to first */
    const double seq_denom = o->seq_denom > 0 ? o->seq_denom : (double)B;
    float *dcur = w->dx, *dnext = w->dx2;
    for (int64_t l = a->l1 - 1; l >= a->l0; l--) {
        const ds_block *p = &m->blocks[l];
        const float *dsc = NULL;
        if (p->moe && o->balance != DS_BAL_NONE) {
            ops->memset(w->dscores, 0, (size_t)(N * c->n_routed_experts) * sizeof(float));
            double lb = balance_layer(w->dscores, &a->blk[l], m, ops, w, o, seq_denom, t);
            t->bal += lb;
            if (l < DS_MAX_BAL_LAYERS) t->bal_layer[l] = lb;
            dsc = w->dscores;
        }
        const float *inp = l > a->l0 ? a->blk[l - 1].out : a->emb;
        block_backward(dnext, dcur, inp, &a->blk[l], p, m, ops, g, w, a->cos_t, a->sin_t, B, T, dsc);
        float *tmp = dcur;
        dcur = dnext;
        dnext = tmp;
    }
    if (a->l0 == 0) ops->embedding_backward(G(m->embed), dcur, a->ids, N, H);
    else ops->copy_d2h(dinp, dcur, (size_t)(N * H) * sizeof(float)); /* to the previous stage */
#undef G
    t->loss = t->ce + t->mtp + t->bal;
    return 0;
}

/* ---- writing ------------------------------------------------------------------------ */

int ds_grads_write(const char *path, const ds_model *m, const ds_grads *g, const ds_loss_terms *t, int mtp,
                   int balance) {
    const ds_layout *lo = &m->layout;
    const int64_t L = m->cfg.num_hidden_layers, D = m->cfg.num_nextn_predict_layers;
    int64_t cap = lo->n + 16 + D + L;
    ds_st_entry *e = ds_calloc((size_t)cap, sizeof *e);
    char (*names)[128] = ds_calloc((size_t)cap, 128);
    float *vals = ds_calloc((size_t)cap, sizeof(float));
    int64_t n = 0;
    /* gradients on a device: written from a host copy */
    const float *gh = g->g;
    float *staged = NULL;
    if (g->mem && !g->mem->host_visible) {
        gh = staged = ds_malloc((size_t)(g->n > 0 ? g->n : 1) * sizeof(float));
        g->mem->copy_d2h(staged, g->g, (size_t)g->n * sizeof(float));
    }
#define SCALAR(val, ...)                                                          \
    do {                                                                          \
        snprintf(names[n], 128, __VA_ARGS__);                                     \
        vals[n] = (float)(val);                                                   \
        e[n] = (ds_st_entry){names[n], DS_F32, 1, {1}, &vals[n]};                 \
        n++;                                                                      \
    } while (0)
    SCALAR(t->loss, "loss");
    SCALAR(t->ce, "loss_ce");
    if (mtp) {
        SCALAR(t->mtp, "loss_mtp");
        for (int64_t k = 1; k <= D && k <= DS_MAX_MTP; k++) SCALAR(t->mtp_ce[k - 1], "loss_mtp.%lld", (long long)k);
    }
    if (balance == DS_BAL_SEQ) {
        SCALAR(t->bal, "loss_bal");
        for (int64_t l = 0; l < L && l < DS_MAX_BAL_LAYERS; l++)
            if (m->blocks[l].moe) SCALAR(t->bal_layer[l], "loss_bal.%lld", (long long)l);
    } else if (balance == DS_BAL_V2) {
        SCALAR(t->bal_expert, "loss_expert");
        SCALAR(t->bal_device, "loss_device");
        SCALAR(t->bal_comm, "loss_comm");
    }
#undef SCALAR
    for (int64_t i = 0; i < lo->n; i++) {
        const ds_param *p = &lo->p[i];
        if (p->flags & (DS_PARAM_ALIAS | DS_PARAM_BUFFER)) continue;
        if ((p->flags & DS_PARAM_MTP) && !mtp) continue;
        snprintf(names[n], 128, "grad.%s", p->name);
        e[n] = (ds_st_entry){names[n], DS_F32, p->ndim, {p->shape[0], p->shape[1]}, gh + p->offset};
        n++;
    }
    static const char *const meta[] = {"format", "pt", NULL};
    int rc = ds_st_write(path, e, n, meta);
    free(e);
    free(names);
    free(vals);
    free(staged);
    return rc;
}
