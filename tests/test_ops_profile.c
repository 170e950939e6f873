/*
 * test_ops_profile.c — the profiling ops table (backend/profile.h): it
 * changes no result (a tiny MoE model's loss and every gradient, bit for bit,
 * against the plain CPU table), times the outermost calls and counts the
 * nested ones (the experts' linears inside grouped_linear_*), keeps NULL
 * entries NULL, and `bench-train --profile` reports it.
 */
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "backend/profile.h"
#include "base/base.h"
#include "model/backward.h"
#include "model/model.h"
#include "model/presets.h"
#include "test.h"

static long long calls_of(const char *name, long long *nested, double *sec) {
    long long c = -1;
    for (int e = 0;; e++) {
        long long n, k;
        double s;
        const char *nm = ds_ops_profile_entry(e, &k, &n, &s);
        if (!nm) break;
        if (!strcmp(nm, name)) {
            c = k;
            if (nested) *nested = n;
            if (sec) *sec = s;
        }
    }
    return c;
}

TEST(ops_profile_changes_nothing_and_counts_calls) {
    ds_config c;
    CHECK(ds_preset(&c, "tiny") == 0);
    c.vocab_size = 512;
    ds_model m;
    CHECK(ds_model_create(&m, &c) == 0);
    ds_model_init_random(&m, 5);
    /* N·K = 512 >= 64·E: the experts run in grouped_linear_*'s parallel loop */
    const int64_t B = 4, T = 64, N = B * T;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)N);
    ds_rng r;
    ds_rng_seed(&r, 9);
    for (int64_t i = 0; i < N; i++) ids[i] = (int32_t)ds_rng_below(&r, 512);
    ds_loss_opts lo = ds_loss_opts_default();
    lo.mtp_lambda = 0.3;
    ds_acts a0, a1;
    ds_grads g0, g1;
    ds_bwd w;
    ds_loss_terms t0, t1;
    CHECK(ds_acts_create(&a0, &m, B, T, 1) == 0 && ds_acts_create(&a1, &m, B, T, 1) == 0);
    ds_grads_create(&g0, &m);
    ds_grads_create(&g1, &m);
    CHECK(ds_bwd_create(&w, &m, B, T) == 0);
    CHECK(ds_model_forward(&m, &a0, &ds_ops_cpu, ids) == 0);
    CHECK(ds_model_backward(&m, &a0, &ds_ops_cpu, &g0, &w, NULL, &lo, &t0) == 0);

    const struct ds_ops *p = ds_ops_profile(&ds_ops_cpu);
    CHECK(!strcmp(p->name, ds_ops_cpu.name) && p->host_visible == ds_ops_cpu.host_visible);
    CHECK(p->matmul_forward != ds_ops_cpu.matmul_forward); /* wrapped */
    CHECK(calls_of("matmul_forward", NULL, NULL) == 0);
    CHECK(ds_model_forward(&m, &a1, p, ids) == 0);
    CHECK(ds_model_backward(&m, &a1, p, &g1, &w, NULL, &lo, &t1) == 0);
    CHECK(t0.loss == t1.loss);
    CHECK(ds_test_max_rel(g1.g, g0.g, (size_t)g0.n, 1e-30) == 0);

    long long nested = -1;
    double sec = -1;
    CHECK(calls_of("no such entry", NULL, NULL) == -1);
    CHECK(calls_of("matmul_forward", NULL, &sec) > 0 && sec > 0);
    CHECK(calls_of("attention_forward", NULL, NULL) == c.num_hidden_layers + c.num_nextn_predict_layers);
    CHECK(calls_of("attention_backward", NULL, NULL) == c.num_hidden_layers + c.num_nextn_predict_layers);
    long long grouped = calls_of("grouped_linear_forward", NULL, NULL);
    CHECK(grouped > 0);
    /* the experts' GEMMs run inside grouped_linear_*: counted as nested, not timed */
    CHECK(calls_of("linear_forward", &nested, NULL) >= 0 && nested >= grouped);
    CHECK(calls_of("cross_entropy", NULL, NULL) == 1 + c.num_nextn_predict_layers);
    char js[4096];
    ds_ops_profile_json(js, sizeof js, 1);
    CHECK(js[0] == '{' && js[strlen(js) - 1] == '}' && strstr(js, "\"attention_forward\": {\"calls\": "));
    char tiny[8];
    ds_ops_profile_json(tiny, sizeof tiny, 1); /* truncated, terminated */
    CHECK(strlen(tiny) == 7);
    ds_ops_profile_reset();
    CHECK(calls_of("matmul_forward", &nested, &sec) == 0 && nested == 0 && sec == 0);

    /* a NULL entry of the inner table stays NULL */
    struct ds_ops part = ds_ops_cpu;
    part.weights_epoch = NULL, part.mla_absorbed_attention = NULL;
    p = ds_ops_profile(&part);
    CHECK(p->weights_epoch == NULL && p->mla_absorbed_attention == NULL && p->sumsq != NULL);

    ds_grads_free(&g0), ds_grads_free(&g1), ds_bwd_free(&w), ds_acts_free(&a0), ds_acts_free(&a1);
    ds_model_free(&m);
    free(ids);
}

TEST(cli_bench_train_profile) {
    const char *bin = getenv("DSV3") ? getenv("DSV3") : "./dsv3";
    char out[16384];
    int rc = ds_test_sh(out, sizeof out, "%s --threads 1 bench-train --config tiny --random 1,16 --iters 2 --profile 2>&1",
                        bin);
    CHECK_MSG(rc == 0, "%s", out);
    CHECK_MSG(strstr(out, "ops entry") && strstr(out, "(outside the entries)") && strstr(out, "\"profile\": {") &&
                  strstr(out, "\"adamw\": {\"calls\": 1.0"),
              "%s", out);
}

/* profile_gen.h is generated from struct ds_ops: an entry added to ops.h
 * without regenerating it would run unprofiled (copied through untimed) */
TEST(ops_profile_wrappers_match_ops_h) {
    char out[1024];
    int rc = ds_test_sh(out, sizeof out, "python3 tools/gen_ops_profile.py --check 2>&1");
    CHECK_MSG(rc == 0, "%s", out);
}
