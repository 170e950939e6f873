/*
 * decode_rows.c — one batched decode step over sequences at different
 * positions (continuous batching, src/serve/sched.c): sequence i is row
 * rows[i] of the engine's cache (e->B rows), its new token ids[i] goes to
 * position pos[i].  Every weight is read once for all the sequences; the
 * attention of each runs over its own cache row.  The arithmetic of each
 * sequence is the arithmetic of a batch-1 ds_engine_step at the same
 * position: the FP32 GEMV computes each row independently, FP8/BF16 weights
 * go through the few-row kernels in groups of DS_GEMV_MAX_ROWS, and the
 * rest is per row — so greedy tokens do not depend on the batch.
 *
 * This mirrors layer_step of decode.c with per-row positions (n = 1 token
 * per sequence); kept in its own file so the decode engine can change
 * independently.  Only the CPU ops table takes the batched kernels; any
 * other table runs row by row through its own matmul.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/gemv.h"
#include "infer/infer.h"
#include "num/quant.h"

/* out (N, OC) = inp · wᵀ (+ bias), each row as a batch-1 step computes it */
static void mm_rows(const ds_engine *e, float *out, const float *inp, const float *w, const ds_fp8w *w8,
                    const float *bias, int64_t N, int64_t C, int64_t OC) {
    if (e->ops == &ds_ops_cpu && !w8) {
        ds_gemv_forward(out, inp, w, bias, N, C, OC);
        return;
    }
    const int64_t G = e->ops == &ds_ops_cpu ? DS_GEMV_MAX_ROWS : 1;
    for (int64_t r = 0; r < N; r += G) {
        const int64_t n = N - r < G ? N - r : G;
        if (w8 && e->ops == &ds_ops_cpu) {
            if (w8->b16) ds_gemv_bf16w_forward(out + r * OC, inp + r * C, w8, bias, n, C, OC);
            else ds_gemv_fp8w_forward(out + r * OC, inp + r * C, w8, bias, n, C, OC);
        } else if (w8) {
            ds_linear_any(e->ops, out + r * OC, inp + r * C, NULL, w8, bias, n, C, OC);
        } else {
            e->ops->matmul_forward(out + r * OC, inp + r * C, w, bias, n, C, OC);
        }
    }
}

static void fp8_roundtrip(float *x, int64_t n, int64_t C) {
    uint8_t *q;
    float *s;
    ds_fp8w_workspace(n, C, &q, &s);
    ds_quant_opts o = ds_quant_defaults(DS_QUANT_TILE_1x128);
    (void)ds_quantize(q, s, x, n, C, &o);
    (void)ds_dequantize(x, q, s, n, C, DS_FP8_E4M3, DS_QUANT_TILE_1x128);
}

