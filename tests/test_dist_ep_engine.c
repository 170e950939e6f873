/*
 * test_dist_ep_engine.c — expert parallelism on the engine (docs/engine.md
 * §2.4, §2.6): the MoE layers under an expert-parallel group of one
 * (model/moe_ep.h, dist/ep.h) run on the fakedev table, whose memory faults
 * on any host access outside its entries, so the exchange, the grouped expert
 * GEMMs, the regrouping, the BF16/FP8 wire formats and the node count touch
 * row data only through the table.  Oracle: the same model on the host (cpu
 * table) — without expert parallelism for the FP32 dispatch (the plain MoE
 * path), with it for the BF16 and FP8 dispatches (the same rounding).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/ops.h"
#include "base/base.h"
#include "dist/comm.h"
#include "model/backward.h"
#include "model/moe_ep.h"
#include "model/presets.h"
#include "fakedev_pair.h"
#include "test.h"

static double max_rel(const float *a, const float *b, int64_t n) {
    double d = 0, s = 1e-6;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]), m = fabs((double)b[i]);
        if (e > d || e != e) d = e != e ? INFINITY : e;
        if (m > s) s = m;
    }
    return d / s;
}

TEST(dist_ep_fakedev_matches_host) {
    const struct ds_ops *fd = ds_backend_get("fakedev");
    CHECK(fd != NULL && fd->host_visible == 0);
    TEST_RETURN_IF_FAILED();
    ds_fakedev_pair fp;
    CHECK(ds_fakedev_pair_create(&fp, fd, 11, 2, 8) == 0);
    TEST_RETURN_IF_FAILED();
    const int64_t B = 2, T = 8, N = B * T, V = fp.c.vocab_size;
    int32_t ids[16];
    for (int64_t i = 0; i < N; i++) ids[i] = (int32_t)((i * 7919 + 5) % V);
    float *lg = malloc((size_t)(N * V) * sizeof(float)), *gg = malloc((size_t)fp.gh.n * sizeof(float));
    ds_loss_opts o = ds_loss_opts_default();
    o.mtp_lambda = 0.5;
    int64_t nmoe_main = 0; /* MoE blocks of the trunk (the MTP module's adds its shorter rows) */
    for (int64_t l = 0; l < fp.c.num_hidden_layers; l++) nmoe_main += fp.d.blocks[l].moe != 0;
    static const char *const names[] = {"fp32", "bf16", "fp8"};
    for (int prec = DS_EP_FP32; prec <= DS_EP_FP8; prec++) {
        ds_moe_ep xh, xd;
        int eh = prec != DS_EP_FP32; /* the host oracle rounds the same way */
        CHECK(!eh || ds_moe_ep_create(&xh, &fp.h, ds_comm_single(), 1, prec, 0) == 0);
        CHECK(ds_moe_ep_create(&xd, &fp.d, ds_comm_single(), 1, prec, 0) == 0);
        TEST_RETURN_IF_FAILED();
        fp.h.ep = eh ? &xh : NULL, fp.d.ep = &xd;
        ds_grads_zero(&fp.gh), ds_grads_zero(&fp.gd);
        ds_loss_terms th, td;
        CHECK(ds_model_forward(&fp.h, &fp.ah, &ds_ops_cpu, ids) == 0 && ds_model_forward(&fp.d, &fp.ad, fd, ids) == 0);
        CHECK(ds_model_backward(&fp.h, &fp.ah, &ds_ops_cpu, &fp.gh, &fp.wh, NULL, &o, &th) == 0);
        CHECK(ds_model_backward(&fp.d, &fp.ad, fd, &fp.gd, &fp.wd, NULL, &o, &td) == 0);
        fd->copy_d2h(lg, fp.ad.logits, (size_t)(N * V) * sizeof(float));
        fd->copy_d2h(gg, fp.gd.g, (size_t)fp.gh.n * sizeof(float));
        double dl = max_rel(lg, fp.ah.logits, N * V), dg = max_rel(gg, fp.gh.g, fp.gh.n);
        double dloss = fabs(th.loss - td.loss) / fabs(th.loss);
        CHECK_MSG(dl <= 1e-6 && dg <= 1e-6 && dloss <= 1e-6, "%s dispatch: logits %.3g, gradient %.3g, loss %.3g",
                  names[prec], dl, dg, dloss);
        /* every row stayed on the one rank; each token reaches one node (the MTP module's tokens too) */
        CHECK_MSG(xd.rows_in == xd.rows_local && xd.rows_in == xd.tok_layers * fp.c.num_experts_per_tok &&
                      xd.node_max == 1 && xd.node_sum == xd.tok_layers && xd.tok_layers > nmoe_main * N,
                  "rows %lld in, %lld local; node max %lld, sum %lld over %lld", (long long)xd.rows_in,
                  (long long)xd.rows_local, (long long)xd.node_max, (long long)xd.node_sum, (long long)xd.tok_layers);
        fp.h.ep = fp.d.ep = NULL;
        if (eh) ds_moe_ep_free(&xh);
        ds_moe_ep_free(&xd);
    }
    free(lg), free(gg);
    ds_bwd_free(&fp.wh), ds_bwd_free(&fp.wd), ds_grads_free(&fp.gh), ds_grads_free(&fp.gd);
    ds_acts_free(&fp.ah), ds_acts_free(&fp.ad);
    ds_model_free(&fp.h), ds_model_free(&fp.d);
}

