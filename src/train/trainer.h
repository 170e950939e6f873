/*
 * trainer.h — the training loop behind `dsv3 train`: token shards (loader.h)
 * → forward → CE (+MTP λ, +balance loss) → backward over A micro-batches →
 * gradient clipping → AdamW → auxiliary-loss-free bias update (balance.h) →
 * one log line per step (stdout and RUN/train_log.jsonl) → validation
 * (loss, bits per byte, MaxVio over the validation set) → checkpoints
 * (checkpoint.h) that resume bit-exactly.
 *
 * Step s (0-based) uses global batches s·A .. s·A+A-1 of the loader; the
 * learning rate of step s is ds_lr_at(schedule, s); γ is the bias step while
 * s < gamma_until·total, then 0 (DeepSeek-V3 keeps 0.001 for the first 14.3T
 * of 14.8T tokens, i.e. ~97% of the run).
 */
#ifndef DS_TRAINER_H
#define DS_TRAINER_H

#include <stdint.h>

#include "backend/backend.h"
#include "model/model.h"

enum { DS_TRAIN_AUX_FREE = 0, DS_TRAIN_AUX_LOSS = 1, DS_TRAIN_BAL_NONE = 2 };

typedef struct {
    const char *config;      /* preset name or config.json (new runs) */
    const char *data;        /* folder of `dsv3 data prepare` */
    const char *out;         /* run folder */
    const char *resume;      /* run folder to continue (NULL: new run) */
    int64_t steps, tokens;   /* budget: steps, or tokens (0: unset) */
    double minutes;          /* budget in wall-clock minutes (0: unset) */
    int64_t batch, seq, accum;
    int precision;           /* DS_PREC_* (backend/backend.h) */
    const char *device;      /* ds_backend_table device (NULL: "cpu") */
    int balance;             /* DS_TRAIN_* */
    double gamma, gamma_until;
    double seq_alpha;        /* V3 sequence-wise loss on top of aux-free (0: off) */
    double v2_a1, v2_a2, v2_a3;
    double mtp_lambda;
    double lr, min_lr, weight_decay, clip, decay_start; /* decay_start: fraction of the run */
    int64_t warmup;
    int bf16_moments;
    int fp8_cache;           /* with DS_PREC_FP8: FP8-cached linear inputs (DS_ACTS_FP8_CACHE) */
    int profile;             /* time each ops entry (backend/profile.h); the table at the end */
    int64_t eval_every, eval_batches, save_every, keep, log_every;
    uint64_t seed;
    int skip_nonfinite;
    int64_t stop_after;      /* end this invocation after that many steps in total (tests of resume) */
    const char *sample_prompts; /* '|'-separated prompts for samples at the end (NULL: none) */
    int64_t sample_tokens;
    double temperature;
    const char *resume_overrides; /* JSON object of the options a resume changed (--override), or NULL */
    /* many processes (mpirun; README "Many processes and machines") */
    int ep;                  /* expert-parallel group size (0: no expert parallelism) */
    int dispatch;            /* DS_EP_* precision of the dispatch (dist/ep.h) */
    int ranks_per_node;      /* simulated nodes of that many ranks (0: the real ones) */
    /* pipeline parallelism (train/pp.h, docs/pipeline.md) */
    int pp;                  /* stages (0, 1: none) */
    const char *pp_layers;   /* "a,b,..." layers per stage (NULL: balanced by cost) */
    int micro_batches;       /* M of the 1F1B schedule (>= pp) */
    /* report: called after each step's records are in RUN/train_log.jsonl and
     * any checkpoint of the step is saved (evaluated: the step was a validation
     * step); non-zero stops the run (the hook has set ds_err).  NULL: none. */
    int (*on_step)(void *ctx, const char *run, int64_t step, int evaluated);
    void *on_step_ctx;
} ds_train_opts;

ds_train_opts ds_train_opts_default(void);

