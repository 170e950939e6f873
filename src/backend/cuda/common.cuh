/*
 * common.cuh — what the CUDA backend's .cu files share: the module state
 * (device, stream, cuBLASLt handle and workspace), error checks, grow-only
 * scratch buffers, launch sizes, and the entry points each file defines for
 * table.cu.
 *
 * Every entry runs on g_cu.stream and may be asynchronous; entries that
 * return a host value (cross_entropy) synchronise.  Code above the backend
 * calls entries from OpenMP loops (the experts of a MoE layer): each entry
 * holds g_cu_lock (CU_ENTRY) while it enqueues its work, so the scratch
 * buffers and cuBLASLt descriptors of one call are not another's; the work
 * itself runs in stream order.  A CUDA or cuBLAS error
 * inside an entry is a broken invariant (the CPU entries assert the same way):
 * one line on stderr naming the call, then abort.
 */
#ifndef DS_CUDA_COMMON_CUH
#define DS_CUDA_COMMON_CUH

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <mutex>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "backend/cuda/cuda.h"
#include "base/base.h"
}

struct ds_cuda_state {
    int tried, ok, device;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *lt_ws;              /* cuBLASLt workspace */
    size_t lt_ws_bytes;
    cudaDeviceProp prop;
    char name[320];
};
extern ds_cuda_state g_cu;
extern std::mutex g_cu_lock;
/* The CUDA runtime's current device is per host thread: an entry called from
 * another thread (OpenMP expert loops, the serve scheduler) selects the
 * module's device first (a process on device 1 of a node otherwise launches
 * on device 0's context) */
void ds_cu_bind(void);
/* A path that is on once its self-check at first use passes (fp8mma.cu's
 * tensor-core GEMM, attention.cu's tensor-core attention): *state 0 (not
 * checked yet), 1 (on), -1 (off: its environment variable, a failed check, or
 * turned off).  Its setter: the state before (ready() checks it first where it
 * was not yet), off, or from off back to "not checked" (checked again, the
 * environment read again, at its next use); under the entry lock. */
int ds_cu_checked_set(int *state, int (*ready)(void), int on);
/* a path's switch from the environment, read at first use: *state 0 (not read yet) becomes -1
 * where the variable is "0", else 1; on (1) or off (0) */
inline int ds_cu_env_on(int *state, const char *name) {
    if (!*state) {
        const char *e = getenv(name);
        *state = e && !strcmp(e, "0") ? -1 : 1;
    }
    return *state > 0;
}
/* DSV3_CUDA_PROFILE=1: each entry's wall time, the stream synchronised
 * before and after it (launch overhead and device time together; no overlap
 * between entries), summed per entry and printed as a table on stderr at exit */
struct ds_cu_prof_scope {
    const char *name;
    double t0;
    explicit ds_cu_prof_scope(const char *n);
    ~ds_cu_prof_scope();
};
extern int g_cu_prof;
/* cuBLASLt algorithm searches, cache hits, and checks of a cached algorithm
 * for another problem of its class (gemm.cu) */
void ds_cu_lt_stats(int64_t *searches, int64_t *hits, int64_t *checks);
#define CU_ENTRY()                                                                     \
    ds_cu_bind();                                                                      \
    std::lock_guard<std::mutex> cu_entry_guard_(g_cu_lock);                            \
    ds_cu_prof_scope cu_prof_scope_(g_cu_prof ? __func__ : NULL)

