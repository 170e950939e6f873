/*
 * test_backend_ops.c — the ops entries that replaced model.c's host loops
 * (docs/engine.md step 4): each CPU entry (ds_ops_cpu) equals its scalar
 * reference (ds_ops_ref) bit for bit, and the reference equals an oracle
 * written here from the entry's definition (backend/cpu/kernels.h), on odd
 * shapes and on one large enough for the CPU entries to split over threads.
 * The sums keep the reference's order (k ascending from 0), so the oracle is
 * exact too.  The entries of steps 4-6 (moe_sort, grouped_linear_*, the row
 * moves' backwards, embedding_bf16, act_quant/dequant, balance_loss, sumsq,
 * memory) are checked the same way on docs/engine.md §4.2's odd shapes, with
 * oracles from their definitions (a double GEMM, adjoint identities, the
 * E4M3 scale rule) and, for grouped_linear, a counting table that sees every
 * expert GEMM go through `self`.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "base/base.h"
#include "num/dtype.h"
#include "num/quant.h"
#include "test.h"

static void fill(ds_rng *r, float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = ds_rng_normal(r);
}

/* idx (N, K): K distinct experts per token in [0, E), ascending (as routing gives) */
static void random_idx(ds_rng *r, int32_t *idx, int64_t N, int64_t K, int64_t E) {
    for (int64_t n = 0; n < N; n++) {
        int64_t k = 0;
        for (int64_t e = 0; e < E && k < K; e++)
            if ((int64_t)ds_rng_below(r, (uint64_t)(E - e)) < K - k) idx[n * K + k++] = (int32_t)e;
    }
}

static int same_bits(const float *a, const float *b, int64_t n) { return memcmp(a, b, (size_t)n * sizeof(float)) == 0; }

/* shapes: N tokens, K experts each of E, row width H */
static const int64_t shapes[][4] = {{7, 3, 8, 33}, {1, 1, 1, 1}, {5, 2, 2, 17}, {257, 3, 11, 97}};

TEST(backend_ops_moe_permute_combine) {
    ds_rng r;
    ds_rng_seed(&r, 41);
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int64_t N = shapes[si][0], K = shapes[si][1], E = shapes[si][2], H = shapes[si][3], S = N * K;
        int32_t *idx = malloc((size_t)S * sizeof(int32_t)), *order = malloc((size_t)S * sizeof(int32_t));
        int32_t *pos = malloc((size_t)S * sizeof(int32_t));
        int64_t *counts = malloc((size_t)E * sizeof(int64_t)), *offsets = malloc((size_t)(E + 1) * sizeof(int64_t));
        float *x = malloc((size_t)(N * H) * sizeof(float)), *w = malloc((size_t)S * sizeof(float));
        float *e_out = malloc((size_t)(S * H) * sizeof(float));
        float *xs_c = malloc((size_t)(S * H) * sizeof(float)), *xs_r = malloc((size_t)(S * H) * sizeof(float));
        float *y_c = malloc((size_t)(N * H) * sizeof(float)), *y_r = malloc((size_t)(N * H) * sizeof(float));
        random_idx(&r, idx, N, K, E);
        ds_moe_sort(counts, offsets, order, pos, idx, N, K, E);
        fill(&r, x, N * H);
        fill(&r, w, S);
        fill(&r, e_out, S * H);
        memset(xs_c, 0xff, (size_t)(S * H) * sizeof(float)); /* NaN: rows left unwritten show */
        memset(y_c, 0xff, (size_t)(N * H) * sizeof(float));
        ds_ops_cpu.moe_permute(xs_c, x, order, N, K, H);
        ds_ops_ref.moe_permute(xs_r, x, order, N, K, H);
        ds_ops_cpu.moe_combine_forward(y_c, e_out, w, pos, N, K, H);
        ds_ops_ref.moe_combine_forward(y_r, e_out, w, pos, N, K, H);
        CHECK_MSG(same_bits(xs_c, xs_r, S * H), "permute cpu != ref at N=%lld K=%lld H=%lld", (long long)N,
                  (long long)K, (long long)H);
        CHECK_MSG(same_bits(y_c, y_r, N * H), "combine cpu != ref at N=%lld K=%lld H=%lld", (long long)N,
                  (long long)K, (long long)H);
        /* oracle: slot n*K+k sits at the sorted row s with order[s] == n*K+k */
        int bad_perm = 0, bad_comb = 0;
        for (int64_t n = 0; n < N; n++) {
            for (int64_t i = 0; i < H; i++) {
                float acc = 0;
                for (int64_t k = 0; k < K; k++) {
                    int64_t s = 0;
                    while (s < S && order[s] != n * K + k) s++;
                    if (s == S) { bad_perm++; continue; }
                    if (xs_r[s * H + i] != x[n * H + i]) bad_perm++;
                    acc += w[n * K + k] * e_out[s * H + i];
                }
                if (memcmp(&acc, &y_r[n * H + i], sizeof acc)) bad_comb++;
            }
        }
        CHECK_MSG(!bad_perm, "permute ref != oracle in %d places (N=%lld K=%lld H=%lld)", bad_perm, (long long)N,
                  (long long)K, (long long)H);
        CHECK_MSG(!bad_comb, "combine ref != oracle in %d places (N=%lld K=%lld H=%lld)", bad_comb, (long long)N,
                  (long long)K, (long long)H);
        free(idx), free(order), free(pos), free(counts), free(offsets), free(x), free(w), free(e_out);
        free(xs_c), free(xs_r), free(y_c), free(y_r);
    }
}

