/*
 * linear_fp8w.c — the FP8-weight linear (linear_fp8w.h): act_quant 1x128 of
 * the input, then the block-scaled FP8 GEMM with FP32 promotion, then bias.
 * A BF16-resident descriptor (w->b16) goes to linear_bf16w.c.
 */
#include "backend/cpu/linear_fp8w.h"

#include <stdlib.h>

#include "base/base.h"
#include "backend/cpu/gemm_fp8.h"
#include "num/quant.h"

static _Thread_local uint8_t *ws_q;
static _Thread_local float *ws_s;
static _Thread_local size_t ws_q_cap, ws_s_cap;

void ds_fp8w_workspace(int64_t N, int64_t C, uint8_t **q, float **s) {
    size_t nq = (size_t)(N * C), ns = (size_t)(N * ds_ceil_div(C, DS_QUANT_GROUP));
    if (nq > ws_q_cap) {
        free(ws_q);
        ws_q = ds_malloc(nq);
        ws_q_cap = nq;
    }
    if (ns > ws_s_cap) {
        free(ws_s);
        ws_s = ds_malloc(ns * sizeof(float));
        ws_s_cap = ns;
    }
    *q = ws_q;
    *s = ws_s;
}

static void add_bias(float *out, const float *bias, int64_t N, int64_t OC) {
    if (!bias) return;
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < OC; o++) out[n * OC + o] += bias[o];
}

static void linear(float *out, const float *inp, const ds_fp8w *w, const float *bias, int64_t N, int64_t C,
                   int64_t OC, int ref) {
    if (N <= 0 || OC <= 0) return;
    uint8_t *q;
    float *s;
    ds_fp8w_workspace(N, C, &q, &s);
    ds_quant_opts o = ds_quant_defaults(DS_QUANT_TILE_1x128);
    /* sizes and layouts are fixed by the caller (checked at load): these cannot fail */
    (void)ds_quantize(q, s, inp, N, C, &o);
    if (ref) (void)ds_fp8_gemm_ref(out, q, s, w->q, w->scale, N, OC, C, NULL);
    else (void)ds_fp8_gemm(out, q, s, w->q, w->scale, N, OC, C, NULL);
    add_bias(out, bias, N, OC);
}

void ds_linear_fp8w_forward(float *out, const float *inp, const ds_fp8w *w, const float *bias, int64_t N, int64_t C,
                            int64_t OC) {
    if (w->b16) {
        ds_linear_bf16w_forward(out, inp, w, bias, N, C, OC);
        return;
    }
    linear(out, inp, w, bias, N, C, OC, 0);
}

void ds_linear_fp8w_forward_ref(float *out, const float *inp, const ds_fp8w *w, const float *bias, int64_t N,
                                int64_t C, int64_t OC) {
    if (w->b16) {
        ds_linear_bf16w_forward_ref(out, inp, w, bias, N, C, OC);
        return;
    }
    linear(out, inp, w, bias, N, C, OC, 1);
}
