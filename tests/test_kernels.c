/*
 * test_kernels.c — op-level tests: every fast kernel against its scalar
 * reference (backend/cpu/kernels.h) on random inputs with awkward sizes (not
 * multiples of the SIMD width or the block sizes), plus a few properties the
 * references must have themselves (softmax rows sum to 1, rotation keeps norms).
 * Tolerances are relative to the largest reference value: FP32 with a
 * different summation order gives ~1e-6; 1e-5 leaves room for long sums.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "backend/cpu/kernels.h"
#include "backend/cpu/backward.h"
#include "backend/cpu/cpu_isa.h"
#include "backend/cpu/smallm.h"
#include "test.h"

static float *randn(ds_rng *r, int64_t n, float s) {
    float *x = ds_malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = s * ds_rng_normal(r);
    return x;
}

TEST(matmul_fast_and_blocked_match_ref) {
    ds_rng r;
    ds_rng_seed(&r, 1);
    const int64_t shapes[][3] = {{1, 1, 1}, {3, 7, 5}, {17, 64, 33}, {64, 129, 70}, {5, 300, 4}, {128, 96, 256}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t N = shapes[s][0], C = shapes[s][1], OC = shapes[s][2];
        float *x = randn(&r, N * C, 1), *w = randn(&r, OC * C, 0.1f), *b = randn(&r, OC, 1);
        float *ref = ds_malloc((size_t)(N * OC) * 4), *fast = ds_malloc((size_t)(N * OC) * 4),
              *blk = ds_malloc((size_t)(N * OC) * 4);
        for (int bias = 0; bias < 2; bias++) {
            ds_matmul_forward_ref(ref, x, w, bias ? b : NULL, N, C, OC);
            ds_matmul_forward(fast, x, w, bias ? b : NULL, N, C, OC);
            ds_matmul_forward_blocked(blk, x, w, bias ? b : NULL, N, C, OC);
            double e1 = ds_test_max_rel(fast, ref, (size_t)(N * OC), 1e-6);
            double e2 = ds_test_max_rel(blk, ref, (size_t)(N * OC), 1e-6);
            CHECK_MSG(e1 < 1e-5, "fast N=%lld C=%lld OC=%lld bias=%d err %.3g", (long long)N, (long long)C,
                      (long long)OC, bias, e1);
            CHECK_MSG(e2 < 1e-5, "blocked N=%lld C=%lld OC=%lld bias=%d err %.3g", (long long)N, (long long)C,
                      (long long)OC, bias, e2);
        }
        free(x), free(w), free(b), free(ref), free(fast), free(blk);
    }
}

/* The few-row linears (smallm.c) against the double-accumulating references,
 * on every ISA path, odd shapes (rows across the 6-row and 16/32-column tile
 * edges, inner sizes not a multiple of 8), with and without bias / accumulate;
 * and a row's result does not depend on the other rows (one FMA chain each). */
