/*
 * generate.c — batch-1 generation: prefill the prompt, then one cached
 * decode step per new token, sampling each from the last logits; stops at
 * max_tokens, an EOS id, or when the token callback says so (stop strings).
 * With o->speculative the MTP loop of speculative.c runs instead.
 */
#include <stdlib.h>
#include <string.h>

#include "infer/infer.h"

int ds_gen_emit(const ds_gen_opts *o, int32_t id, int32_t *out, int64_t *n, ds_token_fn fn, void *ctx) {
    out[(*n)++] = id;
    if (fn && fn(ctx, id)) return 2;
    for (int i = 0; i < o->neos; i++)
        if (o->eos[i] == id) return 1;
    return 0;
}

int ds_generate(const ds_model *m, const struct ds_ops *ops, const int32_t *prompt, int64_t P, const ds_gen_opts *o,
                int32_t *out, int64_t *nout, ds_token_fn fn, void *ctx, ds_gen_stats *st) {
    const ds_config *c = &m->cfg;
    memset(st, 0, sizeof *st);
    *nout = 0;
    if (P <= 0) return ds_err("generate: the prompt is empty");
    if (P >= c->max_position_embeddings)
        return ds_err("generate: the prompt has %lld tokens, the model takes at most %lld positions "
                      "(max_position_embeddings) and needs room for one more",
                      (long long)P, (long long)c->max_position_embeddings);
    if (o->max_tokens <= 0) return 0;
    int64_t N = o->max_tokens;
    if (P + N > c->max_position_embeddings) N = c->max_position_embeddings - P;
    ds_gen_opts oo = *o;
    oo.max_tokens = N;
    if (o->speculative && c->num_nextn_predict_layers < 1)
        return ds_err("generate: --speculative mtp needs a model with an MTP module");
    int64_t chunk = P < 256 ? P : 256;
    if (chunk < 2) chunk = 2;
    ds_engine e;
    if (ds_engine_create(&e, m, ops, 1, P + N, chunk, o->speculative)) return -1;
    st->prompt_tokens = P;
    int rc;
    if (o->speculative) {
        rc = ds_generate_speculative(&e, prompt, P, &oo, out, nout, fn, ctx, st);
        ds_engine_free(&e);
        return rc;
    }
    ds_sampler s;
    if (ds_sampler_init(&s, ops, &o->sp, c->vocab_size)) {
        ds_engine_free(&e);
        return -1;
    }
    ds_sampler_prompt(&s, prompt, P);
    double t0 = ds_now();
    rc = ds_engine_prefill(&e, prompt, P);
    double t1 = ds_now();
    st->prefill_s = t1 - t0;
    while (!rc) {
        int32_t id = ds_sample(&s, e.logits);
        int stop = ds_gen_emit(&oo, id, out, nout, fn, ctx);
        if (!stop && ds_sampler_done(&s)) stop = 1; /* a JSON answer closed with no stop id to end it */
        if (stop) {
            st->stopped = stop;
            break;
        }
        if (*nout >= N) break;
        rc = ds_engine_step(&e, &id, 1, 1);
        st->steps++;
    }
    st->decode_s = ds_now() - t1;
    st->new_tokens = *nout;
    ds_sampler_free(&s);
    ds_engine_free(&e);
    return rc;
}
