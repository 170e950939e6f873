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
