/*
 * generate.c — batch-1 generation: prefill the prompt, then one cached
 * decode step per new token, sampling each from the last logits; stops at
 * max_tokens, an EOS id, or when the token callback says so (stop strings).
 * With o->speculative the MTP or n-gram loop of speculative.c runs instead.
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

/* the checks and the length cap of a request: *N the tokens that fit */
static int gen_check(const ds_config *c, int64_t P, const ds_gen_opts *o, int64_t *N) {
    if (P <= 0) return ds_err("generate: the prompt is empty");
    if (P >= c->max_position_embeddings)
        return ds_err("generate: the prompt has %lld tokens, the model takes at most %lld positions "
                      "(max_position_embeddings) and needs room for one more",
                      (long long)P, (long long)c->max_position_embeddings);
    if (o->speculative == DS_SPEC_MTP && c->num_nextn_predict_layers < 1)
        return ds_err("generate: --speculative mtp needs a model with an MTP module");
    if (o->speculative == DS_SPEC_NGRAM &&
        (o->draft_max < 0 || o->draft_max > DS_NGRAM_DRAFT_CAP || o->ngram_min < 0 || o->ngram_max < 0 ||
         (o->ngram_max && o->ngram_max < (o->ngram_min ? o->ngram_min : 1))))
        return ds_err("generate: --speculative ngram takes 1..%d drafts and 1 <= ngram-min <= ngram-max (got %d, %d, %d)",
                      DS_NGRAM_DRAFT_CAP, o->draft_max, o->ngram_min, o->ngram_max);
    if (o->speculative != 0 && o->speculative != DS_SPEC_MTP && o->speculative != DS_SPEC_NGRAM)
        return ds_err("generate: unknown speculative method %d", o->speculative);
    *N = o->max_tokens;
    if (P + *N > c->max_position_embeddings) *N = c->max_position_embeddings - P;
    return 0;
}

/* plain decoding on e, whose cache holds prompt[0..L): prefill the rest,
 * then one step per new token (at most N) */
static int gen_plain(ds_engine *e, const struct ds_ops *ops, const int32_t *prompt, int64_t P, int64_t L,
                     const ds_gen_opts *o, int64_t N, int32_t *out, int64_t *nout, ds_token_fn fn, void *ctx,
                     ds_gen_stats *st) {
    ds_gen_opts oo = *o;
    oo.max_tokens = N;
    ds_sampler s;
    if (ds_sampler_init(&s, ops, &o->sp, e->m->cfg.vocab_size)) return -1;
    ds_sampler_prompt(&s, prompt, P);
    double t0 = ds_now();
    int rc = ds_engine_prefill(e, prompt + L, P - L);
    double t1 = ds_now();
    st->prefill_s = t1 - t0;
    while (!rc) {
        int32_t id = ds_sample(&s, e->logits);
        int stop = ds_gen_emit(&oo, id, out, nout, fn, ctx);
        if (!stop && ds_sampler_done(&s)) stop = 1; /* a JSON answer closed with no stop id to end it */
        if (stop) {
            st->stopped = stop;
            break;
        }
        if (*nout >= N) break;
        rc = ds_engine_step(e, &id, 1, 1);
        st->steps++;
    }
    st->decode_s = ds_now() - t1;
    st->new_tokens = *nout;
    ds_sampler_free(&s);
    return rc;
}

int ds_generate(const ds_model *m, const struct ds_ops *ops, const int32_t *prompt, int64_t P, const ds_gen_opts *o,
                int32_t *out, int64_t *nout, ds_token_fn fn, void *ctx, ds_gen_stats *st) {
    memset(st, 0, sizeof *st);
    *nout = 0;
    int64_t N;
    if (gen_check(&m->cfg, P, o, &N)) return -1;
    if (o->max_tokens <= 0) return 0;
    int64_t chunk = P < 256 ? P : 256;
    int dmax = o->draft_max, nmin = o->ngram_min, nmax = o->ngram_max;
    ds_ngram_resolve(&dmax, &nmin, &nmax);
    const int64_t verify = o->speculative == DS_SPEC_NGRAM ? 1 + dmax : 2;
    if (chunk < verify) chunk = verify;
    ds_engine e;
    if (ds_engine_create(&e, m, ops, 1, P + N, chunk, o->speculative == DS_SPEC_MTP)) return -1;
    st->prompt_tokens = P;
    int rc;
    if (o->speculative) {
        ds_gen_opts oo = *o;
        oo.max_tokens = N;
        rc = o->speculative == DS_SPEC_NGRAM ? ds_generate_ngram(&e, prompt, P, 0, &oo, out, nout, fn, ctx, st)
                                             : ds_generate_speculative(&e, prompt, P, &oo, out, nout, fn, ctx, st);
    } else {
        rc = gen_plain(&e, ops, prompt, P, 0, o, N, out, nout, fn, ctx, st);
    }
    ds_engine_free(&e);
    return rc;
}

int ds_generate_session(ds_gen_session *g, const ds_model *m, const struct ds_ops *ops, const int32_t *prompt,
                        int64_t P, const ds_gen_opts *o, int32_t *out, int64_t *nout, ds_token_fn fn, void *ctx,
                        ds_gen_stats *st) {
    memset(st, 0, sizeof *st);
    *nout = 0;
    int64_t N;
    if (gen_check(&m->cfg, P, o, &N)) return -1;
    if (o->speculative == DS_SPEC_MTP) return ds_err("generate: a session decodes plainly or with n-gram drafts (not --speculative mtp)");
    if (o->max_tokens <= 0) return 0;
    const int64_t ctx_len = m->cfg.max_position_embeddings;
    if (!g->tok) { /* chunk: prefill steps, and n-gram verify steps of up to DS_NGRAM_DRAFT_CAP + 1 tokens */
        if (ds_engine_create(&g->e, m, ops, 1, ctx_len, ctx_len < 256 ? ctx_len : 256, 0)) return -1;
        g->tok = ds_malloc((size_t)ctx_len * sizeof(int32_t));
    }
    int64_t L = 0; /* the prompt's prefix the cache holds, its last token left to prefill */
    while (L < g->e.pos && L < P - 1 && g->tok[L] == prompt[L]) L++;
    ds_engine_rewind(&g->e, L);
    st->prompt_tokens = P;
    st->cached_tokens = L;
    memcpy(g->tok, prompt, (size_t)P * sizeof(int32_t));
    int rc;
    if (o->speculative == DS_SPEC_NGRAM) {
        ds_gen_opts oo = *o;
        oo.max_tokens = N;
        rc = ds_generate_ngram(&g->e, prompt, P, L, &oo, out, nout, fn, ctx, st);
    } else {
        rc = gen_plain(&g->e, ops, prompt, P, L, o, N, out, nout, fn, ctx, st);
    }
    /* the cache holds the prompt and the answer but the last token (not stepped) */
    const int64_t keep = g->e.pos - P > 0 ? g->e.pos - P : 0;
    memcpy(g->tok + P, out, (size_t)keep * sizeof(int32_t));
    if (rc) ds_engine_rewind(&g->e, 0);
    return rc;
}

void ds_gen_session_free(ds_gen_session *g) {
    if (g->tok) ds_engine_free(&g->e);
    free(g->tok);
    memset(g, 0, sizeof *g);
}
