/*
 * matmul_bf16.c — BF16-input linear layer forward and backward
 * (matmul_bf16.h) on top of the BF16 GEMM of gemm_bf16.c.
 */
#include "backend/cpu/matmul_bf16.h"

#include "base/base.h"
#include "backend/cpu/gemm_bf16.h"
#include "backend/cpu/wcache.h"


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

static void convert_bf16(void *dst, const float *w, int64_t rows, int64_t cols) {
    ds_f32_to_bf16_n(dst, w, rows * cols);
}

/* the weight's BF16 copy for this epoch (wcache.h), or converted now */
static const uint16_t *weight_to_bf16(const float *w, int64_t rows, int64_t cols, int cached) {
    const uint16_t *b =
        cached ? ds_wcache_get(DS_WCACHE_BF16, w, rows, cols, (size_t)(rows * cols) * sizeof(uint16_t), convert_bf16)
               : NULL;
    return b ? b : to_bf16(1, w, rows * cols);
}

typedef int (*gemm_fn)(float *, const uint16_t *, int, const uint16_t *, int, int64_t, int64_t, int64_t, int);

static void forward(gemm_fn gemm, float *out, const float *inp, const float *weight, const float *bias, int64_t N,
                    int64_t C, int64_t OC, int cached) {
    if (N <= 0) return;
    const uint16_t *x = to_bf16(0, inp, N * C), *w = weight_to_bf16(weight, OC, C, cached);
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
        const uint16_t *w = weight_to_bf16(weight, OC, C, cached);
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
