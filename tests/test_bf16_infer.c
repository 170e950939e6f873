/*
 * test_bf16_infer.c — BF16-resident inference (docs/fp8.md "FP8-resident
 * inference": BF16 matmul weights stay BF16) against its oracles:
 *  - kernels: the BF16-weight linear (blocked GEMM) == its scalar reference
 *    bit for bit, and both, like the BF16 gemv, equal ds_matmul_forward_ref on
 *    the widened weight within FP32 reassociation:
 *    |Δ| ≤ C·2^-23·Σ_k|x_k·w_k| (widening is exact, only the sum order
 *    differs); the BF16 embedding gather == the FP32 gather of the widened
 *    table exactly;
 *  - a BF16 folder (`dsv3 convert --to bf16` of tests/fixtures/model/v3, and
 *    a tied-head variant): the resident forward (logits and MTP logits, cpu
 *    and ref ops) equals the --dequant (widened FP32) forward within 1e-6 of
 *    max|logit|; the decode engine (gemv steps, batch 1 and 2, MTP steps) and
 *    greedy generation equal the resident forward;
 *  - memory: the resident bytes equal the count from the layout table;
 *  - bad input (truncated BF16 file, wrong shape), backward/save refuse, CLI.
 * The FP8 folder (FP8 linears + BF16 embedding/head/router/eh_proj) is
 * covered against its torch oracle by tests/test_fp8_infer.c.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "backend/cpu/gemv.h"
#include "infer/infer.h"
#include "io/safetensors.h"
#include "backend/cpu/gemm_bf16.h"
#include "backend/cpu/kernels.h"
#include "backend/cpu/linear_fp8w.h"
#include "model/backward.h"
#include "model/model.h"
#include "num/dtype.h"
#include "test.h"
#include "fixture_ids.h"
#include "resident_check.h"

#define V3 "tests/fixtures/model/v3"

/* The v3 fixture converted to BF16 in the test's tmpdir (tie: with
 * tie_word_embeddings set, lm_head then shares the embedding table). */
static const char *bf16_dir(int tie) {
    static char dirs[2][512];
    char *dir = dirs[tie != 0];
    snprintf(dir, 512, "%s/bf16%s", ds_test_tmpdir(), tie ? "_tied" : "");
    char p[600], out[1024];
    snprintf(p, sizeof p, "%s/config.json", dir);
    if (ds_file_exists(p)) return dir;
    if (ds_test_sh(out, sizeof out, "$DSV3 convert --to bf16 " V3 " %s", dir) != 0) return NULL;
    if (tie && ds_test_sh(out, sizeof out,
                          "sed -i 's/\"tie_word_embeddings\": false/\"tie_word_embeddings\": true/' %s/config.json && "
                          "grep -q '\"tie_word_embeddings\": true' %s/config.json", dir, dir) != 0)
        return NULL;
    return dir;
}

/* ---- kernels ----------------------------------------------------------------- */

/* max over outputs of |a - ref| / (C·2^-23·Σ_k|x_k·w_k| + 1e-30): ≤ 1 passes */
static double reassoc_ratio(const float *a, const float *ref, const float *x, const float *wf, int64_t N, int64_t C,
                            int64_t OC) {
    double worst = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < OC; o++) {
            double s = 0;
            for (int64_t k = 0; k < C; k++) s += fabs((double)x[n * C + k] * wf[o * C + k]);
            double r = fabs((double)a[n * OC + o] - ref[n * OC + o]) / ((double)C * 0x1p-23 * s + 1e-30);
            if (r > worst) worst = r;
        }
    return worst;
}

