/*
 * quant.h — FP8 quantizers with dynamic (amax) scaling, DeepSeek-V3 style
 * (docs/deepseek-v3.md §8.3, §8.5), and dequantization.
 *
 * A matrix x (rows, cols), row-major, is cut into groups; each group g gets
 *   amax_g = max |x| over the group (FP32), clamped below by amax_floor
 *   s_g    = amax_g / fmt_max            (448 for E4M3, 57344 for E5M2)
 *   s_g    = 2^ceil(log2 s_g)            if ue8m0 (round the scale up)
 *   q      = cast_sat(x / s_g)           (RNE, clamp to +-max)
 * and x ~= decode(q) * s_g.  s_g is the dequantization multiplier, the
 * "scale_inv" of DeepSeek's checkpoints.  With amax_floor = 0 an all-zero
 * group gets s = 1 and zero codes (never a division by zero).
 *
 * Groups and the scale array they produce (RB = ceil(rows/128), CB = ceil(cols/128)):
 *   DS_QUANT_TENSOR       one group                         scale [1]
 *   DS_QUANT_ROW          one per row (per channel)         scale [rows]
 *   DS_QUANT_TILE_1x128   1x128 tiles along cols            scale [rows, CB]
 *   DS_QUANT_TILE_128x1   128x1 tiles along rows            scale [RB, cols]
 *   DS_QUANT_BLOCK_128x128 128x128 blocks                   scale [RB, CB]
 * Edge tiles/blocks hold what is left (amax over the real elements only, as
 * DeepSeek's zero padding gives).  1x128 is DeepSeek's act_quant / per-token
 * cast (activations, gradients); 128x1 is the same tile on the transposed
 * matrix (wgrad operands, no transpose copy needed); 128x128 is the weight cast.
 */
#ifndef DS_QUANT_H
#define DS_QUANT_H

#include <stdint.h>
#include "num/fp8.h"

typedef enum {
    DS_QUANT_TENSOR = 0, DS_QUANT_ROW, DS_QUANT_TILE_1x128, DS_QUANT_TILE_128x1,
    DS_QUANT_BLOCK_128x128, DS_QUANT_GRAN_COUNT
} ds_quant_gran;

typedef struct {
    ds_fp8_format fmt;     /* DS_FP8_E4M3 (DeepSeek) or DS_FP8_E5M2 */
    ds_quant_gran gran;
    int ue8m0;             /* power-of-two scales, rounded up */
    float amax_floor;      /* DeepSeek clamps amax >= 1e-4 (DS_QUANT_AMAX_FLOOR) */
} ds_quant_opts;

#define DS_QUANT_GROUP 128
#define DS_QUANT_AMAX_FLOOR 1e-4f
/* E4M3, the given granularity, FP32 scales, amax floor 1e-4. */
ds_quant_opts ds_quant_defaults(ds_quant_gran gran);

/* Shape of the scale array: shape[0] x shape[1] (a vector is [n, 1]). */
void ds_quant_scale_shape(ds_quant_gran gran, int64_t rows, int64_t cols, int64_t shape[2]);
int64_t ds_quant_scale_count(ds_quant_gran gran, int64_t rows, int64_t cols);
/* The scale of element (r, c) (read from the array of the shape above);
 * inline: the GEMM packs look up a scale per row and 128-wide K block. */
static inline float ds_quant_scale_at(const float *scale, ds_quant_gran gran, int64_t rows, int64_t cols,
                                      int64_t r, int64_t c) {
    const int64_t cb = (cols + DS_QUANT_GROUP - 1) / DS_QUANT_GROUP;
    switch (gran) {
    case DS_QUANT_TENSOR: return scale[0];
    case DS_QUANT_ROW: return scale[r];
    case DS_QUANT_TILE_1x128: return scale[r * cb + c / DS_QUANT_GROUP];
    case DS_QUANT_TILE_128x1: return scale[(r / DS_QUANT_GROUP) * cols + c];
    default: return scale[(r / DS_QUANT_GROUP) * cb + c / DS_QUANT_GROUP];
    }
    (void)rows;
}
/* "tensor", "row", "1x128", "128x1", "128x128"; -1 when unknown. */
int ds_quant_gran_from_name(const char *name);
const char *ds_quant_gran_name(ds_quant_gran gran);
/* Round a positive scale up to a power of two (UE8M0), exponent in [1, 254]. */
float ds_quant_ue8m0_ceil(float s);

/* q (rows, cols) codes, scale as above, x (rows, cols) FP32.  Returns 0, or -1
 * with ds_err set on bad arguments (negative sizes, unknown enum values). */
int ds_quantize(uint8_t *q, float *scale, const float *x, int64_t rows, int64_t cols,
                const ds_quant_opts *opts);
/* x (rows, cols) = decode(q) * scale. */
int ds_dequantize(float *x, const uint8_t *q, const float *scale, int64_t rows, int64_t cols,
                  ds_fp8_format fmt, ds_quant_gran gran);

/* Quantization error of x under opts (for `dsv3 fp8 analyze`): x is
 * quantized and dequantized to y, then
 *   mae      mean |y - x|            rel_rms  ||y - x|| / ||x||
 *   max_err  max |y - x|             amax     max |x|
 *   frac_clamped  share of elements clipped by the saturating cast: |x / s|
 *                 beyond what rounds to max (> 464 E4M3, >= 61440 E5M2); 0
 *                 with amax scaling, nonzero for scales from elsewhere
 *   frac_flushed  share of nonzero x that decode to zero
 *   frac_subnormal share of nonzero x that land on FP8 subnormal codes
 * Non-finite x are counted in n_nonfinite and left out of the sums. */
typedef struct {
    double mae, rel_rms, max_err, amax, frac_clamped, frac_flushed, frac_subnormal;
    int64_t n, n_nonfinite;
} ds_quant_err;
int ds_quant_error(ds_quant_err *e, const float *x, int64_t rows, int64_t cols, const ds_quant_opts *opts);
/* The same statistics for given codes and scales (from a checkpoint). */
void ds_quant_error_of(ds_quant_err *e, const float *x, const uint8_t *q, const float *scale,
                       int64_t rows, int64_t cols, ds_fp8_format fmt, ds_quant_gran gran);

#endif
