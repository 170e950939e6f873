/*
 * residual.c — elementwise residual add: out = a + b (out may alias a or b).
 */
#include "backend/cpu/kernels.h"

void ds_residual_forward_ref(float *out, const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void ds_residual_forward(float *out, const float *a, const float *b, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}
