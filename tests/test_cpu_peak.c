/*
 * test_cpu_peak.c — the measured FP32 peak behind the printed MFU
 * (backend/cpu/peak.h), --peak-gflops, and the small-op thread policy
 * (backend/cpu/par.h).
 */
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/cpu_isa.h"
#include "backend/cpu/par.h"
#include "backend/cpu/peak.h"
#include "base/base.h"
#include "test.h"

TEST(cpu_peak_measured_is_plausible_and_cached) {
    /* independent bounds: at least a scalar FMA a cycle at 0.5 GHz; at most
     * 2 FMA pipes x 16 lanes x 2 FLOPs at 7 GHz per thread */
    double t0 = ds_now();
    double p1 = ds_cpu_fma_peak_measure(1);
    double dt = ds_now() - t0;
    CHECK_MSG(p1 > 1e9 && p1 < 2 * 16 * 2 * 7e9, "1-thread peak %.3g FLOP/s", p1);
    CHECK_MSG(dt < 0.5, "measuring took %.3f s", dt); /* a few ms on an idle core */
    t0 = ds_now();
    CHECK(ds_cpu_fma_peak_measure(1) == p1); /* cached */
    CHECK(ds_now() - t0 < 1e-3);
    char how[256];
    double p = ds_cpu_peak(1, how, sizeof how);
    CHECK(p == p1 && strstr(how, "measured"));
    ds_cpu_peak_set(123.5);
    p = ds_cpu_peak(2, how, sizeof how);
    CHECK(p == 123.5e9 && strstr(how, "--peak-gflops"));
    ds_cpu_peak_set(0);
    CHECK(ds_cpu_peak(1, NULL, 0) == p1);
}

/* The door above the backend (backend/backend.h): the trainer, bench-train and
 * --peak-gflops reach the measured peak only through it. */
TEST(cpu_peak_through_backend_door) {
    double p1 = ds_cpu_fma_peak_measure(1);
    char how[256];
    CHECK(ds_backend_peak_flops("cpu", 1, how, sizeof how) == p1 && strstr(how, "measured"));
    CHECK(ds_backend_peak_flops(NULL, 1, NULL, 0) == p1);
    ds_backend_set_peak(77.25);
    CHECK(ds_backend_peak_flops("cpu", 2, how, sizeof how) == 77.25e9 && strstr(how, "--peak-gflops"));
    CHECK(ds_backend_peak_flops("cuda", 1, NULL, 0) == 77.25e9);
    ds_backend_set_peak(0);
    CHECK(ds_backend_peak_flops("cpu", 1, NULL, 0) == p1);
    /* BLAS: the build's matmul for cpu, none for the scalar references */
#ifdef DS_HAVE_OPENBLAS
    CHECK(ds_backend_uses_blas("cpu") == 1 && ds_backend_uses_blas(NULL) == 1);
#else
    CHECK(ds_backend_uses_blas("cpu") == 0);
#endif
    CHECK(ds_backend_uses_blas("ref") == 0 && ds_backend_uses_blas("cuda") == 1);
}

TEST(cpu_peak_avx2_path_measures_too) {
    if (ds_cpu_isa_max() < DS_ISA_AVX2) SKIP("no AVX2 on this CPU");
    int prev = ds_cpu_isa_set(DS_ISA_AVX2);
    double p = ds_cpu_fma_peak_measure(1);
    ds_cpu_isa_set(prev);
    CHECK_MSG(p > 1e9 && p < 2 * 8 * 2 * 7e9, "AVX2 peak %.3g FLOP/s", p);
}

TEST(cpu_peak_stream_bandwidth_plausible) {
    double bw = ds_cpu_stream_bw(1, 16);
    CHECK_MSG(bw > 5e8 && bw < 1e12, "stream %.3g B/s", bw);
}

TEST(cli_peak_gflops_sets_mfu_denominator) {
    const char *bin = getenv("DSV3") ? getenv("DSV3") : "./dsv3";
    char out[4096];
    int rc = ds_test_sh(out, sizeof out, "%s --threads 1 --peak-gflops 123.5 bench-train --config tiny --random 1,8 "
                        "--iters 1 2>/dev/null", bin);
    CHECK_MSG(rc == 0 && strstr(out, "\"peak_flops\": 1.235e+11"), "%s", out);
    rc = ds_test_sh(out, sizeof out, "%s --peak-gflops -3 bench-train 2>&1", bin);
    CHECK(rc == 2 * 256 || rc == 2);
    CHECK(strstr(out, "--peak-gflops: got '-3'") != NULL);
}

TEST(par_threads_policy_does_not_fork_tiny_work) {
    int prev = ds_threads();
    ds_set_threads(4);
    CHECK(ds_par_threads(512.0 * 4, DS_PAR_MIN_BYTES) == 1);            /* a decode rmsnorm row */
    CHECK(ds_par_threads(512.0 * 256 * 4, DS_PAR_MIN_BYTES) == 1);      /* a small expert GEMV */
    CHECK(ds_par_threads(3.0 * DS_PAR_MIN_BYTES, DS_PAR_MIN_BYTES) == 3);
    CHECK(ds_par_threads(32000.0 * 512 * 4, DS_PAR_MIN_BYTES) == 4);    /* lm_head */
    ds_set_threads(prev);
}

/* bench-train names the FP32 GEMM kernel family; an inherited
 * OPENBLAS_CORETYPE narrower than the CPU (Haswell on AVX-512) is kept but
 * flagged, and without one dsv3 picks the AVX-512 family on an AVX-512 CPU
 * (the CPU's flags, read here by the compiler's cpuid builtin, are the oracle). */
TEST(cli_bench_train_names_blas_kernel_family) {
    const char *bin = getenv("DSV3") ? getenv("DSV3") : "./dsv3";
    char out[4096];
    int rc = ds_test_sh(out, sizeof out, "OPENBLAS_CORETYPE=Haswell %s --threads 1 bench-train --config tiny "
                        "--random 1,8 --iters 1 2>&1", bin);
    CHECK_MSG(rc == 0, "%s", out);
    if (strstr(out, "\"blas\": \"none")) SKIP("built without OpenBLAS");
    __builtin_cpu_init();
    int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl");
    CHECK_MSG(strstr(out, "\"blas\": \"OpenBLAS Haswell\""), "%s", out);
    CHECK_MSG(strstr(out, avx512 ? "\"blas_narrow\": 1" : "\"blas_narrow\": 0"), "%s", out);
    CHECK(!avx512 || strstr(out, "unset it for the SkylakeX kernels"));
    rc = ds_test_sh(out, sizeof out, "env -u OPENBLAS_CORETYPE %s --threads 1 bench-train --config tiny "
                    "--random 1,8 --iters 1 2>/dev/null", bin);
    CHECK_MSG(rc == 0 && strstr(out, "\"blas_narrow\": 0"), "%s", out);
    if (avx512) CHECK_MSG(strstr(out, "\"blas\": \"OpenBLAS SkylakeX\""), "%s", out);
}
