/*
 * optim.c — optimizer step throughput (bench/bench_optim.sh): the trainer's
 * step after the backward over a flat buffer of n parameters in the segments
 * of a model layout (large weight matrices with decay, small norm vectors
 * without), against the streaming bandwidth of the same machine measured in
 * the same run:
 *   copy   a = b            (8 bytes per element)
 *   triad  a = b + s·c      (12 bytes per element; STREAM's convention: no
 *                            write-allocate traffic counted, here neither)
 *   fused  ops->sumsq (g) then ops->adamw (p, g, m, v) with the clip
 *          coefficient folded in: 4 + 28 bytes per element (FP32 moments),
 *          4 + 20 (BF16 moments)
 *   before the previous kernels, kept here verbatim for the ratio: the norm
 *          as an OpenMP reduction in double, the clip as a separate scaling
 *          pass, AdamW as an `omp parallel for simd` loop over each segment
 *          with libm sqrtf (math-errno) and a moment-format branch per element
 * Every pass is timed best-of-REPS after one warm-up.
 *   optim N_MILLIONS REPS  ->  one JSON line
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "base/base.h"
#include "num/dtype.h"

/* ---- the previous optimizer (train/adamw.c before the ops entries) ---- */
static void old_adamw_step(float *p, const float *g, float *m, float *v, uint16_t *m16, uint16_t *v16, int64_t n,
                           int decay, int64_t t, const ds_adamw_hparams *h) {
    const float b2 = (float)h->beta2;
    const float one_m_b1 = (float)(1.0 - h->beta1), one_m_b2 = (float)(1.0 - h->beta2);
    const float wd_mul = decay ? (float)(1.0 - h->lr * h->weight_decay) : 1.0f;
    const double bc1 = 1.0 - pow(h->beta1, (double)t), bc2 = 1.0 - pow(h->beta2, (double)t);
    const float step_size = (float)(h->lr / bc1), bc2_sqrt = (float)sqrt(bc2), eps = (float)h->eps;
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i];
        float mi = m ? m[i] : ds_bf16_to_f32(m16[i]);
        float vi = v ? v[i] : ds_bf16_to_f32(v16[i]);
        float pi = p[i] * wd_mul;
        mi = mi + one_m_b1 * (gi - mi);
        vi = vi * b2 + one_m_b2 * gi * gi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        pi = pi - step_size * (mi / denom);
        p[i] = pi;
        if (m) { m[i] = mi; v[i] = vi; }
        else { m16[i] = ds_f32_to_bf16(mi); v16[i] = ds_f32_to_bf16(vi); }
    }
}

static double old_clip_grad_norm(float *g, int64_t n, double max_norm) {
    double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static)
    for (int64_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    double norm = sqrt(s), coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) {
        float c = (float)coef;
#pragma omp parallel for simd schedule(static)
        for (int64_t i = 0; i < n; i++) g[i] *= c;
    }
    return norm;
}

/* ---- streaming references ---- */
static void copy(float *restrict a, const float *restrict b, int64_t n) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) a[i] = b[i];
}
static void triad(float *restrict a, const float *restrict b, const float *restrict c, float s, int64_t n) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) a[i] = b[i] + s * c[i];
}

