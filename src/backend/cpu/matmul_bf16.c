/*
 * matmul_bf16.c — BF16-input linear layer forward and backward
 * (matmul_bf16.h) on top of the BF16 GEMM of gemm_bf16.c.
 */
#include "backend/cpu/matmul_bf16.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "backend/cpu/gemm_bf16.h"


/* Grow-only conversion scratch (three operands at most), one set per thread:
 * the MoE layers call the linear layers of different experts from a parallel
 * loop. */
static _Thread_local void *scratch[3];
static _Thread_local size_t scratch_n[3];

static uint16_t *to_bf16(int slot, const float *x, int64_t n) {
    uint16_t *b = ds_scratch(&scratch[slot], &scratch_n[slot], (size_t)n * sizeof(uint16_t));
    ds_f32_to_bf16_n(b, x, n);
    return b;
}

/* BF16 copies of the weights, kept while the caller's epoch holds
 * (ds_matmul_bf16_weights_epoch): an open-addressing table keyed by the weight
 * pointer and size; a copy is converted again on its first use in a new epoch.
 * The table lock covers lookups; each entry's own lock covers its conversion,
 * so experts converted from a parallel loop do not wait on each other.
 *
 * AdamW refreshes the copies as it writes the weights (ds_matmul_bf16_refresh,
 * from its parallel loop: the new values are still in cache, where a
 * conversion at first use reads them from memory again): `fresh` counts the
 * elements rewritten since the last epoch change, and a copy rewritten whole
 * starts the next epoch valid.  A copy rewritten in part (ZeRO: another
 * process updates the rest) is converted at first use as before; so is one
 * whose weights something else changed, for that writer does not refresh.
 * AdamW being the only writer that refreshes, and the caller changing the
 * epoch right after it, a whole refresh holds the weights' current bits. */
typedef struct {
    const float *w;
    int64_t n, epoch;
    uint16_t *b;
    pthread_mutex_t mu;
    _Atomic int64_t fresh;
} wcache_entry;

static struct {
    pthread_mutex_t mu;
    int64_t epoch; /* < 0: no cache */
    wcache_entry **slot;
    int64_t cap, used;
    wcache_entry **by_addr; /* the entries by weight address, as of the last epoch change */
    const float **reach;    /* reach[i]: the furthest end of by_addr[0..i] */
    int64_t nby;
} wc = {PTHREAD_MUTEX_INITIALIZER, -1, NULL, 0, 0, NULL, NULL, 0};

static size_t wc_hash(const float *w, int64_t cap) {
    uint64_t h = (uint64_t)(uintptr_t)w * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 32) & (size_t)(cap - 1);
}

static void wc_insert(wcache_entry *e) {
    size_t i = wc_hash(e->w, wc.cap);
    while (wc.slot[i]) i = (i + 1) & (size_t)(wc.cap - 1);
    wc.slot[i] = e;
}

static void wc_clear(void) {
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
    wc.by_addr = NULL, wc.reach = NULL, wc.nby = 0;
}

static int by_addr_cmp(const void *a, const void *b) {
    const float *x = (*(wcache_entry *const *)a)->w, *y = (*(wcache_entry *const *)b)->w;
    return x < y ? -1 : x > y;
}

/* at an epoch change: copies refreshed whole are valid in the new epoch; the
 * address index is rebuilt (entries may overlap: a refresh writes each one) */
static void wc_new_epoch(int64_t epoch) {
    free(wc.by_addr);
    free(wc.reach);
    wc.by_addr = ds_malloc((size_t)(wc.used > 0 ? wc.used : 1) * sizeof *wc.by_addr);
    wc.reach = ds_malloc((size_t)(wc.used > 0 ? wc.used : 1) * sizeof *wc.reach);
    int64_t k = 0;
    for (int64_t i = 0; i < wc.cap; i++) {
        wcache_entry *e = wc.slot[i];
        if (!e) continue;
        if (e->fresh >= e->n && e->n > 0) e->epoch = epoch;
        e->fresh = 0;
        wc.by_addr[k++] = e;
    }
    qsort(wc.by_addr, (size_t)k, sizeof *wc.by_addr, by_addr_cmp);
    for (int64_t i = 0; i < k; i++) {
        const float *end = wc.by_addr[i]->w + wc.by_addr[i]->n;
        wc.reach[i] = i > 0 && wc.reach[i - 1] > end ? wc.reach[i - 1] : end;
    }
    wc.nby = k;
}

void ds_matmul_bf16_refresh(const float *p, int64_t n) {
    const int64_t nby = wc.nby;
    if (nby == 0 || n <= 0) return;
    /* the first entry that may overlap [p, p + n): the first whose reach
     * (the furthest end up to it, non-decreasing) passes p */
    int64_t lo = 0, hi = nby;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (wc.reach[mid] <= p) lo = mid + 1;
        else hi = mid;
    }
    for (int64_t i = lo; i < nby && wc.by_addr[i]->w < p + n; i++) {
        wcache_entry *e = wc.by_addr[i];
        const float *a = e->w > p ? e->w : p, *z = e->w + e->n < p + n ? e->w + e->n : p + n;
        if (a >= z) continue;
        ds_f32_to_bf16_run(e->b + (a - e->w), a, z - a);
        e->fresh += z - a;
    }
}

