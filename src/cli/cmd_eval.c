/*
 * cmd_eval.c — `dsv3 eval`: score a model on evaluation tasks as lm-evaluation-harness does.
 *   dsv3 eval --model DIR --task SPEC [--task SPEC ...] [--limit N] [--batch B] [--out results.json]
 * Task SPECs are described in src/eval/eval.h (and `dsv3 eval --help`).  The model folder
 * is bound to the ds_lm interface (src/eval/lm.h) by eval_bind_model below.
 */
#include "cli/cli.h"
#include "eval/eval.h"
#include "model/model.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Bind a model folder (config.json + safetensors + tokenizer.json) to a ds_lm
 * (src/eval/lm_model.c), or the built-in byte-level uniform model. */
static int eval_bind_model(const char *dir, int64_t max_length, int dequant, ds_lm *lm) {
    if (!strcmp(dir, "builtin:uniform-bytes")) {
        ds_lm_uniform_bytes(lm, max_length);
        return 0;
    }
    ds_load_opts o = {.fp8_resident = !dequant};
    return ds_lm_from_model_dir_ex(lm, dir, max_length, &o);
}

static const char *USAGE =
    "--model DIR --task SPEC [--task SPEC ...] [options]\n\n"
    "Task SPEC: a name, or KIND:FILE[#opt=value,...]\n"
    "  piqa, arc_easy, hellaswag   multiple choice (acc, acc_norm, acc_bytes), lm-eval prompts\n"
    "  lambada                     LAMBADA-OpenAI last word (perplexity, acc = greedy match), as lm-eval\n"
    "  lambada_gen                 LAMBADA by greedy generation: first generated word = the last word\n"
    "  wikitext2                   WikiText-2 articles, rolling windows (bits_per_byte, byte/word/token perplexity)\n"
    "  mc:FILE.jsonl   {query, choices, gold} | {context_options, continuation, gold}; FILE.txt: HellaSwag 6-line\n"
    "  ll:FILE.jsonl   {context, continuation}: log-likelihood of the continuation\n"
    "  lm:FILE.txt     raw text: bits per byte and perplexities\n"
    "  gen:FILE.jsonl  {prompt, answer}: greedy generation, exact match\n"
    "  options: name=NAME  prompt=qa|raw (mc: qa builds \"<query>\\nAnswer:\")  delim=TEXT (default ' ')\n"
    "           docs=file|lines|wikitext  detok=wikitext|none  stride=N (lm: sliding window, N new tokens per window)\n"
    "           until=S1|S2 (gen stop sequences, \\n escapes; default \\n\\n)  max_new=N (256)  extract=none|last_number|first_word\n"
    "           limit=N (first N documents of this task, overrides --limit)\n"
    "Named tasks read files under --data (default $DS_SHARED/data or ../shared/data).\n"
    "--model builtin:uniform-bytes is a byte-level uniform model (bits per byte = 8).";

static int run_eval(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *samples = NULL, *data = NULL, *on_error = "stop";
    long long limit = 0, batch = 1, max_length = 0;
    int no_progress = 0, dequant = 0;
    ds_strlist specs = {0};
    ds_opt opts[] = {
        {"--model", DS_OPT_STR, &model, "DIR  model folder (or builtin:uniform-bytes)"},
        {"--task", DS_OPT_MULTI, &specs, "SPEC...  tasks to run (repeatable)"},
        {"--limit", DS_OPT_INT, &limit, "N  first N examples of each task (default: all)"},
        {"--batch", DS_OPT_INT, &batch, "B  requests per model call (default 1; a document's choices always go in one call)"},
        {"--out", DS_OPT_STR, &out, "FILE  results JSON (every metric and its stderr)"},
        {"--samples", DS_OPT_STR, &samples, "FILE  per-example results, JSONL"},
        {"--max-length", DS_OPT_INT, &max_length, "N  context window in tokens (default: the model's)"},
        {"--on-error", DS_OPT_STR, &on_error, "stop|skip  a malformed example stops the run or is skipped"},
        {"--data", DS_OPT_STR, &data, "DIR  data folder for named tasks"},
        {"--no-progress", DS_OPT_FLAG, &no_progress, "no progress bar"},
        {"--dequant", DS_OPT_FLAG, &dequant, "widen FP8 and BF16 weights to FP32 on load (default: FP8 linears stay FP8, BF16 matmul weights BF16)"},
    };
    int nopts = (int)(sizeof opts / sizeof *opts);
    ds_cli_parse("eval", USAGE, argc, argv, opts, nopts, NULL, 0, NULL);
    if (!model) ds_cli_usage_error("eval", "--model is required");
    if (specs.n == 0) ds_cli_usage_error("eval", "at least one --task is required");
    if (batch < 1) ds_cli_usage_error("eval", "--batch must be at least 1");
    if (limit < 0) ds_cli_usage_error("eval", "--limit must not be negative");
    if (max_length < 0) ds_cli_usage_error("eval", "--max-length must not be negative");
    if (strcmp(on_error, "stop") && strcmp(on_error, "skip"))
        ds_cli_usage_error("eval", "--on-error must be stop or skip");

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

    int n = specs.n, rc = 1, loaded = 0, ran = 0;
    ds_task *tasks = ds_calloc((size_t)n, sizeof *tasks);
    ds_task_result *res = ds_calloc((size_t)n, sizeof *res);
    ds_lm lm = {0};
    ds_afile af = {0};
    int have_af = 0;
    for (; loaded < n; loaded++)
        if (ds_task_load(&tasks[loaded], specs.v[loaded], &o)) { loaded++; goto done; }
    if (eval_bind_model(model, max_length, dequant, &lm)) goto done;
    if (samples) {
        if (ds_afile_open(&af, samples)) goto done;
        have_af = 1;
    }
    for (; ran < n; ran++)
        if (ds_task_run(&tasks[ran], &lm, &o, have_af ? af.f : NULL, &res[ran])) { ran++; goto done; }
    ds_eval_print_table(stdout, tasks, res, n);
    fflush(stdout);
    if (have_af) {
        have_af = 0;
        if (ds_afile_commit(&af)) goto done;
    }
    if (out && ds_eval_write_json(out, &lm, model, &o, tasks, res, n)) goto done;
    rc = 0;
done:
    if (rc) ds_cli_fail("eval");
    if (have_af) ds_afile_abort(&af);
    for (int i = 0; i < ran; i++) ds_task_result_free(&res[i]);
    for (int i = 0; i < loaded; i++) ds_task_free(&tasks[i]);
    if (lm.free) lm.free(lm.ctx);
    free(res);
    free(tasks);
    free(specs.v);
    return rc;
}

DS_COMMAND("eval", "evaluate a model: bits per byte, multiple choice, generation (lm-eval scoring)", run_eval)
