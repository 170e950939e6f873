/*
 * optim.h — the optimizer step over a whole model: the one AdamW driver that
 * `dsv3 train` and `dsv3 bench-train` run (the per-range update is
 * train/adamw.h).
 */
#ifndef DS_OPTIM_H
#define DS_OPTIM_H

#include <stdint.h>

#include "model/backward.h"
#include "model/model.h"
#include "train/adamw.h"

/* One AdamW step (ds_adamw_step) over every trained parameter of m (no
 * aliases, no buffers; MTP parameters only when mtp), weight decay on
 * tensors with ndim >= 2.  Consecutive tensors with the same decay setting
 * are updated in one call (the zero padding between them stays zero).
 * Moments of g->n elements: FP32 m1, v1 (m16, v16 NULL) or BF16 m16, v16
 * (m1, v1 NULL).  t: step number after this update. */
void ds_model_adamw_step(ds_model *m, const ds_grads *g, float *m1, float *v1, uint16_t *m16, uint16_t *v16,
                         int64_t t, const ds_adamw_hparams *h, int mtp);

#endif
