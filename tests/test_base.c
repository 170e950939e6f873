/* test_base.c — base layer: RNG, atomic files, errors. */
#include "test.h"
#include "base/base.h"
#include <unistd.h>

TEST(rng_deterministic_and_uniform) {
    ds_rng a, b;
    ds_rng_seed(&a, 42);
    ds_rng_seed(&b, 42);
    for (int i = 0; i < 100; i++) CHECK(ds_rng_u64(&a) == ds_rng_u64(&b));
    /* mean and variance of N(0,1) over 200k draws: standard errors ~0.0022 / ~0.0032 */
    double s = 0, s2 = 0;
    int n = 200000;
    for (int i = 0; i < n; i++) { double x = ds_rng_normal(&a); s += x; s2 += x * x; }
    CHECK_NEAR(s / n, 0.0, 0.012);
    CHECK_NEAR(s2 / n, 1.0, 0.02);
    for (int i = 0; i < 1000; i++) CHECK(ds_rng_below(&a, 7) < 7);
}

TEST(atomic_write_keeps_old_file_on_failure) {
    char *p = ds_path_join(ds_test_tmpdir(), "f.bin");
    CHECK(ds_write_file_atomic(p, "hello", 5) == 0);
    size_t n;
    char *d = ds_read_file(p, &n);
    CHECK(d && n == 5 && memcmp(d, "hello", 5) == 0);
    free(d);
    /* a path in a missing directory fails cleanly with a message naming it */
    CHECK(ds_write_file_atomic("/nonexistent-dir/x.bin", "a", 1) != 0);
    CHECK(strstr(ds_errmsg(), "/nonexistent-dir/x.bin") != NULL);
    /* writing to /dev/full simulates a full disk: the rename never happens */
    ds_afile af;
    if (access("/dev/full", W_OK) == 0) {
        af.f = fopen("/dev/full", "wb");
        af.tmp_path = ds_strdup("/dev/null-not-used");
        af.final_path = ds_strdup(p);
        char big[65536] = {0};
        fwrite(big, 1, sizeof big, af.f);
        af.tmp_path[0] = 0; /* unlink("") is harmless */
        CHECK(ds_afile_commit(&af) != 0);
        CHECK(strstr(ds_errmsg(), "write failed") != NULL);
    }
    d = ds_read_file(p, &n);
    CHECK(d && n == 5);
    free(d);
    free(p);
}

TEST(read_missing_file_names_it) {
    CHECK(ds_read_file("/no/such/file.txt", NULL) == NULL);
    CHECK(strstr(ds_errmsg(), "/no/such/file.txt") != NULL);
}
