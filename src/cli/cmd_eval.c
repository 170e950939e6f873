/*
 * cmd_eval.c — `dsv3 eval`: score a model on evaluation tasks as lm-evaluation-harness does.
 *   dsv3 eval --model DIR --task SPEC [--task SPEC ...] [--limit N] [--batch B] [--add-bos] [--out results.json]
 * Task SPECs are described in src/eval/eval.h (and `dsv3 eval --help`).  The model folder
 * is bound to the ds_lm interface (src/eval/lm.h) by eval_bind_model below.
 */
#include "cli/cli.h"
#include "eval/eval.h"
#include "model/model.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Bind a model folder (config.json + safetensors + tokenizer.json, or the tokenizer
 * given) to a ds_lm (src/eval/lm_model.c), or the built-in byte-level uniform model. */
static int eval_bind_model(const char *dir, const char *tokenizer, int64_t max_length, int dequant,
                           const struct ds_ops *ops, ds_lm *lm) {
    if (!strcmp(dir, "builtin:uniform-bytes")) {
        ds_lm_uniform_bytes(lm, max_length);
        return 0;
    }
    /* device-resident: the weights and arenas in the table's memory */
    ds_load_opts o = {.fp8_resident = !dequant, .mem = ops->host_visible ? NULL : ops};
    return ds_lm_from_model_dir_ex(lm, dir, tokenizer, max_length, &o, ops);
}

static const char *USAGE =
    "--model DIR --task SPEC [--task SPEC ...] [options]\n\n"
    "Task SPEC: a name as lm-eval spells it, or KIND:FILE[#opt=value,...]\n"
    "  piqa, arc_easy, arc_challenge, hellaswag   multiple choice (acc, acc_norm, acc_bytes), lm-eval prompts\n"
    "  winogrande                  WinoGrande, lm-eval's partial scoring (acc)\n"
    "  lambada_openai (lambada)    LAMBADA-OpenAI last word (perplexity, acc = greedy match), as lm-eval\n"
    "  lambada_gen                 LAMBADA by greedy generation: first generated word = the last word\n"
    "  wikitext (wikitext2)        WikiText-2 articles, rolling windows (bits_per_byte, byte/word/token perplexity)\n"
    "  mc:FILE.jsonl   {query, choices, gold} | {context_options, continuation, gold} | {sentence, option1, option2, answer}\n"
    "                  (WinoGrande); FILE.txt: HellaSwag 6-line\n"
    "  ll:FILE.jsonl   {context, continuation}: log-likelihood of the continuation\n"
    "  lm:FILE.txt     raw text: bits per byte and perplexities\n"
    "  gen:FILE.jsonl  {prompt, answer}: greedy generation, exact match\n"
    "  options: name=NAME  prompt=qa|raw (mc: qa builds \"<query>\\nAnswer:\")  delim=TEXT (default ' ')\n"
    "           docs=file|lines|wikitext  detok=wikitext|none  stride=N (lm: sliding window, N new tokens per window)\n"
    "           until=S1|S2 (gen stop sequences, \\n escapes; default \\n\\n)  max_new_tokens=N (256)  extract=none|last_number|first_word\n"
    "           limit=N (first N documents of this task, overrides --limit)  add_bos=1|0 (overrides --add-bos)\n"
    "Named tasks read files under --data (default $DS_SHARED/data or ../shared/data): llm_foundry_icl/{piqa,arc_easy,\n"
    "arc_challenge,winogrande,lambada_openai}.jsonl, hellaswag/hellaswag_val_full.txt, wikitext2/wiki.test.raw.\n"
    "BOS: by default text is tokenized as lm-eval's `--model hf` does without add_bos_token (transformers 5.x: only\n"
    "tokenizer.json's post-processor; tokenizer_config.json's add_bos_token is not applied, so DeepSeek-V3 gets no BOS);\n"
    "--add-bos is lm-eval's --model_args add_bos_token=True.\n"
    "A task that fails is reported and the others still run; their results are written and the exit status is 1.\n"
    "--model builtin:uniform-bytes is a byte-level uniform model (bits per byte = 8).";

#define MAX_BATCH 1048576LL
#define MAX_LIMIT 1000000000000LL

