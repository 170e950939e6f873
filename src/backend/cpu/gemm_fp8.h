/*
 * gemm_fp8.h — block-scaled FP8 GEMM on the CPU, DeepSeek-V3 style
 * (docs/deepseek-v3.md §8.4, §8.5):
 *
 *   C[m, n] = sum_kb ( sum_{k in kb} A8[m, k] * B8[n, k] ) * sA(m, kb) * sB(n, kb)
 *
 * with kb the 128-wide blocks of the inner dimension K: each block's sum is
 * accumulated in an FP32 register and then promoted into the FP32 result with
 * its two scales (the fix for the tensor cores' limited accumulator).  Codes
 * are E4M3 (or E5M2) as made by ds_quantize (num/quant.h); scales are the
 * dequantization multipliers it returns, in its layouts.
 *
 * The three GEMMs of a linear layer Y = X W^T (X (M, K), W (N, K), Y (M, N)):
 *
 *   fprop  ds_fp8_gemm        Y  (M, N)  = X (M, K)   . W (N, K)^T
 *          X quantized 1x128 (scales (M, ceil(K/128))), W 128x128 (scales (ceil(N/128), ceil(K/128)))
 *   dgrad  ds_fp8_gemm_dgrad  dX (M, K)  = dY (M, N)  . W (N, K)           (inner dim N)
 *          dY quantized 1x128 (scales (M, ceil(N/128))), W: the same codes and
 *          128x128 scales as fprop (a 128x128 block is a block either way round)
 *   wgrad  ds_fp8_gemm_wgrad  dW (N, K) += dY (M, N)^T . X (M, K)          (inner dim M, tokens)
 *          dY and X quantized 128x1 (DS_QUANT_TILE_128x1: tiles of 128 tokens,
 *          scales (ceil(M/128), N) and (ceil(M/128), K)); no transposed copy
 *
 * For other layouts use ds_fp8_gemm_ex with ds_fp8_operand: any operand may be
 * stored (rows, K) or (K, rows) with tensor, row (stored (rows, K) only), tile
 * along K, or 128x128 block scales.
 *
 * opts (NULL = defaults): accumulate adds into C instead of overwriting it;
 * acc = DS_FP8_ACC_LIMITED replaces the promotion by an emulation of a tensor
 * core that accumulates the whole K with ~14-bit alignment (slow, scalar; for
 * the accumulation study): per chunk of acc_chunk products, every product
 * (times its scales) and the running sum are aligned to the largest exponent
 * among them and truncated toward zero to acc_bits significant bits, then summed.
 *
 * Each function returns 0, or -1 with ds_err set (bad sizes or layouts).
 * The *_ref versions are the scalar references the fast path is tested
 * against: with the same block order they give the same bits.
 */
#ifndef DS_GEMM_FP8_H
#define DS_GEMM_FP8_H

#include <stdint.h>
#include "num/fp8.h"
#include "num/quant.h"

typedef enum { DS_FP8_ACC_PROMOTE = 0, DS_FP8_ACC_LIMITED = 1 } ds_fp8_acc;

typedef struct {
    int accumulate;        /* C += result (weight-gradient accumulation) */
    ds_fp8_acc acc;        /* promotion every 128 (default) or the limited emulation */
    int acc_bits;          /* limited: significant bits kept (0 = 14) */
    int acc_chunk;         /* limited: products aligned together (0 = 32) */
} ds_fp8_gemm_opts;

typedef struct {
    const uint8_t *q;      /* codes */
    const float *scale;    /* ds_quantize's scales of the stored matrix */
    ds_quant_gran gran;
    int trans;             /* 0: stored (rows, K); 1: stored (K, rows) */
    ds_fp8_format fmt;
} ds_fp8_operand;

/* C (M, N) = A . B^T over inner size K; A has M rows, B has N rows. */
int ds_fp8_gemm_ex(float *C, const ds_fp8_operand *A, const ds_fp8_operand *B,
                   int64_t M, int64_t N, int64_t K, const ds_fp8_gemm_opts *opts);
int ds_fp8_gemm_ex_ref(float *C, const ds_fp8_operand *A, const ds_fp8_operand *B,
                       int64_t M, int64_t N, int64_t K, const ds_fp8_gemm_opts *opts);

/* fprop: C (M, N) = A (M, K) 1x128 . B (N, K)^T 128x128, E4M3. */
int ds_fp8_gemm(float *C, const uint8_t *A_q, const float *A_scales, const uint8_t *B_q,
                const float *B_scales, int64_t M, int64_t N, int64_t K, const ds_fp8_gemm_opts *opts);
int ds_fp8_gemm_ref(float *C, const uint8_t *A_q, const float *A_scales, const uint8_t *B_q,
                    const float *B_scales, int64_t M, int64_t N, int64_t K, const ds_fp8_gemm_opts *opts);
/* dgrad: dX (M, K) = dY (M, N) 1x128 . W (N, K) 128x128, E4M3. */
int ds_fp8_gemm_dgrad(float *dX, const uint8_t *dY_q, const float *dY_scales, const uint8_t *W_q,
                      const float *W_scales, int64_t M, int64_t N, int64_t K, const ds_fp8_gemm_opts *opts);
/* wgrad: dW (N, K) (+)= dY (M, N)^T . X (M, K), both 128x1, E4M3.  Pass
 * opts->accumulate = 1 to add into dW as parameter gradients do. */
int ds_fp8_gemm_wgrad(float *dW, const uint8_t *dY_q, const float *dY_scales, const uint8_t *X_q,
                      const float *X_scales, int64_t M, int64_t N, int64_t K, const ds_fp8_gemm_opts *opts);

/* The micro-kernel in use ("avx2+fma", "scalar"). */
const char *ds_fp8_gemm_isa(void);

#endif
