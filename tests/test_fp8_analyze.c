/*
 * test_fp8_analyze.c — `dsv3 fp8 analyze` on a tiny model with planted
 * outliers: the outliers are reported at their positions, the error ordering
 * holds (per-tensor worst, 1x128 <= 128x128), and the numbers in the JSON
 * equal ds_quant_error's (tested against torch in test_fp8_quant.c) up to
 * summation order.
 */
#include "test.h"

#include "base/base.h"
#include "io/fp8_analyze.h"
#include "io/json.h"
#include "io/safetensors.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define AR 300
#define AC 260
#define BR 64
#define BC 200

static float wa[AR * AC], wb[BR * BC], norm[AC];
static const struct { int64_t r, c; float v; } planted_a[] = {{10, 20, 5.0f}, {200, 250, -3.0f}, {150, 5, 4.0f}};

static const char *make_model(void) {
    static char dir[1024];
    snprintf(dir, sizeof dir, "%s/m", ds_test_tmpdir());
    ds_rng r;
    ds_rng_seed(&r, 11);
    for (int64_t i = 0; i < AR * AC; i++) wa[i] = 0.02f * ds_rng_normal(&r);
    for (size_t i = 0; i < sizeof planted_a / sizeof *planted_a; i++) wa[planted_a[i].r * AC + planted_a[i].c] = planted_a[i].v;
    for (int64_t i = 0; i < BR * BC; i++) wb[i] = 0.05f * ds_rng_normal(&r);
    wb[3 * BC + 150] = 2.0f;
    for (int i = 0; i < AC; i++) norm[i] = 1.0f;
    ds_st_entry e[] = {{"model.layers.0.self_attn.q_a_proj.weight", DS_F32, 2, {AR, AC}, wa},
                       {"model.layers.1.mlp.experts.0.up_proj.weight", DS_F32, 2, {BR, BC}, wb},
                       {"model.layers.0.input_layernorm.weight", DS_F32, 1, {AC}, norm}};
    ds_mkdir_p(dir);
    char p[1100];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    CHECK(ds_st_write(p, e, 3, NULL) == 0);
    return dir;
}

static cJSON *load_json(const char *path) {
    size_t n;
    char *t = ds_read_file(path, &n);
    cJSON *j = t ? ds_json_parse(t, n, path) : NULL;
    free(t);
    return j;
}

static const cJSON *weight(const cJSON *j, const char *name) {
    const cJSON *w;
    cJSON_ArrayForEach(w, cJSON_GetObjectItem(j, "weights"))
        if (!strcmp(cJSON_GetObjectItem(w, "name")->valuestring, name)) return w;
    return NULL;
}

static double num(const cJSON *o, const char *a, const char *b, const char *c) {
    const cJSON *v = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(o, a), b), c);
    return v ? v->valuedouble : NAN;
}

TEST(fp8_analyze_kinds) {
    CHECK(!strcmp(ds_weight_kind("model.layers.0.self_attn.q_a_proj.weight"), "q_a"));
    CHECK(!strcmp(ds_weight_kind("model.layers.0.self_attn.q_b_proj.weight"), "q_b"));
    CHECK(!strcmp(ds_weight_kind("model.layers.0.self_attn.kv_a_proj_with_mqa.weight"), "kv_a"));
    CHECK(!strcmp(ds_weight_kind("model.layers.0.self_attn.kv_b_proj.weight"), "kv_b"));
    CHECK(!strcmp(ds_weight_kind("model.layers.0.self_attn.o_proj.weight"), "o"));
    CHECK(!strcmp(ds_weight_kind("model.layers.0.mlp.down_proj.weight"), "dense"));
    CHECK(!strcmp(ds_weight_kind("model.layers.3.mlp.experts.17.gate_proj.weight"), "expert"));
    CHECK(!strcmp(ds_weight_kind("model.layers.3.mlp.shared_experts.up_proj.weight"), "shared"));
    CHECK(!strcmp(ds_weight_kind("model.layers.3.mlp.gate.weight"), "router"));
    CHECK(!strcmp(ds_weight_kind("model.layers.61.eh_proj.weight"), "eh_proj"));
    CHECK(!strcmp(ds_weight_kind("lm_head.weight"), "head"));
    CHECK(!strcmp(ds_weight_kind("model.embed_tokens.weight"), "embed"));
}

