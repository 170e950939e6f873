/*
 * model_convert.h — convert a model folder between FP32, BF16 and DeepSeek's
 * block-scaled FP8 (`dsv3 convert`), docs/deepseek-v3.md §3, §8.2.
 *
 * Input weights may be F32, F64, BF16, F16 or F8_E4M3/E5M2 with
 * "<name>_scale_inv" (blocks from the input config's weight_block_size, else
 * 128x128).  Output, by target:
 *   fp8   the linear weights (ds_weight_is_fp8_linear) as F8_E4M3 with an F32
 *         "<name>_scale_inv" [ceil(out/b), ceil(in/b)], scale = max(amax, 1e-4)
 *         / 448 per b x b block (ragged edge blocks hold what is left; an
 *         all-zero block gives zero codes and the finite scale 1e-4/448);
 *         every other float tensor BF16; an input weight already in this form
 *         (E4M3, same blocks, F32 scales, powers of two if ue8m0) is kept as
 *         it is, not re-quantized
 *   bf16  every float tensor BF16          fp32  every float tensor F32
 * In all three, mlp.gate.e_score_correction_bias stays F32 (as DeepSeek ships
 * it) and integer tensors are copied.  config.json gets quantization_config
 * (fp8) or loses it (bf16, fp32), and its dtype is set; the other files of the
 * folder that are not weights (tokenizer.json, generation_config.json, ...)
 * are copied.  Everything is converted in memory first: on an error nothing is
 * written; each output file is written atomically.
 */
#ifndef DS_MODEL_CONVERT_H
#define DS_MODEL_CONVERT_H

#include <stdint.h>

typedef enum { DS_CKPT_FP32 = 0, DS_CKPT_BF16, DS_CKPT_FP8 } ds_ckpt_format;

typedef struct {
    ds_ckpt_format to;
    int64_t block;           /* FP8 block side, 128 (DeepSeek) */
    int ue8m0;               /* FP8 scales rounded up to powers of two (V3.1 "scale_fmt": "ue8m0") */
    int64_t max_shard_bytes; /* < 0: like the input (one file, or shards no larger than its largest); 0: one file */
} ds_convert_opts;

/* "fp32", "bf16", "fp8"; -1 when unknown. */
int ds_ckpt_format_from_name(const char *name);
/* 1 for the weights DeepSeek stores in FP8: "model.layers.N." followed by
 * self_attn.{q_proj,q_a_proj,q_b_proj,kv_a_proj_with_mqa,kv_b_proj,o_proj}.weight
 * or mlp.[shared_experts.|experts.E.]{gate,up,down}_proj.weight (MTP layers
 * included).  Embeddings, heads, norms, the router, eh_proj: 0. */
int ds_weight_is_fp8_linear(const char *name);

/* in_dir -> out_dir (created if needed; must not be in_dir).  0, or -1 with
 * ds_err set and nothing written. */
int ds_model_convert(const char *in_dir, const char *out_dir, const ds_convert_opts *o);

/* The FP8 weight cast on its own: W (rows, cols) FP32 -> q codes E4M3 (rows,
 * cols), scale (ceil(rows/b), ceil(cols/b)); any block side b >= 1. */
int ds_fp8_block_cast(uint8_t *q, float *scale, const float *w, int64_t rows, int64_t cols, int64_t b, int ue8m0);

#endif
