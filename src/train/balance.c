/*
 * balance.c — routing metrics (balance.h).  The bias update is the ops entry
 * `bias_update` (backend/ops.h).
 */
#include "train/balance.h"

ds_routing_stats ds_routing_stats_of(const int64_t *load, int64_t E) {
    ds_routing_stats s = {0};
    int64_t total = 0, mx = -1;
    for (int64_t i = 0; i < E; i++) {
        total += load[i];
        if (load[i] > mx) { mx = load[i]; s.busiest = i; }
        if (load[i] == 0) s.idle++;
    }
    if (total == 0) return s;
    double mean = (double)total / (double)E;
    s.maxvio = (double)mx / mean - 1.0;
    s.top_share = (double)mx / (double)total;
    double lim = 4.0 / (double)E; /* four times an expert's fair share of the slots */
    if (lim > 0.5) lim = 0.5;
    s.collapsed = s.top_share > lim || s.idle * 2 > E;
    return s;
}
