/*
 * wcache.c — converted weight copies kept per epoch (wcache.h).
 *
 * An open-addressing table keyed by (kind, weight pointer, size); a copy is
 * converted again on its first use in a new epoch.  The table lock covers
 * lookups; each entry's own lock covers its conversion, so experts converted
 * from a parallel loop do not wait on each other.
 *
 * AdamW's refresh (BF16 copies only): `fresh` counts the elements rewritten
 * since the last epoch change, and a copy rewritten whole starts the next
 * epoch valid.  A copy rewritten in part (ZeRO: another process updates the
 * rest) is converted at first use as before; so is one whose weights
 * something else changed, for that writer does not refresh.  AdamW being the
 * only writer that refreshes, and the caller changing the epoch right after
 * it, a whole refresh holds the weights' current bits.  The refresh finds the
 * copies over a range by address: the BF16 entries sorted at each epoch
 * change, with each prefix's furthest end (entries may nest or overlap: a
 * weight keyed with two shapes).
 */
#include "backend/cpu/wcache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/gemm_bf16.h"
#include "base/base.h"

typedef struct {
    int kind;
    const float *w;
    int64_t rows, cols, n, epoch;
    void *b;
    pthread_mutex_t mu;
    _Atomic int64_t fresh;
} entry;

static struct {
    pthread_mutex_t mu;
    int64_t epoch; /* < 0: no copies */
    entry **slot;
    int64_t cap, used;
    entry **by_addr;     /* the BF16 entries by weight address, as of the last epoch change */
    const float **reach; /* reach[i]: the furthest end of by_addr[0..i] */
    int64_t nby;
    int64_t nidx;        /* wc.used when the index was built */
} wc = {PTHREAD_MUTEX_INITIALIZER, -1, NULL, 0, 0, NULL, NULL, 0, 0};

static size_t slot_of(int kind, const float *w, int64_t cap) {
    uint64_t h = ((uint64_t)(uintptr_t)w + (uint64_t)kind) * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 32) & (size_t)(cap - 1);
}

static void insert(entry *e) {
    size_t i = slot_of(e->kind, e->w, wc.cap);
    while (wc.slot[i]) i = (i + 1) & (size_t)(wc.cap - 1);
    wc.slot[i] = e;
}

static void clear(void) {
    for (int64_t i = 0; i < wc.cap; i++)
        if (wc.slot[i]) {
            ds_free_aligned(wc.slot[i]->b);
            pthread_mutex_destroy(&wc.slot[i]->mu);
            free(wc.slot[i]);
        }
    free(wc.slot);
    free(wc.by_addr);
    free(wc.reach);
    wc.slot = NULL, wc.cap = wc.used = 0;
    wc.by_addr = NULL, wc.reach = NULL, wc.nby = wc.nidx = 0;
}

static int by_addr_cmp(const void *a, const void *b) {
    const float *x = (*(entry *const *)a)->w, *y = (*(entry *const *)b)->w;
    return x < y ? -1 : x > y;
}

/* at an epoch change: copies refreshed whole are valid in the new epoch; the
 * address index of the BF16 copies is rebuilt only when entries were added
 * (none is removed before clear, so the order of the others holds) */
static void new_epoch(int64_t epoch) {
    if (wc.nidx != wc.used) {
        free(wc.by_addr);
        free(wc.reach);
        wc.by_addr = ds_malloc((size_t)(wc.used > 0 ? wc.used : 1) * sizeof *wc.by_addr);
        wc.reach = ds_malloc((size_t)(wc.used > 0 ? wc.used : 1) * sizeof *wc.reach);
        int64_t k = 0;
        for (int64_t i = 0; i < wc.cap; i++)
            if (wc.slot[i] && wc.slot[i]->kind == DS_WCACHE_BF16) wc.by_addr[k++] = wc.slot[i];
        qsort(wc.by_addr, (size_t)k, sizeof *wc.by_addr, by_addr_cmp);
        for (int64_t i = 0; i < k; i++) {
            const float *end = wc.by_addr[i]->w + wc.by_addr[i]->n;
            wc.reach[i] = i > 0 && wc.reach[i - 1] > end ? wc.reach[i - 1] : end;
        }
        wc.nby = k;
        wc.nidx = wc.used;
    }
    for (int64_t i = 0; i < wc.nby; i++) {
        entry *e = wc.by_addr[i];
        if (e->fresh >= e->n && e->n > 0) e->epoch = epoch;
        e->fresh = 0;
    }
}

