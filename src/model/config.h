/*
 * config.h — DeepseekV3Config (Hugging Face config.json) as a C struct.
 * Field meanings: ../shared/docs/deepseek-v3.md §1.2.  Read, validated and
 * written by config.c; every field of HF's DeepseekV3Config round-trips.
 */
#ifndef DS_CONFIG_H
#define DS_CONFIG_H

#include <stdint.h>

typedef enum { DS_SCORE_SOFTMAX = 0, DS_SCORE_SIGMOID = 1 } ds_scoring_func;
typedef enum {
    DS_TOPK_GREEDY = 0,               /* plain top-k over scores */
    DS_TOPK_GROUP_LIMITED_GREEDY = 1, /* V2: group score = max in group */
    DS_TOPK_NOAUX_TC = 2              /* V3: biased selection, group score = top-2 sum */
} ds_topk_method;
typedef enum { DS_ROPE_DEFAULT = 0, DS_ROPE_YARN = 1 } ds_rope_type;

typedef struct {
    char model_type[32];      /* "deepseek_v3" (also accepts "deepseek_v2") */
    int64_t vocab_size;
    int64_t hidden_size;             /* H */
    int64_t intermediate_size;       /* I, dense MLP */
    int64_t moe_intermediate_size;   /* Im, each routed expert */
    int64_t num_hidden_layers;       /* L */
    int64_t num_attention_heads;     /* nh */
    int64_t num_key_value_heads;     /* must equal nh */
    int64_t n_shared_experts;
    int64_t n_routed_experts;        /* E (0 = no MoE) */
    int64_t num_experts_per_tok;     /* K */
    int64_t n_group;                 /* G */
    int64_t topk_group;              /* Gk */
    int64_t first_k_dense_replace;
    int64_t moe_layer_freq;
    int64_t q_lora_rank;             /* 0 = null (q_proj path) */
    int64_t kv_lora_rank;
    int64_t qk_nope_head_dim;        /* dn */
    int64_t qk_rope_head_dim;        /* dr */
    int64_t v_head_dim;              /* dv */
    int64_t max_position_embeddings;
    int64_t num_nextn_predict_layers; /* MTP depth D */
    double routed_scaling_factor;
    double rms_norm_eps;
    double rope_theta;
    double initializer_range;
    double attention_dropout;
    ds_scoring_func scoring_func;
    ds_topk_method topk_method;
    int norm_topk_prob;
    int tie_word_embeddings;
    int attention_bias;
    int use_cache;
    int64_t bos_token_id, eos_token_id, pad_token_id; /* -1 = null */
    char hidden_act[16];             /* "silu" only */
    char torch_dtype[16];            /* "float32", "bfloat16", ... */
    /* rope scaling (rope_scaling or rope_parameters) */
    ds_rope_type rope_type;
    double rope_factor;
    int64_t rope_original_max_position_embeddings; /* 0 = absent (HF then uses max_position_embeddings) */
    double rope_beta_fast, rope_beta_slow;
    double rope_mscale, rope_mscale_all_dim;  /* 0 = absent */
    double rope_attention_factor;             /* 0 = absent */
    int rope_truncate;                         /* default 1 */
    /* quantization_config (fp8 checkpoints) */
    int quant_fp8;                   /* quant_method == "fp8" */
    int64_t quant_block[2];          /* weight_block_size, [128,128] */
    char quant_fmt[16];              /* "e4m3" */
    char quant_activation_scheme[16];/* "dynamic" */
    /* added by config.c (HF v5 fields; see ds_config_default) */
    int rope_interleave;             /* 1: rotary dims in interleaved pairs (HF default) */
    int n_eos_token_ids;             /* > 1 when config.json gives eos_token_id as a list */
    int64_t eos_token_ids[8];        /* that list; eos_token_id is its first entry */
    int output_router_logits;        /* HF flag, default 0 (kept for round trips) */
    int64_t pretraining_tp;          /* HF flag, default 1 (kept for round trips) */
    double aux_loss_alpha;           /* DeepSeek remote code / V2 files: 0.001 */
    int seq_aux;                     /* sequence-wise aux loss (V2 files): 1 */
    char quant_scale_fmt[16];        /* quantization_config.scale_fmt: "" or "ue8m0" (V3.1) */
} ds_config;

/* Defaults of HF DeepseekV3Config. */
void ds_config_default(ds_config *c);
/* Parse config.json text; path is only for messages.  Unknown keys are
 * ignored; a missing required field or a bad value is an error naming it
 * ("config.json: kv_lora_rank: missing"). */
int ds_config_parse(ds_config *c, const char *json, const char *path);
int ds_config_load(ds_config *c, const char *path);
/* Upper limits of the sizes (ds_config_validate refuses a config beyond
 * them).  Generous next to DeepSeek-V3 671B (given in parentheses), they
 * keep every product of sizes the code forms far inside int64 and refuse a
 * config.json whose numbers are garbage before anything is allocated.  The
 * memory a model needs is checked separately against the machine
 * (ds_mem_check, layout.h). */
#define DS_MAX_VOCAB ((int64_t)1 << 22)        /* vocab_size 4194304 (129280) */
#define DS_MAX_HIDDEN ((int64_t)65536)          /* hidden_size (7168) */
#define DS_MAX_INTERMEDIATE ((int64_t)1 << 18)  /* intermediate_size 262144 (18432) */
#define DS_MAX_MOE_INTERMEDIATE ((int64_t)65536) /* moe_intermediate_size (2048) */
#define DS_MAX_LAYERS ((int64_t)1024)           /* num_hidden_layers (61) */
#define DS_MAX_HEADS ((int64_t)1024)            /* num_attention_heads, num_key_value_heads (128) */
#define DS_MAX_LORA_RANK ((int64_t)65536)       /* q_lora_rank (1536), kv_lora_rank (512) */
#define DS_MAX_HEAD_DIM ((int64_t)4096)         /* qk_nope (128), qk_rope (64), v_head_dim (128) */
#define DS_MAX_POSITIONS ((int64_t)1 << 24)     /* max_position_embeddings 16777216 (163840) */
#define DS_MAX_ROUTED_EXPERTS ((int64_t)4096)   /* n_routed_experts (256) */
#define DS_MAX_SHARED_EXPERTS ((int64_t)64)     /* n_shared_experts (1) */
#define DS_MAX_MTP_LAYERS ((int64_t)64)         /* num_nextn_predict_layers (1) */

/* Consistency checks (experts divisible by groups, even rope dims, ...) and
 * the limits above. */
int ds_config_validate(const ds_config *c, const char *path);
/* Serialize as HF config.json (caller frees). */
char *ds_config_to_json(const ds_config *c);
int ds_config_save(const ds_config *c, const char *path);

/* Derived quantities. */
static inline int64_t ds_config_qk_head_dim(const ds_config *c) { return c->qk_nope_head_dim + c->qk_rope_head_dim; }
/* Layer l (0-based; MTP layers are l >= num_hidden_layers) is MoE?
 * DeepSeek's rule (remote modeling_deepseek.py, vLLM): n_routed_experts > 0,
 * l >= first_k_dense_replace and l % moe_layer_freq == 0.  HF transformers'
 * native DeepseekV3/V2 ignore moe_layer_freq (every layer >= first_k_dense_replace
 * is MoE); the two agree for moe_layer_freq == 1, which every released
 * checkpoint uses. */
int ds_config_layer_is_moe(const ds_config *c, int64_t l);

#endif
