/*
 * lm_logits.c — the ds_lm loglik callback built from a plain "logits of a sequence"
 * function, so that binding a model to evaluation only needs its forward pass:
 * for each request the input (ctx + cont)[:-1] is run once, row n_ctx - 1 + j of the
 * logits predicts cont[j]; log_softmax is taken in double, greedy is argmax == cont[j]
 * (the first maximum on ties, as torch.argmax), by the ops table's `token_logprobs`
 * entry (the host's logits: the "cpu" table).  No KV cache: requests sharing a context
 * recompute it (a cached binding can replace this function).
 */
#include "eval/lm.h"
#include "backend/backend.h"
#include "base/base.h"

#include <stdlib.h>
#include <string.h>

int ds_lm_score_rows_ops(const struct ds_ops *ops, const float *logits, int64_t vocab, ds_lm_request *q) {
    for (int64_t j = 0; j < q->n_cont; j++) {
        int32_t t = q->cont[j];
        if (t < 0 || t >= vocab) return ds_err("loglik: token id %d outside the vocabulary (%lld)", t, (long long)vocab);
    }
    /* rows n_ctx - 1 .. n_ctx + n_cont - 2 score cont[0 .. n_cont) */
    ops->token_logprobs(q->logprobs, q->greedy, logits + (size_t)(q->n_ctx - 1) * (size_t)vocab, q->cont, q->n_cont,
                        vocab);
    return 0;
}

int ds_lm_score_rows(const float *logits, int64_t vocab, ds_lm_request *q) {
    return ds_lm_score_rows_ops(ds_backend_get("cpu"), logits, vocab, q);
}

int ds_lm_loglik_from_logits(ds_logits_fn fn, void *user, int64_t vocab, ds_lm_request *reqs, int64_t n) {
    int64_t cap = 0;
    for (int64_t r = 0; r < n; r++)
        if (reqs[r].n_ctx + reqs[r].n_cont - 1 > cap) cap = reqs[r].n_ctx + reqs[r].n_cont - 1;
    int32_t *ids = ds_malloc((size_t)(cap > 0 ? cap : 1) * sizeof *ids);
    float *logits = ds_malloc((size_t)(cap > 0 ? cap : 1) * (size_t)vocab * sizeof *logits); // (T, V)
    int rc = 0;
    for (int64_t r = 0; r < n && !rc; r++) {
        ds_lm_request *q = &reqs[r];
        int64_t T = q->n_ctx + q->n_cont - 1;
        if (q->n_ctx < 1 || q->n_cont < 1) { rc = ds_err("loglik: empty context or continuation"); break; }
        memcpy(ids, q->ctx, (size_t)q->n_ctx * sizeof *ids);
        memcpy(ids + q->n_ctx, q->cont, (size_t)(q->n_cont - 1) * sizeof *ids);
        if (fn(user, ids, T, logits)) { rc = -1; break; }
        rc = ds_lm_score_rows(logits, vocab, q);
    }
    free(ids);
    free(logits);
    return rc;
}
