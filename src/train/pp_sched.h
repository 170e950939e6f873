/*
 * pp_sched.h — pipeline parallelism on paper: how the layers are split into
 * stages, the order in which a stage runs its micro-batches (1F1B), and the
 * schedule's time model.  The trainer (--pp) and `dsv3 plan --pp` use the
 * same functions, so the bubble the plan prints is the one the trainer runs.
 *
 * Stages.  Stage s of S owns the main layers [first[s], first[s+1]); stage 0
 * also owns the token embedding, stage S-1 the final norm, the output head
 * and the MTP modules (as DeepSeek-V3 places them).  The split balances the
 * estimated forward cost (ds_pp_layer_cost: matmul FLOPs per token, routed
 * experts counted K/E, plus causal attention at the given sequence length),
 * minimizing the most expensive stage over all contiguous splits with at
 * least one layer per stage; or it follows an explicit list "a,b,..." of S
 * layer counts (--pp-layers).
 *
 * 1F1B.  With M micro-batches, stage s runs min(S-1-s, M) warm-up forwards,
 * then alternates one forward and one backward until every forward ran, then
 * the remaining backwards; micro-batches go through a stage in order
 * 0..M-1 in each direction.  Stage s holds at most min(S-s, M) micro-batches'
 * activations at once (ds_pp_in_flight).
 *
 * Time model (ds_pp_simulate).  Each stage s takes f[s] per forward and b[s]
 * per backward of one micro-batch; sends are free and a stage waits only for
 * its input (the forward output of stage s-1, the input gradient of stage
 * s+1).  The makespan is the step's time; a stage's bubble is its idle time
 * within the makespan; the bubble fraction is the idle share of S x makespan.
 * With equal stages it equals the analytic (S-1)/(M+S-1).
 *
 * DualPipe (DeepSeek-V3 technical report, Table 2) for comparison, in units
 * of one stage's micro-batch chunk times: F forward, B full backward, W the
 * weight-gradient part of B, F&B a forward and a backward chunk run
 * overlapped:  1F1B bubble (PP-1)(F+B);  ZB1P (PP-1)(F+B-2W);
 * DualPipe (PP/2-1)(F&B+B-3W), with 2x the parameters per device and PP+1
 * micro-batches of activations.
 */
#ifndef DS_PP_SCHED_H
#define DS_PP_SCHED_H

#include <stdint.h>

#include "model/config.h"

enum { DS_PP_FWD = 0, DS_PP_BWD = 1 };

typedef struct {
    int dir; /* DS_PP_FWD or DS_PP_BWD */
    int mb;  /* micro-batch index, 0..M-1 */
} ds_pp_op;

/* Estimated forward FLOPs per token of main layer l at sequence length T
 * (matmuls, routed experts K/E, causal attention averaged over positions). */
double ds_pp_layer_cost(const ds_config *c, int64_t l, int64_t T);
/* The same for what stage 0 adds (embedding: 0 FLOPs, a gather) and what the
 * last stage adds (final norm, output head, MTP modules with their head). */
double ds_pp_head_cost(const ds_config *c, int64_t T);

/* first[0..S]: first[0] = 0, first[S] = num_hidden_layers.  spec: NULL or
 * "" for the cost-balanced split, else S comma-separated positive layer
 * counts summing to num_hidden_layers.  0, or -1 with ds_err. */
int ds_pp_split(const ds_config *c, int S, const char *spec, int64_t T, int64_t *first);
/* estimated forward FLOPs per token of stage s under split first[] */
double ds_pp_stage_cost(const ds_config *c, int S, const int64_t *first, int s, int64_t T);

/* Fills ops[0..2M) with stage s's 1F1B order; returns 2M, or -1 with ds_err
 * (S < 1, s outside [0, S), M < 1). */
int ds_pp_1f1b(int S, int s, int M, ds_pp_op *ops);
/* most micro-batches whose activations stage s holds at once under 1F1B */
static inline int ds_pp_in_flight(int S, int s, int M) { return S - s < M ? S - s : M; }

/* Runs the 1F1B schedule of every stage on the time model above.  Returns the
 * makespan; busy[s] (optional) gets stage s's busy time; *bubble (optional)
 * the idle share 1 - sum(busy) / (S x makespan).  -1 on bad arguments. */
double ds_pp_simulate(int S, int M, const double *f, const double *b, double *busy, double *bubble);

static inline double ds_pp_bubble_1f1b(int S, int M) { return (double)(S - 1) / (double)(M + S - 1); }
/* DualPipe's bubble time from the report's formula, in the units of F, B, W
 * and F&B; -1 when PP is odd (DualPipe pairs stages). */
static inline double ds_pp_dualpipe_bubble(int PP, double F, double B, double W, double FB) {
    return PP % 2 ? -1 : (PP / 2 - 1) * (FB + B - 3 * W);
}

#endif
