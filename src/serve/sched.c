/*
 * sched.c — the continuous-batching scheduler (see sched.h).
 *
 * One decode engine (ds_rows_engine) with a cache row per slot runs the
 * batched steps (every running sequence at its own position, the weights
 * read once per step) and, with its prefill activations (prefill_chunk
 * tokens in all), the batched prefill straight into the slots' rows.  Each
 * sequence's decode arithmetic is that of `dsv3 generate`'s batch-1 steps at
 * the same positions (up to 16 rows a step on the CPU table,
 * DS_LINEAR_ROWWISE_MAX), hence the same greedy tokens alone or in a batch.
 */
#include "serve/sched.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"

enum { SLOT_FREE, SLOT_PREFILL, SLOT_DECODE };
#define MTP(s) ((s)->o.speculative == DS_SPEC_MTP)
#define NGRAM(s) ((s)->o.speculative == DS_SPEC_NGRAM)

const double ds_ttft_bounds[DS_TTFT_BUCKETS - 1] = {0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                                                    0.3,   0.4,  0.5,   0.75, 1,     2.5, 5};

struct ds_sched {
    const ds_model *m;
    const struct ds_ops *ops;
    const ds_tokenizer *tok;
    ds_sched_opts o;
    int64_t eos[32];
    int neos;
    pthread_t th;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t work, progress;
    int stop;
    ds_sreq *qhead, *qtail;
    int nq;
    ds_sreq **slot;
    int *state;
    int64_t *prefilled;
    int32_t *last;
    int32_t *draft;    /* per slot: the MTP draft of the token after last (speculative) */
    int *spec;         /* per slot: 1 when it decodes speculatively (every request but one scoring its prompt) */
    int32_t *b_next;   /* (max_batch, T): the verify step's tokens (MTP: then the MTP step's) */
    int64_t *g_k;      /* (max_batch) n-gram: each gathered sequence's draft length */
    int32_t *g_ids;    /* (NGRAM_ROWS) n-gram: a verify step's tokens */
    int32_t *m_hrow, *m_next; /* (max_batch, 2): an MTP step's state rows and tokens */
    int64_t *m_rows, *m_pos;
    int *m_k;
    int64_t *pos;      /* per slot: tokens in its cache row */
    int64_t *b_rows, *b_pos; /* the step's gather */
    int32_t *b_ids;
    int b_n;           /* sequences in the step's gather */
    int *p_slot;       /* the prefill forward's prompts (slots) */
    int64_t *p_rows, *p_pos, *p_len, *p_last;
    int32_t *p_ids, *p_next; /* (prefill_chunk): their tokens; speculative: the tokens after them */
    int *b_slot;
    int nrows;          /* cache rows: max_batch, or more with --cache-rows (at most max_batch hold a request) */
    ds_rows_engine dec; /* nrows cache rows; decode steps of up to max_batch, batched prefill */
    /* the prefix cache: what each cache row holds, kept after its request ends */
    int32_t *ctok;     /* (nrows, ctx + 1): row i's tokens, prompt then output */
    int64_t *ntok;     /* per row: tokens in ctok */
    int64_t *kvn;      /* per row: positions 0..kvn-1 of the main model's cache hold ctok's tokens */
    int64_t *mvn;      /* per row: MTP positions 0..mvn-1 hold (state j, token j + 1) of ctok */
    double *t_used;    /* per row: when its last request ended (a free row's age) */
    float *lsm; /* (V) host copy of a device-resident logits row (logprobs) */
    int step_delay_us; /* tests: DSV3_SERVE_STEP_DELAY_MS slows every iteration so batching is observable */
    int wake;          /* this iteration gave a streaming request tokens or finished a request: wake the
                        * submitters (a non-streaming one woken every step took a core from the step) */
    ds_sched_stats st;
};

ds_sreq *ds_sreq_new(void) {
    ds_sreq *r = ds_calloc(1, sizeof *r);
    r->refs = 1;
    r->slot = -1;
    r->top_logprobs = -1;
    return r;
}

static void sreq_free(ds_sreq *r) {
    free(r->prompt);
    free(r->out), free(r->lp), free(r->top_id), free(r->top_lp);
    free(r->p_lp), free(r->p_top_id), free(r->p_top_lp);
    free(r->text);
    free(r->forced_drafts);
    free((void *)r->sp.bias);
    for (int i = 0; i < r->nstop; i++) free(r->stop[i]);
    free(r->stop_ids);
    ds_json_schema_free(r->schema);
    free(r);
}

/* with the mutex held */
static void unref(ds_sreq *r) {
    if (--r->refs == 0) sreq_free(r);
}

void ds_sched_lock(ds_sched *s) { pthread_mutex_lock(&s->mu); }
void ds_sched_unlock(ds_sched *s) { pthread_mutex_unlock(&s->mu); }
void ds_sched_wait(ds_sched *s, int ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&s->progress, &s->mu, &ts);
}

void ds_sched_get_stats(ds_sched *s, ds_sched_stats *st) {
    pthread_mutex_lock(&s->mu);
    *st = s->st;
    st->queued = s->nq;
    pthread_mutex_unlock(&s->mu);
}

int ds_sched_submit(ds_sched *s, ds_sreq *r) { return ds_sched_submit_n(s, &r, 1); }

int ds_sched_submit_n(ds_sched *s, ds_sreq **rs, int n) {
    pthread_mutex_lock(&s->mu);
    if (s->nq + n > s->o.max_queue || s->stop) {
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        ds_sreq *r = rs[i];
        r->refs++;
        r->t_submit = ds_now();
        r->next = NULL;
        if (s->qtail) s->qtail->next = r;
        else s->qhead = r;
        s->qtail = r;
        s->nq++;
        s->st.requests++;
        s->st.prompt_tokens += (uint64_t)r->P;
    }
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

void ds_sched_release(ds_sched *s, ds_sreq *r) {
    pthread_mutex_lock(&s->mu);
    if (!r->done) r->cancel = 1;
    pthread_cond_signal(&s->work);
    unref(r);
    pthread_mutex_unlock(&s->mu);
}

void ds_sched_cancel_all(ds_sched *s) {
    pthread_mutex_lock(&s->mu);
    for (ds_sreq *r = s->qhead; r; r = r->next) r->cancel = 1;
    for (int i = 0; i < s->nrows; i++)
        if (s->slot[i]) s->slot[i]->cancel = 1;
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->mu);
}