TEST(fp8_analyze_planted_outliers) {
    const char *dir = make_model();
    char js[1100], out[16384];
    snprintf(js, sizeof js, "%s/a.json", ds_test_tmpdir());
    int rc = ds_test_sh(out, sizeof out, "$DSV3 fp8 analyze --model %s --json %s --top 4", dir, js);
    CHECK_MSG(rc == 0, "%s", out);
    CHECK(strstr(out, "q_a") && strstr(out, "expert") && strstr(out, "[10, 20]"));
    cJSON *j = load_json(js);
    CHECK(j != NULL);
    if (!j) return;
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(j, "weights")) == 2); /* the 1-D norm is left out */
    CHECK(cJSON_IsArray(cJSON_GetObjectItem(j, "activations")) && cJSON_IsArray(cJSON_GetObjectItem(j, "gradients")));
    /* the overall top 4: the four planted values, largest ratio first */
    const cJSON *top = cJSON_GetObjectItem(j, "top_outliers");
    CHECK(cJSON_GetArraySize(top) == 4);
    int found[4] = {0};
    double prev = INFINITY;
    const cJSON *o;
    cJSON_ArrayForEach(o, top) {
        const char *n = cJSON_GetObjectItem(o, "name")->valuestring;
        int64_t r = (int64_t)cJSON_GetObjectItem(o, "row")->valuedouble, c = (int64_t)cJSON_GetObjectItem(o, "col")->valuedouble;
        double ratio = cJSON_GetObjectItem(o, "ratio")->valuedouble;
        CHECK(ratio <= prev && ratio > 20);
        prev = ratio;
        for (int i = 0; i < 3; i++)
            if (strstr(n, "q_a_proj") && r == planted_a[i].r && c == planted_a[i].c) {
                found[i]++;
                CHECK(cJSON_GetObjectItem(o, "value")->valuedouble == planted_a[i].v);
            }
        if (strstr(n, "experts.0.up_proj") && r == 3 && c == 150) found[3]++;
    }
    for (int i = 0; i < 4; i++) CHECK_MSG(found[i] == 1, "planted outlier %d reported %d times", i, found[i]);
    /* error ordering under outliers: per-tensor worst, 1x128 <= 128x128 */
    const cJSON *wq = weight(j, "model.layers.0.self_attn.q_a_proj.weight");
    CHECK(wq != NULL);
    if (!wq) { cJSON_Delete(j); return; }
    const cJSON *err = cJSON_GetObjectItem(wq, "error");
    const char *fm[2] = {"e4m3", "e5m2"}, *sc[4] = {"tensor", "row", "1x128", "128x128"};
    for (int f = 0; f < 2; f++) {
        const cJSON *ef = cJSON_GetObjectItem(err, fm[f]);
        for (int s = 1; s < 4; s++) {
            CHECK_MSG(cJSON_GetObjectItem(cJSON_GetObjectItem(ef, "tensor"), "rel_rms")->valuedouble >
                          cJSON_GetObjectItem(cJSON_GetObjectItem(ef, sc[s]), "rel_rms")->valuedouble,
                      "%s: tensor vs %s", fm[f], sc[s]);
        }
        double t1 = cJSON_GetObjectItem(cJSON_GetObjectItem(ef, "1x128"), "rel_rms")->valuedouble;
        double t2 = cJSON_GetObjectItem(cJSON_GetObjectItem(ef, "128x128"), "rel_rms")->valuedouble;
        CHECK_MSG(t1 <= t2, "%s: 1x128 %g > 128x128 %g", fm[f], t1, t2);
    }
    /* E4M3 per tensor: the outlier's scale flushes small weights to zero; 1x128 flushes fewer */
    CHECK(num(err, "e4m3", "tensor", "frac_flushed") > num(err, "e4m3", "1x128", "frac_flushed"));
    /* numbers equal ds_quant_error's: the counts exactly, the sums to 1e-12
     * relative (ds_quant_error's OpenMP reductions add in an order that
     * depends on the thread count, and analyze runs small tensors' cases on
     * one thread each) */
    for (int f = 0; f < 2; f++)
        for (int s = 0; s < 4; s++) {
            ds_quant_opts qo = ds_quant_defaults(ds_analyze_grans[s]);
            qo.fmt = f ? DS_FP8_E5M2 : DS_FP8_E4M3;
            ds_quant_err e;
            CHECK(ds_quant_error(&e, wa, AR, AC, &qo) == 0);
            CHECK_NEAR(num(err, fm[f], sc[s], "mae"), e.mae, 1e-12 * e.mae);
            CHECK_NEAR(num(err, fm[f], sc[s], "rel_rms"), e.rel_rms, 1e-12 * e.rel_rms);
            CHECK(num(err, fm[f], sc[s], "max_err") == e.max_err &&
                  num(err, fm[f], sc[s], "frac_clamped") == e.frac_clamped &&
                  num(err, fm[f], sc[s], "frac_flushed") == e.frac_flushed &&
                  num(err, fm[f], sc[s], "frac_subnormal") == e.frac_subnormal);
        }
    CHECK(cJSON_GetObjectItem(wq, "amax")->valuedouble == 5.0);
    /* summary: one q_a tensor, one expert, with their parameter counts; a kind of one tensor has its numbers */
    const cJSON *sum = cJSON_GetObjectItem(j, "summary");
    const cJSON *qa = cJSON_GetObjectItem(sum, "q_a"), *ex = cJSON_GetObjectItem(sum, "expert");
    CHECK(qa && ex && !cJSON_GetObjectItem(sum, "dense"));
    if (qa && ex) {
        CHECK(cJSON_GetObjectItem(qa, "tensors")->valuedouble == 1 && cJSON_GetObjectItem(qa, "params")->valuedouble == AR * AC);
        CHECK(cJSON_GetObjectItem(ex, "params")->valuedouble == BR * BC);
        double a = num(cJSON_GetObjectItem(qa, "error"), "e4m3", "128x128", "rel_rms"), b = num(err, "e4m3", "128x128", "rel_rms");
        CHECK_NEAR(a, b, 1e-12 * b);
        CHECK_NEAR(num(cJSON_GetObjectItem(qa, "error"), "e5m2", "row", "mae"), num(err, "e5m2", "row", "mae"),
                   1e-12 * num(err, "e5m2", "row", "mae"));
    }
    cJSON_Delete(j);
}

