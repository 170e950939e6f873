/*
 * speculative.c — MTP speculative decoding (doc §7.4).  MTP module 1
 * drafts token t+2 from the main model's final-norm state at t and the
 * embedding of the accepted token t+1; the main model then processes
 * [t+1, draft] in one step.  The sampler draws token t+2 from the main
 * model's logits there, as plain decoding would (greedy: the argmax; else
 * temperature, top-k/p, min-p, penalties, bias, a guide, with one uniform
 * per token); the draft is accepted when the draw equals it, and then the
 * step's second row gives token t+3 for free; otherwise the main cache is
 * rewound by one position.  The draft is one token (a point mass q), so this
 * is speculative sampling's accept-with-probability p(draft) / resample from
 * the rest, exactly: each output token has the plain distribution, and with
 * the same seed the output is plain decoding's (up to float rounding of
 * 2-token vs 1-token steps).
 *
 * Cache invariant after every step: the main model and the MTP module have
 * both cached exactly the positions whose successor token is known except
 * the newest one (main: tokens 0..n-2 of the sequence so far; MTP: states
 * 0..n-2, each paired with its successor).
 *
 * N-gram speculative decoding (prompt lookup, DS_SPEC_NGRAM) needs no draft
 * model: where the text so far ends with n tokens that also occur earlier
 * (code being edited, a document quoted or summarized, a list, a model
 * repeating itself), the tokens that followed that earlier copy are the
 * draft.  [last token, d1..dk] go through the main model in one step; row i
 * draws the token after d_i's predecessor as plain decoding would, and the
 * drafts are kept up to the first draw that differs from its draft (that draw
 * is still the next token).  A draft is a point mass again, so each draw is
 * exact; the cache is rewound past the first rejected draft.  A step costs
 * about one token's step when the weights' reads dominate (batch 1), so each
 * accepted draft saves one.
 */
#include <stdlib.h>
#include <string.h>

#include "infer/infer.h"


/* the draft for output token i: the MTP module's greedy choice */
static int32_t pick_draft(const ds_engine *e, int64_t i) {
    if (e->forced_drafts && i < e->n_forced) return e->forced_drafts[i];
    int32_t id;
    e->ops->argmax_rows(&id, e->mtp_logits, 1, e->m->cfg.vocab_size);
    return id;
}

int ds_spec_prefill_chunk(ds_engine *e, const int32_t *prompt, int64_t P, int64_t s, int64_t n) {
    /* the MTP module sees state i with token i+1, read straight from the main
     * step's e->hfinal (an MTP step leaves it as it is); the prompt's last
     * state waits for the first new token */
    if (ds_engine_step(e, prompt + s, n, 1)) return -1;
    int64_t rows = s + n < P ? n : n - 1;
    return rows > 0 ? ds_engine_mtp_step(e, e->hfinal, prompt + s + 1, rows, 1) : 0;
}

int64_t ds_spec_verify(ds_sampler *s, const float *logits, int32_t draft, int32_t g[2]) {
    g[0] = g[1] = ds_sample(s, logits);
    if (g[0] != draft || ds_sampler_done(s)) return 1; /* a closed JSON answer takes nothing after */
    g[1] = ds_sample(s, logits + s->V);
    return 2;
}

/* ---- n-gram drafts (prompt lookup) ------------------------------------------ */

int64_t ds_ngram_draft(const int32_t *h, int64_t n_h, int nmin, int nmax, int64_t kmax, int32_t *draft) {
    if (kmax <= 0 || nmin < 1) return 0;
    for (int64_t n = nmax < n_h - 1 ? nmax : n_h - 1; n >= nmin; n--) {
        const int32_t *suf = h + n_h - n;
        for (int64_t j = n_h - n - 1; j >= 0; j--) { /* the latest earlier copy first */
            if (h[j] != suf[0] || memcmp(h + j, suf, (size_t)n * sizeof(int32_t))) continue;
            int64_t k = n_h - (j + n) < kmax ? n_h - (j + n) : kmax;
            memcpy(draft, h + j + n, (size_t)k * sizeof(int32_t));
            return k;
        }
    }
    return 0;
}

int64_t ds_forced_draft(const int32_t *forced, int64_t n_forced, int64_t nout, int64_t kmax, int32_t *draft) {
    const int64_t k = n_forced - nout < kmax ? n_forced - nout : kmax;
    if (k <= 0) return 0;
    memcpy(draft, forced + nout, (size_t)k * sizeof(int32_t));
    return k;
}

