/*
 * gemv_fp8.c — decode-step matmul throughput (bench/bench_fp8_infer.sh): one
 * row times a weight (OC, C), FP32 weights (ds_gemv_forward) against FP8
 * weights + 128x128 scales (ds_gemv_fp8w_forward) and BF16 weights
 * (ds_gemv_bf16w_forward), over enough matrices (64 MB of FP32) that the
 * weights come from memory, as in a real decode step.
 *   gemv_fp8 OC C REPS  ->  one JSON line: giga-weights per second of each
 */
#include <stdio.h>
#include <stdlib.h>

#include "base/base.h"
#include "backend/cpu/gemv.h"
#include "num/dtype.h"
#include "num/quant.h"

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: gemv_fp8 OC C REPS\n");
        return 2;
    }
    const int64_t OC = atoll(argv[1]), C = atoll(argv[2]), reps = atoll(argv[3]);
    if (OC <= 0 || C <= 0 || reps <= 0) return 2;
    const int64_t nmat = (64LL << 20) / (OC * C * 4) + 1;
    float **w = ds_malloc((size_t)nmat * sizeof *w);
    ds_fp8w *w8 = ds_malloc((size_t)nmat * sizeof *w8), *w16 = ds_malloc((size_t)nmat * sizeof *w16);
    ds_rng r;
    ds_rng_seed(&r, 1);
    ds_quant_opts o = ds_quant_defaults(DS_QUANT_BLOCK_128x128);
    for (int64_t i = 0; i < nmat; i++) {
        w[i] = ds_malloc((size_t)(OC * C) * sizeof(float));
        uint8_t *q = ds_malloc((size_t)(OC * C));
        float *s = ds_malloc((size_t)ds_quant_scale_count(DS_QUANT_BLOCK_128x128, OC, C) * sizeof(float));
        for (int64_t j = 0; j < OC * C; j++) w[i][j] = 0.05f * ds_rng_normal(&r);
        ds_quantize(q, s, w[i], OC, C, &o);
        w8[i] = (ds_fp8w){q, s, OC, C, NULL};
        uint16_t *b = ds_malloc((size_t)(OC * C) * sizeof(uint16_t));
        for (int64_t j = 0; j < OC * C; j++) b[j] = ds_f32_to_bf16(w[i][j]);
        w16[i] = (ds_fp8w){NULL, NULL, OC, C, b};
    }
    float *x = ds_malloc((size_t)C * sizeof(float)), *y = ds_malloc((size_t)OC * sizeof(float));
    for (int64_t j = 0; j < C; j++) x[j] = ds_rng_normal(&r);
    double best32 = 1e30, best8 = 1e30, best16 = 1e30;
    for (int pass = 0; pass < 3; pass++) {
        double t0 = ds_now();
        for (int64_t it = 0; it < reps; it++)
            for (int64_t i = 0; i < nmat; i++) ds_gemv_forward(y, x, w[i], NULL, 1, C, OC);
        double t1 = ds_now();
        for (int64_t it = 0; it < reps; it++)
            for (int64_t i = 0; i < nmat; i++) ds_gemv_fp8w_forward(y, x, &w8[i], NULL, 1, C, OC);
        double t2 = ds_now();
        for (int64_t it = 0; it < reps; it++)
            for (int64_t i = 0; i < nmat; i++) ds_gemv_bf16w_forward(y, x, &w16[i], NULL, 1, C, OC);
        double t3 = ds_now();
        if (t1 - t0 < best32) best32 = t1 - t0;
        if (t2 - t1 < best8) best8 = t2 - t1;
        if (t3 - t2 < best16) best16 = t3 - t2;
    }
    const double n = (double)reps * nmat * OC * C;
    printf("{\"oc\": %lld, \"c\": %lld, \"threads\": %d, \"fp32_gweights_per_s\": %.3f, \"fp32_gb_per_s\": %.2f, "
           "\"fp8_gweights_per_s\": %.3f, \"fp8_gb_per_s\": %.2f, \"speedup\": %.2f, "
           "\"bf16_gweights_per_s\": %.3f, \"bf16_gb_per_s\": %.2f, \"bf16_speedup\": %.2f}\n",
           (long long)OC, (long long)C, ds_threads(), n / best32 / 1e9, 4 * n / best32 / 1e9, n / best8 / 1e9,
           n / best8 / 1e9, best32 / best8, n / best16 / 1e9, 2 * n / best16 / 1e9, best32 / best16);
    return 0;
}
