/*
 * matmul_bf16.h — the linear layer with BF16 GEMM inputs and FP32
 * accumulation (`dsv3 train --precision bf16`), same contract as
 * ds_matmul_forward / ds_matmul_backward (kernels.h, backward.h):
 *   forward   out (N, OC) = bf16(inp) · bf16(weight)ᵀ + bias
 *   backward  dinp (N, C) (=|+=) bf16(dout) · bf16(weight)
 *             dweight (OC, C) += bf16(dout)ᵀ · bf16(inp);  dbias (OC) += Σ_n dout (FP32)
 * Rounding to BF16 is to nearest even; sums run in FP32 (backend/cpu/gemm_bf16.h).
 * Master weights, gradients and every other op stay FP32.
 *
 * The trainer selects it by swapping matmul_forward and matmul_backward in its
 * copy of the ops table.  The conversion scratch grows once per thread and is
 * reused, so experts may run in parallel.
 * The _ref versions use ds_bf16_gemm_ref (plain C, same bits).
 *
 * The fast versions use the weights' BF16 copies kept per epoch (wcache.h).
 */
#ifndef DS_MATMUL_BF16_H
#define DS_MATMUL_BF16_H

#include <stdint.h>

void ds_matmul_forward_bf16(float *out, const float *inp, const float *weight, const float *bias, int64_t N,
                            int64_t C, int64_t OC);
void ds_matmul_backward_bf16(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                             const float *weight, int64_t N, int64_t C, int64_t OC, int acc);
void ds_matmul_forward_bf16_ref(float *out, const float *inp, const float *weight, const float *bias, int64_t N,
                                int64_t C, int64_t OC);
void ds_matmul_backward_bf16_ref(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                 const float *weight, int64_t N, int64_t C, int64_t OC, int acc);

#endif