/* The options that shape a run, as the JSON object kept in every checkpoint
 * ("train_options": config, precision, balance, bias_gamma, gamma_until,
 * seq_aux_alpha, mtp_lambda, lr, min_lr, warmup, decay_start, weight_decay,
 * clip, bf16_moments, fp8_cache, seed, batch, seq, grad_accum, threads),
 * and those a resume takes unless given again (eval_every, eval_batches,
 * save_every, keep, log_every, skip_nonfinite). */
void ds_train_options_json(const ds_train_opts *o, char *buf, size_t cap);
/* The options RUN/latest was trained with, on top of defaults: *saved gets
 * every option of the JSON above; *has_json is 0 for checkpoints of older
 * versions (then only lr, min_lr, warmup, decay_start, bias_gamma,
 * gamma_until, batch, seq, grad_accum are known, from the state tensors).
 * *threads: the thread count of the run (0: unknown).  *step: its step. */
int ds_train_saved_opts(const char *run, ds_train_opts *saved, int *has_json, int64_t *threads, int64_t *step);
/* Removes from RUN/train_log.jsonl the records of steps after `step` (written
 * by an invocation that was killed or failed before its next checkpoint), so
 * a resume from `step` logs each step once.  *dropped: how many. */
int ds_train_log_truncate(const char *run, int64_t step, int64_t *dropped);

/* Memory of a training step (bytes), printed at the start of `dsv3 train`
 * and `dsv3 bench-train` and recorded in bench-train's JSON. */
typedef struct {
    size_t params, grads;      /* FP32 master weights, FP32 gradients */
    size_t moments;            /* AdamW m and v (FP32 or BF16) */
    size_t moments_fp32;       /* ... what FP32 moments take */
    size_t acts;               /* the training activation arena as allocated */
    size_t acts_fp32;          /* ... without the FP8 cache */
    size_t acts_fp8;           /* ... with the FP8 cache (DS_ACTS_FP8_CACHE) */
    size_t bwd;                /* backward workspace (ds_bwd) */
    size_t fp8_ws;             /* FP8 quantization workspace per thread (largest linear), 0 unless fp8 */
    size_t eval_acts;          /* forward-only arena for validation (dsv3 train; 0 from ds_train_memory_of) */
    size_t weight_copies;      /* weight copies kept per step (ops weights_epoch; BF16: at most 2 bytes a parameter, FP8: ~1) */
    int weight_copies_fp8;     /* those copies are FP8 blocks */
    size_t total;              /* params + grads + moments + acts + bwd + fp8_ws x threads + eval_acts + weight_copies */
} ds_train_memory;

/* ops: the run's table (its linear_workspace); precision: DS_PREC_* of the
 * run (the FP8 activation cache counts only under fp8); bwd_bytes: the
 * ds_bwd arena (w.arena_floats · 4). */
void ds_train_memory_of(ds_train_memory *r, const ds_model *m, const struct ds_ops *ops, int64_t B, int64_t T, int mtp,
                        int bf16_moments, int precision, int fp8_cache, size_t bwd_bytes);
/* One ds_log line per item, with what --bf16-moments / --fp8-cache save. */
void ds_train_memory_log(const ds_train_memory *r);
/* The same as JSON members ("mem_params": ..., no braces) into buf. */
void ds_train_memory_json(char *buf, size_t cap, const ds_train_memory *r);
/* Runs (or resumes) a training run.  0, or -1 with ds_err (bad input,
 * non-finite loss, failed save: the last good checkpoint is left intact).
 * A resume takes the schedule, γ, precision, ... from o, not from the
 * checkpoint: fill o from ds_train_saved_opts first (`dsv3 train` does, and
 * lets --override replace single values). */
int ds_train(const ds_train_opts *o);

/* Text continuation of a prompt after the document separator (BOS, else
 * EOS), by ds_generate (infer/: KV-cached decode through `ops`):
 * temperature 0 = greedy; stops at the separator, EOS, an id the tokenizer
 * lacks, or after ntokens.  Returns a malloc'ed string (prompt included) or
 * NULL with ds_err. */
struct ds_tokenizer;
char *ds_sample_text(const ds_model *m, const struct ds_ops *ops, const struct ds_tokenizer *tok, const char *prompt, int64_t ntokens,
                     double temperature, uint64_t seed);

#endif
