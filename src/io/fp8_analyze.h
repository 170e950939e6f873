/*
 * fp8_analyze.h — `dsv3 fp8 analyze`: for every 2-D weight of a model folder
 * (and, given the records of a capture pass, every linear layer's input
 * activation and output gradient), the FP8 quantization error (num/quant.h ds_quant_error: mean
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
 *    "activations": [RECORD], "gradients": [RECORD]}
 * Without a capture pass (no --data) "activations" and "gradients" are empty.
 * With one (train/fp8_capture.h: forward + backward on real tokens, every
 * call of a linear/matmul seen through a wrapped ops table) these keys come
 * before "activations":
 *    "capture": {"data", "split", "batch", "seq", "batches", "mtp_lambda", "loss",
 *                "scalings": ["tensor", "row", "1x128", "128x1", "128x128"]},
 * and after "gradients":
 *    "activation_summary": {KIND: {"tensors", "elements", "error": {FMT: {SCALING: {...}}}}},
 *    "gradient_summary": {KIND: {...}}
 * RECORD (one per weight and site; the routed experts of one layer and
 * projection share one record):
 *    {"name": "model.layers.3.self_attn.kv_b_proj:input" | "...:grad_output"
 *             (experts: "model.layers.3.mlp.experts.*.gate_proj:input"; a tied
 *             head: "lm_head:..."), "kind", "weights" (weights merged),
 *     "calls" (tensors seen), "shape": [rows summed over the calls, cols],
 *     "amax", "rms", "nonfinite",
 *     "error": {FMT: {SCALING: {...}}} over the 5 capture scalings,
 *     "outliers": [{"weight", "call", "row", "col", "value", "block_mean_abs", "ratio"}]}
 * Each call's tensor is quantized on its own, as an FP8 linear quantizes its
 * operand (one scale per call for "tensor", tiles starting at the call's row
 * 0 for 128x1 / 128x128), and the record aggregates the calls like the
 * summary aggregates tensors (below).  "input" is the activation X of
 * y = X·Wᵀ (quantized 1x128 in fprop, 128x1 in wgrad), "grad_output" is dY
 * (1x128 in dgrad, 128x1 in wgrad).  Outliers: "row" within call "call"
 * (0-based, in call order per weight) of weight "weight".
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

/* ---- activations and gradients (captured by train/fp8_capture.h) ---------- */

#define DS_CAPTURE_NSCALE 5   /* tensor, row, 1x128, 128x1, 128x128 */
extern const ds_quant_gran ds_capture_grans[DS_CAPTURE_NSCALE];
enum { DS_CAPTURE_INPUT = 0, DS_CAPTURE_GRAD_OUTPUT = 1 };

/* Sums behind an aggregated error: mae and frac_* weighted by element
 * count, rel_rms = sqrt(Σ ||y-x||² / Σ ||x||²), max_err the maximum. */
typedef struct {
    double sae, se, sx, max_err, nclamp, nflush, nsub;
    int64_t n;
} ds_err_sum;
/* Add one tensor's error q (sx = its Σ x² over the finite elements). */
void ds_err_sum_add(ds_err_sum *a, const ds_quant_err *q, double sx);
void ds_err_sum_merge(ds_err_sum *a, const ds_err_sum *b);
ds_quant_err ds_err_sum_result(const ds_err_sum *a);

typedef struct {
    ds_outlier o;
    int64_t call;          /* which call of its weight */
    const char *weight;    /* the weight's name (not owned) */
} ds_rec_outlier;

/* Statistics of the tensors seen at one site of one weight (or of a group). */
typedef struct {
    int64_t calls, rows, cols, n, nonfinite;
    double amax, sx;                              /* max |x|, Σ x² (finite) */
    ds_err_sum e[2][DS_CAPTURE_NSCALE];           /* [e4m3, e5m2][scaling] */
    ds_rec_outlier *top;                          /* top_n, largest ratio first */
    int64_t ntop;
} ds_tensor_stats;

/* Quantize x (rows, cols) in both formats and the 5 capture scalings and
 * add the result (and its top_n outliers, tagged with weight and the call
 * number s->calls) to s.  Not thread-safe for one s.  0, or -1 with ds_err
 * (rows or cols not matching earlier calls). */
int ds_tensor_stats_add(ds_tensor_stats *s, const float *x, int64_t rows, int64_t cols, int64_t top_n,
                        const char *weight);
/* dst += src (sums, maxima, outliers); 0 or -1 (cols differ). */
int ds_tensor_stats_merge(ds_tensor_stats *dst, const ds_tensor_stats *src, int64_t top_n);
void ds_tensor_stats_free(ds_tensor_stats *s);

typedef struct {
    char name[160];        /* "<weight without .weight>:input" | ":grad_output" */
    const char *kind;      /* ds_weight_kind of its weight(s) */
    int64_t weights;       /* weights merged (routed experts: one per expert) */
    ds_tensor_stats s;
} ds_tensor_rec;

/* What the capture pass hands to the report. */
typedef struct {
    const char *data, *split;
    int64_t batch, seq, batches;
    double mtp_lambda, loss;      /* loss: mean of the batches' training loss */
    ds_tensor_rec *rec[2];        /* [DS_CAPTURE_INPUT], [DS_CAPTURE_GRAD_OUTPUT] */
    int64_t nrec[2];
    char **names;                 /* owned weight names the outliers point to */
    int64_t nnames;
} ds_capture_result;
void ds_capture_result_free(ds_capture_result *r);

/* ds_fp8_analyze_model plus the captured activations and gradients (cap may
 * be NULL: weights only). */
int ds_fp8_analyze_report(const char *dir, int64_t top_n, const ds_capture_result *cap, const char *json_path,
                          FILE *table);

#endif
