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
    memset(e, 0, sizeof *e);
    const ds_config *c = &m->cfg;
    if (B < 1 || max_len < 1 || max_len > c->max_position_embeddings)
        return ds_err("decode: %lld sequences of %lld positions (the model takes %lld)", (long long)B, (long long)max_len,
                      (long long)c->max_position_embeddings);
    if (c->kv_lora_rank <= 0) return ds_err("decode: kv_lora_rank must be positive for the latent cache");
    /* the cache lives with the model (its table's memory, or the host), as ds_engine's */
    if (ds_kv_cache_create_on(&e->kc, m->mem, c->num_hidden_layers, B, max_len, c->kv_lora_rank, c->qk_rope_head_dim))
        return -1;
    if (ds_acts_create_infer(&e->a, m, B, 1, max_len, 0)) {
        ds_kv_cache_free(&e->kc);
        return -1;
    }
    e->m = m, e->ops = ops, e->B = B, e->max_len = max_len;
    e->logits = e->a.logits;
    return 0;
}

void ds_rows_engine_free(ds_rows_engine *e) {
    ds_kv_cache_free(&e->kc);
    ds_acts_free(&e->a);
    memset(e, 0, sizeof *e);
}

int ds_rows_engine_step(ds_rows_engine *e, const int32_t *ids, const int64_t *rows, const int64_t *pos, int64_t n) {
    if (n <= 0 || n > e->B) return ds_err("decode: %lld sequences per step, the engine takes 1..%lld", (long long)n, (long long)e->B);
    for (int64_t i = 0; i < n; i++) {
        if (rows[i] < 0 || rows[i] >= e->B) return ds_err("decode: cache row %lld outside [0, %lld)", (long long)rows[i], (long long)e->B);
        if (pos[i] < 0 || pos[i] >= e->max_len)
            return ds_err("decode: cache full (position %lld of %lld)", (long long)pos[i], (long long)e->max_len);
    }
    const ds_fwd_opts o = {.kv = &e->kc, .n = 1, .last_only = 1, .B = n, .pos_b = pos, .rows = rows};
    return ds_model_forward_ex(e->m, &e->a, e->ops, ids, &o);
}

void ds_rows_engine_adopt(ds_rows_engine *e, int64_t row, const ds_kv_cache *src, int64_t P) {
    const ds_kv_cache *b = &e->kc;
    const size_t cb = (size_t)(P * src->rkv) * sizeof(float), pb = (size_t)(P * src->dr) * sizeof(float);
    for (int64_t l = 0; l < b->nlayers; l++) {
        e->ops->copy_d2d(b->ckv[l] + row * b->max_len * b->rkv, src->ckv[l], cb);
        e->ops->copy_d2d(b->kpe[l] + row * b->max_len * b->dr, src->kpe[l], pb);
    }
}