/* shapes: N tokens, nh heads, dn, dv, rkv, dr */
static const int64_t kv_shapes[][6] = {{7, 3, 5, 4, 6, 2}, {1, 1, 1, 1, 1, 0}, {3, 2, 0, 3, 4, 4},
                                       {211, 33, 8, 7, 13, 6}};

TEST(backend_ops_mla_kv_assemble) {
    ds_rng r;
    ds_rng_seed(&r, 42);
    for (size_t si = 0; si < sizeof kv_shapes / sizeof kv_shapes[0]; si++) {
        const int64_t N = kv_shapes[si][0], nh = kv_shapes[si][1], dn = kv_shapes[si][2], dv = kv_shapes[si][3];
        const int64_t rkv = kv_shapes[si][4], dr = kv_shapes[si][5], dq = dn + dr;
        const int64_t nkv = N * nh * (dn + dv), nkva = N * (rkv + dr), nk = N * nh * dq, nv = N * nh * dv;
        float *kv = malloc((size_t)nkv * sizeof(float)), *kva = malloc((size_t)nkva * sizeof(float));
        float *k_c = malloc((size_t)(nk + 1) * sizeof(float)), *k_r = malloc((size_t)(nk + 1) * sizeof(float));
        float *v_c = malloc((size_t)(nv + 1) * sizeof(float)), *v_r = malloc((size_t)(nv + 1) * sizeof(float));
        fill(&r, kv, nkv);
        fill(&r, kva, nkva);
        memset(k_c, 0xff, (size_t)(nk + 1) * sizeof(float)); /* NaN: anything left unwritten shows */
        memset(v_c, 0xff, (size_t)(nv + 1) * sizeof(float));
        ds_ops_cpu.mla_kv_assemble(k_c, v_c, kv, kva, N, nh, dn, dv, rkv, dr);
        ds_ops_ref.mla_kv_assemble(k_r, v_r, kv, kva, N, nh, dn, dv, rkv, dr);
        CHECK_MSG(same_bits(k_c, k_r, nk) && same_bits(v_c, v_r, nv), "kv_assemble cpu != ref at shape %zu", si);
        uint32_t tail_k, tail_v; /* the element past the end stays untouched */
        memcpy(&tail_k, k_c + nk, 4);
        memcpy(&tail_v, v_c + nv, 4);
        CHECK(tail_k == 0xffffffffu && tail_v == 0xffffffffu);
        /* oracle: element by element from the definition */
        int bad = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t h = 0; h < nh; h++) {
                for (int64_t i = 0; i < dq; i++) {
                    float want = i < dn ? kv[(n * nh + h) * (dn + dv) + i] : kva[n * (rkv + dr) + rkv + (i - dn)];
                    if (memcmp(&want, &k_r[(n * nh + h) * dq + i], 4)) bad++;
                }
                for (int64_t i = 0; i < dv; i++)
                    if (memcmp(&kv[(n * nh + h) * (dn + dv) + dn + i], &v_r[(n * nh + h) * dv + i], 4)) bad++;
            }
        CHECK_MSG(!bad, "kv_assemble ref != oracle in %d places at shape %zu", bad, si);
        free(kv), free(kva), free(k_c), free(k_r), free(v_c), free(v_r);
    }
}

