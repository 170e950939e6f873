/*
 * cmd_bench_train.c — `dsv3 bench-train --config CONFIG.json|PRESET --random B,T [--iters K]`
 * times one FP32 training step on random token ids of a randomly initialised
 * model (the same step as tools/bench_train_torch.py): forward, CE loss with
 * labels = ids, backward, global gradient-norm clipping at 1.0, AdamW (lr
 * 1e-3, β 0.9/0.95, eps 1e-8, wd 0.1 on tensors with ndim ≥ 2).  MTP off.
 * Prints one JSON line (used by bench/bench_train.sh): best/mean step time,
 * tokens/s, and the forward / backward / optimizer split of the best step.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/profile.h"
#include "cli/cli.h"
#include "io/json.h"
#include "model/backward.h"
#include "model/model.h"
#include "model/presets.h"
#include "train/adamw.h"
#include "train/optim.h"
#include "train/trainer.h"

/* CPU seconds of the whole process (all threads): on a machine shared with
 * other jobs, the step's work apart from the time it waited for a core */
static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int run(int argc, char **argv) {
    const char *config = NULL, *rnd = NULL, *prec = "fp32", *device = "cpu";
    long long iters = 3;
    int cache = 0, m16 = 0, prof = 0;
    const ds_opt opts[] = {
        {"--config", DS_OPT_STR, &config, "CONFIG.json|PRESET  model (randomly initialised)"},
        {"--random", DS_OPT_STR, &rnd, "B,T  batch of random token ids"},
        {"--iters", DS_OPT_INT, &iters, "K  timed steps (default 3, after one warm-up step)", DS_RANGE(1, 1000000)},
        {"--precision", DS_OPT_STR, &prec, "fp32|bf16|fp8  GEMM inputs (backend/cpu/matmul_bf16.h, matmul_fp8.h)"},
        {"--device", DS_OPT_STR, &device, DS_DEVICE_HELP},
        {"--fp8-cache", DS_OPT_FLAG, &cache, "  with --precision fp8: linear inputs for the weight gradients kept in FP8"},
        {"--bf16-moments", DS_OPT_FLAG, &m16, "  AdamW moments in BF16"},
        {"--profile", DS_OPT_FLAG, &prof,
         "  time each ops entry (backend/profile.h): a table on stderr, \"profile\" in the JSON"},
    };
    ds_cli_parse("bench-train", "--config CONFIG.json|PRESET --random B,T [--iters K]", argc, argv, opts, 8, NULL, 0,
                 NULL);
    if (!config || !rnd) ds_cli_usage_error("bench-train", "--config and --random are required");
    ds_cli_check_config("bench-train", config);
    static const char *const precs[] = {"fp32", "bf16", "fp8"};
    ds_cli_check_choice("bench-train", "--precision: unknown value", prec, precs, 3);
    long long B = 0, T = 0;
    if (sscanf(rnd, "%lld,%lld", &B, &T) != 2 || B <= 0 || T <= 0)
        ds_cli_usage_error("bench-train", "--random: expected B,T (e.g. 1,256), got %s", ds_quote(rnd));
    if (iters <= 0) ds_cli_usage_error("bench-train", "--iters must be positive");
    int bf16 = !strcmp(prec, "bf16"), fp8 = !strcmp(prec, "fp8");
    if (!bf16 && !fp8 && strcmp(prec, "fp32"))
        ds_cli_usage_error("bench-train", "--precision: fp32, bf16 or fp8, got %s", ds_quote(prec));
    if (cache && !fp8) ds_cli_usage_error("bench-train", "--fp8-cache needs --precision fp8");
    const int precision = bf16 ? DS_PREC_BF16 : fp8 ? DS_PREC_FP8 : DS_PREC_FP32;
    /* device-resident: weights, arenas, gradients and moments in the table's memory */
    ds_cli_device_resident("bench-train", device);
    struct ds_ops ops;
    if (ds_backend_table_resident(&ops, device, precision)) return ds_cli_fail("bench-train");
    struct ds_ops plain = ops; /* the profiling table wraps it */
    if (prof) ops = *ds_ops_profile(&plain);
    const struct ds_ops *dev = ops.host_visible ? NULL : &ops;
    ds_model m;
    if (ds_cli_random_model(&m, config, dev)) return ds_cli_fail("bench-train");
    ds_acts a;
    ds_grads g;
    ds_bwd w;
    if (ds_acts_create_ex(&a, &m, B, T, 0, cache ? DS_ACTS_FP8_CACHE : 0) || ds_bwd_create(&w, &m, B, T))
        return ds_cli_fail("bench-train");
    ds_grads_create(&g, &m);
    ds_train_memory mem;
    ds_train_memory_of(&mem, &m, &ops, B, T, 0, m16, precision, cache,
                       w.arena_floats * sizeof(float));
    ds_train_memory_log(&mem);
    char blas[192];
    int narrow;
    ds_blas_name(blas, sizeof blas, &narrow);
    ds_log(DS_LOG_INFO, "FP32 GEMM: %s%s", blas, narrow ? DS_BLAS_NARROW_NOTE : "");
    char memj[640];
    ds_train_memory_json(memj, sizeof memj, &mem);
    void *mom = ds_model_mem_alloc(dev, (size_t)g.n * (m16 ? 2 : 4)), *vel = ds_model_mem_alloc(dev, (size_t)g.n * (m16 ? 2 : 4));
    if (!mom || !vel) return ds_cli_fail("bench-train");
    int32_t *ids = ds_malloc((size_t)(B * T) * sizeof(int32_t));
    ds_rng r;
    ds_rng_seed(&r, 1234);
    for (long long i = 0; i < B * T; i++) ids[i] = (int32_t)ds_rng_below(&r, (uint64_t)m.cfg.vocab_size);
    ds_loss_opts lo = ds_loss_opts_default();
    ds_adamw_hparams h = ds_adamw_default(1e-3);
    double best = 1e30, sum = 0, bf = 0, bb = 0, bo = 0, loss = 0, csum = 0;
    for (long long it = 0; it <= iters; it++) {
        if (ops.weights_epoch) ops.weights_epoch(it); /* weights unchanged until the AdamW step below */
        double t0 = ds_now(), c0 = cpu_now();
        ds_grads_zero(&g);
        if (ds_model_forward(&m, &a, &ops, ids)) return ds_cli_fail("bench-train");
        ops.sync(); /* a device table runs asynchronously: the phase times after a sync */
        double t1 = ds_now();
        ds_loss_terms t;
        if (ds_model_backward(&m, &a, &ops, &g, &w, NULL, &lo, &t)) return ds_cli_fail("bench-train");
        ops.sync();
        double t2 = ds_now();
        double ss = ops.sumsq(g.g, g.n); /* the trainer's step: norm, clip, AdamW */
        ds_model_adamw_step(&ops, &m, &g, mom, vel, m16, it + 1, &h, ds_clip_coef(sqrt(ss), 1.0), 0);
        ops.sync();
        double t3 = ds_now();
        loss = t.loss;
        if (it == 0) { /* warm-up */
            if (prof) ds_ops_profile_reset();
            continue;
        }
        sum += t3 - t0;
        csum += cpu_now() - c0;
        if (t3 - t0 < best) best = t3 - t0, bf = t1 - t0, bb = t2 - t1, bo = t3 - t2;
    }
    if (ops.weights_epoch) ops.weights_epoch(-1);
    /* MFU against the device's peak for this precision (a GPU's own on cuda) */
    char peak_how[256] = "";
    double peak = ds_backend_peak_flops_prec(device, precision, ds_threads(), peak_how, sizeof peak_how);
    ds_sbuf hj = {0};
    ds_json_put_string(&hj, peak_how);
    char *peak_j = ds_sbuf_take(&hj);
    double step_flops = 3.0 * ds_model_forward_flops(&m, B, T, 0);
    char profj[8192] = "";
    if (prof) {
        fprintf(stderr, "bench-train --profile: the ops entries of a step, mean of %lld steps (mean step %.3f ms)\n",
                iters, 1e3 * sum / iters);
        ds_ops_profile_print(stderr, (int)iters, sum / iters);
        int k = snprintf(profj, sizeof profj, ", \"profile\": ");
        ds_ops_profile_json(profj + k, sizeof profj - (size_t)k, (int)iters);
    }
    printf("{\"impl\": \"dsv3\", \"precision\": \"%s\", \"fp8_cache\": %d, \"bf16_moments\": %d, \"batch\": %lld, \"seq\": %lld, \"threads\": %d, \"iters\": %lld, "
           "\"best_s\": %.6f, \"mean_s\": %.6f, \"tokens_per_s\": %.1f, \"forward_s\": %.6f, \"backward_s\": %.6f, "
           "\"optimizer_s\": %.6f, \"cpu_s\": %.6f, \"last_loss\": %.6f, \"flops_per_step\": %.6g, \"peak_flops\": %.6g, "
           "\"mfu\": %.5f, \"peak\": %s, \"blas\": \"%s\", \"blas_narrow\": %d, %s%s}\n",
           prec, cache, m16, B, T, ds_threads(), iters, best, sum / iters, (double)(B * T) / best, bf, bb, bo, csum / iters, loss,
           step_flops, peak, peak > 0 ? step_flops / best / peak : 0.0, peak_j, blas, narrow, memj, profj);
    free(peak_j);
    free(ids);
    ds_model_mem_free(dev, mom);
    ds_model_mem_free(dev, vel);
    ds_grads_free(&g);
    ds_bwd_free(&w);
    ds_acts_free(&a);
    ds_model_free(&m);
    return 0;
}
DS_COMMAND("bench-train", "time training steps (forward, backward, clip, AdamW; FP32, BF16 or FP8) on random ids", run)
