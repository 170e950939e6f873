/*
 * config.c — read, validate and write config.json (HF DeepseekV3Config /
 * DeepseekV2Config).  Field meanings: ../shared/docs/deepseek-v3.md §1.2.
 *
 * Reading follows transformers 5.x: a missing optional field takes the
 * default of the model_type's HF config class; rope scaling comes from
 * "rope_scaling" (+ top-level "rope_theta", the v4 spelling) when that is an
 * object, else from "rope_parameters" (v5).  "dtype" and the older
 * "torch_dtype" are both read.  The fields that fix the shape of the weights
 * are required (a config without them is not a model we could load):
 * model_type, vocab_size, hidden_size, intermediate_size, num_hidden_layers,
 * num_attention_heads, q_lora_rank (null allowed), kv_lora_rank,
 * qk_nope_head_dim, qk_rope_head_dim, v_head_dim, n_routed_experts and, when
 * that is > 0, moe_intermediate_size and num_experts_per_tok.
 *
 * Writing produces what transformers 5.x save_pretrained writes: sorted keys,
 * two-space indent, v5 "rope_parameters" (with rope_theta inside), "dtype".
 * Unknown keys are ignored on read and not written back.
 */
#include "model/config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "io/json.h"

void ds_config_default(ds_config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->model_type, sizeof c->model_type, "deepseek_v3");
    c->vocab_size = 129280;
    c->hidden_size = 7168;
    c->intermediate_size = 18432;
    c->moe_intermediate_size = 2048;
    c->num_hidden_layers = 61;
    c->num_attention_heads = 128;
    c->num_key_value_heads = 128;
    c->n_shared_experts = 1;
    c->n_routed_experts = 256;
    c->num_experts_per_tok = 8;
    c->n_group = 8;
    c->topk_group = 4;
    c->first_k_dense_replace = 3;
    c->moe_layer_freq = 1;
    c->q_lora_rank = 1536;
    c->kv_lora_rank = 512;
    c->qk_nope_head_dim = 128;
    c->qk_rope_head_dim = 64;
    c->v_head_dim = 128;
    c->max_position_embeddings = 4096;
    c->num_nextn_predict_layers = 1;
    c->routed_scaling_factor = 2.5;
    c->rms_norm_eps = 1e-6;
    c->rope_theta = 10000.0;
    c->initializer_range = 0.02;
    c->attention_dropout = 0.0;
    c->scoring_func = DS_SCORE_SIGMOID;
    c->topk_method = DS_TOPK_NOAUX_TC;
    c->norm_topk_prob = 1;
    c->tie_word_embeddings = 0;
    c->attention_bias = 0;
    c->use_cache = 1;
    c->bos_token_id = 0;
    c->eos_token_id = 1;
    c->pad_token_id = -1;
    snprintf(c->hidden_act, sizeof c->hidden_act, "silu");
    c->rope_type = DS_ROPE_DEFAULT;
    c->rope_factor = 1.0;
    c->rope_beta_fast = 32.0;
    c->rope_beta_slow = 1.0;
    c->rope_truncate = 1;
    c->quant_block[0] = c->quant_block[1] = 128;
    snprintf(c->quant_fmt, sizeof c->quant_fmt, "e4m3");
    snprintf(c->quant_activation_scheme, sizeof c->quant_activation_scheme, "dynamic");
    c->rope_interleave = 1;
    c->pretraining_tp = 1;
    c->aux_loss_alpha = 0.001;
    c->seq_aux = 1;
}

/* HF DeepseekV2Config defaults where they differ from V3's.  V2 routing is
 * softmax (the HF V2 model has no other) with greedy top-k. */
static void config_default_v2(ds_config *c) {
    ds_config_default(c);
    snprintf(c->model_type, sizeof c->model_type, "deepseek_v2");
    c->vocab_size = 102400;
    c->hidden_size = 4096;
    c->intermediate_size = 11008;
    c->moe_intermediate_size = 1407;
    c->num_hidden_layers = 32;
    c->num_attention_heads = 32;
    c->num_key_value_heads = 32;
    c->n_shared_experts = 2;
    c->n_routed_experts = 64;
    c->n_group = 1;
    c->topk_group = 1;
    c->first_k_dense_replace = 0;
    c->max_position_embeddings = 2048;
    c->num_nextn_predict_layers = 0;
    c->routed_scaling_factor = 1.0;
    c->scoring_func = DS_SCORE_SOFTMAX;
    c->topk_method = DS_TOPK_GREEDY;
    c->norm_topk_prob = 0;
    c->bos_token_id = 1;
    c->eos_token_id = 2;
}

/* ---- typed field readers --------------------------------------------------- */
/* Each returns 0 when the key is absent (dst untouched, *found = 0), 0 after
 * storing a good value, or -1 with a message "<path>: <key>: ...". */
