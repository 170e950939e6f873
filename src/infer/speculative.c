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


/* the draft for output token i: the MTP module's greedy choice */
static int32_t pick_draft(const ds_engine *e, int64_t i) {
    if (e->forced_drafts && i < e->n_forced) return e->forced_drafts[i];
    return ds_argmax(e->mtp_logits, e->m->cfg.vocab_size);
}

int ds_generate_speculative(ds_engine *e, const int32_t *prompt, int64_t P, const ds_gen_opts *o, int32_t *out,
                            int64_t *nout, ds_token_fn fn, void *ctx, ds_gen_stats *st) {
    const ds_config *c = &e->m->cfg;
    const int64_t H = c->hidden_size, V = c->vocab_size, N = o->max_tokens, C = e->chunk;
    if (!e->mtp || e->B != 1) return ds_err("speculative: needs a batch-1 engine with the MTP module");
    if (C < 2) return ds_err("speculative: the engine must take 2 tokens per step");
    float *hb = ds_malloc((size_t)((C + 1) * H) * sizeof(float)); /* (C+1, H) states waiting for the MTP module */
    int32_t *nb = ds_malloc((size_t)(C + 1) * sizeof(int32_t));
    memset(st, 0, sizeof *st);
    st->prompt_tokens = P;
    int64_t pend = 0; /* rows of hb whose successor token is not known yet (0 or 1) */
    int rc = 0, stop = 0;
    *nout = 0;
    double t0 = ds_now();
    /* prefill both: the MTP module sees state i with token i+1 */
    for (int64_t s = 0; s < P && !rc; s += C) {
        int64_t n = P - s < C ? P - s : C;
        rc = ds_engine_step(e, prompt + s, n, 1);
        if (rc) break;
        int64_t rows = pend + n - 1; /* the chunk's last state waits for the next token */
        memcpy(hb + pend * H, e->hfinal, (size_t)((n - 1) * H) * sizeof(float));
        for (int64_t i = 0; i < rows; i++) nb[i] = prompt[s - pend + 1 + i];
        if (rows > 0) rc = ds_engine_mtp_step(e, hb, nb, rows, 1);
        memcpy(hb, e->hfinal + (n - 1) * H, (size_t)H * sizeof(float));
        pend = 1;
    }
    double t1 = ds_now();
    st->prefill_s = t1 - t0;
    int32_t tok = 0, draft = 0;
    if (!rc) {
        tok = ds_argmax(e->logits, V);
        stop = ds_gen_emit(o, tok, out, nout, fn, ctx);
        if (!stop && *nout < N) {
            rc = ds_engine_mtp_step(e, hb, &tok, 1, 1);
            draft = pick_draft(e, *nout);
        }
    }
    while (!rc && !stop && *nout < N) {
        if (N - *nout == 1) { /* one token left: a plain step */
            rc = ds_engine_step(e, &tok, 1, 1);
            st->steps++;
            if (!rc) stop = ds_gen_emit(o, ds_argmax(e->logits, V), out, nout, fn, ctx);
            break;
        }
        int64_t pos = e->pos;
        int32_t two[2] = {tok, draft};
        rc = ds_engine_step(e, two, 2, 0);
        if (rc) break;
        st->steps++;
        st->drafted++;
        int32_t g1 = ds_argmax(e->logits, V), g2 = ds_argmax(e->logits + V, V);
        memcpy(hb, e->hfinal, (size_t)(2 * H) * sizeof(float));
        if (g1 == draft) {
            st->accepted++;
            stop = ds_gen_emit(o, g1, out, nout, fn, ctx);
            if (stop || *nout >= N) break;
            stop = ds_gen_emit(o, g2, out, nout, fn, ctx);
            if (stop || *nout >= N) break;
            nb[0] = g1;
            nb[1] = g2;
            rc = ds_engine_mtp_step(e, hb, nb, 2, 1);
            tok = g2;
        } else {
            ds_engine_rewind(e, pos + 1);
            stop = ds_gen_emit(o, g1, out, nout, fn, ctx);
            if (stop || *nout >= N) break;
            rc = ds_engine_mtp_step(e, hb, &g1, 1, 1);
            tok = g1;
        }
        draft = pick_draft(e, *nout);
    }
    st->decode_s = ds_now() - t1;
    st->new_tokens = *nout;
    st->stopped = stop;
    free(hb);
    free(nb);
    return rc;
}
