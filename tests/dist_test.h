/*
 * dist_test.h — what the many-processes tests share (test_dist.c,
 * test_dist_pp.c): the mpirun environment, the skip when MPI is unusable,
 * the word-salad corpus with its tokenizer and shards, the step records
 * of a run's train_log.jsonl compared between two runs, and two runs' saved
 * models and checkpoints compared.
 */
#ifndef DS_DIST_TEST_H
#define DS_DIST_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "model/model.h"

#include "test.h"

/* environment of every mpirun here: root allowed, oversubscribed 2 cores,
 * no CMA (containers forbid it); under make SAN=1 no leak report from the
 * MPI processes (OpenMPI keeps memory at exit; the same dsv3 code runs
 * leak-checked in one process: comm_single_collectives, ep_one_process) */
#define MPIRUN                                                                                                   \
    "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none "   \
    "ASAN_OPTIONS=detect_leaks=0 "                                                                             \
    "OMPI_MCA_rmaps_base_oversubscribe=1 timeout -k 5 %d mpirun --oversubscribe -np %d "

/* 0 when mpirun can start this dsv3 on 2 ranks (else the test skips) */
static int mpi_usable(void) {
    static int known = -1;
    if (known >= 0) return known;
    char out[4096];
    if (ds_test_sh(NULL, 0, "command -v mpirun >/dev/null 2>&1") != 0) return known = 0;
    int rc = ds_test_sh(out, sizeof out, MPIRUN "$DSV3 comm-check 2>&1", 60, 2);
    known = rc == 0 || !strstr(out, "has no MPI");
    return known;
}

#define NEED_MPI()                                                                                               \
    do {                                                                                                         \
        if (!mpi_usable()) SKIP("mpirun absent or this dsv3 built without MPI");                                 \
    } while (0)

/* word salad (~50 KB): tokenizer of 300 and shards in DIR/data */
static const char *dist_data(void) {
    const char *tmp = ds_test_tmpdir();
    char path[600];
    snprintf(path, sizeof path, "%s/corpus.txt", tmp);
    ds_test_write_word_salad(path, 5, 1500);
    char out[4096];
    int rc = ds_test_sh(out, sizeof out,
                        "$DSV3 tokenizer train --input %s --vocab-size 300 --special-tokens '<|bos|>' '<|eos|>' --out %s/tok.json"
                        " && $DSV3 data prepare --tokenizer %s/tok.json --input %s --out %s/data --docs line --val-fraction 0.05",
                        path, tmp, tmp, path, tmp);
    if (rc) fprintf(stderr, "  prepare: %s\n", out);
    return rc ? NULL : tmp;
}

/* the arguments every training run here shares */
#define TRAIN_ARGS "--threads 1 train --config tiny --seq 32 --eval-every 0 --lr 3e-3 --warmup 5"

#define MAXSTEPS 64
typedef struct {
    int n;
    double loss[MAXSTEPS];
    char load[MAXSTEPS][256];
    double grad_bytes[MAXSTEPS], param_bytes[MAXSTEPS]; /* data-parallel traffic (0: absent) */
    /* pipeline fields (-1: absent) */
    double bubble[MAXSTEPS], analytic[MAXSTEPS], model[MAXSTEPS], bytes[MAXSTEPS], act_bytes[MAXSTEPS];
    double busy[MAXSTEPS][4];
    int nbusy[MAXSTEPS];
    double val_loss; /* the last validation's (0: none) */
} run_log;

static double field(const char *line, const char *key) {
    const char *p = strstr(line, key);
    return p ? atof(p + strlen(key)) : -1;
}

/* the step records of RUN/train_log.jsonl */
static int read_log(const char *run, run_log *L) {
    memset(L, 0, sizeof *L);
    char path[700];
    snprintf(path, sizeof path, "%s/train_log.jsonl", run);
    size_t len;
    char *s = ds_read_file(path, &len);
    if (!s) return -1;
    for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n")) {
        if (strstr(line, "\"val_loss\": ")) L->val_loss = field(line, "\"val_loss\": ");
        if (strncmp(line, "{\"step\": ", 9) || !strstr(line, "\"loss\": ")) continue;
        int k = atoi(line + 9) - 1;
        if (k < 0 || k >= MAXSTEPS) continue;
        L->loss[k] = field(line, "\"loss\": ");
        const char *ld = strstr(line, "\"load\": ");
        if (ld) snprintf(L->load[k], sizeof L->load[k], "%s", ld);
        const char *g = strstr(line, "\"grad\": "), *pa = strstr(line, "\"param\": ");
        if (g) L->grad_bytes[k] = atof(g + 8);
        if (pa) L->param_bytes[k] = atof(pa + 9);
        L->bubble[k] = field(line, "\"pp_bubble\": ");
        L->analytic[k] = field(line, "\"pp_bubble_analytic\": ");
        L->model[k] = field(line, "\"pp_bubble_model\": ");
        L->bytes[k] = field(line, "\"pp_bytes\": ");
        L->act_bytes[k] = field(line, "\"pp_act_bytes\": ");
        const char *b = strstr(line, "\"pp_stage_busy_s\": [");
        if (b) {
            b += strlen("\"pp_stage_busy_s\": [");
            while (L->nbusy[k] < 4 && *b && *b != ']') {
                char *end;
                L->busy[k][L->nbusy[k]++] = strtod(b, &end);
                b = end;
                while (*b == ',' || *b == ' ') b++;
            }
        }
        if (k + 1 > L->n) L->n = k + 1;
    }
    free(s);
    return 0;
}

