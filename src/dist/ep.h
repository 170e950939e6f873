/*
 * ep.h — expert parallelism: the rows of an MoE layer travel to the ranks
 * that own their experts and back (docs/engine.md §2.4).  Knows rows,
 * counts and ranks, not models.
 *
 * The routed experts 0..E-1 are split over the ep_size ranks of an
 * expert-parallel group in contiguous runs: rank j of the group owns
 * experts [j·E/ep_size, (j+1)·E/ep_size).  Groups are consecutive world
 * ranks (world rank r is in group r / ep_size); the data-parallel degree is
 * world size / ep_size.
 *
 * A layer's rows `xs` (R rows of H) are sorted by expert (counts per global
 * expert, as the MoE sort makes them), so the rows for each owner are one
 * contiguous run.  ds_ep_plan_make exchanges the counts (all-to-all), then
 * ds_ep_send moves rows: DS_EP_TO_OWNER gives the owner its rows grouped by
 * local expert (expert-major, then source rank, then the source's order),
 * DS_EP_TO_HOME is the exact inverse.  Precision: FP32, BF16, or FP8 E4M3
 * with one FP32 scale per 1x128 tile of a row (DeepSeek-V3's dispatch),
 * scales beside the codes.  The rounding is applied with ep_size 1 too, so a
 * run's numerics do not depend on how many ranks it uses.
 *
 * Engine (docs/engine.md §2.4, §2.6): the plan is host metadata (counts,
 * displacements, the regrouping permutation); every touch of row data is an
 * ops entry of the caller's table (gather_rows, cast_f32_bf16/cast_bf16_f32,
 * act_quant_1x128/act_dequant_1x128), and the staging buffers are that
 * table's memory.  The all-to-all hands those buffers to the communicator
 * as they are when the table is host visible; otherwise the wire bytes are
 * staged through host copies (copy_d2h, copy_h2d) around it.
 */
#ifndef DS_EP_H
#define DS_EP_H

#include <stdint.h>

#include "dist/comm.h"

enum { DS_EP_FP32 = 0, DS_EP_BF16 = 1, DS_EP_FP8 = 2 };
enum { DS_EP_TO_OWNER = 0, DS_EP_TO_HOME = 1 };

typedef struct {
    ds_comm *comm;                 /* the expert-parallel group */
    int size, rank;
    int64_t n_experts, experts_per_rank, first_expert;
    int64_t nodes_touched, tokens_routed; /* node-limited routing count (ds_ep_count_nodes) */
    const struct ds_ops *ops;      /* the table the staging buffers belong to (set by ds_ep_send) */
    void *ws[5];                   /* staging: regrouped rows, wire out/in, FP8 scales out/in */
    size_t ws_bytes[5];
    void *hs[2];                   /* host staging of the wire (send, receive) when the table is not host visible */
    size_t hs_bytes[2];
} ds_ep;

/* The plan of one layer's exchange (kept for the backward). */
typedef struct {
    int64_t *scount, *sdispl, *rcount, *rdispl; /* rows per group rank */
    int64_t *rc_e;          /* (size, El) rows from source s for local expert j */
    int64_t *local_counts;  /* (El) rows per local expert */
    int64_t *local_offsets; /* (El + 1) */
    int32_t *perm;          /* (R_recv) received row i goes to grouped row perm[i] */
    int32_t *iperm;         /* (R_recv) grouped row j is received row iperm[j] */
    int64_t R_send, R_recv, cap;
    int size;
} ds_ep_plan;

/* Splits world into groups of ep_size consecutive ranks (ep_size divides
 * the world size and n_experts). */
int ds_ep_init(ds_ep *ep, ds_comm *world, int ep_size, int64_t n_experts);
void ds_ep_free(ds_ep *ep);
void ds_ep_plan_free(ds_ep_plan *p);
/* counts (n_experts) of this rank's rows: exchanges them, fills the plan.
 * Returns the rows this rank receives (p->R_recv), or -1 with ds_err. */
int64_t ds_ep_plan_make(ds_ep *ep, ds_ep_plan *p, const int64_t *counts);
struct ds_ops;
/* Moves rows of width H along the plan: TO_OWNER src (R_send, H) -> dst
 * (R_recv, H); TO_HOME src (R_recv, H) -> dst (R_send, H); src, dst memory
 * of ops (one table per ep for its life).  precision DS_EP_*; kind: the
 * comm kind the bytes count under.  0, or -1 with ds_err. */
int ds_ep_send(ds_ep *ep, const struct ds_ops *ops, const ds_ep_plan *p, const float *src, float *dst, int64_t H,
               int dir, int precision, ds_comm_kind kind);
/* "fp32" / "bf16" / "fp8" -> DS_EP_*, -1 when unknown */
int ds_ep_precision_from_name(const char *s);

#endif
