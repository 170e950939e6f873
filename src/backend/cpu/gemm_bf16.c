/*
 * gemm_bf16.c — BF16 x BF16 -> FP32 GEMM through the blocked driver of
 * gemm_blocked.c (decode to FP32 while packing, FP32 FMA micro-kernel).
 */
#include "backend/cpu/gemm_bf16.h"
#include "backend/cpu/gemm_blocked.h"
#include "base/base.h"
#include "num/dtype.h"

static int run(float *C, const uint16_t *A, int ta, const uint16_t *B, int tb,
               int64_t M, int64_t N, int64_t K, int accumulate, int ref) {
    if (M < 0 || N < 0 || K < 0)
        return ds_err("bf16 gemm: negative size (M=%lld, N=%lld, K=%lld)", (long long)M, (long long)N, (long long)K);
    if (!A || !B || !C) return ds_err("bf16 gemm: no data");
    ds_gemm_op_ a = {A, DS_GEMM_BF16, ta ? 1 : 0, NULL, DS_QUANT_TENSOR};
    ds_gemm_op_ b = {B, DS_GEMM_BF16, tb ? 1 : 0, NULL, DS_QUANT_TENSOR};
    if (ref) ds_gemm_blocked_ref_(C, &a, &b, M, N, K, accumulate);
    else ds_gemm_blocked_(C, &a, &b, M, N, K, accumulate);
    return 0;
}

int ds_bf16_gemm(float *C, const uint16_t *A, int trans_a, const uint16_t *B, int trans_b,
                 int64_t M, int64_t N, int64_t K, int accumulate) {
    return run(C, A, trans_a, B, trans_b, M, N, K, accumulate, 0);
}
int ds_bf16_gemm_ref(float *C, const uint16_t *A, int trans_a, const uint16_t *B, int trans_b,
                     int64_t M, int64_t N, int64_t K, int accumulate) {
    return run(C, A, trans_a, B, trans_b, M, N, K, accumulate, 1);
}

void ds_f32_to_bf16_n(uint16_t *dst, const float *src, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) dst[i] = ds_f32_to_bf16(src[i]);
}
