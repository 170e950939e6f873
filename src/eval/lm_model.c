/*
 * lm_model.c — a model folder (config.json + safetensors + tokenizer.json) as a
 * ds_lm: the binding of the model and tokenizer layers to evaluation.
 *
 * Scoring: the requests of one loglik call (a multiple-choice document's
 * choices; several documents with --batch) run, longest first, in batched FP32
 * forwards, each row (ctx + cont)[:-1] right-padded to the longest row of its
 * batch.  Exact: attention is causal and the MoE routing is per token (no
 * capacity), so padding after a row's last real position changes none of its
 * logits.  Log-softmax is taken
 * only at the continuation rows (ds_lm_score_rows_ops: the table's token_logprobs
 * entry), straight from the arena.
 * The activation arena is sized as (1, cap) for the most tokens B * T seen so
 * far and reused: every buffer is laid out densely by (B, T) (or by position,
 * T <= cap), so any B * T <= cap runs in it by setting acts.B and acts.T.  Greedy generation is
 * ds_generate (src/infer/: prefill, then one cached decode step per token).
 */
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "base/base.h"
#include "eval/lm.h"
#include "infer/infer.h"
#include "io/json.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

typedef struct {
    ds_model m;
    ds_tokenizer *tok;
    const struct ds_ops *ops; /* the table the forwards run through */
    ds_acts acts;
    int64_t cap; /* tokens the arena was sized for, as (1, cap) (0 = none yet) */
    int32_t bos; /* -1 when none */
    const char *prefix_text; /* the prefix token's text (lm-eval's has_bos_prefix) */
    size_t prefix_text_len;
} lm_model;

/* Forward of ids (B, T), rows packed densely, in the arena sized (1, cap) with
 * cap >= B * T (see the header comment). */
static int run_forward_batch(lm_model *lm, const int32_t *ids, int64_t B, int64_t T) {
    if (B * T > lm->cap) {
        int64_t cap = lm->cap > 64 ? lm->cap : 64, need = B * T;
        while (cap < need) cap *= 2; /* the next power of two: a size, no data */
        if (lm->cap) ds_acts_free(&lm->acts);
        lm->cap = 0;
        if (ds_acts_create(&lm->acts, &lm->m, 1, cap, 0) != 0) return -1;
        lm->cap = cap;
    }
    lm->acts.B = B;
    lm->acts.T = T;
    return ds_model_forward(&lm->m, &lm->acts, lm->ops, ids);
}

/* Limits of one batched forward: rows, and rows x padded length.  The forward
 * writes B * T * vocab logits; past a few hundred tokens they no longer stay in
 * cache and a bigger batch gets slower (small preset, vocab 32000, PIQA --batch 40,
 * 1 thread: 2.1 s at 256 tokens, 2.7 s at 512, 3.3 s at 2048, 3.2 s at 128). */
#define LM_MAX_ROWS 64
#define LM_MAX_TOKENS 256

static int64_t req_len(const ds_lm_request *q) { return q->n_ctx + q->n_cont - 1; }

/* The n requests of one call, longest first, in batched forwards of rows of equal
 * padded length (a document's choices, or several documents with --batch). */
static int loglik(void *ctx, ds_lm_request *reqs, int64_t n) {
    lm_model *lm = ctx;
    const int64_t V = lm->m.cfg.vocab_size;
    for (int64_t r = 0; r < n; r++)
        if (reqs[r].n_ctx < 1 || reqs[r].n_cont < 1) return ds_err("loglik: empty context or continuation");
    int64_t *order = ds_malloc((size_t)(n > 0 ? n : 1) * sizeof *order);
    for (int64_t r = 0; r < n; r++) order[r] = r;
    for (int64_t i = 1; i < n; i++) { // stable insertion sort, longest first (n is small)
        int64_t k = order[i], j = i;
        for (; j > 0 && req_len(&reqs[order[j - 1]]) < req_len(&reqs[k]); j--) order[j] = order[j - 1];
        order[j] = k;
    }
    int32_t *ids = NULL;
    size_t ids_cap = 0;
    int rc = 0;
    for (int64_t g0 = 0; g0 < n && !rc;) {
        const int64_t T = req_len(&reqs[order[g0]]); // the longest row of the group
        /* rows: all left, at most LM_MAX_ROWS and LM_MAX_TOKENS / T, at least one */
        int64_t B = n - g0 < LM_MAX_ROWS ? n - g0 : LM_MAX_ROWS;
        if (B > LM_MAX_TOKENS / T) B = LM_MAX_TOKENS / T > 1 ? LM_MAX_TOKENS / T : 1;
        if ((size_t)(B * T) > ids_cap) {
            free(ids);
            ids_cap = (size_t)(B * T);
            ids = ds_malloc(ids_cap * sizeof *ids);
        }
        for (int64_t b = 0; b < B; b++) { // row (ctx + cont)[:-1], right-padded with its last token
            const ds_lm_request *q = &reqs[order[g0 + b]];
            int32_t *row = ids + b * T;
            int64_t len = req_len(q);
            memcpy(row, q->ctx, (size_t)q->n_ctx * sizeof *row);
            memcpy(row + q->n_ctx, q->cont, (size_t)(q->n_cont - 1) * sizeof *row);
            for (int64_t t = len; t < T; t++) row[t] = row[len - 1]; /* host: ids */
        }
        if (run_forward_batch(lm, ids, B, T) != 0) { rc = -1; break; }
        for (int64_t b = 0; b < B && !rc; b++)
            rc = ds_lm_score_rows_ops(lm->ops, lm->acts.logits + (size_t)(b * T) * (size_t)V, V,
                                      &reqs[order[g0 + b]]); // (T, V)
        g0 += B;
    }
    free(ids);
    free(order);
    return rc;
}