TEST(matmul_smallm_forward_and_dinp_match_ref) {
    ds_rng r;
    ds_rng_seed(&r, 5);
    const int64_t shapes[][3] = {{1, 5, 3}, {17, 64, 33}, {24, 77, 130}, {32, 512, 256}, {33, 256, 512},
                                 {47, 129, 7}, {48, 8, 61}, {70, 100, 45}};
    for (int isa = ds_cpu_isa_max(); isa >= DS_ISA_SCALAR; isa--) {
        int prev = ds_cpu_isa_set(isa);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int64_t N = shapes[s][0], C = shapes[s][1], OC = shapes[s][2];
            float *x = randn(&r, N * C, 1), *w = randn(&r, OC * C, 0.1f), *b = randn(&r, OC, 1);
            float *dy = randn(&r, N * OC, 1), *d0 = randn(&r, N * C, 1);
            float *ref = ds_malloc((size_t)(N * OC) * 4), *got = ds_malloc((size_t)(N * OC) * 4);
            float *dref = ds_malloc((size_t)(N * C) * 4), *dgot = ds_malloc((size_t)(N * C) * 4);
            for (int bias = 0; bias < 2; bias++) {
                ds_matmul_forward_ref(ref, x, w, bias ? b : NULL, N, C, OC);
                ds_matmul_forward_smallm(got, x, w, bias ? b : NULL, N, C, OC);
                double e = ds_test_max_rel(got, ref, (size_t)(N * OC), 1e-6);
                CHECK_MSG(e < 1e-5, "%s forward N=%lld C=%lld OC=%lld bias=%d err %.3g", ds_cpu_isa_name(isa),
                          (long long)N, (long long)C, (long long)OC, bias, e);
            }
            /* the last row alone gives the same bits as inside the batch */
            float *one = ds_malloc((size_t)OC * 4);
            ds_matmul_forward_smallm(one, x + (N - 1) * C, w, b, 1, C, OC);
            ds_matmul_forward_smallm(got, x, w, b, N, C, OC);
            CHECK_MSG(!memcmp(one, got + (N - 1) * OC, (size_t)OC * 4), "%s forward N=%lld: row depends on the batch",
                      ds_cpu_isa_name(isa), (long long)N);
            for (int acc = 0; acc < 2; acc++) {
                memcpy(dref, d0, (size_t)(N * C) * 4), memcpy(dgot, d0, (size_t)(N * C) * 4);
                ds_matmul_backward_ref(dref, NULL, NULL, dy, x, w, N, C, OC, acc);
                ds_matmul_dinp_smallm(dgot, dy, w, N, C, OC, acc);
                double e = ds_test_max_rel(dgot, dref, (size_t)(N * C), 1e-6);
                CHECK_MSG(e < 1e-5, "%s dinp N=%lld C=%lld OC=%lld acc=%d err %.3g", ds_cpu_isa_name(isa),
                          (long long)N, (long long)C, (long long)OC, acc, e);
            }
            free(x), free(w), free(b), free(dy), free(d0), free(ref), free(got), free(dref), free(dgot), free(one);
        }
        ds_cpu_isa_set(prev);
    }
}

TEST(matmul_ref_small_exact) {
    /* independent check of the reference itself: hand-computed 2x2 */
    float x[] = {1, 2, 3, 4}, w[] = {1, 0, 0.5f, -1, 2, 2}, b[] = {0, 1, -1}, out[6];
    ds_matmul_forward_ref(out, x, w, b, 2, 2, 3);
    float want[] = {1, 0.5f - 2 + 1, 2 + 4 - 1, 3, 1.5f - 4 + 1, 6 + 8 - 1};
    for (int i = 0; i < 6; i++) CHECK_NEAR(out[i], want[i], 1e-6);
}

TEST(rmsnorm_matches_ref_and_definition) {
    ds_rng r;
    ds_rng_seed(&r, 2);
    int64_t N = 13, C = 77, ld = 90;
    float *x = randn(&r, N * ld, 3), *w = randn(&r, C, 1);
    float *a = ds_calloc((size_t)(N * 100), 4), *b = ds_calloc((size_t)(N * 100), 4), ra[13], rb[13];
    ds_rmsnorm_forward_ref(a, ra, x, w, N, C, 100, ld, 1e-5f);
    ds_rmsnorm_forward(b, rb, x, w, N, C, 100, ld, 1e-5f);
    CHECK(ds_test_max_rel(b, a, (size_t)(N * 100), 1e-6) < 1e-6);
    CHECK(ds_test_max_rel(rb, ra, 13, 1e-6) < 1e-6);
    /* definition: with w = 1, mean(y²) = 1 / (1 + eps·rstd²) ≈ 1 */
    float *ones = ds_malloc((size_t)C * 4);
    for (int64_t c = 0; c < C; c++) ones[c] = 1;
    ds_rmsnorm_forward_ref(a, ra, x, ones, N, C, C, ld, 0);
    for (int64_t n = 0; n < N; n++) {
        double ss = 0;
        for (int64_t c = 0; c < C; c++) ss += (double)a[n * C + c] * a[n * C + c];
        CHECK_NEAR(ss / C, 1.0, 1e-5);
    }
    /* padding columns of strided output untouched */
    CHECK(b[C] == 0 && b[99] == 0);
    free(x), free(w), free(a), free(b), free(ones);
}