/* mutex held: mark done, free the slot */
static void finish(ds_sched *s, ds_sreq *r, const char *why) {
    if (r->done) return;
    s->wake = 1;
    size_t len = 0;
    const char *b = ds_decode_stream_flush(&r->dstream, &len);
    if (b && len && strcmp(why, "cancelled")) {
        if (r->ntext + len + 1 > r->text_cap) {
            r->text_cap = (r->ntext + len + 1) * 2;
            r->text = ds_realloc(r->text, r->text_cap);
        }
        memcpy(r->text + r->ntext, b, len);
        r->ntext += len;
        r->text[r->ntext] = 0;
    }
    r->done = 1;
    r->finish = why;
    r->text_ready = r->ntext;
    r->t_done = ds_now();
    if (!strcmp(why, "cancelled")) s->st.cancelled++;
    ds_sampler_free(&r->sampler);
    if (r->slot >= 0) {
        s->t_used[r->slot] = ds_now();
        s->slot[r->slot] = NULL;
        s->state[r->slot] = SLOT_FREE;
        s->st.active--;
        r->slot = -1;
        unref(r);
    }
}

/* log-softmax of logits (host memory); the chosen token's value */
static void logprobs(ds_sched *s, ds_sreq *r, const float *logits, int32_t id, float *lp, int32_t *tid, float *tlp) {
    const int64_t V = s->m->cfg.vocab_size;
    float mx = logits[0];
    for (int64_t i = 1; i < V; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (int64_t i = 0; i < V; i++) sum += exp((double)logits[i] - mx);
    float lse = mx + (float)log(sum);
    *lp = logits[id] - lse;
    int k = r->top_logprobs;
    for (int j = 0; j < k; j++) tid[j] = -1, tlp[j] = -INFINITY;
    for (int64_t i = 0; i < V && k > 0; i++) {
        float v = logits[i] - lse;
        if (tid[k - 1] >= 0 && v <= tlp[k - 1]) continue;
        int j = k - 1;
        while (j > 0 && (tid[j - 1] < 0 || v > tlp[j - 1])) tid[j] = tid[j - 1], tlp[j] = tlp[j - 1], j--;
        tid[j] = (int32_t)i, tlp[j] = v;
    }
}

/* mutex held: append a sampled token; stop at EOS, a stop string, max_tokens */
static void emit(ds_sched *s, ds_sreq *r, int32_t id, float lp, const int32_t *tid, const float *tlp) {
    if (r->nout == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 64;
        r->out = ds_realloc(r->out, (size_t)r->cap * sizeof(int32_t));
        r->lp = ds_realloc(r->lp, (size_t)r->cap * sizeof(float));
        r->top_id = ds_realloc(r->top_id, (size_t)r->cap * DS_SREQ_MAX_TOP * sizeof(int32_t));
        r->top_lp = ds_realloc(r->top_lp, (size_t)r->cap * DS_SREQ_MAX_TOP * sizeof(float));
    }
    int64_t k = r->nout++;
    if (r->stream) s->wake = 1;
    if (r->slot >= 0 && r->P + k <= s->o.ctx) {
        s->ctok[(size_t)r->slot * (size_t)(s->o.ctx + 1) + (size_t)(r->P + k)] = id;
        s->ntok[r->slot] = r->P + k + 1;
    }
    r->out[k] = id;
    r->lp[k] = lp;
    if (r->top_logprobs > 0) {
        memcpy(r->top_id + k * DS_SREQ_MAX_TOP, tid, (size_t)r->top_logprobs * sizeof(int32_t));
        memcpy(r->top_lp + k * DS_SREQ_MAX_TOP, tlp, (size_t)r->top_logprobs * sizeof(float));
    }
    s->st.gen_tokens++;
    if (k == 0) {
        r->t_first = ds_now();
        const double dt = r->t_first - r->t_submit;
        s->st.ttft_sum += dt;
        s->st.ttft_count++;
        int b = 0;
        while (b < DS_TTFT_BUCKETS - 1 && dt > ds_ttft_bounds[b]) b++;
        s->st.ttft_bucket[b]++;
    }
    const int may_stop = r->nout >= r->min_tokens; /* as vLLM: min_tokens counts this token */
    int is_stop = 0;
    for (int i = 0; !r->ignore_eos && i < s->neos; i++) is_stop |= s->eos[i] == id;
    for (int i = 0; i < r->nstop_ids; i++) is_stop |= r->stop_ids[i] == id;
    if (is_stop && may_stop) {
        finish(s, r, "stop");
        return;
    }
    size_t len = 0;
    const char *b = ds_decode_stream_next(&r->dstream, id, &len);
    if (b && len) {
        size_t old = r->ntext;
        if (r->ntext + len + 1 > r->text_cap) {
            r->text_cap = (r->ntext + len + 1) * 2;
            r->text = ds_realloc(r->text, r->text_cap);
        }
        memcpy(r->text + r->ntext, b, len);
        r->ntext += len;
        r->text[r->ntext] = 0;
        size_t hold = 0, cut = (size_t)-1, cut_len = 0;
        for (int i = 0; i < r->nstop; i++) {
            size_t sl = strlen(r->stop[i]);
            if (sl > hold + 1) hold = sl - 1;
            size_t from = old + 1 >= sl ? old + 1 - sl : 0; /* a match ends inside the new bytes */
            const char *hit = sl ? strstr(r->text + from, r->stop[i]) : NULL;
            if (hit && (size_t)(hit - r->text) < cut) cut = (size_t)(hit - r->text), cut_len = sl;
        }
        if (!may_stop) cut = (size_t)-1;
        if (cut != (size_t)-1) {
            if (r->include_stop) cut += cut_len; /* the earliest match, kept whole */
            r->ntext = cut;
            r->text[cut] = 0;
            finish(s, r, "stop");
            return;
        }
        if (r->ntext > hold && r->ntext - hold > r->text_ready) r->text_ready = r->ntext - hold;
    }
    if (ds_sampler_done(&r->sampler)) finish(s, r, "stop"); /* a JSON answer closed, no stop id to end it with */
    else if (r->nout >= r->max_tokens) finish(s, r, "length");
}


/* a logits row (V) where the host reads it: device-resident logits copied to s->lsm */
static const float *host_row(ds_sched *s, const float *logits) {
    if (s->ops->host_visible) return logits;
    const size_t n = (size_t)s->m->cfg.vocab_size * sizeof(float);
    if (!s->lsm) s->lsm = ds_malloc(n);
    s->ops->copy_d2h(s->lsm, logits, n);
    return s->lsm;
}

/* emit token id chosen from logits (V), with its log-probabilities when asked */
static void emit_id(ds_sched *s, ds_sreq *r, const float *logits, int32_t id) {
    float lp = 0, tlp[DS_SREQ_MAX_TOP];
    int32_t tid[DS_SREQ_MAX_TOP];
    if (r->top_logprobs >= 0) logprobs(s, r, host_row(s, logits), id, &lp, tid, tlp);
    pthread_mutex_lock(&s->mu);
    emit(s, r, id, lp, tid, tlp);
    pthread_mutex_unlock(&s->mu);
}

static void sample_emit(ds_sched *s, ds_sreq *r, const float *logits, int32_t *last) {
    *last = ds_sample(&r->sampler, logits);
    emit_id(s, r, logits, *last);
}

static int32_t argmax(const ds_sched *s, const float *logits) {
    int32_t id;
    s->ops->argmax_rows(&id, logits, 1, s->m->cfg.vocab_size);
    return id;
}

/* the MTP draft of r's next output token from MTP logits (V) (tests: the forced one) */
static int32_t pick_draft(const ds_sched *s, const ds_sreq *r, const float *mtp_logits) {
    if (r->forced_drafts && r->nout < r->nforced) return r->forced_drafts[r->nout];
    return argmax(s, mtp_logits);
}

/* The prompts of the next prefill forward: the oldest request still
 * prefilling, then the next oldest ones, each with its next chunk (a prompt
 * is cut where `dsv3 generate` cuts it: every prefill_chunk tokens from its
 * start).  The forward takes t tokens per sequence, t = the longest chunk in
 * the group; shorter chunks are padded, so a prompt joins when the group,
 * padding included, stays within the budget (the oldest alone may exceed it
 * when first) and at least half real tokens, and when its padded chunk stays
 * inside the context.  At most --prefill-batch prompts.  Fills p_slot, p_len;
 * *t the tokens per sequence. */
static int64_t chunk_len(const ds_sched *s, int i) {
    int64_t n = s->slot[i]->P - s->prefilled[i];
    return n < s->o.prefill_chunk ? n : s->o.prefill_chunk;
}

static int64_t prefill_pick(ds_sched *s, int64_t budget, int first, int64_t *t) {
    const int B = s->nrows;
    int n = 0;
    int64_t real = 0, maxpos = 0; /* real tokens, the furthest chunk start */
    for (;;) {
        int best = -1;
        for (int i = 0; i < B; i++) {
            if (s->state[i] != SLOT_PREFILL || s->slot[i]->cancel) continue;
            if (n && s->slot[i]->prompt_logprobs) continue; /* alone: every position through the head */
            int taken = 0;
            for (int k = 0; k < n && !taken; k++) taken = s->p_slot[k] == i;
            if (taken) continue;
            if (n) { /* does it fit the group? */
                const int64_t len = chunk_len(s, i), tt = len > *t ? len : *t;
                const int64_t mp = s->prefilled[i] > maxpos ? s->prefilled[i] : maxpos;
                if ((n + 1) * tt > budget || 2 * (real + len) < (n + 1) * tt || mp + tt > s->o.ctx) continue;
            }
            if (best < 0 || s->slot[i]->t_submit < s->slot[best]->t_submit) best = i;
        }
        if (best < 0) break;
        const int64_t len = chunk_len(s, best);
        if (!n) {
            if (len > budget && !first) break;
            *t = len;
            if (budget < len) budget = len;
        }
        if (len > *t) *t = len;
        if (s->prefilled[best] > maxpos) maxpos = s->prefilled[best];
        real += len;
        s->p_len[n] = len;
        s->p_slot[n++] = best;
        if (n >= s->o.prefill_batch || s->slot[best]->prompt_logprobs) break;
    }
    return n;
}

/* A prompt_logprobs request's chunk, alone, every position through the head:
 * row k's logits score the prompt token after it; the prompt's last row
 * samples the first new token (none with max_tokens 0).  It decodes plainly
 * after (no MTP drafts). */
static void prefill_scored(ds_sched *s, int *fresh) {
    const int64_t V = s->m->cfg.vocab_size;
    const int i = s->p_slot[0];
    ds_sreq *r = s->slot[i];
    const int64_t len = s->p_len[0], p0 = s->prefilled[i];
    if (ds_rows_engine_prefill_all(&s->dec, r->prompt + p0, i, p0, len)) {
        ds_log(DS_LOG_INFO, "dsv3 serve: %s", ds_errmsg());
        pthread_mutex_lock(&s->mu);
        finish(s, r, "error");
        pthread_mutex_unlock(&s->mu);
        return;
    }
    const float *lg = s->dec.p_logits;
    for (int64_t k = 0; k < len && p0 + k + 1 < r->P; k++) {
        const int64_t q = p0 + k + 1; /* the prompt position scored */
        logprobs(s, r, host_row(s, lg + k * V), r->prompt[q], &r->p_lp[q], r->p_top_id + q * DS_SREQ_MAX_TOP,
                 r->p_top_lp + q * DS_SREQ_MAX_TOP);
    }
    s->prefilled[i] += len;
    s->kvn[i] = s->prefilled[i];
    if (s->prefilled[i] < r->P) return;
    s->pos[i] = r->P;
    s->state[i] = SLOT_DECODE;
    s->spec[i] = 0;
    fresh[i] = 1;
    if (r->max_tokens <= 0) {
        pthread_mutex_lock(&s->mu);
        finish(s, r, "length");
        pthread_mutex_unlock(&s->mu);
        return;
    }
    sample_emit(s, r, lg + (len - 1) * V, &s->last[i]);
}

/* One prefill forward of the picked prompts (each padded to t tokens with
 * its last token), straight into their cache rows; a prompt that is done
 * samples its first token (and, speculative, the MTP module sees the
 * chunk's states with the tokens after them: the prompt's own, then the
 * first new token, whose logits give the first draft). */
static void prefill_run(ds_sched *s, int n, int64_t t, int *fresh) {
    const int64_t V = s->m->cfg.vocab_size;
    if (n == 1 && s->slot[s->p_slot[0]]->prompt_logprobs) {
        prefill_scored(s, fresh);
        return;
    }
    for (int k = 0; k < n; k++) {
        const int i = s->p_slot[k];
        const int64_t len = s->p_len[k];
        const int32_t *src = s->slot[i]->prompt + s->prefilled[i];
        memcpy(s->p_ids + k * t, src, (size_t)len * sizeof(int32_t));
        for (int64_t j = len; j < t; j++) s->p_ids[k * t + j] = src[len - 1];
        s->p_rows[k] = i;
        s->p_pos[k] = s->prefilled[i];
        s->p_last[k] = len - 1;
    }
    if (ds_rows_engine_prefill(&s->dec, s->p_ids, s->p_rows, s->p_pos, s->p_last, n, t)) {
        ds_log(DS_LOG_INFO, "dsv3 serve: %s", ds_errmsg());
        pthread_mutex_lock(&s->mu);
        for (int k = 0; k < n; k++) finish(s, s->slot[s->p_slot[k]], "error");
        pthread_mutex_unlock(&s->mu);
        return;
    }
    int nfinal = 0;
    for (int k = 0; k < n; k++) {
        const int i = s->p_slot[k];
        const int64_t len = s->p_len[k];
        ds_sreq *r = s->slot[i];
        /* the MTP module's next tokens: the prompt's, then the first new token (padding: the last) */
        int32_t *nx = s->p_next + k * t;
        if (MTP(s)) memcpy(nx, r->prompt + s->p_pos[k] + 1, (size_t)(len - 1) * sizeof(int32_t));
        s->prefilled[i] += len;
        s->kvn[i] = s->prefilled[i];
        if (s->prefilled[i] < r->P) {
            if (MTP(s))
                for (int64_t j = len - 1; j < t; j++) nx[j] = r->prompt[s->prefilled[i]];
            continue;
        }
        nfinal++;
        s->pos[i] = r->P;
        s->state[i] = SLOT_DECODE;
        fresh[i] = 1;
        sample_emit(s, r, s->dec.p_logits + k * V, &s->last[i]); /* may finish r: then slot[i] is NULL */
        s->spec[i] = s->o.speculative && s->slot[i] == r;
        if (MTP(s))
            for (int64_t j = len - 1; j < t; j++) nx[j] = s->last[i];
    }
    if (!MTP(s)) return;
    if (ds_rows_engine_prefill_mtp(&s->dec, s->p_next, s->p_rows, s->p_pos, s->p_last, n, t)) {
        ds_log(DS_LOG_INFO, "dsv3 serve: %s", ds_errmsg());
        for (int k = 0; k < n; k++) s->spec[s->p_slot[k]] = 0; /* those decode plainly */
        return;
    }
    for (int k = 0; k < n; k++) s->mvn[s->p_slot[k]] = s->prefilled[s->p_slot[k]];
    for (int k = 0; k < n && nfinal; k++) {
        const int i = s->p_slot[k];
        if (s->spec[i] && fresh[i] && s->slot[i]) s->draft[i] = pick_draft(s, s->slot[i], s->dec.p_mtp_logits + k * V);
    }
}

/* the running sequences of this iteration into the step's gather (b_*);
 * ids: their last tokens, two per sequence with its draft when two */
static int gather(ds_sched *s, const int *fresh, int two) {
    int n = 0;
    for (int i = 0; i < s->nrows; i++) {
        ds_sreq *r = s->slot[i];
        if (!r || s->state[i] != SLOT_DECODE || fresh[i] || r->done || r->cancel) continue;
        if (two) {
            s->b_next[2 * n] = s->last[i];
            s->b_next[2 * n + 1] = s->spec[i] ? s->draft[i] : s->last[i];
        }
        s->b_ids[n] = s->last[i];
        s->b_rows[n] = i;
        s->b_pos[n] = s->pos[i];
        s->b_slot[n++] = i;
    }
    s->b_n = n;
    return n;
}

/* one token per running sequence; the sequences stepped or -1 */
static int plain_decode(ds_sched *s, const int *fresh) {
    const int64_t V = s->m->cfg.vocab_size;
    int n = gather(s, fresh, 0);
    if (!n) return 0;
    if (ds_rows_engine_step(&s->dec, s->b_ids, s->b_rows, s->b_pos, n)) return -1;
    for (int k = 0; k < n; k++) {
        int i = s->b_slot[k];
        s->kvn[i] = ++s->pos[i];
        sample_emit(s, s->slot[i], s->dec.logits + k * V, &s->last[i]);
    }
    return n;
}

/* Speculative decode (--speculative mtp, doc §7.4, infer/speculative.c):
 * every running sequence takes two tokens in one batched step — its last
 * token and the MTP draft of the next (a request scoring its prompt: its
 * last token twice, the second position dropped).  The request's sampler
 * draws the next token from the first row as plain decoding would
 * (ds_spec_verify); when the draw is the draft, the sequence keeps it and
 * draws the token after it from the second row (otherwise its second cache
 * position is overwritten by the next step); then MTP steps draft every
 * speculative sequence's next token from its new states.  Greedy or
 * sampled, with penalties or a JSON guide, the tokens are those of plain
 * decoding with the same seed.  Cache invariant per speculative slot: main
 * model and MTP module have both cached positions 0..pos-1.  Returns the
 * sequences stepped, -1 on error. */
/* sequences k0..k1-1 of the gather: the verify step, acceptance, drafts */
static int spec_group(ds_sched *s, int k0, int k1) {
    const int64_t V = s->m->cfg.vocab_size;
    const int n = k1 - k0;
    if (ds_rows_engine_step_n(&s->dec, s->b_next + 2 * k0, s->b_rows + k0, s->b_pos + k0, n, 2)) return -1;
    uint64_t drafted = 0, accepted = 0;
    for (int k = k0; k < k1; k++) {
        int i = s->b_slot[k];
        ds_sreq *r = s->slot[i];
        const float *lg = s->dec.logits + 2 * (k - k0) * V;
        if (!s->spec[i]) {
            s->kvn[i] = ++s->pos[i];
            sample_emit(s, r, lg, &s->last[i]);
            continue;
        }
        int32_t g[2];
        const int64_t acc = ds_spec_verify(&r->sampler, lg, s->draft[i], g); /* the draws plain decoding makes */
        drafted++, accepted += (uint64_t)(acc - 1);
        s->pos[i] += acc;
        s->kvn[i] = s->pos[i];
        s->last[i] = g[acc - 1];
        s->b_ids[k] = (int32_t)(acc - 1); /* the MTP row that drafts next */
        s->b_next[2 * k] = g[0];
        s->b_next[2 * k + 1] = g[acc - 1];
        emit_id(s, r, lg, g[0]);
        if (acc == 2 && s->slot[i] == r) emit_id(s, r, lg + V, g[1]); /* r finished: slot[i] is NULL */
    }
    pthread_mutex_lock(&s->mu);
    s->st.drafted += drafted, s->st.accepted += accepted;
    pthread_mutex_unlock(&s->mu);
    /* MTP module 1 drafts every still-running speculative sequence's next token,
     * in two batched steps: the sequences that kept two tokens (both new
     * states, each with the token after it) and those that kept one (its
     * state and token); only each one's last state goes through the head */
    for (int64_t t = 2; t >= 1; t--) {
        int m = 0;
        for (int k = k0; k < k1; k++) {
            const int i = s->b_slot[k];
            if (!s->spec[i] || !s->slot[i] || s->b_ids[k] + 1 != t) continue;
            for (int j = 0; j < t; j++) {
                s->m_hrow[m * t + j] = 2 * (k - k0) + j;
                s->m_next[m * t + j] = s->b_next[2 * k + j];
            }
            s->m_rows[m] = s->b_rows[k];
            s->m_pos[m] = s->b_pos[k];
            s->m_k[m++] = k;
        }
        if (!m) continue;
        if (ds_rows_engine_mtp_step_rows(&s->dec, s->m_hrow, s->m_next, s->m_rows, s->m_pos, m, t)) return -1;
        for (int j = 0; j < m; j++) {
            const int i = s->b_slot[s->m_k[j]];
            s->mvn[i] = s->pos[i];
            s->draft[i] = pick_draft(s, s->slot[i], s->dec.mtp_logits + j * V);
        }
    }
    return 0;
}

/* the verify step takes at most this many sequences (2 rows each): within
 * DS_LINEAR_ROWWISE_MAX rows the CPU linears compute every row as a batch-1
 * step does, so speculative output equals plain decoding's at any
 * --max-batch (a larger batch verifies in several steps) */
#define SPEC_GROUP 8

static int spec_decode(ds_sched *s, const int *fresh) {
    int n = gather(s, fresh, 1), nspec = 0;
    for (int k = 0; k < n; k++) nspec += s->spec[s->b_slot[k]];
    if (!nspec) return plain_decode(s, fresh); /* only sampled requests: one-token steps */
    for (int k0 = 0; k0 < n; k0 += SPEC_GROUP)
        if (spec_group(s, k0, k0 + SPEC_GROUP < n ? k0 + SPEC_GROUP : n)) return -1;
    return n;
}

/* N-gram speculative decode (--speculative ngram, infer/speculative.c's
 * ds_generate_ngram in the batch): each running sequence drafts up to
 * draft_max tokens from its own text (prompt and output so far, the cache
 * row's ctok) by the n-gram lookup; the sequences with a draft go through
 * verify steps of [last, d1..dk] (a group's sequences padded to its longest
 * draft, at most DS_LINEAR_ROWWISE_MAX rows a step so that each row's
 * numbers are a one-token step's), those without one through one plain
 * step.  Row j's logits draw the next token as plain decoding would, and
 * the drafts are kept up to the first draw that differs; the cache
 * positions past the last kept draft are written over later.  Greedy or
 * sampled, the tokens are plain decoding's with the same seed. */
#define NGRAM_ROWS 16 /* a verify step's rows at most: DS_LINEAR_ROWWISE_MAX (backend/cpu/gemv.h) */

static int ngram_draft(ds_sched *s, int i, const ds_sreq *r, int32_t *d) {
    const int64_t room = s->o.ctx - s->pos[i] - 1, left = r->max_tokens - r->nout - 1;
    int64_t kmax = s->o.draft_max < left ? s->o.draft_max : left;
    if (kmax > room) kmax = room;
    if (!s->spec[i] || kmax <= 0) return 0;
    if (r->forced_drafts) return (int)ds_forced_draft(r->forced_drafts, r->nforced, r->nout, kmax, d); /* tests */
    const int32_t *h = s->ctok + (size_t)i * (size_t)(s->o.ctx + 1);
    return (int)ds_ngram_draft(h, s->ntok[i], s->o.ngram_min, s->o.ngram_max, kmax, d);
}

static int ngram_decode(ds_sched *s, const int *fresh) {
    const int64_t V = s->m->cfg.vocab_size, T = 1 + s->o.draft_max;
    int n = gather(s, fresh, 0);
    if (!n) return 0;
    /* drafts into b_next (n, T): [last, d1..dk]; the sequences without one first */
    int nplain = 0;
    for (int k = 0; k < n; k++) {
        const int i = s->b_slot[k];
        s->b_next[k * T] = s->last[i];
        s->g_k[k] = ngram_draft(s, i, s->slot[i], s->b_next + k * T + 1);
    }
    for (int k = 0; k < n; k++) { /* stable partition: no draft, then drafts */
        if (s->g_k[k]) continue;
        for (int j = k; j > nplain; j--) {
            int64_t t64;
            int32_t t32;
            int ti;
#define SWAP(a, b, tmp) (tmp = (a), (a) = (b), (b) = tmp)
            SWAP(s->g_k[j], s->g_k[j - 1], t64);
            SWAP(s->b_rows[j], s->b_rows[j - 1], t64);
            SWAP(s->b_pos[j], s->b_pos[j - 1], t64);
            SWAP(s->b_ids[j], s->b_ids[j - 1], t32);
            SWAP(s->b_slot[j], s->b_slot[j - 1], ti);
            for (int64_t c = 0; c < T; c++) SWAP(s->b_next[j * T + c], s->b_next[(j - 1) * T + c], t32);
#undef SWAP
        }
        nplain++;
    }
    if (nplain) { /* one token each, as plain_decode */
        if (ds_rows_engine_step(&s->dec, s->b_ids, s->b_rows, s->b_pos, nplain)) return -1;
        for (int k = 0; k < nplain; k++) {
            const int i = s->b_slot[k];
            s->kvn[i] = ++s->pos[i];
            sample_emit(s, s->slot[i], s->dec.logits + k * V, &s->last[i]);
        }
    }
    uint64_t drafted = 0, accepted = 0;
    for (int k0 = nplain; k0 < n;) {
        /* a group: rows t each (its longest draft + 1), within DS_LINEAR_ROWWISE_MAX rows and the context */
        int k1 = k0;
        int64_t t = 0;
        for (; k1 < n; k1++) {
            const int64_t tt = s->g_k[k1] + 1 > t ? s->g_k[k1] + 1 : t;
            int fits = (k1 - k0 + 1) * tt <= NGRAM_ROWS || k1 == k0;
            for (int j = k0; j <= k1 && fits; j++) fits = s->b_pos[j] + tt <= s->o.ctx;
            if (!fits) break;
            t = tt;
        }
        for (int k = k0; k < k1; k++) /* the group's rows: t tokens a sequence, short drafts padded */
            for (int64_t c = 0; c < t; c++)
                s->g_ids[(k - k0) * t + c] = s->b_next[k * T + (c <= s->g_k[k] ? c : s->g_k[k])];
        if (ds_rows_engine_step_n(&s->dec, s->g_ids, s->b_rows + k0, s->b_pos + k0, k1 - k0, t)) return -1;
        for (int k = k0; k < k1; k++) {
            const int i = s->b_slot[k];
            ds_sreq *r = s->slot[i];
            const float *lg = s->dec.logits + (size_t)(k - k0) * (size_t)t * (size_t)V;
            const int32_t *d = s->b_next + k * T + 1;
            int64_t j = 0; /* rows drawn from, less one: the drafts kept */
            for (;; j++) {
                const int32_t g = ds_sample(&r->sampler, lg + j * V);
                emit_id(s, r, lg + j * V, g);
                s->last[i] = g;
                if (s->slot[i] != r || j == s->g_k[k] || g != d[j]) break; /* r finished: slot[i] is NULL */
            }
            drafted += (uint64_t)s->g_k[k], accepted += (uint64_t)j;
            s->pos[i] += 1 + j;
            s->kvn[i] = s->pos[i];
        }
        k0 = k1;
    }
    if (drafted) {
        pthread_mutex_lock(&s->mu);
        s->st.drafted += drafted, s->st.accepted += accepted;
        pthread_mutex_unlock(&s->mu);
    }
    return n;
}

/* the request's sampler; min_tokens holds back its stop ids and (unless ignore_eos) the EOS ids */
static int sampler_init(ds_sched *s, ds_sreq *r) {
    ds_sample_params p = r->sp;
    int32_t *held = ds_malloc((size_t)(s->neos + r->nstop_ids + 1) * sizeof(int32_t));
    int n = 0;
    for (int i = 0; !r->ignore_eos && i < s->neos; i++)
        if (s->eos[i] >= 0 && s->eos[i] < s->m->cfg.vocab_size) held[n++] = (int32_t)s->eos[i];
    for (int i = 0; i < r->nstop_ids; i++) held[n++] = r->stop_ids[i];
    p.min_tokens = r->min_tokens, p.stop_ids = held, p.nstop_ids = n;
    int rc = ds_sampler_init(&r->sampler, s->ops, &p, s->m->cfg.vocab_size);
    free(held);
    return rc;
}

/* The prefix cache.  Every cache row keeps the tokens it holds after its
 * request ends (ctok, kvn: the main model's valid positions, mvn: the MTP
 * module's), and a new prompt starts from the longest prefix some row holds:
 * from that row itself when it is free, or copied into a free row from a
 * busy one (a shared system prompt, the n choices of one prompt).  At least
 * the prompt's last token is prefilled (its logits give the first token),
 * and MTP entry j pairs state j with token j + 1, so under speculation the
 * prefix stops one token before the match does.  A request scoring its
 * prompt (echo with logprobs) needs every position's logits: no reuse.
 * Prefixes under PREFIX_MIN tokens are not reused (every prompt shares its
 * BOS): a miss takes the free row unused longest, so recent conversations
 * stay cached.  The reused entries were computed in other forwards (other
 * chunks, decode steps), so the numbers equal a fresh prefill's up to FP32
 * rounding (docs/serve.md). */
#define PREFIX_MIN 16

/* the prompt's prefix row j could give: *soon what it will hold once its prefill is done */
static int64_t reusable(const ds_sched *s, int j, const ds_sreq *r, int64_t *soon) {
    *soon = 0;
    if (!s->o.prefix_cache || r->prompt_logprobs) return 0;
    const int32_t *a = s->ctok + (size_t)j * (size_t)(s->o.ctx + 1);
    const int64_t n = s->ntok[j] < r->P ? s->ntok[j] : r->P;
    int64_t c = 0;
    while (c < n && a[c] == r->prompt[c]) c++;
    int64_t L = c, S = c; /* now (what is cached), soon (what the prompt being prefilled will cache) */
    if (L > s->kvn[j]) L = s->kvn[j];
    if (L > r->P - 1) L = r->P - 1;
    if (S > r->P - 1) S = r->P - 1;
    if (MTP(s)) {
        if (L > c - 1) L = c - 1;
        if (S > c - 1) S = c - 1;
        if (L > s->mvn[j]) L = s->mvn[j];
    }
    const ds_sreq *b = s->slot[j];
    if (b && s->state[j] == SLOT_PREFILL && !b->prompt_logprobs) *soon = S >= PREFIX_MIN ? S : 0;
    return L >= PREFIX_MIN ? L : 0;
}

/* mutex held: the free row for r (-1: none) with its prompt's first
 * r->cached positions already in the cache; -2: wait, a prompt being
 * prefilled will hold PREFIX_MIN or more tokens of it beyond what any row
 * gives now (the n choices of one prompt, prompts arriving together with
 * one system prompt: prefilled once, then copied) */
static int admit_row(ds_sched *s, ds_sreq *r) {
    const int B = s->nrows;
    if (s->st.active >= s->o.max_batch) return -1;
    int hit = -1, src = -1, old = -1;
    int64_t Lh = 0, Ls = 0, Lsoon = 0;
    for (int j = 0; j < B; j++) {
        int64_t soon;
        const int64_t L = reusable(s, j, r, &soon);
        if (soon > Lsoon) Lsoon = soon;
        if (!s->slot[j]) {
            if (L > Lh) hit = j, Lh = L;
            if (old < 0 || (s->kvn[j] ? s->t_used[j] : -1) < (s->kvn[old] ? s->t_used[old] : -1)) old = j;
        }
        if (L > Ls) src = j, Ls = L;
    }
    if (old < 0) return -1;
    if (Lsoon >= (Ls > Lh ? Ls : Lh) + PREFIX_MIN) return -2;
    int i = hit >= 0 ? hit : old;
    r->cached = Lh;
    if (Ls > Lh) { /* a busy row holds more of the prompt: copy it into the oldest free row */
        i = old;
        ds_rows_engine_copy_prefix(&s->dec, i, src, Ls);
        s->mvn[i] = Ls;
        r->cached = Ls;
    }
    s->kvn[i] = r->cached;
    if (s->mvn[i] > r->cached) s->mvn[i] = r->cached;
    const int64_t n = r->P < s->o.ctx + 1 ? r->P : s->o.ctx + 1;
    memcpy(s->ctok + (size_t)i * (size_t)(s->o.ctx + 1), r->prompt, (size_t)n * sizeof(int32_t));
    s->ntok[i] = n;
    s->st.prefix_queries += (uint64_t)r->P;
    s->st.prefix_hits += (uint64_t)r->cached;
    return i;
}

static void *loop(void *arg) {
    ds_sched *s = arg;
    const int B = s->nrows;
    int *fresh = ds_calloc((size_t)B, sizeof(int));
    /* this thread's OpenMP team size is the process's --threads, as in the main thread */
    omp_set_num_threads(ds_threads());
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->stop && !s->qhead && s->st.active == 0) pthread_cond_wait(&s->work, &s->mu);
        if (s->stop) {
            pthread_mutex_unlock(&s->mu);
            break;
        }
        /* drop cancelled requests, admit waiting ones */
        for (int i = 0; i < B; i++)
            if (s->slot[i] && s->slot[i]->cancel) finish(s, s->slot[i], "cancelled");
        for (ds_sreq *prev = NULL, *r = s->qhead, *next; r; r = next) {
            next = r->next;
            const int i = r->cancel ? -3 : admit_row(s, r);
            if (i == -1) break;        /* no free slot */
            if (i == -2) {             /* waits for a prompt being prefilled; the ones after it may go */
                prev = r;
                continue;
            }
            if (prev) prev->next = next; /* out of the queue */
            else s->qhead = next;
            if (s->qtail == r) s->qtail = prev;
            s->nq--;
            if (i == -3) {
                r->done = 1, r->finish = "cancelled", s->st.cancelled++, s->wake = 1;
                unref(r);
                continue;
            }
            s->slot[i] = r;
            r->slot = i;
            s->state[i] = SLOT_PREFILL;
            s->prefilled[i] = r->cached;
            s->st.active++;
            if (s->st.active > s->st.max_active) s->st.max_active = s->st.active;
            ds_decode_stream_init(&r->dstream, s->tok, 1);
            if (r->prompt_logprobs) {
                r->p_lp = ds_calloc((size_t)r->P, sizeof(float));
                r->p_top_id = ds_calloc((size_t)r->P * DS_SREQ_MAX_TOP, sizeof(int32_t));
                r->p_top_lp = ds_calloc((size_t)r->P * DS_SREQ_MAX_TOP, sizeof(float));
            }
            if (sampler_init(s, r) || (r->max_tokens <= 0 && !r->prompt_logprobs)) {
                finish(s, r, "length");
                continue;
            }
            ds_sampler_prompt(&r->sampler, r->prompt, r->P);
        }
        pthread_mutex_unlock(&s->mu);
        /* prefill: up to prefill_chunk prompt tokens per iteration, oldest
         * request first, several prompts in one forward (prefill_group) */
        memset(fresh, 0, (size_t)B * sizeof(int));
        int nstep = 0;
        double t0 = ds_now();
        for (int64_t budget = s->o.prefill_chunk, first = 1, t = 0, n; budget > 0; first = 0, budget -= n * t) {
            n = prefill_pick(s, budget, first, &t);
            if (!n) break;
            prefill_run(s, (int)n, t, fresh);
            pthread_mutex_lock(&s->mu);
            s->st.prefill_steps++;
            s->st.prefill_seqs += (uint64_t)n;
            if (n > s->st.prefill_batch_max) s->st.prefill_batch_max = (int)n;
            pthread_mutex_unlock(&s->mu);
        }
        /* one batched decode step for every running sequence, each at its own position */
        nstep = MTP(s) ? spec_decode(s, fresh) : NGRAM(s) ? ngram_decode(s, fresh) : plain_decode(s, fresh);
        if (nstep < 0) {
            ds_log(DS_LOG_INFO, "dsv3 serve: %s", ds_errmsg());
            pthread_mutex_lock(&s->mu);
            for (int k = 0; k < s->b_n; k++)
                if (s->slot[s->b_slot[k]]) finish(s, s->slot[s->b_slot[k]], "error");
            pthread_mutex_unlock(&s->mu);
            nstep = 0;
        }
        if (s->step_delay_us) usleep(s->step_delay_us);
        pthread_mutex_lock(&s->mu);
        if (nstep) {
            s->st.steps++;
            s->st.batch_sum += (uint64_t)nstep;
            s->st.decode_s += ds_now() - t0;
        }
        if (s->wake) pthread_cond_broadcast(&s->progress);
        s->wake = 0;
        pthread_mutex_unlock(&s->mu);
    }
    free(fresh);
    return NULL;
}

