/*
 * cmd_ablate.c — `dsv3 ablate --data DIR --preset tiny --minutes M --what
 * balance|mtp|precision --out DIR`: trains the variants the DeepSeek papers
 * compare, each from the same seed on the same data order and the same number
 * of tokens, evaluates them, and writes one comparison page (dsv3 report).
 *
 *   balance    aux-loss-free bias (DeepSeek-V3) vs DeepSeek-V2's auxiliary
 *              losses vs no balancing
 *   mtp        MTP depth 1 (λ 0.3) vs no MTP; the MTP-speculative decoding
 *              acceptance rate of the trained model beside DeepSeek-V3's
 *              85-90% for the second token
 *   precision  fp32 vs bf16 vs fp8; the FP8 loss gap to BF16 against 0.25%
 *
 * Budget: the first variant trains for --minutes M; the others the same
 * number of steps (so the same tokens), whatever time that takes.
 */
#define _GNU_SOURCE /* nftw */
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/base.h"
#include "base/quote.h"
#include "cli/cli.h"
#include "cli/train_hooks.h"
#include "io/json.h"
#include "model/model.h"
#include "train/loader.h"

static const char *const g_what[] = {"balance", "mtp", "precision"};

typedef struct {
    const char *name;
    int balance, precision;
    double mtp_lambda;
    const char *desc;
} variant;

static const variant g_variants[3][3] = {
    {{"aux-free", DS_TRAIN_AUX_FREE, DS_PREC_FP32, 0.3, "--balance aux-free"},
     {"aux-loss", DS_TRAIN_AUX_LOSS, DS_PREC_FP32, 0.3, "--balance aux-loss (DeepSeek-V2 losses)"},
     {"none", DS_TRAIN_BAL_NONE, DS_PREC_FP32, 0.3, "--balance none"}},
    {{"mtp-1", DS_TRAIN_AUX_FREE, DS_PREC_FP32, 0.3, "MTP depth 1, --mtp-lambda 0.3"},
     {"mtp-0", DS_TRAIN_AUX_FREE, DS_PREC_FP32, 0.0, "no MTP, --mtp-lambda 0"},
     {NULL, 0, 0, 0, NULL}},
    {{"fp32", DS_TRAIN_AUX_FREE, DS_PREC_FP32, 0.3, "--precision fp32"},
     {"bf16", DS_TRAIN_AUX_FREE, DS_PREC_BF16, 0.3, "--precision bf16"},
     {"fp8", DS_TRAIN_AUX_FREE, DS_PREC_FP8, 0.3, "--precision fp8"}},
};

/* A shell word for popen. */
static void sh_word(ds_sbuf *b, const char *s) {
    ds_sbuf_puts(b, " '");
    for (const char *c = s; *c; c++) {
        if (*c == '\'') ds_sbuf_puts(b, "'\\''");
        else ds_sbuf_put(b, c, 1);
    }
    ds_sbuf_puts(b, "'");
}

/* Runs this dsv3 binary with args (NULL-terminated); its stdout into *out
 * (malloc'ed) when out != NULL.  Returns the exit status. */
