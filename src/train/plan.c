/*
 * plan.c — the paper plan of plan.h.
 */
#include "train/plan.h"

#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "model/layout.h"
#include "model/model.h"
#include "train/pp_sched.h"

/* values kept per token by one MoE layer for its backward (ds_block_acts):
 * norms' inputs and outputs, the MLA projections, attention output, routing
 * (scores, logits, weights, ids), the K expert rows (input, gate, up, act,
 * output), the shared experts and the layer output */
static double act_per_token(const ds_config *c) {
    double H = (double)c->hidden_size, nh = (double)c->num_attention_heads, dq = (double)ds_config_qk_head_dim(c);
    double dn = (double)c->qk_nope_head_dim, dv = (double)c->v_head_dim, dr = (double)c->qk_rope_head_dim;
    double rq = (double)c->q_lora_rank, rkv = (double)c->kv_lora_rank, Im = (double)c->moe_intermediate_size;
    double E = (double)c->n_routed_experts, K = (double)c->num_experts_per_tok, Is = Im * (double)c->n_shared_experts;
    double attn = H /* ln1 */ + 2 * rq /* q_a, its norm */ + nh * dq /* q */ + (rkv + dr) /* kv_a */ + rkv /* norm */ +
                  nh * (dn + dv) /* kv_b */ + nh * dq + nh * dv /* k, v */ + nh * dv /* attention */ + H /* o_proj */;
    double moe = 2 * H /* x_mid, ln2 */ + 2 * E + 2 * K /* routing */ + K * H /* xs */ + 3 * K * Im + K * H +
                 3 * Is /* shared */ + 2 * H /* mlp_out, out */;
    return attn + moe;
}

/* the pipeline figures of plan.h: split, costs, in-flight counts, bubbles */
static int pipeline(const ds_config *c, const ds_plan_in *in, int64_t D, ds_plan_out *o) {
    const int S = (int)in->pp;
    int64_t M = in->micro_batches;
    if (M <= 0) M = in->global_batch / (D * in->micro_batch) > 0 ? in->global_batch / (D * in->micro_batch) : 1;
    if ((double)M * S > (double)(1 << 22)) /* the time model keeps S x M end times */
        return ds_err("%d stages x %lld micro-batches: at most %d in all", S, (long long)M, 1 << 22);
    o->pp_m = M;
    size_t n = (size_t)S;
    o->pp_first = malloc(sizeof(int64_t) * (n + 1));
    o->pp_in_flight = malloc(sizeof(int64_t) * n);
    o->pp_cost = malloc(sizeof(double) * n), o->pp_share = malloc(sizeof(double) * n);
    o->pp_act = malloc(sizeof(double) * n), o->pp_act_recompute = malloc(sizeof(double) * n);
    o->pp_busy = malloc(sizeof(double) * n);
    double *b = malloc(sizeof(double) * n);
    if (!o->pp_first || !o->pp_in_flight || !o->pp_cost || !o->pp_share || !o->pp_act || !o->pp_act_recompute ||
        !o->pp_busy || !b) {
        free(b);
        return ds_err("out of memory for %d stages", S);
    }
    if (ds_pp_split(c, S, in->pp_layers, in->seq, o->pp_first)) {
        free(b);
        return -1;
    }
    double sum = 0;
    o->pp_f = 0;
    for (int s = 0; s < S; s++) {
        o->pp_cost[s] = ds_pp_stage_cost(c, S, o->pp_first, s, in->seq);
        b[s] = 2 * o->pp_cost[s];
        sum += o->pp_cost[s];
        if (o->pp_cost[s] > o->pp_f) o->pp_f = o->pp_cost[s];
        o->pp_in_flight[s] = ds_pp_in_flight(S, s, (int)M);
    }
    for (int s = 0; s < S; s++) o->pp_share[s] = o->pp_cost[s] / sum;
    double span = ds_pp_simulate(S, (int)M, o->pp_cost, b, o->pp_busy, &o->pp_bubble_sim);
    free(b);
    if (span <= 0) return ds_err("the 1F1B time model failed for %d stages, %lld micro-batches", S, (long long)M);
    for (int s = 0; s < S; s++) o->pp_busy[s] /= span;
    o->pp_bubble_analytic = ds_pp_bubble_1f1b(S, (int)M);
    /* report Table 2 in units of F: B = 2F, W = F, F&B = F + B */
    o->pp_1f1b_bubble_f = (double)(S - 1) * 3;
    o->pp_dualpipe_bubble_f = ds_pp_dualpipe_bubble(S, 1, 2, 1, 3);
    o->pp_dualpipe_share = o->pp_dualpipe_bubble_f < 0 ? -1
                         : o->pp_dualpipe_bubble_f / (o->pp_dualpipe_bubble_f + 3 * (double)M);
    return 0;
}

void ds_plan_free(ds_plan_out *o) {
    free(o->pp_first), free(o->pp_in_flight), free(o->pp_cost), free(o->pp_share);
    free(o->pp_act), free(o->pp_act_recompute), free(o->pp_busy);
    o->pp_first = o->pp_in_flight = NULL;
    o->pp_cost = o->pp_share = o->pp_act = o->pp_act_recompute = o->pp_busy = NULL;
}

