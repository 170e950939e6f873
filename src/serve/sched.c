/*
 * sched.c — the continuous-batching scheduler (see sched.h).
 *
 * Engines: one decode engine with a cache row per slot runs the batched
 * steps (ds_rows_engine_step: every running sequence at its own position,
 * the weights read once per step); one batch-1 engine with chunk
 * prefill_chunk runs prompts.  When a prompt is done its latent cache is
 * copied into the slot's row (ds_rows_engine_adopt), so the large
 * (chunk, vocab) scratch exists once.  Each
 * sequence's arithmetic is that of `dsv3 generate`'s batch-1 steps at the
 * same positions (up to 16 sequences a step on the CPU table,
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
    int64_t *pos;      /* per slot: tokens in its cache row */
    int64_t *b_rows, *b_pos; /* the step's gather */
    int32_t *b_ids;
    int *b_slot;
    ds_rows_engine dec; /* max_batch cache rows, one token per row per step */
    ds_engine pre;
    int pre_slot;
    float *lsm; /* (V) host copy of a device-resident logits row (logprobs) */
    int step_delay_us; /* tests: DSV3_SERVE_STEP_DELAY_MS slows every iteration so batching is observable */
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
    free(r->text);
    for (int i = 0; i < r->nstop; i++) free(r->stop[i]);
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

int ds_sched_submit(ds_sched *s, ds_sreq *r) {
    pthread_mutex_lock(&s->mu);
    if (s->nq >= s->o.max_queue || s->stop) {
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    r->refs++;
    r->t_submit = ds_now();
    r->next = NULL;
    if (s->qtail) s->qtail->next = r;
    else s->qhead = r;
    s->qtail = r;
    s->nq++;
    s->st.requests++;
    s->st.prompt_tokens += (uint64_t)r->P;
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
    for (int i = 0; i < s->o.max_batch; i++)
        if (s->slot[i]) s->slot[i]->cancel = 1;
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->mu);
}

/* mutex held: mark done, free the slot */
static void finish(ds_sched *s, ds_sreq *r, const char *why) {
    if (r->done) return;
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
        if (s->pre_slot == r->slot) s->pre_slot = -1;
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
    r->out[k] = id;
    r->lp[k] = lp;
    if (r->top_logprobs > 0) {
        memcpy(r->top_id + k * DS_SREQ_MAX_TOP, tid, (size_t)r->top_logprobs * sizeof(int32_t));
        memcpy(r->top_lp + k * DS_SREQ_MAX_TOP, tlp, (size_t)r->top_logprobs * sizeof(float));
    }
    s->st.gen_tokens++;
    if (k == 0) {
        r->t_first = ds_now();
        s->st.ttft_sum += r->t_first - r->t_submit;
        s->st.ttft_count++;
    }
    if (!r->ignore_eos)
        for (int i = 0; i < s->neos; i++)
            if (s->eos[i] == id) {
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
        size_t hold = 0, cut = (size_t)-1;
        for (int i = 0; i < r->nstop; i++) {
            size_t sl = strlen(r->stop[i]);
            if (sl > hold + 1) hold = sl - 1;
            size_t from = old + 1 >= sl ? old + 1 - sl : 0; /* a match ends inside the new bytes */
            const char *hit = sl ? strstr(r->text + from, r->stop[i]) : NULL;
            if (hit && (size_t)(hit - r->text) < cut) cut = (size_t)(hit - r->text);
        }
        if (cut != (size_t)-1) {
            r->ntext = cut;
            r->text[cut] = 0;
            finish(s, r, "stop");
            return;
        }
        if (r->ntext > hold && r->ntext - hold > r->text_ready) r->text_ready = r->ntext - hold;
    }
    if (r->nout >= r->max_tokens) finish(s, r, "length");
}


static void sample_emit(ds_sched *s, ds_sreq *r, const float *logits, int32_t *last) {
    int32_t id = ds_sample(&r->sampler, logits);
    float lp = 0, tlp[DS_SREQ_MAX_TOP];
    int32_t tid[DS_SREQ_MAX_TOP];
    if (r->top_logprobs >= 0) {
        if (!s->ops->host_visible) { /* device-resident logits: the row to the host for the log-probabilities */
            const size_t n = (size_t)s->m->cfg.vocab_size * sizeof(float);
            if (!s->lsm) s->lsm = ds_malloc(n);
            s->ops->copy_d2h(s->lsm, logits, n);
            logits = s->lsm;
        }
        logprobs(s, r, logits, id, &lp, tid, tlp);
    }
    *last = id;
    pthread_mutex_lock(&s->mu);
    emit(s, r, id, lp, tid, tlp);
    pthread_mutex_unlock(&s->mu);
}

static int sampler_init(ds_sched *s, ds_sampler *r, const ds_sample_params *p) {
    return ds_sampler_init(r, s->ops, p, s->m->cfg.vocab_size);
}