ds_sched *ds_sched_create(const ds_model *m, const struct ds_ops *ops, const ds_tokenizer *tok, const ds_sched_opts *o,
                          const int64_t *eos, int neos) {
    ds_sched *s = ds_calloc(1, sizeof *s);
    s->m = m, s->ops = ops, s->tok = tok, s->o = *o;
    s->neos = neos < 32 ? neos : 32;
    memcpy(s->eos, eos, (size_t)s->neos * sizeof(int64_t));
    const char *dl = getenv("DSV3_SERVE_STEP_DELAY_MS");
    if (dl) s->step_delay_us = atoi(dl) * 1000;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->work, NULL);
    pthread_cond_init(&s->progress, NULL);
    const int B = o->max_batch, R = s->nrows = o->cache_rows > B ? o->cache_rows : B;
    s->slot = ds_calloc((size_t)R, sizeof(ds_sreq *));
    s->state = ds_calloc((size_t)R, sizeof(int));
    s->prefilled = ds_calloc((size_t)R, sizeof(int64_t));
    s->last = ds_calloc((size_t)R, sizeof(int32_t));
    s->draft = ds_calloc((size_t)R, sizeof(int32_t));
    s->spec = ds_calloc((size_t)R, sizeof(int));
    s->m_hrow = ds_calloc((size_t)(2 * B), sizeof(int32_t));
    s->m_next = ds_calloc((size_t)(2 * B), sizeof(int32_t));
    s->m_rows = ds_calloc((size_t)B, sizeof(int64_t));
    s->m_pos = ds_calloc((size_t)B, sizeof(int64_t));
    s->m_k = ds_calloc((size_t)B, sizeof(int));
    s->pos = ds_calloc((size_t)R, sizeof(int64_t));
    s->b_rows = ds_calloc((size_t)B, sizeof(int64_t));
    s->b_pos = ds_calloc((size_t)B, sizeof(int64_t));
    s->b_ids = ds_calloc((size_t)B, sizeof(int32_t));
    s->b_slot = ds_calloc((size_t)B, sizeof(int));
    s->ctok = ds_calloc((size_t)R * (size_t)(o->ctx + 1), sizeof(int32_t));
    s->ntok = ds_calloc((size_t)R, sizeof(int64_t));
    s->kvn = ds_calloc((size_t)R, sizeof(int64_t));
    s->mvn = ds_calloc((size_t)R, sizeof(int64_t));
    s->t_used = ds_calloc((size_t)R, sizeof(double));
    int64_t chunk = o->prefill_chunk < o->ctx ? o->prefill_chunk : o->ctx;
    if (chunk < 2) chunk = 2;
    s->o.prefill_chunk = chunk;
    if (s->o.prefill_batch < 1 || s->o.prefill_batch > B) s->o.prefill_batch = B;
    s->p_slot = ds_calloc((size_t)B, sizeof(int));
    s->p_rows = ds_calloc((size_t)B, sizeof(int64_t));
    s->p_pos = ds_calloc((size_t)B, sizeof(int64_t));
    s->p_len = ds_calloc((size_t)B, sizeof(int64_t));
    s->p_last = ds_calloc((size_t)B, sizeof(int64_t));
    s->p_ids = ds_calloc((size_t)chunk, sizeof(int32_t));
    s->p_next = ds_calloc((size_t)chunk, sizeof(int32_t));
    if (NGRAM(s)) { /* the n-gram lookup's bounds, infer.h's defaults for 0 */
        ds_ngram_resolve(&s->o.draft_max, &s->o.ngram_min, &s->o.ngram_max);
        s->g_k = ds_calloc((size_t)B, sizeof(int64_t));
        s->g_ids = ds_calloc(NGRAM_ROWS, sizeof(int32_t));
    }
    /* tokens per sequence a decode step takes: MTP 2 (the draft), n-gram 1 + draft_max */
    const int64_t T = MTP(s) ? 2 : NGRAM(s) ? 1 + s->o.draft_max : 1;
    s->b_next = ds_calloc((size_t)(T * B), sizeof(int32_t));
    if (ds_rows_engine_create_rows(&s->dec, m, ops, B, R, o->ctx, T, MTP(s)) || ds_rows_engine_prefill_init(&s->dec, chunk)) {
        ds_sched_free(s);
        return NULL;
    }
    /* The caller's OpenMP team (model loading ran parallel regions on this
     * thread) would stay docked beside the scheduler's: libgomp counts its idle
     * workers, sees more threads than CPUs and all but stops spinning, and every
     * parallel region of a decode step then paid a futex sleep and wake (8.5K
     * context switches a second at batch 1, 2 threads).  Release it. */
    omp_pause_resource_all(omp_pause_soft);
    if (pthread_create(&s->th, NULL, loop, s)) {
        ds_err("serve: cannot start the scheduler thread");
        ds_sched_free(s);
        return NULL;
    }
    s->started = 1;
    return s;
}

