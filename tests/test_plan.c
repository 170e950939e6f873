/*
 * test_plan.c — `dsv3 plan` (train/plan.h) on DeepSeek-V3's config against
 * hand computations from the published config.json numbers (not the
 * layout code): parameter counts 671B / 37B, the memory, all-to-all and
 * gradient figures of its 2048-GPU layout; and the pipeline part (stages,
 * 1F1B bubble analytic and simulated, activations per stage from the
 * in-flight counts, DualPipe's formula) on tiny against FLOPs and schedule
 * timings worked out by hand.
 */
#include <string.h>

#include "base/base.h"
#include "io/json.h"
#include "model/presets.h"
#include "train/plan.h"
#include "test.h"

TEST(plan_deepseek_v3_counts_memory_traffic) {
    ds_config c;
    CHECK(ds_preset(&c, "deepseek-v3") == 0);
    const double V = 129280, H = 7168, I = 18432, Im = 2048, L = 61, Ld = 3, nh = 128, rq = 1536, rkv = 512, dn = 128,
                 dr = 64, dv = 128, E = 256, K = 8;
    const double dq = dn + dr;
    const double att = rq * H + rq + nh * dq * rq + (rkv + dr) * H + rkv + nh * (dn + dv) * rkv + H * nh * dv + 2 * H;
    const double total = 2 * V * H + H + L * att + Ld * 3 * H * I + (L - Ld) * (E * H + E * 3 * H * Im + 3 * H * Im);
    const double act = 2 * V * H + H + L * att + Ld * 3 * H * I + (L - Ld) * (E * H + K * 3 * H * Im + 3 * H * Im);
    const double mtp = att + E * H + E * 3 * H * Im + 3 * H * Im + 2 * H + 2 * H * H + H;
    ds_plan_in in = {2048, 8, 64, 16, 0, 1, 4096, 15360, 989.5e12, 50e9, 0, NULL};
    ds_plan_out o;
    CHECK(ds_plan(&c, &in, &o) == 0);
    CHECK((double)o.total == total && (double)o.activated == act && (double)o.mtp == mtp);
    CHECK_MSG((long long)(o.total / 1e9 + 0.5) == 671, "%lld", (long long)o.total);
    CHECK_MSG((long long)((o.activated - V * H) / 1e9 + 0.5) == 37, "%lld", (long long)o.activated);
    const double pe = (L - Ld) * E * 3 * H * Im, pn = total + mtp - pe;
    CHECK((double)o.p_expert == pe && (double)o.p_other == pn);
    const double n = pn / 16, x = pe / (16 * 64);
    CHECK_NEAR(o.mem_weights, 2 * (n + x), 1);
    CHECK_NEAR(o.mem_grads, 4 * (n + x), 1);
    CHECK_NEAR(o.mem_optim, 8 * (n / 128 + x / 2), 1);
    CHECK(o.mem_act_recompute < o.mem_act / 10);
    /* node-limited: 4 copies instead of 8; FP8 dispatch: 1 + 4/128 bytes per value */
    CHECK_NEAR(o.a2a_token_layer[0][0], 2 * 8 * H + 6 * 8 * H, 1e-6);
    CHECK_NEAR(o.a2a_token_layer[1][1], 4 * H * (1 + 4.0 / 128) + 6 * 4 * H, 1e-6);
    CHECK_NEAR(o.a2a_device_step, 15360.0 * 4096 / 128 * (58.0 / 16) * o.a2a_token_layer[1][1], 1);
    CHECK_NEAR(o.grad_device_step, 6 * 127.0 / 128 * n + 6 * 0.5 * x, 1);
    /* ~6 x activated FLOPs per token plus attention */
    CHECK(o.flops_per_token > 6 * (act - V * H) && o.flops_per_token < 8 * act);
    CHECK_NEAR(o.t_compute, o.flops_per_token * 15360 * 4096 / (2048 * 989.5e12), 1e-9);
    CHECK(o.t_overlap <= o.t_serial);
    /* 1F1B at M = 15360 / 128 = 120: stage s holds min(16 - s, 120) micro-batches of its layers */
    CHECK(o.pp_m == 120 && o.pp_first[0] == 0 && o.pp_first[16] == 61);
    double want_act = 0;
    for (int s = 0; s < 16; s++) {
        CHECK(o.pp_in_flight[s] == 16 - s && o.pp_first[s + 1] > o.pp_first[s]);
        double a = 2.0 * 4096 * (16 - s) * (double)(o.pp_first[s + 1] - o.pp_first[s]) * o.act_per_token;
        CHECK_NEAR(o.pp_act[s], a, 1);
        if (a > want_act) want_act = a;
    }
    CHECK_NEAR(o.mem_act, want_act, 1);
    CHECK_NEAR(o.pp_bubble_analytic, 15.0 / 135, 1e-12);
    /* DualPipe (PP/2-1)(F&B+B-3W) with F&B 3F, B 2F, W F: 7 x 2F; 1F1B (PP-1)(F+B): 15 x 3F */
    CHECK(o.pp_dualpipe_bubble_f == 14 && o.pp_1f1b_bubble_f == 45);
    CHECK_NEAR(o.pp_dualpipe_share, 14.0 / (14 + 360), 1e-12);
    /* unequal stages: the simulated bubble is at least the analytic one */
    CHECK(o.pp_bubble_sim >= o.pp_bubble_analytic - 1e-12);
    ds_plan_free(&o);
    fprintf(stderr, "  estimate %.0fK .. %.0fK GPU hours per 10^12 tokens (published 180K)\n", o.gpu_hours_per_t_overlap / 1e3,
            o.gpu_hours_per_t_serial / 1e3);
    /* layouts that do not divide */
    in.pp = 3;
    CHECK(ds_plan(&c, &in, &o) == -1);
    ds_plan_free(&o);
    in.pp = 16, in.ep = 48;
    CHECK(ds_plan(&c, &in, &o) == -1);
    ds_plan_free(&o);
}

