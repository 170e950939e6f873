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

static void write_synthetic(const char *path) { ds_test_write_word_salad(path, 5, 1500); }

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

/* Each of the steps 1..n has exactly one {"step": k, "loss": ...} record, in order. */
/* Two runs under tmp ended in the same state: the named files of each are
 * byte-identical and their train_log.jsonl losses are equal (and not empty). */
static void check_same_runs(const char *tmp, const char *r1, const char *r2, const char *const *files, int nfiles) {
    char a[700], b[700];
    for (int i = 0; i < nfiles; i++) {
        snprintf(a, sizeof a, "%s/%s/%s", tmp, r1, files[i]);
        snprintf(b, sizeof b, "%s/%s/%s", tmp, r2, files[i]);
        CHECK_MSG(same_file(a, b), "%s differs", files[i]);
    }
    snprintf(a, sizeof a, "%s/%s/train_log.jsonl", tmp, r1);
    snprintf(b, sizeof b, "%s/%s/train_log.jsonl", tmp, r2);
    char *la = losses(a), *lb = losses(b);
    CHECK(strlen(la) > 0);
    CHECK_MSG(strcmp(la, lb) == 0, "losses differ:\n%s\n%s", la, lb);
    free(la), free(lb);
}

static int steps_logged_once(const char *path, int n) {
    size_t len;
    char *s = ds_read_file(path, &len);
    if (!s) return 0;
    int next = 1, ok = 1;
    for (char *l = strtok(s, "\n"); l; l = strtok(NULL, "\n")) {
        int k;
        if (sscanf(l, "{\"step\": %d, \"loss\":", &k) != 1 || !strstr(l, "\"loss\":")) continue;
        if (k != next) {
            fprintf(stderr, "  %s: step %d logged where step %d was expected\n", path, k, next);
            ok = 0;
            break;
        }
        next++;
    }
    free(s);
    if (ok && next != n + 1) fprintf(stderr, "  %s: %d steps logged, expected %d\n", path, next - 1, n);
    return ok && next == n + 1;
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
    double l0 = first_value(lp, "loss"), vl = last_value(lp, "val_loss"), bpb = last_value(lp, "val_bpb");
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
    char out[8192], a[600];
    const char *args = "--batch 4 --seq 32 --eval-every 0 --log-every 0 --warmup 2 --steps 8 --grad-accum 2 "
                       "--bias-gamma 0.01";
    int rc = ds_test_sh(out, sizeof out, "%s --threads 1 train --config tiny --data %s/data --out %s/one %s --save-every 3", bin(),
                        tmp, tmp, args);
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
    check_same_runs(tmp, "one", "two", files, 3);
    /* the resume kept --save-every 3 and --keep 2: the checkpoints of steps 6 and 8 are left, those of
     * steps 3 and 4 are gone */
    const char *kept[] = {"ckpt-6", "ckpt-8"};
    for (int i = 0; i < 2; i++) {
        snprintf(a, sizeof a, "%s/two/%s/model.safetensors", tmp, kept[i]);
        CHECK(ds_file_exists(a));
    }
    snprintf(a, sizeof a, "%s/two/ckpt-3", tmp);
    CHECK(!ds_file_exists(a));
    snprintf(a, sizeof a, "%s/two/ckpt-4", tmp);
    CHECK(!ds_file_exists(a));
    /* other batches cannot continue a run bit-exactly: refused */
    rc = ds_test_sh(out, sizeof out, "%s --threads 1 train --data %s/data --resume %s/two --steps 12 --batch 8 --seq 16",
                    bin(), tmp, tmp);
    CHECK_MSG(rc == 2 && strstr(out, "--batch 8 differs from the run's 4"), "%s", out);
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
    /* the steps 3 and 4 logged before the failed save ran again: logged once each */
    snprintf(p, sizeof p, "%s/full/train_log.jsonl", tmp);
    CHECK_MSG(steps_logged_once(p, 6), "%s", p);

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

/* --resume restores the run's options: a bf16 run resumed without
 * --precision continues in bf16, bit-exactly (before, it continued in fp32);
 * a conflicting --lr is a usage error unless --override (then logged);
 * --config of another model is refused. */
TEST(train_resume_restores_options) {
    const char *tmp = synthetic_data();
    CHECK(tmp != NULL);
    TEST_RETURN_IF_FAILED();
    char out[8192], b[600];
    const char *args = "--batch 2 --seq 16 --eval-every 0 --log-every 0 --steps 6";
    const char *shape = "--precision bf16 --warmup 2 --lr 5e-3 --mtp-lambda 0.5 --seed 7 --bias-gamma 0.01 --clip 0.5";
    int rc = ds_test_sh(out, sizeof out, "%s --threads 1 train --config tiny --data %s/data --out %s/ro1 %s %s", bin(), tmp,
                        tmp, args, shape);
    CHECK_MSG(rc == 0, "%s", out);
    rc = ds_test_sh(out, sizeof out, "%s --threads 1 train --config tiny --data %s/data --out %s/ro2 %s %s --stop-after 3 && "
                    "cp -r %s/ro2 %s/ro3", bin(), tmp, tmp, args, shape, tmp, tmp);
    CHECK_MSG(rc == 0, "%s", out);
    TEST_RETURN_IF_FAILED();
    /* only the data and the folder: everything else comes from the checkpoint */
    rc = ds_test_sh(out, sizeof out, "%s --threads 1 train --data %s/data --resume %s/ro2 --log-every 0", bin(), tmp, tmp);
    CHECK_MSG(rc == 0 && strstr(out, "precision bf16"), "%s", out);
    const char *files[] = {"latest/model.safetensors", "latest/train_state.safetensors"};
    check_same_runs(tmp, "ro1", "ro2", files, 2);
    snprintf(b, sizeof b, "%s/ro2/train_log.jsonl", tmp);
    CHECK(steps_logged_once(b, 6));
    /* a conflicting option: exit 2, nothing written */
    snprintf(b, sizeof b, "%s/ro3/train_log.jsonl", tmp);
    size_t len0 = 0, len1 = 0;
    free(ds_read_file(b, &len0));
    rc = ds_test_sh(out, sizeof out, "%s --threads 1 train --data %s/data --resume %s/ro3 --lr 1e-3", bin(), tmp, tmp);
    CHECK_MSG(rc == 2 && strstr(out, "--lr 0.001 differs from the run's 0.005") && strstr(out, "--override"), "rc %d: %s",
              rc, out);
    rc = ds_test_sh(out, sizeof out, "%s --threads 1 train --data %s/data --resume %s/ro3 --precision fp32", bin(), tmp, tmp);
    CHECK_MSG(rc == 2 && strstr(out, "--precision fp32 differs from the run's bf16"), "rc %d: %s", rc, out);
    rc = ds_test_sh(out, sizeof out, "%s --threads 1 train --data %s/data --resume %s/ro3 --config small", bin(), tmp, tmp);
    CHECK_MSG(rc == 2 && strstr(out, "the model comes from the checkpoint"), "rc %d: %s", rc, out);
    free(ds_read_file(b, &len1));
    CHECK(len0 > 0 && len1 == len0);
    /* the same value is no conflict; --override changes it, says so and logs it */
    rc = ds_test_sh(out, sizeof out, "%s --threads 1 train --data %s/data --resume %s/ro3 --lr 5e-3 --precision bf16 "
                    "--stop-after 4 --log-every 0", bin(), tmp, tmp);
    CHECK_MSG(rc == 0, "%s", out);
    rc = ds_test_sh(out, sizeof out, "%s --threads 1 train --data %s/data --resume %s/ro3 --lr 1e-3 --override --log-every 1",
                    bin(), tmp, tmp);
    CHECK_MSG(rc == 0 && strstr(out, "--lr 0.001 replaces the run's 0.005"), "rc %d: %s", rc, out);
    size_t len;
    char *s = ds_read_file(b, &len);
    CHECK_MSG(s && strstr(s, "{\"resume_step\": 4, \"overrides\": {\"lr\": [\"0.005\", \"0.001\"]}}"), "%s", s);
    free(s);
    CHECK(steps_logged_once(b, 6));
    /* the override is kept: a later resume takes 1e-3 as the run's */
    rc = ds_test_sh(out, sizeof out, "%s --threads 1 train --data %s/data --resume %s/ro3 --steps 7 --lr 5e-3", bin(), tmp, tmp);
    CHECK_MSG(rc == 2 && strstr(out, "differs from the run's 0.001"), "rc %d: %s", rc, out);
}

/* A kill during the save of step 6 (the log has steps 5 and 6, RUN/latest is
 * still ckpt-4, a partial .tmp-ckpt-6 is left): the resume logs each step
 * once and leaves no temp folder. */
TEST(train_resume_after_kill_during_save) {
    const char *tmp = synthetic_data();
    CHECK(tmp != NULL);
    TEST_RETURN_IF_FAILED();
    char out[8192], p[700];
    const char *args = "--batch 2 --seq 16 --eval-every 3 --eval-batches 2 --log-every 0 --save-every 2 --keep 5";
    int rc = ds_test_sh(out, sizeof out,
                        "%s --threads 1 train --config tiny --data %s/data --out %s/kill %s --steps 6 && cd %s/kill && "
                        "mv ckpt-6 .tmp-ckpt-6 && rm .tmp-ckpt-6/train_state.safetensors && ln -sfn ckpt-4 latest",
                        bin(), tmp, tmp, args, tmp);
    CHECK_MSG(rc == 0, "%s", out);
    TEST_RETURN_IF_FAILED();
    rc = ds_test_sh(out, sizeof out, "%s --threads 1 train --data %s/data --resume %s/kill --steps 8", bin(), tmp, tmp);
    CHECK_MSG(rc == 0 && strstr(out, "records after step 4 dropped"), "%s", out);
    snprintf(p, sizeof p, "%s/kill/train_log.jsonl", tmp);
    CHECK(steps_logged_once(p, 8));
    size_t len;
    char *s = ds_read_file(p, &len);
    /* validation at step 6 once (the one of the resumed run), at step 3 once */
    int n6 = 0, n3 = 0;
    for (char *q = s; q && (q = strstr(q, "\"val_loss\"")); q++) {
        char *l = q;
        while (l > s && l[-1] != '\n') l--;
        n6 += !strncmp(l, "{\"step\": 6,", 11);
        n3 += !strncmp(l, "{\"step\": 3,", 11);
    }
    free(s);
    CHECK_MSG(n6 == 1 && n3 == 1, "validation records: step 3 x%d, step 6 x%d", n3, n6);
    snprintf(p, sizeof p, "%s/kill/.tmp-ckpt-6", tmp);
    CHECK(!ds_file_exists(p));
}

/* Past `ulimit -f` a checkpoint write fails with EFBIG: one line naming the
 * file, exit 1, no temp folder (before: SIGXFSZ killed the run silently and
 * left .tmp-ckpt-N). */
TEST(train_file_size_limit_is_a_clear_error) {
    const char *tmp = synthetic_data();
    CHECK(tmp != NULL);
    TEST_RETURN_IF_FAILED();
    char out[8192], p[700];
    /* model.safetensors of tiny at vocab ~300 is ~3.3 MB; the limit is 1000 KiB */
    int rc = ds_test_sh(out, sizeof out,
                        "bash -c 'ulimit -f 1000; exec %s --threads 1 --quiet train --config tiny --data %s/data --out %s/fsz "
                        "--batch 2 --seq 16 --steps 2 --eval-every 0 --log-every 0'",
                        bin(), tmp, tmp);
    CHECK_MSG(rc == 1, "rc %d: %s", rc, out);
    CHECK_MSG(strstr(out, "dsv3 train: saving checkpoint") && strstr(out, "model.safetensors: write failed: File too large") &&
              strstr(out, "ulimit -f"), "%s", out);
    CHECK_MSG(strchr(out, '\n') == out + strlen(out) - 1, "not one line: %s", out);
    snprintf(p, sizeof p, "%s/fsz/.tmp-ckpt-2", tmp);
    CHECK(!ds_file_exists(p));
    snprintf(p, sizeof p, "%s/fsz/ckpt-2", tmp);
    CHECK(!ds_file_exists(p));
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

/* The samples printed after training (--sample, greedy) are ds_generate's:
 * the same text as `dsv3 generate` on the saved checkpoint, and a
 * continuation of the prompt. */
TEST(train_samples_match_generate) {
    const char *tmp = synthetic_data();
    CHECK(tmp != NULL);
    TEST_RETURN_IF_FAILED();
    char out[8192], gen[2][4096];
    int rc = ds_test_sh(out, sizeof out,
                        "%s --threads 1 train --config tiny --data %s/data --out %s/s --batch 4 --seq 32 --eval-every 0 "
                        "--log-every 0 --steps 40 --sample 'the king|a land' --max-new-tokens 12 --temperature 0 2>/dev/null",
                        bin(), tmp, tmp);
    CHECK_MSG(rc == 0, "%s", out);
    const char *prompts[2] = {"the king", "a land"};
    for (int k = 0; k < 2; k++) {
        rc = ds_test_sh(gen[k], sizeof gen[k], "%s --threads 1 generate --model %s/s/latest --prompt '%s' --max-new-tokens 12 2>/dev/null",
                        bin(), tmp, prompts[k]);
        CHECK_MSG(rc == 0, "%s", gen[k]);
        size_t n = strlen(gen[k]);
        while (n && gen[k][n - 1] == '\n') gen[k][--n] = 0;
        char want[4200];
        snprintf(want, sizeof want, "sample %d: %s\n", k + 1, gen[k]);
        CHECK_MSG(strstr(out, want) != NULL, "train printed:\n%s\ngenerate: %s", out, gen[k]);
        CHECK_MSG(strncmp(gen[k], prompts[k], strlen(prompts[k])) == 0 && n > strlen(prompts[k]), "%s", gen[k]);
    }
}

/* --profile runs the step through the profiling ops table: the weights come
 * out byte-identical to a run without it (the oracle), and the table at the
 * end counts one AdamW and one sum of squares a step, two cross-entropies
 * (main + MTP) a micro-batch. */
TEST(train_profile_changes_nothing_and_prints_the_step) {
    const char *tmp = synthetic_data();
    CHECK(tmp != NULL);
    TEST_RETURN_IF_FAILED();
    char out[16384];
    const char *args = "--batch 4 --seq 32 --eval-every 0 --log-every 0 --warmup 2 --steps 4 --grad-accum 2";
    int rc = ds_test_sh(out, sizeof out, "%s --threads 1 train --config tiny --data %s/data --out %s/plain %s 2>&1", bin(),
                        tmp, tmp, args);
    CHECK_MSG(rc == 0, "%s", out);
    CHECK(strstr(out, "ops entry") == NULL);
    rc = ds_test_sh(out, sizeof out, "%s --threads 1 train --config tiny --data %s/data --out %s/prof %s --profile 2>&1",
                    bin(), tmp, tmp, args);
    CHECK_MSG(rc == 0, "%s", out);
    CHECK_MSG(strstr(out, "train --profile: the ops entries of a step, mean of steps 2-4"), "%s", out);
    const char *a = strstr(out, "\nadamw "), *s = strstr(out, "\nsumsq "), *ce = strstr(out, "\ncross_entropy ");
    CHECK_MSG(a && s && ce, "%s", out);
    TEST_RETURN_IF_FAILED();
    CHECK(atof(a + 7) == 1.0 && atof(s + 7) == 1.0 && atof(ce + 15) == 4.0);
    const char *files[] = {"latest/model.safetensors", "latest/train_state.safetensors"};
    check_same_runs(tmp, "plain", "prof", files, 2);
}