TEST(bf16_linear_gemv_embedding_match_widened_fp32) {
    ds_rng r;
    ds_rng_seed(&r, 11);
    const int64_t shapes[][3] = {{1, 264, 136}, {3, 136, 264}, {4, 300, 17}, {2, 148, 40}, {1, 7, 9},
                                 {5, 128, 256}, {130, 264, 136}, {2, 5, 3}, {4, 64, 288}};
    double w_lin = 0, w_gemv = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int64_t N = shapes[si][0], C = shapes[si][1], OC = shapes[si][2];
        float *x = ds_malloc((size_t)(N * C) * sizeof(float)), *wf = ds_malloc((size_t)(OC * C) * sizeof(float));
        float *bias = ds_malloc((size_t)OC * sizeof(float));
        uint16_t *wb = ds_malloc((size_t)(OC * C) * sizeof(uint16_t));
        for (int64_t i = 0; i < N * C; i++) x[i] = ds_rng_normal(&r);
        for (int64_t i = 0; i < OC * C; i++) {
            wb[i] = ds_f32_to_bf16(0.05f * ds_rng_normal(&r));
            wf[i] = ds_bf16_to_f32(wb[i]);
        }
        for (int64_t o = 0; o < OC; o++) bias[o] = 0.1f * ds_rng_normal(&r);
        const ds_fp8w w = {NULL, NULL, OC, C, wb};
        size_t no = (size_t)(N * OC) * sizeof(float);
        float *ref = ds_malloc(no), *fast = ds_malloc(no), *slow = ds_malloc(no), *gv = ds_malloc(no),
              *disp = ds_malloc(no);
        ds_matmul_forward_ref(ref, x, wf, bias, N, C, OC);
        ds_linear_bf16w_forward(fast, x, &w, bias, N, C, OC);
        ds_linear_bf16w_forward_ref(slow, x, &w, bias, N, C, OC);
        ds_gemv_bf16w_forward(gv, x, &w, bias, N, C, OC);
        ds_linear_fp8w_forward(disp, x, &w, bias, N, C, OC); /* the resident dispatch sees b16 */
        CHECK_MSG(!memcmp(fast, slow, no), "shape %zu: fast != ref bits", si);
        CHECK_MSG(!memcmp(fast, disp, no), "shape %zu: dispatch", si);
        double a = reassoc_ratio(fast, ref, x, wf, N, C, OC), g = reassoc_ratio(gv, ref, x, wf, N, C, OC);
        if (a > w_lin) w_lin = a;
        if (g > w_gemv) w_gemv = g;
        CHECK_MSG(a <= 1 && g <= 1, "shape %zu: linear %.3g gemv %.3g of the bound", si, a, g);
        free(x), free(wf), free(bias), free(wb), free(ref), free(fast), free(slow), free(gv), free(disp);
    }
    printf("|err| / bound: linear %.3g, gemv %.3g ", w_lin, w_gemv);
    /* embedding: the widened rows exactly */
    const int64_t Vv = 37, H = 45, N = 9;
    uint16_t *tb = ds_malloc((size_t)(Vv * H) * sizeof(uint16_t));
    float *tf = ds_malloc((size_t)(Vv * H) * sizeof(float)), *e1 = ds_malloc((size_t)(N * H) * sizeof(float)),
          *e2 = ds_malloc((size_t)(N * H) * sizeof(float));
    for (int64_t i = 0; i < Vv * H; i++) tf[i] = ds_bf16_to_f32(tb[i] = ds_f32_to_bf16(ds_rng_normal(&r)));
    int32_t ids[9] = {0, 36, 5, 5, 17, 1, 30, 2, 36};
    ds_embedding_forward_ref(e1, ids, tf, N, H);
    ds_embedding_bf16_forward(e2, ids, tb, N, H);
    CHECK(!memcmp(e1, e2, (size_t)(N * H) * sizeof(float)));
    free(tb), free(tf), free(e1), free(e2);
}

/* ---- model -------------------------------------------------------------------- */

