/*
 * matmul_fp8.h — the linear layer on FP8 GEMMs (`dsv3 train --precision fp8`),
 * same contract as ds_matmul_forward / ds_matmul_backward (kernels.h,
 * backward.h), DeepSeek-V3's recipe (docs/fp8.md, backend/cpu/fp8_linear.h):
 *   forward   out (N, OC) = X·Wᵀ + bias           X 1x128 tiles, W 128x128 blocks
 *   backward  dinp (N, C) (=|+=) dY·W              dY 1x128, W 128x128
 *             dweight (OC, C) += dYᵀ·X             dY, X 128x1 (tiles of 128 tokens)
 *             dbias (OC) += Σ_n dout               (FP32)
 * all E4M3, scales amax/448 computed online, FP32 promotion every 128 of the
 * inner dimension; inputs, outputs, master weights and gradients FP32.
 *
 * The trainer installs these as ops.linear_forward / ops.linear_backward
 * (backend/ops.h), which the model uses for the attention and MLP/expert
 * projections only; lm_head, the router and MTP eh_proj stay FP32.  The
 * quantization workspace grows once per thread and is reused (experts run in
 * a parallel loop), so a steady-state step allocates nothing.
 */
#ifndef DS_MATMUL_FP8_H
#define DS_MATMUL_FP8_H

#include <stdint.h>

void ds_linear_forward_fp8(float *out, const float *inp, const float *weight, const float *bias, int64_t N,
                           int64_t C, int64_t OC);
void ds_linear_backward_fp8(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                            const float *weight, int64_t N, int64_t C, int64_t OC, int acc);

#endif