static void *loop(void *arg) {
    ds_sched *s = arg;
    const int B = s->o.max_batch;
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
        for (int i = 0; i < B && s->qhead; i++) {
            if (s->slot[i]) continue;
            ds_sreq *r = s->qhead;
            s->qhead = r->next;
            if (!s->qhead) s->qtail = NULL;
            s->nq--;
            if (r->cancel) {
                r->done = 1, r->finish = "cancelled", s->st.cancelled++;
                unref(r);
                i--;
                continue;
            }
            s->slot[i] = r;
            r->slot = i;
            s->state[i] = SLOT_PREFILL;
            s->prefilled[i] = 0;
            s->st.active++;
            if (s->st.active > s->st.max_active) s->st.max_active = s->st.active;
            ds_decode_stream_init(&r->dstream, s->tok, 1);
            if (sampler_init(s, &r->sampler, &r->sp) || r->max_tokens <= 0) {
                finish(s, r, "length");
                continue;
            }
        }
        pthread_mutex_unlock(&s->mu);
        /* prefill: chunks of prefill_chunk tokens, oldest request first, up to
         * prefill_chunk tokens per iteration (several short prompts share one);
         * a prompt is cut where `dsv3 generate` cuts it (every prefill_chunk
         * tokens from its start), so its numbers are generate's */
        memset(fresh, 0, (size_t)B * sizeof(int));
        int nstep = 0;
        double t0 = ds_now();
        for (int64_t budget = s->o.prefill_chunk, first = 1; budget > 0; first = 0) {
            if (s->pre_slot < 0) {
                double best = 0;
                for (int i = 0; i < B; i++)
                    if (s->state[i] == SLOT_PREFILL && (s->pre_slot < 0 || s->slot[i]->t_submit < best))
                        s->pre_slot = i, best = s->slot[i]->t_submit;
                if (s->pre_slot < 0) break;
                ds_engine_reset(&s->pre);
            }
            int i = s->pre_slot;
            ds_sreq *r = s->slot[i];
            int64_t n = r->P - s->prefilled[i];
            if (n > s->o.prefill_chunk) n = s->o.prefill_chunk;
            if (n > budget && !first) break;
            budget -= n;
            if (ds_engine_step(&s->pre, r->prompt + s->prefilled[i], n, 1)) {
                ds_log(DS_LOG_INFO, "dsv3 serve: %s", ds_errmsg());
                pthread_mutex_lock(&s->mu);
                finish(s, r, "error");
                pthread_mutex_unlock(&s->mu);
            } else if ((s->prefilled[i] += n) == r->P) {
                ds_rows_engine_adopt(&s->dec, i, &s->pre.kc, s->pre.pos);
                s->pos[i] = r->P;
                s->state[i] = SLOT_DECODE;
                s->pre_slot = -1;
                fresh[i] = 1;
                sample_emit(s, r, s->pre.logits, &s->last[i]);
            }
        }
        /* one batched decode step for every running sequence, each at its own position */
        for (int i = 0; i < B; i++) {
            ds_sreq *r = s->slot[i];
            if (!r || s->state[i] != SLOT_DECODE || fresh[i] || r->done || r->cancel) continue;
            s->b_ids[nstep] = s->last[i];
            s->b_rows[nstep] = i;
            s->b_pos[nstep] = s->pos[i];
            s->b_slot[nstep++] = i;
        }
        if (nstep && ds_rows_engine_step(&s->dec, s->b_ids, s->b_rows, s->b_pos, nstep)) {
            ds_log(DS_LOG_INFO, "dsv3 serve: %s", ds_errmsg());
            pthread_mutex_lock(&s->mu);
            for (int k = 0; k < nstep; k++) finish(s, s->slot[s->b_slot[k]], "error");
            pthread_mutex_unlock(&s->mu);
        } else {
            const int64_t V = s->m->cfg.vocab_size;
            for (int k = 0; k < nstep; k++) {
                int i = s->b_slot[k];
                s->pos[i]++;
                sample_emit(s, s->slot[i], s->dec.logits + k * V, &s->last[i]);
            }
        }
        if (s->step_delay_us) usleep(s->step_delay_us);
        pthread_mutex_lock(&s->mu);
        if (nstep) {
            s->st.steps++;
            s->st.batch_sum += (uint64_t)nstep;
            s->st.decode_s += ds_now() - t0;
        }
        pthread_cond_broadcast(&s->progress);
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
    s->pre_slot = -1;
    const char *dl = getenv("DSV3_SERVE_STEP_DELAY_MS");
    if (dl) s->step_delay_us = atoi(dl) * 1000;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->work, NULL);
    pthread_cond_init(&s->progress, NULL);
    const int B = o->max_batch;
    s->slot = ds_calloc((size_t)B, sizeof(ds_sreq *));
    s->state = ds_calloc((size_t)B, sizeof(int));
    s->prefilled = ds_calloc((size_t)B, sizeof(int64_t));
    s->last = ds_calloc((size_t)B, sizeof(int32_t));
    s->pos = ds_calloc((size_t)B, sizeof(int64_t));
    s->b_rows = ds_calloc((size_t)B, sizeof(int64_t));
    s->b_pos = ds_calloc((size_t)B, sizeof(int64_t));
    s->b_ids = ds_calloc((size_t)B, sizeof(int32_t));
    s->b_slot = ds_calloc((size_t)B, sizeof(int));
    int64_t chunk = o->prefill_chunk < o->ctx ? o->prefill_chunk : o->ctx;
    if (chunk < 2) chunk = 2;
    s->o.prefill_chunk = chunk;
    if (ds_engine_create(&s->pre, m, ops, 1, o->ctx, chunk, 0) || ds_rows_engine_create(&s->dec, m, ops, B, o->ctx)) {
        ds_sched_free(s);
        return NULL;
    }
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
    for (int i = 0; i < s->o.max_batch; i++)
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
    if (s->pre.m) ds_engine_free(&s->pre);
    free(s->slot), free(s->state), free(s->prefilled), free(s->last), free(s->lsm);
    free(s->pos), free(s->b_rows), free(s->b_pos), free(s->b_ids), free(s->b_slot);
    pthread_cond_destroy(&s->work);
    pthread_cond_destroy(&s->progress);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
