/*
 * presets.c — the named configurations of presets.h.  Everything not set
 * here keeps the DeepseekV3Config default (ds_config_default).
 */
#include "model/presets.h"

#include <string.h>

#include "base/base.h"
#include "base/suggest.h"

static const char *const g_presets[] = {"tiny", "small", "base", "deepseek-v3"};

static void common(ds_config *c) {
    ds_config_default(c);
    strcpy(c->model_type, "deepseek_v3");
    strcpy(c->torch_dtype, "float32");
    c->scoring_func = DS_SCORE_SIGMOID;
    c->topk_method = DS_TOPK_NOAUX_TC;
    c->norm_topk_prob = 1;
    c->routed_scaling_factor = 2.5;
    c->first_k_dense_replace = 1;
    c->moe_layer_freq = 1;
    c->n_shared_experts = 1;
    c->num_nextn_predict_layers = 1;
    c->tie_word_embeddings = 0;
    c->rms_norm_eps = 1e-6;
    c->rope_theta = 10000;
    c->rope_type = DS_ROPE_YARN;
    c->rope_beta_fast = 32;
    c->rope_beta_slow = 1;
    c->rope_mscale = 1.0;
    c->rope_mscale_all_dim = 1.0;
    c->rope_truncate = 1;
    c->bos_token_id = 0;
    c->eos_token_id = 1;
    c->quant_fp8 = 0;
}

int ds_preset(ds_config *c, const char *name) {
    if (!strcmp(name, "tiny")) {
        common(c);
        c->vocab_size = 8192;
        c->hidden_size = 128;
        c->intermediate_size = 384;
        c->moe_intermediate_size = 64;
        c->num_hidden_layers = 3;
        c->num_attention_heads = 4;
        c->num_key_value_heads = 4;
        c->q_lora_rank = 64;
        c->kv_lora_rank = 32;
        c->qk_nope_head_dim = 32;
        c->qk_rope_head_dim = 16;
        c->v_head_dim = 32;
        c->n_routed_experts = 8;
        c->num_experts_per_tok = 2;
        c->n_group = 4;
        c->topk_group = 2;
        c->rope_factor = 4;
        c->rope_original_max_position_embeddings = 256;
        c->max_position_embeddings = 1024;
        return 0;
    }
    if (!strcmp(name, "small")) {
        common(c);
        c->vocab_size = 32000;
        c->hidden_size = 512;
        c->intermediate_size = 1536;
        c->moe_intermediate_size = 256;
        c->num_hidden_layers = 6;
        c->num_attention_heads = 8;
        c->num_key_value_heads = 8;
        c->q_lora_rank = 192;
        c->kv_lora_rank = 128;
        c->qk_nope_head_dim = 64;
        c->qk_rope_head_dim = 32;
        c->v_head_dim = 64;
        c->n_routed_experts = 32;
        c->num_experts_per_tok = 4;
        c->n_group = 4;
        c->topk_group = 2;
        c->rope_factor = 4;
        c->rope_original_max_position_embeddings = 1024;
        c->max_position_embeddings = 4096;
        return 0;
    }
    if (!strcmp(name, "base")) {
        /* the next size up for CPU training benchmarks at B=8, T=512: 274M
         * parameters, 306M with the MTP module (small: 104M, 119M); 459 MFLOP
         * a token in a training step (small: 210).  small's, but for these: */
        ds_preset(c, "small");
        c->hidden_size = 768;
        c->intermediate_size = 2048;
        c->moe_intermediate_size = 384;
        c->num_hidden_layers = 8;
        c->num_attention_heads = 12;
        c->num_key_value_heads = 12;
        c->q_lora_rank = 384;
        c->kv_lora_rank = 256;
        return 0;
    }
    if (!strcmp(name, "deepseek-v3")) {
        /* DeepSeek-V3 (671B), the published config.json; for `dsv3 plan` and
         * `dsv3 inspect`-style accounting (far beyond this machine's memory) */
        common(c);
        c->vocab_size = 129280;
        c->hidden_size = 7168;
        c->intermediate_size = 18432;
        c->moe_intermediate_size = 2048;
        c->num_hidden_layers = 61;
        c->first_k_dense_replace = 3;
        c->num_attention_heads = 128;
        c->num_key_value_heads = 128;
        c->q_lora_rank = 1536;
        c->kv_lora_rank = 512;
        c->qk_nope_head_dim = 128;
        c->qk_rope_head_dim = 64;
        c->v_head_dim = 128;
        c->n_routed_experts = 256;
        c->n_shared_experts = 1;
        c->num_experts_per_tok = 8;
        c->n_group = 8;
        c->topk_group = 4;
        c->routed_scaling_factor = 2.5;
        c->num_nextn_predict_layers = 1;
        c->rope_factor = 40;
        c->rope_original_max_position_embeddings = 4096;
        c->max_position_embeddings = 163840;
        c->quant_fp8 = 1;
        return 0;
    }
    char dym[256];
    ds_suggest_text(dym, sizeof dym, name, g_presets, (int)(sizeof g_presets / sizeof g_presets[0]));
    return ds_err("unknown preset %s%s%s (known: %s)", ds_quote(name), dym[0] ? "; " : "", dym, ds_preset_names());
}

const char *ds_preset_names(void) { return "tiny, small, base, deepseek-v3"; }

const char *const *ds_preset_list(int *n) {
    *n = (int)(sizeof g_presets / sizeof g_presets[0]);
    return g_presets;
}

int ds_config_is_path(const char *s) { return strchr(s, '/') != NULL || strstr(s, ".json") != NULL; }
