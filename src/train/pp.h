/*
 * pp.h — pipeline parallelism at run time (`dsv3 train --pp S`): one
 * process's part of the 1F1B schedule of pp_sched.h over M micro-batches.
 *
 * Ranks are stage-major: with P processes and Q = P/S per stage, world rank
 * r is stage r / Q, position r % Q inside it; it exchanges activations with
 * r - Q (the previous stage) and r + Q (the next) over the world
 * communicator (non-blocking sends posted as soon as a result exists,
 * blocking receives when the schedule needs the input; DS_COMM_PP).  The
 * Q ranks of a stage split the batch rows among them (data parallelism, and
 * expert parallelism in groups inside the stage).  A stage keeps
 * ds_pp_in_flight(S, s, M) activation sets of one micro-batch, carved for
 * its own layers only (ds_acts_create_stage).  See docs/pipeline.md.
 */
#ifndef DS_PP_H
#define DS_PP_H

#include <stdint.h>

#include "dist/comm.h"
#include "model/backward.h"
#include "model/model.h"
#include "model/moe_ep.h"
#include "train/pp_sched.h"
#include "train/zero.h"

typedef struct {
    int S, s, M, Q, K;      /* stages, this stage, micro-batches, ranks per stage, arenas in flight */
    int64_t *first;         /* (S+1) the split: stage s owns main layers [first[s], first[s+1]) */
    int64_t l0, l1;         /* this stage's */
    int64_t Bm, T, H;       /* rows of one micro-batch, sequence length, hidden size */
    ds_comm *world;
    int prev, next;         /* world ranks of the neighbours (-1: none) */
    ds_acts *acts;          /* (K) */
    size_t arena_bytes;     /* one set's arena */
    float *xin, *dout;      /* (Bm, T, H) received input state / output gradient */
    float **gsend;          /* (K) input gradients being sent */
    void **areq, **greq;    /* (K) their send requests */
    ds_pp_op *ops;          /* (2M) this stage's 1F1B order */
    /* expert parallelism: the MoE layers' row buffers are kept from a
     * forward to its backward, so each micro-batch in flight has its own
     * set (swapped into ep->layers around its forward and backward) */
    struct ds_moe_ep *ep;
    ds_moe_ep_layer **eplayers; /* (K) */
    /* this step (ds_pp_step_begin clears them) */
    double busy_f, busy_b;  /* seconds in forward / backward compute */
    int64_t nf, nb;         /* forwards / backwards run */
    double t_sched;         /* seconds from the first op to the last send done */
} ds_pp;

/* The layout of a run over P processes: stage and neighbours of world rank
 * R; the split (ds_pp_split, spec: --pp-layers or NULL); K arenas of
 * Bm x T rows for this stage's layers (mtp: the last stage runs the MTP
 * modules; flags DS_ACTS_*).  0, or -1 with ds_err (S not dividing P, ...). */
int ds_pp_init(ds_pp *pp, ds_comm *world, const ds_model *m, int S, const char *spec, int M, int64_t Bm, int64_t T,
               int mtp, int flags);
void ds_pp_free(ds_pp *pp);

/* One batch of this rank's rows through the pipeline: ids, tgt (M·Bm, T)
 * [host] (micro-batch j: rows j·Bm ..); gradients accumulate into g; the
 * stage's loss terms are added into sum (loss, ce, bal, mtp_ce mean over
 * depths: sum[0..3]); the expert loads of its layers into load (nblocks x
 * Ee).  m->ep, when set, is used by every forward and backward. */
int ds_pp_run(ds_pp *pp, const ds_model *m, const struct ds_ops *ops, ds_grads *g, ds_bwd *w, const int32_t *ids,
              const int32_t *tgt, const ds_loss_opts *lo, int64_t mtp_depth, double *sum, int64_t *load, int64_t Ee);

/* The step's pipeline figures over the world (collective): per stage busy
 * seconds (averaged over its ranks), the measured bubble 1 - mean busy /
 * slowest rank's schedule time, the time model's bubble on the measured
 * per-micro-batch forward and backward times, bytes sent between stages by
 * all ranks since bytes0 (the world's DS_COMM_PP count at the step's start). */
typedef struct {
    double busy[64];
    double bubble, analytic, model, bytes, act_bytes;
} ds_pp_report;
int ds_pp_step_report(ds_pp *pp, double bytes0, ds_pp_report *r);

/* The whole model of a pipeline run on world rank 0 (*full created there,
 * zeroed elsewhere) and, with mom, its whole AdamW moment vectors (*fm, *fv:
 * full_lo->total elements of es bytes, malloc'ed on rank 0): each stage's
 * ZeRO-1 blocks (z over stagec, its experts' over z->dp) and expert shards
 * (epc: ranks 0..G-1 of the stage, NULL when G = 1) go to the stage's first
 * rank, those (roots: the stages' first ranks) to rank 0, which maps every
 * (stage, shard) part into the whole layout full_lo.  Collective over the
 * world.  0 or -1 with ds_err. */
int ds_pp_gather(ds_comm *world, ds_comm *stagec, ds_comm *epc, ds_comm *roots, ds_zero1 *z, const ds_model *m,
                 const ds_layout *full_lo, const int64_t *first, int S, int G, const void *mom, const void *vel, int es,
                 ds_model *full, void **fm, void **fv);

#endif
