/*
 * rope_tables.c — the RoPE cos/sin tables (doc §4.3): for position t and
 * frequency i, angle = float(t)·θ'_i in FP32, cos/sin taken in double,
 * rounded to float, × attention_factor.  A scalar reference (`*_ref`, the
 * oracle of tests/test_backend_ops.c) and an OpenMP version over positions;
 * the same per-element arithmetic, so they agree bit for bit.
 */
#include "backend/cpu/kernels.h"

#include <math.h>

void ds_rope_tables_ref(float *cos_t, float *sin_t, const float *inv_freq, float attn_factor, int64_t T,
                        int64_t h2) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < h2; i++) {
            float ang = (float)t * inv_freq[i];
            cos_t[t * h2 + i] = (float)cos((double)ang) * attn_factor;
            sin_t[t * h2 + i] = (float)sin((double)ang) * attn_factor;
        }
}

void ds_rope_tables(float *cos_t, float *sin_t, const float *inv_freq, float attn_factor, int64_t T, int64_t h2) {
#pragma omp parallel for schedule(static) if (T * h2 > 16384)
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < h2; i++) {
            float ang = (float)t * inv_freq[i];
            cos_t[t * h2 + i] = (float)cos((double)ang) * attn_factor;
            sin_t[t * h2 + i] = (float)sin((double)ang) * attn_factor;
        }
}
