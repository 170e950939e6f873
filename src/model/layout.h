/*
 * layout.h — the parameter layout table: every tensor of a DeepSeek-V3 model
 * with its Hugging Face name (doc §3; MTP modules at layer index L + k - 1,
 * doc §7.3), shape, and offset (in floats) into the one FP32 allocation that
 * holds all parameters.  Load, save, init and parameter counts are loops over
 * this table.
 *
 * Aliases: DeepSeek checkpoints store copies of the shared embedding and
 * output head inside each MTP layer (`model.layers.{L+k-1}.embed_tokens.weight`,
 * `.shared_head.head.weight`), and a tied model has no separate lm_head.  Such
 * entries point at the storage of their source and own no floats.
 */
#ifndef DS_LAYOUT_H
#define DS_LAYOUT_H

#include <stdint.h>

#include "model/config.h"

enum {
    DS_PARAM_NORM = 1,      /* RMSNorm weight: init 1 */
    DS_PARAM_ZERO = 2,      /* bias / correction bias: init 0 */
    DS_PARAM_MTP = 4,       /* belongs to an MTP module */
    DS_PARAM_BUFFER = 8,    /* not trained by gradient (e_score_correction_bias) */
    DS_PARAM_EXPERT = 16,   /* a routed expert's weight */
    DS_PARAM_ALIAS = 32,    /* shares storage with entry `alias_of` */
    DS_PARAM_FP8 = 64,      /* FP8-resident (model.h fp8w); owns no floats (offset -1) unless kv_b */
    DS_PARAM_BF16 = 128,    /* BF16-resident (model.h fp8w[i].b16); owns no floats (offset -1) unless kv_b */
    DS_PARAM_REMOTE = 256,  /* a routed expert of another expert shard (model/expert_shard.h): no floats (offset -1) */
};

typedef struct {
    char name[112];
    int ndim;
    int64_t shape[2];
    int64_t numel;
    int64_t offset;   /* floats from the start of the parameter allocation */
    int64_t layer;    /* -1 for top-level tensors */
    int flags;
    int64_t alias_of; /* index of the source entry (DS_PARAM_ALIAS) or -1 */
} ds_param;

typedef struct {
    ds_param *p;
    int64_t n;
    int64_t total;    /* floats owned (aliases excluded) */
    /* expert shard (model/expert_shard.h; ep_size 0: the whole model): the
     * replicated tensors own floats [0, rep), this shard's routed experts
     * [rep, total), the other shards' experts none */
    int ep_size, ep_rank;
    int64_t rep;
} ds_layout;

/* Entries and owned floats of the table a config implies, counted without
 * building it (overflow-checked).  0 or -1 with ds_err. */
int ds_layout_size(const ds_config *c, int64_t *entries, int64_t *floats);
/* Build the table for a (validated) config.  Returns 0 or -1 with ds_err
 * (sizes that overflow, a table larger than the memory). */
int ds_layout_build(ds_layout *lo, const ds_config *c);
void ds_layout_free(ds_layout *lo);
/* Index of a name, or -1. */
int64_t ds_layout_find(const ds_layout *lo, const char *name);

typedef struct {
    int64_t total;      /* main model parameters (no buffers, no MTP) */
    int64_t activated;  /* main-model parameters used per token */
    int64_t mtp;        /* parameters owned by the MTP modules (shared emb/head excluded) */
    int64_t buffers;    /* e.g. e_score_correction_bias */
} ds_param_counts;
void ds_layout_count(ds_param_counts *pc, const ds_layout *lo, const ds_config *c);

/* Memory the process may use, in bytes: $DSV3_MEM_LIMIT when set (bytes,
 * or with a K/M/G/T suffix), else the physical memory (lowered to the
 * address-space limit, ulimit -v, when one is set). */
int64_t ds_mem_available(void);
/* 0 when an allocation of bytes fits ds_mem_available(); else -1 with
 * "<what>: N bytes (..) needed, more than the M bytes (..) of memory available".
 * bytes < 0 stands for a size that overflowed. */
int ds_mem_check(int64_t bytes, const char *what);

#endif
