/*
 * gemm_bf16.h — BF16 GEMM on the CPU: BF16 inputs, FP32 accumulation, FP32 out.
 *
 *   C (M, N) [+]= A . B^T,  A: M rows, B: N rows, inner size K
 *
 * trans_a = 0: A stored (M, K); 1: stored (K, M).  Likewise trans_b with N.
 * So fprop Y = X W^T is (0, 0); dgrad dX = dY W is A = dY (0), B = W stored
 * (N, K) = (inner, rows) (1); wgrad dW = dY^T X is (1, 1) with accumulate.
 * Sums run in FP32 over blocks of 128 of K, each block sum added to C in
 * order; ds_bf16_gemm_ref does the same in plain C (same bits).
 */
#ifndef DS_GEMM_BF16_H
#define DS_GEMM_BF16_H

#include <stdint.h>

int ds_bf16_gemm(float *C, const uint16_t *A, int trans_a, const uint16_t *B, int trans_b,
                 int64_t M, int64_t N, int64_t K, int accumulate);
int ds_bf16_gemm_ref(float *C, const uint16_t *A, int trans_a, const uint16_t *B, int trans_b,
                     int64_t M, int64_t N, int64_t K, int accumulate);
/* FP32 -> BF16 (RNE) of n values; _run on the calling thread only (from a
 * parallel loop), _n threaded. */
void ds_f32_to_bf16_n(uint16_t *dst, const float *src, int64_t n);
void ds_f32_to_bf16_run(uint16_t *dst, const float *src, int64_t n);
/* the same bits with streaming stores (a destination read much later) */
void ds_f32_to_bf16_stream(uint16_t *dst, const float *src, int64_t n);

#endif
