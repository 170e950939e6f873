/*
 * rope_backward.c — backward of the rotary embedding (rope.c): each pair is
 * rotated by angle a with y = R(a)·x (cos and sin scaled by the same
 * attention_factor f), so dx = R(a)ᵀ·dy = f·rotation by −a.  In place on dx.
 */
#include "backend/cpu/backward.h"

void ds_rope_backward_ref(float *dx, const float *cos_t, const float *sin_t, int64_t B, int64_t T, int64_t nv,
                          int64_t ld, int64_t off, int64_t dr, int halves) {
    const int64_t h = dr / 2;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t v = 0; v < nv; v++) {
                float *x = dx + ((b * T + t) * nv + v) * ld + off;
                for (int64_t i = 0; i < h; i++) {
                    int64_t i0 = halves ? i : 2 * i, i1 = halves ? i + h : 2 * i + 1;
                    float c = cos_t[t * h + i], s = sin_t[t * h + i];
                    float g0 = x[i0], g1 = x[i1];
                    /* forward: y0 = c x0 − s x1, y1 = s x0 + c x1 */
                    x[i0] = c * g0 + s * g1;
                    x[i1] = -s * g0 + c * g1;
                }
            }
}

void ds_rope_backward(float *dx, const float *cos_t, const float *sin_t, int64_t B, int64_t T, int64_t nv,
                      int64_t ld, int64_t off, int64_t dr, int halves) {
    const int64_t h = dr / 2, BT = B * T;
#pragma omp parallel for schedule(static) if (BT * nv * dr > 65536)
    for (int64_t n = 0; n < BT; n++) {
        int64_t t = n % T;
        const float *ct = cos_t + t * h, *st = sin_t + t * h;
        for (int64_t v = 0; v < nv; v++) {
            float *x = dx + (n * nv + v) * ld + off;
            if (halves) {
                for (int64_t i = 0; i < h; i++) {
                    float g0 = x[i], g1 = x[i + h];
                    x[i] = ct[i] * g0 + st[i] * g1;
                    x[i + h] = ct[i] * g1 - st[i] * g0;
                }
            } else {
                for (int64_t i = 0; i < h; i++) {
                    float g0 = x[2 * i], g1 = x[2 * i + 1];
                    x[2 * i] = ct[i] * g0 + st[i] * g1;
                    x[2 * i + 1] = ct[i] * g1 - st[i] * g0;
                }
            }
        }
    }
}