TEST(rope_matches_ref_and_rotates_pairs) {
    ds_rng r;
    ds_rng_seed(&r, 3);
    int64_t B = 2, T = 9, nv = 3, ld = 20, off = 6, dr = 12, h = dr / 2;
    float *cs = ds_malloc((size_t)(T * h) * 4), *sn = ds_malloc((size_t)(T * h) * 4);
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < h; i++) {
            double ang = t * pow(10000.0, -2.0 * i / dr);
            cs[t * h + i] = (float)cos(ang);
            sn[t * h + i] = (float)sin(ang);
        }
    int64_t n = B * T * nv * ld;
    float *x = randn(&r, n, 1), *a = ds_malloc((size_t)n * 4), *b = ds_malloc((size_t)n * 4);
    memcpy(a, x, (size_t)n * 4);
    memcpy(b, x, (size_t)n * 4);
    ds_rope_forward_ref(a, cs, sn, B, T, nv, ld, off, dr, 0);
    ds_rope_forward(b, cs, sn, B, T, nv, ld, off, dr, 0);
    CHECK(ds_test_max_rel(b, a, (size_t)n, 1e-6) < 1e-6);
    for (int64_t v = 0; v < B * T * nv; v++) {
        int64_t t = (v / nv) % T;
        for (int64_t j = 0; j < ld; j++) {
            int64_t i = v * ld + j;
            if (j < off || j >= off + dr) { CHECK(a[i] == x[i]); continue; } /* non-rotary dims untouched */
            int64_t p = (j - off) / 2;
            /* pair (x0, x1) rotated by angle φ: as a complex number (x0 + i·x1)·e^{iφ} */
            double x0 = x[v * ld + off + 2 * p], x1 = x[v * ld + off + 2 * p + 1];
            double ang = t * pow(10000.0, -2.0 * p / dr);
            double want = (j - off) % 2 == 0 ? x0 * cos(ang) - x1 * sin(ang) : x0 * sin(ang) + x1 * cos(ang);
            CHECK_NEAR(a[i], want, 1e-5);
        }
    }
    /* halves layout: pair p is (x[p], x[p + dr/2]) */
    memcpy(a, x, (size_t)n * 4);
    ds_rope_forward(a, cs, sn, B, T, nv, ld, off, dr, 1);
    for (int64_t v = 0; v < B * T * nv; v++) {
        int64_t t = (v / nv) % T;
        for (int64_t p = 0; p < h; p++) {
            double x0 = x[v * ld + off + p], x1 = x[v * ld + off + p + h], ang = t * pow(10000.0, -2.0 * p / dr);
            CHECK_NEAR(a[v * ld + off + p], x0 * cos(ang) - x1 * sin(ang), 1e-5);
            CHECK_NEAR(a[v * ld + off + p + h], x0 * sin(ang) + x1 * cos(ang), 1e-5);
        }
    }
    free(cs), free(sn), free(x), free(a), free(b);
}

TEST(attention_blocked_matches_ref) {
    ds_rng r;
    ds_rng_seed(&r, 4);
    const int64_t cases[][5] = {{1, 1, 1, 4, 3}, {2, 7, 3, 8, 5}, {1, 150, 2, 24, 16}, {2, 70, 4, 40, 24}};
    for (size_t s = 0; s < sizeof cases / sizeof cases[0]; s++) {
        int64_t B = cases[s][0], T = cases[s][1], NH = cases[s][2], DQ = cases[s][3], DV = cases[s][4];
        float *q = randn(&r, B * T * NH * DQ, 1), *k = randn(&r, B * T * NH * DQ, 1), *v = randn(&r, B * T * NH * DV, 1);
        float *oa = ds_malloc((size_t)(B * T * NH * DV) * 4), *ob = ds_malloc((size_t)(B * T * NH * DV) * 4);
        float *la = ds_malloc((size_t)(B * NH * T) * 4), *lb = ds_malloc((size_t)(B * NH * T) * 4);
        float scale = 1.0f / sqrtf((float)DQ) * 1.7f;
        ds_attention_forward_ref(oa, la, q, k, v, B, T, NH, DQ, DV, scale);
        ds_attention_forward(ob, lb, q, k, v, B, T, NH, DQ, DV, scale);
        double e = ds_test_max_rel(ob, oa, (size_t)(B * T * NH * DV), 1e-6);
        double el = ds_test_max_rel(lb, la, (size_t)(B * NH * T), 1e-6);
        CHECK_MSG(e < 1e-5 && el < 1e-5, "B=%lld T=%lld: out err %.3g lse err %.3g", (long long)B, (long long)T, e, el);
        /* causality: query 0 attends only to key 0, so out[b,0,h] = v[b,0,h] */
        for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < NH; h++)
                for (int64_t c = 0; c < DV; c++)
                    CHECK_NEAR(ob[((b * T) * NH + h) * DV + c], v[((b * T) * NH + h) * DV + c], 1e-6);
        free(q), free(k), free(v), free(oa), free(ob), free(la), free(lb);
    }
}

