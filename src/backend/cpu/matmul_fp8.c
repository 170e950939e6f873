/*
 * matmul_fp8.c — FP8 linear layer forward and backward (matmul_fp8.h) on top
 * of ds_fp8_linear_* (backend/cpu/fp8_linear.h), with bias, input-gradient
 * accumulation and a grow-only per-thread workspace.
 */
#include "backend/cpu/matmul_fp8.h"

#include "base/base.h"
#include "backend/cpu/fp8_linear.h"

/* Grow-only per-thread scratch: [0] quantization workspace, [1] the FP32
 * input gradient when it must be added (acc=1) rather than stored. */
static _Thread_local void *scratch[2];
static _Thread_local size_t scratch_n[2];

static void *grow(int slot, size_t bytes) { return ds_scratch(&scratch[slot], &scratch_n[slot], bytes); }

void ds_linear_forward_fp8(float *out, const float *inp, const float *weight, const float *bias, int64_t N,
                           int64_t C, int64_t OC) {
    if (N <= 0) return;
    void *ws = grow(0, ds_fp8_linear_workspace(N, OC, C));
    DS_ASSERT(ds_fp8_linear_forward(out, inp, weight, N, OC, C, ws) == 0); /* (N, OC) = X (N, C) · W (OC, C)ᵀ */
    if (bias)
        for (int64_t n = 0; n < N; n++)
            for (int64_t o = 0; o < OC; o++) out[n * OC + o] += bias[o];
}

void ds_linear_backward_fp8(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                            const float *weight, int64_t N, int64_t C, int64_t OC, int acc) {
    if (N <= 0) return;
    void *ws = grow(0, ds_fp8_linear_workspace(N, OC, C));
    float *dx = dinp;
    if (dinp && acc) dx = grow(1, (size_t)(N * C) * sizeof(float));
    /* dX (N, C) = dY (N, OC) · W (OC, C);  dW (OC, C) += dYᵀ · X */
    DS_ASSERT(ds_fp8_linear_backward(dx, dweight, dout, inp, weight, N, OC, C, ws) == 0);
    if (dinp && acc)
        for (int64_t i = 0; i < N * C; i++) dinp[i] += dx[i];
    if (dbias)
        for (int64_t n = 0; n < N; n++)
            for (int64_t o = 0; o < OC; o++) dbias[o] += dout[n * OC + o];
}
