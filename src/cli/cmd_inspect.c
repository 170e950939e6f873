/*
 * cmd_inspect.c — `dsv3 inspect DIR [--tensors] [--memory]`: config summary,
 * parameter counts (total / activated per token / MTP, from the layout table),
 * memory by dtype of the stored tensors, with --tensors the tensor list, and
 * with --memory the resident weight memory of the model loaded as forward /
 * generate / eval load it (FP8 linears kept FP8; loads the weights).
 */
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "io/safetensors.h"
#include "model/layout.h"
#include "model/model.h"

static void human(char *buf, size_t cap, double n) {
    if (n >= 1e9) snprintf(buf, cap, "%.2fB", n / 1e9);
    else if (n >= 1e6) snprintf(buf, cap, "%.2fM", n / 1e6);
    else if (n >= 1e3) snprintf(buf, cap, "%.1fK", n / 1e3);
    else snprintf(buf, cap, "%.0f", n);
}

static int run(int argc, char **argv) {
    int tensors = 0, memory = 0;
    const ds_opt opts[] = {
        {"--tensors", DS_OPT_FLAG, &tensors, "also list every tensor"},
        {"--memory", DS_OPT_FLAG, &memory, "load the model and print its resident weight memory (FP8 kept FP8)"},
    };
    const char *pos[1];
    int npos = 0;
    ds_cli_parse("inspect", "DIR [--tensors] [--memory]", argc, argv, opts, 2, pos, 1, &npos);
    if (npos != 1) ds_cli_usage_error("inspect", "expected one model folder");
    const char *dir = pos[0];
    char *cpath = ds_path_join(dir, "config.json");
    ds_config c;
    int rc = ds_config_load(&c, cpath);
    if (!rc) rc = ds_config_validate(&c, cpath);
    free(cpath);
    if (rc) return ds_cli_fail("inspect");
    ds_layout lo;
    if (ds_layout_build(&lo, &c)) return ds_cli_fail("inspect");
    ds_st_set s;
    if (ds_st_set_open(&s, dir)) {
        ds_layout_free(&lo);
        return ds_cli_fail("inspect");
    }
    int64_t ndense = 0, nmoe = 0;
    for (int64_t l = 0; l < c.num_hidden_layers; l++) ds_config_layer_is_moe(&c, l) ? nmoe++ : ndense++;
    static const char *score[] = {"softmax", "sigmoid"};
    static const char *topk[] = {"greedy", "group_limited_greedy", "noaux_tc"};
    printf("model %s (%s)\n", dir, c.model_type);
    printf("  vocab %lld, hidden %lld, layers %lld (%lld dense, %lld MoE), MTP depth %lld\n", (long long)c.vocab_size,
           (long long)c.hidden_size, (long long)c.num_hidden_layers, (long long)ndense, (long long)nmoe,
           (long long)c.num_nextn_predict_layers);
    printf("  MLA: %lld heads, q_lora_rank %lld, kv_lora_rank %lld, head dims nope %lld / rope %lld / v %lld\n",
           (long long)c.num_attention_heads, (long long)c.q_lora_rank, (long long)c.kv_lora_rank,
           (long long)c.qk_nope_head_dim, (long long)c.qk_rope_head_dim, (long long)c.v_head_dim);
    printf("  MLP: dense intermediate %lld; MoE %lld routed + %lld shared experts of width %lld, top-%lld\n",
           (long long)c.intermediate_size, (long long)c.n_routed_experts, (long long)c.n_shared_experts,
           (long long)c.moe_intermediate_size, (long long)c.num_experts_per_tok);
    printf("  router: %s, %s, groups %lld keep %lld, norm_topk_prob %s, scaling %g\n", score[c.scoring_func & 1],
           topk[c.topk_method % 3], (long long)c.n_group, (long long)c.topk_group, c.norm_topk_prob ? "true" : "false",
           c.routed_scaling_factor);
    if (c.rope_type == DS_ROPE_YARN)
        printf("  rope: yarn, theta %g, factor %g, original %lld, beta %g/%g, mscale %g/%g\n", c.rope_theta,
               c.rope_factor, (long long)c.rope_original_max_position_embeddings, c.rope_beta_fast, c.rope_beta_slow,
               c.rope_mscale, c.rope_mscale_all_dim);
    else printf("  rope: default, theta %g\n", c.rope_theta);
    ds_param_counts pc;
    ds_layout_count(&pc, &lo, &c);
    char a[32], b[32], d[32];
    human(a, sizeof a, (double)pc.total);
    human(b, sizeof b, (double)pc.activated);
    human(d, sizeof d, (double)pc.mtp);
    printf("parameters: total %lld (%s), activated per token %lld (%s), MTP %lld (%s)\n", (long long)pc.total, a,
           (long long)pc.activated, b, (long long)pc.mtp, d);
    int64_t cnt[DS_DTYPE_COUNT] = {0}, bytes[DS_DTYPE_COUNT] = {0}, ntens = 0;
    for (int f = 0; f < s.nfiles; f++)
        for (int64_t i = 0; i < s.files[f].n; i++) {
            const ds_st_tensor *t = &s.files[f].tensors[i];
            cnt[t->dtype]++;
            bytes[t->dtype] += (int64_t)t->nbytes;
            ntens++;
        }
    printf("memory by dtype (%lld tensors in %d file%s):\n", (long long)ntens, s.nfiles, s.nfiles == 1 ? "" : "s");
    for (int k = 0; k < DS_DTYPE_COUNT; k++)
        if (cnt[k])
            printf("  %-8s %6lld tensors %12.2f MiB\n", ds_dtype_table[k].st_name, (long long)cnt[k],
                   (double)bytes[k] / (1024.0 * 1024.0));
    if (tensors) {
        printf("tensors:\n");
        for (int f = 0; f < s.nfiles; f++)
            for (int64_t i = 0; i < s.files[f].n; i++) {
                const ds_st_tensor *t = &s.files[f].tensors[i];
                char sh[128];
                size_t n = (size_t)snprintf(sh, sizeof sh, "[");
                for (int k = 0; k < t->ndim && n < sizeof sh; k++)
                    n += (size_t)snprintf(sh + n, sizeof sh - n, "%s%lld", k ? ", " : "", (long long)t->shape[k]);
                if (n < sizeof sh) snprintf(sh + n, sizeof sh - n, "]");
                printf("  %-64s %-8s %s\n", t->name, ds_dtype_table[t->dtype].st_name, sh);
            }
    }
    ds_st_set_close(&s);
    ds_layout_free(&lo);
    if (memory) {
        ds_model m;
        ds_load_opts o = {.fp8_resident = 1};
        if (ds_model_load_ex(&m, dir, &o)) return ds_cli_fail("inspect");
        ds_weight_mem w;
        ds_model_weight_mem(&m, &w);
        char buf[400];
        ds_weight_mem_str(&w, buf, sizeof buf);
        printf("in memory (forward, generate, eval; --dequant: all FP32): %s\n", buf);
        ds_model_free(&m);
    }
    return 0;
}
DS_COMMAND("inspect", "print a model folder's config, parameter counts and tensors", run)
