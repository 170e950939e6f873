/*
 * cmd_plan.c — `dsv3 plan --config CONFIG --gpus N --gpus-per-node G --ep E
 * --pp S [--dp D]`: memory per device, all-to-all and gradient traffic and a
 * step-time estimate of a training layout, on paper (train/plan.h states
 * every formula).  Defaults: DeepSeek-V3's own layout (2048 H800 in nodes of
 * 8, EP 64, PP 16, sequences of 4096, batch 15360) and H800 figures.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "model/presets.h"
#include "train/plan.h"

static double gib(double b) { return b / (1024.0 * 1024.0 * 1024.0); }

static int run(int argc, char **argv) {
    const char *config = "deepseek-v3";
    long long gpus = 2048, gpn = 8, ep = 64, pp = 16, dp = 0, mb = 1, seq = 4096, gb = 15360;
    double peak = 989.5, ib = 50;
    const ds_opt opts[] = {
        {"--config", DS_OPT_STR, &config, "PRESET|config.json  model (default deepseek-v3)"},
        {"--gpus", DS_OPT_INT, &gpus, "N  devices (default 2048)", DS_RANGE(1, 1 << 24)},
        {"--gpus-per-node", DS_OPT_INT, &gpn, "G  devices per node (default 8)", DS_RANGE(1, 1 << 16)},
        {"--ep", DS_OPT_INT, &ep, "E  expert-parallel degree (default 64)", DS_RANGE(1, 1 << 24)},
        {"--pp", DS_OPT_INT, &pp, "S  pipeline stages (default 16)", DS_RANGE(1, 1 << 16)},
        {"--dp", DS_OPT_INT, &dp, "D  data-parallel degree (default N / S)", DS_RANGE(0, 1 << 24)},
        {"--micro-batch", DS_OPT_INT, &mb, "B  sequences per micro-batch (default 1)", DS_RANGE(1, 1 << 20)},
        {"--seq", DS_OPT_INT, &seq, "T  tokens per sequence (default 4096)", DS_RANGE(2, 1 << 24)},
        {"--global-batch", DS_OPT_INT, &gb, "B  sequences per step (default 15360)", DS_RANGE(1, 1LL << 40)},
        {"--peak-tflops", DS_OPT_FLOAT, &peak, "F  peak per device (default 989.5: H800 BF16 dense)", DS_GT(0)},
        {"--ib-gbs", DS_OPT_FLOAT, &ib, "B  network GB/s per device (default 50: 400 Gb/s InfiniBand)", DS_GT(0)},
    };
    ds_cli_parse("plan", "--config CONFIG --gpus N --gpus-per-node G --ep E --pp S [--dp D]", argc, argv, opts,
                 (int)(sizeof opts / sizeof opts[0]), NULL, 0, NULL);
    ds_cli_check_config("plan", config);
    ds_config c;
    if ((ds_config_is_path(config) ? ds_config_load(&c, config) : ds_preset(&c, config)) || ds_config_validate(&c, config))
        return ds_cli_fail("plan");
    ds_plan_in in = {gpus, gpn, ep, pp, dp, mb, seq, gb, peak * 1e12, ib * 1e9};
    ds_plan_out o;
    if (ds_plan(&c, &in, &o)) return ds_cli_fail("plan");
    long long D = dp ? dp : gpus / pp;
    printf("plan: %s on %lld devices (%lld nodes of %lld): PP %lld x DP %lld, EP %lld inside DP (expert DP %lld)\n", config,
           gpus, gpus / gpn, gpn, pp, D, ep, D / ep);
    double lookup = (double)c.vocab_size * (double)c.hidden_size; /* the input embedding: a gather, no FLOPs */
    printf("parameters: %lld total (%.1fB), %lld activated per token (%.1fB; %.1fB without the input embedding), MTP "
           "%lld (%.1fB); routed experts %lld, other %lld\n", (long long)o.total, o.total / 1e9, (long long)o.activated,
           o.activated / 1e9, (o.activated - lookup) / 1e9, (long long)o.mtp, o.mtp / 1e9, (long long)o.p_expert,
           (long long)o.p_other);
    printf("per device: %.3gB non-expert + %.3gB expert parameters\n", o.n / 1e9, o.x / 1e9);
    printf("memory per device: weights (BF16) %.2f GiB, gradients (FP32) %.2f GiB, optimizer (FP32 master + BF16 "
           "moments, ZeRO-1) %.2f GiB\n", gib(o.mem_weights), gib(o.mem_grads), gib(o.mem_optim));
    printf("activations (micro-batch %lld x %lld, 1F1B, BF16, %.0f values per token per layer): %.2f GiB; with "
           "recomputation %.2f GiB\n", mb, seq, o.act_per_token, gib(o.mem_act), gib(o.mem_act_recompute));
    int64_t ep_nodes = ep / gpn > 0 ? ep / gpn : 1;
    printf("all-to-all per token per MoE layer (dispatch + combine + both backward): BF16 %.0f B, FP8 dispatch %.0f B; "
           "node-limited (at most %lld of %lld nodes of an EP group): BF16 %.0f B, FP8 dispatch %.0f B\n",
           o.a2a_token_layer[0][0], o.a2a_token_layer[0][1], (long long)c.topk_group, (long long)ep_nodes,
           o.a2a_token_layer[1][0], o.a2a_token_layer[1][1]);
    printf("traffic per device per step: all-to-all %.2f GB (node-limited, FP8), gradients %.2f GB (ZeRO-1 "
           "reduce-scatter + all-gather)\n", o.a2a_device_step / 1e9, o.grad_device_step / 1e9);
    printf("step (%lld tokens): compute %.2f s at %.1f TFLOP/s peak (%.3g GFLOP per token), all-to-all %.2f s, "
           "gradients %.2f s at %.0f GB/s; overlapped %.2f s, serial %.2f s\n", gb * seq, o.t_compute, peak,
           o.flops_per_token / 1e9, o.t_a2a, o.t_grad, ib, o.t_overlap, o.t_serial);
    printf("GPU hours per trillion tokens: %.3gK overlapped, %.3gK serial\n", o.gpu_hours_per_t_overlap / 1e3,
           o.gpu_hours_per_t_serial / 1e3);
    if (!strcmp(config, "deepseek-v3"))
        printf("published: DeepSeek-V3 671B total, 37B activated; 180K H800 GPU hours per trillion tokens on 2048 H800: "
               "estimate / published %.2f (overlapped) .. %.2f (serial)\n", o.gpu_hours_per_t_overlap / 180e3,
               o.gpu_hours_per_t_serial / 180e3);
    return 0;
}

DS_COMMAND("plan", "memory, traffic and step time of a many-device training layout, on paper", run)
