/*
 * swiglu_backward.c — backward of out = silu(g) ⊙ u, silu(g) = g·σ(g):
 *   du = dout ⊙ silu(g),  dg = dout ⊙ u ⊙ σ(g)·(1 + g·(1 − σ(g))).
 */
#include "backend/cpu/backward.h"

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
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i], s = 1.0f / (1.0f + expf(-g)), d = dout[i];
        dup[i] = d * g * s;
        dgate[i] = d * up[i] * s * (1.0f + g * (1.0f - s));
    }
}
