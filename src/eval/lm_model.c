/*
 * lm_model.c — a model folder (config.json + safetensors + tokenizer.json) as a
 * ds_lm: the binding of the model and tokenizer layers to evaluation.
 *
 * Scoring: the requests of one multiple-choice document (consecutive, same ctx
 * pointer) run as one batched FP32 forward, B = number of choices, each row
 * (ctx + cont)[:-1] right-padded to the longest one.  Exact: attention is
 * causal and the MoE routing is per token (no capacity), so padding after a
 * row's last real position changes none of its logits.  Log-softmax is taken
 * only at the continuation rows (ds_lm_score_rows), straight from the arena.
 * The activation arena is sized for the largest (B, T) seen so far and reused:
 * every buffer is laid out densely by (B, T), so a smaller batch runs in the
 * same arena by lowering acts.B and acts.T.  Greedy generation re-runs the
 * growing sequence (simple and exact; the KV-cached engine is in src/infer/).
 */
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "eval/lm.h"
#include "io/json.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

typedef struct {
    ds_model m;
    ds_tokenizer *tok;
    ds_acts acts;
    int64_t cap_B, cap_T; /* (B, T) the arena was sized for (0 = none yet) */
} lm_model;

/* Forward of ids (B, T), rows packed densely. */
static int run_forward_batch(lm_model *lm, const int32_t *ids, int64_t B, int64_t T) {
    if (B > lm->cap_B || T > lm->cap_T) {
        int64_t cb = lm->cap_B > B ? lm->cap_B : B, ct = lm->cap_T > 64 ? lm->cap_T : 64;
        while (ct < T) ct *= 2;
        if (lm->cap_B) ds_acts_free(&lm->acts);
        lm->cap_B = lm->cap_T = 0;
        if (ds_acts_create(&lm->acts, &lm->m, cb, ct, 0) != 0) return -1;
        lm->cap_B = cb;
        lm->cap_T = ct;
    }
    lm->acts.B = B; /* see the header comment */
    lm->acts.T = T;
    return ds_model_forward(&lm->m, &lm->acts, &ds_ops_cpu, ids);
}

static int run_forward(lm_model *lm, const int32_t *ids, int64_t n) { return run_forward_batch(lm, ids, 1, n); }

/* Most rows in one batched forward (a document with more choices runs in several). */
#define LM_MAX_BATCH 16

static int loglik(void *ctx, ds_lm_request *reqs, int64_t n) {
    lm_model *lm = ctx;
    const int64_t V = lm->m.cfg.vocab_size;
    int32_t *ids = NULL;
    size_t ids_cap = 0;
    int rc = 0;
    for (int64_t r0 = 0; r0 < n && !rc;) {
        /* a group: consecutive requests sharing the context array */
        int64_t r1 = r0 + 1;
        while (r1 < n && r1 - r0 < LM_MAX_BATCH && reqs[r1].ctx == reqs[r0].ctx && reqs[r1].n_ctx == reqs[r0].n_ctx) r1++;
        int64_t B = r1 - r0, T = 0;
        for (int64_t r = r0; r < r1; r++) {
            const ds_lm_request *q = &reqs[r];
            if (q->n_ctx < 1 || q->n_cont < 1) { rc = ds_err("loglik: empty context or continuation"); break; }
            if (q->n_ctx + q->n_cont - 1 > T) T = q->n_ctx + q->n_cont - 1;
        }
        if (rc) break;
        if ((size_t)(B * T) > ids_cap) {
            free(ids);
            ids_cap = (size_t)(B * T);
            ids = ds_malloc(ids_cap * sizeof *ids);
        }
        for (int64_t r = r0; r < r1; r++) { // row (ctx + cont)[:-1], right-padded with its last token
            const ds_lm_request *q = &reqs[r];
            int32_t *row = ids + (r - r0) * T;
            int64_t len = q->n_ctx + q->n_cont - 1;
            memcpy(row, q->ctx, (size_t)q->n_ctx * sizeof *row);
            memcpy(row + q->n_ctx, q->cont, (size_t)(q->n_cont - 1) * sizeof *row);
            for (int64_t t = len; t < T; t++) row[t] = row[len - 1];
        }
        if (run_forward_batch(lm, ids, B, T) != 0) { rc = -1; break; }
        for (int64_t r = r0; r < r1 && !rc; r++)
            rc = ds_lm_score_rows(lm->acts.logits + (size_t)((r - r0) * T) * (size_t)V, V, &reqs[r]); // (T, V)
        r0 = r1;
    }
    free(ids);
    return rc;
}

