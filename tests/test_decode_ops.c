/*
 * test_decode_ops.c — the decode and sampling entries of the ops table
 * (backend/cpu/decode.h, docs/engine.md §3.3): each CPU entry against its
 * scalar reference (ds_ops_ref) and both against an oracle written here from
 * the entry's definition, on odd shapes and on ones large enough for the CPU
 * entries to split over threads.
 *  - kv_append: exact placement, nothing else written;
 *  - mla_absorbed_attention: against the expanded attention in double (keys
 *    k_j = [W_UK c_j ; k_pe_j], values W_UV c_j, causal softmax), the algebra
 *    the absorbed form rests on;
 *  - the same two with each sequence at its own position in its own cache
 *    row (pos_b, row_b: continuous batching), and rope_pos_forward;
 *  - gather_rows, act_quant/dequant_1x128, argmax_rows, sample_probs,
 *    sample_pick.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "base/base.h"
#include "test.h"

static void fill(ds_rng *r, float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = ds_rng_normal(r);
}

static float *nan_buf(int64_t n) {
    float *x = ds_malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    memset(x, 0xff, (size_t)(n > 0 ? n : 1) * sizeof(float));
    return x;
}

TEST(decode_ops_kv_append) {
    /* B, n, pos, Lmax, rkv, dr */
    static const int64_t sh[][6] = {{1, 1, 0, 1, 1, 0}, {2, 3, 4, 9, 7, 2}, {3, 5, 11, 16, 33, 6}};
    ds_rng r;
    ds_rng_seed(&r, 3);
    for (size_t si = 0; si < sizeof sh / sizeof sh[0]; si++) {
        const int64_t B = sh[si][0], n = sh[si][1], pos = sh[si][2], Lmax = sh[si][3], rkv = sh[si][4], dr = sh[si][5];
        float *c = ds_malloc((size_t)(B * n * rkv) * sizeof(float)), *kva = ds_malloc((size_t)(B * n * (rkv + dr)) * sizeof(float));
        fill(&r, c, B * n * rkv);
        fill(&r, kva, B * n * (rkv + dr));
        const struct ds_ops *t[2] = {&ds_ops_cpu, &ds_ops_ref};
        for (int k = 0; k < 2; k++) {
            float *ckv = nan_buf(B * Lmax * rkv), *kpe = nan_buf(B * Lmax * dr);
            t[k]->kv_append(ckv, kpe, c, kva, B, n, pos, Lmax, rkv, dr, NULL, NULL);
            int bad = 0;
            for (int64_t b = 0; b < B; b++)
                for (int64_t j = 0; j < Lmax; j++) {
                    int in = j >= pos && j < pos + n;
                    for (int64_t i = 0; i < rkv; i++) {
                        float got = ckv[(b * Lmax + j) * rkv + i];
                        if (in ? got != c[(b * n + j - pos) * rkv + i] : !isnan(got)) bad++;
                    }
                    for (int64_t i = 0; i < dr; i++) {
                        float got = kpe[(b * Lmax + j) * dr + i];
                        if (in ? got != kva[(b * n + j - pos) * (rkv + dr) + rkv + i] : !isnan(got)) bad++;
                    }
                }
            CHECK_MSG(!bad, "kv_append %s: %d wrong elements at shape %zu", t[k]->name, bad, si);
            free(ckv), free(kpe);
        }
        free(c), free(kva);
    }
}

