/*
 * cmd_ep_check.c — `dsv3 ep-check --ep E [--config PRESET] [--batch B]
 * [--dispatch-precision P]`: one forward and backward of a random model
 * (MTP on, sequence-wise balance loss on) with its MoE layers spread over
 * expert-parallel groups of E processes (model/moe_ep.h), each process
 * taking B/P rows, against the same model run in this process alone on all
 * B rows: the logits of this rank's rows, the loss and the all-reduced
 * gradient.  With a BF16 or FP8 dispatch the one-process run applies the
 * same rounding (an expert-parallel group of 1), and the distance of both
 * to the unrounded model is printed too (the precision's own error).
 * Prints the largest relative differences; exits 1 when one is over --tol
 * (default 1e-6).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cli/cli.h"
#include "dist/comm.h"
#include "model/backward.h"
#include "model/moe_ep.h"
#include "model/presets.h"

static double max_rel(const float *a, const float *b, int64_t n) {
    double d = 0, s = 1e-6;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]), m = fabs((double)b[i]);
        if (e > d) d = e;
        if (m > s) s = m;
    }
    return d / s;
}

static int run(int argc, char **argv) {
    long long ep = 0, batch = 4, seq = 16, seed = 7;
    const char *config = "tiny", *disp = "fp32";
    double tol = 1e-6;
    const ds_opt opts[] = {
        {"--ep", DS_OPT_INT, &ep, "E  expert-parallel group size (required)", DS_RANGE(1, 1 << 20)},
        {"--config", DS_OPT_STR, &config, "PRESET|config.json  model (default tiny)"},
        {"--batch", DS_OPT_INT, &batch, "B  rows in all (default 4)", DS_RANGE(1, 1 << 16)},
        {"--seq", DS_OPT_INT, &seq, "T  tokens per row (default 16)", DS_RANGE(2, 1 << 16)},
        {"--seed", DS_OPT_INT, &seed, "S  weights and tokens (default 7)", DS_MIN(0)},
        {"--dispatch-precision", DS_OPT_STR, &disp, "fp32|bf16|fp8  rows sent to the owners (default fp32)"},
        {"--tol", DS_OPT_FLOAT, &tol, "X  largest relative difference allowed (default 1e-6)", DS_GT(0)},
    };
    ds_cli_parse("ep-check", "--ep E [--config PRESET] [--batch B] [--dispatch-precision P]", argc, argv, opts, 7,
                 NULL, 0, NULL);
    static const char *const g_disp[] = {"fp32", "bf16", "fp8"};
    ds_cli_check_choice("ep-check", "--dispatch-precision: unknown value", disp, g_disp, 3);
    if (!ep) ds_cli_usage_error("ep-check", "--ep E is required");
    ds_cli_check_config("ep-check", config);
    ds_comm *w = ds_comm_world();
    const int P = w->size, R = w->rank;
    if (batch % P) ds_cli_usage_error("ep-check", "--batch %lld is not a multiple of the %d processes", batch, P);
    ds_config c;
    if ((ds_config_is_path(config) ? ds_config_load(&c, config) : ds_preset(&c, config)) || ds_config_validate(&c, config))
        return ds_cli_fail("ep-check");
    if (!ds_config_is_path(config)) c.vocab_size = 512;
    ds_model m;
    if (ds_model_create(&m, &c)) return ds_cli_fail("ep-check");
    ds_model_init_random(&m, (uint64_t)seed);
    struct ds_ops ops;
    if (ds_backend_table(&ops, NULL, DS_PREC_FP32)) return ds_cli_fail("ep-check");
    const int64_t B = batch, T = seq, Bl = B / P, V = c.vocab_size;
    int32_t *ids = malloc((size_t)(B * T) * sizeof(int32_t)), *tgt = malloc((size_t)(B * T) * sizeof(int32_t));
    ds_rng r;
    ds_rng_seed(&r, (uint64_t)seed + 1);
    for (int64_t i = 0; i < B * T; i++) ids[i] = (int32_t)ds_rng_below(&r, (uint64_t)V);
    for (int64_t i = 0; i < B * T; i++) tgt[i] = i % T == T - 1 ? DS_IGNORE_INDEX : ids[i + 1];
    ds_loss_opts lo = ds_loss_opts_default();
    lo.mtp_lambda = 0.3, lo.balance = DS_BAL_SEQ, lo.alpha = 1e-3;
    lo.ce_denom = (double)ds_count_targets(tgt, B, T, 0, DS_IGNORE_INDEX);
    for (int64_t k = 1; k <= c.num_nextn_predict_layers && k <= DS_MAX_MTP; k++)
        lo.mtp_denom[k - 1] = (double)ds_count_targets(tgt, B, T, k, DS_IGNORE_INDEX);
    lo.seq_denom = (double)B;
    /* one process: all rows, all experts */
    ds_acts a1, a2;
    ds_bwd w1, w2;
    ds_grads g1, g2;
    ds_loss_terms t1, t2;
    int mtp = c.num_nextn_predict_layers > 0;
    if (ds_acts_create(&a1, &m, B, T, mtp) || ds_bwd_create(&w1, &m, B, T) || ds_grads_create(&g1, &m) ||
        ds_acts_create(&a2, &m, Bl, T, mtp) || ds_bwd_create(&w2, &m, Bl, T) || ds_grads_create(&g2, &m))
        return ds_cli_fail("ep-check");
    ds_grads_zero(&g1), ds_grads_zero(&g2);
    int prec = ds_ep_precision_from_name(disp);
    /* the unrounded model: its logits kept for the precision's error */
    float *l0 = NULL;
    if (prec != DS_EP_FP32) {
        if (ds_model_forward(&m, &a1, &ops, ids)) return ds_cli_fail("ep-check");
        l0 = malloc((size_t)(B * T * V) * sizeof(float));
        memcpy(l0, a1.logits, (size_t)(B * T * V) * sizeof(float));
    }
    ds_moe_ep x1;
    int have1 = 0;
    if (prec != DS_EP_FP32) {
        if (ds_moe_ep_create(&x1, &m, w, 1, prec, 0)) {
            ds_cli_fail("ep-check");
            ds_comm_abort(1, NULL);
        }
        have1 = 1;
        m.ep = &x1;
    }
    if (ds_model_forward(&m, &a1, &ops, ids) || ds_model_backward(&m, &a1, &ops, &g1, &w1, tgt, &lo, &t1))
        return ds_cli_fail("ep-check");
    m.ep = NULL;
    /* this rank's rows with the experts over the group */
    ds_moe_ep x;
    if (ds_moe_ep_create(&x, &m, w, (int)ep, prec, 0)) {
        ds_cli_fail("ep-check");
        ds_comm_abort(1, NULL);
    }
    m.ep = &x;
    if (ds_model_forward(&m, &a2, &ops, ids + R * Bl * T) ||
        ds_model_backward(&m, &a2, &ops, &g2, &w2, tgt + R * Bl * T, &lo, &t2)) {
        ds_cli_fail("ep-check");
        ds_comm_abort(1, NULL);
    }
    m.ep = NULL;
    double loss = t2.loss;
    ds_allreduce(w, &loss, 1, DS_COMM_F64, DS_COMM_SUM);
    ds_allreduce(w, g2.g, g2.n, DS_COMM_F32, DS_COMM_SUM);
    double dl = max_rel(a2.logits, a1.logits + R * Bl * T * V, Bl * T * V);
    double dg = max_rel(g2.g, g1.g, g1.n), dloss = fabs(loss - t1.loss) / fabs(t1.loss);
    int64_t el = 0, mx = x.node_max;
    for (int64_t l = 0; l < m.nblocks; l++)
        if (m.blocks[l].moe)
            for (int64_t e = 0; e < c.n_routed_experts; e++) el += a2.blk[l].counts[e];
    printf("ep-check: rank %d of %d, ep %lld, dispatch %s: %lld rows routed here, %lld computed here; logits %.3g, "
           "loss %.3g, gradient %.3g (relative to max |value|); nodes/token max %lld\n",
           R, P, ep, disp, (long long)el, (long long)x.rows_local, dl, dloss, dg, (long long)mx);
    if (l0)
        printf("ep-check: rank %d: %s dispatch against the unrounded model: logits %.3g\n", R, disp,
               max_rel(a2.logits, l0 + R * Bl * T * V, Bl * T * V));
    fflush(stdout);
    int bad = !(dl <= tol && dg <= tol && dloss <= tol);
    ds_moe_ep_free(&x);
    if (have1) ds_moe_ep_free(&x1);
    free(l0);
    ds_acts_free(&a1), ds_acts_free(&a2), ds_bwd_free(&w1), ds_bwd_free(&w2), ds_grads_free(&g1), ds_grads_free(&g2);
    ds_model_free(&m);
    free(ids), free(tgt);
    if (bad) {
        fprintf(stderr, "dsv3 ep-check: rank %d: difference over --tol %g\n", R, tol);
        ds_comm_abort(1, NULL);
    }
    ds_comm_finalize();
    return 0;
}

DS_COMMAND("ep-check", "check MoE layers under expert parallelism against one process (mpirun -np P dsv3 ep-check --ep E)", run)
