/*
 * loader.h — training batches from token shards.
 *
 * The data set is the shards DIR/<split>_*.bin (sorted by name).  Each shard
 * is cut into windows of T+1 tokens starting every T tokens (a window's last
 * token is the next window's first; windows never cross shards).  An epoch is a
 * permutation of all windows (seeded Fisher-Yates, a new permutation per epoch;
 * or file order with shuffle off), cut into batches of B windows; a remainder
 * smaller than B is dropped.  Global batch g belongs to epoch g / nbatches.
 * Rank r of W takes global batches r, r+W, r+2W, ...  The whole position is one
 * number — batches consumed by this rank — so resume is exact.
 */
#ifndef DS_LOADER_H
#define DS_LOADER_H

#include <stdint.h>

#include "io/shard.h"

typedef struct {
    ds_shard *shards;
    int nshards;
    int64_t B, T;
    uint64_t seed;
    int shuffle;
    int rank, world;
    int64_t nwin;          /* windows in the whole set */
    int32_t *win_shard;    /* (nwin) shard of each window */
    int64_t *win_start;    /* (nwin) first token of each window */
    int64_t *perm;         /* (nwin) order for perm_epoch */
    int64_t perm_epoch;    /* epoch perm belongs to, -1 = none yet */
    int64_t nbatches;      /* batches per epoch (all ranks together) */
    uint64_t consumed;     /* batches taken by this rank (the resume state) */
    uint32_t vocab_size;
    uint64_t tokenizer_hash;
} ds_loader;

/* split: "train" or "val".  expect_hash: 0 = accept any tokenizer. */
int ds_loader_open(ds_loader *l, const char *dir, const char *split, int64_t B, int64_t T,
                   uint64_t seed, int shuffle, int rank, int world, uint64_t expect_hash);
void ds_loader_close(ds_loader *l);
/* Fills out (B, T+1) with the next batch; returns the epoch it came from. */
int64_t ds_loader_next(ds_loader *l, int32_t *out);
/* The same batch split for a training step: ids (B, T) = window positions
 * 0..T-1 (the model's inputs), tgt (B, T) = positions 1..T (next-token
 * targets). */
int64_t ds_loader_next_batch(ds_loader *l, int32_t *ids, int32_t *tgt);
/* The same, rows r0 .. r1-1 only (ids, tgt: (r1 - r0, T)): data
 * parallelism, where each rank reads its slice of every batch. */
int64_t ds_loader_next_batch_rows(ds_loader *l, int32_t *ids, int32_t *tgt, int64_t r0, int64_t r1);
/* Position: batches consumed by this rank.  ds_loader_seek restores it. */
static inline uint64_t ds_loader_tell(const ds_loader *l) { return l->consumed; }
static inline void ds_loader_seek(ds_loader *l, uint64_t consumed) { l->consumed = consumed; }

#endif
