/*
 * cmd_forward.c — `dsv3 forward --model DIR --ids FILE --out OUT.safetensors [--hidden] [--no-mtp]`
 * runs the FP32 forward pass and writes
 *   logits            F32 [B, T, V]
 *   mtp_logits.{k}    F32 [B, T-k, V], k = 1..D (unless --no-mtp)
 *   hidden_states.{i} F32 [B, T, H], i = 0..L (with --hidden; transformers'
 *                     output_hidden_states: 0 = embeddings, L = after model.norm)
 * FILE: one sequence per line, whitespace-separated token ids; blank lines are
 * skipped.  All sequences must have the same length (a batch is a rectangle;
 * no padding is invented): unequal lines are an error naming the line.
 *
 * With --grads OUT.safetensors it also runs the backward (model/backward.h)
 * on the next-token CE loss (+ λ·MTP loss with --mtp-lambda L, + a balance
 * loss with --balance-loss seq:ALPHA | v2:A1,A2,A3) and writes `loss`, the
 * loss terms and `grad.<HF name>` for every trained parameter (--out is then
 * optional).
 *
 * An FP8 checkpoint keeps its F8_E4M3 linears in FP8 (act_quant 1x128 +
 * block-scaled FP8 GEMM, docs/fp8.md) unless --dequant (or --grads) widens
 * them to FP32 on load.
 *
 * `dsv3 forward --model DIR|--config CONFIG.json|PRESET --random B,T [--iters K] [--no-mtp]`
 * times the forward on random ids instead and prints one JSON line (used by
 * make bench); with --config the model is randomly initialised in memory.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "backend/backend.h"
#include "io/safetensors.h"
#include "model/backward.h"
#include "model/model.h"
#include "model/presets.h"

/* Parse the ids file into (B, T); returns 0 or -1 with ds_err. */
static int read_ids(const char *path, int64_t V, int32_t **ids_out, int64_t *B_out, int64_t *T_out) {
    size_t len;
    char *txt = ds_read_file(path, &len);
    if (!txt) return -1;
    int64_t cap = 1024, n = 0, B = 0, T = -1, line = 0;
    int32_t *ids = ds_malloc((size_t)cap * sizeof(int32_t));
    char *p = txt;
    int rc = 0;
    while (*p && !rc) {
        line++;
        char *eol = strchr(p, '\n');
        if (eol) *eol = 0;
        int64_t cnt = 0;
        char *q = p;
        for (;;) {
            while (*q == ' ' || *q == '\t' || *q == '\r') q++;
            if (!*q) break;
            char *end;
            errno = 0;
            long long v = strtoll(q, &end, 10);
            if (end == q || (*end && *end != ' ' && *end != '\t' && *end != '\r')) {
                char *tok_end = q;
                while (*tok_end && *tok_end != ' ' && *tok_end != '\t' && *tok_end != '\r') tok_end++;
                rc = ds_err("%s:%lld: %s is not a token id (integers separated by spaces)", path, (long long)line,
                            ds_quote_n(q, (size_t)(tok_end - q > 32 ? 32 : tok_end - q)));
                break;
            }
            if (errno || v < 0 || v >= V) {
                rc = ds_err("%s:%lld: token id %.*s is outside the vocabulary [0, %lld)", path, (long long)line,
                            (int)(end - q > 32 ? 32 : end - q), q, (long long)V);
                break;
            }
            if (n == cap) ids = ds_realloc(ids, (size_t)(cap *= 2) * sizeof(int32_t));
            ids[n++] = (int32_t)v;
            cnt++;
            q = end;
        }
        if (!rc && cnt > 0) {
            if (T < 0) T = cnt;
            else if (cnt != T)
                rc = ds_err("%s:%lld: %lld tokens, but the first sequence has %lld (all lines must have the same "
                            "length)",
                            path, (long long)line, (long long)cnt, (long long)T);
            B++;
        }
        if (!eol) break;
        p = eol + 1;
    }
    free(txt);
    if (!rc && B == 0) rc = ds_err("%s: no token ids", path);
    if (rc) {
        free(ids);
        return -1;
    }
    *ids_out = ids;
    *B_out = B;
    *T_out = T;
    return 0;
}

/* a tensor of the model's memory as host data: itself on a host table, else
 * a host copy (freed by the caller) */
static const float *host_copy(const struct ds_ops *ops, const float *p, int64_t n) {
    if (ops->host_visible) return p;
    float *h = ds_malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    ops->copy_d2h(h, p, (size_t)n * sizeof(float));
    return h;
}

