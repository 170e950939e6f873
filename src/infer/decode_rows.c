/*
 * decode_rows.c — the batched decode step of continuous batching
 * (src/serve/sched.c; infer.h ds_rows_engine): sequences at different
 * positions in one step.  Host checks and bookkeeping around the model's own
 * forward (ds_model_forward_ex, docs/engine.md §3.3): sequence i is row
 * rows[i] of a latent cache of B rows, its token goes to position pos[i]
 * (ds_fwd_opts.B, pos_b, rows), every weight is read once for all the
 * sequences and the attention of each runs over its own cache row.
 *
 * On the CPU table the linears of a decode-size batch compute each row as a
 * batch-1 step does (DS_LINEAR_ROWWISE_MAX, backend/cpu/table.c), so the
 * logits of a sequence do not depend on the batch it is stepped in.
 */
#include <string.h>

#include "infer/infer.h"

int ds_rows_engine_create(ds_rows_engine *e, const ds_model *m, const struct ds_ops *ops, int64_t B, int64_t max_len) {
    return ds_rows_engine_create_ex(e, m, ops, B, max_len, 1, 0);
}

int ds_rows_engine_create_ex(ds_rows_engine *e, const ds_model *m, const struct ds_ops *ops, int64_t B, int64_t max_len,
                             int64_t T, int mtp) {
    return ds_rows_engine_create_rows(e, m, ops, B, B, max_len, T, mtp);
}

int ds_rows_engine_create_rows(ds_rows_engine *e, const ds_model *m, const struct ds_ops *ops, int64_t B, int64_t R,
                               int64_t max_len, int64_t T, int mtp) {
    memset(e, 0, sizeof *e);
    if (R < B) return ds_err("decode: %lld cache rows for %lld sequences a step", (long long)R, (long long)B);
    const ds_config *c = &m->cfg;
    if (B < 1 || max_len < 1 || max_len > c->max_position_embeddings || T < 1 || T > max_len)
        return ds_err("decode: %lld sequences of %lld positions, %lld tokens a step (the model takes %lld positions)",
                      (long long)B, (long long)max_len, (long long)T, (long long)c->max_position_embeddings);
    if (c->kv_lora_rank <= 0) return ds_err("decode: kv_lora_rank must be positive for the latent cache");
    if (mtp && c->num_nextn_predict_layers < 1)
        return ds_err("decode: the model has no MTP module (num_nextn_predict_layers = 0)");
    mtp = mtp ? 1 : 0;
    /* the cache lives with the model (its table's memory, or the host), as ds_engine's */
    if (ds_kv_cache_create_on(&e->kc, m->mem, c->num_hidden_layers + mtp, R, max_len, c->kv_lora_rank, c->qk_rope_head_dim)) return -1;
    if (ds_acts_create_infer(&e->a, m, B, T, max_len, mtp)) {
        ds_kv_cache_free(&e->kc);
        return -1;
    }
    e->m = m, e->ops = ops, e->B = B, e->R = R, e->max_len = max_len, e->T = T, e->mtp = mtp;
    e->logits = e->a.logits;
    e->hfinal = e->a.hfinal;
    e->mtp_logits = mtp ? e->a.mtp_logits[0] : NULL;
    return 0;
}

void ds_rows_engine_free(ds_rows_engine *e) {
    ds_kv_cache_free(&e->kc);
    ds_acts_free(&e->a);
    if (e->pchunk) ds_acts_free(&e->pa);
    memset(e, 0, sizeof *e);
}

static int check_rows(const ds_rows_engine *e, const int64_t *rows, const int64_t *pos, int64_t n, int64_t t) {
    if (n <= 0 || n > e->B) return ds_err("decode: %lld sequences per step, the engine takes 1..%lld", (long long)n, (long long)e->B);
    if (t <= 0 || t > e->T) return ds_err("decode: %lld tokens per sequence, the engine takes 1..%lld", (long long)t, (long long)e->T);
    for (int64_t i = 0; i < n; i++) {
        if (rows[i] < 0 || rows[i] >= e->R) return ds_err("decode: cache row %lld outside [0, %lld)", (long long)rows[i], (long long)e->R);
        if (pos[i] < 0 || pos[i] + t > e->max_len)
            return ds_err("decode: cache full (positions %lld..%lld of %lld)", (long long)pos[i], (long long)(pos[i] + t - 1),
                          (long long)e->max_len);
    }
    return 0;
}

int ds_rows_engine_step(ds_rows_engine *e, const int32_t *ids, const int64_t *rows, const int64_t *pos, int64_t n) {
    if (check_rows(e, rows, pos, n, 1)) return -1;
    const ds_fwd_opts o = {.kv = &e->kc, .n = 1, .last_only = 1, .B = n, .pos_b = pos, .rows = rows};
    return ds_model_forward_ex(e->m, &e->a, e->ops, ids, &o);
}

int ds_rows_engine_step_n(ds_rows_engine *e, const int32_t *ids, const int64_t *rows, const int64_t *pos, int64_t n,
                          int64_t t) {
    if (check_rows(e, rows, pos, n, t)) return -1;
    const ds_fwd_opts o = {.kv = &e->kc, .n = t, .last_only = 0, .B = n, .pos_b = pos, .rows = rows};
    return ds_model_forward_ex(e->m, &e->a, e->ops, ids, &o);
}

