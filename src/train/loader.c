/*
 * loader.c — deterministic, resumable batches from token shards (loader.h).
 */
#include "train/loader.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int ds_loader_open(ds_loader *l, const char *dir, const char *split, int64_t B, int64_t T,
                   uint64_t seed, int shuffle, int rank, int world, uint64_t expect_hash) {
    memset(l, 0, sizeof *l);
    if (B <= 0 || T <= 0) return ds_err("loader: batch and sequence length must be positive");
    if (world <= 0 || rank < 0 || rank >= world) return ds_err("loader: bad rank %d of %d", rank, world);
    DIR *d = opendir(dir);
    if (!d) return ds_err("%s: cannot open data directory (run 'dsv3 data prepare' first)", dir);
    char **names = NULL;
    int n = 0;
    size_t plen = strlen(split);
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (!strncmp(e->d_name, split, plen) && e->d_name[plen] == '_' && len > 4 &&
            !strcmp(e->d_name + len - 4, ".bin")) {
            names = ds_realloc(names, (n + 1) * sizeof *names);
            names[n++] = ds_path_join(dir, e->d_name);
        }
    }
    closedir(d);
    if (n == 0) { free(names); return ds_err("%s: no %s_*.bin shards", dir, split); }
    qsort(names, n, sizeof *names, cmp_str);
    l->shards = ds_calloc(n, sizeof *l->shards);
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        rc = ds_shard_open(&l->shards[i], names[i], expect_hash);
        if (rc == 0) l->nshards++;
        if (rc == 0 && i > 0 && (l->shards[i].tokenizer_hash != l->shards[0].tokenizer_hash ||
                                 l->shards[i].vocab_size != l->shards[0].vocab_size))
            rc = ds_err("%s: made with a different tokenizer than %s", names[i], names[0]);
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    if (rc != 0) { ds_loader_close(l); return -1; }
    l->B = B; l->T = T; l->seed = seed; l->shuffle = shuffle;
    l->rank = rank; l->world = world;
    l->vocab_size = l->shards[0].vocab_size;
    l->tokenizer_hash = l->shards[0].tokenizer_hash;
    for (int i = 0; i < l->nshards; i++)
        if (l->shards[i].n_tokens > 1) l->nwin += (int64_t)(l->shards[i].n_tokens - 1) / T;
    l->nbatches = l->nwin / B;
    if (l->nbatches == 0) {
        ds_err("%s: %s split has %lld windows of %lld tokens, fewer than one batch of %lld",
               dir, split, (long long)l->nwin, (long long)T + 1, (long long)B);
        ds_loader_close(l);
        return -1;
    }
    l->win_shard = ds_malloc(l->nwin * sizeof *l->win_shard);
    l->win_start = ds_malloc(l->nwin * sizeof *l->win_start);
    l->perm = ds_malloc(l->nwin * sizeof *l->perm);
    int64_t k = 0;
    for (int i = 0; i < l->nshards; i++) {
        int64_t nw = l->shards[i].n_tokens > 1 ? (int64_t)(l->shards[i].n_tokens - 1) / T : 0;
        for (int64_t j = 0; j < nw; j++, k++) { l->win_shard[k] = i; l->win_start[k] = j * T; }
    }
    l->perm_epoch = -1;
    return 0;
}

void ds_loader_close(ds_loader *l) {
    for (int i = 0; i < l->nshards; i++) ds_shard_close(&l->shards[i]);
    free(l->shards); free(l->win_shard); free(l->win_start); free(l->perm);
    memset(l, 0, sizeof *l);
}

static void make_perm(ds_loader *l, int64_t epoch) {
    for (int64_t i = 0; i < l->nwin; i++) l->perm[i] = i;
    if (l->shuffle) {
        ds_rng r;
        ds_rng_seed(&r, l->seed * 0x9e3779b97f4a7c15ULL + (uint64_t)epoch + 1);
        for (int64_t i = l->nwin - 1; i > 0; i--) {
            int64_t j = (int64_t)ds_rng_below(&r, (uint64_t)i + 1);
            int64_t t = l->perm[i]; l->perm[i] = l->perm[j]; l->perm[j] = t;
        }
    }
    l->perm_epoch = epoch;
}

/* Rows r0 .. r1-1 of the next batch's windows into out (r1 - r0, T+1), or
 * split into ids and tgt. */
static int64_t next_windows(ds_loader *l, int32_t *out, int32_t *ids, int32_t *tgt, int64_t r0, int64_t r1) {
    uint64_t g = l->consumed * (uint64_t)l->world + (uint64_t)l->rank;
    int64_t epoch = (int64_t)(g / (uint64_t)l->nbatches), b = (int64_t)(g % (uint64_t)l->nbatches);
    if (epoch != l->perm_epoch) make_perm(l, epoch);
    const int64_t T = l->T;
    for (int64_t i = r0; i < r1; i++) {
        int64_t w = l->perm[b * l->B + i], o = i - r0;
        const ds_shard *s = &l->shards[l->win_shard[w]];
        for (int64_t t = 0; t <= T; t++) { /* host: ids */
            int32_t v = ds_shard_token(s, (uint64_t)(l->win_start[w] + t));
            if (out) out[o * (T + 1) + t] = v;
            if (ids && t < T) ids[o * T + t] = v;
            if (tgt && t > 0) tgt[o * T + t - 1] = v;
        }
    }
    l->consumed++;
    return epoch;
}

int64_t ds_loader_next(ds_loader *l, int32_t *out) { return next_windows(l, out, NULL, NULL, 0, l->B); }

int64_t ds_loader_next_batch(ds_loader *l, int32_t *ids, int32_t *tgt) { return next_windows(l, NULL, ids, tgt, 0, l->B); }

int64_t ds_loader_next_batch_rows(ds_loader *l, int32_t *ids, int32_t *tgt, int64_t r0, int64_t r1) {
    return next_windows(l, NULL, ids, tgt, r0, r1);
}
