/*
 * test_attention.c — the GEMM-form attention kernels (attention.c,
 * attention_backward.c) and the tile GEMM under them (tile_gemm.h), on every
 * ISA path this CPU has (cpu_isa.h: AVX-512, AVX2+FMA, scalar):
 *   - tile GEMM: bit-identical to the scalar fmaf chain, odd m/n/k, both A
 *     layouts, write and accumulate;
 *   - attention forward and backward against the double-precision scalar
 *     references (ds_attention_*_ref) on shapes that cross the 64-row query
 *     and key blocks unevenly (T = 1, 63, 64, 65, 130, 200) and odd head
 *     sizes, within FP32 reassociation (1e-5 of the largest value).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/backward.h"
#include "backend/cpu/cpu_isa.h"
#include "backend/cpu/kernels.h"
#include "backend/cpu/tile_gemm.h"
#include "base/base.h"
#include "test.h"

double ds_test_max_rel(const float *a, const float *b, size_t n, double floor_);

static float *randn(ds_rng *r, int64_t n, float s) {
    float *x = ds_malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = s * ds_rng_normal(r);
    return x;
}

TEST(tile_gemm_bits_match_scalar_every_isa) {
    ds_rng r;
    ds_rng_seed(&r, 31);
    const int64_t shapes[][3] = {{1, 1, 1}, {7, 5, 3}, {9, 33, 17}, {64, 64, 96}, {13, 70, 64}, {6, 16, 0}, {17, 48, 5}};
    int top = ds_cpu_isa_max(), prev = ds_cpu_isa();
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        int64_t lda = k + 3, ldb = n + 5, ldc = n + 2;
        float *A = randn(&r, m * lda + k * (m + 1), 1), *B = randn(&r, k * ldb + 1, 1), *C0 = randn(&r, m * ldc, 1);
        float *want = ds_malloc((size_t)(m * ldc) * 4), *got = ds_malloc((size_t)(m * ldc) * 4);
        for (int trans = 0; trans < 2; trans++)
            for (int acc = 0; acc < 2; acc++) {
                int64_t sai = trans ? 1 : lda, sap = trans ? m + 1 : 1;
                for (int64_t i = 0; i < m; i++)
                    for (int64_t j = 0; j < ldc; j++) {
                        float c = C0[i * ldc + j];
                        if (j < n) {
                            float sum = 0;
                            for (int64_t p = 0; p < k; p++) sum = fmaf(A[i * sai + p * sap], B[p * ldb + j], sum);
                            c = acc ? c + sum : sum;
                        }
                        want[i * ldc + j] = c;
                    }
                for (int isa = top; isa >= DS_ISA_SCALAR; isa--) {
                    ds_cpu_isa_set(isa);
                    memcpy(got, C0, (size_t)(m * ldc) * 4);
                    ds_tile_gemm(got, ldc, A, sai, sap, B, ldb, m, n, k, acc);
                    CHECK_MSG(!memcmp(got, want, (size_t)(m * ldc) * 4), "%s m=%lld n=%lld k=%lld trans=%d acc=%d",
                              ds_cpu_isa_name(isa), (long long)m, (long long)n, (long long)k, trans, acc);
                }
            }
        free(A), free(B), free(C0), free(want), free(got);
    }
    ds_cpu_isa_set(prev);
}

static const int64_t g_cases[][5] = {{1, 1, 1, 4, 3},   {2, 63, 3, 13, 7},  {1, 64, 2, 96, 64},
                                     {1, 65, 2, 33, 17}, {2, 130, 2, 24, 40}, {1, 200, 1, 96, 64}};

TEST(attention_gemm_form_forward_every_isa) {
    ds_rng r;
    ds_rng_seed(&r, 32);
    int top = ds_cpu_isa_max(), prev = ds_cpu_isa();
    for (size_t s = 0; s < sizeof g_cases / sizeof g_cases[0]; s++) {
        int64_t B = g_cases[s][0], T = g_cases[s][1], NH = g_cases[s][2], DQ = g_cases[s][3], DV = g_cases[s][4];
        int64_t nq = B * T * NH * DQ, nv = B * T * NH * DV, nl = B * NH * T;
        float *q = randn(&r, nq, 1), *k = randn(&r, nq, 1), *v = randn(&r, nv, 1);
        float *oa = ds_malloc((size_t)nv * 4), *ob = ds_malloc((size_t)nv * 4);
        float *la = ds_malloc((size_t)nl * 4), *lb = ds_malloc((size_t)nl * 4);
        float scale = 1.5f / sqrtf((float)DQ);
        ds_attention_forward_ref(oa, la, q, k, v, B, T, NH, DQ, DV, scale);
        for (int isa = top; isa >= DS_ISA_SCALAR; isa--) {
            ds_cpu_isa_set(isa);
            ds_attention_forward(ob, lb, q, k, v, B, T, NH, DQ, DV, scale);
            double e = ds_test_max_rel(ob, oa, (size_t)nv, 1e-6), el = ds_test_max_rel(lb, la, (size_t)nl, 1e-6);
            CHECK_MSG(e < 1e-5 && el < 1e-5, "%s B=%lld T=%lld NH=%lld DQ=%lld DV=%lld: out %.3g lse %.3g",
                      ds_cpu_isa_name(isa), (long long)B, (long long)T, (long long)NH, (long long)DQ, (long long)DV,
                      e, el);
        }
        free(q), free(k), free(v), free(oa), free(ob), free(la), free(lb);
    }
    ds_cpu_isa_set(prev);
}

TEST(attention_gemm_form_backward_every_isa) {
    ds_rng r;
    ds_rng_seed(&r, 33);
    int top = ds_cpu_isa_max(), prev = ds_cpu_isa();
    for (size_t s = 0; s < sizeof g_cases / sizeof g_cases[0]; s++) {
        int64_t B = g_cases[s][0], T = g_cases[s][1], NH = g_cases[s][2], DQ = g_cases[s][3], DV = g_cases[s][4];
        int64_t nq = B * T * NH * DQ, nv = B * T * NH * DV, nl = B * NH * T;
        float *q = randn(&r, nq, 1), *k = randn(&r, nq, 1), *v = randn(&r, nv, 1), *dout = randn(&r, nv, 1);
        float *out = ds_malloc((size_t)nv * 4), *lse = ds_malloc((size_t)nl * 4);
        float scale = 1.5f / sqrtf((float)DQ);
        ds_attention_forward_ref(out, lse, q, k, v, B, T, NH, DQ, DV, scale);
        float *g[3], *w[3];
        int64_t len[3] = {nq, nq, nv};
        for (int i = 0; i < 3; i++) g[i] = ds_malloc((size_t)len[i] * 4), w[i] = ds_malloc((size_t)len[i] * 4);
        ds_attention_backward_ref(w[0], w[1], w[2], dout, out, lse, q, k, v, B, T, NH, DQ, DV, scale);
        for (int isa = top; isa >= DS_ISA_SCALAR; isa--) {
            ds_cpu_isa_set(isa);
            for (int i = 0; i < 3; i++) memset(g[i], 0xff, (size_t)len[i] * 4); /* NaN: every element written */
            ds_attention_backward(g[0], g[1], g[2], dout, out, lse, q, k, v, B, T, NH, DQ, DV, scale);
            for (int i = 0; i < 3; i++) {
                double e = ds_test_max_rel(g[i], w[i], (size_t)len[i], 1e-6);
                CHECK_MSG(e < 1e-5, "%s d%s B=%lld T=%lld NH=%lld DQ=%lld DV=%lld: err %.3g", ds_cpu_isa_name(isa),
                          i == 0 ? "q" : i == 1 ? "k" : "v", (long long)B, (long long)T, (long long)NH, (long long)DQ,
                          (long long)DV, e);
            }
        }
        for (int i = 0; i < 3; i++) free(g[i]), free(w[i]);
        free(q), free(k), free(v), free(dout), free(out), free(lse);
    }
    ds_cpu_isa_set(prev);
}
