/*
 * swiglu.c — SwiGLU activation (doc §2.2): out = silu(gate) ⊙ up,
 * silu(z) = z·sigmoid(z).  Inputs are saved by the caller for backward.
 */
#include "backend/cpu/kernels.h"

#include <math.h>

void ds_swiglu_forward_ref(float *out, const float *gate, const float *up, int64_t N, int64_t I) {
    for (int64_t i = 0; i < N * I; i++) {
        double g = gate[i];
        out[i] = (float)(g / (1.0 + exp(-g)) * up[i]);
    }
}

void ds_swiglu_forward(float *out, const float *gate, const float *up, int64_t N, int64_t I) {
    int64_t n = N * I;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}
