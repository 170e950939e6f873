/*
 * lm_uniform.c — the byte-level uniform model (lm.h): tokens are UTF-8 bytes and every
 * token has probability 1/256.  Its bits-per-byte is exactly 8, its byte perplexity 256;
 * it is the reference point of BPB and the model behind `--model builtin:uniform-bytes`,
 * which lets the whole eval pipeline run without a trained model.
 */
#include "eval/lm.h"
#include "base/base.h"

#include <math.h>
#include <string.h>

static int uniform_loglik(void *ctx, ds_lm_request *reqs, int64_t n) {
    (void)ctx;
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < reqs[r].n_cont; j++) {
            reqs[r].logprobs[j] = (float)-log(256.0);
            reqs[r].greedy[j] = reqs[r].cont[j] == 0; /* ties: argmax is the first id */
        }
    return 0;
}

static int uniform_generate(void *ctx, const int32_t *ids, int64_t n, int64_t max_new,
                            ds_lm_stop_fn stop, void *user, int32_t *out, int64_t *n_out) {
    (void)ctx; (void)ids; (void)n; (void)max_new; (void)stop; (void)user; (void)out;
    *n_out = 0; /* the argmax is byte 0, which is the end of text here */
    return 0;
}

/* bytes only, in every mode: the byte model has no BOS (its prefix id 0 is the NUL byte) */
static int64_t uniform_encode(void *ctx, const char *text, size_t len, int mode, int32_t **ids) {
    (void)ctx;
    (void)mode;
    *ids = ds_malloc((len ? len : 1) * sizeof(int32_t));
    for (size_t i = 0; i < len; i++) (*ids)[i] = (unsigned char)text[i];
    return (int64_t)len;
}

static int64_t uniform_decode(void *ctx, const int32_t *ids, int64_t n, char **text) {
    (void)ctx;
    *text = ds_malloc((size_t)n + 1);
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] > 0 && ids[i] < 256) (*text)[k++] = (char)ids[i];
    (*text)[k] = 0;
    return k;
}

void ds_lm_uniform_bytes(ds_lm *lm, int64_t max_length) {
    memset(lm, 0, sizeof *lm);
    lm->name = "builtin:uniform-bytes";
    lm->max_length = max_length > 0 ? max_length : 2048;
    lm->prefix_id = 0;
    lm->eos_id = 0;
    lm->loglik = uniform_loglik;
    lm->generate = uniform_generate;
    lm->encode = uniform_encode;
    lm->decode = uniform_decode;
}
