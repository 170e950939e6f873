/*
 * wcache.h — the weights' BF16 copies kept for one epoch (the ops entry
 * weights_epoch), for the BF16 linears (matmul_bf16.c).
 *
 * While the caller's epoch (>= 0) holds, ds_wcache_get returns the copy of a
 * weight (keyed by pointer and shape), converting it on its first use in the
 * epoch; the caller promises the weights do not change within an epoch.
 * Epoch < 0 (the default) keeps nothing: ds_wcache_get returns NULL and the
 * linears convert at every call.  Same bits either way.
 * DS_BF16_WEIGHT_COPIES=0 in the environment turns the copies off (for A/B
 * runs).
 *
 * AdamW rewrites the copies as it writes the weights (ds_wcache_refresh,
 * from its parallel loop, while the block is in cache); a copy rewritten
 * whole starts the next epoch valid instead of being converted again at
 * first use.  (FP8 128x128 blocks of the weights kept the same way were tried:
 * 1-2% of an fp8 step at B=1 for a byte a weight; docs/cpu.md.)
 */
#ifndef DS_CPU_WCACHE_H
#define DS_CPU_WCACHE_H

#include <stdint.h>

/* The BF16 copy of the weight w (rows x cols) for the current epoch,
 * converted when it is not; NULL without an epoch.  Safe from a parallel
 * loop (experts converted at once do not wait on each other). */
const uint16_t *ds_wcache_get(const float *w, int64_t rows, int64_t cols);
/* Start epoch `epoch` (>= 0), or end the promise and free the copies (< 0). */
void ds_wcache_epoch(int64_t epoch);
/* AdamW has just written p[0, n): the copies over that range are
 * rewritten now (on the calling thread).  Safe from a parallel loop over
 * disjoint ranges; a no-op without copies. */
void ds_wcache_refresh(const float *p, int64_t n);

#endif
