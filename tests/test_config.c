/* test_config.c — config.json: parse configs written by transformers (and
 * DeepSeek's hub file) to the values transformers reads from them
 * (tests/fixtures/io/config_*.expected.txt, from tools/make_io_fixtures.py);
 * write -> read round trips; a written config loads in transformers
 * (tools/check_hf_config.py, skipped without python/transformers); every bad
 * input is a one-line error naming the file and the field. */
#include "test.h"
#include "base/base.h"
#include "model/config.h"

#include <cJSON.h>
#include <stdint.h>

#define FIX "tests/fixtures/io"

/* ---- field table: name in expected.txt -> struct member -------------------- */
typedef enum { F_I64, F_DBL, F_BOOL, F_STR, F_SCORE, F_TOPK, F_ROPE } fkind;
typedef struct {
    const char *name;
    fkind kind;
    size_t off;
} field;
#define FI(n) {#n, F_I64, offsetof(ds_config, n)}
#define FD(n) {#n, F_DBL, offsetof(ds_config, n)}
#define FB(n) {#n, F_BOOL, offsetof(ds_config, n)}
#define FS(n) {#n, F_STR, offsetof(ds_config, n)}
static const field fields[] = {
    FS(model_type), FI(vocab_size), FI(hidden_size), FI(intermediate_size), FI(moe_intermediate_size),
    FI(num_hidden_layers), FI(num_attention_heads), FI(num_key_value_heads), FI(n_shared_experts),
    FI(n_routed_experts), FI(num_experts_per_tok), FI(n_group), FI(topk_group), FI(first_k_dense_replace),
    FI(moe_layer_freq), FI(q_lora_rank), FI(kv_lora_rank), FI(qk_nope_head_dim), FI(qk_rope_head_dim),
    FI(v_head_dim), FI(max_position_embeddings), FI(num_nextn_predict_layers), FD(routed_scaling_factor),
    FD(rms_norm_eps), FD(rope_theta), FD(initializer_range), FD(attention_dropout),
    {"scoring_func", F_SCORE, offsetof(ds_config, scoring_func)},
    {"topk_method", F_TOPK, offsetof(ds_config, topk_method)},
    FB(norm_topk_prob), FB(tie_word_embeddings), FB(attention_bias), FB(use_cache), FI(bos_token_id),
    FI(eos_token_id), FI(pad_token_id), FS(hidden_act), FS(torch_dtype),
    {"rope_type", F_ROPE, offsetof(ds_config, rope_type)},
    FD(rope_factor), FI(rope_original_max_position_embeddings), FD(rope_beta_fast), FD(rope_beta_slow),
    FD(rope_mscale), FD(rope_mscale_all_dim), FD(rope_attention_factor), FB(rope_truncate), FB(quant_fp8),
    {"quant_block0", F_I64, offsetof(ds_config, quant_block)},
    {"quant_block1", F_I64, offsetof(ds_config, quant_block) + sizeof(int64_t)},
    FS(quant_fmt), FS(quant_activation_scheme), FB(rope_interleave), {"n_eos_token_ids", F_BOOL, offsetof(ds_config, n_eos_token_ids)},
    FB(output_router_logits), FI(pretraining_tp), FD(aux_loss_alpha), FB(seq_aux), FS(quant_scale_fmt),
};
#define NFIELDS ((int)(sizeof fields / sizeof fields[0]))

static const char *score_s[] = {"softmax", "sigmoid"};
static const char *topk_s[] = {"greedy", "group_limited_greedy", "noaux_tc"};
static const char *rope_s[] = {"default", "yarn"};

/* Field value as text (for comparing with expected.txt and between structs). */
static void field_str(const ds_config *c, const field *f, char *buf, size_t cap) {
    const char *p = (const char *)c + f->off;
    switch (f->kind) {
    case F_I64: snprintf(buf, cap, "%lld", (long long)*(const int64_t *)p); break;
    case F_DBL: snprintf(buf, cap, "%.17g", *(const double *)p); break;
    case F_BOOL: snprintf(buf, cap, "%d", *(const int *)p); break;
    case F_STR: snprintf(buf, cap, "%s", p); break;
    case F_SCORE: snprintf(buf, cap, "%s", score_s[*(const int *)p]); break;
    case F_TOPK: snprintf(buf, cap, "%s", topk_s[*(const int *)p]); break;
    case F_ROPE: snprintf(buf, cap, "%s", rope_s[*(const int *)p]); break;
    }
}

