/*
 * cmd_init.c — `dsv3 init --config CONFIG.json|PRESET --out DIR [--seed S]
 * [--tokenizer T]`: a randomly initialised model folder (HF init, doc §12.2
 * item 9), with the MTP modules when the config has num_nextn_predict_layers
 * > 0, and generation_config.json.  With --tokenizer the folder also gets
 * tokenizer.json and tokenizer_config.json; a preset then takes the
 * tokenizer's vocabulary size and BOS/EOS ids (as `dsv3 train` does).
 */
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "model/model.h"
#include "model/presets.h"
#include "tokenizer/tok_config.h"
#include "tokenizer/tokenizer.h"

static int run(int argc, char **argv) {
    const char *config = NULL, *out = NULL, *tokp = NULL;
    long long seed = 1234;
    int config_only = 0;
    const ds_opt opts[] = {
        {"--config", DS_OPT_STR, &config, "CONFIG.json|PRESET  config file or preset (tiny, small, base)"},
        {"--out", DS_OPT_STR, &out, "DIR  model folder to write"},
        {"--seed", DS_OPT_INT, &seed, "S  random seed (default 1234)", DS_MIN(0)},
        {"--tokenizer", DS_OPT_STR, &tokp, "PATH  tokenizer.json (or its folder) to put in the folder; a preset takes its vocabulary and BOS/EOS"},
        {"--config-only", DS_OPT_FLAG, &config_only, "write only config.json"},
    };
    ds_cli_parse("init", "--config CONFIG.json|PRESET --out DIR [--seed S] [--tokenizer PATH]", argc, argv, opts,
                 (int)(sizeof opts / sizeof *opts), NULL, 0, NULL);
    if (!config) ds_cli_usage_error("init", "--config is required");
    if (!out) ds_cli_usage_error("init", "--out is required");
    ds_cli_check_config("init", config);
    ds_config c;
    if (ds_file_exists(config)) {
        if (ds_config_load(&c, config) || ds_config_validate(&c, config)) return ds_cli_fail("init");
    } else if (ds_config_is_path(config)) {
        ds_err("%s: No such file or directory", config);
        return ds_cli_fail("init");
    } else if (ds_preset(&c, config) || ds_config_validate(&c, config)) {
        return ds_cli_fail("init");
    }
    if (tokp) {
        ds_tokenizer *t = ds_tokenizer_load(tokp);
        if (!t) return ds_cli_fail("init");
        int64_t tv = ds_tokenizer_vocab_size(t);
        int32_t b = ds_tokenizer_bos_id(t), e = ds_tokenizer_eos_id(t);
        ds_tokenizer_free(t);
        if (!ds_file_exists(config)) {
            c.vocab_size = tv;
            c.bos_token_id = b >= 0 ? b : e;
            c.eos_token_id = e >= 0 ? e : b;
            c.n_eos_token_ids = 0;
            if (ds_config_validate(&c, config)) return ds_cli_fail("init");
        } else if (tv > c.vocab_size) {
            ds_err("%s: the tokenizer has %lld tokens, more than the config's vocab_size %lld", tokp, (long long)tv,
                   (long long)c.vocab_size);
            return ds_cli_fail("init");
        }
    }
    if (config_only) {
        char *p = ds_path_join(out, "config.json");
        int bad = ds_mkdir_p(out) || ds_config_save(&c, p);
        free(p);
        return bad ? ds_cli_fail("init") : 0;
    }
    ds_model m;
    if (ds_model_create(&m, &c)) return ds_cli_fail("init");
    ds_model_init_random(&m, (uint64_t)seed);
    int rc = ds_model_save(&m, out);
    if (!rc && tokp) rc = ds_folder_write_tokenizer(out, tokp, c.max_position_embeddings);
    if (!rc) {
        ds_param_counts pc;
        ds_layout_count(&pc, &m.layout, &c);
        ds_log(DS_LOG_INFO, "wrote %s: %lld parameters (%lld MTP)", out, (long long)pc.total, (long long)pc.mtp);
    }
    ds_model_free(&m);
    return rc ? ds_cli_fail("init") : 0;
}
DS_COMMAND("init", "write a randomly initialised model folder", run)
