/*
 * test_device_resident.c — the CLI paths that run device-resident
 * (docs/engine.md §2.5: the model, its arenas and gradients in the table's
 * memory, host reads through copy_d2h) run under the test device "fakedev":
 * the cpu kernels over memory the host cannot touch (backend/fakedev.c), so a
 * direct host read or write of device memory on the path faults.  The files
 * they write must equal --device cpu's byte for byte.
 */
#include <stdio.h>
#include <string.h>

#include "base/base.h"
#include "test.h"

static int files_equal(const char *a, const char *b) {
    char out[256];
    return ds_test_sh(out, sizeof out, "cmp %s %s", a, b) == 0;
}

/* forward on a loaded model (the v3 fixture: MoE, MTP) with logits, MTP
 * logits, hidden states and every gradient written */
TEST(device_resident_forward_fakedev) {
    const char *fix = "tests/fixtures/model/v3";
    char out[4096], path[600];
    snprintf(path, sizeof path, "%s/config.json", fix);
    if (!ds_file_exists(path)) SKIP("%s absent", fix);
    const char *tmp = ds_test_tmpdir(), *dev[2] = {"cpu", "fakedev"};
    for (int i = 0; i < 2; i++) {
        int rc = ds_test_sh(out, sizeof out,
                            "$DSV3 forward --model %s --ids %s/ids.txt --out %s/o_%s.safetensors --hidden "
                            "--grads %s/g_%s.safetensors --mtp-lambda 0.3 --balance-loss seq:0.01 --device %s",
                            fix, fix, tmp, dev[i], tmp, dev[i], dev[i]);
        CHECK_MSG(rc == 0, "forward --device %s: %s", dev[i], out);
    }
    TEST_RETURN_IF_FAILED();
    char a[700], b[700];
    snprintf(a, sizeof a, "%s/o_cpu.safetensors", tmp), snprintf(b, sizeof b, "%s/o_fakedev.safetensors", tmp);
    CHECK_MSG(files_equal(a, b), "forward outputs differ between cpu and fakedev");
    snprintf(a, sizeof a, "%s/g_cpu.safetensors", tmp), snprintf(b, sizeof b, "%s/g_fakedev.safetensors", tmp);
    CHECK_MSG(files_equal(a, b), "gradients differ between cpu and fakedev");
}

/* a random model created on the device: the benchmark path */
TEST(device_resident_forward_random_fakedev) {
    char out[4096];
    int rc = ds_test_sh(out, sizeof out, "$DSV3 forward --config tiny --random 2,8 --iters 1 --device fakedev");
    CHECK_MSG(rc == 0 && strstr(out, "\"tokens_per_s\""), "rc %d: %s", rc, out);
}

/* generate: the weights and the latent KV cache in the table's memory; greedy,
 * sampled and MTP-speculative runs give --device cpu's tokens */
TEST(device_resident_generate_fakedev) {
    const char *fix = "tests/fixtures/model/v3";
    char path[600];
    snprintf(path, sizeof path, "%s/config.json", fix);
    if (!ds_file_exists(path)) SKIP("%s absent", fix);
    const char *modes[3] = {"", "--temperature 0.8 --top-k 5 --top-p 0.9 --seed 3", "--speculative mtp"};
    for (int i = 0; i < 3; i++) {
        char a[4096], b[4096];
        const char *cmd = "$DSV3 generate --model %s --ids --prompt '204 147 0 183 4 106' --max-new-tokens 6 "
                          "--ignore-eos %s --device %s 2>/dev/null";
        int ra = ds_test_sh(a, sizeof a, cmd, fix, modes[i], "cpu");
        int rb = ds_test_sh(b, sizeof b, cmd, fix, modes[i], "fakedev");
        CHECK_MSG(ra == 0 && rb == 0 && !strcmp(a, b) && strlen(a) > 6, "generate %s: cpu (rc %d) '%s' vs fakedev (rc %d) '%s'",
                  modes[i], ra, a, rb, b);
    }
}

/* eval: log-likelihood (rolling and multiple choice, the logits through
 * copy_d2h) and greedy generation tasks give --device cpu's table */
TEST(device_resident_eval_fakedev) {
    char a[8192], b[8192];
    int ra = ds_test_eval_fixture(a, sizeof a, "cpu");
    if (ra == -1) SKIP("tests/fixtures/eval/model absent");
    int rb = ds_test_eval_fixture(b, sizeof b, "fakedev");
    CHECK_MSG(ra == 0 && rb == 0 && !strcmp(a, b) && strstr(a, "exact_match"), "eval: cpu (rc %d) %s\nfakedev (rc %d) %s",
              ra, a, rb, b);
}

/* bench-train: weights, arenas, gradients and AdamW moments (FP32 and BF16)
 * in the table's memory; the same losses as --device cpu */
TEST(device_resident_bench_train_fakedev) {
    const char *extra[2] = {"", "--bf16-moments"};
    for (int i = 0; i < 2; i++) {
        char a[4096], b[4096];
        const char *cmd = "$DSV3 bench-train --config tiny --random 2,16 --iters 1 %s --device %s 2>/dev/null | "
                          "grep -o '\"last_loss\": [0-9.]*'";
        int ra = ds_test_sh(a, sizeof a, cmd, extra[i], "cpu");
        int rb = ds_test_sh(b, sizeof b, cmd, extra[i], "fakedev");
        CHECK_MSG(ra == 0 && rb == 0 && !strcmp(a, b), "bench-train %s: cpu (rc %d) %s vs fakedev (rc %d) %s", extra[i],
                  ra, a, rb, b);
    }
}

