/*
 * linear_bf16w.c — the BF16-weight linear and embedding gather of
 * BF16-resident inference (linear_fp8w.h): FP32 activations times a weight
 * kept as BF16 bits, widened to FP32 (exact) on the way into the blocked GEMM
 * driver's packs (gemm_blocked.h: A = inp F32 (N, C), B = W BF16 (OC, C),
 * unscaled: per 128 of C an FP32 block sum added to the output).
 */
#include "backend/cpu/kernels.h"

#include <string.h>

#include "backend/cpu/gemm_blocked.h"
#include "num/dtype.h"

static void add_bias(float *out, const float *bias, int64_t N, int64_t OC) {
    if (!bias) return;
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < OC; o++) out[n * OC + o] += bias[o];
}

static void linear(float *out, const float *inp, const ds_fp8w *w, const float *bias, int64_t N, int64_t C,
                   int64_t OC, int ref) {
    if (N <= 0 || OC <= 0) return;
    const ds_gemm_op_ a = {inp, DS_GEMM_F32, 0, NULL, DS_QUANT_TENSOR};
    const ds_gemm_op_ b = {w->b16, DS_GEMM_BF16, 0, NULL, DS_QUANT_TENSOR};
    if (ref) ds_gemm_blocked_ref_(out, &a, &b, N, OC, C, 0);
    else ds_gemm_blocked_(out, &a, &b, N, OC, C, 0);
    add_bias(out, bias, N, OC);
}

void ds_linear_bf16w_forward(float *out, const float *inp, const ds_fp8w *w, const float *bias, int64_t N, int64_t C,
                             int64_t OC) {
    linear(out, inp, w, bias, N, C, OC, 0);
}

void ds_linear_bf16w_forward_ref(float *out, const float *inp, const ds_fp8w *w, const float *bias, int64_t N,
                                 int64_t C, int64_t OC) {
    linear(out, inp, w, bias, N, C, OC, 1);
}

void ds_embedding_bf16_forward(float *out, const int32_t *ids, const uint16_t *table, int64_t N, int64_t C) {
#pragma omp parallel for schedule(static) if (N * C > 65536)
    for (int64_t n = 0; n < N; n++) {
        const uint16_t *src = table + (int64_t)ids[n] * C;
        float *dst = out + n * C;
        for (int64_t i = 0; i < C; i++) dst[i] = ds_bf16_to_f32(src[i]);
    }
}

void ds_embedding_bf16_forward_ref(float *out, const int32_t *ids, const uint16_t *table, int64_t N, int64_t C) {
    for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < C; i++) out[n * C + i] = ds_bf16_to_f32(table[(int64_t)ids[n] * C + i]);
}
