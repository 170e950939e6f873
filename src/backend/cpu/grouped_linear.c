/*
 * grouped_linear.c — the MoE expert GEMMs (ops entries grouped_linear_forward
 * / grouped_linear_backward): expert e's counts[e] rows start at row
 * offsets[e] of the expert-sorted inputs, and each expert's rows go through
 * one linear entry of the table `self` (so a wrapped table — FP8 capture, a
 * counting wrapper — sees every expert GEMM, and the table's precision
 * applies).  The fast versions run the experts in parallel, each GEMM then
 * single-threaded (nested regions inside the kernels are inactive): in the
 * forward when there are at least 64 rows per expert on average or at
 * least as many experts with rows as threads (a decode step: one region
 * instead of one per expert GEMM; otherwise splitting inside each GEMM is
 * better), in the backward always — one parallel region per call.  Every expert writes only its own rows and its
 * own weight gradient.  The references run the experts in order.
 */
#include "backend/ops.h"

#include <omp.h>
#include <stdlib.h>

#include "base/base.h"

static void fwd_one(const struct ds_ops *self, float *out, const float *inp, const float *const *w,
                    const ds_fp8w *const *w8, const int64_t *counts, const int64_t *offsets, int64_t e, int64_t C,
                    int64_t OC) {
    const int64_t o = offsets[e], n = counts[e];
    if (!n) return;
    const ds_fp8w *q = w8 ? w8[e] : NULL;
    if (q) self->linear_fp8w_forward(out + o * OC, inp + o * C, q, NULL, n, C, OC);
    else self->linear_forward(out + o * OC, inp + o * C, w[e], NULL, n, C, OC);
}

void ds_grouped_linear_forward_ref(const struct ds_ops *self, float *out, const float *inp, const float *const *w,
                                   const ds_fp8w *const *w8, const int64_t *counts, const int64_t *offsets, int64_t E,
                                   int64_t C, int64_t OC) {
    for (int64_t e = 0; e < E; e++) fwd_one(self, out, inp, w, w8, counts, offsets, e, C, OC);
}

/* The experts by decreasing row count (ties by index), so the dynamic
 * schedule hands out the long GEMMs first and the threads end together
 * (longest-processing-time first); each expert's result does not depend on
 * the order.  order must hold E entries. */
static void by_rows_desc(int64_t *order, const int64_t *counts, int64_t E) {
    for (int64_t i = 0; i < E; i++) {
        int64_t e = i, j = i;
        for (; j > 0 && counts[order[j - 1]] < counts[e]; j--) order[j] = order[j - 1];
        order[j] = e;
    }
}

enum { ORDER_STACK = 256 };

void ds_grouped_linear_forward(const struct ds_ops *self, float *out, const float *inp, const float *const *w,
                               const ds_fp8w *const *w8, const int64_t *counts, const int64_t *offsets, int64_t E,
                               int64_t C, int64_t OC) {
    int64_t active = 0; /* experts with rows */
    for (int64_t e = 0; e < E; e++) active += counts[e] > 0;
    const int par = E > 0 && (offsets[E] >= 64 * E || active >= omp_get_max_threads());
    int64_t stack[ORDER_STACK], *order = E <= ORDER_STACK ? stack : ds_malloc((size_t)E * sizeof(int64_t));
    by_rows_desc(order, counts, E);
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int64_t i = 0; i < E; i++) fwd_one(self, out, inp, w, w8, counts, offsets, order[i], C, OC);
    if (order != stack) free(order);
}

static void bwd_one(const struct ds_ops *self, float *dinp, float *const *dw, const float *dout, const float *inp,
                    const float *const *w, const int64_t *counts, const int64_t *offsets, int64_t e, int64_t C,
                    int64_t OC, int acc) {
    const int64_t o = offsets[e], n = counts[e];
    if (!n) return;
    self->linear_backward(dinp ? dinp + o * C : NULL, dw[e], NULL, dout + o * OC, inp + o * C, w[e], n, C, OC, acc);
}

void ds_grouped_linear_backward_ref(const struct ds_ops *self, float *dinp, float *const *dw, const float *dout,
                                    const float *inp, const float *const *w, const int64_t *counts,
                                    const int64_t *offsets, int64_t E, int64_t C, int64_t OC, int acc) {
    for (int64_t e = 0; e < E; e++) bwd_one(self, dinp, dw, dout, inp, w, counts, offsets, e, C, OC, acc);
}

void ds_grouped_linear_backward(const struct ds_ops *self, float *dinp, float *const *dw, const float *dout,
                                const float *inp, const float *const *w, const int64_t *counts,
                                const int64_t *offsets, int64_t E, int64_t C, int64_t OC, int acc) {
    int64_t stack[ORDER_STACK], *order = E <= ORDER_STACK ? stack : ds_malloc((size_t)E * sizeof(int64_t));
    by_rows_desc(order, counts, E);
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < E; i++) bwd_one(self, dinp, dw, dout, inp, w, counts, offsets, order[i], C, OC, acc);
    if (order != stack) free(order);
}