static int configs_equal(const ds_config *a, const ds_config *b) {
    int same = 1;
    for (int i = 0; i < NFIELDS; i++) {
        char x[64], y[64];
        field_str(a, &fields[i], x, sizeof x);
        field_str(b, &fields[i], y, sizeof y);
        if (strcmp(x, y)) {
            fprintf(stderr, "  field %s: %s vs %s\n", fields[i].name, x, y);
            same = 0;
        }
    }
    for (int i = 0; i < a->n_eos_token_ids; i++)
        if (a->eos_token_ids[i] != b->eos_token_ids[i]) same = 0;
    return same;
}

/* Compare a loaded config with the values transformers read (expected.txt). */
static void check_against_hf(const char *name) {
    char cpath[256], epath[256];
    snprintf(cpath, sizeof cpath, FIX "/%s.json", name);
    snprintf(epath, sizeof epath, FIX "/%s.expected.txt", name);
    ds_config c;
    CHECK_MSG(ds_config_load(&c, cpath) == 0, "%s", ds_errmsg());
    TEST_RETURN_IF_FAILED();
    size_t n;
    char *txt = ds_read_file(epath, &n);
    CHECK(txt != NULL);
    if (!txt) return;
    int checked = 0;
    char *save = NULL;
    for (char *ln = strtok_r(txt, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
        char key[64], val[64];
        if (sscanf(ln, "%63s %63s", key, val) != 2) continue;
        const field *f = NULL;
        for (int i = 0; i < NFIELDS; i++) if (!strcmp(fields[i].name, key)) f = &fields[i];
        CHECK_MSG(f != NULL, "%s: no field %s", name, key);
        if (!f) continue;
        char got[64];
        field_str(&c, f, got, sizeof got);
        if (f->kind == F_DBL) {
            double want = strtod(val, NULL), g = strtod(got, NULL);
            CHECK_MSG(g == want, "%s: %s = %s, transformers reads %s", name, key, got, val);
        } else {
            CHECK_MSG(!strcmp(got, val), "%s: %s = %s, transformers reads %s", name, key, got, val);
        }
        checked++;
    }
    CHECK(checked >= 40);
    free(txt);
}

TEST(parse_hub_v3_config_like_transformers) { check_against_hf("config_v3_hub"); }
TEST(parse_v3_resaved_by_transformers_v5) { check_against_hf("config_v3_resaved"); }
TEST(parse_tiny_v3_qlora_null_tied_eos_list) {
    check_against_hf("config_v3_tiny");
    ds_config c;
    if (ds_config_load(&c, FIX "/config_v3_tiny.json") != 0) return;
    CHECK(c.n_eos_token_ids == 2 && c.eos_token_ids[0] == 1 && c.eos_token_ids[1] == 5);
    CHECK(!strcmp(c.torch_dtype, "float32"));
}
TEST(parse_v2_lite_config) { check_against_hf("config_v2_lite"); }

TEST(hub_config_fields) {
    /* spot values straight from DeepSeek's file (docs/deepseek-v3.md §1.1) */
    ds_config c;
    CHECK_MSG(ds_config_load(&c, FIX "/config_v3_hub.json") == 0, "%s", ds_errmsg());
    TEST_RETURN_IF_FAILED();
    CHECK(c.rope_type == DS_ROPE_YARN && c.rope_factor == 40 && c.rope_original_max_position_embeddings == 4096);
    CHECK(c.quant_fp8 && c.quant_block[0] == 128 && c.quant_block[1] == 128);
    CHECK(!strcmp(c.quant_fmt, "e4m3") && !strcmp(c.quant_activation_scheme, "dynamic"));
    CHECK(!strcmp(c.torch_dtype, "bfloat16"));
    CHECK(c.scoring_func == DS_SCORE_SIGMOID && c.topk_method == DS_TOPK_NOAUX_TC);
    CHECK(ds_config_qk_head_dim(&c) == 192);
}

/* ---- round trips ------------------------------------------------------------ */
static void roundtrip(const ds_config *c) {
    char *j = ds_config_to_json(c);
    ds_config r;
    CHECK_MSG(ds_config_parse(&r, j, "rt.json") == 0, "%s\n%s", ds_errmsg(), j);
    if (!ds_test_fails) {
        CHECK(configs_equal(c, &r));
        char *j2 = ds_config_to_json(&r);
        CHECK(!strcmp(j, j2));
        free(j2);
    }
    free(j);
}

TEST(roundtrip_variants) {
    ds_config c;
    ds_config_default(&c);
    roundtrip(&c);
    /* V3-like tiny with yarn, all optional rope fields, fp8, eos list, pad */
    c.vocab_size = 96; c.hidden_size = 64; c.intermediate_size = 96; c.moe_intermediate_size = 32;
    c.num_hidden_layers = 3; c.num_attention_heads = c.num_key_value_heads = 4; c.n_routed_experts = 8;
    c.n_group = 4; c.topk_group = 2; c.num_experts_per_tok = 3; c.first_k_dense_replace = 1; c.q_lora_rank = 32;
    c.kv_lora_rank = 32; c.qk_nope_head_dim = 16; c.qk_rope_head_dim = 16; c.v_head_dim = 24;
    c.rope_type = DS_ROPE_YARN; c.rope_factor = 4.0; c.rope_original_max_position_embeddings = 16;
    c.rope_mscale = 0.707; c.rope_mscale_all_dim = 1.0; c.rope_attention_factor = 1.25; c.rope_truncate = 0;
    c.rope_beta_fast = 16; c.rope_beta_slow = 0.5; c.rms_norm_eps = 1e-5; c.rope_theta = 12345.678;
    c.quant_fp8 = 1; snprintf(c.quant_scale_fmt, sizeof c.quant_scale_fmt, "ue8m0"); c.pad_token_id = 3; c.n_eos_token_ids = 3; c.eos_token_ids[0] = 1; c.eos_token_ids[1] = 7;
    c.eos_token_ids[2] = 9; c.eos_token_id = 1; c.routed_scaling_factor = 1.0 / 3.0; c.initializer_range = 0.006;
    snprintf(c.torch_dtype, sizeof c.torch_dtype, "float32");
    roundtrip(&c);
    /* V2-Lite-like: softmax, greedy, no q_lora, no top-k normalization, no rope scaling, nulls */
    c.scoring_func = DS_SCORE_SOFTMAX; c.topk_method = DS_TOPK_GREEDY; c.q_lora_rank = 0; c.norm_topk_prob = 0;
    c.rope_type = DS_ROPE_DEFAULT; c.quant_fp8 = 0; c.quant_scale_fmt[0] = 0; c.bos_token_id = -1; c.eos_token_id = -1; c.n_eos_token_ids = 0;
    c.eos_token_ids[0] = c.eos_token_ids[1] = c.eos_token_ids[2] = 0;
    c.pad_token_id = -1; c.tie_word_embeddings = 1; c.num_nextn_predict_layers = 0; c.moe_layer_freq = 2;
    c.rope_interleave = 0; c.attention_bias = 1; c.use_cache = 0; c.torch_dtype[0] = 0;
    c.output_router_logits = 1; c.pretraining_tp = 2; c.aux_loss_alpha = 0.0001; c.seq_aux = 0;
    snprintf(c.model_type, sizeof c.model_type, "deepseek_v2");
    c.rope_mscale = c.rope_mscale_all_dim = c.rope_attention_factor = 0; c.rope_truncate = 1;
    c.rope_factor = 1.0; c.rope_original_max_position_embeddings = 0; c.rope_beta_fast = 32; c.rope_beta_slow = 1;
    roundtrip(&c);
    /* group_limited_greedy, no routed experts */
    c.topk_method = DS_TOPK_GROUP_LIMITED_GREEDY;
    roundtrip(&c);
    c.n_routed_experts = 0; c.num_experts_per_tok = 0;
    roundtrip(&c);
    /* every transformers-written fixture round-trips too */
    const char *fx[] = {"config_v3_hub", "config_v3_resaved", "config_v3_tiny", "config_v2_lite"};
    for (int i = 0; i < 4; i++) {
        char p[256];
        snprintf(p, sizeof p, FIX "/%s.json", fx[i]);
        CHECK(ds_config_load(&c, p) == 0);
        roundtrip(&c);
    }
}

TEST(save_is_atomic_and_python_style) {
    ds_config c;
    CHECK(ds_config_load(&c, FIX "/config_v3_hub.json") == 0);
    char *p = ds_path_join(ds_test_tmpdir(), "config.json");
    CHECK(ds_config_save(&c, p) == 0);
    size_t n;
    char *t = ds_read_file(p, &n);
    CHECK(t != NULL);
    if (t) {
        /* json.dumps(indent=2, sort_keys=True) style, v5 rope spelling */
        CHECK(strstr(t, "{\n  \"architectures\": [\n    \"DeepseekV3ForCausalLM\"\n  ],\n  \"attention_bias\": false,") == t);
        CHECK(strstr(t, "  \"rms_norm_eps\": 1e-06,\n"));
        CHECK(strstr(t, "  \"rope_parameters\": {\n    \"beta_fast\": 32.0,\n"));
        CHECK(strstr(t, "    \"rope_theta\": 10000.0,\n    \"rope_type\": \"yarn\"\n  },\n"));
        CHECK(strstr(t, "  \"q_lora_rank\": 1536,\n"));
        CHECK(strstr(t, "\"weight_block_size\": [\n      128,\n      128\n    ]\n"));
        CHECK(t[n - 1] == '\n' && t[n - 2] == '}');
    }
    free(t);
    /* an invalid config is refused and the old file stays */
    c.n_group = 7;
    CHECK(ds_config_save(&c, p) != 0 && strstr(ds_errmsg(), "n_group"));
    t = ds_read_file(p, &n);
    CHECK(t && strstr(t, "\"n_group\": 8,"));
    free(t);
    free(p);
}

/* The written config loads in transformers with the same values (and a tiny
 * one builds a model with the expected parameter shapes). */
TEST(written_config_loads_in_transformers) {
    if (ds_test_sh(NULL, 0, "python3 -c 'import transformers' >/dev/null 2>&1") != 0)
        SKIP("python3 with transformers not installed");
    const char *fx[] = {"config_v3_hub", "config_v3_tiny", "config_v2_lite"};
    char args[2048] = "";
    for (int i = 0; i < 3; i++) {
        char p[256];
        snprintf(p, sizeof p, FIX "/%s.json", fx[i]);
        ds_config c;
        CHECK(ds_config_load(&c, p) == 0);
        char name[64];
        snprintf(name, sizeof name, "%s.json", fx[i]);
        char *out = ds_path_join(ds_test_tmpdir(), name);
        CHECK(ds_config_save(&c, out) == 0);
        size_t l = strlen(args);
        snprintf(args + l, sizeof args - l, " %s", out);
        free(out);
    }
    /* a tiny V3 with q_lora, yarn and MTP, to build a model from */
    ds_config c;
    CHECK(ds_config_load(&c, FIX "/config_v3_tiny.json") == 0);
    c.q_lora_rank = 24; c.rope_type = DS_ROPE_YARN; c.rope_factor = 4; c.rope_original_max_position_embeddings = 32;
    c.rope_mscale = 1; c.rope_mscale_all_dim = 1; c.num_nextn_predict_layers = 1;
    char *out = ds_path_join(ds_test_tmpdir(), "tiny_yarn.json");
    CHECK(ds_config_save(&c, out) == 0);
    size_t l = strlen(args);
    snprintf(args + l, sizeof args - l, " %s", out);
    free(out);
    char msg[8192];
    int rc = ds_test_sh(msg, sizeof msg, "python3 tools/check_hf_config.py %s", args);
    CHECK_MSG(rc == 0, "tools/check_hf_config.py failed:\n%s", msg);
}

/* ---- layer kinds ------------------------------------------------------------- */
TEST(layer_is_moe_rule) {
    ds_config c;
    ds_config_default(&c); /* first_k_dense_replace 3, freq 1, 61 layers + 1 MTP */
    for (int l = 0; l < 3; l++) CHECK(!ds_config_layer_is_moe(&c, l));
    for (int l = 3; l <= 61; l++) CHECK(ds_config_layer_is_moe(&c, l));
    c.first_k_dense_replace = 1;
    c.moe_layer_freq = 2; /* DeepSeek's rule: l >= 1 and l even */
    int want[8] = {0, 0, 1, 0, 1, 0, 1, 0};
    for (int l = 0; l < 8; l++) CHECK(ds_config_layer_is_moe(&c, l) == want[l]);
    c.n_routed_experts = 0;
    for (int l = 0; l < 8; l++) CHECK(!ds_config_layer_is_moe(&c, l));
}

/* ---- bad input ----------------------------------------------------------------- */
/* Load the tiny fixture, apply an edit (key = JSON value text, or NULL value to
 * delete), parse, expect an error containing phrase. */
static void expect_edit_error(const char *key, const char *value, const char *phrase) {
    size_t n;
    char *txt = ds_read_file(FIX "/config_v3_tiny.json", &n);
    CHECK(txt != NULL);
    if (!txt) return;
    cJSON *j = cJSON_Parse(txt);
    free(txt);
    if (value) {
        cJSON *v = cJSON_Parse(value);
        CHECK(v != NULL);
        if (cJSON_GetObjectItemCaseSensitive(j, key)) cJSON_ReplaceItemInObjectCaseSensitive(j, key, v);
        else cJSON_AddItemToObject(j, key, v);
    } else {
        cJSON_DeleteItemFromObjectCaseSensitive(j, key);
    }
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    ds_config c;
    int rc = ds_config_parse(&c, s, "config.json");
    CHECK_MSG(rc != 0, "%s=%s accepted", key, value ? value : "(deleted)");
    if (rc) {
        CHECK_MSG(strstr(ds_errmsg(), phrase) && !strncmp(ds_errmsg(), "config.json: ", 13) && !strchr(ds_errmsg(), '\n'),
                  "%s=%s: got \"%s\", want \"%s\"", key, value ? value : "-", ds_errmsg(), phrase);
    }
    free(s);
}

TEST(bad_missing_fields) {
    const char *req[] = {"kv_lora_rank", "hidden_size", "vocab_size", "num_hidden_layers", "num_attention_heads",
                         "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim", "intermediate_size",
                         "n_routed_experts", "num_experts_per_tok", "moe_intermediate_size", "q_lora_rank",
                         "model_type"};
    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++) {
        char want[96];
        snprintf(want, sizeof want, "config.json: %s: missing", req[i]);
        expect_edit_error(req[i], NULL, want);
    }
}

