/*
 * test_convert.c — `dsv3 convert` against torch (tests/fixtures/convert from
 * tools/make_convert_fixtures.py): fp32 -> fp8 and fp8 -> fp32 and fp32 ->
 * bf16 give byte-identical safetensors files to torch's per-block cast /
 * weight_dequant / .to(bfloat16) written by the safetensors library; the block
 * cast equals ds_quantize's 128x128 cast (itself tested against torch);
 * sharded folders; bad input.
 */
#include "test.h"

#include "base/base.h"
#include "model/model_convert.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "num/fp8.h"
#include "num/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FIX "tests/fixtures/convert"

static int files_equal(const char *a, const char *b) {
    size_t na, nb;
    char *pa = ds_read_file(a, &na), *pb = ds_read_file(b, &nb);
    int eq = pa && pb && na == nb && !memcmp(pa, pb, na);
    free(pa);
    free(pb);
    return eq;
}

/* Every tensor of set `got` equals the one of file `exp` (dtype, shape, bytes), same names. */
static int sets_equal(const char *got_dir, const char *exp_path) {
    ds_st_set g;
    ds_st_file e;
    if (ds_st_set_open(&g, got_dir)) return 0;
    if (ds_st_open(&e, exp_path)) { ds_st_set_close(&g); return 0; }
    int ok = g.nrefs == e.n;
    for (int64_t i = 0; ok && i < e.n; i++) {
        const ds_st_tensor *b = &e.tensors[i], *a = ds_st_set_find(&g, b->name, NULL);
        ok = a && a->dtype == b->dtype && a->ndim == b->ndim && a->nbytes == b->nbytes &&
             !memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim) && !memcmp(a->data, b->data, a->nbytes);
        if (!ok) fprintf(stderr, "  mismatch: %s\n", b->name);
    }
    ds_st_close(&e);
    ds_st_set_close(&g);
    return ok;
}

TEST(convert_linear_names) {
    const char *yes[] = {"model.layers.0.self_attn.q_a_proj.weight", "model.layers.12.self_attn.q_b_proj.weight",
                         "model.layers.0.self_attn.q_proj.weight", "model.layers.3.self_attn.kv_a_proj_with_mqa.weight",
                         "model.layers.3.self_attn.kv_b_proj.weight", "model.layers.3.self_attn.o_proj.weight",
                         "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight",
                         "model.layers.0.mlp.down_proj.weight", "model.layers.61.mlp.experts.255.down_proj.weight",
                         "model.layers.4.mlp.shared_experts.gate_proj.weight", "model.layers.61.self_attn.o_proj.weight"};
    const char *no[] = {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
                        "model.layers.3.mlp.gate.weight", "model.layers.3.mlp.gate.e_score_correction_bias",
                        "model.layers.61.eh_proj.weight", "model.layers.61.shared_head.head.weight",
                        "model.layers.61.embed_tokens.weight", "model.layers.0.self_attn.q_a_layernorm.weight",
                        "model.layers.0.input_layernorm.weight", "model.layers.0.self_attn.o_proj.weight_scale_inv",
                        "model.layers.x.mlp.up_proj.weight", "model.layers.3.mlp.experts.a.up_proj.weight",
                        "model.layers.0.mlp.up_proj.bias", "layers.0.mlp.up_proj.weight"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) CHECK_MSG(ds_weight_is_fp8_linear(yes[i]), "%s", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof *no; i++) CHECK_MSG(!ds_weight_is_fp8_linear(no[i]), "%s", no[i]);
    CHECK(ds_ckpt_format_from_name("fp8") == DS_CKPT_FP8 && ds_ckpt_format_from_name("bf16") == DS_CKPT_BF16 &&
          ds_ckpt_format_from_name("fp32") == DS_CKPT_FP32 && ds_ckpt_format_from_name("fp16") == -1);
}

/* ds_fp8_block_cast (any block side) at 128 equals ds_quantize's 128x128 cast,
 * ragged shapes, a zero block, a tiny block, ue8m0 or not. */
