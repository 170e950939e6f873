/*
 * wcache.h — converted copies of the GEMM weights kept for one epoch (the
 * ops entry weights_epoch): BF16 copies for the BF16 linears, 128x128-block
 * FP8 codes and scales for the FP8 linears.
 *
 * While the caller's epoch (>= 0) holds, ds_wcache_get returns the copy of a
 * weight (keyed by kind, pointer and size), converting it on its first use in
 * the epoch; the caller promises the weights do not change within an epoch.
 * Epoch < 0 (the default) keeps nothing: ds_wcache_get returns NULL and the
 * linears convert at every call.  Same bits either way.
 * DS_WEIGHT_COPIES=0 (or DS_BF16_WEIGHT_COPIES=0) in the environment turns
 * the copies off (for A/B runs).
 *
 * AdamW rewrites the BF16 copies as it writes the weights
 * (ds_wcache_refresh, from its parallel loop, while the block is in cache);
 * a BF16 copy rewritten whole starts the next epoch valid instead of being
 * converted again at first use.  FP8 blocks need the amax of 128 rows, so
 * FP8 copies are converted at first use in every epoch.
 */
#ifndef DS_CPU_WCACHE_H
#define DS_CPU_WCACHE_H

#include <stddef.h>
#include <stdint.h>

enum { DS_WCACHE_BF16 = 0, DS_WCACHE_FP8_BLOCK = 1 };

/* fill dst (the copy's bytes) from the weight w of rows x cols */
typedef void (*ds_wcache_convert)(void *dst, const float *w, int64_t rows, int64_t cols);

/* The copy of kind `kind` (bytes long) of the weight w (rows x cols) for the
 * current epoch, converted by fn when it is not; NULL without an epoch.
 * Safe from a parallel loop (experts converted at once do not wait on each
 * other). */
const void *ds_wcache_get(int kind, const float *w, int64_t rows, int64_t cols, size_t bytes, ds_wcache_convert fn);
/* Start epoch `epoch` (>= 0), or end the promise and free the copies (< 0). */
void ds_wcache_epoch(int64_t epoch);
/* AdamW has just written p[0, n): the BF16 copies over that range are
 * rewritten now (on the calling thread).  Safe from a parallel loop over
 * disjoint ranges; a no-op without copies. */
void ds_wcache_refresh(const float *p, int64_t n);

#endif
