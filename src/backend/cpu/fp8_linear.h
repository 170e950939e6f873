/*
 * fp8_linear.h — the three GEMMs of a linear layer Y = X W^T in DeepSeek-V3's
 * FP8 recipe (docs/deepseek-v3.md §8.5), quantizing on the fly from FP32:
 *
 *   forward   Y  (M, N)  = X (M, K) . W (N, K)^T      X 1x128, W 128x128
 *   backward  dX (M, K)  = dY (M, N) . W (N, K)        dY 1x128, W 128x128
 *             dW (N, K) += dY^T (N, M) . X (M, K)      dY, X 128x1 (tiles of 128 tokens)
 *
 * all E4M3 with amax/448 scales (amax >= 1e-4) and FP32 promotion every 128
 * of the inner dimension; outputs FP32.  Parameter gradients accumulate (+=),
 * activation gradients overwrite, as everywhere in dsv3.  The caller owns the
 * workspace (ds_fp8_linear_workspace bytes, for the largest M it will pass),
 * so nothing is allocated inside a training step.
 */
#ifndef DS_FP8_LINEAR_H
#define DS_FP8_LINEAR_H

#include <stddef.h>
#include <stdint.h>

size_t ds_fp8_linear_workspace(int64_t M, int64_t N, int64_t K);
int ds_fp8_linear_forward(float *Y, const float *X, const float *W, int64_t M, int64_t N, int64_t K,
                          void *ws);
/* dX and/or dW may be NULL to skip that GEMM. */
int ds_fp8_linear_backward(float *dX, float *dW, const float *dY, const float *X, const float *W,
                           int64_t M, int64_t N, int64_t K, void *ws);

#endif
