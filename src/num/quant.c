/*
 * quant.c — dynamic-scale FP8 quantizers and dequantization (see quant.h).
 * Each group is handled by one pass for amax and one for the casts; rows are
 * split across threads where groups do not span rows.
 */
#include "num/quant.h"
#include "base/base.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

ds_quant_opts ds_quant_defaults(ds_quant_gran gran) {
    return (ds_quant_opts){DS_FP8_E4M3, gran, 0, DS_QUANT_AMAX_FLOOR};
}

static const char *const gran_names[DS_QUANT_GRAN_COUNT] = {"tensor", "row", "1x128", "128x1", "128x128"};

int ds_quant_gran_from_name(const char *name) {
    for (int i = 0; i < DS_QUANT_GRAN_COUNT; i++)
        if (!strcmp(name, gran_names[i])) return i;
    return -1;
}
const char *ds_quant_gran_name(ds_quant_gran gran) {
    return (unsigned)gran < DS_QUANT_GRAN_COUNT ? gran_names[gran] : "?";
}

void ds_quant_scale_shape(ds_quant_gran gran, int64_t rows, int64_t cols, int64_t shape[2]) {
    int64_t rb = ds_ceil_div(rows, DS_QUANT_GROUP), cb = ds_ceil_div(cols, DS_QUANT_GROUP);
    switch (gran) {
    case DS_QUANT_TENSOR: shape[0] = 1; shape[1] = 1; break;
    case DS_QUANT_ROW: shape[0] = rows; shape[1] = 1; break;
    case DS_QUANT_TILE_1x128: shape[0] = rows; shape[1] = cb; break;
    case DS_QUANT_TILE_128x1: shape[0] = rb; shape[1] = cols; break;
    default: shape[0] = rb; shape[1] = cb; break;
    }
}

int64_t ds_quant_scale_count(ds_quant_gran gran, int64_t rows, int64_t cols) {
    int64_t s[2];
    ds_quant_scale_shape(gran, rows, cols, s);
    return s[0] * s[1];
}

float ds_quant_ue8m0_ceil(float s) {
    uint32_t u;
    memcpy(&u, &s, 4);
    uint32_t e = (u >> 23) & 0xff;
    if (u & 0x7fffff) e++;          /* not a power of two already: round up */
    if (e < 1) e = 1;
    if (e > 254) e = 254;
    u = e << 23;
    memcpy(&s, &u, 4);
    return s;
}

/* The scale for a group of amax a. */
static inline float group_scale(float a, const ds_quant_opts *o, float fmax) {
    if (a < o->amax_floor) a = o->amax_floor;
    float s = a / fmax;
    if (!(s > 0)) s = 1.0f;          /* all-zero group without a floor */
    if (o->ue8m0) s = ds_quant_ue8m0_ceil(s);
    return s;
}

/* amax of a strided 2D patch; NaN is skipped (fmaxf).  *fin says the patch
 * holds no NaN or inf (read off the integer max of |x|'s bits; the float pass
 * runs again only when one is there). */
static inline float amax_of_bits(uint32_t b, const float *x, int64_t ld, int64_t nr, int64_t nc, int *fin) {
    *fin = b < 0x7f800000u;
    if (!*fin) return ds_f32_amax_2d(x, ld, nr, nc);
    float a;
    memcpy(&a, &b, 4);
    return a;
}
static inline float patch_amax(const float *x, int64_t ld, int64_t nr, int64_t nc, int *fin) {
    return amax_of_bits(ds_f32_absmax_bits_2d(x, ld, nr, nc), x, ld, nr, nc, fin);
}

/* The E4M3 cast with fewer operations (ds_fp8_e4m3_encode_div_bounded, same
 * bits) needs |x / s| <= 448 (1 + 2^-22): true of a finite group whose scale
 * came from its own amax (raised by the floor or UE8M0, never lowered) when
 * that scale is a normal float (a subnormal one is rounded coarsely); and it
 * divides by 256 s, which must stay finite (UE8M0 rounds a scale up to 2^120
 * for an amax near FLT_MAX). */
