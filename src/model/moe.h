/*
 * moe.h — the MoE layer of a decoder block (docs/engine.md §2.4): router,
 * load count, permute into expert order, grouped expert GEMMs, combine, and
 * the shared experts; its backward.  Shapes, pointers and ops calls only;
 * used by the training forward/backward (model.c, backward.c).
 */
#ifndef DS_MOE_H
#define DS_MOE_H

#include "model/backward.h"

/* a->mlp_out (N, H) = MoE(a->ln2) of block p; saves what the backward needs
 * (router weights/ids/scores, the expert-sorted rows and their activations,
 * the load counts, also copied to the host as a->counts_h / a->offsets_h). */
void ds_moe_forward(ds_block_acts *a, const ds_block *p, const ds_model *m, const struct ds_ops *ops, int64_t N);

/* w->dln2 (N, H) written = ∂L/∂ln2 given dy (N, H) = ∂L/∂mlp_out; dscores
 * (N, E) gradient reaching the router affinities directly (balance losses)
 * or NULL.  Expert, router and shared-expert weight gradients are added to g. */
void ds_moe_backward(const float *dy, const float *dscores, const ds_block_acts *a, const ds_block *p,
                     const ds_model *m, const struct ds_ops *ops, ds_grads *g, ds_bwd *w, int64_t N);

#endif