void ds_cu_fail(const char *what, const char *why, const char *file, int line);
#define CU_CHECK(call)                                                                 \
    do {                                                                               \
        cudaError_t e_ = (call);                                                       \
        if (e_ != cudaSuccess) ds_cu_fail(#call, cudaGetErrorString(e_), __FILE__, __LINE__); \
    } while (0)
#define LT_CHECK(call)                                                                 \
    do {                                                                               \
        cublasStatus_t s_ = (call);                                                    \
        if (s_ != CUBLAS_STATUS_SUCCESS) ds_cu_fail(#call, cublasLtGetStatusString(s_), __FILE__, __LINE__); \
    } while (0)
/* after a launch: the launch configuration was accepted */
#define CU_LAUNCHED() CU_CHECK(cudaGetLastError())

/* Grow-only device scratch, one buffer per slot (contents not kept). */
enum { SCR_A, SCR_B, SCR_C, SCR_D, SCR_SA, SCR_SB, SCR_SC, SCR_SD, SCR_F32, SCR_STAGE, SCR_PTRS, SCR_PTRS2, SCR_OFFS, SCR_JOBS, SCR_MMA_JOBS, SCR_TUNE, SCR_COUNT };
void *ds_cu_scratch(int slot, size_t bytes);

static inline unsigned ds_cu_blocks(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > 1048576) b = 1048576; /* grid-stride loops cover the rest */
    return (unsigned)b;
}
#define GRID_STRIDE(i, n) for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
                               i += (int64_t)gridDim.x * blockDim.x)
/* R rows of C columns without a division per element: a block of 256
 * threads holds 256 / x rows (threadIdx.y; the grid strides over the rest),
 * its x threads go along a row's columns (coalesced), x the least of 32, 64,
 * 128, 256 that covers C; launched <<<ds_cu_row_grid(R, C),
 * ds_cu_row_block(C)>>>.  A division by a 64-bit value is a subroutine of
 * dozens of instructions on the GPU: with one flat index (i / C and i % C an
 * element) the copies and gathers ran compute-bound. */
#define ROWS(r, R) for (int64_t r = (int64_t)blockIdx.x * blockDim.y + threadIdx.y; r < (R); \
                        r += (int64_t)gridDim.x * blockDim.y)
#define COLS(c, C) for (int64_t c = threadIdx.x; c < (C); c += blockDim.x)
static inline dim3 ds_cu_row_block(int64_t C) {
    const unsigned x = C > 128 ? 256 : C > 64 ? 128 : C > 32 ? 64 : 32;
    return dim3(x, 256 / x);
}
static inline unsigned ds_cu_row_grid(int64_t R, int64_t C) {
    const int64_t per = 256 / ds_cu_row_block(C).x, b = (R + per - 1) / per;
    return (unsigned)(b < 1 ? 1 : b > 65536 ? 65536 : b);
}

/* the benchmarks (gemm.cu, attention.cu): the device's mean milliseconds per
 * call of once() over iters calls, after two */
template <typename F>
double ds_cu_bench_ms(F once, int iters) {
    once();
    once();
    cudaEvent_t e0, e1;
    CU_CHECK(cudaEventCreate(&e0));
    CU_CHECK(cudaEventCreate(&e1));
    CU_CHECK(cudaEventRecord(e0, g_cu.stream));
    for (int i = 0; i < iters; i++) once();
    CU_CHECK(cudaEventRecord(e1, g_cu.stream));
    CU_CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    CU_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return (double)ms / iters;
}

/* FP32 <-> BF16 as ds_f32_to_bf16 / ds_bf16_to_f32: NaN kept quiet, else round to nearest even;
 * widening is exact */
__device__ __forceinline__ uint16_t ds_cu_f32_to_bf16(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
__device__ __forceinline__ float ds_cu_bf16_to_f32(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

/* block-wide sums / maxima (blockDim.x a multiple of 32, at most 1024) */
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/* sh: 32 floats of shared memory; every thread gets the result */
__device__ __forceinline__ float block_sum(float v, float *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0f;
    return warp_sum(v);
}
__device__ __forceinline__ double block_sum_d(double v, double *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0;
    return warp_sum_d(v);
}
__device__ __forceinline__ float block_max(float v, float *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : -INFINITY;
    return warp_max(v);
}
/* the first index of the largest non-NaN value of x (n); 0 for none or a NaN
 * first (the CPU's argmax_rows rule: its scan never moves off a NaN and never
 * onto one); sf, si: 32 floats and 32 int64 of shared memory, *at one int64;
 * every thread gets the result */
__device__ __forceinline__ int64_t block_argmax(const float *x, int64_t n, float *sf, int64_t *si, int64_t *at) {
    float bv = -INFINITY;
    int64_t bi = -1;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        float v = x[i];
        if (v == v && (bi < 0 || v > bv)) bv = v, bi = i;
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) bv = ov, bi = oi;
    }
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) sf[w] = bv, si[w] = bi;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int j = 1; j < (int)(blockDim.x >> 5); j++)
            if (si[j] >= 0 && (bi < 0 || sf[j] > bv || (sf[j] == bv && si[j] < bi))) bv = sf[j], bi = si[j];
        if (!(x[0] == x[0]) || bi < 0) bi = 0;
        *at = bi;
    }
    __syncthreads();
    return *at;
}