/* the expanded attention of one query row in double: out (nh*dv) */
static void expanded_oracle(double *out, const float *q, const float *ckv, const float *kpe, const float *kv_b,
                            int64_t t, int64_t nh, int64_t dn, int64_t dv, int64_t dr, int64_t rkv, float scale) {
    const int64_t dq = dn + dr;
    double *s = malloc((size_t)(t + 1) * sizeof(double));
    for (int64_t h = 0; h < nh; h++) {
        const float *wk = kv_b + h * (dn + dv) * rkv, *wv = wk + dn * rkv, *qh = q + h * dq;
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j <= t; j++) {
            double d = 0;
            for (int64_t i = 0; i < dn; i++) { /* k_nope = W_UK c_j */
                double k = 0;
                for (int64_t x = 0; x < rkv; x++) k += (double)wk[i * rkv + x] * ckv[j * rkv + x];
                d += (double)qh[i] * k;
            }
            for (int64_t i = 0; i < dr; i++) d += (double)qh[dn + i] * kpe[j * dr + i];
            s[j] = d * scale;
            if (s[j] > mx) mx = s[j];
        }
        for (int64_t j = 0; j <= t; j++) sum += s[j] = exp(s[j] - mx);
        for (int64_t v = 0; v < dv; v++) {
            double o = 0;
            for (int64_t j = 0; j <= t; j++) {
                double val = 0; /* v_j = W_UV c_j */
                for (int64_t x = 0; x < rkv; x++) val += (double)wv[v * rkv + x] * ckv[j * rkv + x];
                o += s[j] / sum * val;
            }
            out[h * dv + v] = o;
        }
    }
    free(s);
}

TEST(decode_ops_mla_absorbed_attention) {
    /* B, n, pos, Lmax, nh, dn, dv, dr, rkv; the last two split over threads */
    static const int64_t sh[][9] = {{1, 1, 0, 1, 1, 1, 1, 0, 1},       {2, 3, 4, 9, 3, 5, 4, 2, 7},
                                    {1, 2, 30, 40, 4, 16, 16, 8, 33},   {3, 1, 70, 80, 5, 8, 7, 6, 129},
                                    {2, 4, 10, 16, 8, 32, 16, 8, 64},   {1, 5, 300, 310, 8, 32, 16, 8, 64},
                                    {2, 37, 150, 200, 3, 16, 8, 4, 96}}; /* the last two: several key blocks */
    ds_rng r;
    ds_rng_seed(&r, 11);
    for (size_t si = 0; si < sizeof sh / sizeof sh[0]; si++) {
        const int64_t B = sh[si][0], n = sh[si][1], pos = sh[si][2], Lmax = sh[si][3], nh = sh[si][4];
        const int64_t dn = sh[si][5], dv = sh[si][6], dr = sh[si][7], rkv = sh[si][8], dq = dn + dr, N = B * n;
        const float scale = 1.0f / sqrtf((float)dq);
        float *q = ds_malloc((size_t)(N * nh * dq) * sizeof(float));
        float *ckv = ds_malloc((size_t)(B * Lmax * rkv) * sizeof(float));
        float *kpe = ds_malloc((size_t)(B * Lmax * dr + 1) * sizeof(float));
        float *kv_b = ds_malloc((size_t)(nh * (dn + dv) * rkv) * sizeof(float));
        fill(&r, q, N * nh * dq);
        fill(&r, ckv, B * Lmax * rkv);
        fill(&r, kpe, B * Lmax * dr);
        fill(&r, kv_b, nh * (dn + dv) * rkv);
        /* positions past pos+n-1 hold garbage the causal mask must not read */
        for (int64_t b = 0; b < B; b++)
            for (int64_t j = pos + n; j < Lmax; j++) ckv[(b * Lmax + j) * rkv] = NAN;
        float *att_c = nan_buf(N * nh * dv), *att_r = nan_buf(N * nh * dv);
        ds_ops_cpu.mla_absorbed_attention(att_c, q, ckv, kpe, kv_b, B, n, pos, Lmax, nh, dn, dv, dr, rkv, scale, NULL, NULL);
        ds_ops_ref.mla_absorbed_attention(att_r, q, ckv, kpe, kv_b, B, n, pos, Lmax, nh, dn, dv, dr, rkv, scale, NULL, NULL);
        double *want = malloc((size_t)(N * nh * dv) * sizeof(double));
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < n; i++)
                expanded_oracle(want + (b * n + i) * nh * dv, q + (b * n + i) * nh * dq, ckv + b * Lmax * rkv,
                                kpe + b * Lmax * dr, kv_b, pos + i, nh, dn, dv, dr, rkv, scale);
        double mx = 1e-30, ec = 0, er = 0;
        for (int64_t i = 0; i < N * nh * dv; i++) mx = fabs(want[i]) > mx ? fabs(want[i]) : mx;
        for (int64_t i = 0; i < N * nh * dv; i++) {
            double a = isnan(att_c[i]) ? INFINITY : fabs(att_c[i] - want[i]) / mx;
            double b = isnan(att_r[i]) ? INFINITY : fabs(att_r[i] - want[i]) / mx;
            ec = a > ec ? a : ec;
            er = b > er ? b : er;
        }
        /* FP32 sums over rkv, dn and the positions in another order than the oracle's double */
        CHECK_MSG(ec < 1e-5 && er < 1e-5, "absorbed attention shape %zu: cpu err %.3g, ref err %.3g", si, ec, er);
        free(q), free(ckv), free(kpe), free(kv_b), free(att_c), free(att_r), free(want);
    }
}

