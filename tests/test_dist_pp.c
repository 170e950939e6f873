/*
 * test_dist_pp.c — pipeline parallelism (`dsv3 train --pp S`, train/pp.h):
 * training over stages against the one-process run of the same global
 * batch (itself checked against PyTorch in test_train.c), the in-flight
 * activation arenas, checkpoints and resume, a dying stage, the step log's
 * pipeline fields and the usage errors.  Like test_dist.c: `mpirun -np P`
 * with a bounded time, skipped when mpirun is absent or dsv3 has no MPI.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "dist/comm.h"
#include "model/model.h"
#include "model/presets.h"
#include "train/pp_sched.h"
#include "test.h"
#include "dist_test.h"

/* one activation set of `stage` as the trainer printed it: "pipeline stage
 * s of S: layers a..b ..., K of M micro-batches ...: activation arenas X
 * bytes = K x Y (all M would take Z)" */
typedef struct {
    int s, S, l0, l1, K, M;
    long long x, y, z;
    long long here, whole; /* parameter floats */
} stage_line;

static int parse_stage(const char *out, int stage, stage_line *sl) {
    char key[64];
    snprintf(key, sizeof key, "pipeline stage %d of ", stage);
    const char *p = strstr(out, key);
    if (!p) return -1;
    memset(sl, 0, sizeof *sl);
    if (sscanf(p, "pipeline stage %d of %d: layers %d..%d", &sl->s, &sl->S, &sl->l0, &sl->l1) != 4) return -1;
    const char *q = strstr(p, "in flight: ");
    if (!q) return -1;
    if (sscanf(q, "in flight: activation arenas %lld bytes = %d x %lld (all %d would take %lld)", &sl->x, &sl->K,
               &sl->y, &sl->M, &sl->z) != 5)
        return -1;
    const char *h = strstr(q, "parameters here: ");
    if (!h || sscanf(h, "parameters here: %lld floats of %lld", &sl->here, &sl->whole) != 2) return -1;
    return 0;
}

/* 20 steps of tiny at PP 2 (2 processes, 1F1B over M = 2 and 4
 * micro-batches of a batch of 4) against one process with --batch 4/M
 * --grad-accum M (the same rows per micro-batch): losses within 1e-5, loads
 * and router biases exactly equal; the pipeline's bytes per step are the
 * M activations and M gradients of B/M x T x H floats; each stage holds
 * ds_pp_in_flight arenas, counted by the arena, fewer than M */