void ds_matmul_bf16_weights_epoch(int64_t epoch) {
    const char *off = getenv("DS_BF16_WEIGHT_COPIES"); /* "0": convert at every call (for A/B runs) */
    if (off && !strcmp(off, "0")) epoch = -1;
    pthread_mutex_lock(&wc.mu);
    if (epoch < 0) wc_clear();
    else if (epoch != wc.epoch) wc_new_epoch(epoch);
    wc.epoch = epoch < 0 ? -1 : epoch;
    pthread_mutex_unlock(&wc.mu);
}

/* the weight's BF16 copy for this epoch, or NULL without a cache */
static const uint16_t *weight_bf16(const float *w, int64_t n) {
    pthread_mutex_lock(&wc.mu);
    const int64_t ep = wc.epoch;
    if (ep < 0) {
        pthread_mutex_unlock(&wc.mu);
        return NULL;
    }
    if (2 * (wc.used + 1) > wc.cap) { /* grow: rehash at half load */
        wcache_entry **old = wc.slot;
        int64_t oc = wc.cap;
        wc.cap = oc ? 2 * oc : 256;
        wc.slot = ds_calloc((size_t)wc.cap, sizeof *wc.slot);
        for (int64_t i = 0; i < oc; i++)
            if (old[i]) wc_insert(old[i]);
        free(old);
    }
    size_t i = wc_hash(w, wc.cap);
    while (wc.slot[i] && !(wc.slot[i]->w == w && wc.slot[i]->n == n)) i = (i + 1) & (size_t)(wc.cap - 1);
    wcache_entry *e = wc.slot[i];
    if (!e) {
        e = ds_calloc(1, sizeof *e);
        e->w = w, e->n = n, e->epoch = -1;
        e->b = ds_aligned_alloc((size_t)(n > 0 ? n : 1) * sizeof(uint16_t));
        pthread_mutex_init(&e->mu, NULL);
        wc.slot[i] = e;
        wc.used++;
    }
    pthread_mutex_unlock(&wc.mu);
    pthread_mutex_lock(&e->mu);
    if (e->epoch != ep) {
        ds_f32_to_bf16_n(e->b, w, n);
        e->epoch = ep;
    }
    pthread_mutex_unlock(&e->mu);
    return e->b;
}

static const uint16_t *weight_to_bf16(const float *w, int64_t n, int cached) {
    const uint16_t *b = cached ? weight_bf16(w, n) : NULL;
    return b ? b : to_bf16(1, w, n);
}

typedef int (*gemm_fn)(float *, const uint16_t *, int, const uint16_t *, int, int64_t, int64_t, int64_t, int);

static void forward(gemm_fn gemm, float *out, const float *inp, const float *weight, const float *bias, int64_t N,
                    int64_t C, int64_t OC, int cached) {
    if (N <= 0) return;
    const uint16_t *x = to_bf16(0, inp, N * C), *w = weight_to_bf16(weight, OC * C, cached);
    DS_ASSERT(gemm(out, x, 0, w, 0, N, OC, C, 0) == 0); /* out (N, OC) = x · wᵀ */
    if (bias)
        for (int64_t n = 0; n < N; n++)
            for (int64_t o = 0; o < OC; o++) out[n * OC + o] += bias[o];
}

static void backward(gemm_fn gemm, float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int64_t N, int64_t C, int64_t OC, int acc, int cached) {
    if (N <= 0) return;
    uint16_t *dy = to_bf16(0, dout, N * OC);
    if (dinp) {
        const uint16_t *w = weight_to_bf16(weight, OC * C, cached);
        DS_ASSERT(gemm(dinp, dy, 0, w, 1, N, C, OC, acc) == 0); /* (N, C) = dy (N, OC) · w (OC, C) */
    }
    if (dweight) {
        uint16_t *x = to_bf16(2, inp, N * C);
        DS_ASSERT(gemm(dweight, dy, 1, x, 1, OC, C, N, 1) == 0); /* (OC, C) += dyᵀ · x */
    }
    if (dbias)
        for (int64_t n = 0; n < N; n++)
            for (int64_t o = 0; o < OC; o++) dbias[o] += dout[n * OC + o];
}

void ds_matmul_forward_bf16(float *out, const float *inp, const float *weight, const float *bias, int64_t N,
                            int64_t C, int64_t OC) {
    forward(ds_bf16_gemm, out, inp, weight, bias, N, C, OC, 1);
}
void ds_matmul_forward_bf16_ref(float *out, const float *inp, const float *weight, const float *bias, int64_t N,
                                int64_t C, int64_t OC) {
    forward(ds_bf16_gemm_ref, out, inp, weight, bias, N, C, OC, 0);
}
void ds_matmul_backward_bf16(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                             const float *weight, int64_t N, int64_t C, int64_t OC, int acc) {
    backward(ds_bf16_gemm, dinp, dweight, dbias, dout, inp, weight, N, C, OC, acc, 1);
}
void ds_matmul_backward_bf16_ref(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                 const float *weight, int64_t N, int64_t C, int64_t OC, int acc) {
    backward(ds_bf16_gemm_ref, dinp, dweight, dbias, dout, inp, weight, N, C, OC, acc, 0);
}