static inline int cast_bounded(ds_fp8_format fmt, int fin, float s) {
    return fmt == DS_FP8_E4M3 && fin && s >= 0x1p-126f && s <= 0x1p100f;
}

static inline void patch_cast(uint8_t *q, const float *x, int64_t ld, int64_t nr, int64_t nc,
                              float s, ds_fp8_format fmt, int fin) {
    if (cast_bounded(fmt, fin, s))
        for (int64_t i = 0; i < nr; i++) ds_fp8_e4m3_encode_div_bounded(q + i * ld, x + i * ld, nc, s);
    else
        for (int64_t i = 0; i < nr; i++) ds_fp8_encode_div_sat(q + i * ld, x + i * ld, nc, s, fmt);
}

static int check_args(const char *what, int64_t rows, int64_t cols, int fmt, int gran) {
    if (rows < 0 || cols < 0) return ds_err("%s: negative shape (%lld, %lld)", what, (long long)rows, (long long)cols);
    if (fmt != DS_FP8_E4M3 && fmt != DS_FP8_E5M2) return ds_err("%s: unknown fp8 format %d", what, fmt);
    if (gran < 0 || gran >= DS_QUANT_GRAN_COUNT) return ds_err("%s: unknown granularity %d", what, gran);
    return 0;
}

int ds_quantize(uint8_t *q, float *scale, const float *x, int64_t rows, int64_t cols,
                const ds_quant_opts *o) {
    if (check_args("quantize", rows, cols, (int)o->fmt, (int)o->gran)) return -1;
    if (rows == 0 || cols == 0) return 0;
    const float fmax = ds_fp8_traits_table[o->fmt].max;
    const int64_t G = DS_QUANT_GROUP, rb = ds_ceil_div(rows, G), cb = ds_ceil_div(cols, G);
    switch (o->gran) {
    case DS_QUANT_TENSOR: {
        float a = 0.0f;
        int fin = 1;
#pragma omp parallel for reduction(max : a) reduction(&& : fin) schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            int f;
            a = fmaxf(a, patch_amax(x + r * cols, cols, 1, cols, &f));
            fin = fin && f;
        }
        float s = group_scale(a, o, fmax);
        scale[0] = s;
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; r++) patch_cast(q + r * cols, x + r * cols, cols, 1, cols, s, o->fmt, fin);
        break;
    }
    case DS_QUANT_ROW:
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            int fin;
            float s = group_scale(patch_amax(x + r * cols, cols, 1, cols, &fin), o, fmax);
            scale[r] = s;
            patch_cast(q + r * cols, x + r * cols, cols, 1, cols, s, o->fmt, fin);
        }
        break;
    case DS_QUANT_TILE_1x128:
#pragma omp parallel for schedule(static) if (rows * cols >= 65536)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t b = 0; b < cb; b++) {
                int64_t c0 = b * G, nc = cols - c0 < G ? cols - c0 : G;
                const float *xp = x + r * cols + c0;
                int fin;
                float s = group_scale(patch_amax(xp, cols, 1, nc, &fin), o, fmax);
                scale[r * cb + b] = s;
                patch_cast(q + r * cols + c0, xp, cols, 1, nc, s, o->fmt, fin);
            }
        break;
    case DS_QUANT_TILE_128x1:
        /* walk a band of 128 rows column-block by column-block, so each pass
         * reads whole cache lines; amax per column */