TEST(backend_ops_rope_tables) {
    static const int64_t sh[][2] = {{7, 3}, {1, 1}, {33, 5}, {300, 64}}; /* T, h2; the last one splits over threads */
    static const float factors[] = {1.0f, 1.3f, 1.0f, 0.7f};
    for (size_t si = 0; si < sizeof sh / sizeof sh[0]; si++) {
        const int64_t T = sh[si][0], h2 = sh[si][1], n = T * h2;
        const float af = factors[si];
        float *inv = malloc((size_t)h2 * sizeof(float));
        float *c_c = malloc((size_t)(n + 1) * sizeof(float)), *s_c = malloc((size_t)(n + 1) * sizeof(float));
        float *c_r = malloc((size_t)n * sizeof(float)), *s_r = malloc((size_t)n * sizeof(float));
        for (int64_t i = 0; i < h2; i++) inv[i] = (float)pow(10000.0, -2.0 * (double)i / (double)(2 * h2));
        memset(c_c, 0xff, (size_t)(n + 1) * sizeof(float));
        memset(s_c, 0xff, (size_t)(n + 1) * sizeof(float));
        ds_ops_cpu.rope_tables(c_c, s_c, inv, af, T, h2);
        ds_ops_ref.rope_tables(c_r, s_r, inv, af, T, h2);
        CHECK_MSG(same_bits(c_c, c_r, n) && same_bits(s_c, s_r, n), "rope_tables cpu != ref at T=%lld h2=%lld",
                  (long long)T, (long long)h2);
        uint32_t tc, ts; /* the element past the end stays untouched */
        memcpy(&tc, c_c + n, 4);
        memcpy(&ts, s_c + n, 4);
        CHECK(tc == 0xffffffffu && ts == 0xffffffffu);
        /* oracle: the definition element by element, and cos² + sin² = attn_factor² */
        int bad = 0;
        double worst = 0;
        for (int64_t t = 0; t < T; t++)
            for (int64_t i = 0; i < h2; i++) {
                float ang = (float)t * inv[i];
                float wc = (float)cos((double)ang) * af, ws = (float)sin((double)ang) * af;
                if (memcmp(&wc, &c_r[t * h2 + i], 4) || memcmp(&ws, &s_r[t * h2 + i], 4)) bad++;
                double c = c_r[t * h2 + i], s = s_r[t * h2 + i];
                worst = fmax(worst, fabs(c * c + s * s - (double)af * af));
            }
        CHECK_MSG(!bad, "rope_tables ref != oracle in %d places at T=%lld h2=%lld", bad, (long long)T, (long long)h2);
        CHECK_NEAR(worst, 0, 1e-6);
        CHECK(c_r[0] == af && s_r[0] == 0); /* position 0: angle 0 */
        free(inv), free(c_c), free(s_c), free(c_r), free(s_r);
    }
}

/* ---- the entries of steps 4-6 (model side) ------------------------------------- */

static const struct ds_ops *const tables[] = {&ds_ops_cpu, &ds_ops_ref};

/* shapes: N tokens, K experts each of E, row width H (docs/engine.md §4.2: N 1, 3, 17; H 5, 129; E 3, 7; K 1, 2) */
static const int64_t odd[][4] = {{1, 1, 3, 5}, {3, 2, 7, 129}, {17, 2, 3, 5}, {17, 1, 7, 129}, {301, 2, 3, 33}};

TEST(backend_ops_moe_sort) {
    ds_rng r;
    ds_rng_seed(&r, 43);
    for (size_t si = 0; si < sizeof odd / sizeof odd[0]; si++) {
        const int64_t N = odd[si][0], K = odd[si][1], E = odd[si][2], S = N * K;
        int32_t *idx = malloc((size_t)S * 4), *order = malloc((size_t)S * 4), *pos = malloc((size_t)S * 4);
        int64_t *cnt = malloc((size_t)E * 8), *off = malloc((size_t)(E + 1) * 8);
        random_idx(&r, idx, N, K, E);
        for (int t = 0; t < 2; t++) {
            memset(order, 0xff, (size_t)S * 4);
            tables[t]->moe_sort(cnt, off, order, pos, idx, N, K, E);
            /* oracle: counts by counting, offsets their prefix sums, order lists
             * the slots of expert 0, then 1, ... each ascending; pos inverts order */
            int bad = 0;
            int64_t at = 0;
            for (int64_t e = 0; e < E; e++) {
                int64_t c = 0;
                if (off[e] != at) bad++;
                for (int64_t s = 0; s < S; s++)
                    if (idx[s] == e) {
                        if (order[at] != s || pos[s] != at) bad++;
                        at++, c++;
                    }
                if (cnt[e] != c) bad++;
            }
            if (off[E] != S) bad++;
            CHECK_MSG(!bad, "%s moe_sort: %d wrong at N=%lld K=%lld E=%lld", tables[t]->name, bad, (long long)N,
                      (long long)K, (long long)E);
        }
        free(idx), free(order), free(pos), free(cnt), free(off);
    }
}

/* the counting wrapper: a table whose linear entries count their calls, so a
 * grouped entry is seen to go through self (FP8 capture depends on it) */
static struct ds_ops counted;
static const struct ds_ops *counted_base;
static int n_linear_calls;
static void count_fwd(float *out, const float *inp, const float *w, const float *b, int64_t N, int64_t C, int64_t OC) {
    __atomic_fetch_add(&n_linear_calls, 1, __ATOMIC_RELAXED);
    counted_base->linear_forward(out, inp, w, b, N, C, OC);
}
static void count_fwd8(float *out, const float *inp, const ds_fp8w *w, const float *b, int64_t N, int64_t C,
                       int64_t OC) {
    __atomic_fetch_add(&n_linear_calls, 1, __ATOMIC_RELAXED);
    counted_base->linear_fp8w_forward(out, inp, w, b, N, C, OC);
}
static void count_bwd(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w, int64_t N,
                      int64_t C, int64_t OC, int acc) {
    __atomic_fetch_add(&n_linear_calls, 1, __ATOMIC_RELAXED);
    counted_base->linear_backward(dinp, dw, db, dout, inp, w, N, C, OC, acc);
}