/* tiny's forward FLOPs per token at T = 64, by hand from its config
 * (H 128, 4 heads, q rank 64, kv rank 32, nope 32 + rope 16, v 32,
 * dense 384, experts 8 x 64 with top 2 + 1 shared, vocab 8192, 1 MTP):
 * attention weights 128·64 + 64·4·48 + 128·48 + 32·4·64 + 4·32·128 = 51200,
 * attention scores 2·4·(48+32)·65/2 = 20800 */
static const double tiny_dense = 2 * (51200 + 3 * 128 * 384) + 20800;
static const double tiny_moe = 2 * (51200 + 3 * 3 * 128 * 64 + 128 * 8) + 20800;
static const double tiny_head = 2 * 8192 * 128 + (2 * 2 * 128 * 128 + tiny_moe + 2 * 8192 * 128);

TEST(plan_pp_stages_bubble_by_hand) {
    ds_config c;
    CHECK(ds_preset(&c, "tiny") == 0);
    /* 2 devices, PP 2, --pp-layers 1,2, 8 sequences of 64 in micro-batches of 2: M = 4 */
    ds_plan_in in = {2, 2, 1, 2, 0, 2, 64, 8, 1e12, 1e9, 0, "1,2"};
    ds_plan_out o;
    CHECK(ds_plan(&c, &in, &o) == 0);
    const double f0 = tiny_dense, f1 = 2 * tiny_moe + tiny_head;
    CHECK(o.pp_m == 4 && o.pp_first[1] == 1 && o.pp_first[2] == 3);
    CHECK_NEAR(o.pp_cost[0], f0, 1e-6);
    CHECK_NEAR(o.pp_cost[1], f1, 1e-6);
    CHECK_NEAR(o.pp_share[0], f0 / (f0 + f1), 1e-12);
    /* S 2, f1 > f0, b = 2f: stage 1 never waits after its first input, so the
     * step is f0 + M·3·f1 + 2·f0 (stage 0's last backward) */
    const double span = 3 * f0 + 4 * 3 * f1, bubble = 1 - 4 * 3 * (f0 + f1) / (2 * span);
    CHECK_NEAR(o.pp_bubble_sim, bubble, 1e-12);
    CHECK_NEAR(o.pp_busy[0], 12 * f0 / span, 1e-12);
    CHECK_NEAR(o.pp_busy[1], 12 * f1 / span, 1e-12);
    CHECK_NEAR(o.pp_bubble_analytic, 1.0 / 5, 1e-15);
    CHECK(o.pp_in_flight[0] == 2 && o.pp_in_flight[1] == 1);
    CHECK_NEAR(o.pp_act[0], 2.0 * 2 * 64 * 2 * 1 * o.act_per_token, 1e-6);
    CHECK_NEAR(o.pp_act[1], 2.0 * 2 * 64 * 1 * 2 * o.act_per_token, 1e-6);
    CHECK_NEAR(o.pp_act_recompute[0], 2.0 * 2 * 64 * 2 * 1 * 128 + 2.0 * 2 * 64 * o.act_per_token, 1e-6);
    CHECK(o.pp_dualpipe_bubble_f == 0 && o.pp_1f1b_bubble_f == 3);
    ds_plan_free(&o);
    /* the explicit M; PP 3 is odd: no DualPipe */
    in = (ds_plan_in){3, 3, 1, 3, 0, 1, 64, 9, 1e12, 1e9, 7, NULL};
    CHECK(ds_plan(&c, &in, &o) == 0);
    CHECK(o.pp_m == 7 && o.pp_first[1] == 1 && o.pp_first[2] == 2 && o.pp_dualpipe_bubble_f < 0);
    CHECK_NEAR(o.pp_bubble_analytic, 2.0 / 9, 1e-15);
    CHECK(o.pp_in_flight[0] == 3 && o.pp_in_flight[1] == 2 && o.pp_in_flight[2] == 1);
    ds_plan_free(&o);
    /* a split that does not fit */
    in = (ds_plan_in){2, 2, 1, 2, 0, 2, 64, 8, 1e12, 1e9, 0, "2,2"};
    CHECK(ds_plan(&c, &in, &o) == -1);
    ds_plan_free(&o);
}

