/*
 * stub.c — the CUDA backend's C API (cuda.h) in a build without nvcc: every
 * entry point says so.  The Makefile leaves this file out when it builds the
 * .cu files.
 */
#include <string.h>

#include "backend/cuda/cuda.h"

#include "base/base.h"

int ds_cuda_built(void) { return 0; }
int ds_cuda_init(void) { return ds_err("--device cuda: this dsv3 was built without CUDA"); }
const struct ds_ops *ds_cuda_table(int precision) {
    (void)precision;
    return NULL;
}
const char *ds_cuda_device_name(void) { return ""; }
double ds_cuda_peak_flops(int precision, char *how, size_t cap) {
    (void)precision, (void)how, (void)cap;
    return 0;
}
void *ds_cuda_alloc(size_t bytes) {
    (void)bytes;
    ds_err("cuda alloc: this dsv3 was built without CUDA");
    return NULL;
}
void ds_cuda_free(void *p) { (void)p; }
void ds_cuda_copy_h2d(void *dst, const void *src, size_t bytes) { (void)dst, (void)src, (void)bytes; }
void ds_cuda_copy_d2h(void *dst, const void *src, size_t bytes) { (void)dst, (void)src, (void)bytes; }
void ds_cuda_copy_d2d(void *dst, const void *src, size_t bytes) { (void)dst, (void)src, (void)bytes; }
void ds_cuda_memset(void *dst, int byte, size_t bytes) { (void)dst, (void)byte, (void)bytes; }
void ds_cuda_sync(void) {}
int ds_cuda_fp8_force_own(int on) { (void)on; return 0; }
void ds_cuda_fp8_counts(int64_t *lt, int64_t *own) {
    if (lt) *lt = 0;
    if (own) *own = 0;
}
void ds_cuda_fp8_mma_counts(int64_t *jobs, int64_t *launches) {
    if (jobs) *jobs = 0;
    if (launches) *launches = 0;
}
int ds_cuda_fp8_mma_set(int on) {
    (void)on;
    return 0;
}
int ds_cuda_fp8_mma_loads(void) { return -1; }
int64_t ds_cuda_batched_calls(void) { return 0; }
int64_t ds_cuda_fewrows_calls(void) { return 0; }
int ds_cuda_fewrows_set(int on) {
    (void)on;
    return 0;
}
int ds_cuda_attention_tc_set(int on) {
    (void)on;
    return 0;
}
int ds_cuda_attention_tc_tile(int tk) {
    (void)tk;
    return 0;
}
int ds_cuda_attention_tc_regs(int on) {
    (void)on;
    return -1;
}
int ds_cuda_attention_tc_off(int kern) {
    (void)kern;
    return 0;
}
int ds_cuda_batched_set(int on) {
    (void)on;
    return 0;
}
int ds_cuda_lt_tune(int on) {
    (void)on;
    return 0;
}
void ds_cuda_lt_tune_stats(int64_t *tuned, int64_t *moved, ds_cuda_lt_tune_info *last) {
    if (tuned) *tuned = 0;
    if (moved) *moved = 0;
    if (last) memset(last, 0, sizeof *last);
}
int ds_cuda_attention_bench(const char *how, int64_t B, int64_t T, int64_t NH, int64_t DQ, int64_t DV, int iters,
                            double *fwd_tflops, double *bwd_tflops) {
    (void)how, (void)B, (void)T, (void)NH, (void)DQ, (void)DV, (void)iters, (void)fwd_tflops, (void)bwd_tflops;
    return ds_err("attention bench: this dsv3 was built without CUDA");
}
int ds_cuda_gemm_bench(const char *kind, int64_t M, int64_t N, int64_t K, int iters, double *tflops,
                       const char **path) {
    (void)kind, (void)M, (void)N, (void)K, (void)iters, (void)tflops, (void)path;
    return ds_err("gemm bench: this dsv3 was built without CUDA");
}
int ds_cuda_gemm_bench_experts(const char *how, int64_t G, int64_t rows, int64_t N, int64_t K, int iters,
                               double *tflops, const char **path) {
    (void)how, (void)G, (void)rows, (void)N, (void)K, (void)iters, (void)tflops, (void)path;
    return ds_err("gemm bench: this dsv3 was built without CUDA");
}
