/*
 * decode_rows.c — the batched decode step of continuous batching
 * (src/serve/sched.c; infer.h ds_rows_engine): sequences at different
 * positions in one step.  Sequence i is row rows[i] of this engine's own
 * latent cache, its new token ids[i] goes to position pos[i].  Every weight is
 * read once for all the sequences; the attention of each runs over its own
 * cache row.  The arithmetic of each sequence is that of a batch-1 decode
 * step at the same position: the FP32 GEMV computes each row independently,
 * FP8/BF16 weights go through the few-row kernels in groups of
 * DS_GEMV_MAX_ROWS, the rest is per row — so greedy tokens do not depend on
 * the batch.
 *
 * Self-contained on purpose (its own cache, rope tables and scratch; only the
 * model's weights, the ops table and the CPU kernels from outside), so the
 * batch-1 engine of decode.c can change independently.  Only the CPU ops
 * table takes the batched kernels; any other table runs row by row.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/gemv.h"
#include "backend/cpu/kernels.h"
#include "backend/cpu/linear_fp8w.h"
#include "infer/infer.h"
#include "num/quant.h"

/* out (N, OC) = inp · wᵀ (+ bias), each row as a batch-1 step computes it */
static void mm_rows(const ds_rows_engine *e, float *out, const float *inp, const float *w, const ds_fp8w *w8,
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

static void layer_rows(ds_rows_engine *e, const ds_block *p, int64_t cl, float *x, const int64_t *rows, const int64_t *pos,
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

int ds_rows_engine_step(ds_rows_engine *e, const int32_t *ids, const int64_t *rows, const int64_t *pos, int64_t n) {
    const ds_model *m = e->m;
    const ds_config *c = &m->cfg;
    const int64_t H = c->hidden_size, V = c->vocab_size;
    if (n <= 0 || n > e->B) return ds_err("decode: %lld sequences per step, the engine takes 1..%lld", (long long)n, (long long)e->B);
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

int ds_rows_engine_create(ds_rows_engine *e, const ds_model *m, const struct ds_ops *ops, int64_t B, int64_t max_len) {
    memset(e, 0, sizeof *e);
    const ds_config *c = &m->cfg;
    const int64_t N = B, H = c->hidden_size, V = c->vocab_size;
    const int64_t nh = c->num_attention_heads, dq = ds_config_qk_head_dim(c), dv = c->v_head_dim;
    const int64_t dr = c->qk_rope_head_dim, rq = c->q_lora_rank > 0 ? c->q_lora_rank : 1, rkv = c->kv_lora_rank;
    const int64_t E = c->n_routed_experts > 0 ? c->n_routed_experts : 1, K = c->num_experts_per_tok > 0 ? c->num_experts_per_tok : 1;
    const int64_t Im = c->moe_intermediate_size;
    int64_t Is = c->intermediate_size;
    if (c->moe_intermediate_size * c->n_shared_experts > Is) Is = c->moe_intermediate_size * c->n_shared_experts;
    if (B < 1 || max_len < 1 || max_len > c->max_position_embeddings)
        return ds_err("decode: %lld sequences of %lld positions (the model takes %lld)", (long long)B, (long long)max_len,
                      (long long)c->max_position_embeddings);
    if (ds_kv_cache_create(&e->kc, c->num_hidden_layers, B, max_len, rkv, dr)) return -1;
    e->m = m, e->ops = ops, e->B = B, e->max_len = max_len;
    /* scratch per OpenMP thread: enough for any team this process makes (the
     * step may run on another thread than this one, with its own ICVs) */
    e->nthreads = omp_get_max_threads();
    if (omp_get_num_procs() > e->nthreads) e->nthreads = omp_get_num_procs();
    if (ds_threads() > e->nthreads) e->nthreads = ds_threads();
    const int64_t sizes[] = {max_len * (dr / 2), max_len * (dr / 2), N * H, N * H, N * rq, N * rq, N * nh * dq,
                             N * (rkv + dr), N * nh * rkv, N * nh * dv, N * H, N * H, N * E, N * E, N * K, N * H,
                             N * Is, N * Is, N * Is, N * K * H, N * K * Im, N * K * Im, N * K * Im, N * K * H,
                             (int64_t)e->nthreads * (max_len + rkv), N * H, N * V};
    float **dst[] = {&e->cos_t, &e->sin_t, &e->x, &e->ln, &e->qa, &e->qan, &e->q, &e->kva, &e->qabs, &e->att, &e->proj,
                     &e->ln2, &e->r_logits, &e->r_scores, &e->r_w, &e->mlp, &e->hg, &e->hu, &e->ha, &e->xs, &e->eg,
                     &e->eu, &e->ea, &e->eo, &e->sc, &e->hfinal, &e->logits};
    const int nb = (int)(sizeof sizes / sizeof sizes[0]);
    size_t total = 0;
    for (int i = 0; i < nb; i++) total += (size_t)((sizes[i] + 15) / 16 * 16);
    e->arena = ds_aligned_alloc(total * sizeof(float));
    for (int64_t i = 0, off = 0; i < nb; i++) {
        *dst[i] = e->arena + off;
        off += (sizes[i] + 15) / 16 * 16;
    }
    e->r_idx = ds_calloc((size_t)(N * K), sizeof(int32_t));
    e->order = ds_calloc((size_t)(N * K), sizeof(int32_t));
    e->spos = ds_calloc((size_t)(N * K), sizeof(int32_t));
    e->counts = ds_calloc((size_t)(2 * (E + 1)), sizeof(int64_t));
    e->offsets = ds_calloc((size_t)(2 * (E + 2)), sizeof(int64_t));
    /* cos/sin tables exactly as the forward pass builds them (doc §4.3) */
    const int64_t h2 = dr / 2;
    for (int64_t t = 0; t < max_len; t++)
        for (int64_t i = 0; i < h2; i++) {
            float ang = (float)t * m->inv_freq[i];
            e->cos_t[t * h2 + i] = (float)cos((double)ang) * m->attn_factor;
            e->sin_t[t * h2 + i] = (float)sin((double)ang) * m->attn_factor;
        }
    return 0;
}

void ds_rows_engine_free(ds_rows_engine *e) {
    ds_kv_cache_free(&e->kc);
    ds_free_aligned(e->arena);
    free(e->r_idx), free(e->order), free(e->spos), free(e->counts), free(e->offsets);
    memset(e, 0, sizeof *e);
}

void ds_rows_engine_adopt(ds_rows_engine *e, int64_t row, const ds_kv_cache *src, int64_t P) {
    ds_kv_cache *b = &e->kc;
    for (int64_t l = 0; l < b->nlayers; l++) {
        memcpy(b->ckv[l] + row * b->max_len * b->rkv, src->ckv[l], (size_t)(P * src->rkv) * sizeof(float));
        memcpy(b->kpe[l] + row * b->max_len * b->dr, src->kpe[l], (size_t)(P * src->dr) * sizeof(float));
    }
}