TEST(bf16_resident_forward_equals_dequant) {
    int64_t B = 0, T = 0;
    int32_t *ids = read_ids(V3 "/ids.txt", &B, &T);
    CHECK(ids != NULL);
    TEST_RETURN_IF_FAILED();
    for (int tie = 0; tie <= 1; tie++) {
        const char *dir = bf16_dir(tie);
        CHECK(dir != NULL);
        ds_model m, md;
        if (!dir || rc_load(&m, dir, 1)) continue;
        if (rc_load(&md, dir, 0)) {
            ds_model_free(&m);
            continue;
        }
        const int64_t V = m.cfg.vocab_size, n = B * T * V, nm = B * (T - 1) * V;
        /* every 2-D weight is BF16-resident; the head shares the table when tied */
        for (int64_t i = 0; i < m.layout.n; i++) {
            const ds_param *p = &m.layout.p[i];
            if (!(p->flags & DS_PARAM_ALIAS) && p->ndim == 2)
                CHECK_MSG((p->flags & DS_PARAM_BF16) && m.fp8w[i].b16, "%s", p->name);
        }
        CHECK(m.embed8 && m.lm_head8 && !m.embed && !m.lm_head && m.blocks[1].router8 && m.blocks[3].eh_proj8);
        CHECK(tie ? m.lm_head8->b16 == m.embed8->b16 : m.lm_head8->b16 != m.embed8->b16);
        float *mc = NULL, *mr = NULL, *mq = NULL, *mqr = NULL;
        float *cpu = rc_forward_logits(&m, &ds_ops_cpu, ids, B, T, &mc);
        float *rf = rc_forward_logits(&m, &ds_ops_ref, ids, B, T, &mr);
        float *dq = rc_forward_logits(&md, &ds_ops_cpu, ids, B, T, &mq);
        float *dqr = rc_forward_logits(&md, &ds_ops_ref, ids, B, T, &mqr);
        CHECK(cpu && rf && dq && dqr && mc && mr && mq && mqr);
        if (cpu && rf && dq && dqr && mc && mr && mq && mqr) {
            double e1 = ds_test_max_rel(cpu, dq, (size_t)n, 0), e2 = ds_test_max_rel(rf, dq, (size_t)n, 0);
            double e3 = ds_test_max_rel(mc, mq, (size_t)nm, 0), e4 = ds_test_max_rel(mr, mq, (size_t)nm, 0);
            /* the FP32 model's own cpu-vs-ref-ops spread: the size of FP32 reassociation here */
            double b1 = ds_test_max_rel(dqr, dq, (size_t)n, 0), b2 = ds_test_max_rel(mqr, mq, (size_t)nm, 0);
            printf("%s: resident vs dequant %.2e (cpu) %.2e (ref), MTP %.2e %.2e [FP32 cpu vs ref %.2e, MTP %.2e] ",
                   tie ? "tied" : "untied", e1, e2, e3, e4, b1, b2);
            /* the same math: only FP32 summation order differs (the MTP logits
             * sit one more block deep, hence their larger spread) */
            CHECK_MSG(e1 < 1.5e-6 && e2 < 1.5e-6, "%.3e %.3e", e1, e2);
            CHECK_MSG(e3 < 4e-6 && e4 < 4e-6, "%.3e %.3e", e3, e4);
            /* (the resident path is asserted by the flags above; its logits may
             * equal the FP32 model's bit for bit: with inner sizes <= 128 the
             * BF16-weight GEMM and the FP32 few-row GEMM sum in the same order) */
        }
        free(cpu), free(rf), free(dq), free(dqr), free(mc), free(mr), free(mq), free(mqr);
        ds_model_free(&m);
        ds_model_free(&md);
    }
    free(ids);
}

/* decode engine (BF16 gemv steps, absorbed MLA) and greedy generation == the
 * resident forward */
TEST(bf16_resident_decode_matches_forward) {
    int64_t B = 0, T = 0;
    int32_t *ids = read_ids(V3 "/ids.txt", &B, &T);
    const char *dir = bf16_dir(0);
    CHECK(ids && dir);
    TEST_RETURN_IF_FAILED();
    ds_model m;
    if (rc_load(&m, dir, 1)) return;
    float *mtp = NULL;
    float *full = rc_forward_logits(&m, &ds_ops_cpu, ids, B, T, &mtp);
    CHECK(full && mtp);
    if (full && mtp) {
        double worst_mtp = 0, worst = rc_decode_vs_forward(&m, ids, B, T, full, mtp, &worst_mtp);
        printf("decode vs forward %.2e, MTP steps %.2e ", worst, worst_mtp);
        CHECK_MSG(worst < 1e-5 && worst_mtp < 1e-5, "%.3e %.3e", worst, worst_mtp);
    }
    rc_check_greedy(&m, ids);
    free(full);
    free(mtp);
    free(ids);
    ds_model_free(&m);
}