void ds_sched_free(ds_sched *s) {
    if (!s) return;
    if (s->started) {
        pthread_mutex_lock(&s->mu);
        s->stop = 1;
        pthread_cond_signal(&s->work);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->th, NULL);
    }
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->nrows; i++)
        if (s->slot[i]) finish(s, s->slot[i], "cancelled");
    while (s->qhead) {
        ds_sreq *r = s->qhead;
        s->qhead = r->next;
        r->done = 1, r->finish = "cancelled";
        unref(r);
    }
    pthread_cond_broadcast(&s->progress);
    pthread_mutex_unlock(&s->mu);
    if (s->dec.m) ds_rows_engine_free(&s->dec);
    free(s->slot), free(s->state), free(s->prefilled), free(s->last), free(s->lsm);
    free(s->draft), free(s->spec), free(s->b_next), free(s->g_k), free(s->g_ids);
    free(s->m_hrow), free(s->m_next), free(s->m_rows), free(s->m_pos), free(s->m_k);
    free(s->p_slot), free(s->p_rows), free(s->p_pos), free(s->p_len), free(s->p_last), free(s->p_ids), free(s->p_next);
    free(s->pos), free(s->b_rows), free(s->b_pos), free(s->b_ids), free(s->b_slot);
    free(s->ctok), free(s->ntok), free(s->kvn), free(s->mvn), free(s->t_used);
    pthread_cond_destroy(&s->work);
    pthread_cond_destroy(&s->progress);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
