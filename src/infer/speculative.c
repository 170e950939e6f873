/*
 * speculative.c — greedy MTP speculative decoding (doc §7.4).  MTP module 1
 * drafts token t+2 from the main model's final-norm state at t and the
 * embedding of the accepted token t+1; the main model then processes
 * [t+1, draft] in one step.  The draft is accepted when it equals the main
 * model's greedy choice at t+1, and then the step also yields t+3 for free;
 * otherwise the main cache is rewound by one position.  The output is the
 * plain greedy output (up to float rounding of 2-token vs 1-token steps).
 *
 * Cache invariant after every step: the main model and the MTP module have
 * both cached exactly the positions whose successor token is known except
 * the newest one (main: tokens 0..n-2 of the sequence so far; MTP: states
 * 0..n-2, each paired with its successor).
 */
#include <stdlib.h>
#include <string.h>

#include "infer/infer.h"


/* the greedy choice of logits row r (V) */
static int32_t argmax(const ds_engine *e, const float *logits, int64_t r) {
    int32_t id;
    e->ops->argmax_rows(&id, logits + r * e->m->cfg.vocab_size, 1, e->m->cfg.vocab_size);
    return id;
}

/* the draft for output token i: the MTP module's greedy choice */
static int32_t pick_draft(const ds_engine *e, int64_t i) {
    if (e->forced_drafts && i < e->n_forced) return e->forced_drafts[i];
    return argmax(e, e->mtp_logits, 0);
}

int ds_spec_prefill_chunk(ds_engine *e, const int32_t *prompt, int64_t P, int64_t s, int64_t n) {
    /* the MTP module sees state i with token i+1, read straight from the main
     * step's e->hfinal (an MTP step leaves it as it is); the prompt's last
     * state waits for the first new token */
    if (ds_engine_step(e, prompt + s, n, 1)) return -1;
    int64_t rows = s + n < P ? n : n - 1;
    return rows > 0 ? ds_engine_mtp_step(e, e->hfinal, prompt + s + 1, rows, 1) : 0;
}

int64_t ds_spec_accept(int32_t draft, const int32_t g[2]) { return g[0] == draft ? 2 : 1; }

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
    for (int64_t s = 0; s < P && !rc; s += chunk) {
        int64_t n = P - s < chunk ? P - s : chunk;
        rc = ds_spec_prefill_chunk(e, prompt, P, s, n);
        last = n - 1;
    }
    double t1 = ds_now();
    st->prefill_s = t1 - t0;
    int32_t tok = 0, draft = 0;
    if (!rc) {
        tok = argmax(e, e->logits, 0);
        stop = ds_gen_emit(o, tok, out, nout, fn, ctx);
        if (!stop && *nout < want) {
            rc = ds_engine_mtp_step(e, e->hfinal + last * H, &tok, 1, 1);
            draft = pick_draft(e, *nout);
        }
    }
    while (!rc && !stop && *nout < want) {
        if (want - *nout == 1) { /* one token left: a plain step */
            rc = ds_engine_step(e, &tok, 1, 1);
            st->steps++;
            if (!rc) stop = ds_gen_emit(o, argmax(e, e->logits, 0), out, nout, fn, ctx);
            break;
        }
        int64_t pos = e->pos;
        int32_t two[2] = {tok, draft};
        rc = ds_engine_step(e, two, 2, 0);
        if (rc) break;
        st->steps++;
        st->drafted++;
        int32_t g[2] = {argmax(e, e->logits, 0), argmax(e, e->logits, 1)};
        const int64_t k = ds_spec_accept(draft, g);
        st->accepted += k - 1;
        if (k == 1) ds_engine_rewind(e, pos + 1);
        stop = ds_gen_emit(o, g[0], out, nout, fn, ctx);
        if (stop || *nout >= want) break;
        if (k == 2) {
            stop = ds_gen_emit(o, g[1], out, nout, fn, ctx);
            if (stop || *nout >= want) break;
        }
        rc = ds_engine_mtp_step(e, e->hfinal, g, k, 1);
        tok = g[k - 1];
        draft = pick_draft(e, *nout);
    }
    st->decode_s = ds_now() - t1;
    st->new_tokens = *nout;
    st->stopped = stop;
    return rc;
}