TEST(bad_wrong_types) {
    expect_edit_error("hidden_size", "\"64\"", "hidden_size: expected an integer, got string");
    expect_edit_error("hidden_size", "64.5", "hidden_size: expected an integer, got 64.5");
    expect_edit_error("hidden_size", "null", "hidden_size: expected an integer, got null");
    expect_edit_error("norm_topk_prob", "1", "norm_topk_prob: expected true or false, got number");
    expect_edit_error("rms_norm_eps", "\"1e-6\"", "rms_norm_eps: expected a number, got string");
    expect_edit_error("model_type", "3", "model_type: expected a string, got number");
    expect_edit_error("rope_parameters", "[]", "rope_parameters: expected an object or null, got array");
    expect_edit_error("rope_parameters", "{\"rope_type\": \"yarn\"}", "rope_parameters: factor: missing");
    expect_edit_error("rope_parameters", "{\"rope_type\": \"yarn\", \"factor\": \"4\"}",
                      "rope_parameters: factor: expected a number, got string");
    expect_edit_error("quantization_config", "{\"quant_method\": \"fp8\", \"weight_block_size\": [128]}",
                      "quantization_config: weight_block_size: expected [rows, cols]");
    expect_edit_error("eos_token_id", "\"x\"", "eos_token_id: expected an integer, a list of integers or null, got string");
    expect_edit_error("hidden_size", "1e300", "hidden_size: expected an integer");
    /* found by fuzz_config: names must be plain ASCII, the file valid UTF-8 */
    expect_edit_error("dtype", "\"fl\\u00ffoat\"", "dtype: value contains a non-printable or non-ASCII character");
    ds_config c;
    CHECK(ds_config_parse(&c, "{\"model_type\": \"deep\xc0\xafseek_v3\"}", "config.json") != 0);
    CHECK_MSG(strstr(ds_errmsg(), "config.json: not valid UTF-8 (byte 20)"), "%s", ds_errmsg());
}

