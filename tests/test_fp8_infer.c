/*
 * test_fp8_infer.c — FP8-resident inference (docs/fp8.md "FP8-resident
 * inference") against its oracles:
 *  - tests/fixtures/fp8infer/logits.safetensors (tools/make_fp8_infer_fixtures.py):
 *    DeepSeek's inference linear() for FP8 weights (act_quant 1x128 +
 *    block-scaled GEMM, float64 block sums) inside transformers' model, on the
 *    FP8 folder of the convert fixtures (hidden 136, intermediate 264: ragged
 *    128x128 blocks).  dsv3's FP8-resident forward (cpu and ref ops) within
 *    1e-5 of max|logit| (measured ~5e-7: FP32 vs float64 block sums);
 *    `logits_dequant` (weights widened, no activation quantization) pins the
 *    --dequant path the same way;
 *  - FP8-resident vs dequantized: they differ by activation quantization
 *    only (DeepGEMM's criterion on the logits, small but not zero);
 *  - the decode engine with FP8 weights against the FP8-resident forward
 *    (prefill + cached steps, the FP8 gemv; batch 1 and 2): 1e-5 of max|logit|
 *    (measured ~5e-7);
 *  - the FP8 linear: cpu == ref bit for bit (same block order), the FP8 gemv
 *    == ref within FP32 reassociation of the block sums;
 *  - bad input (scale missing, wrong shape, not a float), backward/save refuse;
 *  - memory: the resident bytes equal the count from the layout table;
 *  - CLI: forward (default FP8, --dequant, --grads loads FP32), generate
 *    (plain = MTP speculative), eval (FP8 vs --dequant close, not equal).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "backend/cpu/gemv.h"
#include "infer/infer.h"
#include "io/safetensors.h"
#include "backend/cpu/linear_fp8w.h"
#include "model/backward.h"
#include "model/model.h"
#include "num/quant.h"
#include "test.h"
#include "fixture_ids.h"
#include "resident_check.h"

#define CONV "tests/fixtures/convert/"
#define FIX "tests/fixtures/fp8infer/"

/* An FP8 model folder in the test's tmpdir: the convert fixture's expected_fp8. */
static const char *fp8_dir(void) {
    static char dir[512];
    snprintf(dir, sizeof dir, "%s/fp8model", ds_test_tmpdir());
    char out[512];
    if (ds_test_sh(out, sizeof out, "mkdir -p %s && cp " CONV "expected_fp8.safetensors %s/model.safetensors && cp " CONV
                   "expected_fp8_config.json %s/config.json", dir, dir, dir) != 0)
        return NULL;
    return dir;
}

static float *read_tensor(const char *path, const char *name, int64_t *numel) {
    ds_st_file f;
    if (ds_st_open(&f, path)) return NULL;
    const ds_st_tensor *t = ds_st_find(&f, name);
    float *x = NULL;
    if (t) {
        x = ds_malloc((size_t)t->numel * sizeof(float));
        ds_st_to_f32(t, x);
        *numel = t->numel;
    }
    ds_st_close(&f);
    return x;
}

/* DeepGEMM's calc_diff: 1 - 2·Σxy / Σ(x² + y²) */
static double calc_diff(const float *x, const float *y, int64_t n) {
    double xy = 0, ss = 0;
    for (int64_t i = 0; i < n; i++) {
        xy += (double)x[i] * y[i];
        ss += (double)x[i] * x[i] + (double)y[i] * y[i];
    }
    return 1.0 - 2.0 * xy / ss;
}