typedef struct {
    const cJSON *obj;
    const char *path;   /* file, for messages */
    const char *prefix; /* "" or "rope_parameters: " */
} reader;

static const cJSON *get(const reader *r, const char *key) {
    return cJSON_GetObjectItemCaseSensitive(r->obj, key);
}

static int missing(const reader *r, const char *key) {
    return ds_err("%s: %s%s: missing", r->path, r->prefix, key);
}

static int bad_type(const reader *r, const char *key, const char *want, const cJSON *v) {
    return ds_err("%s: %s%s: expected %s, got %s", r->path, r->prefix, key, want, ds_json_type_name(v));
}

/* Integer; null allowed when nullable (stores null_val). */
static int rd_int(const reader *r, const char *key, int64_t *dst, int required, int nullable, int64_t null_val) {
    const cJSON *v = get(r, key);
    if (!v) return required ? missing(r, key) : 0;
    if (cJSON_IsNull(v)) {
        if (nullable) { *dst = null_val; return 0; }
        return bad_type(r, key, "an integer", v);
    }
    if (!cJSON_IsNumber(v)) return bad_type(r, key, nullable ? "an integer or null" : "an integer", v);
    if (ds_json_int64(v, dst) != 0)
        return ds_err("%s: %s%s: expected an integer, got %.17g", r->path, r->prefix, key, v->valuedouble);
    return 0;
}

static int rd_num(const reader *r, const char *key, double *dst, int required) {
    const cJSON *v = get(r, key);
    if (!v) return required ? missing(r, key) : 0;
    if (!cJSON_IsNumber(v)) return bad_type(r, key, "a number", v);
    *dst = v->valuedouble;
    return 0;
}

static int rd_bool(const reader *r, const char *key, int *dst) {
    const cJSON *v = get(r, key);
    if (!v) return 0;
    if (!cJSON_IsBool(v)) return bad_type(r, key, "true or false", v);
    *dst = cJSON_IsTrue(v) ? 1 : 0;
    return 0;
}

/* String into a fixed buffer; too long is an error (it is never a valid value). */
static int rd_str(const reader *r, const char *key, char *dst, size_t cap, int required, int nullable) {
    const cJSON *v = get(r, key);
    if (!v) return required ? missing(r, key) : 0;
    if (nullable && cJSON_IsNull(v)) { dst[0] = 0; return 0; }
    if (!cJSON_IsString(v)) return bad_type(r, key, "a string", v);
    if (strlen(v->valuestring) >= cap)
        return ds_err("%s: %s%s: value too long (%zu characters)", r->path, r->prefix, key, strlen(v->valuestring));
    /* these are names (dtype, activation, ...): printable ASCII only */
    for (const char *q = v->valuestring; *q; q++)
        if (*q < 0x20 || *q > 0x7e)
            return ds_err("%s: %s%s: value contains a non-printable or non-ASCII character", r->path, r->prefix, key);
    snprintf(dst, cap, "%s", v->valuestring);
    return 0;
}

/* ---- rope scaling ------------------------------------------------------------ */
static int parse_rope(ds_config *c, const cJSON *root, const char *path) {
    reader top = {root, path, ""};
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    const char *name = "rope_scaling";
    if (rs && !cJSON_IsNull(rs) && !cJSON_IsObject(rs)) return bad_type(&top, "rope_scaling", "an object or null", rs);
    if (rp && !cJSON_IsNull(rp) && !cJSON_IsObject(rp)) return bad_type(&top, "rope_parameters", "an object or null", rp);
    if (rd_num(&top, "rope_theta", &c->rope_theta, 0)) return -1;
    const cJSON *o = NULL;
    if (rs && cJSON_IsObject(rs)) o = rs;
    else if (rp && cJSON_IsObject(rp)) { o = rp; name = "rope_parameters"; }
    c->rope_type = DS_ROPE_DEFAULT;
    if (!o) return 0;
    char prefix[40];
    snprintf(prefix, sizeof prefix, "%s: ", name);
    reader r = {o, path, prefix};
    if (rd_num(&r, "rope_theta", &c->rope_theta, 0)) return -1;
    char type[32] = "";
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "rope_type");
    if (rd_str(&r, t ? "rope_type" : "type", type, sizeof type, 0, 0)) return -1;
    if (!type[0] || !strcmp(type, "default")) return 0;
    if (strcmp(type, "yarn") != 0)
        return ds_err("%s: %s: rope type %s is not supported (default or yarn)", path, name, ds_dquote(type));
    c->rope_type = DS_ROPE_YARN;
    if (rd_num(&r, "factor", &c->rope_factor, 1)) return -1;
    if (rd_int(&r, "original_max_position_embeddings", &c->rope_original_max_position_embeddings, 0, 1, 0)) return -1;
    if (rd_num(&r, "beta_fast", &c->rope_beta_fast, 0)) return -1;
    if (rd_num(&r, "beta_slow", &c->rope_beta_slow, 0)) return -1;
    const cJSON *v;
    /* null means absent for the optional numbers */
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "mscale")) && !cJSON_IsNull(v) && rd_num(&r, "mscale", &c->rope_mscale, 0)) return -1;
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "mscale_all_dim")) && !cJSON_IsNull(v) &&
        rd_num(&r, "mscale_all_dim", &c->rope_mscale_all_dim, 0)) return -1;
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "attention_factor")) && !cJSON_IsNull(v) &&
        rd_num(&r, "attention_factor", &c->rope_attention_factor, 0)) return -1;
    if (rd_bool(&r, "truncate", &c->rope_truncate)) return -1;
    return 0;
}