TEST(plan_pp_cli) {
    char out[16384];
    int rc = ds_test_sh(out, sizeof out,
                        "$DSV3 plan --config tiny --gpus 4 --gpus-per-node 4 --ep 1 --pp 4 --micro-batches 8 --seq 64 "
                        "--global-batch 8 2>&1");
    CHECK_MSG(rc == 2 && strstr(out, "--pp 4: the model has 3 layers"), "%s", out);
    rc = ds_test_sh(out, sizeof out,
                    "$DSV3 plan --config tiny --gpus 2 --gpus-per-node 2 --ep 1 --pp 2 --micro-batches 8 --seq 64 "
                    "--global-batch 8 --pp-layers 2,1 2>&1");
    /* stage 0: 1 dense + 1 MoE layer, stage 1: 1 MoE layer + head */
    char want[256];
    const double f0 = tiny_dense + tiny_moe, f1 = tiny_moe + tiny_head;
    snprintf(want, sizeof want, "%.1f%%", 100 * f0 / (f0 + f1));
    CHECK_MSG(rc == 0 && strstr(out, "1F1B over 8 micro-batches of 1 x 64 tokens; layers split by --pp-layers") &&
                  strstr(out, "0-1 (2)             1    1") && strstr(out, want) &&
                  strstr(out, "analytic (S-1)/(M+S-1) = 0.1111") && strstr(out, "= 0F against 1F1B's (PP-1)(F+B) = 3F") &&
                  strstr(out, "as a share of a step of M(F+B): 0.0000 against 0.1111"),
              "%s", out);
    /* the simulated bubble with f1 > f0 (see plan_pp_stages_bubble_by_hand) */
    snprintf(want, sizeof want, "(forward f = cost, backward 2f) %.4f", 1 - 8 * 3 * (f0 + f1) / (2 * (3 * f0 + 8 * 3 * f1)));
    CHECK_MSG(strstr(out, want), "want '%s' in %s", want, out);
    /* the same figures as JSON */
    char path[1024];
    snprintf(path, sizeof path, "%s/plan.json", ds_test_tmpdir());
    rc = ds_test_sh(out, sizeof out,
                    "$DSV3 plan --config tiny --gpus 2 --gpus-per-node 2 --ep 1 --pp 2 --micro-batches 8 --seq 64 "
                    "--global-batch 8 --pp-layers 2,1 --json %s", path);
    size_t len = 0;
    char *txt = rc == 0 ? ds_read_file(path, &len) : NULL;
    cJSON *j = txt ? ds_json_parse(txt, len, path) : NULL, *pl = cJSON_GetObjectItem(j, "pipeline");
    cJSON *st = cJSON_GetObjectItem(pl, "stages"), *dp = cJSON_GetObjectItem(pl, "dualpipe");
    CHECK_MSG(j && cJSON_GetArraySize(st) == 2 && cJSON_IsObject(dp), "rc %d: %s", rc, out);
    if (j && cJSON_GetArraySize(st) == 2 && cJSON_IsObject(dp)) {
#define NUM(o, k) cJSON_GetNumberValue(cJSON_GetObjectItem(o, k))
        cJSON *s0 = cJSON_GetArrayItem(st, 0), *s1 = cJSON_GetArrayItem(st, 1);
        CHECK(NUM(pl, "micro_batches") == 8 && fabs(NUM(pl, "bubble_analytic") - 1.0 / 9) < 1e-15);
        CHECK_NEAR(NUM(pl, "bubble_simulated"), 1 - 8 * 3 * (f0 + f1) / (2 * (3 * f0 + 8 * 3 * f1)), 1e-12);
        CHECK(NUM(s0, "first_layer") == 0 && NUM(s0, "layers") == 2 && NUM(s1, "first_layer") == 2 && NUM(s1, "layers") == 1);
        CHECK(NUM(s0, "cost") == f0 && NUM(s1, "cost") == f1);
        CHECK(NUM(s0, "in_flight") == 2 && NUM(s1, "in_flight") == 1);
        /* stage 0: 2 micro-batches of 1 x 64 tokens over 2 layers, BF16 */
        CHECK_NEAR(NUM(s0, "act_bytes"), 2.0 * 64 * 2 * 2 * NUM(j, "act_per_token"), 1e-6);
        CHECK_NEAR(NUM(j, "mem_act"), NUM(s0, "act_bytes"), 1e-6);
        CHECK(NUM(dp, "bubble_f") == 0 && NUM(dp, "bubble_1f1b_f") == 3 && NUM(dp, "share") == 0);
#undef NUM
    }
    cJSON_Delete(j);
    free(txt);
    /* usage errors: exit 2, the first line says what */
    const char *bad[][2] = {
        {"--micro-batches 0", "--micro-batches: got '0'"},
        {"--pp 62 --gpus 62", "--pp 62: the model has 61 layers, at least one per stage"},
        {"--pp 2 --gpus 2 --ep 1 --pp-layers 30,30", "--pp-layers 30,30: the counts sum to 60, the model has 61 layers"},
        {"--pp 2 --gpus 2 --ep 1 --pp-layers 30,x", "--pp-layers 30,x: want 2 positive layer counts"},
        {"--pp 2 --gpus 2 --ep 1 --pp-layers 61,0", "--pp-layers 61,0: want 2 positive layer counts"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rc = ds_test_sh(out, sizeof out, "$DSV3 plan %s", bad[i][0]);
        char *nl = strchr(out, '\n');
        if (nl) *nl = 0; /* the error is the first line (then the pointer to --help) */
        CHECK_MSG(rc == 2 && strstr(out, bad[i][1]) && strstr(out, "dsv3 plan: ") == out, "%s: rc %d: %s", bad[i][0], rc,
                  out);
    }
}

TEST(plan_cli) {
    char out[8192];
    int rc = ds_test_sh(out, sizeof out, "$DSV3 plan 2>&1");
    CHECK_MSG(rc == 0 && strstr(out, "671026404352 total (671.0B)") && strstr(out, "36.6B without the input embedding") &&
                  strstr(out, "estimate / published"), "%s", out);
    rc = ds_test_sh(out, sizeof out, "$DSV3 plan --pp 3 2>&1");
    CHECK_MSG(rc == 1 && strstr(out, "--pp 3 does not divide --gpus 2048"), "%s", out);
}