TEST(fp8_resident_forward_matches_deepseek_linear_oracle) {
    const char *dir = fp8_dir();
    int64_t B = 0, T = 0, nref = 0, ndq = 0;
    int32_t *ids = read_ids(FIX "ids.txt", &B, &T);
    float *ref = read_tensor(FIX "logits.safetensors", "logits", &nref);
    float *refdq = read_tensor(FIX "logits.safetensors", "logits_dequant", &ndq);
    CHECK(dir && ids && ref && refdq);
    TEST_RETURN_IF_FAILED();
    ds_model m, md;
    CHECK(rc_load(&m, dir, 1) == 0 && rc_load(&md, dir, 0) == 0);
    TEST_RETURN_IF_FAILED();
    CHECK(nref == B * T * m.cfg.vocab_size);
    CHECK(m.fp8w && !md.fp8w);
    float *cpu = rc_forward_logits(&m, &ds_ops_cpu, ids, B, T, NULL);
    float *rf = rc_forward_logits(&m, &ds_ops_ref, ids, B, T, NULL);
    float *dq = rc_forward_logits(&md, &ds_ops_cpu, ids, B, T, NULL);
    CHECK(cpu && rf && dq);
    if (cpu && rf && dq) {
        double e_cpu = ds_test_max_rel(cpu, ref, (size_t)nref, 0), e_ref = ds_test_max_rel(rf, ref, (size_t)nref, 0);
        double e_dq = ds_test_max_rel(dq, refdq, (size_t)nref, 0);
        printf("fp8 vs oracle %.2e (cpu) %.2e (ref ops); dequant vs oracle %.2e ", e_cpu, e_ref, e_dq);
        CHECK_MSG(e_cpu < 1e-5, "cpu %.3e", e_cpu);
        CHECK_MSG(e_ref < 1e-5, "ref %.3e", e_ref);
        CHECK_MSG(e_dq < 1e-5, "dequant %.3e", e_dq);
        /* (b) FP8 vs dequantized: activation quantization only */
        double d = calc_diff(cpu, dq, nref), d_or = calc_diff(ref, refdq, nref);
        printf("calc_diff fp8 vs dequant %.2e (oracle %.2e) ", d, d_or);
        CHECK_MSG(d > 1e-7 && d < 2e-3, "calc_diff %.3e", d);
        CHECK_NEAR(d, d_or, 1e-2 * d_or);
    }
    free(cpu);
    free(rf);
    free(dq);
    ds_model_free(&m);
    ds_model_free(&md);
    free(ids);
    free(ref);
    free(refdq);
}

/* (c) decode engine (absorbed MLA, FP8 gemv for decode steps) == FP8 forward */
TEST(fp8_resident_decode_matches_forward) {
    const char *dir = fp8_dir();
    int64_t B = 0, T = 0;
    int32_t *ids = read_ids(FIX "ids.txt", &B, &T);
    CHECK(dir && ids);
    TEST_RETURN_IF_FAILED();
    ds_model m;
    if (rc_load(&m, dir, 1)) return;
    float *full = rc_forward_logits(&m, &ds_ops_cpu, ids, B, T, NULL);
    CHECK(full != NULL);
    if (full) {
        double worst = rc_decode_vs_forward(&m, ids, B, T, full, NULL, NULL);
        printf("decode vs forward %.2e ", worst);
        CHECK_MSG(worst < 1e-5, "%.3e", worst);
    }
    rc_check_greedy(&m, ids);
    free(full);
    free(ids);
    ds_model_free(&m);
}

/* random FP8 weight (OC, C) made by ds_quantize 128x128 */
static void make_w(ds_fp8w *w, uint8_t **q, float **s, int64_t OC, int64_t C, ds_rng *r) {
    float *x = ds_malloc((size_t)(OC * C) * sizeof(float));
    for (int64_t i = 0; i < OC * C; i++) x[i] = 0.05f * ds_rng_normal(r);
    *q = ds_malloc((size_t)(OC * C));
    *s = ds_malloc((size_t)ds_quant_scale_count(DS_QUANT_BLOCK_128x128, OC, C) * sizeof(float));
    ds_quant_opts o = ds_quant_defaults(DS_QUANT_BLOCK_128x128);
    ds_quantize(*q, *s, x, OC, C, &o);
    *w = (ds_fp8w){*q, *s, OC, C, NULL};
    free(x);
}

/* (d) the FP8 linear: cpu (ds_fp8_gemm) == ref bit for bit; the FP8 gemv ==
 * ref within reassociation: |Δ| ≤ 2^-20 · Σ_kb |bsum terms| · scales */