TEST(bad_values) {
    expect_edit_error("model_type", "\"llama\"", "model_type: unknown model type \"llama\"");
    expect_edit_error("n_group", "3", "n_group: n_routed_experts (8) is not divisible by n_group (3)");
    expect_edit_error("topk_group", "5", "topk_group: 5 is out of range (1 to n_group = 4)");
    expect_edit_error("num_experts_per_tok", "5", "num_experts_per_tok: 5 exceeds the 4 experts in the topk_group (2) kept groups");
    expect_edit_error("num_experts_per_tok", "9", "num_experts_per_tok: 9 is out of range");
    expect_edit_error("num_key_value_heads", "2", "num_key_value_heads: 2 must equal num_attention_heads (4)");
    expect_edit_error("qk_rope_head_dim", "7", "qk_rope_head_dim: 7 must be even");
    expect_edit_error("hidden_size", "0", "hidden_size: 0 is out of range (must be >= 1)");
    expect_edit_error("kv_lora_rank", "-3", "kv_lora_rank: -3 is out of range");
    expect_edit_error("moe_layer_freq", "0", "moe_layer_freq: 0 is out of range");
    expect_edit_error("vocab_size", "1099511627777", "vocab_size: 1099511627777 is too large");
    expect_edit_error("scoring_func", "\"relu\"", "scoring_func: unknown value \"relu\" (expected one of: softmax, sigmoid)");
    expect_edit_error("topk_method", "\"best\"", "topk_method: unknown value \"best\"");
    expect_edit_error("hidden_act", "\"gelu\"", "hidden_act: \"gelu\" is not supported");
    expect_edit_error("rms_norm_eps", "0", "rms_norm_eps: 0 must be a positive number");
    expect_edit_error("rope_parameters", "{\"rope_type\": \"linear\", \"factor\": 2}", "rope type \"linear\" is not supported");
    expect_edit_error("rope_parameters", "{\"rope_type\": \"yarn\", \"factor\": -2}", "factor: -2 must be a positive number");
    expect_edit_error("quantization_config", "{\"quant_method\": \"gptq\"}", "quant_method \"gptq\" is not supported");
    expect_edit_error("routed_scaling_factor", "0", "routed_scaling_factor: 0 must be a positive number");
    expect_edit_error("mlp_bias", "true", "mlp_bias: true is not supported");
    expect_edit_error("quantization_config", "{\"quant_method\": \"fp8\", \"scale_fmt\": \"e5m2\"}",
                      "quantization_config: scale_fmt: \"e5m2\" is not supported");
    expect_edit_error("pretraining_tp", "0", "pretraining_tp: 0 is out of range");
    /* greedy top-k may take K from all experts regardless of groups */
    size_t n;
    char *txt = ds_read_file(FIX "/config_v3_tiny.json", &n);
    if (!txt) return;
    cJSON *j = cJSON_Parse(txt);
    free(txt);
    cJSON_AddItemToObject(j, "topk_method", cJSON_CreateString("greedy"));
    cJSON_ReplaceItemInObjectCaseSensitive(j, "num_experts_per_tok", cJSON_CreateNumber(6));
    char *s = cJSON_Print(j);
    ds_config c;
    CHECK_MSG(ds_config_parse(&c, s, "config.json") == 0, "%s", ds_errmsg());
    free(s);
    cJSON_Delete(j);
}

