/*
 * resident_check.h — checks shared by the FP8- and BF16-resident inference
 * tests (test_fp8_infer.c, test_bf16_infer.c): load a folder resident or
 * widened, the full forward's logits, the decode engine against them, and
 * greedy generation against the forward's argmax.  Static functions for the
 * test files that include it.
 */
#ifndef DS_TEST_RESIDENT_CHECK_H
#define DS_TEST_RESIDENT_CHECK_H

#include <math.h>
#include <string.h>

#include "base/base.h"
#include "infer/infer.h"
#include "model/backward.h"
#include "model/model.h"
#include "test.h"

/* ds_model_load_ex with the resident mode on (FP8 and BF16 weights kept) or
 * off (everything widened to FP32); a failure is a failed CHECK */
static int rc_load(ds_model *m, const char *dir, int resident) {
    ds_load_opts o = {.fp8_resident = resident};
    int rc = ds_model_load_ex(m, dir, &o);
    CHECK_MSG(rc == 0, "%s", ds_errmsg());
    return rc;
}

/* logits (B, T, V) of the full forward, and when mtp is not NULL the first MTP
 * module's (B, T-1, V) into *mtp; NULL on failure */
static float *rc_forward_logits(const ds_model *m, const struct ds_ops *ops, const int32_t *ids, int64_t B,
                                int64_t T, float **mtp) {
    ds_acts a;
    const int64_t V = m->cfg.vocab_size;
    if (ds_acts_create(&a, m, B, T, mtp != NULL)) return NULL;
    float *out = NULL;
    if (ds_model_forward(m, &a, ops, ids) == 0) {
        out = ds_malloc((size_t)(B * T * V) * sizeof(float));
        memcpy(out, a.logits, (size_t)(B * T * V) * sizeof(float));
        if (mtp) {
            *mtp = ds_malloc((size_t)(B * (T - 1) * V) * sizeof(float));
            memcpy(*mtp, a.mtp_logits[0], (size_t)(B * (T - 1) * V) * sizeof(float));
        }
    }
    ds_acts_free(&a);
    return out;
}

/* The decode engine (cpu ops) against the forward's logits full (B, T, V):
 * per sequence, prefill 4 tokens in chunks of 1 and of 5, then steps of one
 * token; with mtp (B, T-1, V) given, MTP module steps right behind the main
 * steps (worst into *worst_mtp); when B == 2 both sequences in lockstep
 * (2-row gemv steps).  Returns the worst max|Δ|/max|ref| over all steps. */
static double rc_decode_vs_forward(const ds_model *m, const int32_t *ids, int64_t B, int64_t T, const float *full,
                                   const float *mtp, double *worst_mtp) {
    const int64_t V = m->cfg.vocab_size, P = 4;
    double worst = 0;
    ds_engine e;
    for (int chunk = 1; chunk <= 5; chunk += 4)
        for (int64_t b = 0; b < B; b++) {
            CHECK(ds_engine_create(&e, m, &ds_ops_cpu, 1, T, chunk, mtp != NULL) == 0);
            CHECK(ds_engine_prefill(&e, ids + b * T, P) == 0);
            double err = ds_test_max_rel(e.logits, full + (b * T + P - 1) * V, (size_t)V, 0);
            if (err > worst) worst = err;
            for (int64_t t = P; t < T; t++) {
                CHECK(ds_engine_step(&e, ids + b * T + t, 1, 1) == 0);
                err = ds_test_max_rel(e.logits, full + (b * T + t) * V, (size_t)V, 0);
                if (err > worst) worst = err;
            }
            ds_engine_free(&e);
        }
    if (mtp) {
        *worst_mtp = 0;
        for (int64_t b = 0; b < B; b++) {
            CHECK(ds_engine_create(&e, m, &ds_ops_cpu, 1, T, 1, 1) == 0);
            for (int64_t t = 0; t + 1 < T; t++) {
                CHECK(ds_engine_step(&e, ids + b * T + t, 1, 1) == 0);
                CHECK(ds_engine_mtp_step(&e, e.hfinal, ids + b * T + t + 1, 1, 1) == 0);
                double err = ds_test_max_rel(e.mtp_logits, mtp + (b * (T - 1) + t) * V, (size_t)V, 0);
                if (err > *worst_mtp) *worst_mtp = err;
            }
            ds_engine_free(&e);
        }
    }
    if (B == 2) {
        CHECK(ds_engine_create(&e, m, &ds_ops_cpu, 2, T, 3, 0) == 0);
        const int64_t P2 = 5;
        int32_t pr[2 * 5], nx[2];
        for (int64_t b = 0; b < 2; b++) memcpy(pr + b * P2, ids + b * T, (size_t)P2 * sizeof(int32_t));
        CHECK(ds_engine_prefill(&e, pr, P2) == 0);
        for (int64_t t = P2; t < T; t++) {
            for (int64_t b = 0; b < 2; b++) nx[b] = ids[b * T + t];
            CHECK(ds_engine_step(&e, nx, 1, 1) == 0);
            for (int64_t b = 0; b < 2; b++) {
                double err = ds_test_max_rel(e.logits + b * V, full + (b * T + t) * V, (size_t)V, 0);
                if (err > worst) worst = err;
            }
        }
        ds_engine_free(&e);
    }
    return worst;
}