static int self_run(const char *const *args, char **out) {
    ds_sbuf b = {0};
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = 0;
    sh_word(&b, exe);
    char th[32];
    snprintf(th, sizeof th, "%d", ds_threads());
    sh_word(&b, "--threads"), sh_word(&b, th);
    for (int i = 0; args[i]; i++) sh_word(&b, args[i]);
    ds_sbuf_puts(&b, out ? " 2>/dev/null" : " >/dev/null");
    char *cmd = ds_sbuf_take(&b);
    FILE *p = popen(cmd, "r");
    free(cmd);
    if (!p) return -1;
    ds_sbuf o = {0};
    char buf[4096];
    size_t r;
    while ((r = fread(buf, 1, sizeof buf, p)) > 0) ds_sbuf_put(&o, buf, r);
    int st = pclose(p);
    char *t = ds_sbuf_take(&o);
    if (out) *out = t ? t : ds_strdup("");
    else free(t);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The last record of train_log.jsonl holding key, as parsed JSON (caller deletes). */
static cJSON *last_record(const char *run, const char *key) {
    char *p = ds_path_join(run, "train_log.jsonl");
    size_t len;
    char *s = ds_read_file(p, &len);
    free(p);
    cJSON *best = NULL;
    for (char *line = s ? strtok(s, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        if (!strstr(line, key)) continue;
        cJSON *j = cJSON_Parse(line);
        if (j && cJSON_GetObjectItemCaseSensitive(j, key)) {
            cJSON_Delete(best);
            best = j;
        } else {
            cJSON_Delete(j);
        }
    }
    free(s);
    return best;
}

static double num(const cJSON *j, const char *key) {
    const cJSON *v = j ? cJSON_GetObjectItemCaseSensitive(j, key) : NULL;
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static void put_num(ds_sbuf *b, const char *key, double v) {
    ds_sbuf_printf(b, ", \"%s\": ", key);
    if (isfinite(v)) ds_json_put_double(b, v);
    else ds_sbuf_puts(b, "null");
}

/* MTP draft acceptance on the validation text, teacher-forced: at each
 * position i (true tokens up to i+1 given), the MTP module's top token for
 * t_{i+2} against the main model's greedy prediction of t_{i+2} at i+1 — what
 * greedy speculative decoding accepts.  Over up to `batches` batches of
 * (B, T); -1 with ds_err on failure, else the percentage in *pct. */
static int mtp_agreement(const char *model_dir, const char *device, const char *data, int64_t B, int64_t T,
                         int64_t batches, double *pct, int64_t *n_out) {
    /* device-resident: the model and its logits in the table's memory, the
     * greedy tokens by the table's argmax */
    const struct ds_ops *ops = ds_backend_get_resident(device);
    if (!ops) return -1;
    ds_model m;
    ds_load_opts lopt = {.mem = ops->host_visible ? NULL : ops};
    if (ds_model_load_ex(&m, model_dir, &lopt)) return -1;
    int rc = -1;
    ds_loader va;
    if (ds_loader_open(&va, data, "val", B, T, 1234, 0, 0, 1, 0)) {
        ds_model_free(&m);
        return -1;
    }
    ds_acts a;
    if (ds_acts_create(&a, &m, B, T, 1)) goto out;
    if (!a.mtp) {
        ds_err("%s: the model has no MTP module", model_dir);
        ds_acts_free(&a);
        goto out;
    }
    int32_t *win = ds_malloc(sizeof(int32_t) * (size_t)(B * (T + 1))), *ids = ds_malloc(sizeof(int32_t) * (size_t)(B * T));
    int32_t *dtok = ds_malloc(sizeof(int32_t) * (size_t)(B * T)), *gtok = ds_malloc(sizeof(int32_t) * (size_t)(B * T));
    int64_t V = m.cfg.vocab_size, agree = 0, n = 0;
    if (batches <= 0 || batches > va.nbatches) batches = va.nbatches;
    rc = 0;
    for (int64_t bt = 0; bt < batches && !rc; bt++) {
        ds_loader_next(&va, win);
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < T; t++) ids[b * T + t] = win[b * (T + 1) + t];
        if (ds_model_forward(&m, &a, ops, ids)) {
            rc = -1;
            break;
        }
        /* mtp_logits[0]: (B, T-1, V), row i predicts t_{i+2}; logits (B, T, V) */
        ops->argmax_rows(dtok, a.mtp_logits[0], B * (T - 1), V);
        ops->argmax_rows(gtok, a.logits, B * T, V);
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i + 1 < T - 1; i++) agree += dtok[b * (T - 1) + i] == gtok[b * T + i + 1], n++;
    }
    free(win), free(ids), free(dtok), free(gtok);
    ds_acts_free(&a);
    *pct = n ? 100.0 * (double)agree / (double)n : NAN;
    *n_out = n;
out:
    ds_loader_close(&va);
    ds_model_free(&m);
    return rc;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f) {
    (void)st, (void)flag, (void)f;
    return remove(p);
}

/* Steps of --minutes M: a 4-step probe run of the first variant (into
 * OUT/.probe, removed after) times a step; every variant then runs that many
 * steps with the same schedule. */
static int64_t calibrate(const ds_train_opts *first, const char *out, double minutes) {
    ds_train_opts o = *first;
    char *probe = ds_path_join(out, ".probe");
    o.out = probe, o.steps = 4, o.minutes = 0, o.eval_every = 0, o.log_every = 0, o.on_step = NULL;
    o.save_every = 0, o.keep = 1;
    int64_t steps = -1;
    if (ds_train(&o) == 0) {
        double per = 0;
        int n = 0;
        char *p = ds_path_join(probe, "train_log.jsonl");
        size_t len;
        char *s = ds_read_file(p, &len);
        free(p);
        for (char *line = s ? strtok(s, "\n") : NULL; line; line = strtok(NULL, "\n")) {
            cJSON *j = cJSON_Parse(line);
            double st = num(j, "step"), tps = num(j, "tokens_per_s");
            if (st >= 2 && tps > 0) per += (double)(o.batch * o.seq * o.accum) / tps, n++; /* step 1 warms caches */
            cJSON_Delete(j);
        }
        free(s);
        if (n > 0) {
            per /= n;
            steps = (int64_t)(minutes * 60.0 / per);
            if (steps < 1) steps = 1;
            fprintf(stderr, "dsv3 ablate: probe: %.3f s/step -> %lld steps of each variant in %.1f min\n", per,
                    (long long)steps, minutes);
        } else {
            ds_err("the probe run logged no timed step");
        }
    }
    nftw(probe, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(probe);
    return steps;
}

static int run(int argc, char **argv) {
    const char *data = NULL, *preset = "tiny", *what = NULL, *out = NULL, *prompts = NULL, *device = "cpu";
    double minutes = 0;
    long long steps = 0, batch = 8, seq = 128, seed = 1234, eval_every = 50, eval_batches = 0, gen_tokens = 48;
    ds_strlist tasks = {0};
    double lr = 3e-3, gamma = 0.001;
    const ds_opt opts[] = {
        {"--data", DS_OPT_STR, &data, "DIR  token shards (dsv3 data prepare) (required)"},
        {"--preset", DS_OPT_STR, &preset, "PRESET|config.json  the model of every variant (default tiny)"},
        {"--what", DS_OPT_STR, &what, "balance|mtp|precision  what to compare (required)"},
        {"--out", DS_OPT_STR, &out, "DIR  one run folder per variant and report.html (default ablate-WHAT)"},
        {"--minutes", DS_OPT_FLOAT, &minutes, "M  the first variant trains M minutes, the others as many steps", DS_GT(0)},
        {"--steps", DS_OPT_INT, &steps, "N  steps of every variant (instead of --minutes)", DS_MIN(1)},
        {"--batch", DS_OPT_INT, &batch, "B  sequences per step (default 8)", DS_RANGE(1, 1 << 20)},
        {"--seq", DS_OPT_INT, &seq, "T  tokens per sequence (default 128)", DS_RANGE(2, 1 << 24)},
        {"--lr", DS_OPT_FLOAT, &lr, "LR  peak learning rate (default 3e-3)", DS_GT(0)},
        {"--bias-gamma", DS_OPT_FLOAT, &gamma, "G  aux-loss-free bias speed (default 0.001)", DS_MIN(0)},
        {"--seed", DS_OPT_INT, &seed, "S  the seed of every variant (default 1234)", DS_MIN(0)},
        {"--eval-every", DS_OPT_INT, &eval_every, "N  validation every N steps (default 50)", DS_MIN(0)},
        {"--eval-batches", DS_OPT_INT, &eval_batches, "N  validation batches (default 0 = the whole split)", DS_MIN(0)},
        {"--task", DS_OPT_MULTI, &tasks, "T ...  also `dsv3 eval` tasks on each trained model (e.g. hellaswag)"},
        {"--prompts", DS_OPT_STR, &prompts, "P1|P2  prompts of the MTP acceptance measure (--what mtp)"},
        {"--gen-tokens", DS_OPT_INT, &gen_tokens, "N  tokens generated per prompt for it (default 48)", DS_RANGE(2, 4096)},
        {"--device", DS_OPT_STR, &device, DS_DEVICE_HELP " (training, the MTP measures, eval)"},
    };
    ds_cli_parse("ablate", "--data DIR --what balance|mtp|precision --minutes M|--steps N [--preset tiny] [--out DIR]",
                 argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, NULL);
    if (!data) ds_cli_usage_error("ablate", "--data DIR is required");
    if (!what) ds_cli_usage_error("ablate", "--what balance|mtp|precision is required");
    ds_cli_check_choice("ablate", "--what: unknown value", what, g_what, 3);
    if (!(minutes > 0) && !steps) ds_cli_usage_error("ablate", "a budget is required: --minutes M or --steps N");
    if (minutes > 0 && steps) ds_cli_usage_error("ablate", "give --minutes or --steps, not both");
    ds_cli_check_config("ablate", preset);
    ds_cli_device_resident("ablate", device); /* every variant runs device-resident (one process) */
    int w = !strcmp(what, "balance") ? 0 : !strcmp(what, "mtp") ? 1 : 2;
    char outbuf[512];
    if (!out) snprintf(outbuf, sizeof outbuf, "ablate-%s", what), out = outbuf;
    int nv = 0;
    while (nv < 3 && g_variants[w][nv].name) nv++;
    char *runs[3];
    for (int i = 0; i < nv; i++) {
        runs[i] = ds_path_join(out, g_variants[w][i].name);
        if (ds_file_exists(runs[i]))
            ds_cli_usage_error("ablate", "%s exists: give another --out, or remove it", ds_quote(runs[i]));
    }
    if (ds_mkdir_p(out)) return ds_cli_fail("ablate");

    ds_sbuf vj = {0};
    int64_t fixed_steps = steps;
    if (!fixed_steps) { /* --minutes: the steps of every variant, from a probe of the first */
        ds_train_opts o = ds_train_opts_default();
        const variant *v = &g_variants[w][0];
        o.config = preset, o.data = data, o.batch = batch, o.seq = seq, o.seed = (uint64_t)seed, o.lr = lr;
        o.min_lr = lr / 10, o.gamma = gamma, o.balance = v->balance, o.precision = v->precision;
        o.mtp_lambda = v->mtp_lambda, o.device = device;
        fixed_steps = calibrate(&o, out, minutes);
        if (fixed_steps < 1) return ds_cli_fail("ablate");
    }
    double secs[3] = {0};
    int rc = 0;
    for (int i = 0; i < nv && !rc; i++) {
        const variant *v = &g_variants[w][i];
        ds_train_opts o = ds_train_opts_default();
        o.config = preset, o.data = data, o.out = runs[i];
        o.batch = batch, o.seq = seq, o.seed = (uint64_t)seed, o.lr = lr, o.min_lr = lr / 10, o.gamma = gamma;
        o.balance = v->balance, o.precision = v->precision, o.mtp_lambda = v->mtp_lambda;
        o.eval_every = eval_every, o.eval_batches = eval_batches, o.log_every = 0;
        o.steps = fixed_steps, o.device = device;
        fprintf(stderr, "dsv3 ablate: %s (%d/%d): %s, %lld steps\n", v->name, i + 1, nv, v->desc, (long long)fixed_steps);
        ds_train_hooks h = {0};
        h.report = 1, h.label = v->name;
        ds_train_hooks_attach(&h, &o);
        double t0 = ds_now();
        if (ds_train(&o) || ds_train_hooks_end(&h)) {
            rc = ds_err_prefix("variant %s", v->name);
            break;
        }
        secs[i] = ds_now() - t0;
        cJSON *lt = last_record(runs[i], "loss"), *lv = last_record(runs[i], "val_loss");
        ds_sbuf_printf(&vj, "%s{\"variant\": ", i ? ",\n" : "");
        ds_json_put_string(&vj, v->name);
        ds_sbuf_puts(&vj, ", \"run\": ");
        ds_json_put_string(&vj, runs[i]);
        ds_sbuf_puts(&vj, ", \"options\": ");
        ds_json_put_string(&vj, v->desc);
        put_num(&vj, "steps", num(lt, "step"));
        put_num(&vj, "tokens", num(lt, "tokens"));
        put_num(&vj, "seconds", secs[i]);
        put_num(&vj, "final_train_loss", num(lt, "loss"));
        put_num(&vj, "val_loss", num(lv, "val_loss"));
        put_num(&vj, "val_bpb", num(lv, "val_bpb"));
        put_num(&vj, "val_maxvio", num(lv, "val_maxvio"));
        cJSON_Delete(lt), cJSON_Delete(lv);
        char *model = ds_path_join(runs[i], "latest");
        if (w == 1) { /* MTP speculative acceptance of the trained model */
            double acc = NAN;
            if (v->mtp_lambda > 0) {
                long long drafted = 0, accepted = 0;
                char *ps = ds_strdup(prompts ? prompts : "The|And|In the|What is|He said"), *save = NULL;
                char nt[32];
                snprintf(nt, sizeof nt, "%lld", gen_tokens);
                for (char *pr = strtok_r(ps, "|", &save); pr; pr = strtok_r(NULL, "|", &save)) {
                    const char *args[] = {"generate", "--model", model, "--prompt", pr, "--max-new-tokens", nt,
                                          "--temperature", "0", "--speculative", "mtp", "--ignore-eos", "--json",
                                          "--device", device, NULL};
                    char *text = NULL;
                    if (self_run(args, &text) == 0) {
                        const char *js = strrchr(text, '{');
                        cJSON *j = js ? cJSON_Parse(js) : NULL;
                        drafted += (long long)num(j, "drafted"), accepted += (long long)num(j, "accepted");
                        cJSON_Delete(j);
                    }
                    free(text);
                }
                free(ps);
                if (drafted > 0) acc = 100.0 * (double)accepted / (double)drafted;
                fprintf(stderr, "dsv3 ablate: %s: MTP drafts accepted %lld/%lld\n", v->name, accepted, drafted);
            }
            double agr = NAN;
            int64_t npos = 0;
            if (v->mtp_lambda > 0) {
                if (mtp_agreement(model, device, data, batch, seq, 16, &agr, &npos))
                    fprintf(stderr, "dsv3 ablate: %s: warning: MTP agreement not measured: %s\n", v->name, ds_errmsg());
                else
                    fprintf(stderr, "dsv3 ablate: %s: MTP draft = main model's greedy token at %.1f%% of %lld validation "
                            "positions\n", v->name, agr, (long long)npos);
            }
            put_num(&vj, "mtp_acceptance_val_pct", agr);
            put_num(&vj, "mtp_acceptance_generated_pct", acc);
            ds_sbuf_puts(&vj, v->mtp_lambda > 0 ? ", \"deepseek_v3_reported\": \"85-90%\"" : ", \"deepseek_v3_reported\": null");
        }
        if (tasks.n) {
            char *res = ds_path_join(runs[i], "eval.json");
            const char *args[64] = {"eval", "--model", model, "--out", res, "--device", device, "--task"};
            int na = 8;
            for (int k = 0; k < tasks.n && na < 62; k++) args[na++] = tasks.v[k];
            args[na] = NULL;
            fprintf(stderr, "dsv3 ablate: %s: dsv3 eval\n", v->name);
            if (self_run(args, NULL) != 0) fprintf(stderr, "dsv3 ablate: %s: warning: dsv3 eval failed\n", v->name);
            free(res);
        }
        ds_sbuf_puts(&vj, "}");
        free(model);
    }
    char *vtext = ds_sbuf_take(&vj);
    if (!rc) {
        static const char *const titles[] = {"load balancing — aux-loss-free vs auxiliary losses vs none",
                                             "multi-token prediction — depth 1 vs none",
                                             "precision — fp32 vs bf16 vs fp8"};
        ds_sbuf a = {0};
        ds_sbuf_printf(&a, "{\"baseline\": %s, \"what\": ", w == 2 ? "\"bf16\"" : "null");
        ds_json_put_string(&a, what);
        ds_sbuf_puts(&a, ", \"title\": ");
        ds_json_put_string(&a, titles[w]);
        char setup[1024];
        snprintf(setup, sizeof setup,
                 "preset %s, data %s, seed %lld, batch %lld x %lld tokens, %lld steps each (%s), same schedule; "
                 "peak lr %g, %d threads; validation on %s",
                 preset, data, seed, batch, seq, (long long)fixed_steps,
                 minutes > 0 ? "--minutes for one variant, timed by a 4-step probe" : "--steps", lr, ds_threads(),
                 eval_batches ? "the first --eval-batches batches" : "the whole validation split");
        ds_sbuf_puts(&a, ", \"setup\": ");
        ds_json_put_string(&a, setup);
        ds_sbuf_printf(&a, ", \"variants\": [%s]", vtext ? vtext : "");
        ds_sbuf_puts(&a, ", \"notes\": [");
        if (w == 0)
            ds_sbuf_puts(&a, "\"DeepSeek-V3 (Table 5): the aux-loss-free strategy matches or beats the auxiliary-loss "
                             "baseline on quality while keeping the experts balanced (lower MaxVio).\"");
        else if (w == 1)
            ds_sbuf_puts(&a, "\"DeepSeek-V3 §5.4.1: MTP improves quality at equal tokens; used as a speculative "
                             "drafter, its second-token prediction is accepted 85-90% of the time. Equal tokens here: "
                             "the MTP variant spends more compute per step (see seconds).\", "
                             "\"mtp acceptance val: on the validation text, teacher-forced, the share of positions where "
                             "the MTP module's token for t+2 is the main model's greedy token for t+2 (what greedy "
                             "speculative decoding accepts). mtp acceptance generated: drafts accepted by `dsv3 generate "
                             "--speculative mtp` from --prompts (a small model's greedy text repeats itself, which "
                             "inflates it).\"");
        else
            ds_sbuf_puts(&a, "\"DeepSeek-V3 §3.3: FP8 training stays within 0.25% relative loss of BF16.\"");
        ds_sbuf_puts(&a, "]}");
        char *ab = ds_sbuf_take(&a);
        char *page = ds_path_join(out, "report.html");
        const char *labels[3], *rr[3];
        for (int i = 0; i < nv; i++) labels[i] = g_variants[w][i].name, rr[i] = runs[i];
        ds_report_opts ro = {0};
        char title[128];
        snprintf(title, sizeof title, "dsv3 ablation: %s", what);
        ro.title = title, ro.labels = labels, ro.ablation_json = ab;
        ro.baseline = w == 2 ? "bf16" : NULL;
        /* the summary beside the runs: `dsv3 report --ablation OUT/ablation.json` remakes the page */
        char *apath = ds_path_join(out, "ablation.json");
        rc = ds_write_file_atomic(apath, ab, strlen(ab));
        free(apath);
        if (!rc) rc = ds_report_write(rr, nv, &ro, page);
        if (!rc) fprintf(stderr, "dsv3 ablate: wrote %s\n", page);
        free(page), free(ab);
    }
    free(vtext);
    for (int i = 0; i < nv; i++) free(runs[i]);
    free(tasks.v);
    return rc ? ds_cli_fail("ablate") : 0;
}
DS_COMMAND("ablate", "train the variants DeepSeek compares (balance, MTP, precision) and write one report", run)
