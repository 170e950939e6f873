/*
 * smallm.h — FP32 linear forward and input gradient for few rows, the weight
 * read in place (no packing): the routed experts' GEMMs at small batches.
 * Used by the CPU table where ds_smallm_use says (backend/cpu/table.c,
 * matmul_backward.c): where they beat OpenBLAS sgemm on the experts' shapes
 * (512 <-> 256, one thread, weights streaming; docs/cpu.md).  Every output element is one FMA
 * chain over the inner index in order (independent of threads and of the
 * other rows).  References: ds_matmul_forward_ref / ds_matmul_backward_ref.
 */
#ifndef DS_SMALLM_H
#define DS_SMALLM_H

#include <stdint.h>

#define DS_SMALLM_MAX_ROWS 48
#define DS_SMALLM_DINP_MAX_ROWS 32

/* 1 when the CPU linears take these kernels for N rows (dinp: the input
 * gradient, else the forward): DS_LINEAR_ROWWISE_MAX < N ≤ the limits above,
 * on the AVX-512 path only (on AVX2 OpenBLAS's Haswell sgemm was as fast or
 * faster at these sizes: 68 against 53 GFLOP/s at 17 rows, 105 against 85 at
 * 40, one thread). */
int ds_smallm_use(int64_t N, int dinp);

/* out (N, OC) = inp (N, C) · weight (OC, C)ᵀ + bias (bias may be NULL) */
void ds_matmul_forward_smallm(float *out, const float *inp, const float *weight, const float *bias, int64_t N,
                              int64_t C, int64_t OC);
/* dinp (N, C) [+]= dout (N, OC) · weight (OC, C) (acc: add to dinp) */
void ds_matmul_dinp_smallm(float *dinp, const float *dout, const float *weight, int64_t N, int64_t C, int64_t OC,
                           int acc);

#endif