int ds_plan(const ds_config *c, const ds_plan_in *in, ds_plan_out *o) {
    memset(o, 0, sizeof *o);
    if (in->gpus <= 0 || in->pp <= 0 || in->ep <= 0 || in->gpus_per_node <= 0)
        return ds_err("plan: --gpus, --gpus-per-node, --ep and --pp must be positive");
    if (in->gpus % in->pp) return ds_err("plan: --pp %lld does not divide --gpus %lld", (long long)in->pp, (long long)in->gpus);
    int64_t D = in->dp > 0 ? in->dp : in->gpus / in->pp;
    if (D * in->pp != in->gpus)
        return ds_err("plan: --dp %lld x --pp %lld is not --gpus %lld", (long long)D, (long long)in->pp, (long long)in->gpus);
    if (D % in->ep) return ds_err("plan: --ep %lld does not divide the data-parallel degree %lld", (long long)in->ep, (long long)D);
    if (c->n_routed_experts % in->ep)
        return ds_err("plan: --ep %lld does not divide %lld routed experts", (long long)in->ep, (long long)c->n_routed_experts);
    if (in->global_batch % D)
        return ds_err("plan: --global-batch %lld is not a multiple of the data-parallel degree %lld",
                      (long long)in->global_batch, (long long)D);
    if (pipeline(c, in, D, o)) return -1;
    ds_model m;
    memset(&m, 0, sizeof m);
    m.cfg = *c;
    if (ds_layout_build(&m.layout, c)) return -1;
    ds_param_counts pc;
    ds_layout_count(&pc, &m.layout, c);
    o->total = pc.total, o->activated = pc.activated, o->mtp = pc.mtp;
    for (int64_t i = 0; i < m.layout.n; i++) {
        const ds_param *p = &m.layout.p[i];
        if (p->flags & (DS_PARAM_ALIAS | DS_PARAM_BUFFER)) continue;
        if ((p->flags & DS_PARAM_EXPERT) && !(p->flags & DS_PARAM_MTP)) o->p_expert += p->numel;
        else o->p_other += p->numel;
    }
    const double S = (double)in->pp, E = (double)in->ep, Dd = (double)D, De = Dd / E;
    const double H = (double)c->hidden_size, K = (double)c->num_experts_per_tok;
    o->n = (double)o->p_other / S, o->x = (double)o->p_expert / (S * E);
    o->mem_weights = 2 * (o->n + o->x);
    o->mem_grads = 4 * (o->n + o->x);
    o->mem_optim = 8 * (o->n / Dd + o->x / De);
    o->act_per_token = act_per_token(c);
    double bT = (double)in->micro_batch * (double)in->seq;
    for (int64_t s = 0; s < in->pp; s++) {
        double Ls = (double)(o->pp_first[s + 1] - o->pp_first[s]), ms = (double)o->pp_in_flight[s];
        o->pp_act[s] = 2 * bT * ms * Ls * o->act_per_token;
        o->pp_act_recompute[s] = 2 * bT * ms * Ls * H + 2 * bT * o->act_per_token;
        if (o->pp_act[s] > o->mem_act) o->mem_act = o->pp_act[s];
        if (o->pp_act_recompute[s] > o->mem_act_recompute) o->mem_act_recompute = o->pp_act_recompute[s];
    }
    for (int64_t l = 0; l < c->num_hidden_layers; l++) o->moe_layers += ds_config_layer_is_moe(c, l);
    double M = c->topk_group > 0 && c->n_group > 1 ? (double)c->topk_group : K;
    for (int lim = 0; lim < 2; lim++)
        for (int f8 = 0; f8 < 2; f8++) {
            double X = lim ? (M < K ? M : K) : K;
            double disp = f8 ? X * H * (1 + 4.0 / 128) : 2 * X * H;
            o->a2a_token_layer[lim][f8] = disp + 3 * 2 * X * H;
        }
    double tokens_step = (double)in->global_batch * (double)in->seq, tokens_dev = tokens_step / Dd;
    o->a2a_device_step = tokens_dev * ((double)o->moe_layers / S) * o->a2a_token_layer[1][1];
    o->grad_device_step = 6 * (Dd - 1) / Dd * o->n + (De > 1 ? 6 * (De - 1) / De * o->x : 0);
    o->flops_per_token = 3 * ds_model_forward_flops(&m, 1, in->seq, c->num_nextn_predict_layers > 0) / (double)in->seq;
    o->t_compute = o->flops_per_token * tokens_step / ((double)in->gpus * in->peak_flops);
    o->t_a2a = o->a2a_device_step / in->ib_bytes_s;
    o->t_grad = o->grad_device_step / in->ib_bytes_s;
    double net = o->t_a2a + o->t_grad;
    o->t_overlap = o->t_compute > net ? o->t_compute : net;
    o->t_serial = o->t_compute + net;
    o->gpu_hours_per_t_overlap = (double)in->gpus * o->t_overlap / tokens_step * 1e12 / 3600;
    o->gpu_hours_per_t_serial = (double)in->gpus * o->t_serial / tokens_step * 1e12 / 3600;
    ds_layout_free(&m.layout);
    return 0;
}
