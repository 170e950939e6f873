/*
 * cmd_plan.c — `dsv3 plan --config CONFIG --gpus N --gpus-per-node G --ep E
 * --pp S [--dp D] [--micro-batches M] [--pp-layers a,b,...]`: memory per
 * device, all-to-all and gradient traffic, a step-time estimate and the
 * pipeline (stages, 1F1B bubble, activations per stage, DualPipe for
 * comparison) of a training layout, on paper (train/plan.h states every
 * formula).  Defaults: DeepSeek-V3's own layout (2048 H800 in nodes of
 * 8, EP 64, PP 16, sequences of 4096, batch 15360) and H800 figures.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "io/json.h"
#include "model/presets.h"
#include "train/plan.h"
#include "train/pp_sched.h"

static double gib(double b) { return b / (1024.0 * 1024.0 * 1024.0); }
/* bytes as GiB, or MiB below 1 GiB (small configs) */
static const char *human(char *buf, size_t n, double b) {
    if (b >= 1024.0 * 1024 * 1024) snprintf(buf, n, "%.2f GiB", gib(b));
    else snprintf(buf, n, "%.2f MiB", b / (1024.0 * 1024.0));
    return buf;
}

/* the pipeline part: stages, bubbles, activations per stage, DualPipe */
static void print_pipeline(const ds_config *c, const ds_plan_out *o, int S, long long mb, long long seq,
                           const char *pp_layers) {
    long long M = (long long)o->pp_m;
    printf("pipeline: %d stage%s, 1F1B over %lld micro-batches of %lld x %lld tokens; layers split %s\n", S,
           S > 1 ? "s" : "", M, mb, seq, pp_layers && *pp_layers ? "by --pp-layers" : "by estimated cost (MoE vs dense)");
    printf("  stage  layers          dense  MoE  cost share  in flight  activations  with recomputation  busy (simulated)\n");
    for (int s = 0; s < S; s++) {
        int64_t a = o->pp_first[s], b = o->pp_first[s + 1], moe = 0;
        for (int64_t l = a; l < b; l++) moe += ds_config_layer_is_moe(c, l);
        char range[48];
        if (b - a > 1) snprintf(range, sizeof range, "%lld-%lld (%lld)", (long long)a, (long long)b - 1, (long long)(b - a));
        else snprintf(range, sizeof range, "%lld (1)", (long long)a);
        char h1[32], h2[32];
        printf("  %5d  %-14s  %5lld  %3lld  %9.1f%%  %9lld  %11s  %18s  %15.1f%%\n", s, range, (long long)(b - a - moe),
               (long long)moe, 100 * o->pp_share[s], (long long)o->pp_in_flight[s], human(h1, sizeof h1, o->pp_act[s]),
               human(h2, sizeof h2, o->pp_act_recompute[s]), 100 * o->pp_busy[s]);
    }
    double head = ds_pp_head_cost(c, seq);
    printf("  stage 0 also holds the token embedding (a gather, no FLOPs); stage %d the final norm, the output head and "
           "%lld MTP module%s (%.1f%% of that stage's cost)\n", S - 1, (long long)c->num_nextn_predict_layers,
           c->num_nextn_predict_layers == 1 ? "" : "s", 100 * head / o->pp_cost[S - 1]);
    printf("1F1B bubble: analytic (S-1)/(M+S-1) = %.4f; simulated with the stage costs (forward f = cost, backward 2f) "
           "%.4f; step compute with it %.2f s (the estimate above / (1 - bubble))\n", o->pp_bubble_analytic,
           o->pp_bubble_sim, o->t_compute / (1 - o->pp_bubble_sim));
    if (o->pp_dualpipe_bubble_f < 0)
        printf("DualPipe: needs an even number of stages (it pairs them), not %d\n", S);
    else {
        char w1[32], w2[32], a1[32], a2[32];
        printf("DualPipe (DeepSeek-V3 report, Table 2; B = 2F, W = F, F&B = F + B: no credit for overlapping a forward "
               "and a backward chunk): bubble (PP/2-1)(F&B+B-3W) = %.0fF against 1F1B's (PP-1)(F+B) = %.0fF; as a share "
               "of a step of M(F+B): %.4f against %.4f; at 2x the parameters per device (weights %s instead of %s) and "
               "PP+1 = %d micro-batches of activations on the first device (%s instead of %s)\n",
               o->pp_dualpipe_bubble_f, o->pp_1f1b_bubble_f, o->pp_dualpipe_share, o->pp_bubble_analytic,
               human(w1, sizeof w1, 2 * o->mem_weights), human(w2, sizeof w2, o->mem_weights), S + 1,
               human(a1, sizeof a1, o->pp_act[0] * (S + 1) / (double)o->pp_in_flight[0]),
               human(a2, sizeof a2, o->pp_act[0]));
    }
}

