/*
 * test_limits.c — absurd sizes in config.json are refused before anything is
 * allocated: per-dimension upper limits (config.h), overflow-checked layout
 * sizes (layout.c; this test under `make SAN=1` is what catches a signed
 * overflow there), and the memory check of the weights and activations
 * against the machine (or $DSV3_MEM_LIMIT).  The commands init / forward /
 * generate / eval fail in well under a second with one line, and inspect
 * still prints the counts of a DeepSeek-V3-sized config (oracle: the
 * published 671B / 37B, docs/deepseek-v3.md §1.5).
 */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cJSON.h>

#include "base/base.h"
#include "infer/infer.h"
#include "model/backward.h"
#include "model/model.h"
#include "model/presets.h"
#include "test.h"

#define FIX "tests/fixtures/io"

static const char *bin(void) {
    const char *b = getenv("DSV3");
    return b ? b : "./dsv3";
}

/* config_v3_tiny.json with key set to the JSON text val; caller frees. */
static char *tiny_with(const char *key, const char *val) {
    size_t n;
    char *txt = ds_read_file(FIX "/config_v3_tiny.json", &n);
    if (!txt) return NULL;
    cJSON *j = cJSON_Parse(txt);
    free(txt);
    cJSON *v = cJSON_Parse(val);
    if (cJSON_GetObjectItemCaseSensitive(j, key)) cJSON_ReplaceItemInObjectCaseSensitive(j, key, v);
    else cJSON_AddItemToObject(j, key, v);
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    return s;
}

static void write_text(const char *path, const char *s) { DS_ASSERT(ds_write_file_atomic(path, s, strlen(s)) == 0); }