TEST(fp8_linear_cpu_equals_ref_and_gemv_within_reassociation) {
    ds_rng r;
    ds_rng_seed(&r, 7);
    const int64_t shapes[][3] = {{1, 264, 136}, {3, 136, 264}, {4, 300, 17}, {2, 148, 40}, {1, 176, 9},
                                 {7, 128, 256}, {130, 264, 136}, {2, 5, 3}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int64_t N = shapes[si][0], C = shapes[si][1], OC = shapes[si][2];
        ds_fp8w w;
        uint8_t *q;
        float *s;
        make_w(&w, &q, &s, OC, C, &r);
        float *x = ds_malloc((size_t)(N * C) * sizeof(float)), *bias = ds_malloc((size_t)OC * sizeof(float));
        for (int64_t i = 0; i < N * C; i++) x[i] = ds_rng_normal(&r) * (i % 37 == 0 ? 20.0f : 1.0f);
        for (int64_t i = 0; i < OC; i++) bias[i] = ds_rng_normal(&r);
        float *a = ds_malloc((size_t)(N * OC) * sizeof(float)), *b = ds_malloc((size_t)(N * OC) * sizeof(float));
        float *g = ds_malloc((size_t)(N * OC) * sizeof(float));
        ds_linear_fp8w_forward(a, x, &w, bias, N, C, OC);
        ds_linear_fp8w_forward_ref(b, x, &w, bias, N, C, OC);
        CHECK_MSG(!memcmp(a, b, (size_t)(N * OC) * sizeof(float)), "N=%lld C=%lld OC=%lld", (long long)N,
                  (long long)C, (long long)OC);
        if (N <= DS_GEMV_MAX_ROWS) {
            ds_gemv_fp8w_forward(g, x, &w, bias, N, C, OC);
            /* bound: Σ_k |x_q·s_x · w_q·s_w| (the magnitude the block sums reassociate) */
            uint8_t *xq = ds_malloc((size_t)(N * C));
            float *xs = ds_malloc((size_t)(N * ds_ceil_div(C, 128)) * sizeof(float));
            ds_quant_opts o = ds_quant_defaults(DS_QUANT_TILE_1x128);
            ds_quantize(xq, xs, x, N, C, &o);
            double worst = 0;
            for (int64_t n = 0; n < N; n++)
                for (int64_t oc = 0; oc < OC; oc++) {
                    double mag = 0;
                    for (int64_t k = 0; k < C; k++)
                        mag += fabs((double)ds_fp8_e4m3_table[xq[n * C + k]] * xs[n * ds_ceil_div(C, 128) + k / 128] *
                                    ds_fp8_e4m3_table[q[oc * C + k]] * s[(oc / 128) * ds_ceil_div(C, 128) + k / 128]);
                    double d = fabs((double)g[n * OC + oc] - b[n * OC + oc]) / (mag + 1e-30);
                    if (d > worst) worst = d;
                }
            CHECK_MSG(worst < 1e-6, "gemv N=%lld C=%lld OC=%lld: %.3e", (long long)N, (long long)C, (long long)OC, worst);
            free(xq);
            free(xs);
        }
        free(a);
        free(b);
        free(g);
        free(x);
        free(bias);
        free(q);
        free(s);
    }
}

/* A copy of the FP8 folder with scale tensor `name` dropped (mode 0), given
 * a wrong shape (1) or stored as int32 (2). */
