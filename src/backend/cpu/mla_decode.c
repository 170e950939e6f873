/*
 * mla_decode.c — the latent-cache entries of decode (decode.h): the cache
 * append and MLA's absorbed attention over the cache (doc §4.5, infer.h).
 * The CPU attention parallelises over (sequence, head, query) with per-thread
 * scratch for the scores; the reference runs the same sums in plain order.
 */
#include "backend/cpu/decode.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/gemv.h"
#include "base/base.h"

void ds_kv_append_ref(float *ckv, float *kpe, const float *c, const float *kva, int64_t B, int64_t n, int64_t pos,
                      int64_t Lmax, int64_t rkv, int64_t dr) {
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < n; i++) {
            const int64_t r = b * n + i, t = b * Lmax + pos + i;
            for (int64_t j = 0; j < rkv; j++) ckv[t * rkv + j] = c[r * rkv + j];
            for (int64_t j = 0; j < dr; j++) kpe[t * dr + j] = kva[r * (rkv + dr) + rkv + j];
        }
}

void ds_kv_append(float *ckv, float *kpe, const float *c, const float *kva, int64_t B, int64_t n, int64_t pos,
                  int64_t Lmax, int64_t rkv, int64_t dr) {
    for (int64_t b = 0; b < B; b++) {
        memcpy(ckv + (b * Lmax + pos) * rkv, c + b * n * rkv, (size_t)(n * rkv) * sizeof(float));
        for (int64_t i = 0; i < n; i++)
            memcpy(kpe + (b * Lmax + pos + i) * dr, kva + (b * n + i) * (rkv + dr) + rkv, (size_t)dr * sizeof(float));
    }
}

/* grow-only scratch of the calling thread */
static float *scratch(float **buf, size_t *cap, size_t n) {
    if (n > *cap) {
        free(*buf);
        *buf = ds_malloc(n * sizeof(float));
        *cap = n;
    }
    return *buf;
}
static _Thread_local float *qabs_buf, *score_buf;
static _Thread_local size_t qabs_cap, score_cap;

void ds_mla_absorbed_attention(float *att, const float *q, const float *ckv, const float *kpe, const float *kv_b,
                               int64_t B, int64_t n, int64_t pos, int64_t Lmax, int64_t nh, int64_t dn, int64_t dv,
                               int64_t dr, int64_t rkv, float scale) {
    const int64_t N = B * n, dq = dn + dr;
    if (N <= 0 || nh <= 0) return;
    float *qabs = scratch(&qabs_buf, &qabs_cap, (size_t)(N * nh * rkv));
    /* q_abs[r,h,:] = Σ_d q_nope[r,h,d] · W_UK_h[d,:]  (W_UK_h (dn, rkv) rows of kv_b) */
#pragma omp parallel for schedule(static) if (N * nh * dn * rkv > 65536)
    for (int64_t rh = 0; rh < N * nh; rh++) {
        const int64_t h = rh % nh;
        const float *qn = q + rh * dq;
        const float *w = kv_b + h * (dn + dv) * rkv;
        float *qa = qabs + rh * rkv;
        for (int64_t j = 0; j < rkv; j++) qa[j] = 0;
        for (int64_t d = 0; d < dn; d++) ds_axpy_f32(qa, qn[d], w + d * rkv, rkv);
    }
    /* per (sequence, head, query): scores over the cached positions 0..t, softmax, latent mix, W_UV */
    const int64_t work = B * nh * n;
#pragma omp parallel for schedule(dynamic, 1) if (work > 1 && (pos + n) * work * rkv > 32768)
    for (int64_t w = 0; w < work; w++) {
        const int64_t b = w / (nh * n), h = (w / n) % nh, i = w % n, t = pos + i, r = b * n + i;
        float *s = scratch(&score_buf, &score_cap, (size_t)(t + 1 + rkv)), *ctx = s + t + 1;
        const float *qa = qabs + (r * nh + h) * rkv, *qpe = q + (r * nh + h) * dq + dn;
        const float *C = ckv + b * Lmax * rkv, *KP = kpe + b * Lmax * dr;
        float mx = -INFINITY;
        for (int64_t j = 0; j <= t; j++) {
            const float *cj = C + j * rkv, *kj = KP + j * dr;
            float v = (ds_dot_f32(qa, cj, rkv) + ds_dot_f32(qpe, kj, dr)) * scale;
            s[j] = v;
            if (v > mx) mx = v;
        }
        float sum = 0;
        for (int64_t j = 0; j <= t; j++) {
            float ev = expf(s[j] - mx);
            s[j] = ev;
            sum += ev;
        }
        for (int64_t k = 0; k < rkv; k++) ctx[k] = 0;
        for (int64_t j = 0; j <= t; j++) ds_axpy_f32(ctx, s[j], C + j * rkv, rkv);
        const float inv = 1.0f / sum;
        for (int64_t k = 0; k < rkv; k++) ctx[k] *= inv;
        /* o_h = W_UV_h · x   (W_UV_h (dv, rkv)) */
        const float *wv = kv_b + (h * (dn + dv) + dn) * rkv;
        float *o = att + r * nh * dv + h * dv;
        for (int64_t v = 0; v < dv; v++) o[v] = ds_dot_f32(wv + v * rkv, ctx, rkv);
    }
}

void ds_mla_absorbed_attention_ref(float *att, const float *q, const float *ckv, const float *kpe, const float *kv_b,
                                   int64_t B, int64_t n, int64_t pos, int64_t Lmax, int64_t nh, int64_t dn,
                                   int64_t dv, int64_t dr, int64_t rkv, float scale) {
    const int64_t dq = dn + dr;
    float *qa = ds_malloc((size_t)(rkv + 1) * sizeof(float)), *ctx = ds_malloc((size_t)(rkv + 1) * sizeof(float));
    float *s = ds_malloc((size_t)(pos + n + 1) * sizeof(float));
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < nh; h++)
            for (int64_t i = 0; i < n; i++) {
                const int64_t r = b * n + i, t = pos + i;
                const float *qn = q + (r * nh + h) * dq, *qpe = qn + dn;
                const float *wk = kv_b + h * (dn + dv) * rkv, *wv = wk + dn * rkv;
                for (int64_t j = 0; j < rkv; j++) {
                    float a = 0;
                    for (int64_t d = 0; d < dn; d++) a += qn[d] * wk[d * rkv + j];
                    qa[j] = a;
                }
                float mx = -INFINITY;
                for (int64_t j = 0; j <= t; j++) {
                    const float *cj = ckv + (b * Lmax + j) * rkv, *kj = kpe + (b * Lmax + j) * dr;
                    float a = 0, p = 0;
                    for (int64_t k = 0; k < rkv; k++) a += qa[k] * cj[k];
                    for (int64_t k = 0; k < dr; k++) p += qpe[k] * kj[k];
                    s[j] = (a + p) * scale;
                    if (s[j] > mx) mx = s[j];
                }
                float sum = 0;
                for (int64_t j = 0; j <= t; j++) {
                    s[j] = expf(s[j] - mx);
                    sum += s[j];
                }
                for (int64_t k = 0; k < rkv; k++) {
                    float a = 0;
                    for (int64_t j = 0; j <= t; j++) a += s[j] * ckv[(b * Lmax + j) * rkv + k];
                    ctx[k] = a / sum;
                }
                float *o = att + r * nh * dv + h * dv;
                for (int64_t v = 0; v < dv; v++) {
                    float a = 0;
                    for (int64_t k = 0; k < rkv; k++) a += wv[v * rkv + k] * ctx[k];
                    o[v] = a;
                }
            }
    free(qa);
    free(ctx);
    free(s);
}