/* memory: BF16 entries 2 bytes/param (padded to 16 elements), owning no
 * floats (kv_b keeps its FP32 copy); the FP32 allocation holds the rest */
TEST(bf16_resident_memory_from_layout) {
    for (int tie = 0; tie <= 1; tie++) {
        const char *dir = bf16_dir(tie);
        CHECK(dir != NULL);
        ds_model m, md;
        if (!dir || rc_load(&m, dir, 1)) continue;
        if (rc_load(&md, dir, 0)) {
            ds_model_free(&m);
            continue;
        }
        int64_t b16 = 0, b16p = 0, f32 = 0;
        for (int64_t i = 0; i < md.layout.n; i++) {
            const ds_param *p = &md.layout.p[i];
            if (p->flags & DS_PARAM_ALIAS) continue;
            int mat = p->ndim == 2, kvb = strstr(p->name, "kv_b_proj.weight") != NULL;
            if (mat) b16 += (p->numel + 15) / 16 * 16 * 2, b16p += p->numel;
            if (!mat || kvb) f32 += (p->numel + 15) / 16 * 16 * 4;
        }
        ds_weight_mem w, wd;
        ds_model_weight_mem(&m, &w);
        ds_model_weight_mem(&md, &wd);
        printf("%s: BF16 %lld B + FP32 %lld B = %lld B (dequantized %lld B) ", tie ? "tied" : "untied",
               (long long)w.bf16_bytes, (long long)w.f32_bytes, (long long)w.total_bytes, (long long)wd.total_bytes);
        CHECK(w.bf16_params == b16p && w.bf16_bytes == b16 && w.f32_bytes == f32);
        CHECK(w.fp8_bytes == 0 && w.scale_bytes == 0 && w.total_bytes == b16 + f32);
        CHECK(wd.bf16_bytes == 0 && wd.total_bytes == md.layout.total * 4 && w.params == wd.params);
        CHECK(w.total_bytes < wd.total_bytes * 2 / 3);
        char line[400];
        ds_weight_mem_str(&w, line, sizeof line);
        CHECK_MSG(strstr(line, "BF16 ") && strstr(line, "params) + FP32"), "%s", line);
        ds_model_free(&m);
        ds_model_free(&md);
    }
}

/* a BF16 folder whose model.safetensors is cut short, or whose tensor shape
 * disagrees with config.json: one line naming the file (and tensor), resident
 * or not; nothing written; backward and save refuse */
