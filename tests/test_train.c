/*
 * test_train.c — training runs through the dsv3 binary (`dsv3 train`):
 * loss goes down on TinyShakespeare, resume is bit-exact, aux-free balancing
 * beats no balancing on MaxVio, bad inputs and failures give one clear
 * error with nothing saved lost, and a trained folder loads in transformers
 * with the same logits (tools/check_hf_load.py).
 * Oracles: ln(V) for the loss at initialisation, a single uninterrupted run
 * for resume, the `none` run for balance, transformers for the saved folder.
 * Thresholds were measured (see each test) and have a margin.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"
#include "test.h"

static const char *bin(void) { return getenv("DSV3") ? getenv("DSV3") : "./dsv3"; }

/* Deterministic word salad (~50 KB) so tests that are not about learning need
 * no shared data. */
static void write_synthetic(const char *path) {
    static const char *w[] = {"the", "king", "and", "queen", "of", "a", "land", "where", "rivers", "run",
                              "to", "sea", "with", "light", "upon", "hills", "shall", "come", "unto", "them"};
    FILE *f = fopen(path, "w");
    ds_rng r;
    ds_rng_seed(&r, 5);
    for (int line = 0; line < 1500; line++) {
        int n = 4 + (int)ds_rng_below(&r, 8);
        for (int i = 0; i < n; i++) fprintf(f, "%s%s", i ? " " : "", w[ds_rng_below(&r, 20)]);
        fputs(".\n", f);
    }
    fclose(f);
}

/* Tokenizer (vocab V) and shards of corpus into DIR/data; 0 on success. */
static int prepare(const char *dir, const char *corpus, int vocab, const char *docs) {
    char out[4096];
    int rc = ds_test_sh(out, sizeof out,
                        "%s tokenizer train --input %s --vocab-size %d --special-tokens '<|bos|>' '<|eos|>' --out %s/tok.json"
                        " && %s data prepare --tokenizer %s/tok.json --input %s --out %s/data --docs %s --val-fraction 0.05",
                        bin(), corpus, vocab, dir, bin(), dir, corpus, dir, docs);
    if (rc) fprintf(stderr, "  prepare: %s\n", out);
    return rc;
}

static const char *synthetic_data(void) {
    const char *tmp = ds_test_tmpdir();
    static char corpus[600];
    snprintf(corpus, sizeof corpus, "%s/corpus.txt", tmp);
    write_synthetic(corpus);
    return prepare(tmp, corpus, 300, "line") ? NULL : tmp;
}

/* Last value of "key": in a JSONL file (NaN when absent). */
static double last_value(const char *path, const char *key) {
    size_t len;
    char *s = ds_read_file(path, &len);
    if (!s) return NAN;
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    double v = NAN;
    for (char *p = strstr(s, pat); p; p = strstr(p + 1, pat)) v = atof(p + strlen(pat));
    free(s);
    return v;
}

/* First value of "key". */
static double first_value(const char *path, const char *key) {
    size_t len;
    char *s = ds_read_file(path, &len);
    if (!s) return NAN;
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    char *p = strstr(s, pat);
    double v = p ? atof(p + strlen(pat)) : NAN;
    free(s);
    return v;
}

static int same_file(const char *a, const char *b) {
    size_t la, lb;
    char *x = ds_read_file(a, &la), *y = ds_read_file(b, &lb);
    int same = x && y && la == lb && memcmp(x, y, la) == 0;
    free(x), free(y);
    return same;
}

/* Loss lines of a log ("loss": values in order) as one string. */
static char *losses(const char *path) {
    size_t len;
    char *s = ds_read_file(path, &len);
    if (!s) return ds_strdup("");
    char *out = ds_calloc(len + 1, 1);
    size_t n = 0;
    for (char *p = strstr(s, "\"loss\": "); p; p = strstr(p + 1, "\"loss\": ")) {
        char *e = strchr(p, ',');
        memcpy(out + n, p, (size_t)(e - p + 1));
        n += (size_t)(e - p + 1);
    }
    free(s);
    return out;
}

/* tiny on TinyShakespeare, vocab 1024, 80 steps of 4 x 64 tokens (20k tokens),
 * seed 1234, MTP off: CE starts at ln(1024) = 6.93; measured validation
 * loss after 80 steps 5.43 (bpb 3.10); asserted < 5.8. */
