/*
 * linear_fp8w.h — linear layers whose weight is held in FP8, as DeepSeek's
 * inference code runs a Linear with an F8_E4M3 checkpoint weight
 * (docs/fp8.md "FP8-resident inference"):
 *
 *   x_q, x_s = act_quant(x, 128)        1x128 tiles along C (num/quant.h:
 *                                       s = max(amax, 1e-4)/448, saturating E4M3)
 *   out = fp8_gemm(x_q, x_s, W_q, W_s)  FP32 block sums promoted every 128 with
 *                                       both scales (backend/cpu/gemm_fp8.h)
 *   out += bias                         (when there is one)
 *
 * The weight is a ds_fp8w: E4M3 codes (OC, C) and the checkpoint's
 * `weight_scale_inv` (ceil(OC/128), ceil(C/128)) FP32, used as-is.
 *   ds_linear_fp8w_forward      fast: activation quantized into a per-thread
 *                               grow-only workspace, ds_fp8_gemm (AVX2)
 *   ds_linear_fp8w_forward_ref  scalar: ds_quantize + ds_fp8_gemm_ref; the fast
 *                               path gives the same bits (same block order)
 * out (N, OC), inp (N, C), bias (OC) or NULL.  Callable from inside OpenMP
 * regions (the MoE expert loop).
 *
 * The same descriptor holds a BF16-resident weight (b16 set: a tensor the
 * checkpoint stores in BF16, kept at 2 bytes/param, docs/fp8.md "FP8-resident
 * inference"); both entry points above then run the BF16-weight linear:
 *   out = inp · widen(W)ᵀ (+ bias)      FP32 activations, no quantization;
 *                                       widening BF16 -> FP32 is exact
 *   ds_linear_bf16w_forward      fast: the blocked GEMM driver
 *                                (gemm_blocked.h) with the weight panels
 *                                widened while packing; FP32 block sums of
 *                                128 added to the output in k order
 *   ds_linear_bf16w_forward_ref  scalar: the driver's reference (same order,
 *                                same fmaf: same bits)
 */
#ifndef DS_LINEAR_FP8W_H
#define DS_LINEAR_FP8W_H

#include <stdint.h>

typedef struct {
    const uint8_t *q;      /* (rows, cols) E4M3 codes */
    const float *scale;    /* (ceil(rows/128), ceil(cols/128)) dequantization multipliers */
    int64_t rows, cols;    /* (OC, C) */
    const uint16_t *b16;   /* a BF16-resident weight instead (q, scale NULL): (rows, cols) bits */
} ds_fp8w;

void ds_linear_fp8w_forward(float *out, const float *inp, const ds_fp8w *w, const float *bias, int64_t N, int64_t C,
                            int64_t OC);
void ds_linear_fp8w_forward_ref(float *out, const float *inp, const ds_fp8w *w, const float *bias, int64_t N,
                                int64_t C, int64_t OC);

void ds_linear_bf16w_forward(float *out, const float *inp, const ds_fp8w *w, const float *bias, int64_t N, int64_t C,
                             int64_t OC);
void ds_linear_bf16w_forward_ref(float *out, const float *inp, const ds_fp8w *w, const float *bias, int64_t N,
                                 int64_t C, int64_t OC);
/* out (N, C) = widen(table[ids[n]]) of a BF16-resident embedding table (V, C)
 * (exact: the same floats as the FP32 gather of the widened table). */
void ds_embedding_bf16_forward(float *out, const int32_t *ids, const uint16_t *table, int64_t N, int64_t C);

/* The calling thread's activation workspace for (N, C): codes (N·C bytes) and
 * 1x128 scales (N·ceil(C/128) floats); grows, never shrinks (kept per thread). */
void ds_fp8w_workspace(int64_t N, int64_t C, uint8_t **q, float **s);

#endif