/* bench-decode: B sequences through serve's batching engine (cache, logits
 * and argmax in the table's memory): row 0's greedy tokens the same for
 * batch 1 and 5 (each row's numbers are a batch-1 step's on the CPU table)
 * and the same on fakedev as on the cpu; a missing --batch and a prompt past
 * the model's positions are usage errors */
TEST(device_resident_bench_decode_fakedev) {
    const char *cmd = "$DSV3 --threads 1 bench-decode --config tiny --batch %d --prompt 9 --new 6 --device %s 2>/dev/null | "
                      "grep -o '\"row0_ids\": \\[[0-9, ]*\\]'";
    char a[4096], b[4096], c[4096];
    int ra = ds_test_sh(a, sizeof a, cmd, 1, "cpu");
    int rb = ds_test_sh(b, sizeof b, cmd, 5, "cpu");
    int rc = ds_test_sh(c, sizeof c, cmd, 5, "fakedev");
    CHECK_MSG(ra == 0 && rb == 0 && rc == 0 && strstr(a, "row0_ids") && !strcmp(a, b) && !strcmp(b, c),
              "bench-decode: batch 1 cpu (rc %d) %s; batch 5 cpu (rc %d) %s; batch 5 fakedev (rc %d) %s", ra, a, rb, b, rc, c);
    char out[4096];
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 bench-decode --config tiny") == 2 && strstr(out, "--batch"));
    /* more positions than the model has (tiny: 1024): a usage error that names both */
    CHECK_MSG(ds_test_sh(out, sizeof out, "$DSV3 bench-decode --config tiny --batch 1 --prompt 1020 --new 8") == 2 &&
                  strstr(out, "1028") && strstr(out, "1024 positions"), "%s", out);
}

/* train (one process): model, gradients, moments in the table's memory;
 * validation, checkpoints (moments through the host), a resume, router-bias
 * logging and the closing samples — the log and every checkpoint file equal
 * --device cpu's (the timing fields aside) */
TEST(device_resident_train_fakedev) {
    const char *txt = ds_test_shared("data/tinyshakespeare/input.txt");
    if (!txt) SKIP("../shared/data/tinyshakespeare/input.txt not found");
    const char *tmp = ds_test_tmpdir();
    char out[8192];
    int rc = ds_test_prepare_corpus(out, sizeof out, 60000, 300, 0, 1);
    CHECK_MSG(rc == 0, "%s", out);
    TEST_RETURN_IF_FAILED();
    const char *dev[2] = {"cpu", "fakedev"};
    char samples[2][4096];
    for (int i = 0; i < 2; i++) {
        rc = ds_test_train_resume(out, sizeof out, dev[i]);
        CHECK_MSG(rc == 0, "train --device %s: %s", dev[i], out);
        snprintf(samples[i], sizeof samples[i], "%s", out);
    }
    TEST_RETURN_IF_FAILED();
    CHECK_MSG(!strcmp(samples[0], samples[1]), "samples: cpu '%s' vs fakedev '%s'", samples[0], samples[1]);
    rc = ds_test_sh(out, sizeof out,
                    "cd %s && for d in cpu fakedev; do sed -E 's/\"(tokens_per_s|gflops|mfu)\": [0-9.e+-]+,//g' "
                    "run_$d/train_log.jsonl > log_$d.txt; done && cmp log_cpu.txt log_fakedev.txt && "
                    "grep -c '\"val_loss\"' log_cpu.txt && for f in $(ls run_cpu/latest); do "
                    "cmp run_cpu/latest/$f run_fakedev/latest/$f || exit 1; done",
                    tmp);
    CHECK_MSG(rc == 0, "train logs or checkpoints differ between cpu and fakedev: %s", out);
}

/* the comparison the --device cuda checks use (test_backend_cuda.c,
 * test_serve.c): integers and text exact, reals within rtol or a unit of the
 * last printed digit */
TEST(same_up_to_reals_compares_what_it_says) {
    char why[256];
    CHECK(ds_test_same_up_to_reals("loss 1.2345678 ids [3, 14]", "loss 1.2345699 ids [3, 14]", 1e-4, why, sizeof why));
    CHECK(!ds_test_same_up_to_reals("loss 1.2345678", "loss 1.2347678", 1e-4, why, sizeof why) && strstr(why, "1.2347678"));
    CHECK(!ds_test_same_up_to_reals("ids [3, 14]", "ids [3, 15]", 1e-1, why, sizeof why)); /* integers: exact */
    CHECK(!ds_test_same_up_to_reals("ids [3, 14]", "ids [3, 14, 2]", 1e-1, why, sizeof why));
    CHECK(!ds_test_same_up_to_reals("acc 0.3333", "acc 0.3335", 1e-6, why, sizeof why));
    CHECK(ds_test_same_up_to_reals("acc 0.3333", "acc 0.3334", 1e-6, why, sizeof why)); /* one printed unit */
    CHECK(ds_test_same_up_to_reals("ppl 4.0450e+06", "ppl 4.0451e+06", 1e-6, why, sizeof why));
    CHECK(!ds_test_same_up_to_reals("ppl 4.0450e+06", "ppl 4.0450e+07", 1e-1, why, sizeof why));
    CHECK(ds_test_same_up_to_reals("\"logprob\": -0.25, \"x2\": 1", "\"logprob\": -0.2500001, \"x2\": 1", 1e-4, why,
                                   sizeof why));
    CHECK(!ds_test_same_up_to_reals("text a", "text b", 1, why, sizeof why));
}
