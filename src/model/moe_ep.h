/*
 * moe_ep.h — the routed experts of the MoE layers under expert parallelism
 * (dist/ep.h): the layer's sorted rows go to the ranks that own their
 * experts, the local experts' grouped SwiGLU runs on what arrived, the
 * results come back for the weighted combine; the backward mirrors it with
 * the same plan.  Attach one to a model (ds_model.ep) around a training
 * step; the forward and backward then call it in place of the loop over all
 * experts.  In training each rank keeps only its own experts' weights
 * (model/expert_shard.h; p->eg[e] NULL for the others), so a model with ep
 * NULL runs alone only when it is whole: validation and sampling use the
 * whole model gathered on rank 0.
 *
 * Precision: the dispatch (rows to owners) in FP32, BF16 or FP8 E4M3 1x128;
 * the combine and both backward transfers in BF16, or FP32 with an FP32
 * dispatch.
 */
#ifndef DS_MOE_EP_H
#define DS_MOE_EP_H

#include "dist/ep.h"
#include "model/backward.h"
#include "model/model.h"

struct ds_ops;

typedef struct {
    ds_ep_plan plan;
    float *x, *gate, *up, *act, *out;       /* (rows, H|Im): kept for the backward */
    float *dout, *dact, *dgate, *dup, *dx;  /* backward workspace */
    int64_t cap;                            /* rows allocated */
} ds_moe_ep_layer;

typedef struct ds_moe_ep {
    ds_ep ep;
    int dispatch, combine;                  /* DS_EP_* precisions */
    ds_moe_ep_layer *layers;                /* (nblocks) */
    int64_t nlayers;
    int64_t rows_in, rows_local;            /* rows sent / rows computed here, summed over layers */
    /* node-limited routing: the node of each group rank, and per token and
     * layer the nodes its dispatch reaches (summed, and the most) */
    int *node_of;
    int nnodes;
    int64_t tok_layers, node_sum, node_max;
    int32_t *idx_h;                         /* [host] the layer's expert ids, for the node count */
    int64_t idx_cap;
    float **wf;                             /* [host] (6, El) local gate/up/down weights, then their gradients */
    const ds_fp8w **w8;                     /* [host] (3, El) their FP8/BF16-resident copies (NULL: none) */
    const struct ds_ops *ops;               /* the table the row buffers belong to (set by the forward) */
} ds_moe_ep;

/* ep_size ranks per group out of world; dispatch DS_EP_*; ranks_per_node:
 * simulated nodes of that many consecutive ranks (0: the ranks sharing
 * memory, dist/comm.h ds_comm_split_node). */
int ds_moe_ep_create(ds_moe_ep *x, const ds_model *m, ds_comm *world, int ep_size, int dispatch, int ranks_per_node);
void ds_moe_ep_free(ds_moe_ep *x);
/* A set of per-layer row buffers made by swapping x->layers (nlayers
 * entries, calloc'ed) while a forward and its backward run, e.g. one set
 * per micro-batch in flight in a pipeline: its release. */
void ds_moe_ep_free_layers(ds_moe_ep *x, ds_moe_ep_layer *layers);

/* a->e_out (N*K, H) of the block's routed experts from a->xs, a->counts */
void ds_moe_ep_forward(const ds_model *m, const struct ds_ops *ops, const ds_block *p, const ds_block_acts *a, int64_t N);
/* dxs (N*K, H) from de_out (N*K, H); the local experts' weight gradients
 * accumulate into g (the other experts' stay as they are) */
void ds_moe_ep_backward(const ds_model *m, const struct ds_ops *ops, const ds_block *p, const ds_grads *g,
                        const float *de_out, float *dxs, int64_t N);

#endif