void ds_wcache_refresh(const float *p, int64_t n) {
    const int64_t nby = wc.nby;
    if (nby == 0 || n <= 0) return;
    /* the first entry that may overlap [p, p + n): the first whose reach
     * (non-decreasing) passes p */
    int64_t lo = 0, hi = nby;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (wc.reach[mid] <= p) lo = mid + 1;
        else hi = mid;
    }
    for (int64_t i = lo; i < nby && wc.by_addr[i]->w < p + n; i++) {
        entry *e = wc.by_addr[i];
        const float *a = e->w > p ? e->w : p, *z = e->w + e->n < p + n ? e->w + e->n : p + n;
        if (a >= z) continue;
        ds_f32_to_bf16_stream((uint16_t *)e->b + (a - e->w), a, z - a);
        e->fresh += z - a;
    }
}

void ds_wcache_epoch(int64_t epoch) {
    const char *off = getenv("DS_WEIGHT_COPIES"), *off16 = getenv("DS_BF16_WEIGHT_COPIES");
    if ((off && !strcmp(off, "0")) || (off16 && !strcmp(off16, "0"))) epoch = -1; /* convert at every call */
    pthread_mutex_lock(&wc.mu);
    if (epoch < 0) clear();
    else if (epoch != wc.epoch) new_epoch(epoch);
    wc.epoch = epoch < 0 ? -1 : epoch;
    pthread_mutex_unlock(&wc.mu);
}

const void *ds_wcache_get(int kind, const float *w, int64_t rows, int64_t cols, size_t bytes, ds_wcache_convert fn) {
    const int64_t n = rows * cols;
    pthread_mutex_lock(&wc.mu);
    const int64_t ep = wc.epoch;
    if (ep < 0) {
        pthread_mutex_unlock(&wc.mu);
        return NULL;
    }
    if (2 * (wc.used + 1) > wc.cap) { /* grow: rehash at half load */
        entry **old = wc.slot;
        int64_t oc = wc.cap;
        wc.cap = oc ? 2 * oc : 256;
        wc.slot = ds_calloc((size_t)wc.cap, sizeof *wc.slot);
        for (int64_t i = 0; i < oc; i++)
            if (old[i]) insert(old[i]);
        free(old);
    }
    size_t i = slot_of(kind, w, wc.cap);
    while (wc.slot[i] && !(wc.slot[i]->kind == kind && wc.slot[i]->w == w && wc.slot[i]->rows == rows &&
                           wc.slot[i]->cols == cols))
        i = (i + 1) & (size_t)(wc.cap - 1);
    entry *e = wc.slot[i];
    if (!e) {
        e = ds_calloc(1, sizeof *e);
        e->kind = kind, e->w = w, e->rows = rows, e->cols = cols, e->n = n, e->epoch = -1;
        e->b = ds_aligned_alloc(bytes > 0 ? bytes : 1);
        pthread_mutex_init(&e->mu, NULL);
        wc.slot[i] = e;
        wc.used++;
    }
    pthread_mutex_unlock(&wc.mu);
    pthread_mutex_lock(&e->mu);
    if (e->epoch != ep) {
        fn(e->b, w, rows, cols);
        e->epoch = ep;
    }
    pthread_mutex_unlock(&e->mu);
    return e->b;
}
