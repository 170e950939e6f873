/*
 * test_plan.c — `dsv3 plan` (train/plan.h) on DeepSeek-V3's config against
 * hand computations from the published config.json numbers (not the
 * layout code): parameter counts 671B / 37B, the memory, all-to-all and
 * gradient figures of its 2048-GPU layout.
 */
#include <string.h>

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
    ds_plan_in in = {2048, 8, 64, 16, 0, 1, 4096, 15360, 989.5e12, 50e9};
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
    fprintf(stderr, "  estimate %.0fK .. %.0fK GPU hours per 10^12 tokens (published 180K)\n", o.gpu_hours_per_t_overlap / 1e3,
            o.gpu_hours_per_t_serial / 1e3);
    /* layouts that do not divide */
    in.pp = 3;
    CHECK(ds_plan(&c, &in, &o) == -1);
    in.pp = 16, in.ep = 48;
    CHECK(ds_plan(&c, &in, &o) == -1);
}

TEST(plan_cli) {
    char out[8192];
    int rc = ds_test_sh(out, sizeof out, "$DSV3 plan 2>&1");
    CHECK_MSG(rc == 0 && strstr(out, "671026404352 total (671.0B)") && strstr(out, "36.6B without the input embedding") &&
                  strstr(out, "estimate / published"), "%s", out);
    rc = ds_test_sh(out, sizeof out, "$DSV3 plan --pp 3 2>&1");
    CHECK_MSG(rc == 1 && strstr(out, "--pp 3 does not divide --gpus 2048"), "%s", out);
}