TEST(fp8_analyze_find_outliers) {
    /* a ragged 130x3 matrix: ratios are against each block's own mean */
    float w[130 * 3];
    for (int i = 0; i < 130 * 3; i++) w[i] = 1.0f;
    w[129 * 3 + 1] = 9.0f; /* block (1, 0): rows 128..129, mean (5 + 9) / 6 */
    w[7 * 3 + 2] = -50.0f; /* block (0, 0): mean (383 + 50) / 384 */
    ds_outlier top[3];
    CHECK(ds_find_outliers(top, 3, w, 130, 3) == 3);
    CHECK(top[0].row == 7 && top[0].col == 2 && top[0].value == -50.0f);
    CHECK_NEAR(top[0].ratio, 50.0 / (433.0 / 384.0), 1e-4);
    CHECK(top[1].row == 129 && top[1].col == 1);
    CHECK_NEAR(top[1].ratio, 9.0 / (14.0 / 6.0), 1e-5);
    CHECK(top[2].ratio <= top[1].ratio);
    CHECK(ds_find_outliers(top, 0, w, 130, 3) == 0);
}

TEST(fp8_analyze_bad_input) {
    char out[4096];
    const char *d = ds_test_tmpdir();
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 fp8 analyze --model %s/none", d) == 1);
    CHECK_MSG(strstr(out, "none") != NULL, "%s", out);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 fp8 analyze") == 2);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 fp8 analyze --model %s --top -1", d) == 2);
    /* only 1-D tensors: nothing to analyze, no JSON written */
    static float v[4];
    ds_st_entry e = {"model.norm.weight", DS_F32, 1, {4}, v};
    char p[1100];
    snprintf(p, sizeof p, "%s/one.safetensors", d);
    CHECK(ds_st_write(p, &e, 1, NULL) == 0);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 fp8 analyze --model %s --json %s/x.json", p, d) == 1);
    CHECK_MSG(strstr(out, "no 2-D float weights") != NULL, "%s", out);
    snprintf(p, sizeof p, "%s/x.json", d);
    CHECK(!ds_file_exists(p));
    /* NaN and inf weights are counted; non-finite statistics are null (the JSON stays
     * strict); an empty weight is analyzed */
    static float wn[3 * 200], we[1];
    for (int i = 0; i < 600; i++) wn[i] = (float)(i % 7) - 3.0f;
    wn[5] = NAN;
    wn[300] = INFINITY;
    ds_st_entry e3[2] = {{"model.layers.0.self_attn.o_proj.weight", DS_F32, 2, {3, 200}, wn},
                         {"model.layers.0.self_attn.q_a_proj.weight", DS_F32, 2, {0, 4}, we}};
    snprintf(p, sizeof p, "%s/nan.safetensors", d);
    CHECK(ds_st_write(p, e3, 2, NULL) == 0);
    char js[1100];
    snprintf(js, sizeof js, "%s/nan.json", d);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 fp8 analyze --model %s --json %s", p, js) == 0);
    cJSON *j = load_json(js);
    const cJSON *wo = j ? weight(j, "model.layers.0.self_attn.o_proj.weight") : NULL;
    CHECK(wo && cJSON_GetObjectItem(wo, "nonfinite")->valuedouble == 2 && cJSON_GetObjectItem(wo, "amax")->valuedouble == 3.0);
    if (wo) { /* the third row has neither NaN nor inf: a finite error in its own row scale */
        const cJSON *r = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(wo, "error"), "e4m3"), "tensor");
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(r, "rel_rms"))); /* the inf sets the tensor scale */
    }
    const cJSON *wz = j ? weight(j, "model.layers.0.self_attn.q_a_proj.weight") : NULL;
    CHECK(wz && num(cJSON_GetObjectItem(wz, "error"), "e4m3", "tensor", "rel_rms") == 0);
    cJSON_Delete(j);
    /* an FP8 weight whose scale has the wrong shape */
    static uint8_t q[130 * 130];
    static float s[1];
    ds_st_entry e2[2] = {{"model.layers.0.mlp.up_proj.weight", DS_F8_E4M3, 2, {130, 130}, q},
                         {"model.layers.0.mlp.up_proj.weight_scale_inv", DS_F32, 2, {1, 1}, s}};
    snprintf(p, sizeof p, "%s/f8.safetensors", d);
    CHECK(ds_st_write(p, e2, 2, NULL) == 0);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 fp8 analyze --model %s", p) == 1);
    CHECK_MSG(strstr(out, "expected [2, 2]") != NULL, "%s", out);
}

