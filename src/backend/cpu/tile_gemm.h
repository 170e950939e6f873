/*
 * tile_gemm.h — FP32 GEMM on small, cache-resident operands with arbitrary
 * strides, for kernels that multiply tiles inside their own parallel loop
 * (attention's QKᵀ, PV, dS·K, dSᵀ·Q): no packing, no threads.
 *
 *   C (m, n) = or += A (m, k) · B (k, n)
 *   A(i, p) = A[i·sai + p·sap]   (row-major: sai = lda, sap = 1;
 *                                  transposed storage: sai = 1, sap = lda)
 *   B(p, j) = B[p·ldb + j]       C(i, j) = C[i·ldc + j]
 *
 * Register-blocked micro-kernels: 8 rows × 32 columns on AVX-512, 6 × 16 on
 * AVX2+FMA (cpu_isa.h picks at run time), masked column edges; each C(i, j)
 * is one FMA chain over p in order, so every ISA path returns the same bits
 * as the scalar loop (fmaf chain), which is the oracle of tests/test_attention.c.
 */
#ifndef DS_TILE_GEMM_H
#define DS_TILE_GEMM_H

#include <stdint.h>

void ds_tile_gemm(float *C, int64_t ldc, const float *A, int64_t sai, int64_t sap, const float *B, int64_t ldb,
                  int64_t m, int64_t n, int64_t k, int acc);

#endif