TEST(backend_ops_grouped_linear) {
    ds_rng r;
    ds_rng_seed(&r, 44);
    for (size_t si = 0; si < sizeof odd / sizeof odd[0]; si++) {
        const int64_t N = odd[si][0], K = odd[si][1], E = odd[si][2], C = odd[si][3], OC = 7 + (int64_t)si * 5;
        const int64_t R = N * K;
        int32_t *idx = malloc((size_t)R * 4), *order = malloc((size_t)R * 4), *pos = malloc((size_t)R * 4);
        int64_t *cnt = malloc((size_t)E * 8), *off = malloc((size_t)(E + 1) * 8);
        random_idx(&r, idx, N, K, E);
        ds_moe_sort(cnt, off, order, pos, idx, N, K, E);
        float *inp = malloc((size_t)(R * C) * 4), *dout = malloc((size_t)(R * OC) * 4);
        float *wall = malloc((size_t)(E * OC * C) * 4), *out[2], *dinp[2], *dwall[2];
        const float **w = malloc((size_t)E * sizeof *w);
        float **dw[2];
        fill(&r, inp, R * C), fill(&r, dout, R * OC), fill(&r, wall, E * OC * C);
        for (int64_t e = 0; e < E; e++) w[e] = wall + e * OC * C;
        int64_t used = 0;
        for (int64_t e = 0; e < E; e++) used += cnt[e] > 0;
        for (int t = 0; t < 2; t++) {
            counted = *tables[t];
            counted_base = tables[t];
            counted.linear_forward = count_fwd, counted.linear_backward = count_bwd;
            out[t] = malloc((size_t)(R * OC) * 4), dinp[t] = malloc((size_t)(R * C) * 4);
            dwall[t] = calloc((size_t)(E * OC * C), 4), dw[t] = malloc((size_t)E * sizeof(float *));
            for (int64_t e = 0; e < E; e++) dw[t][e] = dwall[t] + e * OC * C;
            memset(out[t], 0xff, (size_t)(R * OC) * 4);
            n_linear_calls = 0;
            counted.grouped_linear_forward(&counted, out[t], inp, w, NULL, cnt, off, E, C, OC);
            CHECK_MSG(n_linear_calls == used, "%s grouped forward: %d linear calls for %lld experts with rows",
                      tables[t]->name, n_linear_calls, (long long)used);
            n_linear_calls = 0;
            memset(dinp[t], 0, (size_t)(R * C) * 4);
            counted.grouped_linear_backward(&counted, dinp[t], dw[t], dout, inp, w, cnt, off, E, C, OC, 0);
            counted.grouped_linear_backward(&counted, dinp[t], dw[t], dout, inp, w, cnt, off, E, C, OC, 1);
            CHECK(n_linear_calls == 2 * used);
            /* oracle in double: out_s = inp_s · W_eᵀ for the expert e owning sorted row s;
             * dinp = 2·dout·W_e (written, then added), dW_e = 2·Σ_s dout_sᵀ inp_s */
            double worst = 0, worst_d = 0, worst_w = 0;
            for (int64_t e = 0; e < E; e++)
                for (int64_t s = off[e]; s < off[e] + cnt[e]; s++) {
                    for (int64_t o = 0; o < OC; o++) {
                        double a = 0;
                        for (int64_t c = 0; c < C; c++) a += (double)inp[s * C + c] * w[e][o * C + c];
                        worst = fmax(worst, fabs(out[t][s * OC + o] - a) / (1 + fabs(a)));
                    }
                    for (int64_t c = 0; c < C; c++) {
                        double a = 0;
                        for (int64_t o = 0; o < OC; o++) a += (double)dout[s * OC + o] * w[e][o * C + c];
                        worst_d = fmax(worst_d, fabs(dinp[t][s * C + c] - 2 * a) / (1 + fabs(a)));
                    }
                }
            for (int64_t e = 0; e < E; e++)
                for (int64_t o = 0; o < OC; o++)
                    for (int64_t c = 0; c < C; c++) {
                        double a = 0;
                        for (int64_t s = off[e]; s < off[e] + cnt[e]; s++) a += (double)dout[s * OC + o] * inp[s * C + c];
                        worst_w = fmax(worst_w, fabs(dw[t][e][o * C + c] - 2 * a) / (1 + fabs(a)));
                    }
            CHECK_MSG(worst < 1e-5 && worst_d < 1e-5 && worst_w < 1e-5,
                      "%s grouped linear vs oracle: out %.3g dinp %.3g dw %.3g (shape %zu)", tables[t]->name, worst,
                      worst_d, worst_w, si);
        }
        /* the same GEMMs as the linear entries give, one expert at a time (bit
         * for bit, but for cpu with the experts in parallel, R >= 64·E: each
         * GEMM then runs on one thread, which may sum in another order) */
        const int exact_cpu = R < 64 * E;
        float *y = malloc((size_t)(R * OC) * 4);
        for (int t = 0; t < 2; t++) {
            for (int64_t e = 0; e < E; e++)
                if (cnt[e]) tables[t]->linear_forward(y + off[e] * OC, inp + off[e] * C, w[e], NULL, cnt[e], C, OC);
            CHECK_MSG((t == 0 && !exact_cpu) || same_bits(y, out[t], R * OC),
                      "%s grouped forward != linear per expert (shape %zu)", tables[t]->name, si);
        }
        /* FP8-resident experts: through linear_fp8w_forward, per expert */
        uint8_t *q = malloc((size_t)(E * OC * C));
        int64_t ns = ds_quant_scale_count(DS_QUANT_BLOCK_128x128, OC, C);
        float *sc = malloc((size_t)(E * ns) * 4);
        ds_fp8w *d8 = calloc((size_t)E, sizeof *d8);
        const ds_fp8w **w8 = calloc((size_t)E, sizeof *w8);
        ds_quant_opts qo = ds_quant_defaults(DS_QUANT_BLOCK_128x128);
        for (int64_t e = 0; e < E; e++) {
            CHECK(ds_quantize(q + e * OC * C, sc + e * ns, w[e], OC, C, &qo) == 0);
            d8[e] = (ds_fp8w){q + e * OC * C, sc + e * ns, OC, C, NULL};
            w8[e] = e % 2 ? &d8[e] : NULL; /* odd experts FP8-resident, even ones FP32 */
        }
        for (int t = 0; t < 2; t++) {
            counted = *tables[t];
            counted_base = tables[t];
            counted.linear_forward = count_fwd, counted.linear_fp8w_forward = count_fwd8;
            n_linear_calls = 0;
            counted.grouped_linear_forward(&counted, out[t], inp, w, w8, cnt, off, E, C, OC);
            CHECK(n_linear_calls == used);
            for (int64_t e = 0; e < E; e++) {
                if (!cnt[e]) continue;
                if (w8[e]) tables[t]->linear_fp8w_forward(y + off[e] * OC, inp + off[e] * C, w8[e], NULL, cnt[e], C, OC);
                else tables[t]->linear_forward(y + off[e] * OC, inp + off[e] * C, w[e], NULL, cnt[e], C, OC);
            }
            CHECK_MSG((t == 0 && !exact_cpu) || same_bits(y, out[t], R * OC),
                      "%s grouped forward with FP8 experts != per-expert entries (shape %zu)", tables[t]->name, si);
            CHECK(ds_test_max_rel(out[t], y, (size_t)(R * OC), 1e-3) < 1e-5);
        }
        free(q), free(sc), free(d8), free(w8), free(y);
        for (int t = 0; t < 2; t++) free(out[t]), free(dinp[t]), free(dwall[t]), free(dw[t]);
        free(idx), free(order), free(pos), free(cnt), free(off), free(inp), free(dout), free(wall), free(w);
    }
}