static int parse_quant(ds_config *c, const cJSON *root, const char *path) {
    reader top = {root, path, ""};
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
    if (!q || cJSON_IsNull(q)) return 0;
    if (!cJSON_IsObject(q)) return bad_type(&top, "quantization_config", "an object or null", q);
    reader r = {q, path, "quantization_config: "};
    char method[32] = "";
    if (rd_str(&r, "quant_method", method, sizeof method, 1, 0)) return -1;
    if (strcmp(method, "fp8") != 0)
        return ds_err("%s: quantization_config: quant_method %s is not supported (fp8)", path, ds_dquote(method));
    c->quant_fp8 = 1;
    if (rd_str(&r, "fmt", c->quant_fmt, sizeof c->quant_fmt, 0, 0)) return -1;
    if (rd_str(&r, "activation_scheme", c->quant_activation_scheme, sizeof c->quant_activation_scheme, 0, 0)) return -1;
    if (rd_str(&r, "scale_fmt", c->quant_scale_fmt, sizeof c->quant_scale_fmt, 0, 1)) return -1;
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(q, "weight_block_size");
    if (b && !cJSON_IsNull(b)) {
        if (!cJSON_IsArray(b) || cJSON_GetArraySize(b) != 2)
            return ds_err("%s: quantization_config: weight_block_size: expected [rows, cols]", path);
        for (int i = 0; i < 2; i++)
            if (ds_json_int64(cJSON_GetArrayItem(b, i), &c->quant_block[i]) != 0)
                return ds_err("%s: quantization_config: weight_block_size: expected integers", path);
    }
    return 0;
}