int ds_generate_ngram(ds_engine *e, const int32_t *prompt, int64_t P, int64_t L, const ds_gen_opts *o, int32_t *out,
                      int64_t *nout, ds_token_fn fn, void *ctx, ds_gen_stats *st) {
    const int64_t V = e->m->cfg.vocab_size, want = o->max_tokens;
    int dmax = o->draft_max, nmin = o->ngram_min, nmax = o->ngram_max;
    ds_ngram_resolve(&dmax, &nmin, &nmax);
    const int64_t K = dmax;
    if (e->B != 1) return ds_err("speculative ngram: needs a batch-1 engine");
    if (e->chunk < K + 1) return ds_err("speculative ngram: the engine takes %lld tokens a step, %lld drafts need %lld",
                                        (long long)e->chunk, (long long)K, (long long)(K + 1));
    if (e->pos != L || L >= P) return ds_err("speculative ngram: the cache holds %lld positions, not the %lld given",
                                             (long long)e->pos, (long long)L);
    memset(st, 0, sizeof *st);
    st->prompt_tokens = P;
    st->cached_tokens = L;
    *nout = 0;
    ds_sampler smp;
    if (ds_sampler_init(&smp, e->ops, &o->sp, V)) return -1;
    ds_sampler_prompt(&smp, prompt, P);
    /* the text so far (prompt and output), where the drafts are looked up */
    int32_t *h = ds_malloc((size_t)(P + want + 1) * sizeof(int32_t)), *ids = ds_malloc((size_t)(K + 1) * sizeof(int32_t));
    memcpy(h, prompt, (size_t)P * sizeof(int32_t));
    int64_t nh = P;
    double t0 = ds_now();
    int rc = ds_engine_prefill(e, prompt + L, P - L), stop = 0;
    double t1 = ds_now();
    st->prefill_s = t1 - t0;
    if (!rc) {
        int32_t tok = h[nh++] = ds_sample(&smp, e->logits);
        stop = ds_gen_emit(o, tok, out, nout, fn, ctx);
        if (!stop && ds_sampler_done(&smp)) stop = 1;
        while (!stop && *nout < want) {
            /* at most the tokens still wanted, less the one the last row gives */
            const int64_t kmax = K < want - *nout - 1 ? K : want - *nout - 1;
            const int64_t k = e->forced_drafts ? ds_forced_draft(e->forced_drafts, e->n_forced, *nout, kmax, ids + 1)
                                               : ds_ngram_draft(h, nh, nmin, nmax, kmax, ids + 1);
            const int64_t pos = e->pos;
            ids[0] = tok;
            if ((rc = ds_engine_step(e, ids, k + 1, k == 0))) break;
            st->steps++;
            st->drafted += k;
            int64_t r = 0; /* rows drawn from, less one: the drafts kept */
            for (;; r++) {
                tok = h[nh++] = ds_sample(&smp, e->logits + r * V);
                stop = ds_gen_emit(o, tok, out, nout, fn, ctx);
                if (!stop && ds_sampler_done(&smp)) stop = 1;
                if (stop || *nout >= want || r == k || tok != ids[r + 1]) break;
            }
            st->accepted += r;
            ds_engine_rewind(e, pos + 1 + r); /* [last token, the r drafts kept] stay cached */
        }
    }
    st->decode_s = ds_now() - t1;
    st->new_tokens = *nout;
    st->stopped = stop;
    free(h);
    free(ids);
    ds_sampler_free(&smp);
    return rc;
}

int ds_generate_speculative(ds_engine *e, const int32_t *prompt, int64_t P, const ds_gen_opts *o, int32_t *out,
                            int64_t *nout, ds_token_fn fn, void *ctx, ds_gen_stats *st) {
    const int64_t H = e->m->cfg.hidden_size, want = o->max_tokens, chunk = e->chunk;
    if (!e->mtp || e->B != 1) return ds_err("speculative: needs a batch-1 engine with the MTP module");
    if (chunk < 2) return ds_err("speculative: the engine must take 2 tokens per step");
    memset(st, 0, sizeof *st);
    st->prompt_tokens = P;
    int rc = 0, stop = 0;
    *nout = 0;
    double t0 = ds_now();
    int64_t last = 0; /* row of the prompt's last state in e->hfinal */
    ds_sampler smp;
    if (ds_sampler_init(&smp, e->ops, &o->sp, e->m->cfg.vocab_size)) return -1;
    ds_sampler_prompt(&smp, prompt, P);
    for (int64_t s = 0; s < P && !rc; s += chunk) {
        int64_t n = P - s < chunk ? P - s : chunk;
        rc = ds_spec_prefill_chunk(e, prompt, P, s, n);
        last = n - 1;
    }
    double t1 = ds_now();
    st->prefill_s = t1 - t0;
    int32_t tok = 0, draft = 0;
    if (!rc) {
        tok = ds_sample(&smp, e->logits);
        stop = ds_gen_emit(o, tok, out, nout, fn, ctx);
        if (!stop && ds_sampler_done(&smp)) stop = 1; /* a JSON answer closed with no stop id */
        if (!stop && *nout < want) {
            rc = ds_engine_mtp_step(e, e->hfinal + last * H, &tok, 1, 1);
            draft = pick_draft(e, *nout);
        }
    }
    while (!rc && !stop && *nout < want) {
        if (want - *nout == 1) { /* one token left: a plain step */
            rc = ds_engine_step(e, &tok, 1, 1);
            st->steps++;
            if (!rc) stop = ds_gen_emit(o, ds_sample(&smp, e->logits), out, nout, fn, ctx);
            break;
        }
        int64_t pos = e->pos;
        int32_t two[2] = {tok, draft};
        rc = ds_engine_step(e, two, 2, 0);
        if (rc) break;
        st->steps++;
        st->drafted++;
        int32_t g[2];
        const int64_t k = ds_spec_verify(&smp, e->logits, draft, g);
        st->accepted += k - 1;
        if (k == 1) ds_engine_rewind(e, pos + 1);
        stop = ds_gen_emit(o, g[0], out, nout, fn, ctx);
        if (!stop && ds_sampler_done(&smp)) stop = 1;
        if (stop || *nout >= want) break;
        if (k == 2) {
            stop = ds_gen_emit(o, g[1], out, nout, fn, ctx);
            if (!stop && ds_sampler_done(&smp)) stop = 1;
            if (stop || *nout >= want) break;
        }
        rc = ds_engine_mtp_step(e, e->hfinal, g, k, 1);
        tok = g[k - 1];
        draft = pick_draft(e, *nout);
    }
    st->decode_s = ds_now() - t1;
    st->new_tokens = *nout;
    st->stopped = stop;
    ds_sampler_free(&smp);
    return rc;
}