TEST(swiglu_embedding_residual_match_ref) {
    ds_rng r;
    ds_rng_seed(&r, 5);
    int64_t N = 37, I = 129;
    float *g = randn(&r, N * I, 3), *u = randn(&r, N * I, 1), *a = ds_malloc((size_t)(N * I) * 4),
          *b = ds_malloc((size_t)(N * I) * 4);
    ds_swiglu_forward_ref(a, g, u, N, I);
    ds_swiglu_forward(b, g, u, N, I);
    CHECK(ds_test_max_rel(b, a, (size_t)(N * I), 1e-6) < 1e-6);
    CHECK_NEAR(a[0], g[0] / (1 + exp(-g[0])) * u[0], 1e-5 * (1 + fabs(a[0])));
    ds_residual_forward_ref(a, g, u, N * I);
    ds_residual_forward(b, g, u, N * I);
    CHECK(memcmp(a, b, (size_t)(N * I) * 4) == 0);
    int64_t V = 11, C = 19, BT = 23;
    float *wte = randn(&r, V * C, 1);
    int32_t ids[23];
    for (int i = 0; i < BT; i++) ids[i] = (int32_t)ds_rng_below(&r, (uint64_t)V);
    ds_embedding_forward_ref(a, ids, wte, BT, C);
    ds_embedding_forward(b, ids, wte, BT, C);
    CHECK(memcmp(a, b, (size_t)(BT * C) * 4) == 0);
    CHECK(a[5 * C + 3] == wte[ids[5] * C + 3]);
    free(g), free(u), free(a), free(b), free(wte);
}

/* An independent router: sort-based, written from doc §5.2 directly. */
static void route_naive(float *w, int32_t *idx, const float *logit, const float *bias, const ds_route_params *p) {
    int64_t E = p->E, K = p->K, G = p->G, per = E / G;
    double s[64], sel[64], gs[16];
    double mx = -INFINITY, sum = 0;
    for (int64_t e = 0; e < E; e++) mx = fmax(mx, logit[e]);
    for (int64_t e = 0; e < E; e++) sum += exp(logit[e] - mx);
    for (int64_t e = 0; e < E; e++) {
        s[e] = p->sigmoid ? 1 / (1 + exp(-(double)logit[e])) : exp(logit[e] - mx) / sum;
        sel[e] = s[e] + (bias ? bias[e] : 0);
    }
    if (G > 1 && p->Gk < G) {
        for (int64_t g = 0; g < G; g++) {
            /* sort the group's scores descending */
            double v[64];
            for (int64_t i = 0; i < per; i++) v[i] = sel[g * per + i];
            for (int64_t i = 0; i < per; i++)
                for (int64_t j = i + 1; j < per; j++)
                    if (v[j] > v[i]) { double t = v[i]; v[i] = v[j]; v[j] = t; }
            gs[g] = p->group_top2_sum ? v[0] + v[1] : v[0];
        }
        for (int64_t g = 0; g < G; g++) {
            int64_t rank = 0; /* groups strictly better */
            for (int64_t h = 0; h < G; h++) rank += gs[h] > gs[g];
            if (rank >= p->Gk)
                for (int64_t i = 0; i < per; i++) sel[g * per + i] = -INFINITY;
        }
    }
    int64_t n = 0;
    for (int64_t e = 0; e < E; e++) {
        int64_t rank = 0;
        for (int64_t f = 0; f < E; f++) rank += sel[f] > sel[e];
        if (rank < K) idx[n++] = (int32_t)e; /* ascending expert id */
    }
    double tot = 0;
    for (int64_t k = 0; k < K; k++) tot += s[idx[k]];
    for (int64_t k = 0; k < K; k++) w[k] = (float)((p->norm_topk ? s[idx[k]] / (tot + 1e-20) : s[idx[k]]) * p->scaling);
}