TEST(train_loss_goes_down_tinyshakespeare) {
    const char *ts = ds_test_shared("data/tinyshakespeare/input.txt");
    if (!ts) SKIP("../shared/data/tinyshakespeare/input.txt absent");
    const char *tmp = ds_test_tmpdir();
    CHECK(prepare(tmp, ts, 1024, "blank") == 0);
    TEST_RETURN_IF_FAILED();
    char out[8192], lp[600];
    int rc = ds_test_sh(out, sizeof out,
                        "%s --threads 1 train --config tiny --data %s/data --out %s/run --steps 80 --batch 4 --seq 64 "
                        "--mtp-lambda 0 --lr 3e-3 --warmup 10 --eval-every 80 --eval-batches 8 --log-every 20",
                        bin(), tmp, tmp);
    CHECK_MSG(rc == 0, "%s", out);
    snprintf(lp, sizeof lp, "%s/run/train_log.jsonl", tmp);
    double l0 = first_value(lp, "ce"), vl = last_value(lp, "val_loss"), bpb = last_value(lp, "val_bpb");
    fprintf(stderr, "  first CE %.4f (ln V = %.4f), val loss %.4f, val bpb %.4f\n", l0, log(1024.0), vl, bpb);
    CHECK_NEAR(l0, log(1024.0), 0.3);
    CHECK_MSG(vl < 5.8, "val loss %.4f", vl);
    CHECK(bpb > 0 && bpb < 5.8 / log(2.0)); /* > 1 byte per token, so bpb < loss/ln 2 */
}

/* 2N steps in one run == N steps, stop, resume, N more: losses and weights
 * (and the optimizer state) bit-identical. */
TEST(train_resume_bit_exact) {
    const char *tmp = synthetic_data();
    CHECK(tmp != NULL);
    TEST_RETURN_IF_FAILED();
    char out[8192], a[600], b[600];
    const char *args = "--batch 4 --seq 32 --eval-every 0 --log-every 0 --warmup 2 --steps 8 --grad-accum 2 "
                       "--bias-gamma 0.01";
    int rc = ds_test_sh(out, sizeof out, "%s --threads 1 train --config tiny --data %s/data --out %s/one %s", bin(), tmp, tmp, args);
    CHECK_MSG(rc == 0, "%s", out);
    rc = ds_test_sh(out, sizeof out, "%s --threads 1 train --config tiny --data %s/data --out %s/two %s --stop-after 4 --save-every 3",
                    bin(), tmp, tmp, args);
    CHECK_MSG(rc == 0, "%s", out);
    snprintf(a, sizeof a, "%s/two/ckpt-4/model.safetensors", tmp);
    CHECK(ds_file_exists(a));
    rc = ds_test_sh(out, sizeof out, "%s --threads 1 train --data %s/data --resume %s/two %s", bin(), tmp, tmp, args);
    CHECK_MSG(rc == 0, "%s", out);
    TEST_RETURN_IF_FAILED();
    const char *files[] = {"latest/model.safetensors", "latest/train_state.safetensors", "latest/config.json"};
    for (int i = 0; i < 3; i++) {
        snprintf(a, sizeof a, "%s/one/%s", tmp, files[i]);
        snprintf(b, sizeof b, "%s/two/%s", tmp, files[i]);
        CHECK_MSG(same_file(a, b), "%s differs", files[i]);
    }
    snprintf(a, sizeof a, "%s/one/train_log.jsonl", tmp);
    snprintf(b, sizeof b, "%s/two/train_log.jsonl", tmp);
    char *la = losses(a), *lb = losses(b);
    CHECK(strlen(la) > 0);
    CHECK_MSG(strcmp(la, lb) == 0, "losses differ:\n%s\n%s", la, lb);
    free(la), free(lb);
    /* --keep 2: the checkpoints of steps 4 and 8 are left, the one of step 3 is gone */
    const char *kept[] = {"ckpt-4", "ckpt-8"};
    for (int i = 0; i < 2; i++) {
        snprintf(a, sizeof a, "%s/two/%s/model.safetensors", tmp, kept[i]);
        CHECK(ds_file_exists(a));
    }
    snprintf(a, sizeof a, "%s/two/ckpt-3", tmp);
    CHECK(!ds_file_exists(a));
    /* other batches cannot continue a run bit-exactly: refused */
    rc = ds_test_sh(out, sizeof out, "%s --threads 1 train --data %s/data --resume %s/two --steps 12 --batch 8 --seq 16",
                    bin(), tmp, tmp);
    CHECK_MSG(rc != 0 && strstr(out, "differ from the run's 4, 32, 2"), "%s", out);
    /* resuming a finished run is an error, not a silent no-op */
    rc = ds_test_sh(out, sizeof out, "%s --threads 1 train --data %s/data --resume %s/two %s", bin(), tmp, tmp, args);
    CHECK(rc != 0 && strstr(out, "already did 8 of 8"));
}

/* tiny on TinyShakespeare, 60 steps of 4 x 64 tokens, γ = 0.01: validation
 * MaxVio measured 2.72 with --balance none (the router starts collapsed onto
 * few experts and stays there) and 0.45 with aux-free.  Asserted: none >= 1.5,
 * aux-free <= 1.0 and at least 1.0 below none. */