TEST(convert_block_cast_equals_quantizer) {
    const int64_t shapes[][2] = {{1, 1}, {130, 7}, {257, 300}, {128, 128}, {576, 200}};
    ds_rng r;
    ds_rng_seed(&r, 5);
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++)
        for (int ue = 0; ue < 2; ue++) {
            int64_t R = shapes[si][0], C = shapes[si][1], n = R * C, ns = ds_ceil_div(R, 128) * ds_ceil_div(C, 128);
            float *w = ds_malloc(sizeof(float) * (size_t)n), *s1 = ds_malloc(sizeof(float) * (size_t)ns),
                  *s2 = ds_malloc(sizeof(float) * (size_t)ns);
            uint8_t *q1 = ds_malloc((size_t)n), *q2 = ds_malloc((size_t)n);
            for (int64_t i = 0; i < n; i++) {
                int64_t rr = i / C, cc = i % C;
                w[i] = ds_rng_normal(&r) * (rr >= 128 && cc < 128 ? 1e-7f : 1.0f);
                if (rr < 128 && cc >= 128 && cc < 256) w[i] = 0.0f;
            }
            ds_quant_opts o = ds_quant_defaults(DS_QUANT_BLOCK_128x128);
            o.ue8m0 = ue;
            CHECK(ds_fp8_block_cast(q1, s1, w, R, C, 128, ue) == 0);
            CHECK(ds_quantize(q2, s2, w, R, C, &o) == 0);
            CHECK_MSG(!memcmp(q1, q2, (size_t)n) && !memcmp(s1, s2, sizeof(float) * (size_t)ns), "%lldx%lld ue8m0 %d",
                      (long long)R, (long long)C, ue);
            free(w); free(s1); free(s2); free(q1); free(q2);
        }
    CHECK(ds_fp8_block_cast(NULL, NULL, NULL, 2, 2, 0, 0) != 0);
}

TEST(convert_matches_torch) {
    const char *d = ds_test_tmpdir();
    char out[4096], p[1024], q[1024];
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to fp8 %s/model %s/fp8", FIX, d) == 0);
    snprintf(p, sizeof p, "%s/fp8/model.safetensors", d);
    CHECK_MSG(files_equal(p, FIX "/expected_fp8.safetensors"), "fp32 -> fp8 differs from torch's per-block cast");
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to fp8 --scale-fmt ue8m0 %s/model %s/fp8u", FIX, d) == 0);
    snprintf(p, sizeof p, "%s/fp8u/model.safetensors", d);
    CHECK_MSG(files_equal(p, FIX "/expected_fp8_ue8m0.safetensors"), "ue8m0 cast differs from torch");
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to fp32 %s/fp8 %s/fp32", d, d) == 0);
    snprintf(p, sizeof p, "%s/fp32/model.safetensors", d);
    CHECK_MSG(files_equal(p, FIX "/expected_fp32.safetensors"), "fp8 -> fp32 differs from torch's weight_dequant");
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to bf16 %s/model %s/bf16", FIX, d) == 0);
    snprintf(p, sizeof p, "%s/bf16/model.safetensors", d);
    CHECK_MSG(files_equal(p, FIX "/expected_bf16.safetensors"), "fp32 -> bf16 differs from torch .to(bfloat16)");
    /* fp8 -> fp8 with the same blocks is the identity (every block's amax code is 448) */
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to fp8 %s/fp8 %s/fp8b", d, d) == 0);
    snprintf(p, sizeof p, "%s/fp8b/model.safetensors", d);
    snprintf(q, sizeof q, "%s/fp8/model.safetensors", d);
    CHECK(files_equal(p, q));
    /* config.json: quantization_config added / removed, dtype; other files copied */
    ds_config c;
    snprintf(p, sizeof p, "%s/fp8u/config.json", d);
    CHECK(ds_config_load(&c, p) == 0);
    CHECK(c.quant_fp8 && c.quant_block[0] == 128 && c.quant_block[1] == 128 && !strcmp(c.quant_fmt, "e4m3") &&
          !strcmp(c.quant_scale_fmt, "ue8m0") && !strcmp(c.quant_activation_scheme, "dynamic") &&
          !strcmp(c.torch_dtype, "bfloat16"));
    snprintf(p, sizeof p, "%s/fp32/config.json", d);
    CHECK(ds_config_load(&c, p) == 0);
    CHECK(!c.quant_fp8 && !strcmp(c.torch_dtype, "float32") && c.hidden_size == 136 && c.intermediate_size == 264);
    snprintf(p, sizeof p, "%s/bf16/generation_config.json", d);
    CHECK(files_equal(p, FIX "/model/generation_config.json"));
    /* config.json text: as transformers writes it (Python oracle), and the round trip restores it */
    snprintf(p, sizeof p, "%s/fp8/config.json", d);
    CHECK_MSG(files_equal(p, FIX "/expected_fp8_config.json"), "fp8 config.json");
    snprintf(p, sizeof p, "%s/fp8u/config.json", d);
    CHECK_MSG(files_equal(p, FIX "/expected_fp8_ue8m0_config.json"), "fp8 ue8m0 config.json");
    snprintf(p, sizeof p, "%s/bf16/config.json", d);
    CHECK_MSG(files_equal(p, FIX "/expected_bf16_config.json"), "bf16 config.json");
    snprintf(p, sizeof p, "%s/fp32/config.json", d);
    CHECK_MSG(files_equal(p, FIX "/model/config.json"), "fp32 -> fp8 -> fp32 restores config.json byte for byte");
}