/* An FP8 checkpoint (DeepSeek's format, from dsv3 convert): its linear weights
 * are already on the E4M3 128x128 grid, so re-quantizing the dequantized
 * weights gives back the same codes; the only error left is the FP32 rounding
 * of the recomputed scale (amax = 448 s rounds, s' = amax / 448 may differ
 * from s in the last bit): relative error <= 2^-22.  Per-tensor scaling of a
 * weight of several blocks moves them off their grids: error of order 1e-2. */
TEST(fp8_analyze_fp8_checkpoint_is_on_grid) {
    const char *d = ds_test_tmpdir();
    char out[8192], js[1100];
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to fp8 tests/fixtures/convert/model %s/f8", d) == 0);
    snprintf(js, sizeof js, "%s/f8.json", d);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 fp8 analyze --model %s/f8 --json %s --top 0", d, js) == 0);
    cJSON *j = load_json(js);
    CHECK(j != NULL);
    if (!j) return;
    int nlin = 0;
    const cJSON *w;
    cJSON_ArrayForEach(w, cJSON_GetObjectItem(j, "weights")) {
        const char *dt = cJSON_GetObjectItem(w, "dtype")->valuestring;
        if (strcmp(dt, "F8_E4M3")) continue;
        nlin++;
        const cJSON *e = cJSON_GetObjectItem(w, "error");
        CHECK_MSG(num(e, "e4m3", "128x128", "rel_rms") < 0x1p-22 && num(e, "e4m3", "128x128", "frac_flushed") == 0,
                  "%s: %g", cJSON_GetObjectItem(w, "name")->valuestring, num(e, "e4m3", "128x128", "rel_rms"));
        const cJSON *sh = cJSON_GetObjectItem(w, "shape");
        if (cJSON_GetArrayItem(sh, 0)->valuedouble > 128 || cJSON_GetArrayItem(sh, 1)->valuedouble > 128)
            CHECK(num(e, "e4m3", "tensor", "rel_rms") > 1e-3); /* several blocks: one scale cannot fit them all */
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(w, "outliers")) == 0);
    }
    CHECK(nlin == 48); /* 3 layers x (5 attention + 3 MLP) + experts (2 layers x 4 x 3) */
    cJSON_Delete(j);
}