/* x rounded up to the 128-block's end (FP8 blocks, padded code rows) */
static inline int64_t up128(int64_t x) { return (x + 127) / 128 * 128; }

/* ---- FP8 block-scaled GEMM operands (gemm.cu, fp8mma.cu) ----
 * rows of K-major E4M3 codes at q[r * kld + k] (kld >= K; where kld >=
 * up128(K) the codes beyond K to the 128-block's end are zero), with scales
 * blk 1: BLK128x128, s[(r / 128) * ld + kb]; blk 0: VEC128, s[kb * R + r] for
 * an operand of R rows */
struct fp8_operand {
    const uint8_t *q;
    const float *s;
    int blk;
    int64_t ld;
    int64_t kld;
};
__device__ __forceinline__ float fp8_scale(const fp8_operand &o, int64_t r, int64_t kb, int64_t R) {
    return o.blk ? o.s[(r / 128) * o.ld + kb] : o.s[kb * R + r];
}
/* one product of a grouped FP8 GEMM: D (m x n col-major, ldd) = Σ_kb
 * fma(Σ_{k in kb} a·b, sA(r, kb)·sB(c, kb), D), D starting at 0 or (beta) at
 * its contents; A has m rows, B n rows */
struct fp8_job {
    float *D;
    int64_t ldd;
    fp8_operand a, b;
    int64_t m, n, K;
    int beta;
    int vec;          /* set by ds_cu_fp8_mma: 16-byte loads of whole 128-blocks */
    int64_t tile0, mt;/* set by ds_cu_fp8_mma: first tile, tiles along m */
};
/* fp8mma.cu: the FP8 tensor-core kernel (mma.sync E4M3, FP32 promotion every
 * 128) over a list of products in one launch.  ds_cu_fp8_mma_ready: the
 * device has it and it passed its self-check (once per process, against a
 * double-precision host reference; DSV3_CUDA_FP8_MMA=0 turns it off).  Call it
 * before taking scratch: the check allocates its own buffers.
 * ds_cu_fp8_mma: enqueue the jobs (host array, at most nj of them; jobs of
 * no rows are skipped) on g_cu.stream. */
int ds_cu_fp8_mma_ready(void);
void ds_cu_fp8_mma(fp8_job *jobs, int nj);
/* its fragment loads from now on (1 ldmatrix, 0 32-bit loads; the benchmark's
 * A/B), the previous returned */
int ds_cu_fp8_mma_ldsm(int ldsm);
extern int64_t g_cu_fp8_mma_launches;

/* ---- entries, by file (signatures as struct ds_ops) ---- */
extern "C" {
/* gemm.cu */
void ds_cu_matmul_forward(float *out, const float *inp, const float *w, const float *bias, int64_t N, int64_t C,
                          int64_t OC);
void ds_cu_matmul_backward(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                           const float *w, int64_t N, int64_t C, int64_t OC, int acc);
void ds_cu_matmul_forward_bf16(float *out, const float *inp, const float *w, const float *bias, int64_t N,
                               int64_t C, int64_t OC);
void ds_cu_matmul_backward_bf16(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                                const float *w, int64_t N, int64_t C, int64_t OC, int acc);
void ds_cu_linear_forward_fp8(float *out, const float *inp, const float *w, const float *bias, int64_t N,
                              int64_t C, int64_t OC);
void ds_cu_linear_backward_fp8(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                               const float *w, int64_t N, int64_t C, int64_t OC, int acc);
void ds_cu_linear_fp8w_forward(float *out, const float *inp, const ds_fp8w *w, const float *bias, int64_t N,
                               int64_t C, int64_t OC);
/* elementwise.cu */
void ds_cu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int64_t N, int64_t C,
                           int64_t ld_out, int64_t ld_in, float eps);