static double dot(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* the row moves' backwards are the adjoints of their forwards:
 * <dxs, permute(x)> = <permute_backward(dxs), x>,
 * <dk, K(kv, kva)> + <dv, V(kv)> = <dkv, kv> + <dkva, kva> */
TEST(backend_ops_row_move_backwards) {
    ds_rng r;
    ds_rng_seed(&r, 45);
    for (size_t si = 0; si < sizeof odd / sizeof odd[0]; si++) {
        const int64_t N = odd[si][0], K = odd[si][1], E = odd[si][2], H = odd[si][3], S = N * K;
        int32_t *idx = malloc((size_t)S * 4), *order = malloc((size_t)S * 4), *pos = malloc((size_t)S * 4);
        int64_t *cnt = malloc((size_t)E * 8), *off = malloc((size_t)(E + 1) * 8);
        random_idx(&r, idx, N, K, E);
        ds_moe_sort(cnt, off, order, pos, idx, N, K, E);
        float *x = malloc((size_t)(N * H) * 4), *dxs = malloc((size_t)(S * H) * 4), *xs = malloc((size_t)(S * H) * 4);
        float *dx[2] = {malloc((size_t)(N * H) * 4), malloc((size_t)(N * H) * 4)};
        fill(&r, x, N * H), fill(&r, dxs, S * H);
        ds_ops_ref.moe_permute(xs, x, order, N, K, H);
        for (int t = 0; t < 2; t++) {
            fill(&r, dx[t], N * H);
            float *base = malloc((size_t)(N * H) * 4);
            memcpy(base, dx[t], (size_t)(N * H) * 4);
            tables[t]->moe_permute_backward(dx[t], dxs, pos, N, K, H); /* added */
            for (int64_t i = 0; i < N * H; i++) dx[t][i] -= base[i];
            double lhs = dot(dxs, xs, S * H), rhs = dot(dx[t], x, N * H);
            CHECK_MSG(fabs(lhs - rhs) <= 1e-4 * (1 + fabs(lhs)), "%s permute_backward adjoint: %.9g vs %.9g",
                      tables[t]->name, lhs, rhs);
            free(base);
        }
        free(idx), free(order), free(pos), free(cnt), free(off), free(x), free(dxs), free(xs), free(dx[0]), free(dx[1]);
    }
    for (size_t si = 0; si < sizeof kv_shapes / sizeof kv_shapes[0]; si++) {
        const int64_t N = kv_shapes[si][0], nh = kv_shapes[si][1], dn = kv_shapes[si][2], dv = kv_shapes[si][3];
        const int64_t rkv = kv_shapes[si][4], dr = kv_shapes[si][5], dq = dn + dr;
        const int64_t nkv = N * nh * (dn + dv), nkva = N * (rkv + dr), nk = N * nh * dq, nv = N * nh * dv;
        float *kv = malloc((size_t)nkv * 4), *kva = malloc((size_t)nkva * 4), *k = malloc((size_t)(nk + 1) * 4);
        float *v = malloc((size_t)(nv + 1) * 4), *dk = malloc((size_t)(nk + 1) * 4), *dvv = malloc((size_t)(nv + 1) * 4);
        float *dkv[2], *dkva[2];
        fill(&r, kv, nkv), fill(&r, kva, nkva), fill(&r, dk, nk), fill(&r, dvv, nv);
        ds_ops_ref.mla_kv_assemble(k, v, kv, kva, N, nh, dn, dv, rkv, dr);
        for (int t = 0; t < 2; t++) {
            dkv[t] = malloc((size_t)(nkv + 1) * 4), dkva[t] = malloc((size_t)(nkva + 1) * 4);
            memset(dkv[t], 0xff, (size_t)(nkv + 1) * 4), memset(dkva[t], 0xff, (size_t)(nkva + 1) * 4);
            tables[t]->mla_kv_assemble_backward(dkv[t], dkva[t], dk, dvv, N, nh, dn, dv, rkv, dr);
            double lhs = dot(dk, k, nk) + dot(dvv, v, nv), rhs = dot(dkv[t], kv, nkv) + dot(dkva[t], kva, nkva);
            CHECK_MSG(fabs(lhs - rhs) <= 1e-4 * (1 + fabs(lhs)), "%s kv_assemble_backward adjoint: %.9g vs %.9g",
                      tables[t]->name, lhs, rhs);
            uint32_t t1, t2; /* nothing written past the ends */
            memcpy(&t1, dkv[t] + nkv, 4), memcpy(&t2, dkva[t] + nkva, 4);
            CHECK(t1 == 0xffffffffu && t2 == 0xffffffffu);
        }
        CHECK_MSG(same_bits(dkv[0], dkv[1], nkv) && same_bits(dkva[0], dkva[1], nkva),
                  "kv_assemble_backward cpu != ref at shape %zu", si);
        free(kv), free(kva), free(k), free(v), free(dk), free(dvv);
        for (int t = 0; t < 2; t++) free(dkv[t]), free(dkva[t]);
    }
}

TEST(backend_ops_embedding_bf16_act_quant) {
    ds_rng r;
    ds_rng_seed(&r, 46);
    static const int64_t sh[][3] = {{1, 5, 3}, {17, 129, 7}, {300, 260, 11}}; /* N, C, V */
    for (size_t si = 0; si < sizeof sh / sizeof sh[0]; si++) {
        const int64_t N = sh[si][0], C = sh[si][1], V = sh[si][2];
        uint16_t *tb = malloc((size_t)(V * C) * 2);
        int32_t *ids = malloc((size_t)N * 4);
        float *o[2] = {malloc((size_t)(N * C) * 4), malloc((size_t)(N * C) * 4)};
        for (int64_t i = 0; i < V * C; i++) tb[i] = ds_f32_to_bf16(ds_rng_normal(&r));
        for (int64_t n = 0; n < N; n++) ids[n] = (int32_t)ds_rng_below(&r, (uint64_t)V);
        int bad = 0;
        for (int t = 0; t < 2; t++) {
            tables[t]->embedding_bf16_forward(o[t], ids, tb, N, C);
            for (int64_t n = 0; n < N; n++)
                for (int64_t c = 0; c < C; c++) {
                    uint32_t bits = (uint32_t)tb[ids[n] * C + c] << 16; /* oracle: BF16 is the top half of FP32 */
                    float want;
                    memcpy(&want, &bits, 4);
                    bad += memcmp(&want, &o[t][n * C + c], 4) != 0;
                }
        }
        CHECK_MSG(!bad, "embedding_bf16 != widened table in %d places (shape %zu)", bad, si);
        /* act quant 1x128: one scale per row and 128 columns, s = max(amax, 1e-4)/448,
         * codes within E4M3's rounding of x/s */
        const int64_t nt = (C + 127) / 128;
        float *x = malloc((size_t)(N * C) * 4), *s = malloc((size_t)(N * nt) * 4), *y = malloc((size_t)(N * C) * 4);
        uint8_t *q = malloc((size_t)(N * C));
        fill(&r, x, N * C);
        if (N > 1) for (int64_t c = 0; c < C; c++) x[C + c] = 1e-7f * x[C + c]; /* a row under the amax floor */
        for (int t = 0; t < 2; t++) {
            tables[t]->act_quant_1x128(q, s, x, N, C);
            tables[t]->act_dequant_1x128(y, q, s, N, C);
            int bad_s = 0, bad_x = 0;
            for (int64_t n = 0; n < N; n++)
                for (int64_t j = 0; j < nt; j++) {
                    float amax = 0;
                    for (int64_t c = j * 128; c < C && c < (j + 1) * 128; c++) amax = fmaxf(amax, fabsf(x[n * C + c]));
                    float want = fmaxf(amax, 1e-4f) / 448.0f, got = s[n * nt + j];
                    bad_s += fabsf(got - want) > 1e-6f * want;
                    for (int64_t c = j * 128; c < C && c < (j + 1) * 128; c++)
                        bad_x += fabsf(y[n * C + c] - x[n * C + c]) > fabsf(x[n * C + c]) / 16 + got / 512 * 1.0001f;
                }
            CHECK_MSG(!bad_s && !bad_x, "%s act_quant_1x128: %d scales, %d values off (shape %zu)", tables[t]->name,
                      bad_s, bad_x, si);
        }
        free(tb), free(ids), free(o[0]), free(o[1]), free(x), free(s), free(y), free(q);
    }
}

TEST(backend_ops_balance_loss_entry) {
    ds_rng r;
    ds_rng_seed(&r, 47);
    const int64_t T = 13, E = 6, K = 2, G = 3, M = 2;
    float *s = malloc((size_t)(T * E) * 4), *ds[2], *coef = malloc((size_t)E * 4), *coef2 = malloc((size_t)E * 4);
    int32_t *idx = malloc((size_t)(T * K) * 4);
    uint8_t *sel = malloc((size_t)(T * E)), *sel2 = calloc((size_t)(T * E), 1);
    for (int64_t i = 0; i < T * E; i++) s[i] = (float)ds_rng_uniform(&r);
    random_idx(&r, idx, T, K, E);
    for (int64_t i = 0; i < T; i++) /* oracle of sel: 1 at the chosen experts */
        for (int64_t k = 0; k < K; k++) sel2[i * E + idx[i * K + k]] = 1;
    float *ds2 = calloc((size_t)(T * E), 4);
    ds_balance_terms want = ds_balance_loss_forward(coef2, s, sel2, T, E, K, G, M, 1, 0.1, 0.2, 0.3);
    ds_balance_loss_backward(ds2, coef2, s, T, E, 1, 0.5);
    for (int t = 0; t < 2; t++) {
        ds[t] = calloc((size_t)(T * E), 4);
        memset(sel, 7, (size_t)(T * E)); /* stale scratch must not matter */
        ds_balance_terms got;
        tables[t]->balance_loss(ds[t], coef, sel, s, idx, T, E, K, G, M, 1, 0.1, 0.2, 0.3, 0.5, &got);
        CHECK(got.expert == want.expert && got.device == want.device && got.comm == want.comm);
        CHECK(same_bits(ds[t], ds2, T * E) && memcmp(sel, sel2, (size_t)(T * E)) == 0);
        CHECK(want.expert > 0 && want.comm > 0);
        free(ds[t]);
    }
    free(s), free(coef), free(coef2), free(idx), free(sel), free(sel2), free(ds2);
}

TEST(backend_ops_sumsq_memory) {
    static const int64_t ns[] = {0, 1, 5, 129, 70001, 300007};
    ds_rng r;
    ds_rng_seed(&r, 48);
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        const int64_t n = ns[i];
        float *x = malloc((size_t)(n + 1) * 4);
        fill(&r, x, n);
        long double want = 0;
        for (int64_t j = 0; j < n; j++) want += (long double)x[j] * x[j];
        for (int t = 0; t < 2; t++) {
            double got = tables[t]->sumsq(x, n);
            CHECK_MSG(fabsl(got - want) <= 1e-12L * (1 + want), "%s sumsq n=%lld: %.17g vs %.17Lg", tables[t]->name,
                      (long long)n, got, want);
        }
        if (n > 100) { /* huge finite values stay finite; one Inf or NaN among them does not */
            for (int64_t j = 0; j < n; j++) x[j] = 3e38f;
            for (int t = 0; t < 2; t++) CHECK(isfinite(tables[t]->sumsq(x, n)));
            x[n / 2 + 1] = INFINITY;
            for (int t = 0; t < 2; t++) CHECK(!isfinite(tables[t]->sumsq(x, n)));
            x[n / 2 + 1] = NAN;
            for (int t = 0; t < 2; t++) CHECK(isnan(tables[t]->sumsq(x, n)));
        }
        free(x);
    }
    /* memory: alloc zero-filled and 64-byte aligned; memset and the copies move bytes */
    for (int t = 0; t < 2; t++) {
        const struct ds_ops *o = tables[t];
        CHECK(o->host_visible == 1);
        unsigned char *a = o->alloc(1000), *b = o->alloc(1000), h[1000];
        CHECK(a && b && ((uintptr_t)a & 63) == 0);
        int zero = 1;
        for (int i = 0; i < 1000; i++) zero &= a[i] == 0;
        CHECK(zero);
        for (int i = 0; i < 1000; i++) h[i] = (unsigned char)(i * 7);
        o->copy_h2d(a, h, 1000);
        o->copy_d2d(b, a, 999);
        o->memset(b + 10, 0xab, 5);
        o->sync();
        unsigned char back[1000];
        o->copy_d2h(back, b, 1000);
        int bad = 0;
        for (int i = 0; i < 1000; i++) bad += back[i] != (i >= 10 && i < 15 ? 0xab : i < 999 ? h[i] : 0);
        CHECK_MSG(!bad, "%s memory entries: %d bytes wrong", o->name, bad);
        o->free(a), o->free(b);
    }
}