static const char *broken_dir(const char *name, int mode) {
    static char dir[512];
    snprintf(dir, sizeof dir, "%s/broken%d", ds_test_tmpdir(), mode);
    char out[512], path[600];
    ds_test_sh(out, sizeof out, "mkdir -p %s && cp " CONV "expected_fp8_config.json %s/config.json", dir, dir);
    ds_st_file f;
    if (ds_st_open(&f, CONV "expected_fp8.safetensors")) return NULL;
    ds_st_entry *e = ds_calloc((size_t)f.n, sizeof *e);
    int64_t n = 0;
    static const int32_t ints[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    for (int64_t i = 0; i < f.n; i++) {
        const ds_st_tensor *t = &f.tensors[i];
        ds_st_entry x = {t->name, t->dtype, t->ndim, {0}, t->data};
        for (int d = 0; d < t->ndim; d++) x.shape[d] = t->shape[d];
        if (!strcmp(t->name, name)) {
            if (mode == 0) continue;
            if (mode == 1) x.shape[0] = 1, x.shape[1] = 1;  /* (2, 3) expected: take one element */
            if (mode == 2) x.dtype = DS_I32, x.data = ints;
        }
        e[n++] = x;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    static const char *const meta[] = {"format", "pt", NULL};
    int rc = ds_st_write(path, e, n, meta);
    free(e);
    ds_st_close(&f);
    return rc ? NULL : dir;
}

/* (e) bad input: one-line errors naming the file and the tensor; nothing loaded */
TEST(fp8_resident_bad_scale_errors) {
    const char *sc = "model.layers.0.mlp.down_proj.weight_scale_inv";
    ds_model m;
    ds_load_opts o = {.fp8_resident = 1};
    for (int mode = 0; mode < 3; mode++) {
        const char *dir = broken_dir(sc, mode);
        CHECK(dir != NULL);
        if (!dir) continue;
        CHECK(ds_model_load_ex(&m, dir, &o) != 0);
        const char *msg = ds_errmsg();
        CHECK_MSG(strstr(msg, "model.safetensors") && strstr(msg, "model.layers.0.mlp.down_proj.weight") &&
                      !strchr(msg, '\n'),
                  "mode %d: %s", mode, msg);
        if (mode == 0) CHECK_MSG(strstr(msg, "is missing"), "%s", msg);
        if (mode == 1) CHECK_MSG(strstr(msg, "[1, 1]") && strstr(msg, "[2, 3]"), "%s", msg);
        char out[1024];
        int st = ds_test_sh(out, sizeof out, "$DSV3 forward --model %s --ids " FIX "ids.txt --out %s/o.safetensors", dir,
                            dir);
        CHECK_MSG(st == 1 && strstr(out, "down_proj.weight") && !strstr(out, "\n\n"), "exit %d: %s", st, out);
        char p[600];
        snprintf(p, sizeof p, "%s/o.safetensors", dir);
        CHECK(!ds_file_exists(p));
    }
    /* backward and save refuse a resident model */
    const char *dir = fp8_dir();
    if (!dir || rc_load(&m, dir, 1)) return;
    rc_check_refuses_training(&m, "FP8-resident");
    ds_model_free(&m);
}

/* (f) memory: FP8 linears 1 byte/param + FP32 128x128 scales, owning no
 * floats (kv_b keeps its FP32 copy for the absorbed MLA) */
TEST(fp8_resident_memory_from_layout) {
    const char *dir = fp8_dir();
    CHECK(dir != NULL);
    ds_model m, md;
    if (!dir || rc_load(&m, dir, 1) || rc_load(&md, dir, 0)) return;
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    ds_st_file f;
    CHECK(ds_st_open(&f, path) == 0);
    TEST_RETURN_IF_FAILED();
    /* expected residency from the layout table and the checkpoint's dtypes:
     * F8 linears -> FP8 codes + 128x128 scales; BF16 matmul weights (router,
     * embedding, lm_head, eh_proj) -> BF16; the rest (and kv_b's copy) FP32;
     * BF16 and FP32 entries padded to 16 elements */
    int64_t fp8 = 0, sc = 0, f32 = 0, nlin = 0, b16 = 0, b16p = 0, nb16 = 0;
    for (int64_t i = 0; i < md.layout.n; i++) {
        const ds_param *p = &md.layout.p[i];
        if (p->flags & DS_PARAM_ALIAS) continue;
        const ds_st_tensor *t = ds_st_find(&f, p->name);
        CHECK_MSG(t != NULL, "%s", p->name);
        if (!t) continue;
        size_t n = strlen(p->name);
        int lin = p->ndim == 2 && (strstr(p->name, ".self_attn.") || strstr(p->name, ".mlp.")) &&
                  ((n > 12 && !strcmp(p->name + n - 12, "_proj.weight")) || strstr(p->name, "kv_a_proj_with_mqa.weight"));
        int mat = p->ndim == 2 && (lin || strstr(p->name, ".mlp.gate.weight") || strstr(p->name, "embed_tokens") ||
                                   strstr(p->name, "lm_head") || strstr(p->name, "eh_proj"));
        int kvb = strstr(p->name, "kv_b_proj.weight") != NULL;
        int is8 = lin && t->dtype == DS_F8_E4M3, is16 = mat && t->dtype == DS_BF16;
        if (is8) {
            nlin++;
            fp8 += p->numel;
            sc += ((p->shape[0] + 127) / 128) * ((p->shape[1] + 127) / 128) * 4;
        }
        if (is16) {
            nb16++;
            b16p += p->numel;
            b16 += (p->numel + 15) / 16 * 16 * 2;
        }
        if (!(is8 || is16) || kvb) f32 += (p->numel + 15) / 16 * 16 * 4;
        CHECK_MSG(!is8 || (m.layout.p[i].flags & DS_PARAM_FP8), "%s", p->name);
        CHECK_MSG(!is16 || (m.layout.p[i].flags & DS_PARAM_BF16), "%s", p->name);
        CHECK_MSG(is8 || is16 || !(m.layout.p[i].flags & (DS_PARAM_FP8 | DS_PARAM_BF16)), "%s", p->name);
    }
    ds_st_close(&f);
    ds_weight_mem w, wd;
    ds_model_weight_mem(&m, &w);
    ds_model_weight_mem(&md, &wd);
    printf("%lld FP8 linears: %lld B codes + %lld B scales; %lld BF16 matmuls: %lld B; %lld B FP32 (dequantized: %lld B) ",
           (long long)nlin, (long long)w.fp8_bytes, (long long)w.scale_bytes, (long long)nb16, (long long)w.bf16_bytes,
           (long long)w.f32_bytes, (long long)wd.f32_bytes);
    CHECK(nlin > 0 && w.fp8_params == fp8);
    CHECK(w.fp8_bytes == fp8);
    CHECK(w.scale_bytes == sc);
    CHECK(nb16 == 5 && w.bf16_params == b16p && w.bf16_bytes == b16); /* embed, lm_head, 2 routers, eh_proj */
    CHECK(w.f32_bytes == f32);
    CHECK(w.total_bytes == fp8 + sc + b16 + f32);
    CHECK(wd.fp8_bytes == 0 && wd.scale_bytes == 0 && wd.bf16_bytes == 0 && wd.f32_bytes == md.layout.total * 4);
    CHECK(w.params == wd.params && w.bf16_equiv_bytes == 2 * w.params);
    /* the FP32 pointers of resident linears are gone; kv_b stays */
    const ds_block *b = &m.blocks[1];
    CHECK(!b->q_a && b->q_a8 && !b->o_proj && b->o_proj8 && b->kv_b && b->kv_b8 && !b->eg[0] && b->eg8[0]);
    CHECK(!b->router && b->router8 && b->router8->b16 && !m.blocks[2].eh_proj && m.blocks[2].eh_proj8);
    CHECK(!m.embed && m.embed8 && !m.lm_head && m.lm_head8 && m.lm_head8->b16 != m.embed8->b16);
    CHECK(md.embed && !md.embed8 && md.lm_head && !md.lm_head8 && md.blocks[1].router && !md.blocks[1].router8);
    ds_model_free(&m);
    ds_model_free(&md);
}

/* CLI: forward keeps FP8 by default (oracle logits), --dequant widens; the
 * memory line; generate runs on the FP8 folder */
TEST(fp8_resident_cli_forward_generate) {
    const char *dir = fp8_dir();
    CHECK(dir != NULL);
    if (!dir) return;
    char out[2048], p1[600], p2[600];
    snprintf(p1, sizeof p1, "%s/f8.safetensors", ds_test_tmpdir());
    snprintf(p2, sizeof p2, "%s/dq.safetensors", ds_test_tmpdir());
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 forward --model %s --ids " FIX "ids.txt --out %s --no-mtp", dir, p1) == 0);
    CHECK_MSG(strstr(out, "resident weights: FP8"), "%s", out);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 forward --model %s --ids " FIX "ids.txt --out %s --no-mtp --dequant", dir,
                     p2) == 0);
    CHECK(!strstr(out, "resident weights"));
    int64_t n1 = 0, n2 = 0, nr = 0, nd = 0;
    float *a = read_tensor(p1, "logits", &n1), *b = read_tensor(p2, "logits", &n2);
    float *ra = read_tensor(FIX "logits.safetensors", "logits", &nr), *rd = read_tensor(FIX "logits.safetensors", "logits_dequant", &nd);
    CHECK(a && b && ra && rd && n1 == nr && n2 == nd);
    if (a && b && ra && rd && n1 == nr && n2 == nd) {
        CHECK(ds_test_max_rel(a, ra, (size_t)n1, 0) < 1e-5);
        CHECK(ds_test_max_rel(b, rd, (size_t)n2, 0) < 1e-5);
    }
    free(a), free(b), free(ra), free(rd);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 inspect %s --memory", dir) == 0);
    CHECK_MSG(strstr(out, "in memory") && strstr(out, "FP8 0.16 MiB (170304 params)"), "%s", out);
    /* --grads needs FP32 parameters: it loads dequantized */
    snprintf(p1, sizeof p1, "%s/g.safetensors", ds_test_tmpdir());
    CHECK_MSG(ds_test_sh(out, sizeof out, "$DSV3 forward --model %s --ids " FIX "ids.txt --grads %s", dir, p1) == 0, "%s",
              out);
    CHECK(ds_file_exists(p1));
    char g1[256] = {0}, g2[256] = {0}, g3[256] = {0};
    CHECK(ds_test_sh(g3, sizeof g3, "$DSV3 generate --model %s --ids --prompt '3 5 7 9' --max-tokens 6 --ignore-eos "
                     "--dequant 2>/dev/null", dir) == 0 && strlen(g3) > 8);
    CHECK(ds_test_sh(g1, sizeof g1, "$DSV3 generate --model %s --ids --prompt '3 5 7 9' --max-tokens 6 --ignore-eos "
                     "2>/dev/null", dir) == 0);
    CHECK(ds_test_sh(g2, sizeof g2, "$DSV3 generate --model %s --ids --prompt '3 5 7 9' --max-tokens 6 --ignore-eos "
                     "--speculative mtp 2>/dev/null", dir) == 0);
    CHECK_MSG(!strcmp(g1, g2) && strlen(g1) > 8, "'%s' vs '%s'", g1, g2);
}