TEST(train_aux_free_balances_better_than_none) {
    const char *ts = ds_test_shared("data/tinyshakespeare/input.txt");
    if (!ts) SKIP("../shared/data/tinyshakespeare/input.txt absent");
    const char *tmp = ds_test_tmpdir();
    CHECK(prepare(tmp, ts, 1024, "blank") == 0);
    TEST_RETURN_IF_FAILED();
    double mv[2];
    const char *bal[2] = {"none", "aux-free"};
    for (int i = 0; i < 2; i++) {
        char out[8192], lg[600];
        int rc = ds_test_sh(out, sizeof out,
                            "%s --threads 1 train --config tiny --data %s/data --out %s/%s --steps 60 --batch 4 --seq 64 "
                            "--eval-every 60 --eval-batches 8 --log-every 0 --balance %s --bias-gamma 0.01",
                            bin(), tmp, tmp, bal[i], bal[i]);
        CHECK_MSG(rc == 0, "%s", out);
        snprintf(lg, sizeof lg, "%s/%s/train_log.jsonl", tmp, bal[i]);
        mv[i] = last_value(lg, "val_maxvio");
    }
    fprintf(stderr, "  val MaxVio: none %.3f, aux-free %.3f\n", mv[0], mv[1]);
    CHECK(mv[0] >= 1.5);
    CHECK(mv[1] <= 1.0);
    CHECK(mv[0] - mv[1] >= 1.0);
}

static void expect_fail(const char *cmd_args, const char *needle) {
    char out[8192];
    int rc = ds_test_sh(out, sizeof out, "%s --threads 1 train %s", bin(), cmd_args);
    CHECK_MSG(rc != 0 && strstr(out, needle), "rc %d, expected '%s' in: %s", rc, needle, out);
    CHECK_MSG(!strstr(out, "Sanitizer") && !strstr(out, "internal error"), "%s", out);
}

TEST(train_bad_inputs) {
    const char *tmp = synthetic_data();
    CHECK(tmp != NULL);
    TEST_RETURN_IF_FAILED();
    char args[2048], d[600], p[700];
    const char *common = "--batch 2 --seq 16 --steps 2 --eval-every 0 --log-every 0";
    /* missing data dir */
    snprintf(args, sizeof args, "--config tiny --data %s/nope --out %s/r0 %s", tmp, tmp, common);
    expect_fail(args, "nope: data folder not found");
    /* unknown preset */
    snprintf(args, sizeof args, "--config huge --data %s/data --out %s/r0 %s", tmp, tmp, common);
    expect_fail(args, "unknown preset 'huge'");
    /* wrong magic */
    snprintf(d, sizeof d, "%s/magic", tmp);
    CHECK(ds_test_sh(NULL, 0, "cp -r %s/data %s && printf 'XXXXXXX' | dd of=%s/train_000.bin conv=notrunc 2>/dev/null",
                     tmp, d, d) == 0);
    snprintf(args, sizeof args, "--config tiny --data %s --out %s/r1 %s", d, tmp, common);
    expect_fail(args, "train_000.bin");
    /* truncated */
    snprintf(d, sizeof d, "%s/trunc", tmp);
    snprintf(p, sizeof p, "%s/train_000.bin", d);
    CHECK(ds_test_sh(NULL, 0, "cp -r %s/data %s && truncate -s -3 %s", tmp, d, p) == 0);
    snprintf(args, sizeof args, "--config tiny --data %s --out %s/r2 %s", d, tmp, common);
    expect_fail(args, "train_000.bin");
    /* shards of another tokenizer: a tokenizer.json that is not the one the shards were made with */
    snprintf(d, sizeof d, "%s/othertok", tmp);
    CHECK(ds_test_sh(NULL, 0,
                     "cp -r %s/data %s && %s tokenizer train --input %s/corpus.txt --vocab-size 290 --special-tokens "
                     "'<|bos|>' '<|eos|>' --out %s/tokenizer.json >/dev/null 2>&1",
                     tmp, d, bin(), tmp, d) == 0);
    snprintf(args, sizeof args, "--config tiny --data %s --out %s/r3 %s", d, tmp, common);
    expect_fail(args, "another tokenizer");
    /* missing budget, resume of a run that does not exist */
    snprintf(args, sizeof args, "--config tiny --data %s/data --out %s/r4 --batch 2 --seq 16", tmp, tmp);
    expect_fail(args, "budget");
    snprintf(args, sizeof args, "--data %s/data --resume %s/none %s", tmp, tmp, common);
    expect_fail(args, "none: no such run folder");
    /* none of the failed runs left a checkpoint */
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/r%d/latest", tmp, i);
        CHECK(!ds_file_exists(p));
    }
}

/* A failed save (full disk, injected after model.safetensors is written) and
 * a NaN loss: one clear error, the previous checkpoint intact and resumable,
 * no temp folder left. */
