/*
 * rope.c — rotary position embedding on interleaved pairs (doc §4.3), the
 * convention of DeepSeek's released weights: (x[2i], x[2i+1]) is rotated by
 * φ = pos·θ'_i (YaRN-corrected inverse frequencies, §4.4):
 *   y[2i]   = x[2i]·cos φ − x[2i+1]·sin φ
 *   y[2i+1] = x[2i]·sin φ + x[2i+1]·cos φ
 * With halves = 1 (HF `rope_interleave: false`, weights already permuted to
 * the NeoX layout) the pairs are (x[i], x[i + dr/2]) instead.
 * Applied in place to the rotary slice of each vector; the tables come from
 * ds_rope_setup (model.c) with attention_factor folded in.
 */
#include "backend/cpu/kernels.h"

void ds_rope_forward_ref(float *x, const float *cos_t, const float *sin_t,
                         int64_t B, int64_t T, int64_t nv, int64_t ld, int64_t off, int64_t dr, int halves) {
    int64_t h = dr / 2, s0 = halves ? 1 : 2, s1 = halves ? h : 1; /* x0 = p[s0*i], x1 = p[s0*i + s1] */
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t v = 0; v < nv; v++) {
                float *p = x + ((b * T + t) * nv + v) * ld + off;
                for (int64_t i = 0; i < h; i++) {
                    float c = cos_t[t * h + i], s = sin_t[t * h + i];
                    float x0 = p[s0 * i], x1 = p[s0 * i + s1];
                    p[s0 * i] = x0 * c - x1 * s;
                    p[s0 * i + s1] = x1 * c + x0 * s;
                }
            }
}

void ds_rope_forward(float *x, const float *cos_t, const float *sin_t,
                     int64_t B, int64_t T, int64_t nv, int64_t ld, int64_t off, int64_t dr, int halves) {
    int64_t h = dr / 2;
    if (halves) {
        ds_rope_forward_ref(x, cos_t, sin_t, B, T, nv, ld, off, dr, 1);
        return;
    }
#pragma omp parallel for schedule(static) if (B * T * nv * dr > 32768)
    for (int64_t bt = 0; bt < B * T; bt++) {
        int64_t t = bt % T;
        const float *ct = cos_t + t * h, *st = sin_t + t * h;
        for (int64_t v = 0; v < nv; v++) {
            float *p = x + (bt * nv + v) * ld + off;
#pragma omp simd
            for (int64_t i = 0; i < h; i++) {
                float x0 = p[2 * i], x1 = p[2 * i + 1];
                p[2 * i] = x0 * ct[i] - x1 * st[i];
                p[2 * i + 1] = x1 * ct[i] + x0 * st[i];
            }
        }
    }
}