static void layer_rows(ds_engine *e, const ds_block *p, int64_t cl, float *x, const int64_t *rows, const int64_t *pos,
                       int64_t N) {
    const ds_model *m = e->m;
    const ds_config *c = &m->cfg;
    const struct ds_ops *ops = e->ops;
    const int64_t H = c->hidden_size, Lmax = e->max_len;
    const int64_t nh = c->num_attention_heads, dq = ds_config_qk_head_dim(c), dn = c->qk_nope_head_dim;
    const int64_t dv = c->v_head_dim, dr = c->qk_rope_head_dim, rq = c->q_lora_rank, rkv = c->kv_lora_rank;
    const int64_t h2 = dr / 2;
    const float eps = (float)c->rms_norm_eps, eps_lat = 1e-6f;
    const int halves = !c->rope_interleave;
    float *ckv = e->kc.ckv[cl], *kpe = e->kc.kpe[cl];

    ops->rmsnorm_forward(e->ln, NULL, x, p->in_norm, N, H, H, H, eps);
    if (rq > 0) {
        mm_rows(e, e->qa, e->ln, p->q_a, p->q_a8, p->q_a_bias, N, H, rq);
        ops->rmsnorm_forward(e->qan, NULL, e->qa, p->q_a_norm, N, rq, rq, rq, eps_lat);
        mm_rows(e, e->q, e->qan, p->q_b, p->q_b8, NULL, N, rq, nh * dq);
    } else {
        mm_rows(e, e->q, e->ln, p->q_proj, p->q_proj8, NULL, N, H, nh * dq);
    }
    mm_rows(e, e->kva, e->ln, p->kv_a, p->kv_a8, p->kv_a_bias, N, H, rkv + dr); /* [latent | k_pe] */
    for (int64_t i = 0; i < N; i++) {
        const int64_t t = pos[i], b = rows[i];
        ops->rope_forward(e->q + i * nh * dq, e->cos_t + t * h2, e->sin_t + t * h2, 1, 1, nh, dq, dn, dr, halves);
        float *lat = ckv + (b * Lmax + t) * rkv, *row = e->kva + i * (rkv + dr);
        ops->rmsnorm_forward(lat, NULL, row, p->kv_a_norm, 1, rkv, rkv, rkv + dr, eps_lat);
        if (p->kv_b8 && p->kv_b8->q) fp8_roundtrip(lat, 1, rkv);
        ops->rope_forward(row, e->cos_t + t * h2, e->sin_t + t * h2, 1, 1, 1, rkv + dr, rkv, dr, halves);
        memcpy(kpe + (b * Lmax + t) * dr, row + rkv, (size_t)dr * sizeof(float));
    }
    /* absorbed attention per (sequence, head) over its own cache row */
    const float *kv_b = p->kv_b;
    const float scale = m->softmax_scale;
    float *qabs = e->qabs, *att = e->att;
#pragma omp parallel for schedule(static) if (N * nh * dn * rkv > 65536)
    for (int64_t rh = 0; rh < N * nh; rh++) {
        const int64_t h = rh % nh;
        const float *qn = e->q + rh * dq;
        const float *w = kv_b + h * (dn + dv) * rkv;
        float *qa = qabs + rh * rkv;
        for (int64_t j = 0; j < rkv; j++) qa[j] = 0;
        for (int64_t d = 0; d < dn; d++) ds_axpy_f32(qa, qn[d], w + d * rkv, rkv);
    }
    int64_t span = 0;
    for (int64_t i = 0; i < N; i++) span += pos[i] + 1;
#pragma omp parallel for schedule(dynamic, 1) if (N * nh > 1 && span * nh * rkv > 32768)
    for (int64_t w = 0; w < N * nh; w++) {
        const int64_t r = w / nh, h = w % nh, t = pos[r], b = rows[r];
        float *s = e->sc + (int64_t)omp_get_thread_num() * (Lmax + rkv), *ctx = s + Lmax;
        const float *qa = qabs + (r * nh + h) * rkv, *qpe = e->q + (r * nh + h) * dq + dn;
        const float *C = ckv + b * Lmax * rkv, *KP = kpe + b * Lmax * dr;
        float mx = -INFINITY;
        for (int64_t j = 0; j <= t; j++) {
            float v = (ds_dot_f32(qa, C + j * rkv, rkv) + ds_dot_f32(qpe, KP + j * dr, dr)) * scale;
            s[j] = v;
            if (v > mx) mx = v;
        }
        float sum = 0;
        for (int64_t j = 0; j <= t; j++) {
            float ev = expf(s[j] - mx);
            s[j] = ev;
            sum += ev;
        }
        for (int64_t k = 0; k < rkv; k++) ctx[k] = 0;
        for (int64_t j = 0; j <= t; j++) ds_axpy_f32(ctx, s[j], C + j * rkv, rkv);
        const float inv = 1.0f / sum;
        for (int64_t k = 0; k < rkv; k++) ctx[k] *= inv;
        const float *wv = kv_b + (h * (dn + dv) + dn) * rkv;
        float *o = att + r * nh * dv + h * dv;
        for (int64_t v = 0; v < dv; v++) o[v] = ds_dot_f32(wv + v * rkv, ctx, rkv);
    }
    mm_rows(e, e->proj, e->att, p->o_proj, p->o_proj8, p->o_bias, N, nh * dv, H);
    ops->residual_forward(x, x, e->proj, N * H);

    ops->rmsnorm_forward(e->ln2, NULL, x, p->post_norm, N, H, H, H, eps);
    if (p->moe) {
        const int64_t E = c->n_routed_experts, K = c->num_experts_per_tok, Im = c->moe_intermediate_size;
        ds_route_params rp = ds_route_params_of(c);
        mm_rows(e, e->r_logits, e->ln2, p->router, p->router8, NULL, N, H, E);
        ops->moe_route_forward(e->r_w, e->r_idx, e->r_scores, e->r_logits, p->router_bias, &rp, N);
        ds_moe_sort(e->counts, e->offsets, e->order, e->spos, e->r_idx, N, K, E);
        for (int64_t s = 0; s < N * K; s++) memcpy(e->xs + s * H, e->ln2 + (e->order[s] / K) * H, (size_t)H * sizeof(float));
        const int64_t *off = e->offsets, *cnt = e->counts;
        /* several sequences spread over many experts: one expert per thread (each computed as alone) */
        int par = N > 1;
#pragma omp parallel for schedule(dynamic, 1) if (par)
        for (int64_t ex = 0; ex < E; ex++) {
            if (!cnt[ex]) continue;
            mm_rows(e, e->eg + off[ex] * Im, e->xs + off[ex] * H, p->eg[ex], p->eg8 ? p->eg8[ex] : NULL, NULL, cnt[ex], H, Im);
            mm_rows(e, e->eu + off[ex] * Im, e->xs + off[ex] * H, p->eu[ex], p->eu8 ? p->eu8[ex] : NULL, NULL, cnt[ex], H, Im);
        }
        ops->swiglu_forward(e->ea, e->eg, e->eu, N * K, Im);
#pragma omp parallel for schedule(dynamic, 1) if (par)
        for (int64_t ex = 0; ex < E; ex++) {
            if (!cnt[ex]) continue;
            mm_rows(e, e->eo + off[ex] * H, e->ea + off[ex] * Im, p->ed[ex], p->ed8 ? p->ed8[ex] : NULL, NULL, cnt[ex], Im, H);
        }
        for (int64_t r = 0; r < N; r++) {
            float *y = e->mlp + r * H;
            for (int64_t i = 0; i < H; i++) y[i] = 0;
            for (int64_t k = 0; k < K; k++) {
                const float *src = e->eo + (int64_t)e->spos[r * K + k] * H;
                const float wk = e->r_w[r * K + k];
                for (int64_t i = 0; i < H; i++) y[i] += wk * src[i];
            }
        }
        if (p->inter > 0) {
            mm_rows(e, e->hg, e->ln2, p->gate, p->gate8, NULL, N, H, p->inter);
            mm_rows(e, e->hu, e->ln2, p->up, p->up8, NULL, N, H, p->inter);
            ops->swiglu_forward(e->ha, e->hg, e->hu, N, p->inter);
            mm_rows(e, e->proj, e->ha, p->down, p->down8, NULL, N, p->inter, H);
            ops->residual_forward(e->mlp, e->mlp, e->proj, N * H);
        }
    } else {
        mm_rows(e, e->hg, e->ln2, p->gate, p->gate8, NULL, N, H, p->inter);
        mm_rows(e, e->hu, e->ln2, p->up, p->up8, NULL, N, H, p->inter);
        ops->swiglu_forward(e->ha, e->hg, e->hu, N, p->inter);
        mm_rows(e, e->mlp, e->ha, p->down, p->down8, NULL, N, p->inter, H);
    }
    ops->residual_forward(x, x, e->mlp, N * H);
}

