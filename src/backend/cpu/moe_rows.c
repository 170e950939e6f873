/*
 * moe_rows.c — the row moves of the MoE layer (model.c): the permute that
 * gathers each token-slot's input row into expert-sorted order, and the
 * forward combine that sums the K expert outputs of a token weighted by its
 * router weights.  Each has a scalar reference (`*_ref`, plain loops, the
 * oracle of tests/test_backend_ops.c) and an OpenMP version that splits the
 * rows over threads; both do the same per-row arithmetic in the same order,
 * so they agree bit for bit.
 */
#include "backend/cpu/kernels.h"

#include <string.h>

void ds_moe_permute_ref(float *xs, const float *x, const int32_t *order, int64_t N, int64_t K, int64_t H) {
    for (int64_t s = 0; s < N * K; s++) {
        const float *src = x + (int64_t)(order[s] / K) * H;
        for (int64_t i = 0; i < H; i++) xs[s * H + i] = src[i];
    }
}

void ds_moe_permute(float *xs, const float *x, const int32_t *order, int64_t N, int64_t K, int64_t H) {
#pragma omp parallel for schedule(static) if (N * K * H > 65536)
    for (int64_t s = 0; s < N * K; s++)
        memcpy(xs + s * H, x + (int64_t)(order[s] / K) * H, (size_t)H * sizeof(float));
}

void ds_moe_combine_forward_ref(float *y, const float *e_out, const float *w, const int32_t *pos,
                                int64_t N, int64_t K, int64_t H) {
    for (int64_t n = 0; n < N; n++) {
        float *yn = y + n * H;
        for (int64_t i = 0; i < H; i++) yn[i] = 0;
        for (int64_t k = 0; k < K; k++) {
            const float *src = e_out + (int64_t)pos[n * K + k] * H;
            float wk = w[n * K + k];
            for (int64_t i = 0; i < H; i++) yn[i] += wk * src[i];
        }
    }
}

void ds_moe_combine_forward(float *y, const float *e_out, const float *w, const int32_t *pos,
                            int64_t N, int64_t K, int64_t H) {
#pragma omp parallel for schedule(static) if (N * K * H > 65536)
    for (int64_t n = 0; n < N; n++) {
        float *yn = y + n * H;
        for (int64_t i = 0; i < H; i++) yn[i] = 0;
        for (int64_t k = 0; k < K; k++) {
            const float *src = e_out + (int64_t)pos[n * K + k] * H;
            float wk = w[n * K + k];
            for (int64_t i = 0; i < H; i++) yn[i] += wk * src[i];
        }
    }
}
