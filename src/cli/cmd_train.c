/*
 * cmd_train.c — `dsv3 train`: train (or resume) a DeepSeek-V3-style model on
 * token shards (src/train/trainer.h).
 *
 * --resume restores every option that shapes the run (precision, schedule,
 * balance, MTP λ, seed, batches, ...) from RUN/latest; one given again with
 * another value is a usage error, unless --override is given (then it is
 * logged, and kept in the next checkpoints).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "dist/comm.h"
#include "dist/ep.h"
#include "cli/train_hooks.h"
#include "train/trainer.h"
#include "train/checkpoint.h"
#include "train/pp_sched.h"
#include "base/base.h"
#include "model/presets.h"

static const char *const g_prec[] = {"fp32", "bf16", "fp8"};
static const char *const g_bal[] = {"aux-free", "aux-loss", "none"};

/* One option a resume restores. */
typedef struct {
    const char *name;  /* "--lr" */
    const void *given; /* the parse destination (ds_cli_given) */
    char kind;         /* 'd' double, 'i' int64_t, 'n' int (flag), 'u' uint64_t, 'p' precision, 'b' balance */
    void *cur;         /* in the options passed to ds_train */
    const void *saved; /* in the run's saved options */
    int fixed;         /* cannot change, even with --override */
    int from_state;    /* known also for checkpoints without train_options */
} restored;

static void fmt(char *buf, size_t cap, char kind, const void *p) {
    switch (kind) {
    case 'd': snprintf(buf, cap, "%.17g", *(const double *)p); break;
    case 'i': snprintf(buf, cap, "%lld", (long long)*(const int64_t *)p); break;
    case 'n': snprintf(buf, cap, "%s", *(const int *)p ? "on" : "off"); break;
    case 'u': snprintf(buf, cap, "%llu", (unsigned long long)*(const uint64_t *)p); break;
    case 'p': snprintf(buf, cap, "%s", g_prec[*(const int *)p]); break;
    default: snprintf(buf, cap, "%s", g_bal[*(const int *)p]); break;
    }
}

static void copy_val(char kind, void *dst, const void *src) {
    size_t n = kind == 'd' ? sizeof(double) : kind == 'i' ? sizeof(int64_t) : kind == 'u' ? sizeof(uint64_t) : sizeof(int);
    memcpy(dst, src, n);
}

/* Shortest text that reads back as the same double (for messages). */
static void short_double(char *buf, size_t cap, const char *full) {
    double v = atof(full);
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (atof(buf) == v) return;
    }
}

/* --pp S [--pp-layers a,b,...] --micro-batches M against the model, the
 * processes and the batch: a usage error (exit 2, one line) when they do
 * not fit */
static void check_pp(const ds_train_opts *o) {
    const int S = o->pp, M = o->micro_batches;
    if (S <= 1) {
        if (o->pp_layers) ds_cli_usage_error("train", "--pp-layers needs --pp S (S > 1)");
        return;
    }
    if (M < S) ds_cli_usage_error("train", "--micro-batches %d: 1F1B needs at least --pp %d micro-batches", M, S);
    ds_config c;
    int bad;
    if (o->resume) {
        char *dir = ds_ckpt_latest(o->resume);
        char *cj = dir ? ds_path_join(dir, "config.json") : NULL;
        bad = !cj || ds_config_load(&c, cj);
        free(dir), free(cj);
    } else {
        bad = ds_config_is_path(o->config) ? ds_config_load(&c, o->config) : ds_preset(&c, o->config);
    }
    if (bad) exit(ds_cli_fail("train"));
    int64_t first[65];
    if (S > 64) ds_cli_usage_error("train", "--pp %d: at most 64 stages", S);
    if (ds_pp_split(&c, S, o->pp_layers, o->seq, first)) ds_cli_usage_error("train", "%s", ds_errmsg());
    const int P = ds_comm_world()->size;
    if (P % S) ds_cli_usage_error("train", "--pp %d does not divide the %d processes", S, P);
    const int Q = P / S;
    if (o->batch % Q || (o->batch / Q) % M)
        ds_cli_usage_error("train", "--batch %lld: each of the %d processes of a stage takes an equal slice of "
                           "%d micro-batches (--batch a multiple of %d)", (long long)o->batch, Q, M, Q * M);
    if (o->ep > 0 && Q % o->ep) ds_cli_usage_error("train", "--ep %d does not divide the %d processes of a pipeline stage", o->ep, Q);
}

