/*
 * balance.h — auxiliary-loss-free load balancing (DeepSeek-V3 §2.1.2, docs
 * §6.1) and routing metrics.
 *
 * After each optimizer step every MoE layer's correction bias moves by
 *   b_i <- b_i + gamma * sign(mean_j c_j - c_i)
 * where c_i is the number of token slots routed to expert i over the whole
 * batch of the step.  The bias only affects which experts are selected.
 *
 * Metrics per layer: MaxVio = max_i c_i / mean_j c_j - 1 (0 = perfectly
 * balanced), and the fraction of all token slots on the busiest expert.
 */
#ifndef DS_BALANCE_H
#define DS_BALANCE_H

#include <stdint.h>

/* The update is the ops entry `bias_update` (backend/ops.h), given the
 * step's host load counts of a layer. */

typedef struct {
    double maxvio;        /* max load / mean load - 1 */
    double top_share;     /* busiest expert's share of all slots */
    int64_t busiest;      /* its index */
    int64_t idle;         /* experts with no tokens */
    int collapsed;        /* see ds_routing_stats */
} ds_routing_stats;

/* A layer is flagged as collapsed when its busiest expert holds more than
 * four times its fair share of the slots (share > 4/E, capped at 1/2), or when
 * more than half of the experts got no slot at all.  Four times the fair
 * share is MaxVio > 3: balanced training (DeepSeek reports MaxVio well under 1)
 * never gets there, while an unbalanced router that is collapsing passes it
 * within a few hundred steps. */
ds_routing_stats ds_routing_stats_of(const int64_t *load, int64_t E);

#endif