/* ds_generate's token callback over the evaluator's stop test (all tokens so far) */
typedef struct {
    ds_lm_stop_fn stop;
    void *user;
    const int32_t *out;
    int64_t k;
} gen_stop;

static int gen_token(void *ctx, int32_t id) {
    gen_stop *g = ctx;
    (void)id;
    g->k++;
    return g->stop && g->stop(g->user, g->out, g->k);
}

/* greedy through the KV-cached engine (infer/, the one generation loop): stops at
 * the tokenizer's EOS (kept), at the stop test, or after max_new tokens */
static int generate(void *ctx, const int32_t *ids, int64_t n, int64_t max_new, ds_lm_stop_fn stop, void *user,
                    int32_t *out, int64_t *n_out) {
    lm_model *lm = ctx;
    int64_t eos = ds_tokenizer_eos_id(lm->tok);
    ds_gen_opts o = {.max_tokens = max_new, .sp = {.temperature = 0, .top_p = 1}, .eos = &eos, .neos = eos >= 0};
    gen_stop g = {stop, user, out, 0};
    ds_gen_stats st;
    return ds_generate(&lm->m, lm->ops, ids, n, &o, out, n_out, gen_token, &g, &st);
}

/* lm-eval's HFLM.tok_encode (see lm.h for the modes).  Under transformers 5.x the
 * tokenizer applies tokenizer.json's post-processor and ignores tokenizer_config.json's
 * add_bos_token; HFLM(add_bos_token=True) replaces the template by "BOS $A". */
static int64_t encode(void *ctx, const char *text, size_t len, int mode, int32_t **ids_out) {
    lm_model *lm = ctx;
    ds_encode_opts o = {.allow_special = 1, .add_special = 0};
    ds_ids v = {0};
    int bos = mode == DS_LM_ENC_BOS && lm->bos >= 0;
    if (mode != DS_LM_ENC_PLAIN && lm->prefix_text_len && len >= lm->prefix_text_len &&
        !memcmp(text, lm->prefix_text, lm->prefix_text_len))
        mode = DS_LM_ENC_PLAIN, bos = 0; /* has_bos_prefix: the text brings its own */
    if (mode == DS_LM_ENC_DEFAULT) o.add_special = ds_tokenizer_has_template(lm->tok);
    if (bos) ds_ids_push(&v, lm->bos);
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
    if (lm->cap) ds_acts_free(&lm->acts);
    ds_model_free(&lm->m);
    ds_tokenizer_free(lm->tok);
    free(lm);
}

int ds_lm_from_model_dir(ds_lm *out, const char *dir, int64_t max_length) {
    return ds_lm_from_model_dir_ex(out, dir, NULL, max_length, NULL, NULL);
}

int ds_lm_from_model_dir_ex(ds_lm *out, const char *dir, const char *tokenizer, int64_t max_length,
                            const struct ds_load_opts *o, const struct ds_ops *ops) {
    if (!ops && !(ops = ds_backend_get("cpu"))) return -1;
    if (!tokenizer) { /* say how to go on when the folder has no tokenizer (dsv3 init makes none),
                         * after the cheaper and more basic check of its config */
        char *cp = ds_path_join(dir, "config.json");
        ds_config c;
        int bad = ds_file_exists(cp) && ds_config_load(&c, cp) != 0;
        free(cp);
        if (bad) return -1;
        char *tp = ds_path_join(dir, "tokenizer.json");
        int have = ds_file_exists(tp) || !ds_file_exists(dir);
        free(tp);
        if (!have) return ds_err("%s: no tokenizer.json (give one with --tokenizer FILE)", dir);
    }
    lm_model *lm = ds_calloc(1, sizeof *lm);
    lm->ops = ops;
    if (ds_model_load_ex(&lm->m, dir, o) != 0) { free(lm); return -1; }
    ds_model_log_weight_mem(&lm->m);
    lm->tok = ds_tokenizer_load(tokenizer ? tokenizer : dir);
    if (!lm->tok) {
        ds_model_free(&lm->m);
        free(lm);
        return -1;
    }
    if (ds_tokenizer_vocab_size(lm->tok) > lm->m.cfg.vocab_size) {
        ds_err("%s: tokenizer has %lld tokens, more than the model's vocab_size %lld", tokenizer ? tokenizer : dir,
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
    lm->bos = bos;
    if (out->prefix_id >= 0) lm->prefix_text = ds_tokenizer_token_bytes(lm->tok, out->prefix_id, &lm->prefix_text_len);
    if (!lm->prefix_text) lm->prefix_text_len = 0;
    out->eos_id = eos;
    out->loglik = loglik;
    out->generate = generate;
    out->encode = encode;
    out->decode = decode;
    out->free = lm_free;
    return 0;
}