static int run(int argc, char **argv) {
    ds_train_opts o = ds_train_opts_default();
    const char *precision = "fp32", *balance = "aux-free", *prompts = NULL;
    long long steps = 0, tokens = 0, batch = o.batch, seq = o.seq, accum = o.accum, warmup = o.warmup;
    long long eval_every = o.eval_every, eval_batches = o.eval_batches, save_every = 0, keep = o.keep;
    long long seed = (long long)o.seed, stop_after = 0, log_every = o.log_every, max_new = o.sample_tokens;
    int skip = 0, m16 = 0, cache = 0, override = 0, report = 0;
    const char *tensorboard = NULL;
    long long ep = 0, rpn = 0, pp = 0, micro = 0;
    const char *dispatch = "fp32";
    static const char *const g_disp[] = {"fp32", "bf16", "fp8"};
    const ds_opt opts[] = {
        {"--config", DS_OPT_STR, &o.config, "PRESET|config.json  model (new run; presets: tiny, small, base)"},
        {"--data", DS_OPT_STR, &o.data, "DIR  output of `dsv3 data prepare`"},
        {"--out", DS_OPT_STR, &o.out, "RUN  run folder (checkpoints, train_log.jsonl)"},
        {"--resume", DS_OPT_STR, &o.resume, "RUN  continue RUN from RUN/latest with its options (bit-exact)"},
        {"--override", DS_OPT_FLAG, &override, "  with --resume: options given with other values than the run's replace them"},
        {"--steps", DS_OPT_INT, &steps, "N  total optimizer steps", DS_MIN(0)},
        {"--tokens", DS_OPT_INT, &tokens, "N  total training tokens", DS_MIN(0)},
        {"--minutes", DS_OPT_FLOAT, &o.minutes, "M  wall-clock budget (steps fixed after timing 3 steps)", DS_MIN(0)},
        {"--batch", DS_OPT_INT, &batch, "B  sequences per micro-batch (default 8)", DS_RANGE(1, 1 << 20)},
        {"--seq", DS_OPT_INT, &seq, "T  tokens per sequence (default 128)", DS_RANGE(2, 1 << 24)},
        {"--grad-accum", DS_OPT_INT, &accum, "A  micro-batches per step (default 1)", DS_RANGE(1, 1 << 20)},
        {"--precision", DS_OPT_STR, &precision, "fp32|bf16|fp8  GEMM inputs (default fp32; bf16/fp8: FP32 sums and master weights)"},
        {"--device", DS_OPT_STR, &o.device, DS_DEVICE_HELP},
        {"--balance", DS_OPT_STR, &balance, "aux-free|aux-loss|none  load balancing (default aux-free)"},
        {"--bias-gamma", DS_OPT_FLOAT, &o.gamma, "G  bias update speed γ (default 0.001)", DS_MIN(0)},
        {"--gamma-until", DS_OPT_FLOAT, &o.gamma_until, "F  γ is 0 after this fraction of the run (default 0.97)", DS_RANGE(0, 1)},
        {"--seq-aux-alpha", DS_OPT_FLOAT, &o.seq_alpha, "A  sequence-wise balance loss with aux-free (default 0)", DS_MIN(0)},
        {"--mtp-lambda", DS_OPT_FLOAT, &o.mtp_lambda, "L  MTP loss weight (default 0.3; 0 = off)", DS_MIN(0)},
        {"--lr", DS_OPT_FLOAT, &o.lr, "LR  peak learning rate (default 3e-3)", DS_GT(0)},
        {"--min-lr", DS_OPT_FLOAT, &o.min_lr, "LR  after the cosine decay (default 3e-4)", DS_MIN(0)},
        {"--warmup", DS_OPT_INT, &warmup, "N  linear warm-up steps (default 20)", DS_MIN(0)},
        {"--decay-start", DS_OPT_FLOAT, &o.decay_start, "F  cosine decay from this fraction of the run (0.5)", DS_RANGE(0, 1)},
        {"--weight-decay", DS_OPT_FLOAT, &o.weight_decay, "W  AdamW weight decay (default 0.1)", DS_MIN(0)},
        {"--clip", DS_OPT_FLOAT, &o.clip, "N  gradient-norm clipping (default 1; 0 = off)", DS_MIN(0)},
        {"--bf16-moments", DS_OPT_FLAG, &m16, "  AdamW moments in BF16"},
        {"--fp8-cache", DS_OPT_FLAG, &cache, "  with --precision fp8: keep linear inputs for the weight gradients in FP8"},
        {"--eval-every", DS_OPT_INT, &eval_every, "N  validation every N steps (default 100; 0 = end only)", DS_MIN(0)},
        {"--eval-batches", DS_OPT_INT, &eval_batches, "N  validation batches (default 16; 0 = all)", DS_MIN(0)},
        {"--save-every", DS_OPT_INT, &save_every, "N  checkpoint every N steps (default: end only)", DS_MIN(0)},
        {"--keep", DS_OPT_INT, &keep, "K  checkpoints kept (default 2; 0 = all)", DS_MIN(0)},
        {"--seed", DS_OPT_INT, &seed, "S  initialisation and data order (default 1234)", DS_MIN(0)},
        {"--skip-nonfinite", DS_OPT_FLAG, &skip, "  skip steps with a NaN/Inf loss instead of stopping"},
        {"--stop-after", DS_OPT_INT, &stop_after, "N  end this invocation after step N (resume later)", DS_MIN(0)},
        {"--profile", DS_OPT_FLAG, &o.profile, "  time each ops entry: a table of a step's kernels at the end"},
        {"--log-every", DS_OPT_INT, &log_every, "N  one line every N steps (default 1; 0 = none)", DS_MIN(0)},
        {"--sample", DS_OPT_STR, &prompts, "P1|P2  prompts to continue after training"},
        {"--max-new-tokens", DS_OPT_INT, &max_new, "N  tokens per sample (default 64)", DS_RANGE(0, 1 << 20)},
        {"--sample-tokens", DS_OPT_INT, &max_new, NULL, DS_RANGE(0, 1 << 20)}, /* old name */
        {"--temperature", DS_OPT_FLOAT, &o.temperature, "T  sampling temperature (default 0.8; 0 = greedy)", DS_MIN(0)},
        {"--ep", DS_OPT_INT, &ep, "E  under mpirun: routed experts split over groups of E processes (default: none)",
         DS_RANGE(1, 1 << 20)},
        {"--dispatch-precision", DS_OPT_STR, &dispatch, "fp32|bf16|fp8  with --ep: rows sent to the experts' owners (default fp32)"},
        {"--ranks-per-node", DS_OPT_INT, &rpn, "N  with --ep: count routing per simulated node of N processes (default: real nodes)",
         DS_RANGE(0, 1 << 20)},
        {"--pp", DS_OPT_INT, &pp, "S  under mpirun: the layers split into S pipeline stages (1F1B; default: none)",
         DS_RANGE(1, 64)},
        {"--pp-layers", DS_OPT_STR, &o.pp_layers, "a,b,...  with --pp: main layers per stage (default: balanced by cost)"},
        {"--micro-batches", DS_OPT_INT, &micro, "M  with --pp: micro-batches per batch (default S; M >= S)", DS_RANGE(1, 1 << 20)},
        {"--report", DS_OPT_FLAG, &report, "  write RUN/report.html at every evaluation (dsv3 report)"},
        {"--tensorboard", DS_OPT_STR, &tensorboard, "DIR  TensorBoard event files of the logged scalars in DIR"},
    };
    const int nopt = (int)(sizeof opts / sizeof opts[0]);
    ds_cli_parse("train", "--config PRESET|config.json --data DIR --out RUN --steps N|--tokens N|--minutes M [...]",
                 argc, argv, opts, nopt, NULL, 0, NULL);
    ds_cli_check_choice("train", "--precision: unknown value", precision, g_prec, 3);
    ds_cli_check_choice("train", "--balance: unknown value", balance, g_bal, 3);
    ds_cli_device_check("train", o.device); /* the trainer says which table it takes */
    for (int i = 0; i < 3; i++) {
        if (!strcmp(precision, g_prec[i])) o.precision = i;
        if (!strcmp(balance, g_bal[i])) o.balance = i;
    }
    ds_cli_check_choice("train", "--dispatch-precision: unknown value", dispatch, g_disp, 3);
    if (ds_cli_given(&dispatch) && !ep) ds_cli_usage_error("train", "--dispatch-precision needs --ep E");
    o.ep = (int)ep, o.dispatch = ds_ep_precision_from_name(dispatch), o.ranks_per_node = (int)rpn;
    if (!o.data) ds_cli_usage_error("train", "--data DIR is required");
    if (!o.out && !o.resume) ds_cli_usage_error("train", "--out RUN (or --resume RUN) is required");
    if (!o.resume && !o.config) ds_cli_usage_error("train", "--config PRESET|config.json is required");
    if (override && !o.resume) ds_cli_usage_error("train", "--override needs --resume");
    if (!o.resume && !steps && !tokens && !(o.minutes > 0))
        ds_cli_usage_error("train", "a budget is required: --steps N, --tokens N or --minutes M");
    if (!o.resume) ds_cli_check_config("train", o.config);
    o.steps = steps, o.tokens = tokens, o.batch = batch, o.seq = seq, o.accum = accum, o.warmup = warmup;
    o.eval_every = eval_every, o.eval_batches = eval_batches, o.save_every = save_every, o.keep = keep;
    o.seed = (uint64_t)seed, o.stop_after = stop_after, o.log_every = log_every, o.sample_tokens = max_new;
    o.skip_nonfinite = skip, o.bf16_moments = m16, o.fp8_cache = cache, o.sample_prompts = prompts;

    char overrides[2048] = "{";
    if (o.resume) {
        ds_train_opts sv;
        int has_json;
        int64_t threads, step;
        if (ds_train_saved_opts(o.resume, &sv, &has_json, &threads, &step)) return ds_cli_fail("train");
        if (o.config && (!sv.config || strcmp(o.config, sv.config)))
            ds_cli_usage_error("train", "--resume %s: the model comes from the checkpoint%s%s%s; drop --config", o.resume,
                               sv.config ? " (a run of --config " : "", sv.config ? sv.config : "", sv.config ? ")" : "");
        o.config = sv.config;
        const restored r[] = {
            {"--precision", &precision, 'p', &o.precision, &sv.precision, 0, 0},
            {"--balance", &balance, 'b', &o.balance, &sv.balance, 0, 0},
            {"--bias-gamma", &o.gamma, 'd', &o.gamma, &sv.gamma, 0, 1},
            {"--gamma-until", &o.gamma_until, 'd', &o.gamma_until, &sv.gamma_until, 0, 1},
            {"--seq-aux-alpha", &o.seq_alpha, 'd', &o.seq_alpha, &sv.seq_alpha, 0, 0},
            {"--mtp-lambda", &o.mtp_lambda, 'd', &o.mtp_lambda, &sv.mtp_lambda, 0, 0},
            {"--lr", &o.lr, 'd', &o.lr, &sv.lr, 0, 1},
            {"--min-lr", &o.min_lr, 'd', &o.min_lr, &sv.min_lr, 0, 1},
            {"--warmup", &warmup, 'i', &o.warmup, &sv.warmup, 0, 1},
            {"--decay-start", &o.decay_start, 'd', &o.decay_start, &sv.decay_start, 0, 1},
            {"--weight-decay", &o.weight_decay, 'd', &o.weight_decay, &sv.weight_decay, 0, 0},
            {"--clip", &o.clip, 'd', &o.clip, &sv.clip, 0, 0},
            {"--fp8-cache", &cache, 'n', &o.fp8_cache, &sv.fp8_cache, 0, 0},
            {"--seed", &seed, 'u', &o.seed, &sv.seed, 0, 0},
            /* the moments' dtype and the batches: fixed by what was saved */
            {"--bf16-moments", &m16, 'n', &o.bf16_moments, &sv.bf16_moments, 1, 0},
            {"--batch", &batch, 'i', &o.batch, &sv.batch, 1, 1},
            {"--seq", &seq, 'i', &o.seq, &sv.seq, 1, 1},
            {"--grad-accum", &accum, 'i', &o.accum, &sv.accum, 1, 1},
        };
        size_t olen = 1;
        for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) {
            int known = has_json || r[i].from_state;
            if (!known) continue; /* a checkpoint of an older version: what is given (or the default) */
            char a[64], b[64], sa[64], sb[64];
            fmt(a, sizeof a, r[i].kind, r[i].cur);
            fmt(b, sizeof b, r[i].kind, r[i].saved);
            if (!ds_cli_given(r[i].given) || !strcmp(a, b)) {
                copy_val(r[i].kind, r[i].cur, r[i].saved);
                continue;
            }
            snprintf(sa, sizeof sa, "%s", a), snprintf(sb, sizeof sb, "%s", b);
            if (r[i].kind == 'd') short_double(sa, sizeof sa, a), short_double(sb, sizeof sb, b);
            if (r[i].fixed)
                ds_cli_usage_error("train", "--resume %s: %s %s differs from the run's %s (a resumed run keeps its "
                                   "batches and moment format)", o.resume, r[i].name, sa, sb);
            if (!override)
                ds_cli_usage_error("train", "--resume %s: %s %s differs from the run's %s (drop it to keep the run's, "
                                   "or add --override to change it)", o.resume, r[i].name, sa, sb);
            ds_log(DS_LOG_INFO, "resume: %s %s replaces the run's %s (--override)", r[i].name, sa, sb);
            olen += (size_t)snprintf(overrides + olen, sizeof overrides - olen, "%s\"%s\": [\"%s\", \"%s\"]",
                                     olen > 1 ? ", " : "", r[i].name + 2, sb, sa);
            if (olen >= sizeof overrides) olen = sizeof overrides - 1;
        }
        snprintf(overrides + olen, sizeof overrides - olen, "}");
        /* how the run logs, validates and saves: kept unless given again */
        if (has_json) {
            if (!ds_cli_given(&eval_every)) o.eval_every = sv.eval_every;
            if (!ds_cli_given(&eval_batches)) o.eval_batches = sv.eval_batches;
            if (!ds_cli_given(&save_every)) o.save_every = sv.save_every;
            if (!ds_cli_given(&keep)) o.keep = sv.keep;
            if (!ds_cli_given(&log_every)) o.log_every = sv.log_every;
            if (!ds_cli_given(&skip)) o.skip_nonfinite = sv.skip_nonfinite;
        }
        o.resume_overrides = overrides;
        if (threads > 0 && threads != ds_threads())
            ds_log(DS_LOG_INFO, "warning: the run used %lld threads, this resume %d: a bit-exact continuation needs "
                   "the same --threads", (long long)threads, ds_threads());
    }
    if (o.fp8_cache && o.precision != DS_PREC_FP8) ds_cli_usage_error("train", "--fp8-cache needs --precision fp8");
    if (ds_cli_given(&micro) && pp <= 1) ds_cli_usage_error("train", "--micro-batches needs --pp S (S > 1)");
    o.pp = (int)pp, o.micro_batches = micro > 0 ? (int)micro : (int)pp;
    check_pp(&o);
    ds_train_hooks hooks = {0};
    hooks.report = report, hooks.tb_dir = tensorboard;
    ds_train_hooks_attach(&hooks, &o);
    int rc = ds_train(&o);
    if (ds_train_hooks_end(&hooks) && !rc) rc = -1;
    if (rc) {
        ds_cli_fail("train");
        /* under mpirun: the other processes stop too instead of waiting in a collective */
        if (ds_comm_is_distributed()) ds_comm_abort(1, NULL);
        return 1;
    }
    ds_comm_finalize();
    return 0;
}
DS_COMMAND("train", "train or resume a DeepSeek-V3-style model on token shards", run)