TEST(train_failures_keep_last_checkpoint) {
    const char *tmp = synthetic_data();
    CHECK(tmp != NULL);
    TEST_RETURN_IF_FAILED();
    char out[8192], p[700], q[700];
    const char *common = "--batch 2 --seq 16 --steps 6 --save-every 2 --keep 5 --eval-every 0 --log-every 0";
    int rc = ds_test_sh(out, sizeof out, "DSV3_FAULT=save:4 %s --threads 1 train --config tiny --data %s/data --out %s/full %s",
                        bin(), tmp, tmp, common);
    CHECK_MSG(rc != 0 && strstr(out, "No space left on device") && strstr(out, "ckpt-4"), "%s", out);
    snprintf(p, sizeof p, "%s/full/ckpt-4", tmp);
    CHECK(!ds_file_exists(p));
    snprintf(p, sizeof p, "%s/full/.tmp-ckpt-4", tmp);
    CHECK(!ds_file_exists(p));
    snprintf(p, sizeof p, "%s/full/latest/train_state.safetensors", tmp);
    snprintf(q, sizeof q, "%s/full/ckpt-2/train_state.safetensors", tmp);
    CHECK(ds_file_exists(p) && same_file(p, q));
    rc = ds_test_sh(out, sizeof out, "%s --threads 1 train --data %s/data --resume %s/full %s", bin(), tmp, tmp, common);
    CHECK_MSG(rc == 0, "resume after the failed save: %s", out);

    rc = ds_test_sh(out, sizeof out, "DSV3_FAULT=nan:3 %s --threads 1 train --config tiny --data %s/data --out %s/nan %s", bin(),
                    tmp, tmp, common);
    CHECK_MSG(rc != 0 && strstr(out, "step 3: loss is NaN") && strstr(out, "ckpt-2 kept"), "%s", out);
    snprintf(p, sizeof p, "%s/nan/latest/model.safetensors", tmp);
    snprintf(q, sizeof q, "%s/nan/ckpt-2/model.safetensors", tmp);
    CHECK(ds_file_exists(p) && same_file(p, q));
    snprintf(p, sizeof p, "%s/nan/ckpt-4", tmp);
    CHECK(!ds_file_exists(p));

    rc = ds_test_sh(out, sizeof out,
                    "DSV3_FAULT=nan:3 %s --threads 1 train --config tiny --data %s/data --out %s/skip %s --skip-nonfinite", bin(), tmp,
                    tmp, common);
    CHECK_MSG(rc == 0, "%s", out);
    snprintf(p, sizeof p, "%s/skip/train_log.jsonl", tmp);
    size_t len;
    char *s = ds_read_file(p, &len);
    CHECK(s && strstr(s, "\"step\": 3, \"skipped\""));
    free(s);
    snprintf(p, sizeof p, "%s/skip/ckpt-6/model.safetensors", tmp);
    CHECK(ds_file_exists(p));
}

/* A folder written by the trainer loads in transformers with the same logits. */
TEST(train_checkpoint_loads_in_transformers) {
    if (ds_test_sh(NULL, 0, "python3 -c 'import torch, transformers' >/dev/null 2>&1") != 0)
        SKIP("python3 with torch + transformers not importable");
    const char *tmp = synthetic_data();
    CHECK(tmp != NULL);
    TEST_RETURN_IF_FAILED();
    char out[8192];
    int rc = ds_test_sh(out, sizeof out,
                        "%s --threads 1 train --config tiny --data %s/data --out %s/run --steps 5 --batch 2 --seq 32 --eval-every 0 "
                        "--log-every 0 --bias-gamma 0.05 --lr 1e-2",
                        bin(), tmp, tmp);
    CHECK_MSG(rc == 0, "%s", out);
    TEST_RETURN_IF_FAILED();
    /* the trained router biases are not zero, so the check covers them */
    char ids[600];
    snprintf(ids, sizeof ids, "%s/ids.txt", tmp);
    FILE *f = fopen(ids, "w");
    ds_rng r;
    ds_rng_seed(&r, 3);
    for (int b = 0; b < 2; b++)
        for (int t = 0; t < 40; t++) fprintf(f, "%d%c", (int)ds_rng_below(&r, 290), t + 1 < 40 ? ' ' : '\n');
    fclose(f);
    rc = ds_test_sh(out, sizeof out,
                    "%s forward --model %s/run/latest --ids %s --out %s/logits.st && python3 tools/check_hf_load.py "
                    "%s/run/latest %s %s/logits.st --tol 1e-5",
                    bin(), tmp, ids, tmp, tmp, ids, tmp);
    CHECK_MSG(rc == 0, "%s", out);
    fprintf(stderr, "  %s", strstr(out, "check_hf_load") ? strstr(out, "check_hf_load") : out);
}