/* The CPU entry computes each (query, head) row the same way whatever else
 * the call holds: a chunk of n queries equals n one-query calls (decode
 * steps at the successive positions) bit for bit, at 1 and 2 threads, so a
 * prompt's attention does not depend on how it was cut into chunks (serve's
 * prefix cache, batched prefill) */
TEST(decode_ops_mla_absorbed_attention_chunk_equals_steps) {
    const int64_t n = 37, pos = 150, Lmax = 200, nh = 8, dn = 16, dv = 8, dr = 4, rkv = 96, dq = dn + dr;
    ds_rng r;
    ds_rng_seed(&r, 17);
    const float scale = 1.0f / sqrtf((float)dq);
    float *q = ds_malloc((size_t)(n * nh * dq) * sizeof(float));
    float *ckv = ds_malloc((size_t)(Lmax * rkv) * sizeof(float)), *kpe = ds_malloc((size_t)(Lmax * dr) * sizeof(float));
    float *kv_b = ds_malloc((size_t)(nh * (dn + dv) * rkv) * sizeof(float));
    fill(&r, q, n * nh * dq);
    fill(&r, ckv, Lmax * rkv);
    fill(&r, kpe, Lmax * dr);
    fill(&r, kv_b, nh * (dn + dv) * rkv);
    float *chunk = nan_buf(n * nh * dv), *steps = nan_buf(n * nh * dv), *one = nan_buf(n * nh * dv);
    ds_ops_cpu.mla_absorbed_attention(chunk, q, ckv, kpe, kv_b, 1, n, pos, Lmax, nh, dn, dv, dr, rkv, scale, NULL, NULL);
    for (int64_t i = 0; i < n; i++)
        ds_ops_cpu.mla_absorbed_attention(steps + i * nh * dv, q + i * nh * dq, ckv, kpe, kv_b, 1, 1, pos + i, Lmax, nh,
                                          dn, dv, dr, rkv, scale, NULL, NULL);
    const int th = omp_get_max_threads();
    omp_set_num_threads(1);
    ds_ops_cpu.mla_absorbed_attention(one, q, ckv, kpe, kv_b, 1, n, pos, Lmax, nh, dn, dv, dr, rkv, scale, NULL, NULL);
    omp_set_num_threads(th);
    CHECK_MSG(!memcmp(chunk, steps, (size_t)(n * nh * dv) * sizeof(float)), "a chunk's rows differ from one-query steps");
    CHECK_MSG(!memcmp(chunk, one, (size_t)(n * nh * dv) * sizeof(float)), "the rows differ between thread counts");
    free(q), free(ckv), free(kpe), free(kv_b), free(chunk), free(steps), free(one);
}

TEST(decode_ops_gather_rows) {
    ds_rng r;
    ds_rng_seed(&r, 5);
    const int64_t S = 13, H = 37, n = 6;
    const int32_t idx[6] = {12, 0, 5, 5, 7, 1};
    float *src = ds_malloc((size_t)(S * H) * sizeof(float));
    fill(&r, src, S * H);
    const struct ds_ops *t[2] = {&ds_ops_cpu, &ds_ops_ref};
    for (int k = 0; k < 2; k++) {
        float *dst = nan_buf(n * H + 1);
        t[k]->gather_rows(dst, src, idx, n, H);
        CHECK(!memcmp(dst + 0 * H, src + 12 * H, (size_t)H * 4) && !memcmp(dst + 3 * H, src + 5 * H, (size_t)H * 4));
        int bad = 0;
        for (int64_t i = 0; i < n * H; i++) bad += dst[i] != src[idx[i / H] * H + i % H];
        CHECK_MSG(!bad && isnan(dst[n * H]), "gather_rows %s: %d wrong", t[k]->name, bad);
        free(dst);
    }
    free(src);
}