/* The BF16 wire entries (cast_f32_bf16 / cast_bf16_f32) of the cpu and ref
 * tables.  Oracles: hand-worked bit patterns (ties to even, NaN kept quiet,
 * overflow to infinity), and for random values the nearer of the two BF16
 * neighbours measured in double (the even one on a tie); widening is the
 * top half of the FP32 bits.  n spans the threaded size. */
static float f_of(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

TEST(backend_ops_cast_bf16) {
    static const uint32_t in[] = {0x3f800000, 0x3f808000, 0x3f818000, 0x3f808001, 0xc0200000, 0x7f800000,
                                  0xff800000, 0x7fc00000, 0x7f800001, 0x7f7fffff, 0x00000001, 0x80000000};
    static const uint16_t want[] = {0x3f80, 0x3f80, 0x3f82, 0x3f81, 0xc020, 0x7f80,
                                    0xff80, 0x7fc0, 0x7fc0, 0x7f80, 0x0000, 0x8000};
    const int nh = (int)(sizeof in / sizeof in[0]);
    const struct ds_ops *const tabs[] = {&ds_ops_cpu, &ds_ops_ref};
    const int64_t n = 70000;
    float *x = malloc((size_t)n * 4), *y = malloc((size_t)n * 4);
    uint16_t *h = malloc((size_t)n * 2);
    ds_rng r;
    ds_rng_seed(&r, 53);
    for (int i = 0; i < nh; i++) x[i] = f_of(in[i]);
    for (int64_t i = nh; i < n; i++) x[i] = ldexpf(ds_rng_normal(&r), (int)ds_rng_below(&r, 40) - 20);
    for (int t = 0; t < 2; t++) {
        memset(h, 0xff, (size_t)n * 2);
        tabs[t]->cast_f32_bf16(h, x, n);
        int bad = 0;
        for (int i = 0; i < nh; i++) bad += h[i] != want[i];
        CHECK_MSG(!bad, "%s cast_f32_bf16: %d hand-worked values off", tabs[t]->name, bad);
        bad = 0;
        for (int64_t i = nh; i < n; i++) {
            uint32_t u;
            memcpy(&u, &x[i], 4);
            uint16_t lo = (uint16_t)(u >> 16), hi = (uint16_t)(lo + 1);
            double dlo = fabs((double)x[i] - f_of((uint32_t)lo << 16)), dhi = fabs((double)x[i] - f_of((uint32_t)hi << 16));
            uint16_t w = dlo < dhi ? lo : dhi < dlo ? hi : (lo & 1) ? hi : lo;
            bad += h[i] != w;
        }
        CHECK_MSG(!bad, "%s cast_f32_bf16: %d random values off the nearest-even BF16", tabs[t]->name, bad);
        tabs[t]->cast_bf16_f32(y, h, n);
        bad = 0;
        for (int64_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, &y[i], 4);
            bad += u != (uint32_t)h[i] << 16;
        }
        CHECK_MSG(!bad, "%s cast_bf16_f32: %d values not the widened bits", tabs[t]->name, bad);
    }
    free(x), free(y), free(h);
}
