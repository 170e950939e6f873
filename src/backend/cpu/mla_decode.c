/*
 * mla_decode.c — the latent-cache entries of decode (decode.h): the cache
 * append and MLA's absorbed attention over the cache (doc §4.5, infer.h).
 * The CPU attention parallelises over (sequence, head, query) with per-thread
 * scratch for the scores; the reference runs the same sums in plain order.
 * Each sequence may sit at its own position in its own cache row (pos_b,
 * row_b: continuous batching), and rope_pos_forward rotates it there.
 */
#include "backend/cpu/decode.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/gemv.h"
#include "backend/cpu/kernels.h"
#include "base/base.h"

/* where sequence b's tokens go: position p0 of cache row row */
#define SEQ_POS(b) (pos_b ? pos_b[b] : pos)
#define SEQ_ROW(b) (row_b ? row_b[b] : (b))

void ds_kv_append_ref(float *ckv, float *kpe, const float *c, const float *kva, int64_t B, int64_t n, int64_t pos,
                      int64_t Lmax, int64_t rkv, int64_t dr, const int64_t *pos_b, const int64_t *row_b) {
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < n; i++) {
            const int64_t r = b * n + i, t = SEQ_ROW(b) * Lmax + SEQ_POS(b) + i;
            for (int64_t j = 0; j < rkv; j++) ckv[t * rkv + j] = c[r * rkv + j];
            for (int64_t j = 0; j < dr; j++) kpe[t * dr + j] = kva[r * (rkv + dr) + rkv + j];
        }
}

void ds_kv_append(float *ckv, float *kpe, const float *c, const float *kva, int64_t B, int64_t n, int64_t pos,
                  int64_t Lmax, int64_t rkv, int64_t dr, const int64_t *pos_b, const int64_t *row_b) {
    for (int64_t b = 0; b < B; b++) {
        const int64_t t0 = SEQ_ROW(b) * Lmax + SEQ_POS(b);
        memcpy(ckv + t0 * rkv, c + b * n * rkv, (size_t)(n * rkv) * sizeof(float));
        for (int64_t i = 0; i < n; i++)
            memcpy(kpe + (t0 + i) * dr, kva + (b * n + i) * (rkv + dr) + rkv, (size_t)dr * sizeof(float));
    }
}

/* grow-only scratch of the calling thread */
static _Thread_local void *qabs_buf, *score_buf;
static _Thread_local size_t qabs_cap, score_cap;

void ds_mla_absorbed_attention(float *att, const float *q, const float *ckv, const float *kpe, const float *kv_b,
                               int64_t B, int64_t n, int64_t pos, int64_t Lmax, int64_t nh, int64_t dn, int64_t dv,
                               int64_t dr, int64_t rkv, float scale, const int64_t *pos_b, const int64_t *row_b) {
    const int64_t N = B * n, dq = dn + dr;
    if (N <= 0 || nh <= 0) return;
    float *qabs = ds_scratch(&qabs_buf, &qabs_cap, (size_t)(N * nh * rkv) * sizeof(float));
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
    int64_t span = pos + n; /* the longest prefix (sets the parallel threshold only) */
    for (int64_t b = 0; pos_b && b < B; b++)
        if (pos_b[b] + n > span) span = pos_b[b] + n;
#pragma omp parallel for schedule(dynamic, 1) if (work > 1 && span * work * rkv > 32768)
    for (int64_t w = 0; w < work; w++) {
        const int64_t b = w / (nh * n), h = (w / n) % nh, i = w % n, t = SEQ_POS(b) + i, r = b * n + i;
        float *s = ds_scratch(&score_buf, &score_cap, (size_t)(t + 1 + rkv) * sizeof(float)), *ctx = s + t + 1;
        const float *qa = qabs + (r * nh + h) * rkv, *qpe = q + (r * nh + h) * dq + dn;
        const float *C = ckv + SEQ_ROW(b) * Lmax * rkv, *KP = kpe + SEQ_ROW(b) * Lmax * dr;
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
                                   int64_t dv, int64_t dr, int64_t rkv, float scale, const int64_t *pos_b,
                                   const int64_t *row_b) {
    const int64_t dq = dn + dr;
    int64_t span = pos + n;
    for (int64_t b = 0; pos_b && b < B; b++)
        if (pos_b[b] + n > span) span = pos_b[b] + n;
    float *qa = ds_malloc((size_t)(rkv + 1) * sizeof(float)), *ctx = ds_malloc((size_t)(rkv + 1) * sizeof(float));
    float *s = ds_malloc((size_t)(span + 1) * sizeof(float));
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < nh; h++)
            for (int64_t i = 0; i < n; i++) {
                const int64_t r = b * n + i, t = SEQ_POS(b) + i, cr = SEQ_ROW(b);
                const float *qn = q + (r * nh + h) * dq, *qpe = qn + dn;
                const float *wk = kv_b + h * (dn + dv) * rkv, *wv = wk + dn * rkv;
                for (int64_t j = 0; j < rkv; j++) {
                    float a = 0;
                    for (int64_t d = 0; d < dn; d++) a += qn[d] * wk[d * rkv + j];
                    qa[j] = a;
                }
                float mx = -INFINITY;
                for (int64_t j = 0; j <= t; j++) {
                    const float *cj = ckv + (cr * Lmax + j) * rkv, *kj = kpe + (cr * Lmax + j) * dr;
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
                    for (int64_t j = 0; j <= t; j++) a += s[j] * ckv[(cr * Lmax + j) * rkv + k];
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

void ds_rope_pos_forward(float *x, const float *cos_t, const float *sin_t, const int64_t *pos_b, int64_t B, int64_t T,
                         int64_t nv, int64_t ld, int64_t off, int64_t dr, int halves) {
    const int64_t h2 = dr / 2;
    for (int64_t b = 0; b < B; b++)
        ds_rope_forward(x + b * T * nv * ld, cos_t + pos_b[b] * h2, sin_t + pos_b[b] * h2, 1, T, nv, ld, off, dr, halves);
}

void ds_rope_pos_forward_ref(float *x, const float *cos_t, const float *sin_t, const int64_t *pos_b, int64_t B,
                             int64_t T, int64_t nv, int64_t ld, int64_t off, int64_t dr, int halves) {
    const int64_t h2 = dr / 2;
    for (int64_t b = 0; b < B; b++)
        ds_rope_forward_ref(x + b * T * nv * ld, cos_t + pos_b[b] * h2, sin_t + pos_b[b] * h2, 1, T, nv, ld, off, dr,
                            halves);
}