static int bench(const ds_model *m, const struct ds_ops *ops, const char *device, const char *shape, long long iters,
                 int mtp) {
    long long B = 0, T = 0;
    if (sscanf(shape, "%lld,%lld", &B, &T) != 2 || B <= 0 || T <= 0)
        return ds_err("--random: expected B,T (e.g. 1,512), got %s", ds_quote(shape));
    ds_acts a;
    if (ds_acts_create(&a, m, B, T, mtp)) return -1;
    int32_t *ids = ds_malloc((size_t)(B * T) * sizeof(int32_t));
    ds_rng r;
    ds_rng_seed(&r, 1234);
    for (long long i = 0; i < B * T; i++) ids[i] = (int32_t)ds_rng_below(&r, (uint64_t)m->cfg.vocab_size);
    if (ds_model_forward(m, &a, ops, ids)) return -1; /* warm-up */
    double best = 1e30, sum = 0;
    for (long long it = 0; it < iters; it++) {
        double t0 = ds_now();
        ds_model_forward(m, &a, ops, ids);
        double dt = ds_now() - t0;
        sum += dt;
        if (dt < best) best = dt;
    }
    double flops = ds_model_forward_flops(m, B, T, mtp);
    printf("{\"impl\": \"dsv3\", \"batch\": %lld, \"seq\": %lld, \"threads\": %d, \"iters\": %lld, "
           "\"best_s\": %.6f, \"mean_s\": %.6f, \"tokens_per_s\": %.1f, \"flops\": %.6g, \"gflops\": %.2f, "
           "\"blas\": %s}\n",
           B, T, ds_threads(), iters, best, sum / iters, (double)(B * T) / best, flops, flops / best / 1e9,
           ds_backend_uses_blas(device) ? "true" : "false");
    free(ids);
    ds_acts_free(&a);
    return 0;
}

