/*
 * profile.h — a profiling ops table: wraps another table (the CPU's, the
 * GPU's) and times each entry's outermost calls, synchronizing the inner
 * table after each one so that a device's asynchronous work lands on the
 * entry that queued it (slower than a plain run on a GPU, as with
 * CUDA_LAUNCH_BLOCKING; on the CPU the sync is free).  Calls made inside
 * another entry (an expert's linear inside grouped_linear_*) are counted,
 * not timed: the outer entry's time holds them.
 *
 * One profiled table per process at a time: `dsv3 bench-train --profile`,
 * `dsv3 train --profile`.
 */
#ifndef DS_PROFILE_H
#define DS_PROFILE_H

#include <stdio.h>

#include "backend/ops.h"

/* The profiling table over inner (which must outlive it), counters zeroed. */
const struct ds_ops *ds_ops_profile(const struct ds_ops *inner);
/* Zero the counters (after warm-up steps). */
void ds_ops_profile_reset(void);
/* Entry e's outermost calls, nested calls and seconds since the last reset;
 * the name of entry e, or NULL past the last. */
const char *ds_ops_profile_entry(int e, long long *calls, long long *nested, double *seconds);
/* A table of the entries with calls, by time: ms a step over `steps` steps
 * and the share of `step_s` (the mean step's seconds), then the time no
 * entry holds (the model code between the calls, host loops). */
void ds_ops_profile_print(FILE *f, int steps, double step_s);
/* The same as a JSON object {"entry": {"calls": n, "ms_per_step": t}, ...}
 * into buf (truncated to cap). */
void ds_ops_profile_json(char *buf, size_t cap, int steps);

#endif