TEST(bad_malformed_json_and_files) {
    ds_config c;
    CHECK(ds_config_parse(&c, "{\"model_type\": \"deepseek_v3\",\n  \"vocab_size\": 12,,}", "config.json") != 0);
    CHECK_MSG(strstr(ds_errmsg(), "config.json: invalid JSON at line 2, column "), "%s", ds_errmsg());
    CHECK(ds_config_parse(&c, "", "config.json") != 0 && strstr(ds_errmsg(), "config.json: empty"));
    CHECK(ds_config_parse(&c, "[1]", "config.json") != 0 && strstr(ds_errmsg(), "expected a JSON object, got array"));
    CHECK(ds_config_parse(&c, "{} {}", "config.json") != 0 && strstr(ds_errmsg(), "invalid JSON"));
    CHECK(ds_config_load(&c, "/no/such/config.json") != 0 && strstr(ds_errmsg(), "/no/such/config.json"));
    char *p = ds_path_join(ds_test_tmpdir(), "nul.json");
    CHECK(ds_write_file_atomic(p, "{\0}", 3) == 0);
    CHECK(ds_config_load(&c, p) != 0 && strstr(ds_errmsg(), "NUL byte"));
    /* truncated copies of a good file: every cut is an error, none crashes */
    size_t n;
    char *txt = ds_read_file(FIX "/config_v3_hub.json", &n);
    CHECK(txt != NULL);
    for (size_t cut = 0; txt && cut < n - 2; cut += 7) {
        char *t = malloc(cut + 1);
        memcpy(t, txt, cut);
        t[cut] = 0;
        CHECK(ds_config_parse(&c, t, "config.json") != 0);
        free(t);
    }
    free(txt);
    free(p);
}