/* greedy generation of 6 tokens after the first 4 ids: each token is the
 * forward's argmax on the sequence so far (another id only on a near tie) */
static void rc_check_greedy(const ds_model *m, const int32_t *ids) {
    const int64_t V = m->cfg.vocab_size;
    int32_t out[8];
    int64_t nout = 0;
    ds_gen_opts o = {.max_tokens = 6, .sp = {.temperature = 0, .top_p = 1}};
    ds_gen_stats st;
    CHECK_MSG(ds_generate(m, &ds_ops_cpu, ids, 4, &o, out, &nout, NULL, NULL, &st) == 0, "%s", ds_errmsg());
    CHECK(nout == 6);
    if (nout != 6) return;
    int32_t seq[10];
    memcpy(seq, ids, 4 * sizeof(int32_t));
    memcpy(seq + 4, out, 6 * sizeof(int32_t));
    float *lg = rc_forward_logits(m, &ds_ops_cpu, seq, 1, 10, NULL);
    CHECK(lg != NULL);
    for (int64_t i = 0; lg && i < 6; i++) {
        const float *row = lg + (3 + i) * V;
        int32_t am;
        ds_ops_ref.argmax_rows(&am, row, 1, V);
        CHECK_MSG(am == out[i] || fabsf(row[am] - row[out[i]]) < 1e-4f, "step %lld: %d vs %d", (long long)i, am, out[i]);
    }
    free(lg);
}

/* backward and save need FP32 parameters: both refuse the resident model m
 * with an error naming its kind (what: "FP8-resident", "BF16-resident") */
static void rc_check_refuses_training(ds_model *m, const char *what) {
    ds_acts a;
    ds_grads g;
    ds_bwd w;
    ds_loss_terms t;
    int32_t ids[4] = {1, 2, 3, 4};
    CHECK(ds_acts_create(&a, m, 1, 4, 0) == 0 && ds_model_forward(m, &a, &ds_ops_cpu, ids) == 0);
    ds_loss_opts lo = ds_loss_opts_default();
    CHECK(ds_bwd_create(&w, m, 1, 4) == 0);
    g.g = NULL;
    CHECK(ds_model_backward(m, &a, &ds_ops_cpu, &g, &w, NULL, &lo, &t) != 0 && strstr(ds_errmsg(), what));
    char sdir[600];
    snprintf(sdir, sizeof sdir, "%s/saved", ds_test_tmpdir());
    CHECK(ds_model_save(m, sdir) != 0 && strstr(ds_errmsg(), what));
    ds_bwd_free(&w);
    ds_acts_free(&a);
}

#endif