TEST(decode_ops_act_quant_roundtrip) {
    ds_rng r;
    ds_rng_seed(&r, 9);
    const int64_t R = 5, C = 300, G = (C + 127) / 128;
    float *x = ds_malloc((size_t)(R * C) * sizeof(float)), *y = ds_malloc((size_t)(R * C) * sizeof(float));
    fill(&r, x, R * C);
    x[7] = 0;
    x[C + 3] = 1e-12f; /* underflows to a subnormal or zero code */
    uint8_t *q = ds_malloc((size_t)(R * C));
    float *s = ds_malloc((size_t)(R * G) * sizeof(float));
    ds_ops_cpu.act_quant_1x128(q, s, x, R, C);
    ds_ops_cpu.act_dequant_1x128(y, q, s, R, C);
    int bad = 0;
    for (int64_t i = 0; i < R; i++)
        for (int64_t g = 0; g < G; g++) {
            double amax = 0;
            for (int64_t j = g * 128; j < C && j < g * 128 + 128; j++) amax = fmax(amax, fabs(x[i * C + j]));
            /* the tile scale maps amax to E4M3's largest value 448 */
            if (fabs(s[i * G + g] - amax / 448) > 1e-6 * amax) bad++;
            for (int64_t j = g * 128; j < C && j < g * 128 + 128; j++) {
                double e = fabs(y[i * C + j] - x[i * C + j]);
                /* 3 mantissa bits: half an ulp is 2^-4 relative; subnormals: 2^-10 of the scale */
                if (e > fabs(x[i * C + j]) / 16 + s[i * G + g] * 0x1p-10 * 1.0001) bad++;
            }
        }
    CHECK_MSG(!bad, "act 1x128 round trip: %d values or scales off", bad);
    CHECK(y[7] == 0);
    free(x), free(y), free(q), free(s);
}

TEST(decode_ops_argmax_rows) {
    ds_rng r;
    ds_rng_seed(&r, 2);
    const int64_t N = 9, V = 10007; /* large enough for the CPU entry to split rows */
    float *x = ds_malloc((size_t)(N * V) * sizeof(float));
    fill(&r, x, N * V);
    x[3 * V + 17] = x[3 * V + 4000] = 50; /* a tie: the first one */
    x[5 * V + V - 1] = 60;                /* the last column */
    for (int64_t i = 0; i < V; i++) x[7 * V + i] = -1; /* all equal: 0 */
    const struct ds_ops *t[2] = {&ds_ops_cpu, &ds_ops_ref};
    for (int k = 0; k < 2; k++) {
        int32_t out[9];
        t[k]->argmax_rows(out, x, N, V);
        int bad = 0;
        for (int64_t n = 0; n < N; n++) {
            int64_t best = 0;
            for (int64_t i = 1; i < V; i++)
                if (x[n * V + i] > x[n * V + best]) best = i;
            bad += out[n] != best;
        }
        CHECK_MSG(!bad && out[3] == 17 && out[5] == V - 1 && out[7] == 0, "argmax_rows %s: %d rows wrong", t[k]->name,
                  bad);
    }
    free(x);
}

/* oracle of sample_probs: sort by value (ties by index), keep top-k, then the
 * smallest prefix with mass ≥ top_p of the top-k distribution, softmax(l/T) over it */
