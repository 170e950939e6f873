/*
 * expert_shard.h — the expert shard of a model under expert parallelism
 * (dist/ep.h): a rank of an expert-parallel group of ep_size ranks keeps the
 * replicated tensors (embedding, attention, dense and shared-expert MLPs,
 * routers, norms, heads) and only the routed experts it owns, experts
 * [r·E/ep_size, (r+1)·E/ep_size) of every MoE layer.
 *
 * The layout keeps every entry (names, shapes, the same indices as the
 * whole model's); a shard re-offsets it: the replicated tensors first, in
 * layout order, [0, rep), then the local experts, in layout order,
 * [rep, total); the other shards' experts are flagged DS_PARAM_REMOTE and own
 * no floats (offset -1, their block pointers NULL).  Parameters, gradients
 * and the ZeRO-1 moments (train/zero.h) follow the shard's offsets, so the
 * expert part of each is n_expert_floats / ep_size per rank.
 *
 * Every shard of a group has the same rep and the same expert part size, and
 * shard j's expert part is the layout order of its own experts: the whole
 * model is put back together from the group's expert parts by index alone
 * (ds_shard_gather_model, and the checkpoint's moments in the trainer).
 */
#ifndef DS_MODEL_SHARD_H
#define DS_MODEL_SHARD_H

#include <stdint.h>

#include "dist/comm.h"
#include "model/layout.h"
#include "model/model.h"

/* Re-offset a whole-model layout lo (ep_size 0, no resident entries) to
 * shard ep_rank of ep_size over n_experts experts per MoE layer. */
void ds_layout_shard(ds_layout *lo, int64_t n_experts, int ep_size, int ep_rank);
/* A pipeline stage's part of the model (train/pp.h): main layers [l0, l1)
 * of L, the token embedding when first or last (the MTP modules embed the
 * shifted tokens with the shared table), the final norm, output head and
 * MTP modules when last.  Entries outside it are DS_PARAM_REMOTE like the
 * other shards' experts. */
typedef struct ds_stage_keep_s {
    int64_t l0, l1, L;
    int first, last;
} ds_stage_keep;
/* ds_layout_shard keeping only the entries of stage k (NULL: all); ep_size 1
 * keeps every expert of the stage's layers (as the expert part). */
void ds_layout_shard_stage(ds_layout *lo, int64_t n_experts, int ep_size, int ep_rank, const ds_stage_keep *k);
/* 1 when entry p belongs to stage k */
int ds_stage_keeps(const ds_stage_keep *k, const ds_param *p);
/* The same layout as src, a copy (p duplicated). */
void ds_layout_copy(ds_layout *dst, const ds_layout *src);
/* The expert index of a routed-expert entry's name, or -1. */
int64_t ds_layout_expert_of(const ds_param *p);

/* Allocate stage k's part of a model, routed experts split over ep_size
 * (>= 1) as in ds_model_create_shard (FP32, host memory, parameters zero;
 * ds_model_init_random gives each kept tensor the whole model's values). */
int ds_model_create_stage(ds_model *m, const ds_config *c, int ep_size, int ep_rank, const ds_stage_keep *k);

/* Keep only shard ep_rank of ep_size of a whole FP32 model, in place (the
 * parameters move to a smaller allocation of the same memory; host-visible
 * weights only).  0, or -1 with ds_err (m unchanged). */
int ds_model_shard(ds_model *m, int ep_size, int ep_rank);

/* Copy the elements [lo, hi) of a vector laid out as shard layout sh (esize
 * bytes each) from / to a vector laid out as the whole layout full (same
 * entries).  to_full 0: dst (hi - lo) = src_full's elements; to_full 1: the
 * shard range src (hi - lo) is written into dst_full.  Padding is left. */
void ds_shard_copy(const ds_layout *full, const ds_layout *sh, const void *src, void *dst, int64_t lo, int64_t hi,
                   int esize, int to_full);

/* The whole model on rank root of the expert-parallel group g (rank j of g
 * holds shard j of m's layout): the group sends its expert parts to root,
 * which creates *full (host memory) from them and its own replicated part.
 * Collective over g; on the other ranks *full is zeroed.  0 or -1 with ds_err. */
int ds_shard_gather_model(ds_model *full, const ds_model *m, ds_comm *g, int root);
/* Gather to root of c the blocks (counts[r] elements of dt each, r's block
 * from rank r) into recv (root only; one after the other). */
int ds_gather_root(ds_comm *c, const void *send, void *recv, const int64_t *counts, ds_comm_dtype dt, int root);

#endif