/* losses equal within rel from step `from`, loads equal exactly */
static void check_same_training(const run_log *a, const run_log *b, int from, int n, double rel, const char *what) {
    CHECK_MSG(a->n == n && b->n == n, "%s: %d and %d steps logged, expected %d", what, a->n, b->n, n);
    double worst = 0;
    for (int k = from; k < n && k < a->n && k < b->n; k++) {
        double d = fabs(a->loss[k] - b->loss[k]) / fabs(a->loss[k]);
        if (d > worst) worst = d;
        CHECK_MSG(d <= rel, "%s: step %d loss %.8g vs %.8g (rel %.2g)", what, k + 1, a->loss[k], b->loss[k], d);
        CHECK_MSG(!strcmp(a->load[k], b->load[k]), "%s: step %d loads differ:\n %s\n %s", what, k + 1, a->load[k], b->load[k]);
    }
    fprintf(stderr, "  %s: %d steps, worst loss difference %.2g relative\n", what, n - from, worst);
}

/* the router biases of two saved models exactly equal, the weights close */
static void check_same_model(const char *r1, const char *r2, const char *what) {
    char p1[700], p2[700];
    snprintf(p1, sizeof p1, "%s/latest", r1);
    snprintf(p2, sizeof p2, "%s/latest", r2);
    ds_model m1, m2;
    CHECK(ds_model_load(&m1, p1) == 0 && ds_model_load(&m2, p2) == 0);
    TEST_RETURN_IF_FAILED();
    int nb = 0;
    for (int64_t l = 0; l < m1.nblocks; l++)
        if (m1.blocks[l].router_bias) {
            nb++;
            CHECK_MSG(!memcmp(m1.blocks[l].router_bias, m2.blocks[l].router_bias,
                              (size_t)m1.cfg.n_routed_experts * sizeof(float)), "%s: block %lld: router biases differ",
                      what, (long long)l);
        }
    CHECK(nb > 0);
    CHECK_MSG(ds_test_max_rel(m2.params, m1.params, (size_t)m1.layout.total, 1e-3) < 1e-4, "%s: weights differ", what);
    ds_model_free(&m1), ds_model_free(&m2);
}

/* A run of `steps` steps on 2 processes (`args`: its parallel options)
 * against one stopped after `stop` steps and resumed twice: on 2 processes
 * with `resume_args`, where the checkpoint files equal the unstopped run's
 * (`on2` names it in messages), and in one process, where the losses are
 * within 1e-5 of the unstopped run's from step `from` and the loads equal
 * (`on1`).  Under d: full, part, part1. */
static void check_resume_2_and_1(const char *d, const char *args, const char *resume_args, int steps, int stop,
                                 int from, const char *on2, const char *on1) {
    char out[16384];
    int rc = ds_test_sh(out, sizeof out, MPIRUN "$DSV3 " TRAIN_ARGS " --data %s/data --out %s/full --steps %d --batch 4 %s 2>&1",
                        120, 2, d, d, steps, args);
    CHECK_MSG(rc == 0, "%s", out);
    rc = ds_test_sh(out, sizeof out, MPIRUN "$DSV3 " TRAIN_ARGS " --data %s/data --out %s/part --steps %d --batch 4 %s "
                    "--stop-after %d 2>&1 && cp -r %s/part %s/part1", 120, 2, d, d, steps, args, stop, d, d);
    CHECK_MSG(rc == 0, "%s", out);
    TEST_RETURN_IF_FAILED();
    rc = ds_test_sh(out, sizeof out, MPIRUN "$DSV3 --threads 1 train --data %s/data --resume %s/part %s 2>&1", 120, 2, d, d,
                    resume_args);
    CHECK_MSG(rc == 0, "%s: %s", on2, out);
    rc = ds_test_sh(out, sizeof out, "$DSV3 --threads 1 train --data %s/data --resume %s/part1 2>&1", d, d);
    CHECK_MSG(rc == 0, "%s: %s", on1, out);
    TEST_RETURN_IF_FAILED();
    for (int f = 0; f < 2; f++) {
        const char *file = f ? "train_state.safetensors" : "model.safetensors";
        rc = ds_test_sh(out, sizeof out, "cmp %s/full/ckpt-%d/%s %s/part/ckpt-%d/%s", d, steps, file, d, steps, file);
        CHECK_MSG(rc == 0, "%s: %s differs: %s", on2, file, out);
    }
    char a[600], b[600];
    snprintf(a, sizeof a, "%s/full", d);
    snprintf(b, sizeof b, "%s/part1", d);
    run_log la, lb;
    CHECK(read_log(a, &la) == 0 && read_log(b, &lb) == 0);
    check_same_training(&la, &lb, from, steps, 1e-5, on1);
}

#endif
