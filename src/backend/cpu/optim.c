/*
 * optim.c — gradient sum of squares, AdamW with the clip coefficient folded
 * in, and the balancing bias update (backend/cpu/optim.h).  AdamW's update of
 * an element and its scalars are optim_step.h's (shared with the CUDA
 * backend).
 */
#include "backend/cpu/optim.h"
#include "backend/cpu/optim_step.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "backend/cpu/wcache.h"
#include "num/dtype.h"

/* ---- references ------------------------------------------------------------ */

double ds_sumsq_ref(const float *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
    return s;
}

void ds_adamw_ref(float *p, const float *g, void *m, void *v, int bf16_moments, const ds_optim_seg *seg,
                  int64_t nseg, int64_t t, const ds_adamw_hparams *h, float gscale) {
    for (int64_t s = 0; s < nseg; s++) {
        const ds_adamw_k k = ds_adamw_consts(h, t, gscale, seg[s].decay);
        for (int64_t i = seg[s].off; i < seg[s].off + seg[s].n; i++) {
            float mi = bf16_moments ? ds_bf16_to_f32(((uint16_t *)m)[i]) : ((float *)m)[i];
            float vi = bf16_moments ? ds_bf16_to_f32(((uint16_t *)v)[i]) : ((float *)v)[i];
            const ds_adamw_pmv r = ds_adamw_step(p[i], g[i], mi, vi, k);
            p[i] = r.p;
            if (bf16_moments) {
                ((uint16_t *)m)[i] = ds_f32_to_bf16(r.m);
                ((uint16_t *)v)[i] = ds_f32_to_bf16(r.v);
            } else {
                ((float *)m)[i] = r.m;
                ((float *)v)[i] = r.v;
            }
        }
    }
}

void ds_bias_update(float *bias, const int64_t *load, int64_t E, float gamma) { ds_bias_step(bias, load, E, gamma); }

/* ---- fast versions ----------------------------------------------------------- */

/* 32 double lanes: the compiler turns the inner loops into 4-wide (AVX2) or
 * 8-wide (AVX-512) conversions and FMAs; x[i]² is exact in double, so the FMA
 * changes nothing.  The lanes are summed in a fixed tree. */
#define SQ_LANES 32
static double block_sumsq(const float *restrict x, int64_t n) {
    double a[SQ_LANES];
    for (int j = 0; j < SQ_LANES; j++) a[j] = 0;
    int64_t i = 0;
    for (; i + SQ_LANES <= n; i += SQ_LANES)
        for (int j = 0; j < SQ_LANES; j++) a[j] += (double)x[i + j] * (double)x[i + j];
    for (int j = 0; i + j < n; j++) a[j] += (double)x[i + j] * (double)x[i + j];
    for (int w = SQ_LANES / 2; w > 0; w /= 2)
        for (int j = 0; j < w; j++) a[j] += a[j + w];
    return a[0];
}

double ds_sumsq(const float *x, int64_t n) {
    if (n <= 0) return 0;
    int64_t nb = (n + DS_OPTIM_BLOCK - 1) / DS_OPTIM_BLOCK;
    double stack[512];
    double *part = nb <= 512 ? stack : ds_malloc((size_t)nb * sizeof(double));
#pragma omp parallel for schedule(static) if (nb > 8)
    for (int64_t b = 0; b < nb; b++) {
        int64_t o = b * DS_OPTIM_BLOCK, len = n - o < DS_OPTIM_BLOCK ? n - o : DS_OPTIM_BLOCK;
        part[b] = block_sumsq(x + o, len);
    }
    double s = 0;
    for (int64_t b = 0; b < nb; b++) s += part[b];
    if (part != stack) free(part);
    return s;
}

static void adamw_f32(float *restrict p, const float *restrict g, float *restrict m, float *restrict v, int64_t n,
                      const ds_adamw_k k) {
    for (int64_t i = 0; i < n; i++) {
        const ds_adamw_pmv r = ds_adamw_step(p[i], g[i], m[i], v[i], k);
        p[i] = r.p, m[i] = r.m, v[i] = r.v;
    }
}

/* BF16 moments: the conversions of num/dtype.h written on the bits so that
 * they vectorize (round to nearest even; NaN stays a quiet NaN). */
static inline float bf16_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t f32_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t r = (u + 0x7fff + ((u >> 16) & 1)) >> 16, q = (u >> 16) | 0x40;
    return (uint16_t)((u & 0x7fffffff) > 0x7f800000 ? q : r);
}

static void adamw_bf16(float *restrict p, const float *restrict g, uint16_t *restrict m, uint16_t *restrict v,
                       int64_t n, const ds_adamw_k k) {
    for (int64_t i = 0; i < n; i++) {
        const ds_adamw_pmv r = ds_adamw_step(p[i], g[i], bf16_f32(m[i]), bf16_f32(v[i]), k);
        p[i] = r.p, m[i] = f32_bf16(r.m), v[i] = f32_bf16(r.v);
    }
}

/* One parallel loop over the blocks of all segments (a segment's blocks
 * start at its offset), so small segments spread over the threads too. */
void ds_adamw(float *p, const float *g, void *m, void *v, int bf16_moments, const ds_optim_seg *seg,
              int64_t nseg, int64_t t, const ds_adamw_hparams *h, float gscale) {
    if (nseg <= 0) return;
    int64_t *first = ds_malloc((size_t)(nseg + 1) * sizeof(int64_t)); /* first block of each segment */
    first[0] = 0;
    for (int64_t s = 0; s < nseg; s++) first[s + 1] = first[s] + (seg[s].n + DS_OPTIM_BLOCK - 1) / DS_OPTIM_BLOCK;
    const int64_t nb = first[nseg];
    const ds_adamw_k kk[2] = {ds_adamw_consts(h, t, gscale, 0), ds_adamw_consts(h, t, gscale, 1)};
#pragma omp parallel for schedule(static) if (nb > 8)
    for (int64_t b = 0; b < nb; b++) {
        int64_t lo = 0, hi = nseg - 1; /* the segment holding block b: first[s] <= b < first[s+1] */
        while (lo < hi) {
            int64_t mid = (lo + hi + 1) / 2;
            if (first[mid] <= b) lo = mid;
            else hi = mid - 1;
        }
        const ds_optim_seg *sg = &seg[lo];
        int64_t o = (b - first[lo]) * DS_OPTIM_BLOCK, len = sg->n - o < DS_OPTIM_BLOCK ? sg->n - o : DS_OPTIM_BLOCK;
        int64_t i = sg->off + o;
        const ds_adamw_k k = kk[sg->decay != 0];
        if (bf16_moments) adamw_bf16(p + i, g + i, (uint16_t *)m + i, (uint16_t *)v + i, len, k);
        else adamw_f32(p + i, g + i, (float *)m + i, (float *)v + i, len, k);
        ds_wcache_refresh(p + i, len); /* the BF16 weight copies, while the block is in cache */
    }
    free(first);
}
