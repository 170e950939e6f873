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
#include "backend/cpu/tile_gemm.h"
#include "backend/cpu/vmath.h"
#include "backend/cpu/vmath_simd.h"
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
static _Thread_local void *qabs_buf, *tile_buf;
static _Thread_local size_t qabs_cap, tile_cap;

/* Absorbed attention in GEMM form.  In the absorbed form every head of every
 * query reads the same keys [c | k_pe] and values c (the latent cache: MLA is
 * multi-query here), so the rows (query i, head h) of a sequence are tiled
 * together, MT at a time, and walk the cache once per tile in blocks of KB
 * keys: S = c·q_absᵀ + k_pe·q_peᵀ on the tile GEMM (tile_gemm.h; the query
 * tile transposed, so the cache is read as stored), the online softmax per
 * row (running max and sum, the vector exp of vmath.h), acc = acc·corr + P·c
 * on the tile GEMM.  Every output row is the same arithmetic whatever the
 * tile holds (each score and each acc element is one FMA chain in a fixed
 * order, a row's masked keys add exact zeros, the key blocks start at
 * position 0): a query gets the same bits alone (a decode step), with the
 * other queries of its chunk (a prefill), or beside other sequences. */
enum { MLA_KB = 128, MLA_MT = 48 };

void ds_mla_absorbed_attention(float *att, const float *q, const float *ckv, const float *kpe, const float *kv_b,
                               int64_t B, int64_t n, int64_t pos, int64_t Lmax, int64_t nh, int64_t dn, int64_t dv,
                               int64_t dr, int64_t rkv, float scale, const int64_t *pos_b, const int64_t *row_b) {
    const int64_t N = B * n, dq = dn + dr, rows = n * nh;
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
    /* tiles of a sequence's rows: enough for every thread (any split gives the same bits) */
    const int64_t nth = omp_get_max_threads();
    int64_t ntile = (rows + MLA_MT - 1) / MLA_MT;
    if (ntile * B < nth) ntile = (nth + B - 1) / B;
    if (ntile > rows) ntile = rows;
    const int64_t MT = (rows + ntile - 1) / ntile;
    ntile = (rows + MT - 1) / MT;
    int64_t span = pos + n; /* the longest prefix (sets the parallel threshold only) */
    for (int64_t b = 0; pos_b && b < B; b++)
        if (pos_b[b] + n > span) span = pos_b[b] + n;
#pragma omp parallel for schedule(dynamic, 1) if (B * ntile > 1 && span * B * rows * rkv > 32768)
    for (int64_t task = 0; task < B * ntile; task++) {
        const int64_t b = task / ntile, r0 = (task % ntile) * MT, m = rows - r0 < MT ? rows - r0 : MT;
        const int64_t p0 = SEQ_POS(b), kend = p0 + (r0 + m - 1) / nh + 1; /* keys 0 .. kend-1 */
        const float *C = ckv + SEQ_ROW(b) * Lmax * rkv, *KP = kpe + SEQ_ROW(b) * Lmax * dr;
        const size_t need = (size_t)((rkv + dr) * m + 2 * MLA_KB * m + m * rkv + 2 * m);
        float *qt = ds_scratch(&tile_buf, &tile_cap, need * sizeof(float));
        float *st = qt + (rkv + dr) * m, *S = st + MLA_KB * m, *acc = S + MLA_KB * m, *mx = acc + m * rkv, *l = mx + m;
        /* the tile's queries transposed: (rkv + dr, m) = [q_abs ; q_pe] */
        for (int64_t k = 0; k < m; k++) {
            const int64_t rr = b * rows + r0 + k; /* = (b·n + i)·nh + h */
            const float *qa = qabs + rr * rkv, *qpe = q + rr * dq + dn;
            for (int64_t p = 0; p < rkv; p++) qt[p * m + k] = qa[p];
            for (int64_t p = 0; p < dr; p++) qt[(rkv + p) * m + k] = qpe[p];
            mx[k] = -INFINITY, l[k] = 0;
        }
        memset(acc, 0, (size_t)(m * rkv) * sizeof(float));
        for (int64_t j0 = 0; j0 < kend; j0 += MLA_KB) {
            const int64_t nk = kend - j0 < MLA_KB ? kend - j0 : MLA_KB;
            /* scores transposed, (nk, m): c·q_absᵀ, then + k_pe·q_peᵀ on the same chains */
            ds_tile_gemm(st, m, C + j0 * rkv, rkv, 1, qt, m, nk, m, rkv, 0);
            ds_tile_gemm(st, m, KP + j0 * dr, dr, 1, qt + rkv * m, m, nk, m, dr, 1);
            for (int64_t k = 0; k < m; k++) {
                float *sk = S + k * MLA_KB;
                int64_t nv = p0 + (r0 + k) / nh - j0 + 1; /* causal: keys j0 .. t */
                nv = nv < 0 ? 0 : nv > nk ? nk : nv;
                for (int64_t jj = 0; jj < nv; jj++) sk[jj] = st[jj * m + k] * scale;
                for (int64_t jj = nv; jj < nk; jj++) sk[jj] = 0.0f;
                if (nv == 0) continue;
                const float bmax = ds_vmax(sk, nv), mnew = mx[k] > bmax ? mx[k] : bmax;
                const float corr = ds_exp_s(mx[k] - mnew); /* 0 when mx = -inf */
                l[k] = l[k] * corr + ds_vexp_sum(sk, sk, mnew, nv);
                mx[k] = mnew;
                if (corr != 1.0f) {
                    float *ak = acc + k * rkv;
                    for (int64_t c = 0; c < rkv; c++) ak[c] *= corr;
                }
            }
            ds_tile_gemm(acc, rkv, S, MLA_KB, 1, C + j0 * rkv, rkv, m, rkv, nk, 1);
        }
        /* o_h = W_UV_h · (acc / l)   (W_UV_h (dv, rkv)) */
        for (int64_t k = 0; k < m; k++) {
            const int64_t rr = b * rows + r0 + k, h = rr % nh;
            float *ak = acc + k * rkv;
            const float inv = 1.0f / l[k];
            for (int64_t c = 0; c < rkv; c++) ak[c] *= inv;
            const float *wv = kv_b + (h * (dn + dv) + dn) * rkv;
            float *o = att + rr * dv;
            for (int64_t v = 0; v < dv; v++) o[v] = ds_dot_f32(wv + v * rkv, ak, rkv);
        }
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