/* the figures of plan.h as one JSON object (bytes, seconds, FLOPs per token) */
static int write_json(const char *path, const char *config, const ds_plan_in *in, const ds_plan_out *o) {
    ds_afile af = {0};
    if (ds_afile_open(&af, path)) return -1;
    FILE *f = af.f;
    const int S = (int)in->pp;
    ds_sbuf name = {0};
    ds_json_put_string(&name, config);
    char *qname = ds_sbuf_take(&name);
    fprintf(f, "{\"config\": %s, \"gpus\": %lld, \"gpus_per_node\": %lld, \"ep\": %lld, \"pp\": %d, "
               "\"micro_batch\": %lld, \"seq\": %lld, \"global_batch\": %lld,\n", qname, (long long)in->gpus,
            (long long)in->gpus_per_node, (long long)in->ep, S, (long long)in->micro_batch, (long long)in->seq,
            (long long)in->global_batch);
    free(qname);
    fprintf(f, " \"params_total\": %lld, \"params_activated\": %lld, \"params_mtp\": %lld, \"mem_weights\": %.17g, "
               "\"mem_grads\": %.17g, \"mem_optim\": %.17g, \"mem_act\": %.17g, \"mem_act_recompute\": %.17g, "
               "\"act_per_token\": %.17g,\n", (long long)o->total, (long long)o->activated, (long long)o->mtp,
            o->mem_weights, o->mem_grads, o->mem_optim, o->mem_act, o->mem_act_recompute, o->act_per_token);
    fprintf(f, " \"a2a_device_step\": %.17g, \"grad_device_step\": %.17g, \"flops_per_token\": %.17g, "
               "\"t_compute\": %.17g, \"t_overlap\": %.17g, \"t_serial\": %.17g,\n", o->a2a_device_step,
            o->grad_device_step, o->flops_per_token, o->t_compute, o->t_overlap, o->t_serial);
    fprintf(f, " \"pipeline\": {\"micro_batches\": %lld, \"bubble_analytic\": %.17g, \"bubble_simulated\": %.17g, "
               "\"t_compute_with_bubble\": %.17g, \"stages\": [\n", (long long)o->pp_m, o->pp_bubble_analytic,
            o->pp_bubble_sim, o->t_compute / (1 - o->pp_bubble_sim));
    for (int s = 0; s < S; s++)
        fprintf(f, "  {\"first_layer\": %lld, \"layers\": %lld, \"cost\": %.17g, \"share\": %.17g, \"in_flight\": %lld, "
                   "\"act_bytes\": %.17g, \"act_bytes_recompute\": %.17g, \"busy\": %.17g}%s\n",
                (long long)o->pp_first[s], (long long)(o->pp_first[s + 1] - o->pp_first[s]), o->pp_cost[s], o->pp_share[s],
                (long long)o->pp_in_flight[s], o->pp_act[s], o->pp_act_recompute[s], o->pp_busy[s], s < S - 1 ? "," : "");
    fprintf(f, " ],\n  \"dualpipe\": ");
    if (o->pp_dualpipe_bubble_f < 0)
        fprintf(f, "null");
    else
        fprintf(f, "{\"assumes\": \"B = 2F, W = F, F&B = F + B (no overlap credit)\", \"bubble_f\": %.17g, "
                   "\"bubble_1f1b_f\": %.17g, \"share\": %.17g, \"mem_weights\": %.17g, \"act_bytes_first\": %.17g}",
                o->pp_dualpipe_bubble_f, o->pp_1f1b_bubble_f, o->pp_dualpipe_share, 2 * o->mem_weights,
                o->pp_act[0] * (S + 1) / (double)o->pp_in_flight[0]);
    fprintf(f, "}}\n");
    return ds_afile_commit(&af);
}