static void probs_oracle(double *p, const float *l, int64_t V, double T, int64_t top_k, double top_p) {
    int64_t *o = malloc((size_t)V * sizeof(int64_t));
    for (int64_t i = 0; i < V; i++) o[i] = i;
    for (int64_t i = 1; i < V; i++) /* insertion sort, stable: ties keep index order */
        for (int64_t j = i; j > 0 && l[o[j]] > l[o[j - 1]]; j--) {
            int64_t t = o[j];
            o[j] = o[j - 1];
            o[j - 1] = t;
        }
    int64_t keep = top_k > 0 && top_k < V ? top_k : V;
    double z = 0;
    for (int64_t i = 0; i < keep; i++) z += exp((l[o[i]] - l[o[0]]) / T);
    if (top_p < 1) {
        double cum = 0;
        int64_t i = 0;
        while (i < keep && (cum += exp((l[o[i]] - l[o[0]]) / T) / z) < top_p) i++;
        keep = i < keep ? i + 1 : keep;
        z = 0;
        for (i = 0; i < keep; i++) z += exp((l[o[i]] - l[o[0]]) / T);
    }
    for (int64_t i = 0; i < V; i++) p[i] = 0;
    for (int64_t i = 0; i < keep; i++) p[o[i]] = exp((l[o[i]] - l[o[0]]) / T) / z;
    free(o);
}

TEST(decode_ops_sample_probs_pick) {
    const float lg[9] = {0.5f, 2.0f, -1.0f, 2.0f, 1.5f, 0.0f, 3.0f, -2.0f, 1.0f};
    const int64_t V = 9;
    const struct { double T; int64_t k; double p; } cases[] = {
        {0, 0, 1}, {1, 0, 1}, {0.7, 0, 1}, {1, 3, 1}, {1, 0, 0.6}, {2, 4, 0.5}, {1, 2, 1}, {1, 9, 0.999}};
    const struct ds_ops *t[2] = {&ds_ops_cpu, &ds_ops_ref};
    for (int k = 0; k < 2; k++)
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            float prob[9];
            int32_t scratch[9];
            double want[9];
            t[k]->sample_probs(prob, scratch, lg, V, cases[c].T, cases[c].k, cases[c].p);
            if (cases[c].T <= 0) {
                for (int64_t i = 0; i < V; i++) want[i] = i == 6;
            } else {
                probs_oracle(want, lg, V, cases[c].T, cases[c].k, cases[c].p);
            }
            double e = 0;
            for (int64_t i = 0; i < V; i++) e = fmax(e, fabs(prob[i] - want[i]));
            CHECK_MSG(e < 1e-6, "sample_probs %s case %zu: max err %.3g", t[k]->name, c, e);
        }
    /* the draw: first token whose cumulative mass exceeds u, zero-probability tokens skipped */
    const float pr[6] = {0, 0.25f, 0, 0.5f, 0.25f, 0};
    const struct { double u; int32_t id; } draws[] = {{0, 1}, {0.2499, 1}, {0.2501, 3}, {0.7499, 3}, {0.7501, 4}, {0.99999, 4}};
    for (int k = 0; k < 2; k++)
        for (size_t d = 0; d < sizeof draws / sizeof draws[0]; d++)
            CHECK_MSG(t[k]->sample_pick(pr, 6, draws[d].u) == draws[d].id, "sample_pick %s u=%g", t[k]->name,
                      draws[d].u);
}

/* The few-row GEMVs sit inside the cpu table's linears (docs/engine.md §3.3):
 * for N ≤ DS_LINEAR_ROWWISE_MAX rows its matmul, linear and resident-weight
 * entries give each row the one-row GEMV kernels' bits, above that the
 * GEMM's; the ref table stays the scalar GEMM at every N. */
