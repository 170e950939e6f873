/*
 * optim.h — the optimizer step over a whole model: the one AdamW driver that
 * `dsv3 train` and `dsv3 bench-train` run.  The element work is two ops
 * entries (backend/ops.h): `sumsq` over the flat gradient buffer (the global
 * norm and the finite check in one reduction) and `adamw` over the layout's
 * segments with the clip coefficient folded in.
 */
#ifndef DS_OPTIM_H
#define DS_OPTIM_H

#include <stdint.h>

#include "backend/ops.h"
#include "model/backward.h"
#include "model/model.h"
#include "train/adamw.h"

/* The segments of every trained parameter of m (no aliases, no buffers; MTP
 * parameters only when mtp), weight decay on tensors with ndim >= 2.
 * Consecutive tensors with the same decay setting form one segment (the zero
 * padding between them stays zero).  Returns a ds_malloc'd array of *nseg
 * segments. */
ds_optim_seg *ds_optim_segments(const ds_model *m, int mtp, int64_t *nseg);

/* One AdamW step (the `adamw` entry of ops) over ds_optim_segments(m, mtp).
 * Moments of g->n elements: FP32 (bf16_moments 0) or BF16 bits.  gscale:
 * the clip coefficient (ds_clip_coef; 1 for none).  t: step number after
 * this update. */
void ds_model_adamw_step(const struct ds_ops *ops, ds_model *m, const ds_grads *g, void *mom, void *vel,
                         int bf16_moments, int64_t t, const ds_adamw_hparams *h, float gscale, int mtp);

#endif