TEST(pp_train_np2_equals_one_process) {
    NEED_MPI();
    const char *d = dist_data();
    if (!d) { CHECK(0); return; }
    char out[16384], r1[600], r2[600];
    ds_config tc;
    CHECK(ds_preset(&tc, "tiny") == 0);
    for (int M = 2; M <= 4; M += 2) {
        snprintf(r1, sizeof r1, "%s/one-m%d", d, M);
        snprintf(r2, sizeof r2, "%s/pp2-m%d", d, M);
        int rc = ds_test_sh(out, sizeof out, "$DSV3 " TRAIN_ARGS " --data %s/data --out %s --steps 20 --batch %d --grad-accum %d 2>&1",
                            d, r1, 4 / M, M);
        CHECK_MSG(rc == 0, "one process: %s", out);
        rc = ds_test_sh(out, sizeof out, MPIRUN "$DSV3 " TRAIN_ARGS " --data %s/data --out %s --steps 20 --batch 4 --pp 2 --micro-batches %d 2>&1",
                        120, 2, d, r2, M);
        CHECK_MSG(rc == 0 && strstr(out, "| pp bubble ") && strstr(out, "| pp MB "), "PP 2: rc %d\n%s", rc, out);
        TEST_RETURN_IF_FAILED();
        run_log a, b;
        CHECK(read_log(r1, &a) == 0 && read_log(r2, &b) == 0);
        check_same_training(&a, &b, 0, 20, 1e-5, M == 2 ? "PP 2, M 2 vs one process" : "PP 2, M 4 vs one process");
        check_same_model(r1, r2, "PP 2");
        /* bytes between the stages: per micro-batch one hidden state forward
         * and its gradient back, (4/M) x 32 x H floats each */
        double act = (double)(4 / M) * 32 * (double)tc.hidden_size * 4;
        CHECK_MSG(b.act_bytes[5] == act && b.bytes[5] == 2 * M * act, "pp_bytes %.0f, pp_act_bytes %.0f, expected %.0f, %.0f",
                  b.bytes[5], b.act_bytes[5], 2 * M * act, act);
        /* activation memory: stage s keeps min(S - s, M) sets, fewer than M on stage 1 (and on stage 0 for M 4);
         * parameters: each stage its own layers, both the embedding (V = 300 from the data's tokenizer) */
        long long here[2] = {0, 0}, whole = 0;
        for (int s = 0; s < 2; s++) {
            stage_line sl;
            CHECK_MSG(parse_stage(out, s, &sl) == 0, "no line of stage %d:\n%s", s, out);
            TEST_RETURN_IF_FAILED();
            int K = s == 0 ? 2 : 1; /* min(S - s, M), S = 2 */
            CHECK_MSG(sl.K == K && sl.M == M && sl.x == (long long)K * sl.y && sl.z == (long long)M * sl.y && (sl.x < sl.z || K == M),
                      "stage %d: %d sets of %lld bytes = %lld (M %d: %lld)", s, sl.K, sl.y, sl.x, sl.M, sl.z);
            /* a stage's set holds its layers only: smaller than the whole model's set */
            ds_model tm;
            CHECK(ds_model_create(&tm, &tc) == 0);
            TEST_RETURN_IF_FAILED();
            size_t whole_set = ds_acts_arena_bytes(&tm, 4 / M, 32, 1, 0);
            ds_model_free(&tm);
            CHECK_MSG((size_t)sl.y < whole_set, "stage %d: a set of %lld bytes, the whole model's %zu", s, sl.y, whole_set);
            if (M == 4) fprintf(stderr, "  PP 2, M 4: stage %d holds %d x %lld bytes of activations (all M: %lld)\n", s, sl.K, sl.y, sl.z);
            here[s] = sl.here, whole = sl.whole;
        }
        CHECK_MSG(here[0] < whole && here[1] < whole && here[0] + here[1] == whole + 300 * tc.hidden_size,
                  "parameter floats per stage %lld + %lld, whole model %lld", here[0], here[1], whole);
        if (M == 2) fprintf(stderr, "  PP 2: parameter floats per stage %lld and %lld of %lld\n", here[0], here[1], whole);
    }
}

/* PP 2 x EP 2 (4 processes: stages of 2, experts split over each stage's 2)
 * against one process with the same global batch; the validation (of the
 * whole model gathered from the stages and shards) too */
TEST(pp_ep_train_np4_equals_one_process) {
    NEED_MPI();
    const char *d = dist_data();
    if (!d) { CHECK(0); return; }
    char out[16384], r1[600], r2[600];
    snprintf(r1, sizeof r1, "%s/one", d);
    snprintf(r2, sizeof r2, "%s/pp2ep2", d);
    int rc = ds_test_sh(out, sizeof out, "$DSV3 " TRAIN_ARGS " --data %s/data --out %s --steps 20 --batch 4 --eval-every 20 2>&1", d, r1);
    CHECK_MSG(rc == 0, "%s", out);
    rc = ds_test_sh(out, sizeof out, MPIRUN "$DSV3 " TRAIN_ARGS " --data %s/data --out %s --steps 20 --batch 4 --eval-every 20 --pp 2 --ep 2 --micro-batches 2 2>&1",
                    180, 4, d, r2);
    CHECK_MSG(rc == 0 && strstr(out, "expert parallel: groups of 2 processes") && strstr(out, "pipeline: 2 stages of 2 processes"),
              "rc %d\n%s", rc, out);
    TEST_RETURN_IF_FAILED();
    run_log a, b;
    CHECK(read_log(r1, &a) == 0 && read_log(r2, &b) == 0);
    check_same_training(&a, &b, 0, 20, 1e-5, "PP 2 x EP 2 vs one process");
    CHECK_MSG(a.val_loss > 0 && fabs(a.val_loss - b.val_loss) <= 1e-5 * a.val_loss, "validation loss %.8g vs %.8g", a.val_loss,
              b.val_loss);
    check_same_model(r1, r2, "PP 2 x EP 2");
}