#include "backend/cpu/gemv.h"
#include "backend/cpu/smallm.h"
#include "backend/cpu/kernels.h"
#include "num/dtype.h"
TEST(decode_ops_cpu_linears_take_gemv_for_few_rows) {
    ds_rng r;
    ds_rng_seed(&r, 17);
    const int64_t C = 256, OC = 160, NMAX = DS_LINEAR_ROWWISE_MAX + 2;
    float *x = ds_malloc((size_t)(NMAX * C) * sizeof(float)), *w = ds_malloc((size_t)(OC * C) * sizeof(float));
    float *b = ds_malloc((size_t)OC * sizeof(float));
    float *o1 = ds_malloc((size_t)(NMAX * OC) * sizeof(float)), *o2 = ds_malloc((size_t)(NMAX * OC) * sizeof(float));
    fill(&r, x, NMAX * C);
    fill(&r, w, OC * C);
    fill(&r, b, OC);
    uint8_t *q = ds_malloc((size_t)(OC * C));
    float *sc = ds_malloc((size_t)(2 * 2) * sizeof(float));
    uint16_t *wb = ds_malloc((size_t)(OC * C) * sizeof(uint16_t));
    for (int64_t i = 0; i < OC * C; i++) {
        q[i] = (uint8_t)(ds_rng_below(&r, 0x7e) | (ds_rng_below(&r, 2) << 7)); /* any finite E4M3 code */
        wb[i] = ds_f32_to_bf16(w[i]);
    }
    for (int i = 0; i < 4; i++) sc[i] = 0.01f * (float)(i + 1);
    const ds_fp8w w8 = {q, sc, OC, C, NULL}, w16 = {NULL, NULL, OC, C, wb};
    /* up to DS_LINEAR_ROWWISE_MAX rows: every row as the one-row GEMV computes
     * it alone (a batched decode step equals batch-1 steps); beyond: the GEMMs */
    for (int64_t N = 1; N <= NMAX; N++) {
        const size_t nb = (size_t)(N * OC) * sizeof(float);
        const int rw = N <= DS_LINEAR_ROWWISE_MAX;
        ds_ops_cpu.matmul_forward(o1, x, w, b, N, C, OC);
        if (rw) for (int64_t i = 0; i < N; i++) ds_gemv_forward(o2 + i * OC, x + i * C, w, b, 1, C, OC);
        else if (ds_smallm_use(N, 0)) ds_matmul_forward_smallm(o2, x, w, b, N, C, OC); /* few-row FP32 GEMM (AVX-512) */
        else ds_matmul_forward(o2, x, w, b, N, C, OC);
        CHECK_MSG(!memcmp(o1, o2, nb), "cpu matmul_forward N=%lld: not the %s", (long long)N, rw ? "row-wise GEMV" : "GEMM");
        ds_ops_cpu.linear_forward(o1, x, w, b, N, C, OC);
        CHECK_MSG(!memcmp(o1, o2, nb), "cpu linear_forward N=%lld", (long long)N);
        ds_ops_cpu.linear_fp8w_forward(o1, x, &w8, b, N, C, OC);
        if (rw) for (int64_t i = 0; i < N; i++) ds_gemv_fp8w_forward(o2 + i * OC, x + i * C, &w8, b, 1, C, OC);
        else ds_linear_fp8w_forward(o2, x, &w8, b, N, C, OC);
        CHECK_MSG(!memcmp(o1, o2, nb), "cpu linear_fp8w_forward (FP8) N=%lld", (long long)N);
        ds_ops_cpu.linear_fp8w_forward(o1, x, &w16, b, N, C, OC);
        if (rw) for (int64_t i = 0; i < N; i++) ds_gemv_bf16w_forward(o2 + i * OC, x + i * C, &w16, b, 1, C, OC);
        else ds_linear_bf16w_forward(o2, x, &w16, b, N, C, OC);
        CHECK_MSG(!memcmp(o1, o2, nb), "cpu linear_fp8w_forward (BF16) N=%lld", (long long)N);
        ds_ops_ref.matmul_forward(o1, x, w, b, N, C, OC);
        ds_matmul_forward_ref(o2, x, w, b, N, C, OC);
        CHECK_MSG(!memcmp(o1, o2, nb), "ref matmul_forward N=%lld is not the scalar GEMM", (long long)N);
    }
    free(x), free(w), free(b), free(o1), free(o2), free(q), free(sc), free(wb);
}

/* continuous batching: sequence b at position pos_b[b] of cache row row_b[b]
 * (rows permuted inside a larger cache, positions all different) */