#pragma omp parallel for collapse(2) schedule(static)
        for (int64_t b = 0; b < rb; b++)
            for (int64_t cbk = 0; cbk < cb; cbk++) {
                int64_t r0 = b * G, nr = rows - r0 < G ? rows - r0 : G;
                int64_t c0 = cbk * G, nc = cols - c0 < G ? cols - c0 : G;
                uint32_t amb[DS_QUANT_GROUP];
                float am[DS_QUANT_GROUP], s256[DS_QUANT_GROUP];
                for (int64_t j = 0; j < nc; j++) amb[j] = 0;
                for (int64_t i = 0; i < nr; i++) ds_f32_absmax_bits_update(amb, x + (r0 + i) * cols + c0, nc);
                int fast = o->fmt == DS_FP8_E4M3;
                for (int64_t j = 0; j < nc; j++) fast = fast && amb[j] < 0x7f800000u;
                if (fast) {
                    memcpy(am, amb, (size_t)nc * sizeof am[0]);
                } else { /* a NaN or inf in the tile (or E5M2): the float pass, NaN skipped */
                    for (int64_t j = 0; j < nc; j++) am[j] = 0.0f;
                    for (int64_t i = 0; i < nr; i++) ds_f32_amax_update(am, x + (r0 + i) * cols + c0, nc);
                }
                for (int64_t j = 0; j < nc; j++) {
                    am[j] = group_scale(am[j], o, fmax);
                    scale[b * cols + c0 + j] = am[j];
                    fast = fast && cast_bounded(o->fmt, 1, am[j]);
                    s256[j] = 256.0f * am[j];
                }
                for (int64_t i = 0; i < nr; i++) {
                    uint8_t *qi = q + (r0 + i) * cols + c0;
                    const float *xi = x + (r0 + i) * cols + c0;
                    if (fast) ds_fp8_e4m3_encode_divv_bounded(qi, xi, s256, nc);
                    else ds_fp8_encode_divv_sat(qi, xi, am, nc, o->fmt);
                }
            }
        break;
    default: { /* DS_QUANT_BLOCK_128x128 */
        /* a band of 128 rows at a time (or a run of its column blocks, when
         * the bands are fewer than the threads): the amax pass reads it row
         * by row (long pieces of rows stream from memory: a cold weight's
         * band in 0.6-0.8x the time of block-by-block strided reads), the
         * casts find it in cache */
        const int64_t nt = omp_in_parallel() ? 1 : omp_get_max_threads();
        const int64_t nrun = rb >= nt ? 1 : (nt + rb - 1) / rb < cb ? (nt + rb - 1) / rb : cb;
        const int64_t per = (cb + nrun - 1) / nrun;
#pragma omp parallel for collapse(2) schedule(static)
        for (int64_t b = 0; b < rb; b++)
            for (int64_t run = 0; run < nrun; run++) {
                const int64_t r0 = b * G, nr = rows - r0 < G ? rows - r0 : G;
                const int64_t k0 = run * per, k1 = k0 + per < cb ? k0 + per : cb;
                uint32_t amb[per];
                memset(amb, 0, sizeof amb);
                for (int64_t i = 0; i < nr; i++)
                    for (int64_t k = k0; k < k1; k++) {
                        int64_t c0 = k * G, nc = cols - c0 < G ? cols - c0 : G;
                        uint32_t a = ds_f32_absmax_bits_2d(x + (r0 + i) * cols + c0, cols, 1, nc);
                        if (a > amb[k - k0]) amb[k - k0] = a;
                    }
                for (int64_t k = k0; k < k1; k++) {
                    int64_t c0 = k * G, nc = cols - c0 < G ? cols - c0 : G;
                    const float *xp = x + r0 * cols + c0;
                    int fin;
                    float s = group_scale(amax_of_bits(amb[k - k0], xp, cols, nr, nc, &fin), o, fmax);
                    scale[b * cb + k] = s;
                    patch_cast(q + r0 * cols + c0, xp, cols, nr, nc, s, o->fmt, fin);
                }
            }
        break;
    }
    }
    return 0;
}