/* A config.json in another style (compact, unsorted, keys dsv3 does not model,
 * torch_dtype): only quantization_config and the dtype change. */
TEST(convert_config_kept) {
    const char *d = ds_test_tmpdir();
    char p[1024], out[4096];
    size_t n;
    char *t = ds_read_file(FIX "/model/config.json", &n);
    CHECK(t != NULL);
    if (!t) return;
    /* compact: drop newlines and indentation outside strings (the fixture has no spaces in strings) */
    char *c = ds_malloc(n + 256), *w = c;
    w += sprintf(w, "{\"auto_map\":{\"AutoConfig\":\"configuration_deepseek.DeepseekV3Config\"},");
    for (size_t i = 1; i < n; i++)
        if (t[i] != '\n' && t[i] != ' ') *w++ = t[i];
    *w = 0;
    char *dt = strstr(c, "\"dtype\"");
    CHECK(dt != NULL);
    if (!dt) { free(t); free(c); return; }
    memmove(dt + 7, dt + 1, strlen(dt + 1) + 1); /* "dtype" -> "torch_dtype" */
    memcpy(dt, "\"torch_", 7);
    char in[1024];
    snprintf(in, sizeof in, "%s/in", d);
    ds_mkdir_p(in);
    snprintf(p, sizeof p, "%s/config.json", in);
    CHECK(ds_write_file_atomic(p, c, strlen(c)) == 0);
    snprintf(p, sizeof p, "ln -s $PWD/%s/model/model.safetensors %s/model.safetensors", FIX, in);
    CHECK(system(p) == 0);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to fp8 %s %s/o8", in, d) == 0);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to fp32 %s/o8 %s/o32", d, d) == 0);
    snprintf(p, sizeof p, "%s/o8/config.json", d);
    char *o8 = ds_read_file(p, &n);
    CHECK(o8 && strstr(o8, "\"auto_map\":{\"AutoConfig\"") && strstr(o8, "\"torch_dtype\":\"bfloat16\"") &&
          !strstr(o8, "\"dtype\"") &&
          strstr(o8, "\"quantization_config\":{\"activation_scheme\":\"dynamic\",\"fmt\":\"e4m3\",\"quant_method\":\"fp8\","
                     "\"weight_block_size\":[128,128]}"));
    /* back to fp32: the input text again, except the dtype value */
    snprintf(p, sizeof p, "%s/o32/config.json", d);
    char *o32 = ds_read_file(p, &n);
    char *want = ds_malloc(strlen(c) + 16);
    strcpy(want, c);
    char *v = strstr(want, "\"torch_dtype\":\"") + 15;
    CHECK(!strncmp(v, "float32", 7)); /* the fixture is FP32 */
    CHECK_MSG(o32 && !strcmp(o32, want), "%s", o32 ? o32 : "(none)");
    free(t); free(c); free(o8); free(o32); free(want);
}