TEST(decode_ops_kv_append_rows) {
    enum { B = 3, R = 5, n = 2, Lmax = 12, rkv = 9, dr = 4 };
    const int64_t pos_b[B] = {7, 0, 3}, row_b[B] = {4, 1, 2};
    ds_rng r;
    ds_rng_seed(&r, 5);
    float c[B * n * rkv], kva[B * n * (rkv + dr)];
    fill(&r, c, B * n * rkv);
    fill(&r, kva, B * n * (rkv + dr));
    const struct ds_ops *t[2] = {&ds_ops_cpu, &ds_ops_ref};
    for (int k = 0; k < 2; k++) {
        float *ckv = nan_buf(R * Lmax * rkv), *kpe = nan_buf(R * Lmax * dr);
        t[k]->kv_append(ckv, kpe, c, kva, B, n, 99, Lmax, rkv, dr, pos_b, row_b);
        int bad = 0;
        for (int64_t row = 0; row < R; row++)
            for (int64_t j = 0; j < Lmax; j++) {
                int64_t b = -1;
                for (int64_t x = 0; x < B; x++)
                    if (row_b[x] == row && j >= pos_b[x] && j < pos_b[x] + n) b = x;
                for (int64_t i = 0; i < rkv; i++) {
                    float got = ckv[(row * Lmax + j) * rkv + i];
                    if (b >= 0 ? got != c[(b * n + j - pos_b[b]) * rkv + i] : !isnan(got)) bad++;
                }
                for (int64_t i = 0; i < dr; i++) {
                    float got = kpe[(row * Lmax + j) * dr + i];
                    if (b >= 0 ? got != kva[(b * n + j - pos_b[b]) * (rkv + dr) + rkv + i] : !isnan(got)) bad++;
                }
            }
        CHECK_MSG(!bad, "kv_append %s with pos_b, row_b: %d wrong elements", t[k]->name, bad);
        free(ckv), free(kpe);
    }
}

/* absorbed attention with per-sequence positions and rows: against the
 * expanded oracle over each sequence's own row and prefix, and the CPU entry
 * equal bit for bit to one call per sequence (rows do not mix) */
TEST(decode_ops_mla_absorbed_attention_rows) {
    /* B, n, R, Lmax, nh, dn, dv, dr, rkv; the second splits over threads */
    static const int64_t sh[][9] = {{3, 1, 4, 20, 3, 5, 4, 2, 7}, {4, 2, 6, 90, 8, 32, 16, 8, 64}};
    ds_rng r;
    ds_rng_seed(&r, 13);
    for (size_t si = 0; si < sizeof sh / sizeof sh[0]; si++) {
        const int64_t B = sh[si][0], n = sh[si][1], R = sh[si][2], Lmax = sh[si][3], nh = sh[si][4];
        const int64_t dn = sh[si][5], dv = sh[si][6], dr = sh[si][7], rkv = sh[si][8], dq = dn + dr, N = B * n;
        int64_t pos_b[4], row_b[4];
        for (int64_t b = 0; b < B; b++) pos_b[b] = (b * 37 + 5) % (Lmax - n), row_b[b] = R - 1 - b;
        const float scale = 1.0f / sqrtf((float)dq);
        float *q = ds_malloc((size_t)(N * nh * dq) * sizeof(float));
        float *ckv = ds_malloc((size_t)(R * Lmax * rkv) * sizeof(float));
        float *kpe = ds_malloc((size_t)(R * Lmax * dr) * sizeof(float));
        float *kv_b = ds_malloc((size_t)(nh * (dn + dv) * rkv) * sizeof(float));
        fill(&r, q, N * nh * dq);
        fill(&r, ckv, R * Lmax * rkv);
        fill(&r, kpe, R * Lmax * dr);
        fill(&r, kv_b, nh * (dn + dv) * rkv);
        /* past each sequence's prefix, and in rows no sequence uses: garbage */
        for (int64_t row = 0; row < R; row++) {
            int64_t end = 0;
            for (int64_t b = 0; b < B; b++)
                if (row_b[b] == row) end = pos_b[b] + n;
            for (int64_t j = end; j < Lmax; j++) ckv[(row * Lmax + j) * rkv] = NAN, kpe[(row * Lmax + j) * dr] = NAN;
        }
        float *att_c = nan_buf(N * nh * dv), *att_r = nan_buf(N * nh * dv), *att_1 = nan_buf(N * nh * dv);
        ds_ops_cpu.mla_absorbed_attention(att_c, q, ckv, kpe, kv_b, B, n, 0, Lmax, nh, dn, dv, dr, rkv, scale, pos_b, row_b);
        ds_ops_ref.mla_absorbed_attention(att_r, q, ckv, kpe, kv_b, B, n, 0, Lmax, nh, dn, dv, dr, rkv, scale, pos_b, row_b);
        for (int64_t b = 0; b < B; b++)
            ds_ops_cpu.mla_absorbed_attention(att_1 + b * n * nh * dv, q + b * n * nh * dq, ckv + row_b[b] * Lmax * rkv,
                                              kpe + row_b[b] * Lmax * dr, kv_b, 1, n, pos_b[b], Lmax, nh, dn, dv, dr, rkv,
                                              scale, NULL, NULL);
        double *want = malloc((size_t)(N * nh * dv) * sizeof(double));
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < n; i++)
                expanded_oracle(want + (b * n + i) * nh * dv, q + (b * n + i) * nh * dq, ckv + row_b[b] * Lmax * rkv,
                                kpe + row_b[b] * Lmax * dr, kv_b, pos_b[b] + i, nh, dn, dv, dr, rkv, scale);
        double mx = 1e-30, ec = 0, er = 0;
        int same = 1;
        for (int64_t i = 0; i < N * nh * dv; i++) mx = fabs(want[i]) > mx ? fabs(want[i]) : mx;
        for (int64_t i = 0; i < N * nh * dv; i++) {
            double a = isnan(att_c[i]) ? INFINITY : fabs(att_c[i] - want[i]) / mx;
            double b = isnan(att_r[i]) ? INFINITY : fabs(att_r[i] - want[i]) / mx;
            ec = a > ec ? a : ec;
            er = b > er ? b : er;
            same &= memcmp(&att_c[i], &att_1[i], sizeof(float)) == 0;
        }
        CHECK_MSG(ec < 1e-5 && er < 1e-5, "absorbed attention rows, shape %zu: cpu err %.3g, ref err %.3g", si, ec, er);
        CHECK_MSG(same, "absorbed attention rows, shape %zu: batched cpu differs from per-sequence calls", si);
        free(q), free(ckv), free(kpe), free(kv_b), free(att_c), free(att_r), free(att_1), free(want);
    }
}