TEST(moe_route_matches_ref_and_naive) {
    ds_rng r;
    ds_rng_seed(&r, 6);
    ds_route_params ps[] = {
        {.E = 16, .K = 4, .G = 4, .Gk = 2, .sigmoid = 1, .group_top2_sum = 1, .norm_topk = 1, .scaling = 2.5f},
        {.E = 8, .K = 3, .G = 1, .Gk = 1, .sigmoid = 0, .group_top2_sum = 0, .norm_topk = 0, .scaling = 1.0f},
        {.E = 8, .K = 3, .G = 4, .Gk = 2, .sigmoid = 0, .group_top2_sum = 0, .norm_topk = 0, .scaling = 16.0f},
        {.E = 64, .K = 6, .G = 8, .Gk = 3, .sigmoid = 1, .group_top2_sum = 1, .norm_topk = 1, .scaling = 1.0f},
    };
    int64_t N = 200;
    for (size_t c = 0; c < sizeof ps / sizeof ps[0]; c++) {
        const ds_route_params *p = &ps[c];
        float *lg = randn(&r, N * p->E, 1.5f), *bias = randn(&r, p->E, 0.1f);
        for (int64_t e = 0; e < p->E; e++) bias[e] = fabsf(bias[e]);
        const float *bb = p->sigmoid ? bias : NULL;
        float *wa = ds_malloc((size_t)(N * p->K) * 4), *wb = ds_malloc((size_t)(N * p->K) * 4), wn[8];
        float *sa = ds_malloc((size_t)(N * p->E) * 4), *sb = ds_malloc((size_t)(N * p->E) * 4);
        int32_t *ia = ds_malloc((size_t)(N * p->K) * 4), *ib = ds_malloc((size_t)(N * p->K) * 4), in[8];
        ds_moe_route_forward_ref(wa, ia, sa, lg, bb, p, N);
        ds_moe_route_forward(wb, ib, sb, lg, bb, p, N);
        CHECK(memcmp(ia, ib, (size_t)(N * p->K) * 4) == 0);
        CHECK(ds_test_max_rel(wb, wa, (size_t)(N * p->K), 1e-6) < 1e-5);
        CHECK(ds_test_max_rel(sb, sa, (size_t)(N * p->E), 1e-6) < 1e-5);
        for (int64_t n = 0; n < N; n++) {
            route_naive(wn, in, lg + n * p->E, bb, p);
            CHECK_MSG(memcmp(in, ia + n * p->K, (size_t)p->K * 4) == 0, "case %zu token %lld: routing differs", c,
                      (long long)n);
            for (int64_t k = 0; k < p->K; k++) CHECK_NEAR(wa[n * p->K + k], wn[k], 1e-6 * p->scaling);
            if (p->norm_topk) {
                double t = 0;
                for (int64_t k = 0; k < p->K; k++) t += wa[n * p->K + k];
                CHECK_NEAR(t, p->scaling, 1e-5 * p->scaling);
            }
        }
        free(lg), free(bias), free(wa), free(wb), free(sa), free(sb), free(ia), free(ib);
    }
}

TEST(moe_sort_counts_and_inverse) {
    ds_rng r;
    ds_rng_seed(&r, 7);
    int64_t N = 101, K = 3, E = 9;
    int32_t idx[303], order[303], pos[303];
    int64_t counts[9], offsets[10], want[9] = {0};
    for (int64_t i = 0; i < N * K; i++) {
        idx[i] = (int32_t)ds_rng_below(&r, (uint64_t)E);
        want[idx[i]]++;
    }
    ds_moe_sort(counts, offsets, order, pos, idx, N, K, E);
    CHECK(offsets[0] == 0 && offsets[E] == N * K);
    for (int64_t e = 0; e < E; e++) {
        CHECK(counts[e] == want[e]);
        CHECK(offsets[e + 1] - offsets[e] == counts[e]);
        for (int64_t s = offsets[e]; s < offsets[e + 1]; s++) {
            CHECK(idx[order[s]] == e);
            if (s > offsets[e]) CHECK(order[s] > order[s - 1]); /* stable */
        }
    }
    for (int64_t i = 0; i < N * K; i++) CHECK(order[pos[i]] == i);
}