static int parse_enum(const reader *r, const char *key, int *dst, const char *const *names, int n) {
    char s[32] = "";
    const cJSON *v = get(r, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (rd_str(r, key, s, sizeof s, 0, 0)) return -1;
    for (int i = 0; i < n; i++)
        if (!strcmp(s, names[i])) { *dst = i; return 0; }
    char list[128] = "";
    for (int i = 0; i < n; i++) {
        size_t l = strlen(list);
        snprintf(list + l, sizeof list - l, "%s%s", i ? ", " : "", names[i]);
    }
    return ds_err("%s: %s: unknown value %s (expected one of: %s)", r->path, key, ds_dquote(s), list);
}

static const char *const score_names[] = {"softmax", "sigmoid"};
static const char *const topk_names[] = {"greedy", "group_limited_greedy", "noaux_tc"};

static int parse_root(ds_config *c, const cJSON *root, const char *path) {
    reader r = {root, path, ""};
    if (!cJSON_IsObject(root)) return ds_err("%s: expected a JSON object, got %s", path, ds_json_type_name(root));
    char mt[32] = "";
    if (rd_str(&r, "model_type", mt, sizeof mt, 1, 0)) return -1;
    if (!strcmp(mt, "deepseek_v3")) ds_config_default(c);
    else if (!strcmp(mt, "deepseek_v2")) config_default_v2(c);
    else return ds_err("%s: model_type: unknown model type %s (expected deepseek_v3 or deepseek_v2)", path, ds_dquote(mt));

    struct { const char *key; int64_t *dst; int required; } ints[] = {
        {"vocab_size", &c->vocab_size, 1},
        {"hidden_size", &c->hidden_size, 1},
        {"intermediate_size", &c->intermediate_size, 1},
        {"num_hidden_layers", &c->num_hidden_layers, 1},
        {"num_attention_heads", &c->num_attention_heads, 1},
        {"kv_lora_rank", &c->kv_lora_rank, 1},
        {"qk_nope_head_dim", &c->qk_nope_head_dim, 1},
        {"qk_rope_head_dim", &c->qk_rope_head_dim, 1},
        {"v_head_dim", &c->v_head_dim, 1},
        {"n_routed_experts", &c->n_routed_experts, 1},
        {"n_shared_experts", &c->n_shared_experts, 0},
        {"first_k_dense_replace", &c->first_k_dense_replace, 0},
        {"moe_layer_freq", &c->moe_layer_freq, 0},
        {"max_position_embeddings", &c->max_position_embeddings, 0},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (rd_int(&r, ints[i].key, ints[i].dst, ints[i].required, 0, 0)) return -1;
    int moe = c->n_routed_experts > 0;
    if (rd_int(&r, "moe_intermediate_size", &c->moe_intermediate_size, moe, 0, 0)) return -1;
    if (rd_int(&r, "num_experts_per_tok", &c->num_experts_per_tok, moe, !moe, 0)) return -1;
    if (rd_int(&r, "q_lora_rank", &c->q_lora_rank, 1, 1, 0)) return -1;
    /* null groups (V2 without group routing) mean one group holding every expert */
    if (rd_int(&r, "n_group", &c->n_group, 0, 1, 1)) return -1;
    if (rd_int(&r, "topk_group", &c->topk_group, 0, 1, 1)) return -1;
    c->num_key_value_heads = c->num_attention_heads;
    if (rd_int(&r, "num_key_value_heads", &c->num_key_value_heads, 0, 1, c->num_attention_heads)) return -1;
    /* MTP depth: v5 also knows it as num_mtp_layers */
    const char *mtp_key = get(&r, "num_nextn_predict_layers") || !get(&r, "num_mtp_layers")
                              ? "num_nextn_predict_layers" : "num_mtp_layers";
    if (rd_int(&r, mtp_key, &c->num_nextn_predict_layers, 0, 1, 0)) return -1;
    if (rd_int(&r, "bos_token_id", &c->bos_token_id, 0, 1, -1)) return -1;
    if (rd_int(&r, "pad_token_id", &c->pad_token_id, 0, 1, -1)) return -1;
    const cJSON *eos = get(&r, "eos_token_id");
    if (eos && cJSON_IsArray(eos)) {
        int n = cJSON_GetArraySize(eos);
        if (n < 1 || n > 8) return ds_err("%s: eos_token_id: expected 1 to 8 ids, got %d", path, n);
        for (int i = 0; i < n; i++)
            if (ds_json_int64(cJSON_GetArrayItem(eos, i), &c->eos_token_ids[i]) != 0)
                return ds_err("%s: eos_token_id: expected a list of integers", path);
        c->eos_token_id = c->eos_token_ids[0];
        c->n_eos_token_ids = n > 1 ? n : 0;
        if (n == 1) c->eos_token_ids[0] = 0;
    } else if (rd_int(&r, "eos_token_id", &c->eos_token_id, 0, 1, -1)) {
        return ds_err("%s: eos_token_id: expected an integer, a list of integers or null, got %s", path,
                      ds_json_type_name(eos));
    }

    if (rd_num(&r, "routed_scaling_factor", &c->routed_scaling_factor, 0)) return -1;
    if (rd_num(&r, "rms_norm_eps", &c->rms_norm_eps, 0)) return -1;
    if (rd_num(&r, "initializer_range", &c->initializer_range, 0)) return -1;
    if (rd_num(&r, "attention_dropout", &c->attention_dropout, 0)) return -1;
    int sf = c->scoring_func, tm = c->topk_method;
    if (parse_enum(&r, "scoring_func", &sf, score_names, 2)) return -1;
    if (parse_enum(&r, "topk_method", &tm, topk_names, 3)) return -1;
    c->scoring_func = (ds_scoring_func)sf;
    c->topk_method = (ds_topk_method)tm;
    if (rd_bool(&r, "norm_topk_prob", &c->norm_topk_prob)) return -1;
    if (rd_bool(&r, "tie_word_embeddings", &c->tie_word_embeddings)) return -1;
    if (rd_bool(&r, "attention_bias", &c->attention_bias)) return -1;
    if (rd_bool(&r, "use_cache", &c->use_cache)) return -1;
    if (rd_bool(&r, "rope_interleave", &c->rope_interleave)) return -1;
    if (rd_bool(&r, "output_router_logits", &c->output_router_logits)) return -1;
    if (rd_bool(&r, "seq_aux", &c->seq_aux)) return -1;
    if (rd_int(&r, "pretraining_tp", &c->pretraining_tp, 0, 1, 1)) return -1;
    if (rd_num(&r, "aux_loss_alpha", &c->aux_loss_alpha, 0)) return -1;
    int mlp_bias = 0;
    if (rd_bool(&r, "mlp_bias", &mlp_bias)) return -1;
    if (mlp_bias) return ds_err("%s: mlp_bias: true is not supported (DeepSeek MLPs have no biases)", path);
    if (rd_str(&r, "hidden_act", c->hidden_act, sizeof c->hidden_act, 0, 0)) return -1;
    if (rd_str(&r, "torch_dtype", c->torch_dtype, sizeof c->torch_dtype, 0, 1)) return -1;
    if (rd_str(&r, "dtype", c->torch_dtype, sizeof c->torch_dtype, 0, 1)) return -1;
    if (parse_rope(c, root, path)) return -1;
    if (parse_quant(c, root, path)) return -1;
    return 0;
}

int ds_config_parse(ds_config *c, const char *json, const char *path) {
    cJSON *root = ds_json_parse(json, strlen(json), path);
    if (!root) return -1;
    ds_config tmp;
    int rc = parse_root(&tmp, root, path);
    cJSON_Delete(root);
    if (rc) return -1;
    if (ds_config_validate(&tmp, path)) return -1;
    *c = tmp;
    return 0;
}

int ds_config_load(ds_config *c, const char *path) {
    size_t n;
    char *text = ds_read_file(path, &n);
    if (!text) return -1;
    if (strlen(text) != n) {
        free(text);
        return ds_err("%s: contains a NUL byte (not a JSON text file)", path);
    }
    int rc = ds_config_parse(c, text, path);
    free(text);
    return rc;
}

/* ---- validation -------------------------------------------------------------- */
int ds_config_validate(const ds_config *c, const char *path) {
    if (strcmp(c->model_type, "deepseek_v3") && strcmp(c->model_type, "deepseek_v2"))
        return ds_err("%s: model_type: unknown model type %s (expected deepseek_v3 or deepseek_v2)", path, ds_dquote(c->model_type));
    /* max: the size limits of config.h; 2^40 for counts that size nothing
     * (low enough that no product of two of them overflows int64) */
    const int64_t big = (int64_t)1 << 40;
    struct { const char *key; int64_t v; int64_t min, max; } rng[] = {
        {"vocab_size", c->vocab_size, 1, DS_MAX_VOCAB},
        {"hidden_size", c->hidden_size, 1, DS_MAX_HIDDEN},
        {"intermediate_size", c->intermediate_size, 1, DS_MAX_INTERMEDIATE},
        {"num_hidden_layers", c->num_hidden_layers, 1, DS_MAX_LAYERS},
        {"num_attention_heads", c->num_attention_heads, 1, DS_MAX_HEADS},
        {"num_key_value_heads", c->num_key_value_heads, 1, DS_MAX_HEADS},
        {"kv_lora_rank", c->kv_lora_rank, 1, DS_MAX_LORA_RANK},
        {"q_lora_rank", c->q_lora_rank, 0, DS_MAX_LORA_RANK},
        {"qk_nope_head_dim", c->qk_nope_head_dim, 1, DS_MAX_HEAD_DIM},
        {"qk_rope_head_dim", c->qk_rope_head_dim, 2, DS_MAX_HEAD_DIM},
        {"v_head_dim", c->v_head_dim, 1, DS_MAX_HEAD_DIM},
        {"max_position_embeddings", c->max_position_embeddings, 1, DS_MAX_POSITIONS},
        {"n_routed_experts", c->n_routed_experts, 0, DS_MAX_ROUTED_EXPERTS},
        {"n_shared_experts", c->n_shared_experts, 0, DS_MAX_SHARED_EXPERTS},
        {"first_k_dense_replace", c->first_k_dense_replace, 0, big},
        {"moe_layer_freq", c->moe_layer_freq, 1, big},
        {"num_nextn_predict_layers", c->num_nextn_predict_layers, 0, DS_MAX_MTP_LAYERS},
        {"pretraining_tp", c->pretraining_tp, 1, big},
    };
    for (size_t i = 0; i < sizeof rng / sizeof rng[0]; i++) {
        if (rng[i].v < rng[i].min)
            return ds_err("%s: %s: %lld is out of range (must be >= %lld)", path, rng[i].key,
                          (long long)rng[i].v, (long long)rng[i].min);
        if (rng[i].v > rng[i].max)
            return ds_err("%s: %s: %lld is too large (at most %lld)", path, rng[i].key, (long long)rng[i].v,
                          (long long)rng[i].max);
    }
    if (c->num_key_value_heads != c->num_attention_heads)
        return ds_err("%s: num_key_value_heads: %lld must equal num_attention_heads (%lld) for MLA", path,
                      (long long)c->num_key_value_heads, (long long)c->num_attention_heads);
    if (c->qk_rope_head_dim % 2)
        return ds_err("%s: qk_rope_head_dim: %lld must be even (rotary pairs)", path, (long long)c->qk_rope_head_dim);
    int64_t E = c->n_routed_experts;
    if (E > 0) {
        if (c->moe_intermediate_size < 1 || c->moe_intermediate_size > DS_MAX_MOE_INTERMEDIATE)
            return ds_err("%s: moe_intermediate_size: %lld is out of range (1 to %lld)", path,
                          (long long)c->moe_intermediate_size, (long long)DS_MAX_MOE_INTERMEDIATE);
        if (c->num_experts_per_tok < 1 || c->num_experts_per_tok > E)
            return ds_err("%s: num_experts_per_tok: %lld is out of range (1 to n_routed_experts = %lld)", path,
                          (long long)c->num_experts_per_tok, (long long)E);
        if (c->n_group < 1)
            return ds_err("%s: n_group: %lld must be >= 1", path, (long long)c->n_group);
        if (E % c->n_group)
            return ds_err("%s: n_group: n_routed_experts (%lld) is not divisible by n_group (%lld)", path,
                          (long long)E, (long long)c->n_group);
        if (c->topk_group < 1 || c->topk_group > c->n_group)
            return ds_err("%s: topk_group: %lld is out of range (1 to n_group = %lld)", path,
                          (long long)c->topk_group, (long long)c->n_group);
        /* group-limited methods pick K experts from the topk_group kept groups */
        if (c->topk_method != DS_TOPK_GREEDY && c->num_experts_per_tok > c->topk_group * (E / c->n_group))
            return ds_err("%s: num_experts_per_tok: %lld exceeds the %lld experts in the topk_group (%lld) kept groups",
                          path, (long long)c->num_experts_per_tok, (long long)(c->topk_group * (E / c->n_group)),
                          (long long)c->topk_group);
        if (!(c->routed_scaling_factor > 0) || !isfinite(c->routed_scaling_factor))
            return ds_err("%s: routed_scaling_factor: %g must be a positive number", path, c->routed_scaling_factor);
    }
    if ((unsigned)c->scoring_func > DS_SCORE_SIGMOID) return ds_err("%s: scoring_func: invalid value", path);
    if ((unsigned)c->topk_method > DS_TOPK_NOAUX_TC) return ds_err("%s: topk_method: invalid value", path);
    if (!(c->rms_norm_eps > 0) || !isfinite(c->rms_norm_eps))
        return ds_err("%s: rms_norm_eps: %g must be a positive number", path, c->rms_norm_eps);
    if (!(c->rope_theta > 0) || !isfinite(c->rope_theta))
        return ds_err("%s: rope_theta: %g must be a positive number", path, c->rope_theta);
    if (!(c->initializer_range >= 0) || !isfinite(c->initializer_range))
        return ds_err("%s: initializer_range: %g must be a non-negative number", path, c->initializer_range);
    if (!(c->aux_loss_alpha >= 0) || !isfinite(c->aux_loss_alpha))
        return ds_err("%s: aux_loss_alpha: %g must be a non-negative number", path, c->aux_loss_alpha);
    if (!(c->attention_dropout >= 0 && c->attention_dropout <= 1))
        return ds_err("%s: attention_dropout: %g must be in [0, 1]", path, c->attention_dropout);
    if (strcmp(c->hidden_act, "silu"))
        return ds_err("%s: hidden_act: %s is not supported (silu)", path, ds_dquote(c->hidden_act));
    if (c->rope_type == DS_ROPE_YARN) {
        if (!(c->rope_factor > 0) || !isfinite(c->rope_factor))
            return ds_err("%s: rope_parameters: factor: %g must be a positive number", path, c->rope_factor);
        if (c->rope_original_max_position_embeddings < 0 || c->rope_original_max_position_embeddings > DS_MAX_POSITIONS)
            return ds_err("%s: rope_parameters: original_max_position_embeddings: %lld is out of range (1 to %lld)",
                          path, (long long)c->rope_original_max_position_embeddings, (long long)DS_MAX_POSITIONS);
        if (!isfinite(c->rope_beta_fast) || !isfinite(c->rope_beta_slow) || !isfinite(c->rope_mscale) ||
            !isfinite(c->rope_mscale_all_dim) || !isfinite(c->rope_attention_factor))
            return ds_err("%s: rope_parameters: values must be finite numbers", path);
    } else if (c->rope_type != DS_ROPE_DEFAULT) {
        return ds_err("%s: rope_parameters: rope_type: invalid value", path);
    }
    if (c->quant_fp8) {
        if (c->quant_block[0] < 1 || c->quant_block[1] < 1 || c->quant_block[0] > 65536 || c->quant_block[1] > 65536)
            return ds_err("%s: quantization_config: weight_block_size: [%lld, %lld] must be positive", path,
                          (long long)c->quant_block[0], (long long)c->quant_block[1]);
        if (c->quant_scale_fmt[0] && strcmp(c->quant_scale_fmt, "ue8m0"))
            return ds_err("%s: quantization_config: scale_fmt: %s is not supported (ue8m0 or null)", path,
                          ds_dquote(c->quant_scale_fmt));
        if (strcmp(c->quant_fmt, "e4m3") && strcmp(c->quant_fmt, "e5m2"))
            return ds_err("%s: quantization_config: fmt: %s is not supported (e4m3 or e5m2)", path, ds_dquote(c->quant_fmt));
    }
    if (c->n_eos_token_ids < 0 || c->n_eos_token_ids > 8)
        return ds_err("%s: eos_token_id: list length %d out of range", path, c->n_eos_token_ids);
    return 0;
}

int ds_config_layer_is_moe(const ds_config *c, int64_t l) {
    if (c->n_routed_experts <= 0 || l < 0) return 0;
    return l >= c->first_k_dense_replace && l % c->moe_layer_freq == 0;
}

/* ---- writing ------------------------------------------------------------------ */
/* One top-level entry: key and its rendered value (indented for level 1). */
typedef struct {
    const char *key;
    char *val;
} kv;

static int cmp_kv(const void *a, const void *b) { return strcmp(((const kv *)a)->key, ((const kv *)b)->key); }

static char *r_int(int64_t v) {
    ds_sbuf b = {0};
    ds_sbuf_printf(&b, "%lld", (long long)v);
    return ds_sbuf_take(&b);
}
static char *r_int_or_null(int64_t v, int64_t null_val) { return v == null_val ? ds_strdup("null") : r_int(v); }
static char *r_num(double v) {
    ds_sbuf b = {0};
    ds_json_put_double(&b, v);
    return ds_sbuf_take(&b);
}
static char *r_bool(int v) { return ds_strdup(v ? "true" : "false"); }
static char *r_str(const char *s) {
    ds_sbuf b = {0};
    ds_json_put_string(&b, s);
    return ds_sbuf_take(&b);
}

/* Nested object at indent level 1 from sorted kv pairs. */
static char *r_obj(kv *items, int n) {
    qsort(items, (size_t)n, sizeof *items, cmp_kv);
    ds_sbuf b = {0};
    ds_sbuf_puts(&b, "{\n");
    for (int i = 0; i < n; i++) {
        ds_sbuf_puts(&b, "    ");
        ds_json_put_string(&b, items[i].key);
        ds_sbuf_puts(&b, ": ");
        ds_sbuf_puts(&b, items[i].val);
        ds_sbuf_puts(&b, i + 1 < n ? ",\n" : "\n");
        free(items[i].val);
    }
    ds_sbuf_puts(&b, "  }");
    return ds_sbuf_take(&b);
}

char *ds_config_to_json(const ds_config *c) {
    kv t[64];
    int n = 0;
    int v2 = !strcmp(c->model_type, "deepseek_v2");
#define PUT(k, v) (t[n].key = (k), t[n].val = (v), n++)
    PUT("architectures", ds_strdup(v2 ? "[\n    \"DeepseekV2ForCausalLM\"\n  ]" : "[\n    \"DeepseekV3ForCausalLM\"\n  ]"));
    PUT("model_type", r_str(c->model_type));
    PUT("vocab_size", r_int(c->vocab_size));
    PUT("hidden_size", r_int(c->hidden_size));
    PUT("intermediate_size", r_int(c->intermediate_size));
    PUT("moe_intermediate_size", r_int(c->moe_intermediate_size));
    PUT("num_hidden_layers", r_int(c->num_hidden_layers));
    PUT("num_attention_heads", r_int(c->num_attention_heads));
    PUT("num_key_value_heads", r_int(c->num_key_value_heads));
    PUT("n_shared_experts", r_int(c->n_shared_experts));
    PUT("n_routed_experts", r_int(c->n_routed_experts));
    PUT("num_experts_per_tok", r_int(c->num_experts_per_tok));
    PUT("n_group", r_int(c->n_group));
    PUT("topk_group", r_int(c->topk_group));
    PUT("first_k_dense_replace", r_int(c->first_k_dense_replace));
    PUT("moe_layer_freq", r_int(c->moe_layer_freq));
    PUT("q_lora_rank", r_int_or_null(c->q_lora_rank, 0));
    PUT("kv_lora_rank", r_int(c->kv_lora_rank));
    PUT("qk_nope_head_dim", r_int(c->qk_nope_head_dim));
    PUT("qk_rope_head_dim", r_int(c->qk_rope_head_dim));
    PUT("v_head_dim", r_int(c->v_head_dim));
    /* derived by HF at load (head_dim = rotary dim); written as HF writes them */
    PUT("head_dim", r_int(c->qk_rope_head_dim));
    PUT("qk_head_dim", r_int(ds_config_qk_head_dim(c)));
    PUT("max_position_embeddings", r_int(c->max_position_embeddings));
    PUT("num_nextn_predict_layers", r_int(c->num_nextn_predict_layers));
    PUT("routed_scaling_factor", r_num(c->routed_scaling_factor));
    PUT("rms_norm_eps", r_num(c->rms_norm_eps));
    PUT("initializer_range", r_num(c->initializer_range));
    PUT("attention_dropout", r_num(c->attention_dropout));
    PUT("scoring_func", r_str(score_names[c->scoring_func]));
    PUT("topk_method", r_str(topk_names[c->topk_method]));
    PUT("norm_topk_prob", r_bool(c->norm_topk_prob));
    PUT("tie_word_embeddings", r_bool(c->tie_word_embeddings));
    PUT("attention_bias", r_bool(c->attention_bias));
    PUT("use_cache", r_bool(c->use_cache));
    PUT("rope_interleave", r_bool(c->rope_interleave));
    PUT("output_router_logits", r_bool(c->output_router_logits));
    PUT("pretraining_tp", r_int(c->pretraining_tp));
    PUT("aux_loss_alpha", r_num(c->aux_loss_alpha));
    PUT("seq_aux", r_bool(c->seq_aux));
    PUT("bos_token_id", r_int_or_null(c->bos_token_id, -1));
    PUT("pad_token_id", r_int_or_null(c->pad_token_id, -1));
    if (c->n_eos_token_ids > 1) {
        ds_sbuf b = {0};
        ds_sbuf_puts(&b, "[\n");
        for (int i = 0; i < c->n_eos_token_ids; i++)
            ds_sbuf_printf(&b, "    %lld%s\n", (long long)c->eos_token_ids[i], i + 1 < c->n_eos_token_ids ? "," : "");
        ds_sbuf_puts(&b, "  ]");
        PUT("eos_token_id", ds_sbuf_take(&b));
    } else {
        PUT("eos_token_id", r_int_or_null(c->eos_token_id, -1));
    }
    PUT("hidden_act", r_str(c->hidden_act));
    if (c->torch_dtype[0]) PUT("dtype", r_str(c->torch_dtype));
    {
        kv r[12];
        int m = 0;
        r[m].key = "rope_theta"; r[m++].val = r_num(c->rope_theta);
        r[m].key = "rope_type"; r[m++].val = r_str(c->rope_type == DS_ROPE_YARN ? "yarn" : "default");
        if (c->rope_type == DS_ROPE_YARN) {
            r[m].key = "factor"; r[m++].val = r_num(c->rope_factor);
            if (c->rope_original_max_position_embeddings > 0) {
                r[m].key = "original_max_position_embeddings";
                r[m++].val = r_int(c->rope_original_max_position_embeddings);
            }
            r[m].key = "beta_fast"; r[m++].val = r_num(c->rope_beta_fast);
            r[m].key = "beta_slow"; r[m++].val = r_num(c->rope_beta_slow);
            if (c->rope_mscale != 0) { r[m].key = "mscale"; r[m++].val = r_num(c->rope_mscale); }
            if (c->rope_mscale_all_dim != 0) { r[m].key = "mscale_all_dim"; r[m++].val = r_num(c->rope_mscale_all_dim); }
            if (c->rope_attention_factor != 0) { r[m].key = "attention_factor"; r[m++].val = r_num(c->rope_attention_factor); }
            if (!c->rope_truncate) { r[m].key = "truncate"; r[m++].val = r_bool(0); }
        }
        PUT("rope_parameters", r_obj(r, m));
    }
    if (c->quant_fp8) {
        kv q[5];
        ds_sbuf b = {0};
        ds_sbuf_printf(&b, "[\n      %lld,\n      %lld\n    ]", (long long)c->quant_block[0], (long long)c->quant_block[1]);
        q[0].key = "quant_method"; q[0].val = r_str("fp8");
        q[1].key = "fmt"; q[1].val = r_str(c->quant_fmt);
        q[2].key = "activation_scheme"; q[2].val = r_str(c->quant_activation_scheme);
        q[3].key = "weight_block_size"; q[3].val = ds_sbuf_take(&b);
        int nq = 4;
        if (c->quant_scale_fmt[0]) { q[4].key = "scale_fmt"; q[4].val = r_str(c->quant_scale_fmt); nq = 5; }
        PUT("quantization_config", r_obj(q, nq));
    }
#undef PUT
    qsort(t, (size_t)n, sizeof *t, cmp_kv);
    ds_sbuf b = {0};
    ds_sbuf_puts(&b, "{\n");
    for (int i = 0; i < n; i++) {
        ds_sbuf_puts(&b, "  ");
        ds_json_put_string(&b, t[i].key);
        ds_sbuf_puts(&b, ": ");
        ds_sbuf_puts(&b, t[i].val);
        ds_sbuf_puts(&b, i + 1 < n ? ",\n" : "\n");
        free(t[i].val);
    }
    ds_sbuf_puts(&b, "}\n");
    return ds_sbuf_take(&b);
}

int ds_config_save(const ds_config *c, const char *path) {
    if (ds_config_validate(c, path)) return -1;
    char *s = ds_config_to_json(c);
    int rc = ds_write_file_atomic(path, s, strlen(s));
    free(s);
    return rc;
}
