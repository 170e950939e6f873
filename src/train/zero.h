/*
 * zero.h — data parallelism with ZeRO-1 over a communicator (dist/comm.h):
 * the flat gradient buffer (model/backward.h ds_grads, layout offsets) is
 * reduce-scattered so that rank r holds the summed gradient of its block
 * [lo, hi) of the parameters; the global gradient norm is the all-reduced
 * sum of the blocks' squares; AdamW runs on the block only, with moments of
 * hi - lo elements (the sharded optimizer state); the parameters are then
 * all-gathered so every rank holds the whole updated model.
 *
 * Blocks are balanced and 16-float aligned; a block may be empty.  On one
 * rank every step is the one-process step (same AdamW calls, same order).
 *
 * With an expert shard (model/expert_shard.h, ds_zero1_init_ep) the buffer has two
 * parts: the replicated tensors [0, n), split over the whole world, and this
 * shard's routed experts [n, n + ne), split over the shard's data-parallel
 * group dp (the ranks holding the same experts).  The moment vectors are
 * this rank's replicated block then its expert block; the global norm sums
 * both blocks' squares over the world (each element is in exactly one
 * rank's block).
 */
#ifndef DS_ZERO_H
#define DS_ZERO_H

#include <stdint.h>

#include "dist/comm.h"
#include "model/backward.h"
#include "model/model.h"
#include "backend/ops.h"
#include "train/adamw.h"

typedef struct {
    ds_comm *comm;
    int64_t n, lo, hi; /* whole buffer, this rank's block */
    int64_t *counts;   /* (size) block lengths */
    float *gshard;     /* (hi - lo + ehi - elo) the reduced gradient blocks */
    /* expert part (ne 0: none): buffer floats [n, n + ne) over dp */
    ds_comm *dp;
    int64_t ne, elo, ehi; /* this rank's block of it, from n */
    int64_t *ecounts;     /* (dp->size) */
    /* pipeline parallelism (train/pp.h): comm is a stage's ranks; the global
     * norm sums the squares over norm (NULL: comm), leaving out the
     * replicated floats [skip_lo, skip_hi) (the last stage's copy of the
     * embedding, counted on the first stage) */
    ds_comm *norm;
    int64_t skip_lo, skip_hi;
    /* device-resident parameters, gradients and moments (ds_zero1_set_mem):
     * the exchanges go through host buffers */
    const struct ds_ops *mem; /* NULL: host memory */
    float *dshard;            /* (hi - lo) [dev] the reduced gradient block */
    float *hstage;            /* (n) host staging of the gradients, then the parameters */
} ds_zero1;

int ds_zero1_init(ds_zero1 *z, ds_comm *c, int64_t n);
/* replicated floats n over c, expert floats ne over dp */
int ds_zero1_init_ep(ds_zero1 *z, ds_comm *c, int64_t n, ds_comm *dp, int64_t ne);
/* Elements of the moment vectors this rank holds. */
static inline int64_t ds_zero1_block(const ds_zero1 *z) { return z->hi - z->lo + z->ehi - z->elo; }
void ds_zero1_free(ds_zero1 *z);
/* The parameters, gradients and moments live in mem's memory (a table with
 * host_visible = 0; replicated buffers only, no expert part): each step
 * copies the gradients to the host for the reduce-scatter, the reduced
 * block back for the norm and AdamW on the device, and the updated block to
 * the host for the all-gather and the whole parameters back.  A host table
 * or one process: nothing changes.  0, or -1 with ds_err. */
int ds_zero1_set_mem(ds_zero1 *z, const struct ds_ops *mem);
/* One optimizer step: reduce-scatter g->g, global norm (clipped to clip
 * when clip > 0, torch's clip_grad_norm_ coefficient), AdamW of the block
 * (the `adamw` entry over ds_optim_segments clipped to [lo, hi); moments
 * are block-sized, FP32 or BF16 bits), all-gather of m->params.
 * *gnorm: the global norm before clipping. */
int ds_zero1_step(ds_zero1 *z, const struct ds_ops *ops, ds_model *m, const ds_grads *g, void *mom, void *vel,
                  int bf16_moments, int64_t t, const ds_adamw_hparams *h, int mtp, double clip, double *gnorm);
/* The whole moment vector (n elements of esize bytes, 4 or 2) from the
 * blocks: every rank gets it (checkpoints are written by rank 0). */
int ds_zero1_gather_state(ds_zero1 *z, const void *block, void *full, int esize);
/* The same gathered to one rank (memory only there): rep (n elements) on
 * rank 0 of z->comm, and with an expert part exp (ne elements, this shard's
 * experts) on rank 0 of z->dp.  Collective over the world. */
int ds_zero1_gather_root(ds_zero1 *z, const void *block, void *rep, void *exp, int esize);

#endif