static void fill(float *x, int64_t n, float scale, uint64_t seed) {
    ds_rng r;
    ds_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) x[i] = scale * (float)(2 * ds_rng_uniform(&r) - 1);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: optim N_MILLIONS REPS\n");
        return 2;
    }
    const int64_t want = (int64_t)(atof(argv[1]) * 1e6);
    const int reps = atoi(argv[2]);
    if (want <= 0 || reps <= 0) return 2;
    const struct ds_ops *ops = ds_backend_get("cpu");
    /* a layout like a transformer's: per layer a norm (no decay) and four
     * weight matrices (decay), each tensor padded to 16 floats */
    const int64_t H = 1024;
    int64_t cap = want / (4 * H * H) + 2, nseg = 0, n = 0;
    ds_optim_seg *seg = ds_malloc((size_t)(2 * cap) * sizeof *seg);
    while (n < want) {
        seg[nseg++] = (ds_optim_seg){n, H, 0};
        n += (H + 15) / 16 * 16;
        seg[nseg++] = (ds_optim_seg){n, 4 * H * H, 1};
        n += 4 * H * H;
    }
    float *p = ds_aligned_alloc((size_t)n * 4), *g = ds_aligned_alloc((size_t)n * 4);
    float *m = ds_aligned_alloc((size_t)n * 4), *v = ds_aligned_alloc((size_t)n * 4);
    fill(p, n, 1, 1), fill(g, n, 0.01f, 2), memset(m, 0, (size_t)n * 4), memset(v, 0, (size_t)n * 4);
    ds_adamw_hparams h = {1e-3, 0.9, 0.95, 1e-8, 0.1};
    const double max_norm = 1e-3; /* clips: the old path's scaling pass runs, as in a clipped step */
    double best[8];
    for (int k = 0; k < 8; k++) best[k] = 1e30;
    double norm_old = 0, norm_new = 0;
    for (int r = 0; r <= reps; r++) {
        double t[9];
        t[0] = ds_now();
        copy(m, p, n);
        t[1] = ds_now();
        triad(m, p, g, 0.5f, n);
        t[2] = ds_now();
        memset(m, 0, (size_t)n * 4);
        /* before: norm + clip in place (on a copy of g: the passes are timed, the copy is not) */
        float *gc = v;
        memcpy(gc, g, (size_t)n * 4);
        float *mm = ds_aligned_alloc((size_t)n * 4), *vv = ds_aligned_alloc((size_t)n * 4);
        memset(mm, 0, (size_t)n * 4), memset(vv, 0, (size_t)n * 4);
        t[3] = ds_now();
        norm_old = old_clip_grad_norm(gc, n, max_norm);
        for (int64_t s = 0; s < nseg; s++)
            old_adamw_step(p + seg[s].off, gc + seg[s].off, mm + seg[s].off, vv + seg[s].off, NULL, NULL, seg[s].n,
                           seg[s].decay, r + 1, &h);
        t[4] = ds_now();
        free(mm), free(vv);
        memset(v, 0, (size_t)n * 4);
        t[5] = ds_now();
        double ss = ops->sumsq(g, n);
        float gs = (float)fmin(1.0, max_norm / (sqrt(ss) + 1e-6));
        ops->adamw(p, g, m, v, 0, seg, nseg, r + 1, &h, gs);
        t[6] = ds_now();
        norm_new = sqrt(ss);
        /* BF16 moments (the moment buffers reused as uint16 pairs) */
        t[7] = ds_now();
        ss = ops->sumsq(g, n);
        ops->adamw(p, g, m, v, 1, seg, nseg, r + 1, &h, gs);
        t[8] = ds_now();
        if (r == 0) continue; /* warm-up */
        double d[5] = {t[1] - t[0], t[2] - t[1], t[4] - t[3], t[6] - t[5], t[8] - t[7]};
        for (int k = 0; k < 5; k++) best[k] = fmin(best[k], d[k]);
    }
    const double nb = (double)n;
    double copy_gbs = 8 * nb / best[0] / 1e9, triad_gbs = 12 * nb / best[1] / 1e9;
    double old_gbs = (4 + 8 + 28) * nb / best[2] / 1e9; /* norm read, clip read+write, adamw */
    double new_gbs = 32 * nb / best[3] / 1e9, new16_gbs = 24 * nb / best[4] / 1e9;
    printf("{\"params\": %lld, \"segments\": %lld, \"threads\": %d, \"reps\": %d, \"copy_gb_per_s\": %.2f, "
           "\"triad_gb_per_s\": %.2f, \"before_s\": %.6f, \"before_gb_per_s\": %.2f, \"fused_s\": %.6f, "
           "\"fused_gb_per_s\": %.2f, \"fused_bf16_s\": %.6f, \"fused_bf16_gb_per_s\": %.2f, "
           "\"fused_vs_triad\": %.3f, \"speedup\": %.3f, \"norm_before\": %.9g, \"norm_fused\": %.9g}\n",
           (long long)n, (long long)nseg, ds_threads(), reps, copy_gbs, triad_gbs, best[2], old_gbs, best[3], new_gbs,
           best[4], new16_gbs, new_gbs / triad_gbs, best[2] / best[3], norm_old, norm_new);
    free(p), free(g), free(m), free(v), free(seg);
    return 0;
}