void ds_cu_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                            const float *rstd, int64_t N, int64_t C, int64_t ld_din, int64_t ld_dout, int64_t ld_in,
                            float eps);
void ds_cu_rope_forward(float *x, const float *cos_t, const float *sin_t, int64_t B, int64_t T, int64_t nv,
                        int64_t ld, int64_t off, int64_t dr, int halves);
void ds_cu_rope_backward(float *dx, const float *cos_t, const float *sin_t, int64_t B, int64_t T, int64_t nv,
                         int64_t ld, int64_t off, int64_t dr, int halves);
void ds_cu_rope_tables(float *cos_t, float *sin_t, const float *inv_freq, float attn_factor, int64_t T,
                       int64_t h2);
void ds_cu_swiglu_forward(float *out, const float *gate, const float *up, int64_t N, int64_t I);
void ds_cu_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                           int64_t N, int64_t I);
void ds_cu_embedding_forward(float *out, const int32_t *ids, const float *wte, int64_t BT, int64_t C);
void ds_cu_embedding_backward(float *dwte, const float *dout, const int32_t *ids, int64_t BT, int64_t C);
void ds_cu_residual_forward(float *out, const float *a, const float *b, int64_t n);
void ds_cu_moe_permute(float *xs, const float *x, const int32_t *order, int64_t N, int64_t K, int64_t H);
void ds_cu_moe_combine_forward(float *y, const float *e_out, const float *w, const int32_t *pos, int64_t N,
                               int64_t K, int64_t H);
void ds_cu_moe_combine_backward(float *de_out, float *dw, const float *dy, const float *e_out, const float *w,
                                const int32_t *pos, int64_t N, int64_t K, int64_t H);
void ds_cu_mla_kv_assemble(float *k, float *v, const float *kv, const float *kva, int64_t N, int64_t nh,
                           int64_t dn, int64_t dv, int64_t rkv, int64_t dr);
double ds_cu_cross_entropy(float *dlogits, float *losses, int64_t *count, const float *logits,
                           const int32_t *targets, int64_t N, int64_t V, int32_t ignore, float dscale);
void ds_cu_moe_route_forward(float *w, int32_t *idx, float *scores, const float *logits, const float *bias,
                             const ds_route_params *p, int64_t N);
void ds_cu_moe_route_backward(float *dlogits, const float *dw, const float *dscores, const float *scores,
                              const int32_t *idx, const ds_route_params *p, int64_t N);
/* attention.cu */
void ds_cu_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, int64_t B,
                             int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale);
void ds_cu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                              const float *lse, const float *q, const float *k, const float *v, int64_t B,
                              int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale);
/* the same on the tensor cores (BF16 operands, FP32 accumulation): the BF16 and FP8 tables */
void ds_cu_attention_forward_bf16(float *out, float *lse, const float *q, const float *k, const float *v, int64_t B,
                                  int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale);
void ds_cu_attention_backward_bf16(float *dq, float *dk, float *dv, const float *dout, const float *out,
                                   const float *lse, const float *q, const float *k, const float *v, int64_t B,
                                   int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale);
/* engine.cu */
void *ds_cu_alloc(size_t bytes);
size_t ds_cu_linear_workspace(int64_t N, int64_t C, int64_t OC);
double ds_cu_sumsq(const float *x, int64_t n);
void ds_cu_adamw(float *p, const float *g, void *m, void *v, int bf16_moments, const ds_optim_seg *seg, int64_t nseg,
                 int64_t t, const ds_adamw_hparams *h, float gscale);
