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
 * Weight copies (ds_matmul_bf16_weights_epoch, the ops entry weights_epoch):
 * while the caller's epoch (>= 0) holds, the fast versions keep each weight's
 * BF16 copy, keyed by its pointer and size, and convert it again only on its
 * first use in a new epoch: once per training step instead of at every forward
 * and dinp GEMM.  The caller promises that the weights do not change within an
 * epoch; epoch < 0 (the default) converts at every call and frees the copies.
 * The copies take 2 bytes per weight used.  Same bits either way.
 * DS_BF16_WEIGHT_COPIES=0 in the environment turns the copies off.
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

void ds_matmul_bf16_weights_epoch(int64_t epoch);
/* AdamW has just written p[0, n): the BF16 copies over that range are
 * rewritten now (on the calling thread), and a copy rewritten whole starts the
 * next epoch valid instead of being converted again at first use.  Safe from
 * a parallel loop over disjoint ranges; a no-op without copies. */
void ds_matmul_bf16_refresh(const float *p, int64_t n);

#endif