/* Sharded in, sharded out (kept like the input), same tensors. */
TEST(convert_sharded) {
    const char *d = ds_test_tmpdir();
    char in[1024], o2[1024], p[1024], out[4096];
    snprintf(in, sizeof in, "%s/sh8", d);
    ds_convert_opts o = {DS_CKPT_FP8, 128, 0, 150000};
    CHECK(ds_model_convert(FIX "/model", in, &o) == 0);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", in);
    CHECK(ds_file_exists(p));
    CHECK(sets_equal(in, FIX "/expected_fp8.safetensors"));
    snprintf(o2, sizeof o2, "%s/sh32", d);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to fp32 %s %s", in, o2) == 0);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", o2);
    CHECK_MSG(ds_file_exists(p), "sharding of the input kept");
    CHECK(sets_equal(o2, FIX "/expected_fp32.safetensors"));
    /* --shard-mb 0: one file again; the stale shards are removed */
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to fp32 --shard-mb 0 %s %s", in, o2) == 0);
    CHECK(!ds_file_exists(p));
    snprintf(p, sizeof p, "%s/model.safetensors", o2);
    CHECK(files_equal(p, FIX "/expected_fp32.safetensors"));
}

/* A folder with config.json from the fixture and the given tensors. */
static void make_folder(const char *dir, const ds_st_entry *e, int64_t n) {
    char p[1024];
    ds_mkdir_p(dir);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    CHECK(ds_st_write(p, e, n, NULL) == 0);
    size_t len;
    char *cfg = ds_read_file(FIX "/model/config.json", &len);
    snprintf(p, sizeof p, "%s/config.json", dir);
    CHECK(cfg && ds_write_file_atomic(p, cfg, len) == 0);
    free(cfg);
}