void ds_cu_bias_update(float *bias, const int64_t *load, int64_t E, float gamma);
void ds_cu_kv_append(float *ckv, float *kpe, const float *c, const float *kva, int64_t B, int64_t n, int64_t pos,
                     int64_t Lmax, int64_t rkv, int64_t dr, const int64_t *pos_b, const int64_t *row_b);
void ds_cu_mla_absorbed_attention(float *att, const float *q, const float *ckv, const float *kpe, const float *kv_b,
                                  int64_t B, int64_t n, int64_t pos, int64_t Lmax, int64_t nh, int64_t dn, int64_t dv,
                                  int64_t dr, int64_t rkv, float scale, const int64_t *pos_b, const int64_t *row_b);
void ds_cu_rope_pos_forward(float *x, const float *cos_t, const float *sin_t, const int64_t *pos_b, int64_t B,
                            int64_t T, int64_t nv, int64_t ld, int64_t off, int64_t dr, int halves);
void ds_cu_token_logprobs(float *logprob, uint8_t *greedy, const float *logits, const int32_t *targets, int64_t N,
                          int64_t V);
void ds_cu_gather_rows(float *dst, const float *src, const int32_t *idx, int64_t n, int64_t H);
void ds_cu_act_quant_1x128(uint8_t *q, float *s, const float *x, int64_t R, int64_t C);
void ds_cu_act_dequant_1x128(float *x, const uint8_t *q, const float *s, int64_t R, int64_t C);
void ds_cu_argmax_rows(int32_t *out, const float *x, int64_t N, int64_t V);
void ds_cu_sample_probs(float *prob, int32_t *scratch, const float *logits, int64_t V, double temperature,
                        int64_t top_k, double top_p);
int32_t ds_cu_sample_pick(const float *prob, int64_t V, double u);
void ds_cu_logits_adjust(float *logits, int64_t V, const int32_t *ids, const float *pre, const float *rep,
                         const float *post, int64_t n);
void ds_cu_probs_min_p(float *prob, int64_t V, double min_p);
void ds_cu_moe_sort(int64_t *counts, int64_t *offsets, int32_t *order, int32_t *pos, const int32_t *idx, int64_t N,
                    int64_t K, int64_t E);
void ds_cu_grouped_linear_forward(const struct ds_ops *self, float *out, const float *inp, const float *const *w,
                                  const ds_fp8w *const *w8, const int64_t *counts, const int64_t *offsets, int64_t E,
                                  int64_t C, int64_t OC);
void ds_cu_embedding_bf16_forward(float *out, const int32_t *ids, const uint16_t *wte, int64_t N, int64_t C);
void ds_cu_grouped_linear_backward(const struct ds_ops *self, float *dinp, float *const *dw, const float *dout,
                                   const float *inp, const float *const *w, const int64_t *counts,
                                   const int64_t *offsets, int64_t E, int64_t C, int64_t OC, int acc);
void ds_cu_mla_kv_assemble_backward(float *dkv, float *dkva, const float *dk, const float *dv, int64_t N, int64_t nh,
                                    int64_t dn, int64_t dv_, int64_t rkv, int64_t dr);
void ds_cu_moe_permute_backward(float *dx, const float *dxs, const int32_t *pos, int64_t N, int64_t K, int64_t H);
void ds_cu_balance_loss(float *dscores, float *coef, uint8_t *sel, const float *scores, const int32_t *idx, int64_t T,
                        int64_t E, int64_t K, int64_t G, int64_t M, int normalize, double a_exp, double a_dev,
                        double a_comm, double scale, ds_balance_terms *terms);
void ds_cu_cast_f32_bf16(uint16_t *dst, const float *src, int64_t n);
void ds_cu_cast_bf16_f32(float *dst, const uint16_t *src, int64_t n);
}

#endif