int ds_engine_step_rows(ds_engine *e, const int32_t *ids, const int64_t *rows, const int64_t *pos, int64_t n) {
    const ds_model *m = e->m;
    const ds_config *c = &m->cfg;
    const int64_t H = c->hidden_size, V = c->vocab_size;
    if (n <= 0 || n > e->B * e->chunk)
        return ds_err("decode: %lld sequences per step, the engine takes 1..%lld", (long long)n, (long long)(e->B * e->chunk));
    for (int64_t i = 0; i < n; i++) {
        if (rows[i] < 0 || rows[i] >= e->B) return ds_err("decode: cache row %lld outside [0, %lld)", (long long)rows[i], (long long)e->B);
        if (pos[i] < 0 || pos[i] >= e->max_len)
            return ds_err("decode: cache full (position %lld of %lld)", (long long)pos[i], (long long)e->max_len);
        if (ids[i] < 0 || ids[i] >= V)
            return ds_err("decode: token id %lld is outside the vocabulary [0, %lld)", (long long)ids[i], (long long)V);
    }
    ds_embed_any(e->ops, e->x, ids, m->embed, m->embed8, n, H);
    for (int64_t l = 0; l < c->num_hidden_layers; l++) layer_rows(e, &m->blocks[l], l, e->x, rows, pos, n);
    e->ops->rmsnorm_forward(e->hfinal, NULL, e->x, m->norm, n, H, H, H, (float)c->rms_norm_eps);
    mm_rows(e, e->logits, e->hfinal, m->lm_head, m->lm_head8, NULL, n, H, V);
    return 0;
}
