/*
 * cmd_generate.c — `dsv3 generate --model DIR --prompt TEXT [--max-new-tokens N] [--min-new-tokens N]
 *   [--temperature T --top-p P --top-k K --min-p P --seed S] [--repetition-penalty R]
 *   [--presence-penalty X] [--frequency-penalty X] [--logit-bias ID:BIAS...] [--stop STR...] [--ignore-eos]
 *   [--json-object | --json-schema FILE | --regex RE] [--tokenizer PATH] [--ids]
 *   [--speculative mtp|ngram [--draft-max K --ngram-min N --ngram-max N]] [--json]`
 * Tokenizes the prompt with DIR/tokenizer.json or --tokenizer (BOS added when
 * its tokenizer_config says so), prints the prompt and streams the
 * continuation as it is generated (KV-cached decoding, infer/), then reports
 * tokens/s on stderr.  --ids: the prompt is token ids (spaces or commas) and
 * the output is the generated ids on one line; no tokenizer is needed.
 * Generation stops after --max-new-tokens (cut, with a note, to what the
 * context leaves), at an EOS id of generation_config.json, config.json or the
 * tokenizer (unless --ignore-eos), or when the text so far contains a --stop
 * string; --min-new-tokens N holds the EOS ids back (their logits -inf) and
 * ignores stop strings until N tokens.  The sampler options are checked
 * before the model is loaded.
 * --json adds a one-line JSON summary on stdout (used by make bench).
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "infer/infer.h"
#include "io/json.h"
#include "model/model.h"
#include "tokenizer/tok_config.h"
#include "tokenizer/tokenizer.h"

typedef struct {
    int ids_mode;
    ds_decode_stream ds;
    ds_strlist stop;
    char *text;  /* generated text so far (for --stop) */
    size_t n, cap;
    int64_t ntok, min_tokens; /* tokens so far; --min-new-tokens: no stop string before it */
    int failed;
} stream_ctx;

static int on_token(void *vctx, int32_t id) {
    stream_ctx *s = vctx;
    const int may_stop = ++s->ntok >= s->min_tokens;
    if (s->ids_mode) {
        printf("%d ", id);
        fflush(stdout);
        return 0;
    }
    size_t len = 0;
    const char *b = ds_decode_stream_next(&s->ds, id, &len);
    if (!b) {
        s->failed = 1;
        return 1;
    }
    fwrite(b, 1, len, stdout);
    fflush(stdout);
    if (s->stop.n) {
        if (s->n + len + 1 > s->cap) {
            s->cap = (s->n + len + 1) * 2;
            s->text = ds_realloc(s->text, s->cap);
        }
        memcpy(s->text + s->n, b, len);
        s->n += len;
        s->text[s->n] = 0;
        for (int i = 0; i < s->stop.n; i++) {
            const char *w = s->stop.v[i];
            size_t sl = strlen(w), old = s->n - len; /* a match must end inside the new bytes */
            if (sl && may_stop && strstr(s->text + (old + 1 >= sl ? old + 1 - sl : 0), w)) return 1;
        }
    }
    return 0;
}

/* "1 2, 3" -> ids; 0 or -1 with ds_err */
static int parse_ids(const char *txt, int64_t V, int32_t **out, int64_t *n) {
    int64_t cap = 64, k = 0;
    int32_t *ids = ds_malloc((size_t)cap * sizeof(int32_t));
    const char *p = txt;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n' || *p == '\r') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno) {
            free(ids);
            return ds_err("--prompt: %s is not a token id (with --ids the prompt is integers)", ds_quote_n(p, strnlen(p, 20)));
        }
        if (v < 0 || v >= V) {
            free(ids);
            return ds_err("--prompt: token id %lld is outside the vocabulary [0, %lld)", v, (long long)V);
        }
        if (k == cap) ids = ds_realloc(ids, (size_t)(cap *= 2) * sizeof(int32_t));
        ids[k++] = (int32_t)v;
        p = end;
    }
    *out = ids;
    *n = k;
    return 0;
}

static void add_eos(int64_t *eos, int *neos, int cap, int64_t id) {
    if (id < 0) return;
    for (int i = 0; i < *neos; i++)
        if (eos[i] == id) return;
    if (*neos < cap) eos[(*neos)++] = id;
}