TEST(convert_bad_input) {
    const char *d = ds_test_tmpdir();
    char dir[1024], od[1024], out[4096];
    static uint8_t w8[200 * 130];
    static float sc[2 * 2], sc_bad[2 * 1], x[4];
    for (int i = 0; i < 4; i++) sc[i] = 1.0f;
    const ds_st_entry w = {"model.layers.0.mlp.up_proj.weight", DS_F8_E4M3, 2, {200, 130}, w8};
    /* F8 weight without its scale */
    snprintf(dir, sizeof dir, "%s/noscale", d);
    make_folder(dir, &w, 1);
    snprintf(od, sizeof od, "%s/out1", d);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to bf16 %s %s", dir, od) == 1);
    CHECK_MSG(strstr(out, "model.layers.0.mlp.up_proj.weight_scale_inv") != NULL, "%s", out);
    CHECK_MSG(!ds_file_exists(od), "nothing written on error");
    /* scale of the wrong shape */
    ds_st_entry e2[2] = {w, {"model.layers.0.mlp.up_proj.weight_scale_inv", DS_F32, 2, {2, 1}, sc_bad}};
    snprintf(dir, sizeof dir, "%s/badscale", d);
    make_folder(dir, e2, 2);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to fp32 %s %s", dir, od) == 1);
    CHECK_MSG(strstr(out, "[2, 1]") && strstr(out, "expected [2, 2]"), "%s", out);
    CHECK(!ds_file_exists(od));
    /* a scale with no FP8 weight beside it */
    ds_st_entry e3[1] = {{"model.layers.0.mlp.up_proj.weight_scale_inv", DS_F32, 2, {2, 2}, sc}};
    snprintf(dir, sizeof dir, "%s/orphan", d);
    make_folder(dir, e3, 1);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to fp8 %s %s", dir, od) == 1);
    CHECK_MSG(strstr(out, "without an FP8 weight") != NULL, "%s", out);
    /* a 1-D "linear" weight cannot be block-cast */
    ds_st_entry e4[1] = {{"model.layers.0.mlp.up_proj.weight", DS_F32, 1, {4}, x}};
    snprintf(dir, sizeof dir, "%s/oned", d);
    make_folder(dir, e4, 1);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to fp8 %s %s", dir, od) == 1);
    CHECK_MSG(strstr(out, "must be 2-D") != NULL, "%s", out);
    CHECK(!ds_file_exists(od));
    /* config.json: invalid JSON, a required field missing */
    const char *bad_cfg[] = {"{\"hidden_size\": 64,", "{\"model_type\": \"deepseek_v3\"}"};
    const char *bad_msg[] = {"invalid JSON", "missing"};
    for (int i = 0; i < 2; i++) {
        snprintf(dir, sizeof dir, "%s/badcfg%d", d, i);
        make_folder(dir, e4, 1);
        char p[1100];
        snprintf(p, sizeof p, "%s/config.json", dir);
        CHECK(ds_write_file_atomic(p, bad_cfg[i], strlen(bad_cfg[i])) == 0);
        CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to bf16 %s %s", dir, od) == 1);
        CHECK_MSG(strstr(out, "config.json") && strstr(out, bad_msg[i]), "%s", out);
        CHECK(!ds_file_exists(od));
    }
    /* a truncated weight file */
    {
        snprintf(dir, sizeof dir, "%s/trunc", d);
        make_folder(dir, e4, 1);
        char p[1100];
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        size_t n;
        char *img = ds_read_file(FIX "/model/model.safetensors", &n);
        CHECK(img && ds_write_file_atomic(p, img, n / 2) == 0);
        free(img);
        CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to fp8 %s %s", dir, od) == 1);
        CHECK_MSG(strstr(out, "model.safetensors") != NULL, "%s", out);
        CHECK(!ds_file_exists(od));
    }
    /* usage errors, missing folder or config, output = input */
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to fp16 %s/model %s", FIX, od) == 2);
    CHECK_MSG(strstr(out, "fp16") != NULL, "%s", out);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert %s/model %s", FIX, od) == 2);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to bf16 --scale-fmt ue8m0 %s/model %s", FIX, od) == 2);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to fp8 --scale-fmt e8m0 %s/model %s", FIX, od) == 2);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to fp8 %s/nonexistent %s", d, od) == 1);
    CHECK_MSG(strstr(out, "config.json") != NULL, "%s", out);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to fp8 %s %s", dir, dir) == 1);
    CHECK_MSG(strstr(out, "must differ") != NULL, "%s", out);
    CHECK(!ds_file_exists(od));
}

/* --block 64: scales [ceil(R/64), ceil(C/64)], weight_block_size [64, 64] in
 * config.json, and fp8 -> fp32 equals a scalar per-element reference of the
 * cast and dequantization on the dense down_proj (136, 264; ragged 64-blocks
 * and the planted outlier). */
TEST(convert_block_64) {
    const char *d = ds_test_tmpdir();
    char out[4096], p[1024];
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to fp8 --block 64 %s/model %s/b64", FIX, d) == 0);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to fp32 %s/b64 %s/b64f", d, d) == 0);
    ds_config c;
    snprintf(p, sizeof p, "%s/b64/config.json", d);
    CHECK(ds_config_load(&c, p) == 0 && c.quant_fp8 && c.quant_block[0] == 64 && c.quant_block[1] == 64);
    ds_st_set q, f;
    ds_st_file in;
    snprintf(p, sizeof p, "%s/b64", d);
    CHECK(ds_st_set_open(&q, p) == 0);
    snprintf(p, sizeof p, "%s/b64f", d);
    CHECK(ds_st_set_open(&f, p) == 0);
    CHECK(ds_st_open(&in, FIX "/model/model.safetensors") == 0);
    TEST_RETURN_IF_FAILED();
    const char *name = "model.layers.0.mlp.down_proj.weight";
    const ds_st_tensor *sc = ds_st_set_find(&q, "model.layers.0.mlp.down_proj.weight_scale_inv", NULL);
    const ds_st_tensor *w = ds_st_find(&in, name), *back = ds_st_set_find(&f, name, NULL);
    CHECK(sc && sc->ndim == 2 && sc->shape[0] == 3 && sc->shape[1] == 5 && w && back && back->dtype == DS_F32);
    if (sc && w && back) {
        const float *x = w->data, *y = back->data;
        const int64_t R = 136, C = 264;
        int64_t bad = 0;
        for (int64_t r = 0; r < R; r++)
            for (int64_t cc = 0; cc < C; cc++) {
                int64_t r0 = r / 64 * 64, c0 = cc / 64 * 64;
                float a = 0;
                for (int64_t i = r0; i < r0 + 64 && i < R; i++)
                    for (int64_t j = c0; j < c0 + 64 && j < C; j++) a = fmaxf(a, fabsf(x[i * C + j]));
                float s = (a < 1e-4f ? 1e-4f : a) / 448.0f;
                float want = ds_e4m3_to_f32(ds_f32_to_e4m3(x[r * C + cc] / s, DS_FP8_SAT)) * s;
                if (memcmp(&want, &y[r * C + cc], 4)) bad++;
            }
        CHECK_MSG(bad == 0, "%lld elements differ from the scalar reference", (long long)bad);
    }
    ds_st_close(&in);
    ds_st_set_close(&q);
    ds_st_set_close(&f);
}