/* PP 3 (3 processes, a middle stage without embedding or head; M 4: stage 0
 * holds 3 sets) and PP 2 x DP 2 with an explicit split (--pp-layers 1,2)
 * against one process with the same global batch */
TEST(pp_three_stages_and_dp_inside_stages) {
    NEED_MPI();
    const char *d = dist_data();
    if (!d) { CHECK(0); return; }
    char out[16384], r1[600], r2[600];
    snprintf(r1, sizeof r1, "%s/one", d);
    int rc = ds_test_sh(out, sizeof out, "$DSV3 " TRAIN_ARGS " --data %s/data --out %s --steps 10 --batch 4 2>&1", d, r1);
    CHECK_MSG(rc == 0, "%s", out);
    run_log a, b;
    CHECK(read_log(r1, &a) == 0);
    const struct { int np; const char *args, *what; int l0[3], K0; } c[] = {
        {3, "--pp 3 --micro-batches 4", "PP 3 vs one process", {0, 1, 2}, 3},
        {4, "--pp 2 --pp-layers 1,2 --micro-batches 2", "PP 2 x DP 2 (--pp-layers 1,2) vs one process", {0, 1, -1}, 2},
    };
    for (size_t i = 0; i < 2; i++) {
        snprintf(r2, sizeof r2, "%s/run%zu", d, i);
        rc = ds_test_sh(out, sizeof out, MPIRUN "$DSV3 " TRAIN_ARGS " --data %s/data --out %s --steps 10 --batch 4 %s 2>&1", 180,
                        c[i].np, d, r2, c[i].args);
        CHECK_MSG(rc == 0, "%s: rc %d\n%s", c[i].what, rc, out);
        TEST_RETURN_IF_FAILED();
        stage_line sl;
        for (int s = 0; s < 3 && c[i].l0[s] >= 0; s++) {
            CHECK_MSG(parse_stage(out, s, &sl) == 0 && sl.l0 == c[i].l0[s], "%s: stage %d:\n%s", c[i].what, s, out);
            if (s == 0) CHECK_MSG(sl.K == c[i].K0, "%s: stage 0 holds %d sets", c[i].what, sl.K);
        }
        CHECK(read_log(r2, &b) == 0);
        check_same_training(&a, &b, 0, 10, 1e-5, c[i].what);
        check_same_model(r1, r2, c[i].what);
    }
}

/* one process: point-to-point has no peer (an error, not a hang) */
TEST(pp_comm_single_has_no_peer) {
    ds_comm *c = ds_comm_single();
    float x = 1;
    void *req = NULL;
    CHECK(ds_isend(c, &x, 1, DS_COMM_F32, 1, 0, &req) == -1 && strstr(ds_errmsg(), "no peer"));
    CHECK(ds_recv(c, &x, 1, DS_COMM_F32, 1, 0) == -1);
    CHECK(ds_wait(c, &req) == 0 && req == NULL);
    ds_comm_free(c);
}

/* saved at PP 2: resumed at PP 2 bit-exactly (the same checkpoint files as
 * the run that never stopped), and in one process with losses within 1e-5 */
TEST(pp_resume_pp2_and_one_process) {
    NEED_MPI();
    const char *d = dist_data();
    if (!d) { CHECK(0); return; }
    check_resume_2_and_1(d, "--pp 2 --micro-batches 2", "--pp 2 --micro-batches 2", 10, 5, 5, "resume at PP 2",
                         "saved at PP 2, resumed in one process");
}

/* a stage's process killed in the middle of a step (stage 1, then stage 0):
 * every process ends, non-zero, within the time bound; the last checkpoint
 * loads and no later one exists */
