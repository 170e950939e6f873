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
 * so experts converted from a parallel loop do not wait on each other. */
typedef struct {
    const float *w;
    int64_t n, epoch;
    uint16_t *b;
    pthread_mutex_t mu;
} wcache_entry;

static struct {
    pthread_mutex_t mu;
    int64_t epoch; /* < 0: no cache */
    wcache_entry **slot;
    int64_t cap, used;
} wc = {PTHREAD_MUTEX_INITIALIZER, -1, NULL, 0, 0};

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
    wc.slot = NULL, wc.cap = wc.used = 0;
}

void ds_matmul_bf16_weights_epoch(int64_t epoch) {
    const char *off = getenv("DS_BF16_WEIGHT_COPIES"); /* "0": convert at every call (for A/B runs) */
    if (off && !strcmp(off, "0")) epoch = -1;
    pthread_mutex_lock(&wc.mu);
    if (epoch < 0) wc_clear();
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
