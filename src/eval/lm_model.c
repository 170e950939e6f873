/*
 * lm_model.c — a model folder (config.json + safetensors + tokenizer.json) as a
 * ds_lm: the binding of the model and tokenizer layers to evaluation.
 *
 * Scoring runs the FP32 forward (batch 1) on (ctx + cont)[:-1] and takes
 * log-softmax rows (ds_lm_loglik_from_logits).  The activation arena is sized
 * for the longest sequence seen so far and reused: with B = 1 every buffer of
 * the arena is laid out per position, so a shorter sequence runs in the same
 * arena by lowering acts.T.  Greedy generation re-runs the forward on the
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
    int64_t acts_cap; /* positions the arena was sized for (0 = none yet) */
} lm_model;

static int run_forward(lm_model *lm, const int32_t *ids, int64_t n) {
    if (n > lm->acts_cap) {
        if (lm->acts_cap) ds_acts_free(&lm->acts);
        int64_t cap = 64;
        while (cap < n) cap *= 2;
        if (ds_acts_create(&lm->acts, &lm->m, 1, cap, 0) != 0) { lm->acts_cap = 0; return -1; }
        lm->acts_cap = cap;
    }
    lm->acts.T = n; /* B = 1: see the header comment */
    return ds_model_forward(&lm->m, &lm->acts, &ds_ops_cpu, ids);
}

static int logits_fn(void *user, const int32_t *ids, int64_t n, float *logits) {
    lm_model *lm = user;
    if (run_forward(lm, ids, n) != 0) return -1;
    memcpy(logits, lm->acts.logits, (size_t)n * (size_t)lm->m.cfg.vocab_size * sizeof(float));
    return 0;
}

static int loglik(void *ctx, ds_lm_request *reqs, int64_t n) {
    lm_model *lm = ctx;
    return ds_lm_loglik_from_logits(logits_fn, lm, lm->m.cfg.vocab_size, reqs, n);
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
    if (lm->acts_cap) ds_acts_free(&lm->acts);
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
