/*
 * fp8_capture.h — the activation/gradient part of `dsv3 fp8 analyze --data`:
 * run the FP32 training loss forward + backward on real tokens through an
 * ops table whose linear_* and matmul_* entries are wrapped, and see every
 * call's input X (forward, site DS_CAPTURE_INPUT) and output gradient dY
 * (backward, site DS_CAPTURE_GRAD_OUTPUT) of every linear layer (attention
 * q/kv/o projections, dense/shared/expert gate/up/down) and matmul (lm_head,
 * router, MTP eh_proj).  A call is identified by its weight pointer:
 * weight − m->params is the offset of a layout entry (a tied lm_head is the
 * embedding's entry).
 *
 * ds_fp8_capture_analyze analyzes each tensor the moment its call returns
 * (io/fp8_analyze.h ds_tensor_stats_add, per weight and site; nothing is
 * copied, so memory is the model, its activations and one tensor's FP8
 * codes at a time per thread), then merges the weights of one record: the
 * routed experts of a layer and projection are one record.
 */
#ifndef DS_FP8_CAPTURE_H
#define DS_FP8_CAPTURE_H

#include <stdint.h>

#include "io/fp8_analyze.h"
#include "model/model.h"

/* fn(ctx, param, site, x, rows, cols): param = index into m->layout.p of the
 * weight, site DS_CAPTURE_INPUT (x = inp, in the forward) or
 * DS_CAPTURE_GRAD_OUTPUT (x = dout, in the backward); x (rows, cols) is
 * valid during the call only.  Called after the wrapped kernel returns, from
 * several threads at once (routed experts run in a parallel loop), but never
 * concurrently for the same param.  Calls with rows = 0 are not reported. */
typedef void (*ds_capture_fn)(void *ctx, int64_t param, int site, const float *x, int64_t rows, int64_t cols);

/* *ops = *base with linear_forward/backward and matmul_forward/backward
 * wrapped.  One capture at a time per process (the wrappers read file-scope
 * state): -1 with ds_err when one is active.  A weight that is not a
 * parameter of m is passed through unreported. */
int ds_capture_begin(struct ds_ops *ops, const struct ds_ops *base, const ds_model *m, ds_capture_fn fn, void *ctx);
void ds_capture_end(void);

typedef struct {
    const char *data;        /* folder of `dsv3 data prepare` shards */
    const char *split;       /* "train" (default) or "val" */
    int64_t batch, seq;      /* 0: 4 and min(256, max_position_embeddings) */
    int64_t batches;         /* forward/backward passes (default 1) */
    double mtp_lambda;       /* MTP loss weight when the model has MTP modules (default 0.3) */
    int64_t top_n;           /* outliers kept per record */
    const char *device;      /* ds_backend_get_resident device of the passes (NULL: "cpu") */
} ds_fp8_capture_opts;

ds_fp8_capture_opts ds_fp8_capture_defaults(void);

/* Load the model folder dir, take opts->batches batches of the shards in
 * file order, run forward + backward (CE + λ·MTP) through the capturing ops
 * and fill *res (records in layout order, weights merged per record, empty
 * records left out).  0, or -1 with ds_err (missing data, token ids outside
 * the model's vocabulary, too little data, a model without linear layers);
 * *res is then empty. */
int ds_fp8_capture_analyze(ds_capture_result *res, const char *dir, const ds_fp8_capture_opts *opts);

/* The record name of layout entry p ("model.layers.3.mlp.experts.*.up_proj"
 * for routed experts, "lm_head" for a tied head, else the name without
 * ".weight") into buf; the site suffix is not included. */
void ds_capture_record_name(char *buf, size_t cap, const ds_param *p, int is_embed);

#endif