int ds_dequantize(float *x, const uint8_t *q, const float *scale, int64_t rows, int64_t cols,
                  ds_fp8_format fmt, ds_quant_gran gran) {
    if (check_args("dequantize", rows, cols, (int)fmt, (int)gran)) return -1;
    /* a row decoded at once (vector decode), then scaled: one scale per
     * 128-column group, or per column for 128x1 tiles */
#pragma omp parallel for schedule(static) if (rows * cols >= 65536)
    for (int64_t r = 0; r < rows; r++) {
        float *xr = x + r * cols;
        ds_fp8_decode(xr, q + r * cols, cols, fmt);
        if (gran == DS_QUANT_TILE_128x1) {
            for (int64_t c = 0; c < cols; c++) xr[c] *= ds_quant_scale_at(scale, gran, rows, cols, r, c);
            continue;
        }
        for (int64_t c0 = 0; c0 < cols; c0 += DS_QUANT_GROUP) {
            const float sc = ds_quant_scale_at(scale, gran, rows, cols, r, c0);
            const int64_t c1 = c0 + DS_QUANT_GROUP < cols ? c0 + DS_QUANT_GROUP : cols;
            for (int64_t c = c0; c < c1; c++) xr[c] *= sc;
        }
    }
    return 0;
}

void ds_quant_error_of(ds_quant_err *e, const float *x, const uint8_t *q, const float *scale,
                       int64_t rows, int64_t cols, ds_fp8_format fmt, ds_quant_gran gran) {
    const float *t = fmt == DS_FP8_E4M3 ? ds_fp8_e4m3_table : ds_fp8_e5m2_table;
    /* beyond these |x / s| is clipped (below them it rounds to max anyway) */
    const float clip = fmt == DS_FP8_E4M3 ? 464.0f : 61440.0f;
    const int sub_lim = fmt == DS_FP8_E4M3 ? 8 : 4;      /* codes below: subnormal */
    double sae = 0, se = 0, sx = 0, mx = 0, am = 0;
    int64_t nclamp = 0, nflush = 0, nsub = 0, nz = 0, nbad = 0;
#pragma omp parallel for schedule(static) reduction(+ : sae, se, sx, nclamp, nflush, nsub, nz, nbad) \
    reduction(max : mx, am)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            float xv = x[r * cols + c];
            if (!isfinite(xv)) { nbad++; continue; }
            uint8_t code = q[r * cols + c];
            float s = ds_quant_scale_at(scale, gran, rows, cols, r, c);
            double d = (double)t[code] * s - xv;
            sae += fabs(d);
            se += d * d;
            sx += (double)xv * xv;
            if (fabs(d) > mx) mx = fabs(d);
            if (fabsf(xv) > am) am = fabsf(xv);
            float a = fabsf(xv / s);
            if (fmt == DS_FP8_E4M3 ? a > clip : a >= clip) nclamp++;
            if (xv != 0.0f) {
                nz++;
                if ((code & 0x7f) == 0) nflush++;
                else if ((code & 0x7f) < sub_lim) nsub++;
            }
        }
    int64_t n = rows * cols - nbad;
    *e = (ds_quant_err){n ? sae / n : 0, sx > 0 ? sqrt(se / sx) : 0, mx, am, n ? (double)nclamp / n : 0,
                        nz ? (double)nflush / nz : 0, nz ? (double)nsub / nz : 0, n, nbad};
}

int ds_quant_error(ds_quant_err *e, const float *x, int64_t rows, int64_t cols, const ds_quant_opts *o) {
    if (check_args("quant error", rows, cols, (int)o->fmt, (int)o->gran)) return -1;
    uint8_t *q = ds_malloc((size_t)(rows * cols > 0 ? rows * cols : 1));
    float *s = ds_malloc(sizeof(float) * (size_t)(ds_quant_scale_count(o->gran, rows, cols) + 1));
    int rc = ds_quantize(q, s, x, rows, cols, o);
    if (!rc) ds_quant_error_of(e, x, q, s, rows, cols, o->fmt, o->gran);
    free(q);
    free(s);
    return rc;
}
