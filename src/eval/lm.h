/*
 * lm.h — the language-model interface the evaluation layer is written against.
 *
 * The eval layer (src/eval/) never sees the model or the tokenizer directly: it sees a
 * ds_lm, a table of callbacks.  The real binding (model + tokenizer.json) fills one in
 * (src/cli/cmd_eval.c, eval_bind_model); tests fill in analytic mock models.
 *
 * Scoring is request based, as in lm-evaluation-harness: a request is a pair
 * (context tokens, continuation tokens) and asks for log p(cont[j] | ctx, cont[:j]) for
 * every continuation token, and whether it is the argmax.  The eval layer has already
 * applied lm-eval's left truncation, so n_ctx >= 1, n_cont >= 1 and
 * n_ctx + n_cont - 1 <= max_length: the model input is (ctx + cont)[:-1].
 *
 * Shared contexts: the requests of one multiple-choice document that share a context
 * are consecutive and point at the same ctx array (same pointer, same n_ctx).  A
 * KV-cached implementation may run the context once and branch for each continuation;
 * a plain one may ignore this.
 */
#ifndef DS_EVAL_LM_H
#define DS_EVAL_LM_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const int32_t *ctx;   // (n_ctx) conditioning tokens
    int64_t n_ctx;
    const int32_t *cont;  // (n_cont) tokens to score
    int64_t n_cont;
    float *logprobs;      // out (n_cont): natural-log probability of cont[j]
    uint8_t *greedy;      // out (n_cont): 1 when cont[j] is the argmax of its distribution
} ds_lm_request;

enum { DS_LM_ENC_PLAIN = 0, DS_LM_ENC_DEFAULT = 1, DS_LM_ENC_BOS = 2 };

/* Greedy generation stop test: called after each new token with all tokens generated so
 * far; returns 1 to stop. */
typedef int (*ds_lm_stop_fn)(void *user, const int32_t *out, int64_t n_out);

typedef struct ds_lm {
    void *ctx;
    const char *name;    // shown in results ("model folder" or mock name)
    int64_t max_length;  // context window in tokens
    int32_t prefix_id;   // BOS (else EOS) used as the context of an empty context and of
                         // the first rolling window; -1 if the vocabulary has neither
    int32_t eos_id;      // generation stops on it; -1 if none

    /* Score n requests (see above).  Returns 0, or -1 with ds_err set. */
    int (*loglik)(void *ctx, ds_lm_request *reqs, int64_t n);

    /* Greedy generation after ids (n tokens, n + max_new <= max_length): writes up to
     * max_new tokens to out and their count to *n_out; stops early on eos_id or when
     * stop() returns 1.  Optional (NULL: generation tasks report an error). */
    int (*generate)(void *ctx, const int32_t *ids, int64_t n, int64_t max_new,
                    ds_lm_stop_fn stop, void *user, int32_t *out, int64_t *n_out);

    /* Tokenize UTF-8 text as lm-eval's HFLM.tok_encode does; mode is one of:
     *   DS_LM_ENC_PLAIN    no special tokens (add_special_tokens=False: the continuation of
     *                      an empty context)
     *   DS_LM_ENC_DEFAULT  HFLM without add_bos_token under transformers 5.x: only the
     *                      post-processor template of tokenizer.json (e.g. a Llama-3 BOS);
     *                      tokenizer_config.json's add_bos_token is NOT applied (DeepSeek-V3:
     *                      no BOS)
     *   DS_LM_ENC_BOS      HFLM(add_bos_token=True): BOS + text (the template becomes "BOS $A")
     * With DEFAULT and BOS, a text that already starts with the prefix token's text gets no
     * special tokens (lm-eval's has_bos_prefix).  *ids_out is malloc'd.  Returns the count
     * or -1. */
    int64_t (*encode)(void *ctx, const char *text, size_t len, int mode, int32_t **ids_out);

    /* Decode ids to UTF-8 text (special tokens skipped, invalid bytes as U+FFFD).
     * *text_out is malloc'd and NUL-terminated.  Returns its length or -1. */
    int64_t (*decode)(void *ctx, const int32_t *ids, int64_t n, char **text_out);

    void (*free)(void *ctx); // optional
} ds_lm;

/* Logits of a sequence: writes (n, vocab) logits for ids[0..n), row i scoring ids[i + 1].
 * Returns 0, or -1 with ds_err set. */
typedef int (*ds_logits_fn)(void *user, const int32_t *ids, int64_t n, float *logits);
/* A loglik callback body for a model that only offers ds_logits_fn (lm_logits.c). */
/* Fill q->logprobs and q->greedy from the logits (rows, vocab) of the sequence
 * (ctx + cont)[:-1] (row n_ctx - 1 + j scores cont[j]; only those n_cont rows are
 * read): log-softmax in double, greedy = first argmax == cont[j].  0, or -1 with ds_err
 * (a token id outside the vocabulary). */
int ds_lm_score_rows(const float *logits, int64_t vocab, ds_lm_request *q);
/* The same through the `token_logprobs` entry of `ops` (backend/ops.h): logits
 * in that table's memory (a model's arena); ds_lm_score_rows is this with the
 * "cpu" table over host logits. */
struct ds_ops;
int ds_lm_score_rows_ops(const struct ds_ops *ops, const float *logits, int64_t vocab, ds_lm_request *q);
int ds_lm_loglik_from_logits(ds_logits_fn fn, void *user, int64_t vocab, ds_lm_request *reqs, int64_t n);

/* A byte-level uniform model: encode = UTF-8 bytes (ids 0..255), every token has
 * log-probability -ln(256), so bits-per-byte is exactly 8 (ids tie: greedy is 1 for
 * id 0 only).  A reference point, and the model `--model builtin:uniform-bytes`. */
void ds_lm_uniform_bytes(ds_lm *lm, int64_t max_length);

/* A model folder (config.json, safetensors, tokenizer.json) as a ds_lm (lm_model.c).
 * max_length <= 0: the config's max_position_embeddings.  0, or -1 with ds_err. */
int ds_lm_from_model_dir(ds_lm *lm, const char *dir, int64_t max_length);
/* The same with load options (o NULL = FP32; o->fp8_resident keeps FP8
 * linears in FP8, model/model.h), a tokenizer (tokenizer.json or a folder
 * holding it; NULL: the model folder's) and the ops table the forwards run
 * through (backend/backend.h ds_backend_get; NULL: the "cpu" one). */
struct ds_load_opts;
struct ds_ops;
int ds_lm_from_model_dir_ex(ds_lm *lm, const char *dir, const char *tokenizer, int64_t max_length,
                            const struct ds_load_opts *o, const struct ds_ops *ops);

#endif