TEST(v4_and_v5_rope_spellings) {
    /* rope_scaling + top-level rope_theta (v4, DeepSeek's files) and rope_parameters (v5) give the same */
    const char *base = "{\"model_type\": \"deepseek_v3\", \"vocab_size\": 10, \"hidden_size\": 8, \"intermediate_size\": 8,"
                       " \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"kv_lora_rank\": 4, \"q_lora_rank\": null,"
                       " \"qk_nope_head_dim\": 2, \"qk_rope_head_dim\": 2, \"v_head_dim\": 2, \"n_routed_experts\": 0, %s}";
    char a[1024], b[1024];
    snprintf(a, sizeof a, base,
             "\"rope_theta\": 5000, \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4, \"original_max_position_embeddings\": 16,"
             " \"beta_fast\": 32, \"beta_slow\": 1, \"mscale\": 0.707, \"mscale_all_dim\": 0.707}");
    snprintf(b, sizeof b, base,
             "\"rope_parameters\": {\"rope_type\": \"yarn\", \"rope_theta\": 5000.0, \"factor\": 4.0,"
             " \"original_max_position_embeddings\": 16, \"mscale\": 0.707, \"mscale_all_dim\": 0.707}");
    ds_config x, y;
    CHECK_MSG(ds_config_parse(&x, a, "a.json") == 0, "%s", ds_errmsg());
    CHECK_MSG(ds_config_parse(&y, b, "b.json") == 0, "%s", ds_errmsg());
    CHECK(configs_equal(&x, &y));
    CHECK(x.rope_type == DS_ROPE_YARN && x.rope_theta == 5000 && x.rope_mscale == 0.707 && x.rope_beta_fast == 32);
    CHECK(x.n_routed_experts == 0 && !ds_config_layer_is_moe(&x, 0));
    /* both present: transformers 5.24 takes rope_scaling and the top-level rope_theta */
    snprintf(a, sizeof a, base,
             "\"rope_theta\": 5000, \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4, \"original_max_position_embeddings\": 16},"
             " \"rope_parameters\": {\"rope_type\": \"yarn\", \"rope_theta\": 7000.0, \"factor\": 8.0}");
    CHECK(ds_config_parse(&x, a, "a.json") == 0 && x.rope_factor == 4 && x.rope_theta == 5000);
    /* rope_scaling null means no scaling */
    snprintf(a, sizeof a, base, "\"rope_scaling\": null, \"num_mtp_layers\": 2");
    CHECK(ds_config_parse(&x, a, "a.json") == 0 && x.rope_type == DS_ROPE_DEFAULT && x.num_nextn_predict_layers == 2);
}