static int run_eval(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *samples = NULL, *data = NULL, *on_error = "stop", *tokenizer = NULL;
    const char *device = "cpu";
    long long limit = 0, batch = 1, max_length = 0;
    int no_progress = 0, dequant = 0, add_bos = 0;
    ds_strlist specs = {0};
    ds_opt opts[] = {
        {"--model", DS_OPT_STR, &model, "DIR  model folder (or builtin:uniform-bytes)"},
        {"--task", DS_OPT_MULTI, &specs, "SPEC...  tasks to run (repeatable)"},
        {"--tokenizer", DS_OPT_STR, &tokenizer, "FILE  tokenizer.json (or its folder) when the model folder has none, e.g. one made by dsv3 init"},
        {"--limit", DS_OPT_INT, &limit, "N  first N examples of each task (0 or absent: all)"},
        {"--batch", DS_OPT_INT, &batch, "B  requests per model call, 1..1048576 (default 1; a document's choices always go in one call)"},
        {"--add-bos", DS_OPT_FLAG, &add_bos, "prepend BOS to every context and document, as lm-eval's add_bos_token=True (default: as lm-eval's default)"},
        {"--out", DS_OPT_STR, &out, "FILE  results JSON (every metric and its stderr)"},
        {"--samples", DS_OPT_STR, &samples, "FILE  per-example results, JSONL"},
        {"--max-length", DS_OPT_INT, &max_length, "N  context window in tokens (default: the model's)"},
        {"--on-error", DS_OPT_STR, &on_error, "stop|skip  a malformed example stops its task or is skipped (counted)"},
        {"--data", DS_OPT_STR, &data, "DIR  data folder for named tasks"},
        {"--no-progress", DS_OPT_FLAG, &no_progress, "no progress bar"},
        {"--device", DS_OPT_STR, &device, DS_DEVICE_HELP},
        {"--dequant", DS_OPT_FLAG, &dequant, "widen FP8 and BF16 weights to FP32 on load (default: FP8 linears stay FP8, BF16 matmul weights BF16)"},
    };
    int nopts = (int)(sizeof opts / sizeof *opts);
    ds_cli_parse("eval", USAGE, argc, argv, opts, nopts, NULL, 0, NULL);
    if (!model) ds_cli_usage_error("eval", "--model is required");
    if (specs.n == 0) ds_cli_usage_error("eval", "at least one --task is required");
    if (batch < 1 || batch > MAX_BATCH) ds_cli_usage_error("eval", "--batch %lld is out of range (1..%lld)", batch, MAX_BATCH);
    if (limit < 0 || limit > MAX_LIMIT)
        ds_cli_usage_error("eval", "--limit %lld is out of range (0..%lld; 0 = all examples)", limit, MAX_LIMIT);
    if (max_length < 0 || max_length > 16777216)
        ds_cli_usage_error("eval", "--max-length %lld is out of range (1..16777216, or 0 = the model's)", max_length);
    if (strcmp(on_error, "stop") && strcmp(on_error, "skip"))
        ds_cli_usage_error("eval", "--on-error %s: expected stop or skip", ds_quote(on_error));
    const struct ds_ops *ops = ds_cli_device_resident("eval", device);

    char data_buf[4096];
    if (!data) {
        const char *sh = getenv("DS_SHARED");
        snprintf(data_buf, sizeof data_buf, "%s/data", sh ? sh : "../shared");
        data = data_buf;
    }
    ds_eval_opts o;
    ds_eval_opts_default(&o);
    o.limit = limit;
    o.batch = batch;
    o.on_error = strcmp(on_error, "skip") ? DS_ON_ERROR_STOP : DS_ON_ERROR_SKIP;
    o.progress = !no_progress && isatty(2);
    o.data_dir = data;
    o.add_bos = add_bos;

    int n = specs.n, rc = 1;
    ds_task *tasks = ds_calloc((size_t)n, sizeof *tasks);
    ds_task_result *res = ds_calloc((size_t)n, sizeof *res);
    char **errors = ds_calloc((size_t)n, sizeof *errors); /* per task: its error, or NULL */
    /* every SPEC is checked before anything runs: a bad name or option is a usage error */
    for (int i = 0; i < n; i++) {
        ds_task t;
        int bad = ds_task_parse_spec(&t, specs.v[i], data);
        ds_task_free(&t);
        if (bad) ds_cli_usage_error("eval", "%s", ds_errmsg());
    }
    ds_lm lm = {0};
    ds_afile af = {0};
    int have_af = 0, failed = 0;
    if (eval_bind_model(model, tokenizer, max_length, dequant, ops, &lm)) goto done;
    if (samples) {
        if (ds_afile_open(&af, samples)) goto done;
        have_af = 1;
    }
    /* a task that fails (its file, or scoring) is reported; the others still run */
    for (int i = 0; i < n; i++) {
        /* a task's samples go to the file only when the task completes */
        FILE *tf = have_af ? tmpfile() : NULL;
        if (have_af && !tf) { ds_err("--samples: cannot create a temporary file"); goto done; }
        int bad = ds_task_load(&tasks[i], specs.v[i], &o) || ds_task_run(&tasks[i], &lm, &o, tf, &res[i]);
        if (tf) {
            if (!bad) {
                char buf[65536];
                size_t k;
                rewind(tf);
                while ((k = fread(buf, 1, sizeof buf, tf)) > 0) fwrite(buf, 1, k, af.f);
            }
            fclose(tf);
        }
        if (bad) {
            errors[i] = ds_strdup(ds_errmsg());
            fflush(stdout);
            fprintf(stderr, "dsv3 eval: %s\n", errors[i]);
            ds_task_result_free(&res[i]);
            failed++;
        }
    }
    if (failed < n) {
        ds_eval_print_table(stdout, tasks, res, n, (const char *const *)errors);
        fflush(stdout);
    }
    if (have_af) {
        have_af = 0;
        if (ds_afile_commit(&af)) goto done;
    }
    if (out && failed < n && ds_eval_write_json(out, &lm, model, &o, tasks, res, n, (const char *const *)errors)) goto done;
    if (failed) {
        ds_err("%d of %d task%s failed", failed, n, n == 1 ? "" : "s");
        goto done;
    }
    rc = 0;
done:
    if (rc) {
        if (failed == 1 && n == 1) fflush(stdout); /* its one line was printed already */
        else ds_cli_fail("eval");
    }
    if (have_af) ds_afile_abort(&af);
    for (int i = 0; i < n; i++) {
        ds_task_result_free(&res[i]);
        ds_task_free(&tasks[i]);
        free(errors[i]);
    }
    if (lm.free) lm.free(lm.ctx);
    free(errors);
    free(res);
    free(tasks);
    free(specs.v);
    return rc;
}

DS_COMMAND("eval", "evaluate a model: bits per byte, multiple choice, generation (lm-eval scoring)", run_eval)
