/*
 * gemv.c — out = inp · weightᵀ (+ bias) for the few rows of a decode step
 * (N ≤ DS_GEMV_MAX_ROWS).  BLAS sgemm packs the whole weight matrix on every
 * call, which for one token costs more than the multiply; here each weight
 * row is streamed once and dotted with the N input rows (AVX2/FMA, 8 lanes ×
 * 4 accumulators, scalar fallback), OpenMP over output features.
 * out (N, OC), inp (N, C), weight (OC, C), bias (OC) or NULL.  Reference:
 * ds_matmul_forward_ref (kernels/matmul.c); tests/test_infer.c compares.
 */
#include "infer/gemv.h"

void ds_gemv_forward(float *out, const float *inp, const float *weight, const float *bias, int64_t N, int64_t C,
                     int64_t OC) {
#pragma omp parallel for schedule(static) if (OC * C >= 65536)
    for (int64_t o = 0; o < OC; o++) {
        const float *w = weight + o * C;
        const float b = bias ? bias[o] : 0.0f;
        for (int64_t n = 0; n < N; n++) out[n * OC + o] = ds_dot_f32(inp + n * C, w, C) + b;
    }
}
