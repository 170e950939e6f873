/*
 * cuda.h — the CUDA backend seen from C (docs/engine.md §2.5).  The kernels
 * are in the .cu files of src/backend/cuda/, built when nvcc is found; without it
 * src/backend/cuda/stub.c gives the same functions, which fail with
 * "this dsv3 was built without CUDA".
 *
 *   ds_cuda_init()          select the device (DSV3_CUDA_DEVICE, else
 *                           OMPI_COMM_WORLD_LOCAL_RANK, else 0), create the
 *                           stream and cuBLASLt handle; 0, or -1 with ds_err
 *                           ("no CUDA device: ..."); later calls return the
 *                           first answer
 *   ds_cuda_table(prec)     the table whose pointers are device memory
 *                           (`[dev]` of docs/engine.md §2.1) at DS_PREC_*; NULL
 *                           before a successful init
 *   ds_cuda_alloc ...       device memory (stream-ordered) and copies;
 *                           copy_d2h returns with dst valid
 *
 * The table carries the memory entries (host_visible 0): code that allocates
 * through it gets it from ds_backend_get_resident("cuda"); code that still
 * holds host pointers gets the host-staged table of backend/staged.h over it
 * from ds_backend_get("cuda") (correct, slow: every entry copies its operands
 * in and out).  docs/engine.md §2.5 lists which paths are which.
 */
#ifndef DS_BACKEND_CUDA_H
#define DS_BACKEND_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "backend/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

int ds_cuda_built(void);               /* 1 when compiled with nvcc */
int ds_cuda_init(void);
const struct ds_ops *ds_cuda_table(int precision);
const char *ds_cuda_device_name(void); /* "NVIDIA H200 (sm_90, 132 SMs)"; "" before init */
/* The dense peak FLOP/s of the unit that runs a GEMM of this training
 * precision (DS_PREC_FP32: CUDA cores, TF32 off; BF16 and FP8: tensor cores):
 * SMs x FLOP per clock per SM (known for sm_80 and sm_90) x the peak SM clock;
 * 0 when unknown or before init.  how: a line saying so. */
double ds_cuda_peak_flops(int precision, char *how, size_t cap);

void *ds_cuda_alloc(size_t bytes);     /* NULL + ds_err on failure; 256-byte aligned */
void ds_cuda_free(void *p);
void ds_cuda_copy_h2d(void *dst, const void *src, size_t bytes);
void ds_cuda_copy_d2h(void *dst, const void *src, size_t bytes);
void ds_cuda_copy_d2d(void *dst, const void *src, size_t bytes);
void ds_cuda_memset(void *dst, int byte, size_t bytes);
void ds_cuda_sync(void);

/* FP8 GEMM path control (tests, bench): 0 = cuBLASLt block-scaled where it
 * takes the shape, else dsv3's own kernel (the default); 1 = own kernel
 * always.  Returns the previous value. */
int ds_cuda_fp8_force_own(int on);
/* How many FP8 GEMMs ran on cuBLASLt and on the own kernel since start. */
void ds_cuda_fp8_counts(int64_t *lt, int64_t *own);

/* The FP8 tensor-core kernel (fp8mma.cu: mma.sync E4M3, FP32 promotion every
 * 128), which runs all experts' FP8 products in one launch and the FP8 GEMMs
 * cuBLASLt takes no algorithm for: on (1, the default where the device has
 * FP8 tensor cores and the kernel passes its self-check at first use; off with
 * DSV3_CUDA_FP8_MMA=0) or off (0: one cuBLASLt GEMM per expert, the CUDA-core
 * kernel as the fallback).  Returns the previous state.  Counts: the products
 * it ran, and in how many launches, since start. */
int ds_cuda_fp8_mma_set(int on);
void ds_cuda_fp8_mma_counts(int64_t *jobs, int64_t *launches);
/* its fragment loads where it is on: 1 ldmatrix (the default), 0 32-bit
 * shared-memory loads (where the ldmatrix build fails the self-check, or
 * DSV3_CUDA_FP8_MMA=plain); -1 off */
int ds_cuda_fp8_mma_loads(void);

/* The decode-sized expert forward (fewer than 16 rows an expert on average;
 * FP32 and BF16 tables) in one launch of gemm.cu's few-rows kernel: on (1,
 * the default; DSV3_CUDA_FEWROWS=0 turns it off) or off (0: a cuBLASLt call
 * per expert with rows).  Returns the previous state.  Calls: its launches
 * since start. */
int ds_cuda_fewrows_set(int on);
int64_t ds_cuda_fewrows_calls(void);

/* How many strided-batched cuBLASLt calls the BF16 expert GEMMs made since
 * start (one per class of row counts and product; gemm.cu). */
