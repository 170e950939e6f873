/*
 * cmd_train.c — `dsv3 train`: train (or resume) a DeepSeek-V3-style model on
 * token shards (src/train/trainer.h).
 */
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "train/trainer.h"

static int run(int argc, char **argv) {
    ds_train_opts o = ds_train_opts_default();
    const char *precision = "fp32", *balance = "aux-free", *prompts = NULL;
    long long steps = 0, tokens = 0, batch = o.batch, seq = o.seq, accum = o.accum, warmup = o.warmup;
    long long eval_every = o.eval_every, eval_batches = o.eval_batches, save_every = 0, keep = o.keep;
    long long seed = (long long)o.seed, stop_after = 0, log_every = o.log_every, sample_tokens = o.sample_tokens;
    int skip = 0, m16 = 0, cache = 0;
    const ds_opt opts[] = {
        {"--config", DS_OPT_STR, &o.config, "PRESET|config.json  model (new run; presets: tiny, small)"},
        {"--data", DS_OPT_STR, &o.data, "DIR  output of `dsv3 data prepare`"},
        {"--out", DS_OPT_STR, &o.out, "RUN  run folder (checkpoints, train_log.jsonl)"},
        {"--resume", DS_OPT_STR, &o.resume, "RUN  continue RUN from RUN/latest (bit-exact)"},
        {"--steps", DS_OPT_INT, &steps, "N  total optimizer steps"},
        {"--tokens", DS_OPT_INT, &tokens, "N  total training tokens"},
        {"--minutes", DS_OPT_FLOAT, &o.minutes, "M  wall-clock budget (steps fixed after timing 3 steps)"},
        {"--batch", DS_OPT_INT, &batch, "B  sequences per micro-batch (default 8)"},
        {"--seq", DS_OPT_INT, &seq, "T  tokens per sequence (default 128)"},
        {"--grad-accum", DS_OPT_INT, &accum, "A  micro-batches per step (default 1)"},
        {"--precision", DS_OPT_STR, &precision, "fp32|bf16|fp8  GEMM inputs (default fp32; bf16/fp8: FP32 sums and master weights)"},
        {"--balance", DS_OPT_STR, &balance, "aux-free|aux-loss|none  load balancing (default aux-free)"},
        {"--bias-gamma", DS_OPT_FLOAT, &o.gamma, "G  bias update speed γ (default 0.001)"},
        {"--gamma-until", DS_OPT_FLOAT, &o.gamma_until, "F  γ is 0 after this fraction of the run (default 0.97)"},
        {"--seq-aux-alpha", DS_OPT_FLOAT, &o.seq_alpha, "A  sequence-wise balance loss with aux-free (default 0)"},
        {"--mtp-lambda", DS_OPT_FLOAT, &o.mtp_lambda, "L  MTP loss weight (default 0.3; 0 = off)"},
        {"--lr", DS_OPT_FLOAT, &o.lr, "LR  peak learning rate (default 3e-3)"},
        {"--min-lr", DS_OPT_FLOAT, &o.min_lr, "LR  after the cosine decay (default 3e-4)"},
        {"--warmup", DS_OPT_INT, &warmup, "N  linear warm-up steps (default 20)"},
        {"--decay-start", DS_OPT_FLOAT, &o.decay_start, "F  cosine decay from this fraction of the run (0.5)"},
        {"--weight-decay", DS_OPT_FLOAT, &o.weight_decay, "W  AdamW weight decay (default 0.1)"},
        {"--clip", DS_OPT_FLOAT, &o.clip, "N  gradient-norm clipping (default 1; 0 = off)"},
        {"--bf16-moments", DS_OPT_FLAG, &m16, "  AdamW moments in BF16"},
        {"--fp8-cache", DS_OPT_FLAG, &cache, "  with --precision fp8: keep linear inputs for the weight gradients in FP8"},
        {"--eval-every", DS_OPT_INT, &eval_every, "N  validation every N steps (default 100; 0 = end only)"},
        {"--eval-batches", DS_OPT_INT, &eval_batches, "N  validation batches (default 16; 0 = all)"},
        {"--save-every", DS_OPT_INT, &save_every, "N  checkpoint every N steps (default: end only)"},
        {"--keep", DS_OPT_INT, &keep, "K  checkpoints kept (default 2)"},
        {"--seed", DS_OPT_INT, &seed, "S  initialisation and data order (default 1234)"},
        {"--skip-nonfinite", DS_OPT_FLAG, &skip, "  skip steps with a NaN/Inf loss instead of stopping"},
        {"--stop-after", DS_OPT_INT, &stop_after, "N  end this invocation after step N (resume later)"},
        {"--log-every", DS_OPT_INT, &log_every, "N  one line every N steps (default 1)"},
        {"--sample", DS_OPT_STR, &prompts, "P1|P2  prompts to continue after training"},
        {"--sample-tokens", DS_OPT_INT, &sample_tokens, "N  tokens per sample (default 64)"},
        {"--temperature", DS_OPT_FLOAT, &o.temperature, "T  sampling temperature (default 0.8; 0 = greedy)"},
    };
    const int nopt = (int)(sizeof opts / sizeof opts[0]);
    ds_cli_parse("train", "--config PRESET|config.json --data DIR --out RUN --steps N|--tokens N|--minutes M [...]",
                 argc, argv, opts, nopt, NULL, 0, NULL);
    if (!strcmp(precision, "fp32")) o.precision = DS_PREC_FP32;
    else if (!strcmp(precision, "bf16")) o.precision = DS_PREC_BF16;
    else if (!strcmp(precision, "fp8")) o.precision = DS_PREC_FP8;
    else ds_cli_usage_error("train", "--precision: expected fp32, bf16 or fp8, got %s", ds_quote(precision));
    if (cache && o.precision != DS_PREC_FP8) ds_cli_usage_error("train", "--fp8-cache needs --precision fp8");
    if (!strcmp(balance, "aux-free")) o.balance = DS_TRAIN_AUX_FREE;
    else if (!strcmp(balance, "aux-loss")) o.balance = DS_TRAIN_AUX_LOSS;
    else if (!strcmp(balance, "none")) o.balance = DS_TRAIN_BAL_NONE;
    else ds_cli_usage_error("train", "--balance: expected aux-free, aux-loss or none, got %s", ds_quote(balance));
    if (steps < 0 || tokens < 0 || o.minutes < 0 || batch <= 0 || seq <= 1 || accum <= 0 || keep < 0)
        ds_cli_usage_error("train", "budgets must be >= 0, --batch/--grad-accum > 0, --seq > 1");
    if (o.gamma < 0 || o.mtp_lambda < 0 || o.seq_alpha < 0 || o.lr <= 0 || o.min_lr < 0)
        ds_cli_usage_error("train", "--bias-gamma, --mtp-lambda, --seq-aux-alpha, --min-lr must be >= 0, --lr > 0");
    if (!o.data) ds_cli_usage_error("train", "--data DIR is required");
    if (!o.out && !o.resume) ds_cli_usage_error("train", "--out RUN (or --resume RUN) is required");
    if (!o.resume && !o.config) ds_cli_usage_error("train", "--config PRESET|config.json is required");
    o.steps = steps, o.tokens = tokens, o.batch = batch, o.seq = seq, o.accum = accum, o.warmup = warmup;
    o.eval_every = eval_every, o.eval_batches = eval_batches, o.save_every = save_every, o.keep = keep;
    o.seed = (uint64_t)seed, o.stop_after = stop_after, o.log_every = log_every, o.sample_tokens = sample_tokens;
    o.skip_nonfinite = skip, o.bf16_moments = m16, o.fp8_cache = cache, o.sample_prompts = prompts;
    if (ds_train(&o)) return ds_cli_fail("train");
    return 0;
}
DS_COMMAND("train", "train or resume a DeepSeek-V3-style model on token shards", run)
