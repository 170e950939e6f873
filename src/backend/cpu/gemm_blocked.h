/*
 * gemm_blocked.h — the packed, blocked CPU GEMM driver shared by the BF16 and
 * FP8 GEMMs (backend/cpu/gemm_bf16.h, backend/cpu/gemm_fp8.h); not for direct use.
 *
 *   C (M, N) [+]= sum over K blocks kb of 128:  bsum(m, n, kb) * sA(m, kb) * sB(n, kb)
 *   bsum = sum_{k in kb} A(m, k) * B(n, k), accumulated in FP32 in k order
 *
 * Each operand is a matrix of R rows (M for A, N for B) by the inner size K,
 * stored either (R, K) row-major (trans = 0) or (K, R) row-major (trans = 1),
 * of one element type.  Scaled operands (FP8) give a scale per (row, K block)
 * through their quantization granularity (num/quant.h); the block sum is then
 * promoted as C = fma(bsum, sA * sB, C) — DeepSeek's FP32 promotion every 128
 * elements of K.  Unscaled operands (BF16, F32) promote as C = C + bsum.
 * Element products are exact in FP32 (E4M3 x E4M3: 8 significant bits; BF16 x
 * BF16: 16), so FMA or multiply-add give the same bits: the fast path and the
 * scalar reference (ds_gemm_blocked_ref_) return identical results.
 */
#ifndef DS_GEMM_BLOCKED_H
#define DS_GEMM_BLOCKED_H

#include <stdint.h>
#include "num/quant.h"

typedef enum { DS_GEMM_E4M3 = 0, DS_GEMM_E5M2, DS_GEMM_BF16, DS_GEMM_F32 } ds_gemm_elt;

typedef struct {
    const void *p;         /* elements */
    ds_gemm_elt elt;
    int trans;             /* 0: stored (R, K); 1: stored (K, R) */
    const float *scale;    /* NULL: unscaled */
    ds_quant_gran gran;    /* layout of scale, for the stored matrix */
} ds_gemm_op_;

#define DS_GEMM_KB 128     /* the promotion interval (= the quantization group) */

/* Checks shapes/granularities; 0 or -1 with ds_err set. */
int ds_gemm_check_op_(const char *what, const ds_gemm_op_ *op);
void ds_gemm_blocked_(float *C, const ds_gemm_op_ *A, const ds_gemm_op_ *B,
                      int64_t M, int64_t N, int64_t K, int accumulate);
void ds_gemm_blocked_ref_(float *C, const ds_gemm_op_ *A, const ds_gemm_op_ *B,
                          int64_t M, int64_t N, int64_t K, int accumulate);
/* Element (r, k) of an operand of R rows and inner size K, decoded to FP32. */
float ds_gemm_op_at_(const ds_gemm_op_ *op, int64_t r, int64_t k, int64_t R, int64_t K);
/* The scale of (r, K block kb); 1 for unscaled operands.  Inline: the packs
 * look one up per row of a strip, and the granularity's switch is hoisted out
 * of that loop. */
static inline float ds_gemm_op_scale_(const ds_gemm_op_ *op, int64_t r, int64_t kb, int64_t R, int64_t K) {
    if (!op->scale) return 1.0f;
    const int64_t k = kb * DS_GEMM_KB;
    return op->trans ? ds_quant_scale_at(op->scale, op->gran, K, R, k, r)
                     : ds_quant_scale_at(op->scale, op->gran, R, K, r, k);
}
/* "avx2+fma" or "scalar": the micro-kernel compiled in. */
const char *ds_gemm_isa_(void);

#endif
