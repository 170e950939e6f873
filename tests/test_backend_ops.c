/*
 * test_backend_ops.c — the ops entries that replaced model.c's host loops
 * (docs/engine.md step 4): each CPU entry (ds_ops_cpu) equals its scalar
 * reference (ds_ops_ref) bit for bit, and the reference equals an oracle
 * written here from the entry's definition (backend/cpu/kernels.h), on odd
 * shapes and on one large enough for the CPU entries to split over threads.
 * The sums keep the reference's order (k ascending from 0), so the oracle is
 * exact too.
 */
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "base/base.h"
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