int64_t ds_cuda_batched_calls(void);
/* that path on (1, the default unless DSV3_CUDA_BATCHED=0) or off (0: cuBLAS's
 * grouped call or the loop); returns the previous state */
int ds_cuda_batched_set(int on);

/* The BF16 and FP8 tables' attention on the tensor cores (1, the default:
 * BF16 operands, FP32 accumulation, self-checked against the FP32 kernels at
 * first use) or on the FP32 kernels (0; DSV3_CUDA_ATTN=fp32, or a failed
 * self-check); returns the previous state (checked first where it was not
 * yet; on from off or failed: checked again at its next use; attention.cu). */
int ds_cuda_attention_tc_set(int on);
/* The tensor-core attention's key (query) tile: 0 (the default) picks per
 * kernel (attention.cu's tc_pick: 64 or 32, whichever lets two blocks share
 * an SM, dk/dv's register kernel 32 first); 32 or 64 forces
 * it for every kernel (tests, A/B runs; also DSV3_CUDA_ATTN_TILE=32|64 at the
 * first use).  Returns the previous setting. */
int ds_cuda_attention_tc_tile(int tk);
/* Its accumulators: -1 (the default) in registers (the mma.sync kernels)
 * wherever the dims allow (head dims up to (192, 128)) and two blocks fit an
 * SM, else in shared memory (WMMA); 1 in registers wherever the dims allow;
 * 0 never (also DSV3_CUDA_ATTN_REGS=0|1 at the first use).  Returns the
 * previous setting. */
int ds_cuda_attention_tc_regs(int on);
/* The variants of kernel kern (0 forward, 1 dq, 2 dk/dv) that failed the
 * self-check and are left out: bit 2·(tile 32) + (accumulators in registers);
 * 0 before the check and while the path is off. */
int ds_cuda_attention_tc_off(int kern);

/* Attention benchmark (attention.cu) on random device inputs, causal: how
 * "fp32" (the FP32 kernels), "tc" (the tensor-core kernels, the variants
 * they pick), "tc-tile64" (a key/query tile of 64 everywhere), "tc-smem" (every
 * accumulator in shared memory: the WMMA kernels).  TFLOPS of the forward's and
 * the backward's products (2·(DQ+DV) and 2·(3·DQ+2·DV) a causal pair) after
 * warm-up, iters timed calls each.  0, or -1 with ds_err. */
int ds_cuda_attention_bench(const char *how, int64_t B, int64_t T, int64_t NH, int64_t DQ, int64_t DV, int iters,
                            double *fwd_tflops, double *bwd_tflops);

/* cuBLASLt's algorithm per class of problems: the heuristic's first (0, the
 * default) or, tuned (1; DSV3_CUDA_LT_TUNE=1), the fastest of its first 8
 * timed on the problem (runs may then pick differently and differ in the last
 * bits).  Returns the previous state.  Stats: tuned searches, those won by
 * another than the heuristic's first, and the last one's figures. */
typedef struct {
    int candidates, best;      /* how many the heuristic gave; the winner's rank (0: its first) */
    double first_ms, best_ms;  /* a launch of its first, of the winner */
} ds_cuda_lt_tune_info;
int ds_cuda_lt_tune(int on);
void ds_cuda_lt_tune_stats(int64_t *tuned, int64_t *moved, ds_cuda_lt_tune_info *last);

/* GEMM benchmark on device buffers: kind "fp8" (1x128 x 128x128 block-scaled
 * E4M3, FP32 out: D (M, N) = X (M, K) · W (N, K)ᵀ), "fp8-own" (own kernel),
 * "bf16" (BF16 in, FP32 accumulation and out), "fp32"; "fp8-tuned" and
 * "bf16-tuned" with cuBLASLt's algorithm tuned (ds_cuda_lt_tune).  Runs
 * `iters` timed launches after warm-up; *tflops = 2·M·N·K / mean time.
 * *path gets "cublaslt", "own" or (kind "fp8-mma": the tensor-core kernel)
 * "mma".  0, or -1 with ds_err. */
int ds_cuda_gemm_bench(const char *kind, int64_t M, int64_t N, int64_t K, int iters, double *tflops,
                       const char **path);
/* G experts' FP8 products W_g (N, K) · X_g (rows, K)ᵀ: how "lt" (one cuBLASLt
 * block-scaled GEMM each) or "mma" (one launch of the tensor-core kernel);
 * *tflops over all G, host gaps included. */
int ds_cuda_gemm_bench_experts(const char *how, int64_t G, int64_t rows, int64_t N, int64_t K, int iters,
                               double *tflops, const char **path);

#ifdef __cplusplus
}
#endif

#endif