int ds_rows_engine_mtp_step(ds_rows_engine *e, const float *h, const int32_t *next, const int64_t *rows,
                            const int64_t *pos, int64_t n, int64_t t) {
    if (!e->mtp) return ds_err("mtp: the decode engine was created without the MTP module");
    if (check_rows(e, rows, pos, n, t)) return -1;
    const ds_fwd_opts o = {.kv = &e->kc, .n = t, .last_only = 0, .B = n, .pos_b = pos, .rows = rows};
    return ds_model_mtp_forward_ex(e->m, &e->a, e->ops, 1, h, next, &o);
}

int ds_rows_engine_mtp_step_rows(ds_rows_engine *e, const int32_t *hrow, const int32_t *next, const int64_t *rows,
                                 const int64_t *pos, int64_t n, int64_t t) {
    if (!e->mtp) return ds_err("mtp: the decode engine was created without the MTP module");
    if (check_rows(e, rows, pos, n, t)) return -1;
    /* the gather goes to the embedding buffer: an MTP step embeds into the
     * module's own buffers and leaves a.emb (B·T rows) alone */
    e->ops->gather_rows(e->a.emb, e->a.hfinal, hrow, n * t, e->m->cfg.hidden_size);
    const ds_fwd_opts o = {.kv = &e->kc, .n = t, .last_only = 1, .B = n, .pos_b = pos, .rows = rows};
    return ds_model_mtp_forward_ex(e->m, &e->a, e->ops, 1, e->a.emb, next, &o);
}

int ds_rows_engine_prefill_init(ds_rows_engine *e, int64_t chunk) {
    if (chunk > e->max_len) chunk = e->max_len;
    if (ds_acts_create_infer_rows(&e->pa, e->m, e->B, chunk, chunk, e->max_len, e->mtp)) return -1;
    e->pchunk = chunk;
    e->p_logits = e->pa.logits;
    e->p_mtp_logits = e->mtp ? e->pa.mtp_logits[0] : NULL;
    return 0;
}

static int check_prefill(const ds_rows_engine *e, const int64_t *rows, const int64_t *pos, int64_t n, int64_t t) {
    if (!e->pchunk) return ds_err("prefill: the decode engine has no prefill activations");
    if (n < 1 || n > e->B || t < 1 || n * t > e->pchunk)
        return ds_err("prefill: %lld prompts x %lld tokens, the engine takes %lld tokens a step", (long long)n, (long long)t,
                      (long long)e->pchunk);
    for (int64_t i = 0; i < n; i++) {
        if (rows[i] < 0 || rows[i] >= e->R) return ds_err("prefill: cache row %lld outside [0, %lld)", (long long)rows[i], (long long)e->R);
        if (pos[i] < 0 || pos[i] + t > e->max_len)
            return ds_err("prefill: positions %lld..%lld beyond the cache (%lld)", (long long)pos[i], (long long)(pos[i] + t - 1),
                          (long long)e->max_len);
    }
    return 0;
}

int ds_rows_engine_prefill(ds_rows_engine *e, const int32_t *ids, const int64_t *rows, const int64_t *pos,
                           const int64_t *last, int64_t n, int64_t t) {
    if (check_prefill(e, rows, pos, n, t)) return -1;
    const ds_fwd_opts o = {.kv = &e->kc, .n = t, .last_only = 1, .B = n, .pos_b = pos, .rows = rows, .last_b = last};
    return ds_model_forward_ex(e->m, &e->pa, e->ops, ids, &o);
}

int ds_rows_engine_prefill_all(ds_rows_engine *e, const int32_t *ids, int64_t row, int64_t pos, int64_t t) {
    if (check_prefill(e, &row, &pos, 1, t)) return -1;
    const ds_fwd_opts o = {.kv = &e->kc, .n = t, .B = 1, .pos_b = &pos, .rows = &row};
    return ds_model_forward_ex(e->m, &e->pa, e->ops, ids, &o);
}

int ds_rows_engine_prefill_mtp(ds_rows_engine *e, const int32_t *next, const int64_t *rows, const int64_t *pos,
                               const int64_t *last, int64_t n, int64_t t) {
    if (!e->mtp) return ds_err("mtp: the decode engine was created without the MTP module");
    if (check_prefill(e, rows, pos, n, t)) return -1;
    const ds_fwd_opts o = {.kv = &e->kc, .n = t, .last_only = 1, .B = n, .pos_b = pos, .rows = rows, .last_b = last};
    return ds_model_mtp_forward_ex(e->m, &e->pa, e->ops, 1, e->pa.hfinal, next, &o);
}

void ds_rows_engine_copy_prefix(ds_rows_engine *e, int64_t dst, int64_t src, int64_t n) {
    const ds_kv_cache *b = &e->kc;
    if (dst == src || n <= 0) return;
    const size_t cb = (size_t)(n * b->rkv) * sizeof(float), pb = (size_t)(n * b->dr) * sizeof(float);
    for (int64_t l = 0; l < b->nlayers; l++) {
        e->ops->copy_d2d(b->ckv[l] + dst * b->max_len * b->rkv, b->ckv[l] + src * b->max_len * b->rkv, cb);
        e->ops->copy_d2d(b->kpe[l] + dst * b->max_len * b->dr, b->kpe[l] + src * b->max_len * b->dr, pb);
    }
}