static int run(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL, *spec = NULL, *tokp = NULL, *device = "cpu", *schema_file = NULL, *regex = NULL;
    ds_strlist stop = {0};
    long long max_new = LLONG_MIN, top_k = 0, seed = 1234, min_new = 0; /* LLONG_MIN: not given, 64 */
    long long draft_max = 0, ngram_min = 0, ngram_max = 0; /* 0: infer.h's defaults */
    double temperature = 0, top_p = 1, min_p = 0, rep_pen = 1, pres_pen = 0, freq_pen = 0;
    ds_strlist bias_arg = {0};
    int ids_mode = 0, ignore_eos = 0, json = 0, dequant = 0, json_object = 0;
    const ds_opt opts[] = {
        {"--model", DS_OPT_STR, &model, "DIR  model folder (config.json, safetensors, tokenizer.json)"},
        {"--prompt", DS_OPT_STR, &prompt, "TEXT  the prompt (token ids with --ids)"},
        {"--tokenizer", DS_OPT_STR, &tokp, "PATH  tokenizer.json or its folder (default: the model folder's)"},
        {"--max-new-tokens", DS_OPT_INT, &max_new, "N  tokens to generate at most (default 64; the context may cut it)"},
        {"--min-new-tokens", DS_OPT_INT, &min_new, "N  no EOS or stop string before N tokens (EOS held back, as transformers' min_new_tokens)", DS_MIN(0)},
        {"--max-tokens", DS_OPT_INT, &max_new, NULL},    /* old spelling */
        {"--sample-tokens", DS_OPT_INT, &max_new, NULL}, /* old spelling */
        {"--temperature", DS_OPT_FLOAT, &temperature, "T  sampling temperature >= 0; 0 = greedy (default)"},
        {"--top-p", DS_OPT_FLOAT, &top_p, "P  nucleus sampling mass in (0, 1] (default 1 = off)"},
        {"--top-k", DS_OPT_INT, &top_k, "K  sample among the K most likely, K >= 0 (default 0 = off)"},
        {"--min-p", DS_OPT_FLOAT, &min_p, "P  drop tokens below P times the top token's probability (default 0 = off)", DS_RANGE(0, 1)},
        {"--repetition-penalty", DS_OPT_FLOAT, &rep_pen, "R  logits of prompt and output tokens / R when > 0, * R else (default 1 = off)", DS_RANGE_OPEN_MIN(0, 1e6)},
        {"--presence-penalty", DS_OPT_FLOAT, &pres_pen, "X  subtracted once from each output token's logit (default 0)", DS_RANGE(-1e6, 1e6)},
        {"--frequency-penalty", DS_OPT_FLOAT, &freq_pen, "X  subtracted per occurrence in the output (default 0)", DS_RANGE(-1e6, 1e6)},
        {"--logit-bias", DS_OPT_MULTI, &bias_arg, "ID:BIAS...  added to token ID's logit (repeatable; -100 bans, 100 forces)"},
        {"--seed", DS_OPT_INT, &seed, "S  sampling seed (default 1234)"},
        {"--stop", DS_OPT_MULTI, &stop, "STR... stop when the generated text contains any STR (repeatable)"},
        {"--ignore-eos", DS_OPT_FLAG, &ignore_eos, "do not stop at EOS"},
        {"--json-object", DS_OPT_FLAG, &json_object, "the output is one JSON object (constrained decoding; ends at its close)"},
        {"--json-schema", DS_OPT_STR, &schema_file, "FILE  the output is one JSON object held to this JSON Schema (docs/serve.md)"},
        {"--regex", DS_OPT_STR, &regex, "RE  the output matches this regex as a whole (Python's re syntax, docs/serve.md)"},
        {"--ids", DS_OPT_FLAG, &ids_mode, "prompt and output are token ids (no tokenizer)"},
        {"--speculative", DS_OPT_STR, &spec, "mtp|ngram  speculative decoding, the same tokens as without (greedy or sampled): "
                                              "MTP drafts, or the tokens after an earlier copy of the text's last n-gram"},
        DS_CLI_NGRAM_OPTS(draft_max, ngram_min, ngram_max),
        {"--json", DS_OPT_FLAG, &json, "print a JSON summary line on stdout at the end"},
        {"--device", DS_OPT_STR, &device, DS_DEVICE_HELP},
        {"--dequant", DS_OPT_FLAG, &dequant, "widen FP8 and BF16 weights to FP32 on load (default: FP8 linears stay FP8, BF16 matmul weights BF16)"},
    };
    const char *usage = "--model DIR --prompt TEXT [--max-new-tokens N --min-new-tokens N --temperature T --top-p P --top-k K --min-p P --seed S] "
                        "[--repetition-penalty R --presence-penalty X --frequency-penalty X --logit-bias ID:BIAS...] "
                        "[--stop STR...] [--json-object | --json-schema FILE | --regex RE] [--tokenizer PATH] [--ids] "
                        "[--speculative mtp|ngram [--draft-max K --ngram-min N --ngram-max N]]";
    const int nopts = (int)(sizeof opts / sizeof opts[0]);
    ds_cli_parse("generate", usage, argc, argv, opts, nopts, NULL, 0, NULL);
    if (!model) ds_cli_usage_error("generate", "--model is required");
    if (!prompt) ds_cli_usage_error("generate", "--prompt is required");
    const int spec_kind = ds_cli_speculative("generate", spec, draft_max, ngram_min, ngram_max);
    const int max_given = max_new != LLONG_MIN;
    if (!max_given) max_new = 64;
    if (max_new < 0) ds_cli_usage_error("generate", "--max-new-tokens must be >= 0 (got %lld)", max_new);
    /* the sampler's ranges, checked before the model is loaded */
    if (!(temperature >= 0) || isinf(temperature))
        ds_cli_usage_error("generate", "--temperature must be a finite number >= 0 (0 = greedy), got %g", temperature);
    if (!(top_p > 0 && top_p <= 1)) ds_cli_usage_error("generate", "--top-p must be in (0, 1], got %g", top_p);
    if (top_k < 0) ds_cli_usage_error("generate", "--top-k must be >= 0 (0 = off), got %lld", top_k);
    if (!!json_object + !!schema_file + !!regex > 1) ds_cli_usage_error("generate", "give one of --json-object, --json-schema and --regex");
    ds_json_schema *rx_check = regex ? ds_json_schema_regex(regex) : NULL; /* checked before the model is loaded */
    if (regex && !rx_check) ds_cli_usage_error("generate", "--regex: %s", ds_errmsg());
    ds_json_schema_free(rx_check);
    static ds_logit_bias bias[DS_MAX_LOGIT_BIAS];
    if (bias_arg.n > DS_MAX_LOGIT_BIAS)
        ds_cli_usage_error("generate", "--logit-bias takes at most %d tokens (got %d)", DS_MAX_LOGIT_BIAS, bias_arg.n);
    for (int i = 0; i < bias_arg.n; i++) {
        const char *a = bias_arg.v[i];
        char *e1 = NULL, *e2 = NULL;
        long long id = strtoll(a, &e1, 10);
        double b = e1 != a && *e1 == ':' ? strtod(e1 + 1, &e2) : NAN;
        if (!e2 || e2 == e1 + 1 || *e2 || id < 0 || id > INT32_MAX || !(fabs(b) <= 1e6))
            ds_cli_usage_error("generate", "--logit-bias: %s is not ID:BIAS (a token id and a finite number, e.g. 42:-100)",
                               ds_quote(a));
        bias[i] = (ds_logit_bias){(int32_t)id, (float)b};
    }
    ds_sample_params sp = {.temperature = temperature, .top_k = top_k, .top_p = top_p, .seed = (uint64_t)seed,
                           .min_p = min_p, .repetition_penalty = rep_pen, .presence_penalty = pres_pen,
                           .frequency_penalty = freq_pen, .bias = bias, .nbias = bias_arg.n, .min_tokens = min_new};
    /* device-resident: the weights, arenas and KV cache in the table's memory */
    const struct ds_ops *ops = ds_cli_device_resident("generate", device);
    if (!*prompt) {
        ds_err("the prompt is empty");
        return ds_cli_fail("generate");
    }
    ds_tokenizer *tok = NULL;
    if (!ids_mode || tokp) {
        char *tp = tokp ? ds_strdup(tokp) : ds_path_join(model, "tokenizer.json");
        if (!tokp && !ds_file_exists(tp)) {
            ds_err("%s: no tokenizer.json in the model folder (give one with --tokenizer, or token ids with --ids)", model);
            free(tp);
            return ds_cli_fail("generate");
        }
        tok = ds_tokenizer_load(tp);
        free(tp);
        if (!tok) return ds_cli_fail("generate");
    }
    ds_model m;
    ds_load_opts lopt = {.fp8_resident = !dequant, .mem = ops->host_visible ? NULL : ops};
    if (ds_model_load_ex(&m, model, &lopt)) {
        ds_tokenizer_free(tok);
        return ds_cli_fail("generate");
    }
    ds_model_log_weight_mem(&m);
    const ds_config *c = &m.cfg;
    int32_t *ids = NULL, *out = NULL;
    int64_t P = 0, nout = 0;
    int rc = 0;
    if (ids_mode) {
        rc = parse_ids(prompt, c->vocab_size, &ids, &P);
    } else {
        int32_t *enc = NULL;
        int64_t n = ds_tokenizer_encode(tok, prompt, strlen(prompt), 1, &enc);
        if (n < 0) rc = -1;
        else {
            int bos = ds_tokenizer_add_bos(tok) && ds_tokenizer_bos_id(tok) >= 0;
            ids = ds_malloc((size_t)(n + 1) * sizeof(int32_t));
            if (bos) ids[P++] = ds_tokenizer_bos_id(tok);
            memcpy(ids + P, enc, (size_t)n * sizeof(int32_t));
            P += n;
            free(enc);
            for (int64_t i = 0; i < P && !rc; i++)
                if (ids[i] >= c->vocab_size)
                    rc = ds_err("tokenizer.json gives id %d, beyond the model's vocab_size %lld", ids[i],
                                (long long)c->vocab_size);
        }
    }
    if (!rc && P == 0) rc = ds_err("the prompt is empty");
    if (!rc && P >= c->max_position_embeddings)
        rc = ds_err("the prompt has %lld tokens; the model takes at most %lld positions (max_position_embeddings)",
                    (long long)P, (long long)c->max_position_embeddings);
    /* stop ids: generation_config.json's, config.json's and the tokenizer's EOS */
    int64_t eos[24], geos[8];
    int neos = 0, ngeos = 0;
    if (!ignore_eos) {
        if (!rc) rc = ds_generation_config_eos(model, geos, 8, &ngeos);
        for (int i = 0; i < ngeos; i++) add_eos(eos, &neos, 24, geos[i]);
        for (int i = 0; i < c->n_eos_token_ids; i++) add_eos(eos, &neos, 24, c->eos_token_ids[i]);
        if (c->n_eos_token_ids <= 1) add_eos(eos, &neos, 24, c->eos_token_id);
        if (tok) add_eos(eos, &neos, 24, ds_tokenizer_eos_id(tok));
    }
    /* the context bounds the new tokens: say so once (when asked for more), and allocate only for what fits */
    if (!rc && P + max_new > c->max_position_embeddings) {
        int64_t room = c->max_position_embeddings - P;
        if (max_given)
            fprintf(stderr, "dsv3 generate: --max-new-tokens %lld cut to %lld: the %lld-token prompt leaves room for %lld "
                    "(max_position_embeddings %lld)\n", max_new, (long long)room, (long long)P, (long long)room,
                    (long long)c->max_position_embeddings);
        max_new = room;
    }
    stream_ctx sc = {.ids_mode = ids_mode, .stop = stop, .min_tokens = min_new};
    int32_t held[24]; /* --min-new-tokens holds back the stop ids */
    for (int i = 0; i < neos; i++)
        if (eos[i] >= 0 && eos[i] < c->vocab_size) held[sp.nstop_ids++] = (int32_t)eos[i];
    sp.stop_ids = held;
    if (tok) ds_decode_stream_init(&sc.ds, tok, 1);
    /* --json-object / --json-schema / --regex: the guide over the tokenizer's bytes */
    ds_json_guide *guide = NULL;
    ds_json_schema *schema = NULL;
    if (!rc && (json_object || schema_file || regex)) {
        if (!tok) rc = ds_err("--json-object, --json-schema and --regex need the tokenizer (give --tokenizer with --ids)");
        if (!rc && regex) schema = ds_json_schema_regex(regex);
        if (!rc && schema_file) {
            size_t n;
            char *txt = ds_read_file(schema_file, &n);
            cJSON *sj = txt ? ds_json_parse(txt, n, schema_file) : NULL;
            free(txt);
            schema = sj ? ds_json_schema_compile(sj) : NULL;
            if (sj && !schema) ds_err_prefix("%s", schema_file);
            cJSON_Delete(sj);
            if (!schema) rc = -1;
        }
        if (!rc) guide = ds_json_guide_new(tok, c->vocab_size);
        sp.guide = guide, sp.schema = schema;
    }
    ds_gen_stats st;
    memset(&st, 0, sizeof st);
    if (!rc) {
        if (!ids_mode) {
            fwrite(prompt, 1, strlen(prompt), stdout);
            fflush(stdout);
        }
        ds_gen_opts o = {
            .max_tokens = max_new,
            .sp = sp,
            .eos = eos, .neos = neos, .speculative = spec_kind,
            .draft_max = (int)draft_max, .ngram_min = (int)ngram_min, .ngram_max = (int)ngram_max,
        };
        ds_sampler probe; /* validate the sampling options before any work */
        rc = ds_sampler_init(&probe, ops, &o.sp, c->vocab_size);
        if (!rc) ds_sampler_free(&probe);
        out = ds_malloc((size_t)(max_new + 1) * sizeof(int32_t));
        if (!rc) rc = ds_generate(&m, ops, ids, P, &o, out, &nout, on_token, &sc, &st);
        if (sc.failed) rc = -1;
        if (tok) {
            size_t len = 0;
            const char *b = ds_decode_stream_flush(&sc.ds, &len);
            if (b) fwrite(b, 1, len, stdout);
        }
        printf("\n");
        fflush(stdout);
    }
    if (!rc) {
        double tps = st.decode_s > 0 ? (double)(st.new_tokens > 1 ? st.new_tokens - 1 : 0) / st.decode_s : 0;
        fprintf(stderr, "dsv3 generate: prompt %lld tokens in %.3f s (%.1f tokens/s); %lld new tokens, %.2f tokens/s",
                (long long)P, st.prefill_s, st.prefill_s > 0 ? P / st.prefill_s : 0, (long long)st.new_tokens, tps);
        if (spec)
            fprintf(stderr, "; %s drafts accepted %lld/%lld (%.1f%%), %lld verify steps", spec_kind == DS_SPEC_MTP ? "MTP" : "n-gram",
                    (long long)st.accepted,
                    (long long)st.drafted, st.drafted ? 100.0 * st.accepted / st.drafted : 0.0, (long long)st.steps);
        fprintf(stderr, "%s\n", st.stopped == 1 ? (guide && ignore_eos ? " (the JSON closed)" : " (stopped at EOS)")
                                 : st.stopped == 2 ? " (stop string)" : "");
        if (json)
            printf("{\"impl\": \"dsv3%s\", \"threads\": %d, \"prompt_tokens\": %lld, \"new_tokens\": %lld, "
                   "\"prefill_s\": %.6f, \"decode_s\": %.6f, \"tokens_per_s\": %.2f, \"drafted\": %lld, "
                   "\"accepted\": %lld}\n",
                   spec_kind == DS_SPEC_MTP ? "-mtp" : spec_kind == DS_SPEC_NGRAM ? "-ngram" : "", ds_threads(), (long long)P, (long long)st.new_tokens, st.prefill_s, st.decode_s,
                   tps, (long long)st.drafted, (long long)st.accepted);
    }
    free(sc.text);
    ds_json_guide_free(guide);
    ds_json_schema_free(schema);
    free(stop.v), free(bias_arg.v);
    free(ids);
    free(out);
    ds_tokenizer_free(tok);
    ds_model_free(&m);
    return rc ? ds_cli_fail("generate") : 0;
}
DS_COMMAND("generate", "generate text (or token ids) with KV-cached decoding, optionally speculative (MTP or n-gram)", run)
