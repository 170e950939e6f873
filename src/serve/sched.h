/*
 * sched.h — continuous batching for `dsv3 serve`: a scheduler thread owns the
 * model and up to max_batch slots, each a row of one decode engine's latent
 * KV cache with its own position.  Requests wait in a bounded FIFO; at every
 * iteration the scheduler admits waiting requests into free slots, prefills
 * up to prefill_chunk prompt tokens (several prompts whose next chunks have
 * the same length in one forward, oldest request first, so a long prompt
 * never stalls the running streams for more than one chunk), and then runs
 * one decode step for every active slot (speculative: a two-token step that
 * verifies every greedy sequence's MTP draft, then one MTP step).  A
 * finished, cancelled or disconnected request frees its slot at the next
 * iteration.  A slot's cache row keeps what it holds after that: a prompt
 * is admitted into the free row holding the longest prefix of it, or the
 * prefix is copied there from a busy row (the prefix cache, sched.c;
 * cache_rows > max_batch keeps more rows than run at once).
 *
 * A request's output (ids, log-probabilities, decoded text with stop strings
 * applied) grows under the scheduler's mutex; readers wait on ds_sched_wait.
 * Greedy output is the same tokens as `dsv3 generate` (the same steps on the
 * same positions; docs/serve.md says where FP32 rounding may enter),
 * whatever the other slots do.
 */
#ifndef DS_SCHED_H
#define DS_SCHED_H

#include <pthread.h>
#include <stdint.h>

#include "infer/infer.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

#define DS_SREQ_MAX_STOP 8
#define DS_SREQ_MAX_TOP 20

#define DS_SREQ_MAX_STOP_IDS 64 /* stop_token_ids of one request */
typedef struct ds_sreq {
    /* set by the submitter */
    int32_t *prompt;
    int64_t P;
    int64_t max_tokens;           /* already capped by the context */
    ds_sample_params sp;          /* sp.bias: owned (freed with the request) */
    int top_logprobs;             /* -1: no logprobs; else the chosen token's and this many alternatives */
    int prompt_logprobs;          /* 1: the log-probability of each prompt token after the first (and
                                   * top_logprobs alternatives) in p_lp, p_top_*; the prompt is then
                                   * prefilled alone, every position through the head; max_tokens may be 0 */
    char *stop[DS_SREQ_MAX_STOP];
    int nstop;
    int include_stop;             /* 1: the text ends with the stop string that ended it (vLLM's
                                   * include_stop_str_in_output); 0: cut before it */
    int ignore_eos;
    int32_t *stop_ids;            /* more ids that end the request as EOS does (owned; ignore_eos leaves them) */
    int nstop_ids;
    int64_t min_tokens;           /* no stop id, EOS or stop string ends it before this many output tokens */
    struct ds_json_schema *schema; /* owned; sp.schema points to it (JSON answers held to a schema) */
    int stream;                   /* 1: the submitter reads the output as it grows (every step with
                                   * its tokens wakes it); 0: only its finish wakes it */
    int64_t cached;               /* set at admission: prompt tokens found in the prefix cache */
    int32_t *forced_drafts;       /* tests only: the speculative draft for output token i < nforced (owned) */
    int64_t nforced;
    /* output, under the scheduler mutex */
    int32_t *out;
    float *lp;                    /* (cap) log-probability of out[i] under the model */
    int32_t *top_id;              /* (cap, DS_SREQ_MAX_TOP) */
    float *top_lp;
    int64_t nout, cap;
    float *p_lp;                  /* (P) prompt_logprobs: p_lp[i] of prompt[i] given prompt[0..i), i ≥ 1 */
    int32_t *p_top_id;            /* (P, DS_SREQ_MAX_TOP) */
    float *p_top_lp;
    int64_t ntok_text;            /* tokens whose text is final (stop strings checked) */
    char *text;                   /* decoded completion (stop string removed) */
    size_t ntext, text_cap, text_ready; /* text_ready: bytes no later stop string can take back */
    int done;                     /* finished: finish is "stop", "length" or "cancelled" */
    const char *finish;
    int cancel;                   /* set by the submitter: free the slot */
    double t_submit, t_first, t_done;
    /* internal */
    int refs, slot;
    ds_decode_stream dstream;
    ds_sampler sampler;
    struct ds_sreq *next;
} ds_sreq;

typedef struct {
    int max_batch;     /* slots */
    int64_t ctx;       /* positions per slot */
    int64_t prefill_chunk;
    int max_queue;     /* waiting requests beyond which submit refuses */
    int prefill_batch; /* prompts per prefill forward at most (0: max_batch; 1: one at a time) */
    int speculative;   /* DS_SPEC_MTP: MTP drafts, DS_SPEC_NGRAM: n-gram drafts (infer.h), verified in the batched
                        * step; 0: plain decoding */
    int draft_max, ngram_min, ngram_max; /* n-gram: as ds_gen_opts (0: infer.h's defaults) */
    int prefix_cache;  /* 1: a prompt starts from the longest prefix a cache row holds (sched.c) */
    int cache_rows;    /* cache rows (≤ max_batch: max_batch); the rows beyond hold prefixes only */
} ds_sched_opts;

/* the time-to-first-token histogram's upper bounds (seconds; the last bucket is +Inf) */
#define DS_TTFT_BUCKETS 16
extern const double ds_ttft_bounds[DS_TTFT_BUCKETS - 1];

typedef struct {
    /* counters for /metrics, under the mutex */
    uint64_t requests, prompt_tokens, gen_tokens, steps, batch_sum, cancelled;
    int active, queued, max_active;
    double ttft_sum, decode_s;
    uint64_t ttft_count;
    uint64_t ttft_bucket[DS_TTFT_BUCKETS]; /* first tokens within ds_ttft_bounds[i] seconds (not cumulative) */
    uint64_t drafted, accepted;   /* speculative: draft tokens verified, draft tokens accepted */
    uint64_t prefill_steps, prefill_seqs; /* prefill forwards, prompts summed over them */
    int prefill_batch_max;        /* most prompts in one prefill forward */
    uint64_t prefix_queries, prefix_hits; /* prompt tokens admitted; of those, found in the prefix cache */
} ds_sched_stats;

typedef struct ds_sched ds_sched;

/* eos: stop ids (copied).  Creates the slots' engines and starts the thread. */
ds_sched *ds_sched_create(const ds_model *m, const struct ds_ops *ops, const ds_tokenizer *tok, const ds_sched_opts *o,
                          const int64_t *eos, int neos);
/* Cancels everything still running and joins the thread. */
void ds_sched_free(ds_sched *s);
/* A new request (refs = 1, the caller's).  Fill the inputs, then submit. */
ds_sreq *ds_sreq_new(void);
/* Queue it: 0, or -1 when the queue is full (the caller answers 503). */
int ds_sched_submit(ds_sched *s, ds_sreq *r);
/* Queue n requests (the choices of one), all or none. */
int ds_sched_submit_n(ds_sched *s, ds_sreq **r, int n);
/* Drop the caller's reference; a request still running is cancelled. */
void ds_sched_release(ds_sched *s, ds_sreq *r);
/* The mutex guarding every request's output; wait for progress (any
 * request) for at most ms milliseconds with the mutex held. */
void ds_sched_lock(ds_sched *s);
void ds_sched_unlock(ds_sched *s);
void ds_sched_wait(ds_sched *s, int ms);
/* A copy of the counters. */
void ds_sched_get_stats(ds_sched *s, ds_sched_stats *st);
/* Cancel every request (shutdown). */
void ds_sched_cancel_all(ds_sched *s);

#endif
