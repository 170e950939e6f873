/*
 * fp8_analyze.h — `dsv3 fp8 analyze`, weights part: for every 2-D weight of a
 * model folder, the FP8 quantization error (num/quant.h ds_quant_error: mean
 * abs error, relative RMS error, max error, fraction clamped, fraction flushed
 * to zero, fraction subnormal) under per-tensor, per-channel (row), 1x128 and
 * 128x128 scaling, in E4M3 and E5M2; the outliers that drive it (largest |w|
 * relative to the mean |w| of its 128x128 block); a summary per tensor kind.
 *
 * JSON (written by ds_fp8_analyze_model):
 *   {"model": DIR, "amax_floor": 0.0001, "formats": ["e4m3", "e5m2"],
 *    "scalings": ["tensor", "row", "1x128", "128x128"],
 *    "outlier_ratio": "|w| / mean |w| of its 128x128 block",
 *    "weights": [{"name", "kind", "shape": [r, c], "dtype", "amax", "rms", "nonfinite",
 *                 "error": {FMT: {SCALING: {"mae", "rel_rms", "max_err",
 *                           "frac_clamped", "frac_flushed", "frac_subnormal"}}},
 *                 "outliers": [{"row", "col", "value", "block_mean_abs", "ratio"}]}],
 *    "summary": {KIND: {"tensors", "params", "error": {FMT: {SCALING: {...}}}}},
 *    "top_outliers": [{"name", "row", "col", "value", "block_mean_abs", "ratio"}],
 *    "activations": [], "gradients": []}
 * "activations" and "gradients" hold the same per-tensor records (with the
 * tensor named by layer and site) once the capture pass exists; empty now.
 * rms is over the finite weights; "nonfinite" counts NaN/inf; a statistic
 * that is not finite (an inf weight makes its group's scale inf) is null.  Summary errors aggregate over the kind: mae, frac_* weighted by element
 * count, rel_rms = sqrt(sum ||y-x||^2 / sum ||x||^2), max_err the maximum.
 */
#ifndef DS_FP8_ANALYZE_H
#define DS_FP8_ANALYZE_H

#include <stdint.h>
#include <stdio.h>

#include "num/quant.h"

/* The kind a weight name belongs to: "q_a", "q_b", "q" (q_proj), "kv_a",
 * "kv_b", "o", "dense", "expert", "shared", "router", "embed", "head",
 * "eh_proj", "other". */
const char *ds_weight_kind(const char *name);

#define DS_ANALYZE_NSCALE 4   /* tensor, row, 1x128, 128x128 */
extern const ds_quant_gran ds_analyze_grans[DS_ANALYZE_NSCALE];

typedef struct {
    int64_t row, col;
    float value, block_mean_abs, ratio;
} ds_outlier;

/* The top n outliers of w (rows, cols) by |w| / mean |w| of its 128x128 block
 * (blocks with mean 0 skipped), largest first; returns how many were found. */
int64_t ds_find_outliers(ds_outlier *top, int64_t n, const float *w, int64_t rows, int64_t cols);

/* Analyze every 2-D float weight of the folder (or .safetensors file) dir;
 * top_n outliers per tensor and overall.  json_path (may be NULL) gets the
 * full JSON (atomically); table (may be NULL) the summary.  0 or -1. */
int ds_fp8_analyze_model(const char *dir, int64_t top_n, const char *json_path, FILE *table);

#endif
