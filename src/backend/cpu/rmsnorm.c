/*
 * rmsnorm.c — RMSNorm forward (doc §2.1): y = w ⊙ (x · rsqrt(mean(x²) + eps)),
 * computed as HF does in FP32: normalise first, then multiply by the weight.
 * rstd (one per row) is saved for the backward pass.
 */
#include "backend/cpu/kernels.h"

#include <math.h>

void ds_rmsnorm_forward_ref(float *out, float *rstd, const float *inp, const float *weight,
                            int64_t N, int64_t C, int64_t ld_out, int64_t ld_in, float eps) {
    for (int64_t n = 0; n < N; n++) {
        const float *x = inp + n * ld_in;
        double ss = 0;
        for (int64_t c = 0; c < C; c++) ss += (double)x[c] * x[c];
        float r = (float)(1.0 / sqrt(ss / (double)C + (double)eps));
        if (rstd) rstd[n] = r;
        for (int64_t c = 0; c < C; c++) out[n * ld_out + c] = weight[c] * (x[c] * r);
    }
}

void ds_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight,
                        int64_t N, int64_t C, int64_t ld_out, int64_t ld_in, float eps) {
#pragma omp parallel for schedule(static) if (N * C > 16384)
    for (int64_t n = 0; n < N; n++) {
        const float *x = inp + n * ld_in;
        float *y = out + n * ld_out;
        float ss = 0;
#pragma omp simd reduction(+ : ss)
        for (int64_t c = 0; c < C; c++) ss += x[c] * x[c];
        float r = 1.0f / sqrtf(ss / (float)C + eps);
        if (rstd) rstd[n] = r;
#pragma omp simd
        for (int64_t c = 0; c < C; c++) y[c] = weight[c] * (x[c] * r);
    }
}