TEST(bf16_resident_bad_input) {
    const char *src = bf16_dir(0);
    CHECK(src != NULL);
    if (!src) return;
    char dir[600], out[2048], p[700];
    snprintf(dir, sizeof dir, "%s/bf16_cut", ds_test_tmpdir());
    CHECK(ds_test_sh(out, sizeof out, "mkdir -p %s && cp %s/config.json %s/ && head -c $(( $(stat -c %%s "
                     "%s/model.safetensors) - 1000 )) %s/model.safetensors > %s/model.safetensors", dir, src, dir, src,
                     src, dir) == 0);
    ds_model m;
    for (int res = 0; res <= 1; res++) {
        ds_load_opts o = {.fp8_resident = res};
        CHECK(ds_model_load_ex(&m, dir, &o) != 0);
        const char *msg = ds_errmsg();
        CHECK_MSG(strstr(msg, "model.safetensors") && !strchr(msg, '\n'), "%s", msg);
    }
    snprintf(p, sizeof p, "%s/o.safetensors", dir);
    int st = ds_test_sh(out, sizeof out, "$DSV3 forward --model %s --ids " V3 "/ids.txt --out %s", dir, p);
    CHECK_MSG(st == 1 && strstr(out, "model.safetensors") && !strstr(out, "\n\n"), "exit %d: %s", st, out);
    CHECK(!ds_file_exists(p));
    /* a BF16 tensor whose shape the config does not imply (vocab 256 -> 300):
     * not made resident, reported by the load loop with both shapes */
    snprintf(dir, sizeof dir, "%s/bf16_shape", ds_test_tmpdir());
    CHECK(ds_test_sh(out, sizeof out, "mkdir -p %s && cp %s/model.safetensors %s/ && sed 's/\"vocab_size\": 256/"
                     "\"vocab_size\": 300/' %s/config.json > %s/config.json && grep -q '\"vocab_size\": 300' "
                     "%s/config.json", dir, src, dir, src, dir, dir) == 0);
    for (int res = 0; res <= 1; res++) {
        ds_load_opts o = {.fp8_resident = res};
        CHECK(ds_model_load_ex(&m, dir, &o) != 0);
        const char *msg = ds_errmsg();
        CHECK_MSG(strstr(msg, "model.safetensors") && strstr(msg, "embed_tokens.weight") && strstr(msg, "[256, 64]") &&
                      strstr(msg, "[300, 64]") && !strchr(msg, '\n'),
                  "%s", msg);
    }
    snprintf(p, sizeof p, "%s/o.safetensors", dir);
    st = ds_test_sh(out, sizeof out, "$DSV3 forward --model %s --ids " V3 "/ids.txt --out %s", dir, p);
    CHECK_MSG(st == 1 && strstr(out, "embed_tokens.weight") && !strstr(out, "\n\n"), "exit %d: %s", st, out);
    CHECK(!ds_file_exists(p));
    /* backward and save need FP32 parameters */
    if (rc_load(&m, src, 1)) return;
    rc_check_refuses_training(&m, "BF16-resident");
    ds_model_free(&m);
}

static float *read_logits(const char *path, int64_t *numel) {
    ds_st_file f;
    if (ds_st_open(&f, path)) return NULL;
    const ds_st_tensor *t = ds_st_find(&f, "logits");
    float *x = NULL;
    if (t) {
        x = ds_malloc((size_t)t->numel * sizeof(float));
        ds_st_to_f32(t, x);
        *numel = t->numel;
    }
    ds_st_close(&f);
    return x;
}

/* CLI: forward keeps BF16 by default (the memory line), --dequant widens:
 * same logits within 1e-6; generate greedy gives the same tokens */
TEST(bf16_resident_cli) {
    const char *dir = bf16_dir(0);
    CHECK(dir != NULL);
    if (!dir) return;
    char out[2048], p1[600], p2[600];
    snprintf(p1, sizeof p1, "%s/r16.safetensors", ds_test_tmpdir());
    snprintf(p2, sizeof p2, "%s/d16.safetensors", ds_test_tmpdir());
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 forward --model %s --ids " V3 "/ids.txt --out %s", dir, p1) == 0);
    CHECK_MSG(strstr(out, "resident weights: FP8 0.00 MiB (0 params)") && strstr(out, "BF16 0."), "%s", out);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 forward --model %s --ids " V3 "/ids.txt --out %s --dequant", dir, p2) == 0);
    CHECK(!strstr(out, "resident weights"));
    int64_t n1 = 0, n2 = 0;
    float *a = read_logits(p1, &n1), *b = read_logits(p2, &n2);
    CHECK(a && b && n1 == n2 && n1 > 0);
    if (a && b && n1 == n2) CHECK(ds_test_max_rel(a, b, (size_t)n1, 0) < 1e-6);
    free(a), free(b);
    char g1[256] = {0}, g2[256] = {0};
    CHECK(ds_test_sh(g1, sizeof g1, "$DSV3 generate --model %s --ids --prompt '3 5 7 9' --max-tokens 6 --ignore-eos "
                     "2>/dev/null", dir) == 0);
    CHECK(ds_test_sh(g2, sizeof g2, "$DSV3 generate --model %s --ids --prompt '3 5 7 9' --max-tokens 6 --ignore-eos "
                     "--dequant 2>/dev/null", dir) == 0);
    CHECK_MSG(!strcmp(g1, g2) && strlen(g1) > 8, "'%s' vs '%s'", g1, g2);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 inspect %s --memory", dir) == 0);
    CHECK_MSG(strstr(out, "in memory") && strstr(out, "BF16 0."), "%s", out);
}
