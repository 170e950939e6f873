/*
 * swiglu_backward.c — backward of out = silu(g) ⊙ u, silu(g) = g·σ(g):
 *   du = dout ⊙ silu(g),  dg = dout ⊙ u ⊙ σ(g)·(1 + g·(1 − σ(g))).
 */
#include "backend/cpu/backward.h"
#include "backend/cpu/vmath.h"

#include <math.h>

void ds_swiglu_backward_ref(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                            int64_t N, int64_t I) {
    for (int64_t i = 0; i < N * I; i++) {
        double g = gate[i], s = 1.0 / (1.0 + exp(-g));
        dup[i] = (float)(dout[i] * g * s);
        dgate[i] = (float)(dout[i] * up[i] * s * (1.0 + g * (1.0 - s)));
    }
}

void ds_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, int64_t N,
                        int64_t I) {
    const int64_t n = N * I;
    const int64_t nc = (n + 255) / 256;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t c = 0; c < nc; c++) {
        int64_t i0 = c * 256, len = n - i0 < 256 ? n - i0 : 256;
        float sg[256];
        ds_vsigmoid(sg, gate + i0, len); /* vmath.h */
        #pragma omp simd
        for (int64_t j = 0; j < len; j++) {
            int64_t i = i0 + j;
            float g = gate[i], s = sg[j], d = dout[i], u = up[i];
            dup[i] = d * g * s;
            dgate[i] = d * u * s * (1.0f + g * (1.0f - s));
        }
    }
}