static int generate(void *ctx, const int32_t *ids, int64_t n, int64_t max_new, ds_lm_stop_fn stop, void *user,
                    int32_t *out, int64_t *n_out) {
    lm_model *lm = ctx;
    const int64_t V = lm->m.cfg.vocab_size;
    int32_t *seq = ds_malloc((size_t)(n + max_new) * sizeof *seq);
    memcpy(seq, ids, (size_t)n * sizeof *seq);
    int32_t eos = ds_tokenizer_eos_id(lm->tok);
    int64_t k = 0;
    int rc = 0;
    while (k < max_new) {
        if (run_forward(lm, seq, n + k) != 0) { rc = -1; break; }
        const float *row = lm->acts.logits + (size_t)(n + k - 1) * (size_t)V;
        int32_t best = 0;
        for (int64_t v = 1; v < V; v++)
            if (row[v] > row[best]) best = (int32_t)v;
        seq[n + k] = best;
        out[k++] = best;
        if (best == eos || (stop && stop(user, out, k))) break;
    }
    *n_out = k;
    free(seq);
    return rc;
}

static int64_t encode(void *ctx, const char *text, size_t len, int add_special, int32_t **ids_out) {
    lm_model *lm = ctx;
    ds_encode_opts o = {.allow_special = 1, .add_special = add_special};
    ds_ids v = {0};
    if (ds_tokenizer_encode_ex(lm->tok, text, len, &o, &v) < 0) { ds_ids_free(&v); return -1; }
    if (!v.ids) ds_ids_push(&v, 0), v.n = 0; /* a non-NULL empty array */
    *ids_out = v.ids;
    return v.n;
}

/* Decoded bytes as UTF-8 with each invalid byte replaced by U+FFFD. */
static int64_t decode(void *ctx, const int32_t *ids, int64_t n, char **text_out) {
    lm_model *lm = ctx;
    size_t len;
    char *raw = ds_tokenizer_decode(lm->tok, ids, n, 1, &len);
    if (!raw) return -1;
    if (ds_utf8_valid((const unsigned char *)raw, len, NULL)) { *text_out = raw; return (int64_t)len; }
    char *o = ds_malloc(3 * len + 1);
    size_t k = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)raw[i];
        size_t l = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (l && i + l <= len && ds_utf8_valid((const unsigned char *)raw + i, l, NULL)) {
            memcpy(o + k, raw + i, l);
            k += l;
            i += l;
        } else {
            memcpy(o + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i++;
        }
    }
    o[k] = 0;
    free(raw);
    *text_out = o;
    return (int64_t)k;
}

static void lm_free(void *ctx) {
    lm_model *lm = ctx;
    if (lm->cap_B) ds_acts_free(&lm->acts);
    ds_model_free(&lm->m);
    ds_tokenizer_free(lm->tok);
    free(lm);
}

int ds_lm_from_model_dir(ds_lm *out, const char *dir, int64_t max_length) {
    lm_model *lm = ds_calloc(1, sizeof *lm);
    if (ds_model_load(&lm->m, dir) != 0) { free(lm); return -1; }
    lm->tok = ds_tokenizer_load(dir);
    if (!lm->tok) {
        ds_model_free(&lm->m);
        free(lm);
        return -1;
    }
    if (ds_tokenizer_vocab_size(lm->tok) > lm->m.cfg.vocab_size) {
        ds_err("%s: tokenizer has %lld tokens, more than the model's vocab_size %lld", dir,
               (long long)ds_tokenizer_vocab_size(lm->tok), (long long)lm->m.cfg.vocab_size);
        lm_free(lm);
        return -1;
    }
    memset(out, 0, sizeof *out);
    out->ctx = lm;
    out->name = dir;
    out->max_length = max_length > 0 ? max_length : lm->m.cfg.max_position_embeddings;
    int32_t bos = ds_tokenizer_bos_id(lm->tok), eos = ds_tokenizer_eos_id(lm->tok);
    out->prefix_id = bos >= 0 ? bos : eos;
    out->eos_id = eos;
    out->loglik = loglik;
    out->generate = generate;
    out->encode = encode;
    out->decode = decode;
    out->free = lm_free;
    return 0;
}
