/*
 * checkpoint.h — training checkpoints.  RUN/ckpt-<step>/ is a Hugging Face
 * model folder (config.json, model.safetensors, tokenizer.json) plus
 * train_state.safetensors:
 *
 *   adam.m, adam.v   F32 or BF16 (n)  AdamW moments, the gradient layout
 *   step             I64 (1)  optimizer steps done
 *   loader           I64 (1)  batches consumed by the loader
 *   rng              I64 (4)  sampling RNG state (xoshiro256**)
 *   budget           I64 (7)  total steps, warmup, tokens per step, data hash, batch, seq, accum
 *   hparams          F64 (6)  peak lr, min lr, decay start, γ, γ until, tokens seen
 *   __metadata__ "train_options": JSON object of the options that shape the
 *                    run (precision, lr, seed, ...; trainer.h), restored by a
 *                    resume (absent in checkpoints of older versions)
 *
 * (router correction biases are model tensors, e_score_correction_bias).
 * A save is atomic: everything is written into RUN/.tmp-ckpt-<step>, fsynced,
 * and the folder renamed; then RUN/latest (a symlink) is replaced by a
 * rename, and only then are checkpoints beyond the last K removed.  A failed
 * save removes its temp folder and leaves every earlier checkpoint intact.
 * Fault injection for tests: DSV3_FAULT=save:STEP fails the save of that
 * step after model.safetensors has been written (a full disk).
 */
#ifndef DS_CHECKPOINT_H
#define DS_CHECKPOINT_H

#include <stdint.h>

#include "io/safetensors.h"
#include "model/model.h"

typedef struct {
    int64_t step;
    int64_t loader;
    uint64_t rng[4];
    int64_t total_steps, warmup, tokens_per_step, batch, seq, accum;
    uint64_t data_hash;
    double peak_lr, min_lr, decay_start, gamma, gamma_until, tokens_seen;
    char options[2048];      /* "train_options" JSON ("" when absent) */
} ds_train_state;

/* m16: moments are BF16 (uint16) arrays, else F32.  keep <= 0: keep all. */
int ds_ckpt_save(const char *run, const ds_model *m, const char *tokenizer_json, const ds_train_state *st,
                 const void *mom, const void *vel, int64_t n, int m16, int64_t keep);
/* Folder of the latest checkpoint of RUN (malloc'ed), or NULL with ds_err. */
char *ds_ckpt_latest(const char *run);
/* Reads train_state.safetensors of a checkpoint folder into st and the
 * moments (n values each, F32 or BF16 as m16 says; a mismatch is an error). */
int ds_ckpt_load_state(const char *dir, ds_train_state *st, void *mom, void *vel, int64_t n, int m16);
/* The moments of a checkpoint in place: train_state.safetensors mapped into
 * *f (ds_st_close it), *mom and *vel its n values each (checked as
 * ds_ckpt_load_state does): a process of a many-process run copies its blocks
 * from them without reading the rest. */
int ds_ckpt_map_moments(const char *dir, int64_t n, int m16, ds_st_file *f, const void **mom, const void **vel);
/* Removes RUN/.tmp-ckpt-* folders left by saves that were killed. */
void ds_ckpt_remove_partial(const char *run);
/* The same without the moments (mom, vel not read): what a resume restores. */
int ds_ckpt_load_state_only(const char *dir, ds_train_state *st);

#endif