/* A key repeated in config.json keeps its last value, at the top level and
 * inside rope_parameters: what transformers (Python's json module) reads,
 * config_dup_keys.expected.txt from tools/make_dup_keys_fixture.py.  cJSON
 * alone would return the first. */
TEST(config_duplicate_keys_last_wins) {
    ds_config c;
    CHECK_MSG(ds_config_load(&c, FIX "/config_dup_keys.json") == 0, "%s", ds_errmsg());
    TEST_RETURN_IF_FAILED();
    size_t n;
    char *txt = ds_read_file(FIX "/config_dup_keys.expected.txt", &n);
    CHECK(txt != NULL);
    if (!txt) return;
    int checked = 0;
    char *save = NULL;
    for (char *ln = strtok_r(txt, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
        char key[64], val[64], got[64];
        if (sscanf(ln, "%63s %63s", key, val) != 2) continue;
        const field *f = NULL;
        for (int i = 0; i < NFIELDS; i++) if (!strcmp(fields[i].name, key)) f = &fields[i];
        CHECK_MSG(f != NULL, "no field %s", key);
        if (!f) continue;
        field_str(&c, f, got, sizeof got);
        if (f->kind == F_DBL) CHECK_MSG(strtod(got, NULL) == strtod(val, NULL), "%s = %s, transformers reads %s", key, got, val);
        else CHECK_MSG(!strcmp(got, val), "%s = %s, transformers reads %s", key, got, val);
        checked++;
    }
    CHECK(checked == 8);
    free(txt);
    CHECK(c.n_eos_token_ids <= 1); /* the list [1, 5] was replaced by 7 */
    /* a later duplicate that is bad is the one checked */
    CHECK(ds_config_parse(&c, "{\"model_type\": \"deepseek_v3\", \"model_type\": \"llama\"}", "config.json") != 0);
    CHECK_MSG(strstr(ds_errmsg(), "unknown model type \"llama\""), "%s", ds_errmsg());
}