/* rope_pos_forward: sequence b's token i rotated by the angles of position
 * pos_b[b]+i, computed here in double from the tables (both layouts) */
TEST(decode_ops_rope_pos_forward) {
    enum { B = 3, T = 2, nv = 3, ld = 10, off = 2, dr = 8, h2 = dr / 2, L = 40 };
    const int64_t pos_b[B] = {17, 0, 35};
    ds_rng r;
    ds_rng_seed(&r, 17);
    float cs[L * h2], sn[L * h2], x0[B * T * nv * ld];
    fill(&r, cs, L * h2);
    fill(&r, sn, L * h2);
    fill(&r, x0, B * T * nv * ld);
    for (int halves = 0; halves < 2; halves++) {
        double want[B * T * nv * ld];
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < T; t++)
                for (int64_t v = 0; v < nv; v++) {
                    const float *p = x0 + ((b * T + t) * nv + v) * ld;
                    double *w = want + ((b * T + t) * nv + v) * ld;
                    for (int64_t i = 0; i < ld; i++) w[i] = p[i];
                    const float *c = cs + (pos_b[b] + t) * h2, *s = sn + (pos_b[b] + t) * h2;
                    for (int64_t i = 0; i < h2; i++) {
                        int64_t i0 = off + (halves ? i : 2 * i), i1 = off + (halves ? i + h2 : 2 * i + 1);
                        w[i0] = (double)p[i0] * c[i] - (double)p[i1] * s[i];
                        w[i1] = (double)p[i1] * c[i] + (double)p[i0] * s[i];
                    }
                }
        const struct ds_ops *t[2] = {&ds_ops_cpu, &ds_ops_ref};
        for (int k = 0; k < 2; k++) {
            float x[B * T * nv * ld];
            memcpy(x, x0, sizeof x);
            t[k]->rope_pos_forward(x, cs, sn, pos_b, B, T, nv, ld, off, dr, halves);
            double e = 0;
            for (int64_t i = 0; i < B * T * nv * ld; i++) e = fabs(x[i] - want[i]) > e ? fabs(x[i] - want[i]) : e;
            CHECK_MSG(e < 1e-5, "rope_pos_forward %s (halves %d): err %.3g", t[k]->name, halves, e);
        }
    }
}