TEST(pp_dead_stage_ends_the_job) {
    NEED_MPI();
    const char *d = dist_data();
    if (!d) { CHECK(0); return; }
    char out[16384];
    for (int r = 1; r >= 0; r--) {
        double t0 = ds_now();
        int rc = ds_test_sh(out, sizeof out, "DSV3_FAULT=die:%d:5 " MPIRUN "$DSV3 " TRAIN_ARGS " --data %s/data --out %s/k%d --steps 20 "
                            "--batch 4 --pp 2 --micro-batches 2 --save-every 2 2>&1", r, 60, 2, d, d, r);
        double dt = ds_now() - t0;
        CHECK_MSG(rc != 0 && rc != 124 && dt < 50, "rank %d killed: rc %d after %.1f s:\n%s", r, rc, dt, out);
        CHECK_MSG(strstr(out, "signal 9"), "%s", out);
        rc = ds_test_sh(out, sizeof out, "$DSV3 inspect %s/k%d/latest 2>&1 && test -d %s/k%d/ckpt-4 && ! test -d %s/k%d/ckpt-6", d, r, d, r, d, r);
        CHECK_MSG(rc == 0, "%s", out);
    }
}

/* the step log's pipeline fields: the analytic bubble (S-1)/(M+S-1), the
 * measured one and the time model's in [0, 1), one busy time per stage */
TEST(pp_step_log_fields) {
    NEED_MPI();
    const char *d = dist_data();
    if (!d) { CHECK(0); return; }
    char out[16384], r2[600];
    snprintf(r2, sizeof r2, "%s/log", d);
    int rc = ds_test_sh(out, sizeof out, MPIRUN "$DSV3 " TRAIN_ARGS " --data %s/data --out %s --steps 4 --batch 8 --pp 2 --micro-batches 4 2>&1",
                        120, 2, d, r2);
    CHECK_MSG(rc == 0, "%s", out);
    TEST_RETURN_IF_FAILED();
    run_log b;
    CHECK(read_log(r2, &b) == 0 && b.n == 4);
    for (int k = 0; k < b.n; k++) {
        CHECK_MSG(fabs(b.analytic[k] - 1.0 / 5.0) < 1e-9, "step %d: analytic %g", k + 1, b.analytic[k]);
        CHECK_MSG(b.bubble[k] >= 0 && b.bubble[k] < 1 && b.model[k] >= 0 && b.model[k] < 1, "step %d: bubble %g, model %g",
                  k + 1, b.bubble[k], b.model[k]);
        CHECK_MSG(b.nbusy[k] == 2 && b.busy[k][0] > 0 && b.busy[k][1] > 0, "step %d: %d busy times", k + 1, b.nbusy[k]);
    }
    CHECK_MSG(strstr(out, "(1F1B 0.20) busy "), "%s", out);
}

/* usage errors: one line (and the usual pointer to --help), exit 2, before anything runs */
TEST(pp_usage_errors) {
    const char *d = ds_test_tmpdir();
    char out[4096];
    const struct { const char *args, *msg; } c[] = {
        {"--pp 2 --micro-batches 1", "1F1B needs at least --pp 2 micro-batches"},
        {"--pp 2 --pp-layers 1,1", "--pp-layers 1,1: the counts sum to 2, the model has 3 layers"},
        {"--pp 2 --pp-layers 2,x", "--pp-layers 2,x: want 2 positive layer counts"},
        {"--pp 4 --micro-batches 4", "--pp 4: the model has 3 layers"},
        {"--pp 2", "--pp 2 does not divide the 1 processes"},
        {"--micro-batches 2", "--micro-batches needs --pp S"},
        {"--pp-layers 1,2", "--pp-layers needs --pp S"},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        int rc = ds_test_sh(out, sizeof out, "$DSV3 " TRAIN_ARGS " --data %s --out %s/u --steps 2 --batch 4 %s 2>&1", d, d, c[i].args);
        CHECK_MSG(rc == 2 && !strncmp(out, "dsv3 train: ", 12) && strstr(out, c[i].msg) && !strstr(out, "\ndsv3"),
                  "%s: rc %d: %s", c[i].args, rc, out);
    }
}
