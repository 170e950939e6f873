/*
 * cmd_serve.c — `dsv3 serve --model DIR [--host 127.0.0.1] [--port 8080]
 *   [--max-batch N] [--ctx T] [--api-key KEY] [--speculative mtp|ngram] ...`: the OpenAI-compatible
 * server (src/serve/).  Loads the model, its tokenizer and chat template
 * (checked here, before anything listens), starts the continuous-batching
 * scheduler and serves until SIGINT/SIGTERM.  Built only with libmicrohttpd;
 * without it the command says so and exits 1.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "model/model.h"
#include "serve/chat_cfg.h"
#include "serve/tools.h"
#include "serve/serve.h"
#include "tokenizer/tok_config.h"
#include "tokenizer/tokenizer.h"

static int run(int argc, char **argv) {
    const char *model = NULL, *host = "127.0.0.1", *api_key = NULL, *tokp = NULL, *tmplf = NULL, *spec = NULL;
    const char *device = "cpu", *name = NULL, *tparser = "auto";
    long long port = 8080, max_batch = 8, ctx = 0, max_queue = 64, max_body = 1 << 20, timeout = 30, chunk = 256;
    long long max_conn = 256, pbatch = 0, cache_rows = 0, rstore = 256;
    long long draft_max = 0, ngram_min = 0, ngram_max = 0; /* 0: infer.h's defaults */
    double grace = 10;
    int dequant = 0, no_prefix = 0;
    const ds_opt opts[] = {
        {"--model", DS_OPT_STR, &model, "DIR  model folder (config.json, safetensors, tokenizer.json)"},
        {"--host", DS_OPT_STR, &host, "ADDR  address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)"},
        {"--port", DS_OPT_INT, &port, "N  TCP port (default 8080; 0: any free port, printed)", DS_RANGE(0, 65535)},
        {"--max-batch", DS_OPT_INT, &max_batch, "N  sequences decoded together (default 8)", DS_RANGE(1, 1024)},
        {"--ctx", DS_OPT_INT, &ctx, "T  positions per sequence, prompt + completion (default: max_position_embeddings, at most 4096)", DS_MIN(2)},
        {"--api-key", DS_OPT_STR, &api_key, "KEY  require 'Authorization: Bearer KEY' on /v1/* (default: $DSV3_API_KEY, else none)"},
        {"--max-queue", DS_OPT_INT, &max_queue, "N  requests waiting for a slot before 503 (default 64)", DS_RANGE(1, 1 << 20)},
        {"--max-body", DS_OPT_INT, &max_body, "BYTES  request body limit (default 1048576)", DS_RANGE(64, 1LL << 32)},
        {"--timeout", DS_OPT_INT, &timeout, "S  idle connection timeout in seconds (default 30)", DS_RANGE(1, 86400)},
        {"--max-connections", DS_OPT_INT, &max_conn, "N  open connections at most (default 256)", DS_RANGE(1, 65536)},
        {"--prefill-chunk", DS_OPT_INT, &chunk, "N  prompt tokens per scheduler step (default 256)", DS_RANGE(2, 1 << 20)},
        {"--prefill-batch", DS_OPT_INT, &pbatch, "N  prompts prefilled in one forward at most (default: --max-batch; 1: one at a time)", DS_RANGE(1, 1024)},
        {"--responses-store", DS_OPT_INT, &rstore, "N  Responses API answers kept in memory for previous_response_id and GET /v1/responses/ID, the oldest dropped first (default 256; 0: none)", DS_RANGE(0, 1 << 20)},
        {"--cache-rows", DS_OPT_INT, &cache_rows, "N  KV cache rows (default --max-batch): rows beyond --max-batch keep more prompts' prefixes for reuse (each row: --ctx positions of the latent cache)", DS_RANGE(1, 65536)},
        {"--no-prefix-cache", DS_OPT_FLAG, &no_prefix, "prefill every prompt whole (default: start from the longest prefix a cache row holds)"},
        {"--shutdown-grace", DS_OPT_FLOAT, &grace, "S  on SIGINT/SIGTERM, seconds for running requests to finish (default 10)", DS_RANGE(0, 3600)},
        {"--model-name", DS_OPT_STR, &name, "NAME  the model id /v1/models reports (default: the folder's name)"},
        {"--tokenizer", DS_OPT_STR, &tokp, "PATH  tokenizer.json or its folder (default: the model folder's)"},
        {"--chat-template", DS_OPT_STR, &tmplf, "FILE  a Jinja chat template replacing tokenizer_config.json's"},
        {"--tool-parser", DS_OPT_STR, &tparser, "auto|deepseek_v3|hermes|none  how chat answers write tool calls (default auto: the format the chat template names)"},
        {"--speculative", DS_OPT_STR, &spec, "mtp|ngram  requests decode with MTP drafts, or the tokens after an earlier copy of their text's last n-gram, "
                                              "verified in the batched step (the same tokens as without)"},
        DS_CLI_NGRAM_OPTS(draft_max, ngram_min, ngram_max),
        {"--device", DS_OPT_STR, &device, DS_DEVICE_HELP},
        {"--dequant", DS_OPT_FLAG, &dequant, "widen FP8 and BF16 weights to FP32 on load"},
    };
    const char *usage = "--model DIR [--host 127.0.0.1] [--port 8080] [--max-batch N] [--ctx T] [--api-key KEY] [--speculative mtp|ngram]";
    ds_cli_parse("serve", usage, argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, NULL);
    if (!model) ds_cli_usage_error("serve", "--model is required");
    const int spec_kind = ds_cli_speculative("serve", spec, draft_max, ngram_min, ngram_max);
    int tool_format = strcmp(tparser, "auto") ? ds_tool_format_from_name(tparser) : -2;
    if (tool_format == -1)
        ds_cli_usage_error("serve", "--tool-parser: unknown format %s (known: auto, deepseek_v3, hermes, none)", ds_quote(tparser));
    /* device-resident: the weights, arenas and both KV caches in the table's memory */
    const struct ds_ops *ops = ds_cli_device_resident("serve", device);
    if (!ds_serve_available()) {
        ds_serve_http(NULL);
        return ds_cli_fail("serve");
    }
    if (!api_key) api_key = getenv("DSV3_API_KEY");
    if (api_key && !*api_key) api_key = NULL;
    char *tp = tokp ? ds_strdup(tokp) : ds_path_join(model, "tokenizer.json");
    if (!ds_file_exists(tp) && !tokp) {
        ds_err("%s: no tokenizer.json in the model folder (give one with --tokenizer)", model);
        free(tp);
        return ds_cli_fail("serve");
    }
    ds_tokenizer *tok = ds_tokenizer_load(tp);
    char *tcfg = ds_tokenizer_config_path_of(tp);
    free(tp);
    if (!tok) {
        free(tcfg);
        return ds_cli_fail("serve");
    }
    ds_chat_cfg cc;
    if (ds_chat_cfg_load(&cc, tcfg, tmplf)) {
        free(tcfg);
        ds_tokenizer_free(tok);
        return ds_cli_fail("serve");
    }
    if (!cc.tmpl) fprintf(stderr, "dsv3 serve: %s has no chat_template: /v1/chat/completions will answer 400\n", tcfg);
    free(tcfg);
    if (tool_format == -2) tool_format = cc.tool_format;
    if (tool_format != DS_TOOLS_NONE)
        fprintf(stderr, "dsv3 serve: tool calls in the %s format%s\n", ds_tool_format_name(tool_format),
                strcmp(tparser, "auto") ? "" : " (the chat template's; --tool-parser to change)");
    ds_model m;
    ds_load_opts lopt = {.fp8_resident = !dequant, .mem = ops->host_visible ? NULL : ops};
    if (ds_model_load_ex(&m, model, &lopt)) {
        ds_chat_cfg_free(&cc);
        ds_tokenizer_free(tok);
        return ds_cli_fail("serve");
    }
    const ds_config *c = &m.cfg;
    int rc = 0;
    if (!ctx) ctx = c->max_position_embeddings < 4096 ? c->max_position_embeddings : 4096;
    if (ctx > c->max_position_embeddings)
        rc = ds_err("--ctx %lld is beyond the model's max_position_embeddings %lld", ctx, (long long)c->max_position_embeddings);
    int64_t eos[32];
    int neos = 0;
    if (!rc && spec_kind == DS_SPEC_MTP && c->num_nextn_predict_layers < 1)
        rc = ds_err("%s: --speculative mtp needs a model with an MTP module (num_nextn_predict_layers is 0)", model);
    if (!rc) rc = ds_model_stop_ids(model, &m, tok, eos, 32, &neos);
    ds_sched *sc = NULL;
    if (!rc) {
        ds_sched_opts so = {.max_batch = (int)max_batch, .ctx = ctx, .prefill_chunk = chunk, .max_queue = (int)max_queue,
                              .prefill_batch = (int)pbatch, .speculative = spec_kind, .prefix_cache = !no_prefix,
                              .cache_rows = (int)cache_rows, .draft_max = (int)draft_max, .ngram_min = (int)ngram_min,
                              .ngram_max = (int)ngram_max};
        sc = ds_sched_create(&m, ops, tok, &so, eos, neos);
        if (!sc) rc = -1;
    }
    if (!rc) {
        const char *base = strrchr(model, '/');
        char mname[256];
        snprintf(mname, sizeof mname, "%s", base && base[1] ? base + 1 : model);
        ds_serve_cfg cfg = {
            .host = host, .port = (int)port, .api_key = api_key, .max_body = max_body, .timeout_s = (int)timeout,
            .max_conn = (int)max_conn, .shutdown_grace_s = grace, .model_name = name ? name : mname, .sched = sc,
            .tok = tok, .tmpl = cc.tmpl, .bos = cc.bos, .eos = cc.eos, .add_bos = ds_tokenizer_add_bos(tok),
            .tool_format = tool_format,
            .ctx = ctx, .vocab = c->vocab_size, .max_batch = (int)max_batch, .responses_store = (int)rstore,
        };
        rc = ds_serve_http(&cfg);
        if (spec) {
            ds_sched_stats st;
            ds_sched_get_stats(sc, &st);
            fprintf(stderr, "dsv3 serve: speculative %s: %llu draft tokens, %llu accepted (acceptance %.1f%%)\n", spec,
                    (unsigned long long)st.drafted, (unsigned long long)st.accepted,
                    st.drafted ? 100.0 * (double)st.accepted / (double)st.drafted : 0.0);
        }
    }
    ds_sched_free(sc);
    ds_model_free(&m);
    ds_chat_cfg_free(&cc);
    ds_tokenizer_free(tok);
    return rc ? ds_cli_fail("serve") : 0;
}
DS_COMMAND("serve", "OpenAI-compatible HTTP server (completions, chat, streaming) with continuous batching", run)
