/*
 * swiglu.c — SwiGLU activation (doc §2.2): out = silu(gate) ⊙ up,
 * silu(z) = z·sigmoid(z).  Inputs are saved by the caller for backward.
 */
#include "backend/cpu/kernels.h"
#include "backend/cpu/vmath.h"

#include <math.h>

void ds_swiglu_forward_ref(float *out, const float *gate, const float *up, int64_t N, int64_t I) {
    for (int64_t i = 0; i < N * I; i++) {
        double g = gate[i];
        out[i] = (float)(g / (1.0 + exp(-g)) * up[i]);
    }
}

void ds_swiglu_forward(float *out, const float *gate, const float *up, int64_t N, int64_t I) {
    int64_t n = N * I;
    /* chunks of 256: the vector sigmoid (vmath.h) into a local buffer, then
     * g·σ(g)·u (out may alias gate or up) */
    const int64_t nc = (n + 255) / 256;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t c = 0; c < nc; c++) {
        int64_t i0 = c * 256, len = n - i0 < 256 ? n - i0 : 256;
        float sg[256];
        ds_vsigmoid(sg, gate + i0, len);
        #pragma omp simd
        for (int64_t i = 0; i < len; i++) out[i0 + i] = gate[i0 + i] * sg[i] * up[i0 + i];
    }
}
