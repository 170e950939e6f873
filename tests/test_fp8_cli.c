/* test_fp8_cli.c — `dsv3 fp8 study` and `dsv3 fp8 bench` through the binary:
 * outputs, the study's claim (limited accumulation error grows with K, the
 * promoted one does not), and usage/IO errors. */
#include "test.h"
#include "base/base.h"

#include <cJSON.h>
#include <unistd.h>

static cJSON *load_json(const char *path) {
    char *s = ds_read_file(path, NULL);
    if (!s) return NULL;
    cJSON *j = cJSON_Parse(s);
    free(s);
    return j;
}
static double num(const cJSON *o, const char *a, const char *b) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);
    if (b) x = cJSON_GetObjectItemCaseSensitive(x, b);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

TEST(fp8_study_limited_error_grows_with_k) {
    char out[8192], *js = ds_path_join(ds_test_tmpdir(), "study.json");
    int rc = ds_test_sh(out, sizeof out, "$DSV3 fp8 study --k 128,1024,4096 --m 24 --n 24 --json %s", js);
    CHECK_MSG(rc == 0, "rc %d: %s", rc, out);
    CHECK(strstr(out, "4096") != NULL);
    cJSON *j = load_json(js);
    CHECK(j != NULL);
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(j, "rows");
    CHECK(cJSON_GetArraySize(rows) == 3);
    TEST_RETURN_IF_FAILED();
    const cJSON *r0 = cJSON_GetArrayItem(rows, 0), *r2 = cJSON_GetArrayItem(rows, 2);
    CHECK(num(r2, "K", NULL) == 4096);
    double l0 = num(r0, "limited", "rel_rms"), l2 = num(r2, "limited", "rel_rms");
    double p2 = num(r2, "promoted", "rel_rms"), pm = num(r2, "promoted", "max_rel"), lm = num(r2, "limited", "max_rel");
    /* ~sqrt(K) growth: x8 in K gives well over x2 in error */
    CHECK_MSG(l2 > 2 * l0, "limited rel_rms %g at K=128, %g at K=4096", l0, l2);
    /* DeepSeek: ~2% max relative error at K=4096 without promotion; with it, ~1e-6 */
    CHECK_MSG(lm > 3e-3 && lm < 0.2, "limited max_rel %g", lm);
    CHECK_MSG(pm < 1e-4 && p2 < 1e-5, "promoted max_rel %g rel_rms %g", pm, p2);
    /* quantization itself stays under DeepGEMM's 1e-3 */
    CHECK(num(r2, "promoted_vs_unquantized", "diff") < 1e-3);
    cJSON_Delete(j);
    free(js);
}

TEST(fp8_study_and_bench_bad_input) {
    char out[4096];
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 fp8 study --k 128,x") == 2);
    CHECK(strstr(out, "--k needs") != NULL);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 fp8 study --dist cauchy") == 2);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 fp8 study --bits 0") == 2);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 fp8 study --scaling block") == 2);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 fp8 nope") == 2);
    CHECK(strstr(out, "unknown subcommand") != NULL);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 fp8 bench --shapes 1,2") == 2);
    /* an unwritable output: one-line error, exit 1, nothing left behind */
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 fp8 study --k 128 --m 2 --n 2 --json /nonexistent-dir/s.json") == 1);
    CHECK(strstr(out, "/nonexistent-dir/s.json") != NULL);
    CHECK(access("/nonexistent-dir/s.json", F_OK) != 0);
}

TEST(fp8_bench_writes_json) {
    char out[4096], *js = ds_path_join(ds_test_tmpdir(), "gemm.json");
    int rc = ds_test_sh(out, sizeof out, "$DSV3 fp8 bench --shapes '70,40,300;8,8,8' --reps 1 --json %s", js);
    CHECK_MSG(rc == 0, "rc %d: %s", rc, out);
    cJSON *j = load_json(js);
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(j, "results");
    CHECK(cJSON_GetArraySize(res) == 2);
    TEST_RETURN_IF_FAILED();
    const cJSON *r = cJSON_GetArrayItem(res, 0);
    CHECK(num(r, "M", NULL) == 70 && num(r, "K", NULL) == 300);
    CHECK(num(r, "fp8", NULL) > 0 && num(r, "bf16", NULL) > 0);
    cJSON_Delete(j);
    free(js);
}