/* An FP8 weight already in the target form is kept as it is (its scales need
 * not be amax / 448: here the largest code is 1.0 and the scale 0.5, which a
 * re-quantization would change); other blocks or non-power-of-two scales with
 * --scale-fmt ue8m0 are re-quantized. */
TEST(convert_fp8_kept) {
    const char *d = ds_test_tmpdir();
    char dir[1024], out[4096], p[1200];
    static uint8_t q[200 * 130];
    static float s_half[4] = {0.5f, 0.5f, 0.5f, 0.5f}, s_odd[4] = {0.3f, 0.3f, 0.3f, 0.3f};
    for (int i = 0; i < 200 * 130; i++) q[i] = (uint8_t)(0x30 + i % 9); /* 0x30 = 0.5 ... 0x38 = 1.0 */
    for (int k = 0; k < 2; k++) {
        ds_st_entry e[2] = {{"model.layers.0.mlp.up_proj.weight", DS_F8_E4M3, 2, {200, 130}, q},
                            {"model.layers.0.mlp.up_proj.weight_scale_inv", DS_F32, 2, {2, 2}, k ? s_odd : s_half}};
        snprintf(dir, sizeof dir, "%s/in%d", d, k);
        make_folder(dir, e, 2);
        for (int ue = 0; ue < 2; ue++) {
            CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to fp8 %s %s %s/o%d%d", ue ? "--scale-fmt ue8m0" : "", dir,
                             d, k, ue) == 0);
            snprintf(p, sizeof p, "%s/o%d%d/model.safetensors", d, k, ue);
            ds_st_file f;
            CHECK(ds_st_open(&f, p) == 0);
            TEST_RETURN_IF_FAILED();
            const ds_st_tensor *w = ds_st_find(&f, e[0].name), *sc = ds_st_find(&f, e[1].name);
            int kept = w && sc && !memcmp(w->data, q, sizeof q) && !memcmp(sc->data, e[1].data, 16);
            CHECK_MSG(kept == !(k == 1 && ue == 1), "scale %g ue8m0 %d: kept %d", k ? 0.3 : 0.5, ue, kept);
            /* amax 1.0 * 0.3, 0.3 / 448 = 6.7e-4 -> rounded up to 2^-10 */
            if (!kept && sc) CHECK(((const float *)sc->data)[0] == 0x1p-10f);
            ds_st_close(&f);
        }
    }
    /* other blocks: re-quantized, values within E4M3 rounding of the input */
    snprintf(dir, sizeof dir, "%s/in0", d);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to fp8 --block 64 %s %s/b64", dir, d) == 0);
    snprintf(p, sizeof p, "%s/b64/model.safetensors", d);
    ds_st_file f;
    CHECK(ds_st_open(&f, p) == 0);
    TEST_RETURN_IF_FAILED();
    const ds_st_tensor *sc = ds_st_find(&f, "model.layers.0.mlp.up_proj.weight_scale_inv");
    CHECK(sc && sc->shape[0] == 4 && sc->shape[1] == 3);
    ds_st_close(&f);
}
