/*
 * test_model_hf.c — end to end against transformers at test time (skipped
 * when python3 with torch + transformers is not importable): `dsv3 init`
 * writes a random model folder, `dsv3 forward` computes its logits, and
 * tools/check_hf_load.py loads the same folder with
 * DeepseekV3ForCausalLM / DeepseekV2ForCausalLM.from_pretrained and compares
 * the logits (max|a-b|/max|ref| <= 1e-5, the tolerance of
 * test_model_parity.c).  Covers what the committed fixtures do not: the
 * presets' shapes, sequences longer than one attention block, tied
 * embeddings, attention biases, and that our saved folders load in HF.
 */
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "model/presets.h"
#include "test.h"

static int have_hf(void) {
    return ds_test_sh(NULL, 0, "python3 -c 'import torch, transformers' >/dev/null 2>&1") == 0;
}

static void run_case(const ds_config *c, const char *name, int T) {
    const char *tmp = ds_test_tmpdir();
    const char *bin = getenv("DSV3") ? getenv("DSV3") : "./dsv3";
    char cfg[600], ids[600], out[8192];
    snprintf(cfg, sizeof cfg, "%s/%s.json", tmp, name);
    CHECK(ds_config_save(c, cfg) == 0);
    snprintf(ids, sizeof ids, "%s/%s_ids.txt", tmp, name);
    FILE *f = fopen(ids, "w");
    ds_rng r;
    ds_rng_seed(&r, 77);
    for (int b = 0; b < 2; b++)
        for (int t = 0; t < T; t++) fprintf(f, "%llu%c", (unsigned long long)ds_rng_below(&r, (uint64_t)c->vocab_size),
                                           t + 1 < T ? ' ' : '\n');
    fclose(f);
    int rc = ds_test_sh(out, sizeof out,
                        "%s init --config %s --out %s/%s --seed 9 && %s forward --model %s/%s --ids %s --out %s/%s.st "
                        "&& python3 tools/check_hf_load.py %s/%s %s %s/%s.st --tol 1e-5",
                        bin, cfg, tmp, name, bin, tmp, name, ids, tmp, name, tmp, name, ids, tmp, name);
    CHECK_MSG(rc == 0, "%s: %s", name, out);
    fprintf(stderr, "  %s: %s", name, strstr(out, "check_hf_load") ? strstr(out, "check_hf_load") : out);
}

TEST(hf_loads_dsv3_tiny_preset) {
    if (!have_hf()) SKIP("python3 with torch + transformers not importable");
    ds_config c;
    ds_preset(&c, "tiny");
    run_case(&c, "tiny", 70);
}

TEST(hf_loads_dsv3_v2_style_tied_bias) {
    if (!have_hf()) SKIP("python3 with torch + transformers not importable");
    ds_config c;
    ds_preset(&c, "tiny");
    strcpy(c.model_type, "deepseek_v2");
    c.scoring_func = DS_SCORE_SOFTMAX;
    c.topk_method = DS_TOPK_GROUP_LIMITED_GREEDY;
    c.norm_topk_prob = 0;
    c.routed_scaling_factor = 16;
    c.q_lora_rank = 0;
    c.num_nextn_predict_layers = 0;
    c.tie_word_embeddings = 1;
    c.attention_bias = 1;
    c.n_shared_experts = 2;
    c.rope_mscale = c.rope_mscale_all_dim = 0.707;
    CHECK(ds_config_validate(&c, "v2") == 0);
    run_case(&c, "v2tied", 33);
}