/* eval keeps FP8 by default: the eval fixture model converted to FP8 scores a
 * text with bits per byte close to (not equal to) its --dequant run */
TEST(fp8_resident_cli_eval) {
    const char *tmp = ds_test_tmpdir();
    char out[4096], o2[4096];
    if (!ds_file_exists("tests/fixtures/eval/model/tokenizer.json")) SKIP("tests/fixtures/eval/model not found");
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to fp8 tests/fixtures/eval/model %s/ev8 && printf 'The quick "
                     "brown fox jumps over the lazy dog. A second line of text.\\n' > %s/t.txt", tmp, tmp) == 0);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 eval --model %s/ev8 --task lm:%s/t.txt --no-progress 2>&1", tmp, tmp) == 0);
    CHECK(ds_test_sh(o2, sizeof o2, "$DSV3 eval --model %s/ev8 --task lm:%s/t.txt --no-progress --dequant 2>&1", tmp,
                     tmp) == 0);
    CHECK_MSG(strstr(out, "resident weights: FP8") && !strstr(o2, "resident weights"), "%s", out);
    const char *a = strstr(out, "bits_per_byte"), *b = strstr(o2, "bits_per_byte");
    CHECK(a && b);
    if (a && b) {
        double x = atof(a + 13), y = atof(b + 13);
        printf("bits/byte fp8 %.4f dequant %.4f ", x, y);
        CHECK_MSG(x > 0 && y > 0 && x != y && fabs(x - y) < 0.02 * y, "%g vs %g", x, y);
    }
}