static int run(int argc, char **argv) {
    const char *model = NULL, *config = NULL, *idsf = NULL, *out = NULL, *rnd = NULL, *grads = NULL, *bal = NULL;
    const char *device = "cpu";
    int hidden = 0, no_mtp = 0, dequant = 0;
    double mtp_lambda = 0;
    long long iters = 5;
    const ds_opt opts[] = {
        {"--model", DS_OPT_STR, &model, "DIR  model folder"},
        {"--config", DS_OPT_STR, &config, "CONFIG.json|PRESET  random model in memory (with --random)"},
        {"--ids", DS_OPT_STR, &idsf, "FILE  token ids, one sequence per line (equal lengths)"},
        {"--out", DS_OPT_STR, &out, "OUT.safetensors  where to write logits"},
        {"--hidden", DS_OPT_FLAG, &hidden, "also write hidden_states.{0..L}"},
        {"--no-mtp", DS_OPT_FLAG, &no_mtp, "skip the MTP modules"},
        {"--random", DS_OPT_STR, &rnd, "B,T  time the forward on random ids (prints JSON)"},
        {"--iters", DS_OPT_INT, &iters, "K  timed iterations with --random (default 5)", DS_RANGE(1, 1000000)},
        {"--grads", DS_OPT_STR, &grads, "OUT.safetensors  also run the backward; write loss terms and gradients"},
        {"--mtp-lambda", DS_OPT_FLOAT, &mtp_lambda, "L  MTP loss weight λ with --grads (default 0)", DS_MIN(0)},
        {"--balance-loss", DS_OPT_STR, &bal, "seq:ALPHA | v2:A1,A2,A3  balance loss with --grads"},
        {"--dequant", DS_OPT_FLAG, &dequant, "widen FP8 and BF16 weights to FP32 on load (default: FP8 linears stay FP8, BF16 matmul weights BF16)"},
        {"--device", DS_OPT_STR, &device, DS_DEVICE_HELP},
    };
    ds_cli_parse("forward",
                 "--model DIR --ids FILE [--out OUT.safetensors] [--hidden] [--no-mtp] [--grads OUT.safetensors "
                 "[--mtp-lambda L] [--balance-loss seq:A|v2:A1,A2,A3]]",
                 argc, argv, opts, 13, NULL, 0, NULL);
    if (!model && !(config && rnd)) ds_cli_usage_error("forward", "--model is required (or --config with --random)");
    if (!model) ds_cli_check_config("forward", config);
    if (!rnd && (!idsf || (!out && !grads))) ds_cli_usage_error("forward", "--ids and --out (or --grads) are required");
    ds_loss_opts lo = ds_loss_opts_default();
    lo.mtp_lambda = mtp_lambda;
    if ((mtp_lambda != 0 || bal) && !grads) ds_cli_usage_error("forward", "--mtp-lambda and --balance-loss need --grads");
    if (!(mtp_lambda >= 0)) ds_cli_usage_error("forward", "--mtp-lambda must be >= 0");
    if (mtp_lambda > 0 && no_mtp) ds_cli_usage_error("forward", "--mtp-lambda needs the MTP modules (drop --no-mtp)");
    if (bal && ds_loss_opts_parse_balance(&lo, bal)) ds_cli_usage_error("forward", "%s", ds_errmsg());
    if (iters <= 0) ds_cli_usage_error("forward", "--iters must be positive");
    /* device-resident: the weights, arenas and gradients in the table's
     * memory; the written tensors come back through copy_d2h */
    const struct ds_ops *ops = ds_cli_device_resident("forward", device);
    const struct ds_ops *mem = ops->host_visible ? NULL : ops;
    ds_model m;
    if (model) {
        /* gradients need FP32 parameters: --grads loads dequantized */
        ds_load_opts lopt = {.fp8_resident = !dequant && !grads, .mem = mem};
        if (ds_model_load_ex(&m, model, &lopt)) return ds_cli_fail("forward");
        ds_model_log_weight_mem(&m);
    } else {
        if (ds_cli_random_model(&m, config, mem)) return ds_cli_fail("forward");
    }
    if (rnd) {
        int rc = bench(&m, ops, device, rnd, iters, !no_mtp);
        ds_model_free(&m);
        return rc ? ds_cli_fail("forward") : 0;
    }
    int32_t *ids;
    int64_t B, T;
    if (read_ids(idsf, m.cfg.vocab_size, &ids, &B, &T)) {
        ds_model_free(&m);
        return ds_cli_fail("forward");
    }
    ds_acts a;
    int rc = ds_acts_create(&a, &m, B, T, !no_mtp);
    if (!rc) rc = ds_model_forward(&m, &a, ops, ids);
    if (!rc && mtp_lambda > 0 && !a.mtp) rc = ds_err("--mtp-lambda: the model has no MTP modules");
    if (!rc && grads) {
        ds_grads g;
        ds_bwd w;
        ds_loss_terms t;
        ds_grads_create(&g, &m);
        rc = ds_bwd_create(&w, &m, B, T);
        if (!rc) rc = ds_model_backward(&m, &a, ops, &g, &w, NULL, &lo, &t);
        const char *bad = rc ? NULL : ds_grads_check_finite(&g, &m, ops);
        if (bad) ds_log(DS_LOG_INFO, "warning: gradient of %s is not finite", bad);
        if (!rc) rc = ds_grads_write(grads, &m, &g, &t, mtp_lambda > 0, lo.balance);
        ds_bwd_free(&w);
        ds_grads_free(&g);
    }
    if (!rc && out) {
        const ds_config *c = &m.cfg;
        int64_t L = c->num_hidden_layers, D = a.mtp ? c->num_nextn_predict_layers : 0;
        ds_st_entry *e = ds_calloc((size_t)(1 + D + L + 1), sizeof *e);
        char (*names)[48] = ds_calloc((size_t)(1 + D + L + 1), 48);
        int64_t n = 0;
        e[n++] = (ds_st_entry){"logits", DS_F32, 3, {B, T, c->vocab_size}, host_copy(ops, a.logits, B * T * c->vocab_size)};
        for (int64_t k = 1; k <= D; k++) {
            if (T - k <= 0) continue;
            snprintf(names[n], 48, "mtp_logits.%lld", (long long)k);
            e[n] = (ds_st_entry){names[n], DS_F32, 3, {B, T - k, c->vocab_size},
                                 host_copy(ops, a.mtp_logits[k - 1], B * (T - k) * c->vocab_size)};
            n++;
        }
        for (int64_t i = 0; hidden && i <= L; i++) {
            snprintf(names[n], 48, "hidden_states.%lld", (long long)i);
            e[n] = (ds_st_entry){names[n], DS_F32, 3, {B, T, c->hidden_size},
                                 host_copy(ops, ds_acts_hidden(&a, &m, i), B * T * c->hidden_size)};
            n++;
        }
        static const char *const meta[] = {"format", "pt", NULL};
        rc = ds_st_write(out, e, n, meta);
        if (!ops->host_visible)
            for (int64_t i = 0; i < n; i++) free((void *)e[i].data);
        free(e);
        free(names);
    }
    free(ids);
    ds_acts_free(&a);
    ds_model_free(&m);
    return rc ? ds_cli_fail("forward") : 0;
}
DS_COMMAND("forward", "run the forward pass on token ids; write logits (and MTP logits, hidden states)", run)