static int run(int argc, char **argv) {
    const char *config = "deepseek-v3";
    long long gpus = 2048, gpn = 8, ep = 64, pp = 16, dp = 0, mb = 1, seq = 4096, gb = 15360, mbs = 0;
    double peak = 989.5, ib = 50;
    const char *pp_layers = NULL, *json = NULL;
    const ds_opt opts[] = {
        {"--config", DS_OPT_STR, &config, "PRESET|config.json  model (default deepseek-v3)"},
        {"--gpus", DS_OPT_INT, &gpus, "N  devices (default 2048)", DS_RANGE(1, 1 << 24)},
        {"--gpus-per-node", DS_OPT_INT, &gpn, "G  devices per node (default 8)", DS_RANGE(1, 1 << 16)},
        {"--ep", DS_OPT_INT, &ep, "E  expert-parallel degree (default 64)", DS_RANGE(1, 1 << 24)},
        {"--pp", DS_OPT_INT, &pp, "S  pipeline stages (default 16)", DS_RANGE(1, 1 << 16)},
        {"--dp", DS_OPT_INT, &dp, "D  data-parallel degree (default N / S)", DS_RANGE(0, 1 << 24)},
        {"--micro-batch", DS_OPT_INT, &mb, "B  sequences per micro-batch (default 1)", DS_RANGE(1, 1 << 20)},
        {"--micro-batches", DS_OPT_INT, &mbs,
         "M  micro-batches per step in the pipeline (default: global batch / (DP x micro-batch))", DS_RANGE(1, 1 << 22)},
        {"--pp-layers", DS_OPT_STR, &pp_layers, "a,b,...  layers of each stage (default: balanced by estimated cost)"},
        {"--json", DS_OPT_STR, &json, "FILE  also write the figures as JSON"},
        {"--seq", DS_OPT_INT, &seq, "T  tokens per sequence (default 4096)", DS_RANGE(2, 1 << 24)},
        {"--global-batch", DS_OPT_INT, &gb, "B  sequences per step (default 15360)", DS_RANGE(1, 1LL << 40)},
        {"--peak-tflops", DS_OPT_FLOAT, &peak, "F  peak per device (default 989.5: H800 BF16 dense)", DS_GT(0)},
        {"--ib-gbs", DS_OPT_FLOAT, &ib, "B  network GB/s per device (default 50: 400 Gb/s InfiniBand)", DS_GT(0)},
    };
    ds_cli_parse("plan", "--config CONFIG --gpus N --gpus-per-node G --ep E --pp S [--dp D] [--micro-batches M] [--pp-layers a,b,...]",
                 argc, argv, opts,
                 (int)(sizeof opts / sizeof opts[0]), NULL, 0, NULL);
    ds_cli_check_config("plan", config);
    ds_config c;
    if ((ds_config_is_path(config) ? ds_config_load(&c, config) : ds_preset(&c, config)) || ds_config_validate(&c, config))
        return ds_cli_fail("plan");
    /* the split is the user's to fix: more stages than layers, a bad --pp-layers */
    int64_t *first = malloc(sizeof(int64_t) * (size_t)(pp + 1));
    if (!first) return ds_cli_fail("plan");
    int bad = ds_pp_split(&c, (int)pp, pp_layers, seq, first);
    free(first);
    if (bad) ds_cli_usage_error("plan", "%s", ds_errmsg());
    ds_plan_in in = {gpus, gpn, ep, pp, dp, mb, seq, gb, peak * 1e12, ib * 1e9, mbs, pp_layers};
    ds_plan_out o;
    if (ds_plan(&c, &in, &o)) {
        ds_plan_free(&o);
        return ds_cli_fail("plan");
    }
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
    printf("activations (micro-batch %lld x %lld, 1F1B, BF16, %.0f values per token per layer, largest stage): %.2f GiB; "
           "with recomputation %.2f GiB\n", mb, seq, o.act_per_token, gib(o.mem_act), gib(o.mem_act_recompute));
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
    if (pp > 1) print_pipeline(&c, &o, (int)pp, mb, seq, pp_layers);
    if (!strcmp(config, "deepseek-v3"))
        printf("published: DeepSeek-V3 671B total, 37B activated; 180K H800 GPU hours per trillion tokens on 2048 H800: "
               "estimate / published %.2f (overlapped) .. %.2f (serial)\n", o.gpu_hours_per_t_overlap / 180e3,
               o.gpu_hours_per_t_serial / 180e3);
    if (json && write_json(json, config, &in, &o)) {
        ds_plan_free(&o);
        return ds_cli_fail("plan");
    }
    ds_plan_free(&o);
    return 0;
}

DS_COMMAND("plan", "memory, traffic and step time of a many-device training layout, on paper", run)
