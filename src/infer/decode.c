/*
 * decode.c — the decode engine (infer.h): host checks, prefill chunking and
 * positions around the model's own forward (ds_model_forward_ex with the
 * latent cache: the blocks of training, MLA in its absorbed form, doc §4.5,
 * Appendix B) and MTP module 1 with its own cache layer (doc §7.4,
 * ds_model_mtp_forward_ex).
 *
 * Cost of one step of n tokens at position t: the weights once per token
 * plus O(t·(rkv + dr)) per head and token for attention.  Activations are the
 * model's inference set (DS_ACTS_INFER) sized in ds_engine_create for B·chunk
 * rows; steps allocate nothing.
 */
#include <stdlib.h>
#include <string.h>

#include "infer/infer.h"

int ds_engine_create(ds_engine *e, const ds_model *m, const struct ds_ops *ops, int64_t B, int64_t max_len,
                     int64_t chunk, int mtp) {
    memset(e, 0, sizeof *e);
    const ds_config *c = &m->cfg;
    if (B <= 0 || max_len <= 0 || chunk <= 0)
        return ds_err("engine: batch, length and chunk must be positive (got %lld, %lld, %lld)", (long long)B,
                      (long long)max_len, (long long)chunk);
    if (max_len > c->max_position_embeddings)
        return ds_err("engine: %lld positions exceed max_position_embeddings (%lld)", (long long)max_len,
                      (long long)c->max_position_embeddings);
    if (mtp && c->num_nextn_predict_layers < 1)
        return ds_err("engine: the model has no MTP module (num_nextn_predict_layers = 0)");
    if (c->kv_lora_rank <= 0) return ds_err("engine: kv_lora_rank must be positive for the latent cache");
    if (chunk > max_len) chunk = max_len;
    e->m = m;
    e->ops = ops;
    e->B = B;
    e->max_len = max_len;
    e->chunk = chunk;
    e->mtp = mtp ? 1 : 0;
    /* the cache lives with the model (its table's memory, or the host) */
    if (ds_kv_cache_create_on(&e->kc, m->mem, c->num_hidden_layers + e->mtp, B, max_len, c->kv_lora_rank,
                              c->qk_rope_head_dim))
        return -1;
    if (ds_acts_create_infer(&e->a, m, B, chunk, max_len, e->mtp)) {
        ds_kv_cache_free(&e->kc);
        return -1;
    }
    e->chunk_ids = ds_malloc((size_t)(B * chunk) * sizeof(int32_t));
    e->hfinal = e->a.hfinal;
    e->logits = e->a.logits;
    e->mtp_logits = e->mtp ? e->a.mtp_logits[0] : NULL;
    return 0;
}

void ds_engine_free(ds_engine *e) {
    ds_kv_cache_free(&e->kc);
    ds_acts_free(&e->a);
    free(e->chunk_ids);
    memset(e, 0, sizeof *e);
}

void ds_engine_reset(ds_engine *e) { e->pos = e->mtp_pos = 0; }

static int check_step(const ds_engine *e, int64_t n, int64_t pos, const char *what) {
    if (n <= 0 || n > e->chunk)
        return ds_err("%s: %lld tokens per step, the engine takes 1..%lld", what, (long long)n, (long long)e->chunk);
    if (pos + n > e->max_len)
        return ds_err("%s: cache full (%lld + %lld tokens > %lld positions)", what, (long long)pos, (long long)n,
                      (long long)e->max_len);
    return 0;
}

int ds_engine_step(ds_engine *e, const int32_t *ids, int64_t n, int last_only) {
    if (check_step(e, n, e->pos, "decode")) return -1;
    const ds_fwd_opts o = {.kv = &e->kc, .pos = e->pos, .n = n, .last_only = last_only};
    if (ds_model_forward_ex(e->m, &e->a, e->ops, ids, &o)) return -1;
    e->pos += n;
    return 0;
}

int ds_engine_prefill(ds_engine *e, const int32_t *ids, int64_t P) {
    if (P <= 0) return ds_err("prefill: empty prompt");
    if (e->pos + P > e->max_len)
        return ds_err("prefill: %lld prompt tokens do not fit the cache (%lld positions, %lld used)", (long long)P,
                      (long long)e->max_len, (long long)e->pos);
    if (e->B == 1) {
        for (int64_t s = 0; s < P; s += e->chunk) {
            int64_t n = P - s < e->chunk ? P - s : e->chunk;
            if (ds_engine_step(e, ids + s, n, 1)) return -1;
        }
        return 0;
    }
    int32_t *tmp = e->chunk_ids;
    int rc = 0;
    for (int64_t s = 0; s < P && !rc; s += e->chunk) {
        int64_t n = P - s < e->chunk ? P - s : e->chunk;
        for (int64_t b = 0; b < e->B; b++)
            memcpy(tmp + b * n, ids + b * P + s, (size_t)n * sizeof(int32_t));
        rc = ds_engine_step(e, tmp, n, 1);
    }
    return rc;
}

int ds_engine_mtp_step(ds_engine *e, const float *h, const int32_t *next, int64_t n, int last_only) {
    if (!e->mtp) return ds_err("mtp: the engine was created without the MTP module");
    if (check_step(e, n, e->mtp_pos, "mtp")) return -1;
    const ds_fwd_opts o = {.kv = &e->kc, .pos = e->mtp_pos, .n = n, .last_only = last_only};
    if (ds_model_mtp_forward_ex(e->m, &e->a, e->ops, 1, h, next, &o)) return -1;
    e->mtp_pos += n;
    return 0;
}