/* token_logprobs (eval scoring): the log-softmax at each row's target and the
 * greedy flag.  Oracle: log-sum-exp in long double over the row, and the first
 * maximum found by a scan from the end with >= (ties on purpose).  The cpu
 * entry equals the reference bit for bit, at 1 and 2 threads, on a shape big
 * enough to split over threads. */
TEST(backend_ops_token_logprobs) {
    static const int64_t sh[][2] = {{1, 1}, {3, 7}, {5, 37}, {64, 32000}};
    ds_rng r;
    ds_rng_seed(&r, 52);
    for (size_t si = 0; si < sizeof sh / sizeof sh[0]; si++) {
        const int64_t N = sh[si][0], V = sh[si][1];
        float *x = malloc((size_t)(N * V) * sizeof(float)), lp[2][64], lp1[64];
        uint8_t g[2][64], g1[64];
        int32_t t[64];
        for (int64_t i = 0; i < N * V; i++) x[i] = 3.0f * ds_rng_normal(&r);
        for (int64_t n = 0; n < N; n++) t[n] = (int32_t)ds_rng_below(&r, (uint64_t)V);
        if (V > 5)
            for (int64_t n = 0; n < N; n += 2) { /* ties at 1 and V-2: the target is the first (n % 4 == 0) or the later */
                x[n * V + 1] = x[n * V + V - 2] = 40.0f;
                t[n] = n % 4 == 0 ? 1 : (int32_t)(V - 2);
            }
        for (int k = 0; k < 2; k++) tables[k]->token_logprobs(lp[k], g[k], x, t, N, V);
        int prev = ds_threads();
        ds_set_threads(1);
        ds_ops_cpu.token_logprobs(lp1, g1, x, t, N, V);
        ds_set_threads(prev);
        CHECK_MSG(same_bits(lp[0], lp[1], N) && !memcmp(g[0], g[1], (size_t)N) && same_bits(lp[0], lp1, N) &&
                      !memcmp(g[0], g1, (size_t)N),
                  "token_logprobs N=%lld V=%lld: cpu differs from ref or across threads", (long long)N, (long long)V);
        int bad = 0;
        for (int64_t n = 0; n < N; n++) {
            const float *row = x + n * V;
            int64_t am = V - 1;
            for (int64_t v = V - 1; v >= 0; v--)
                if (row[v] >= row[am]) am = v;
            long double m = row[am], s = 0;
            for (int64_t v = 0; v < V; v++) s += expl((long double)row[v] - m);
            long double want = (long double)row[t[n]] - m - logl(s);
            bad += fabsl((long double)lp[1][n] - want) > 1e-6L * (1 + fabsl(want));
            bad += g[1][n] != (am == t[n]);
            if (V > 5 && n % 2 == 0) bad += g[1][n] != (n % 4 == 0); /* the oracle's tie rule, stated */
        }
        CHECK_MSG(!bad, "token_logprobs N=%lld V=%lld: %d values wrong", (long long)N, (long long)V, bad);
        if (V == 1) CHECK(lp[1][0] == 0.0f && g[1][0] == 1);
        free(x);
    }
}