TEST(limits_every_dimension_has_an_upper_bound) {
    struct { const char *key, *val, *want; } bad[] = {
        {"num_hidden_layers", "1000000000", "num_hidden_layers: 1000000000 is too large (at most 1024)"},
        {"n_routed_experts", "1073741824", "n_routed_experts: 1073741824 is too large (at most 4096)"},
        {"hidden_size", "1099511627776", "hidden_size: 1099511627776 is too large (at most 65536)"},
        {"vocab_size", "2147483648", "vocab_size: 2147483648 is too large (at most 4194304)"},
        {"intermediate_size", "262145", "intermediate_size: 262145 is too large"},
        {"moe_intermediate_size", "65537", "moe_intermediate_size: 65537 is out of range (1 to 65536)"},
        {"num_attention_heads", "1025", "num_attention_heads: 1025 is too large"},
        {"kv_lora_rank", "65537", "kv_lora_rank: 65537 is too large"},
        {"q_lora_rank", "65537", "q_lora_rank: 65537 is too large"},
        {"qk_nope_head_dim", "4097", "qk_nope_head_dim: 4097 is too large"},
        {"qk_rope_head_dim", "4098", "qk_rope_head_dim: 4098 is too large"},
        {"v_head_dim", "4097", "v_head_dim: 4097 is too large"},
        {"max_position_embeddings", "16777217", "max_position_embeddings: 16777217 is too large"},
        {"n_shared_experts", "65", "n_shared_experts: 65 is too large"},
        {"num_nextn_predict_layers", "65", "num_nextn_predict_layers: 65 is too large"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *s = tiny_with(bad[i].key, bad[i].val);
        CHECK(s != NULL);
        if (!s) return;
        ds_config c;
        CHECK_MSG(ds_config_parse(&c, s, "config.json") != 0, "%s accepted", bad[i].key);
        CHECK_MSG(strstr(ds_errmsg(), bad[i].want) && !strchr(ds_errmsg(), '\n'), "%s: %s", bad[i].key, ds_errmsg());
        free(s);
    }
    /* the limits themselves are accepted, and DeepSeek-V3 is far inside them */
    char *s = tiny_with("max_position_embeddings", "16777216");
    ds_config c;
    CHECK_MSG(ds_config_parse(&c, s, "config.json") == 0, "%s", ds_errmsg());
    free(s);
    CHECK_MSG(ds_config_load(&c, FIX "/config_v3_hub.json") == 0, "%s", ds_errmsg());
}

/* A config that skipped validation: the layout counts with overflow-checked
 * int64 products (the old code multiplied rows x cols as signed int64, UB for
 * vocab 2^31 x hidden 2^40) and refuses sizes it cannot hold. */
TEST(limits_layout_size_overflow_is_an_error) {
    ds_config c;
    CHECK(ds_preset(&c, "tiny") == 0);
    c.vocab_size = (int64_t)1 << 30;
    c.hidden_size = (int64_t)1 << 30;
    c.num_attention_heads = (int64_t)1 << 30;
    c.v_head_dim = (int64_t)1 << 30;
    int64_t n = -1, floats = -1;
    CHECK(ds_layout_size(&c, &n, &floats) != 0);
    CHECK_MSG(strstr(ds_errmsg(), "overflows 64-bit"), "%s", ds_errmsg());
    ds_layout lo;
    CHECK(ds_layout_build(&lo, &c) != 0 && lo.p == NULL);
    /* what the old code multiplied (layout.c:38, UBSan): vocab 2^31 x hidden 2^40 */
    c.vocab_size = (int64_t)1 << 31;
    c.hidden_size = (int64_t)1 << 40;
    CHECK(ds_layout_size(&c, &n, &floats) != 0);
    CHECK_MSG(strstr(ds_errmsg(), "hidden_size: 1099511627776 is out of range for the parameter layout"), "%s",
              ds_errmsg());
    /* int64 products fine, their sum past int64: 4096 x (2^40 + ...) */
    CHECK(ds_preset(&c, "tiny") == 0);
    c.hidden_size = (int64_t)1 << 30;
    c.moe_intermediate_size = (int64_t)1 << 30;
    c.n_routed_experts = 4096;
    c.n_group = c.topk_group = 1;
    CHECK(ds_layout_size(&c, &n, &floats) != 0 && strstr(ds_errmsg(), "overflows 64-bit"));
    /* too many layers for the counting pass itself */
    CHECK(ds_preset(&c, "tiny") == 0);
    c.num_hidden_layers = 1000000000;
    CHECK(ds_layout_size(&c, &n, &floats) != 0 && strstr(ds_errmsg(), "num_hidden_layers: 1000000000 is out of range"));
    /* DeepSeek-V3: counted without building, same as the built table */
    ds_config_default(&c);
    CHECK(ds_layout_size(&c, &n, &floats) == 0);
    CHECK(ds_layout_build(&lo, &c) == 0);
    CHECK(lo.n == n && lo.total == floats);
    ds_layout_free(&lo);
}

TEST(limits_memory_check_before_allocating) {
    ds_config c;
    CHECK(ds_preset(&c, "tiny") == 0);
    int64_t n, floats;
    CHECK(ds_layout_size(&c, &n, &floats) == 0);
    const char *old = getenv("DSV3_MEM_LIMIT");
    char *save = old ? ds_strdup(old) : NULL;
    /* one byte short of the FP32 weights (the table itself fits) */
    char lim[32];
    snprintf(lim, sizeof lim, "%lld", (long long)(floats * 4 - 1));
    setenv("DSV3_MEM_LIMIT", lim, 1);
    CHECK(ds_mem_available() == floats * 4 - 1);
    ds_model m;
    CHECK(ds_model_create(&m, &c) != 0);
    char want[160];
    snprintf(want, sizeof want, "parameters): %lld bytes (", (long long)(floats * 4));
    CHECK_MSG(strstr(ds_errmsg(), "model weights (") && strstr(ds_errmsg(), want) &&
                  strstr(ds_errmsg(), "memory available (DSV3_MEM_LIMIT)"),
              "%s", ds_errmsg());
    /* the weights fit; activations for 1 x 1M tokens do not */
    setenv("DSV3_MEM_LIMIT", "1G", 1);
    CHECK(ds_mem_available() == (int64_t)1 << 30);
    CHECK_MSG(ds_model_create(&m, &c) == 0, "%s", ds_errmsg());
    ds_acts a;
    CHECK(ds_acts_create(&a, &m, 1, 1 << 20, 1) != 0);
    CHECK_MSG(strstr(ds_errmsg(), "activations for 1 x 1048576 tokens, with the weights: "), "%s", ds_errmsg());
    CHECK(a.arena == NULL && a.blk == NULL);
    /* B x T past int64 is an error, not a wrapped size */
    CHECK(ds_acts_create(&a, &m, (int64_t)1 << 40, (int64_t)1 << 40, 1) != 0 && strstr(ds_errmsg(), "too many tokens"));
    CHECK(ds_acts_create(&a, &m, 2, 8, 1) == 0);
    ds_acts_free(&a);
    /* the backward buffers, the KV cache and the decode buffers: checked too */
    ds_bwd w;
    CHECK(ds_bwd_create(&w, &m, 1, 1 << 20) != 0);
    CHECK_MSG(strstr(ds_errmsg(), "backward buffers for 1 x 1048576 tokens: "), "%s", ds_errmsg());
    CHECK(ds_bwd_create(&w, &m, 2, 8) == 0);
    ds_bwd_free(&w);
    m.cfg.max_position_embeddings = (int64_t)1 << 24;
    ds_engine e;
    CHECK(ds_engine_create(&e, &m, &ds_ops_cpu, 1, (int64_t)1 << 24, 256, 0) != 0);
    CHECK_MSG(strstr(ds_errmsg(), "the KV cache for 1 x 16777216 positions: "), "%s", ds_errmsg());
    CHECK(ds_engine_create(&e, &m, &ds_ops_cpu, 1, 64, 16, 0) == 0);
    ds_engine_free(&e);
    ds_model_free(&m);
    if (save) setenv("DSV3_MEM_LIMIT", save, 1);
    else unsetenv("DSV3_MEM_LIMIT");
    free(save);
    /* without the override: the physical memory, positive */
    if (!save) CHECK(ds_mem_available() > ((int64_t)1 << 24));
}

/* Run a dsv3 command line; it must fail with status 1 and one line that
 * contains want, within a few seconds. */
static void expect_quick_fail(const char *want, const char *fmt, ...) DS_PRINTF(2, 3);
static void expect_quick_fail(const char *want, const char *fmt, ...) {
    char args[2048], out[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    double t0 = ds_now();
    /* the memory limit makes the messages the same on every machine */
    int rc = ds_test_sh(out, sizeof out, "DSV3_MEM_LIMIT=1G timeout 20 %s %s", bin(), args);
    double dt = ds_now() - t0;
    CHECK_MSG(rc == 1, "rc %d for %s: %s", rc, args, out);
    CHECK_MSG(strstr(out, want), "'%s' lacks '%s': %s", args, want, out);
    size_t len = strlen(out);
    while (len && out[len - 1] == '\n') out[--len] = 0;
    CHECK_MSG(!strchr(out, '\n'), "more than one line for %s: %s", args, out);
    CHECK_MSG(dt < 5.0, "%s took %.1f s", args, dt);
}

TEST(limits_cli_absurd_configs_fail_fast) {
    const char *tmp = ds_test_tmpdir();
    char m[600], cfg[700], ids[700], task[700], out[4096];
    snprintf(m, sizeof m, "%s/lm", tmp);
    CHECK(ds_test_sh(out, sizeof out, "%s init --config tiny --out %s", bin(), m) == 0);
    snprintf(cfg, sizeof cfg, "%s/config.json", m);
    snprintf(ids, sizeof ids, "%s/ids.txt", tmp);
    write_text(ids, "1 2 3\n");
    snprintf(task, sizeof task, "%s/mc.jsonl", tmp);
    write_text(task, "{\"query\": \"a b\", \"choices\": [\"c\", \"d\"], \"gold\": 0}\n");
    struct { const char *key, *val; } bad[] = {
        {"num_hidden_layers", "1e9"},
        {"n_routed_experts", "1073741824"},
        {"hidden_size", "1099511627776"},
        {"vocab_size", "2147483648"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *s = tiny_with(bad[i].key, bad[i].val);
        write_text(cfg, s);
        free(s);
        char want[96];
        snprintf(want, sizeof want, "%s: ", bad[i].key);
        expect_quick_fail(want, "init --config %s --out %s/x", cfg, tmp);
        expect_quick_fail(want, "forward --model %s --ids %s --out %s/o.safetensors", m, ids, tmp);
        expect_quick_fail(want, "generate --model %s --ids --prompt '1 2 3' --max-tokens 2", m);
        expect_quick_fail(want, "eval --model %s --task mc:%s", m, task);
        expect_quick_fail(want, "inspect %s", m);
    }
    /* within the limits, but more memory than there is: DeepSeek-V3 itself */
    char hub[700];
    snprintf(hub, sizeof hub, "%s", FIX "/config_v3_hub.json");
    size_t n;
    char *s = ds_read_file(hub, &n);
    write_text(cfg, s);
    free(s);
    expect_quick_fail("model weights (682636487424 parameters): 2730545949696 bytes (2.5 TiB) needed", "init --config %s --out %s/x", cfg, tmp);
    expect_quick_fail("more than the 1073741824 bytes (1.0 GiB) of memory available",
                      "forward --model %s --ids %s --out %s/o.safetensors", m, ids, tmp);
    struct stat st;
    char x[700];
    snprintf(x, sizeof x, "%s/x", tmp);
    CHECK(stat(x, &st) != 0);
}

/* inspect reads only the config and the safetensors headers: a 671B config
 * prints its counts under a 64 MiB memory limit. */
TEST(limits_inspect_671b_config_without_weights) {
    const char *tmp = ds_test_tmpdir();
    char d[600], p[700], out[8192];
    snprintf(d, sizeof d, "%s/v3", tmp);
    CHECK(ds_mkdir_p(d) == 0);
    snprintf(p, sizeof p, "%s/config.json", d);
    size_t n;
    char *s = ds_read_file(FIX "/config_v3_hub.json", &n);
    CHECK(s != NULL);
    if (!s) return;
    write_text(p, s);
    free(s);
    /* a safetensors file with one small tensor */
    static const char hdr[] = "{\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    unsigned char buf[256];
    uint64_t hl = sizeof hdr - 1;
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(hl >> (8 * i));
    memcpy(buf + 8, hdr, hl);
    memset(buf + 8 + hl, 0, 8);
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    CHECK(ds_write_file_atomic(p, buf, 8 + hl + 8) == 0);
    int rc = ds_test_sh(out, sizeof out, "DSV3_MEM_LIMIT=64M %s inspect %s", bin(), d);
    CHECK_MSG(rc == 0, "%s", out);
    /* doc §1.5: 671.03B total, 37.55B activated, 11.61B MTP */
    CHECK_MSG(strstr(out, "parameters: total ") && strstr(out, " (671.03B), activated per token ") &&
                  strstr(out, " (37.55B), MTP ") && strstr(out, " (11.61B)"),
              "%s", out);
}
