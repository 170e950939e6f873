/*
 * attention.cu — causal softmax attention on the GPU, flash style: no (T, T)
 * matrix; keys and values stream through shared memory in tiles of 32 while
 * each query keeps a running max m and sum l (online softmax), and the
 * forward saves lse = m + log l per query for the backward, which recomputes
 * the probabilities from it (backend/cpu/attention_backward.c's equations):
 *   P_ij = exp(scale·q_i·k_j − lse_i), Δ_i = dout_i·out_i,
 *   dS_ij = P_ij (dout_i·v_j − Δ_i),
 *   dq_i = scale Σ_j dS_ij k_j,  dk_j = scale Σ_i dS_ij q_i,  dv_j = Σ_i P_ij dout_i.
 * A warp owns a few queries (forward, dq) or keys (dk, dv); its 32 lanes take
 * the 32 keys (queries) of a tile for the dot products, then the head
 * dimensions for the accumulations, so nothing is written twice and the
 * backward needs no atomics (deterministic).  Head dims up to 256 (DeepSeek-V3:
 * q/k 192, v 128).  FP32 throughout (CUDA cores, not tensor cores).
 */
#include "backend/cuda/common.cuh"

#include <cuda_bf16.h>
#include <mma.h>
#include <stdlib.h>
#include <string.h>
#include <type_traits>
#include <vector>
extern "C" {
#include "num/dtype.h"
}

using namespace nvcuda;

/* the CPU stand-ins for mma.sync m16n8k16 BF16 and ldmatrix .x4 .trans (tools/cudamock/mock.cpp);
 * never called on a GPU */
__device__ void cudamock_mma_bf16(float *d, const uint32_t *a, const uint32_t *b);
__device__ void cudamock_ldmatrix_x4_trans(uint32_t *r, const void *p);

namespace {

/* WARPS warps a block; a warp owns P queries (forward, dq) or P keys (dk,
 * dv), P = 4 where the head dims are at most 128 and 2 above (shared memory),
 * so a block shares each tile of KT keys (queries) among WARPS·P rows and a
 * value read from shared memory feeds P FMAs.  Each row's arithmetic is the
 * one-row-per-warp kernel's, in the same order: a tile's terms beyond a
 * row's causal end are exact zeros (p = 0), as they were within its last tile. */
constexpr int WARPS = 8, KT = 32, MAXR = 8; /* warps per block, tile, registers per lane (256/32) */

/* rows r0 .. r0+rows-1 of head h, batch b of a (B, T, NH, D) tensor into a
 * shared tile of row length ld, rows from T on zero; the block's threads
 * across the tile */
__device__ __forceinline__ void ld_rows(float *dst, int ld, const float *src, int64_t b, int64_t h, int64_t r0,
                                        int rows, int64_t T, int64_t NH, int D) {
    for (int e = threadIdx.x; e < rows * D; e += blockDim.x) {
        const int rr = e / D, d = e % D;
        const int64_t r = r0 + rr;
        dst[rr * ld + d] = r < T ? src[((b * T + r) * NH + h) * D + d] : 0.0f;
    }
}

/* grid (ceil(T/(WARPS·P)), NH, B).  smem: qs[WARPS·P][DQ], ks[KT][DQ+1], vs[KT][DV] */
template <int P>
__global__ void k_attn_fwd(float *out, float *lse, const float *q, const float *k, const float *v, int64_t T,
                           int64_t NH, int DQ, int DV, float scale) {
    extern __shared__ float sm[];
    constexpr int QB = WARPS * P;
    float *qs = sm, *ks = qs + QB * DQ, *vs = ks + KT * (DQ + 1);
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int64_t b = blockIdx.z, h = blockIdx.y, i0 = (int64_t)blockIdx.x * QB, iw = i0 + (int64_t)w * P;
    int64_t imax = i0 + QB - 1 < T - 1 ? i0 + QB - 1 : T - 1, wlast = iw + P - 1 < T - 1 ? iw + P - 1 : T - 1;
    ld_rows(qs, DQ, q, b, h, i0, QB, T, NH, DQ);
    float m[P], l[P], pq[P], acc[P][MAXR];
    for (int a = 0; a < P; a++) {
        m[a] = -INFINITY, l[a] = 0.0f;
        for (int r = 0; r < MAXR; r++) acc[a][r] = 0.0f;
    }
    for (int64_t j0 = 0; j0 <= imax; j0 += KT) {
        __syncthreads();
        ld_rows(ks, DQ + 1, k, b, h, j0, KT, T, NH, DQ);
        ld_rows(vs, DV, v, b, h, j0, KT, T, NH, DV);
        __syncthreads();
        if (iw >= T || j0 > wlast) continue;
        int64_t j = j0 + lane;
        float dot[P];
        for (int a = 0; a < P; a++) dot[a] = 0.0f;
        for (int d = 0; d < DQ; d++) {
            float kv = ks[lane * (DQ + 1) + d];
            for (int a = 0; a < P; a++) dot[a] += qs[(w * P + a) * DQ + d] * kv;
        }
        for (int a = 0; a < P; a++) {
            int64_t i = iw + a;
            pq[a] = 0.0f;
            if (i >= T || j0 > i) continue;   /* warp-uniform */
            float s = j <= i ? dot[a] * scale : -INFINITY;
            float mn = fmaxf(m[a], warp_max(s));   /* finite: key j0 <= i is in the tile */
            float corr = expf(m[a] - mn), p = j <= i ? expf(s - mn) : 0.0f;
            l[a] = l[a] * corr + warp_sum(p);
            for (int r = 0; r < MAXR; r++) acc[a][r] *= corr;
            m[a] = mn, pq[a] = p;
        }
        int nj = wlast - j0 + 1 < KT ? (int)(wlast - j0 + 1) : KT;
        for (int jj = 0; jj < nj; jj++) {
            float pj[P];
            for (int a = 0; a < P; a++) pj[a] = __shfl_sync(0xffffffffu, pq[a], jj);
            for (int r = 0; r < MAXR; r++) {
                int c = lane + 32 * r;
                if (c < DV) {
                    float vv = vs[jj * DV + c];
                    for (int a = 0; a < P; a++) acc[a][r] += pj[a] * vv;
                }
            }
        }
    }
    for (int a = 0; a < P; a++) {
        int64_t i = iw + a;
        if (i >= T) break;
        for (int r = 0; r < MAXR; r++) {
            int c = lane + 32 * r;
            if (c < DV) out[((b * T + i) * NH + h) * DV + c] = acc[a][r] / l[a];
        }
        if (lse && lane == 0) lse[(b * NH + h) * T + i] = m[a] + logf(l[a]);
    }
}

/* delta (B, NH, T) = dout·out per query: warp per row */
__global__ void k_attn_delta(float *delta, const float *dout, const float *out, int64_t rows, int64_t T, int64_t NH,
                             int DV) {
    int64_t row = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;   /* (b, t, h) order */
    int lane = threadIdx.x & 31;
    if (row >= rows) return;
    float s = 0.0f;
    for (int c = lane; c < DV; c += 32) s += dout[row * DV + c] * out[row * DV + c];
    s = warp_sum(s);
    int64_t h = row % NH, t = (row / NH) % T, b = row / (NH * T);
    if (lane == 0) delta[(b * NH + h) * T + t] = s;
}

/* dq: a warp per P queries.  smem: qs[WARPS·P][DQ], dos[WARPS·P][DV], ks[KT][DQ+1], vs[KT][DV+1] */
template <int P>
__global__ void k_attn_bwd_dq(float *dq, const float *dout, const float *lse, const float *delta, const float *q,
                              const float *k, const float *v, int64_t T, int64_t NH, int DQ, int DV, float scale) {
    extern __shared__ float sm[];
    constexpr int QB = WARPS * P;
    float *qs = sm, *dos = qs + QB * DQ, *ks = dos + QB * DV, *vs = ks + KT * (DQ + 1);
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int64_t b = blockIdx.z, h = blockIdx.y, i0 = (int64_t)blockIdx.x * QB, iw = i0 + (int64_t)w * P;
    int64_t imax = i0 + QB - 1 < T - 1 ? i0 + QB - 1 : T - 1, wlast = iw + P - 1 < T - 1 ? iw + P - 1 : T - 1;
    ld_rows(qs, DQ, q, b, h, i0, QB, T, NH, DQ);
    ld_rows(dos, DV, dout, b, h, i0, QB, T, NH, DV);
    float L[P], D[P], acc[P][MAXR];
    for (int a = 0; a < P; a++) {
        int64_t i = iw + a;
        L[a] = i < T ? lse[(b * NH + h) * T + i] : 0.0f;
        D[a] = i < T ? delta[(b * NH + h) * T + i] : 0.0f;
        for (int r = 0; r < MAXR; r++) acc[a][r] = 0.0f;
    }
    for (int64_t j0 = 0; j0 <= imax; j0 += KT) {
        __syncthreads();
        ld_rows(ks, DQ + 1, k, b, h, j0, KT, T, NH, DQ);
        ld_rows(vs, DV + 1, v, b, h, j0, KT, T, NH, DV);
        __syncthreads();
        if (iw >= T || j0 > wlast) continue;
        int64_t j = j0 + lane;
        float s[P], dp[P], dS[P];
        for (int a = 0; a < P; a++) s[a] = dp[a] = 0.0f;
        for (int d = 0; d < DQ; d++) {
            float kv = ks[lane * (DQ + 1) + d];
            for (int a = 0; a < P; a++) s[a] += qs[(w * P + a) * DQ + d] * kv;
        }
        for (int c = 0; c < DV; c++) {
            float vv = vs[lane * (DV + 1) + c];
            for (int a = 0; a < P; a++) dp[a] += dos[(w * P + a) * DV + c] * vv;
        }
        for (int a = 0; a < P; a++) {
            int64_t i = iw + a;
            dS[a] = i < T && j <= i ? expf(s[a] * scale - L[a]) * (dp[a] - D[a]) : 0.0f;
        }
        int nj = wlast - j0 + 1 < KT ? (int)(wlast - j0 + 1) : KT;
        for (int jj = 0; jj < nj; jj++) {
            float g[P];
            for (int a = 0; a < P; a++) g[a] = __shfl_sync(0xffffffffu, dS[a], jj);
            for (int r = 0; r < MAXR; r++) {
                int d = lane + 32 * r;
                if (d < DQ) {
                    float kv = ks[jj * (DQ + 1) + d];
                    for (int a = 0; a < P; a++) acc[a][r] += g[a] * kv;
                }
            }
        }
    }
    for (int a = 0; a < P; a++) {
        int64_t i = iw + a;
        if (i >= T) break;
        for (int r = 0; r < MAXR; r++) {
            int d = lane + 32 * r;
            if (d < DQ) dq[((b * T + i) * NH + h) * DQ + d] = scale * acc[a][r];
        }
    }
}

/* dk, dv: a warp per P keys.  smem: kr[WARPS·P][DQ], vr[WARPS·P][DV], qs[KT][DQ+1],
 * dos[KT][DV+1], ls[KT], dl[KT] */
template <int P>
__global__ void k_attn_bwd_dkv(float *dk, float *dv, const float *dout, const float *lse, const float *delta,
                               const float *q, const float *k, const float *v, int64_t T, int64_t NH, int DQ, int DV,
                               float scale) {
    extern __shared__ float sm[];
    constexpr int KB = WARPS * P;
    float *kr = sm, *vr = kr + KB * DQ, *qs = vr + KB * DV, *dos = qs + KT * (DQ + 1);
    float *ls = dos + KT * (DV + 1), *dl = ls + KT;
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int64_t b = blockIdx.z, h = blockIdx.y, j0b = (int64_t)blockIdx.x * KB, jw = j0b + (int64_t)w * P;
    ld_rows(kr, DQ, k, b, h, j0b, KB, T, NH, DQ);
    ld_rows(vr, DV, v, b, h, j0b, KB, T, NH, DV);
    float ak[P][MAXR], av[P][MAXR];
    for (int a = 0; a < P; a++)
        for (int r = 0; r < MAXR; r++) ak[a][r] = av[a][r] = 0.0f;
    for (int64_t it = j0b; it < T; it += KT) {
        __syncthreads();
        ld_rows(qs, DQ + 1, q, b, h, it, KT, T, NH, DQ);
        ld_rows(dos, DV + 1, dout, b, h, it, KT, T, NH, DV);
        for (int e = threadIdx.x; e < KT; e += blockDim.x) {
            int64_t i = it + e;
            ls[e] = i < T ? lse[(b * NH + h) * T + i] : 0.0f;
            dl[e] = i < T ? delta[(b * NH + h) * T + i] : 0.0f;
        }
        __syncthreads();
        if (jw >= T || it + KT - 1 < jw) continue;   /* the tile's queries all precede the warp's keys */
        int64_t i = it + lane;
        float s[P], dp[P], Pr[P], dS[P];
        for (int a = 0; a < P; a++) s[a] = dp[a] = 0.0f;
        for (int d = 0; d < DQ; d++) {
            float qv = qs[lane * (DQ + 1) + d];
            for (int a = 0; a < P; a++) s[a] += qv * kr[(w * P + a) * DQ + d];
        }
        for (int c = 0; c < DV; c++) {
            float ov = dos[lane * (DV + 1) + c];
            for (int a = 0; a < P; a++) dp[a] += ov * vr[(w * P + a) * DV + c];
        }
        for (int a = 0; a < P; a++) {
            int64_t j = jw + a;
            Pr[a] = dS[a] = 0.0f;
            if (j < T && i < T && i >= j) {
                Pr[a] = expf(s[a] * scale - ls[lane]);
                dS[a] = Pr[a] * (dp[a] - dl[lane]);
            }
        }
        for (int ii = 0; ii < KT; ii++) {
            float p[P], g[P];
            bool any = false;
            for (int a = 0; a < P; a++) {
                p[a] = __shfl_sync(0xffffffffu, Pr[a], ii), g[a] = __shfl_sync(0xffffffffu, dS[a], ii);
                any |= p[a] != 0.0f || g[a] != 0.0f;
            }
            if (!any) continue;   /* masked for every key of the warp (warp-uniform) */
            for (int r = 0; r < MAXR; r++) {
                int c = lane + 32 * r;
                if (c < DV) {
                    float ov = dos[ii * (DV + 1) + c];
                    for (int a = 0; a < P; a++) av[a][r] += p[a] * ov;
                }
                if (c < DQ) {
                    float qv = qs[ii * (DQ + 1) + c];
                    for (int a = 0; a < P; a++) ak[a][r] += g[a] * qv;
                }
            }
        }
    }
    for (int a = 0; a < P; a++) {
        int64_t j = jw + a;
        if (j >= T) break;
        for (int r = 0; r < MAXR; r++) {
            int c = lane + 32 * r;
            if (c < DV) dv[((b * T + j) * NH + h) * DV + c] = av[a][r];
            if (c < DQ) dk[((b * T + j) * NH + h) * DQ + c] = scale * ak[a][r];
        }
    }
}

void check_dims(int64_t DQ, int64_t DV, int64_t B, int64_t NH) {
    if (DQ > 32 * MAXR || DV > 32 * MAXR || DQ < 1 || DV < 1)
        ds_cu_fail("attention", "head dims must be 1..256", __FILE__, __LINE__);
    if (B > 65535 || NH > 65535) ds_cu_fail("attention", "batch and heads must be <= 65535", __FILE__, __LINE__);
}

template <typename F>
void set_smem(F *kernel, size_t bytes) {
    if (bytes > 48 * 1024) CU_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}


/* P rows a warp: 4 while the head dims are at most 128, else 2 (shared memory) */
template <int P>
void attn_fwd(float *out, float *lse, const float *q, const float *k, const float *v, int64_t B, int64_t T,
              int64_t NH, int64_t DQ, int64_t DV, float scale) {
    size_t sm = (size_t)(WARPS * P * DQ + KT * (DQ + 1) + KT * DV) * sizeof(float);
    set_smem(k_attn_fwd<P>, sm);
    dim3 grid((unsigned)((T + WARPS * P - 1) / (WARPS * P)), (unsigned)NH, (unsigned)B);
    k_attn_fwd<P><<<grid, WARPS * 32, sm, g_cu.stream>>>(out, lse, q, k, v, T, NH, (int)DQ, (int)DV, scale);
    CU_LAUNCHED();
}
template <int P>
void attn_bwd(float *dq, float *dk, float *dv, const float *dout, const float *lse, const float *delta, const float *q,
              const float *k, const float *v, int64_t B, int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale) {
    dim3 grid((unsigned)((T + WARPS * P - 1) / (WARPS * P)), (unsigned)NH, (unsigned)B);
    size_t sm_q = (size_t)(WARPS * P * DQ + WARPS * P * DV + KT * (DQ + 1) + KT * (DV + 1)) * sizeof(float);
    set_smem(k_attn_bwd_dq<P>, sm_q);
    k_attn_bwd_dq<P><<<grid, WARPS * 32, sm_q, g_cu.stream>>>(dq, dout, lse, delta, q, k, v, T, NH, (int)DQ, (int)DV,
                                                               scale);
    CU_LAUNCHED();
    size_t sm_kv = (size_t)(WARPS * P * DQ + WARPS * P * DV + KT * (DQ + 1) + KT * (DV + 1) + 2 * KT) * sizeof(float);
    set_smem(k_attn_bwd_dkv<P>, sm_kv);
    k_attn_bwd_dkv<P><<<grid, WARPS * 32, sm_kv, g_cu.stream>>>(dk, dv, dout, lse, delta, q, k, v, T, NH, (int)DQ,
                                                                 (int)DV, scale);
    CU_LAUNCHED();
}

/* ---- on the tensor cores: BF16 operands, FP32 accumulation (the BF16 and FP8 tables) ----
 * The same recurrence and equations with the products on the tensor cores
 * (WMMA 16x16x16, BF16 inputs, FP32 accumulators), as FlashAttention and
 * PyTorch's BF16 autocast compute attention: q, k, v, dout rounded to BF16
 * (round to nearest even) as a tile is loaded; scores, the running max and
 * sum, the log-sum-exp and Δ in FP32; the probabilities P (and dS) rounded
 * to BF16 for their products.  A block has TW warps and TB = 16·TW rows
 * (queries in the forward and dq kernels, keys in the dk/dv kernel); each
 * warp owns 16 of them, and the other side streams through shared memory in
 * tiles of TK (64 or 32).  The forward holds O in registers on mma.sync
 * (k_attn_fwd_mma, DV up to 128), else in shared memory in FP32 (WMMA: the
 * forward rescales O's rows as the max moves); the backward's accumulators
 * (dq, dk, dv) in registers on mma.sync too (k_attn_bwd_q_mma,
 * k_attn_bwd_kv_mma: head dims up to (192, 128)), else in shared memory
 * (WMMA); tc_pick takes the first variant that lets two blocks share an SM,
 * leaving out any that failed the self-check.  A WMMA
 * product keeps four of its 16x16 output tiles in registers at a time, so an
 * A fragment is loaded once for four B fragments.  Every shared tile's rows
 * are padded by 16 bytes (ldh, ldf), so the 8 rows that one phase of a
 * fragment load reads start in 8 different banks.  The WMMA kernels' element-wise
 * work goes a row at a time with the lanes across the row (the mma.sync
 * kernels': in registers).  No atomics: dq has its own kernel, so the
 * result does not depend on scheduling.  Taken where the head dims are
 * multiples of 16 and the tiles fit in shared memory, else the FP32 kernels
 * above.  The default of the BF16 and FP8 tables (DSV3_CUDA_ATTN=fp32 turns
 * it off), after a self-check at first use against the FP32 kernels
 * (tc_self_check, every variant: off, with a line on stderr, where it
 * disagrees).  The CPU's BF16 table keeps attention in FP32; BF16 attention
 * moves BF16 training no further than rounding away FP32's last mantissa bit
 * does (tools/attn_bf16_emulate.c, 12 seeds: at a peak lr of 1e-3 0.047% /
 * 0.041% on the train / val loss means against 0.066% / 0.019%; at 3e-3
 * 0.10% / 0.13% against 0.30% / 0.33%, where the run is chaotic), and the
 * training parity (cuda_train_vs_cpu) holds the GPU's BF16 and FP8 runs,
 * attention included, within 0.25% of the CPU's. */
constexpr int TW = 4, TB = 16 * TW, TG = 4; /* warps, rows a block, output tiles a product holds */
typedef __nv_bfloat16 bf16;
typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> frag_a;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> frag_b;  /* B(k, n) at p[k*ld + n] */
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> frag_bt; /* B(k, n) at p[n*ld + k] */
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> frag_c;
struct __align__(128) tc_smem { float v[32]; };

/* the row strides of D-wide shared tiles, BF16 and FP32: D (a multiple of 16)
 * plus 16 bytes, an odd multiple of 4 banks, so 8 consecutive rows start in 8
 * banks; 16 rows of either stay a multiple of 32 bytes (WMMA's alignment) */
__host__ __device__ constexpr int ldh(int D) { return D + 8; }
__host__ __device__ constexpr int ldf(int D) { return D + 4; }

/* FP32 -> BF16, round to nearest even: on the GPU one cvt (sm_80 and up), two values a cvt in
 * pack_bf; a NaN comes out as the hardware's NaN where ds_cu_f32_to_bf16 keeps its payload, the
 * only difference (cudamock: ds_cu_f32_to_bf16) */
__device__ __forceinline__ bf16 to_bf(float f) {
#if defined(__CUDA_ARCH__)
    return __float2bfloat16_rn(f);
#else
    return __ushort_as_bfloat16(ds_cu_f32_to_bf16(f));
#endif
}
/* two BF16 values at p (4-byte aligned) as one register */
__device__ __forceinline__ uint32_t ld_pair(const bf16 *p) { return *(const uint32_t *)p; }
/* lo, hi rounded to BF16, lo in the low half (__floats2bfloat162_rn: .x, the low half, from its
 * first argument) */
__device__ __forceinline__ uint32_t pack_bf(float lo, float hi) {
#if defined(__CUDA_ARCH__)
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(const uint32_t *)&v;
#else
    return (uint32_t)ds_cu_f32_to_bf16(lo) | (uint32_t)ds_cu_f32_to_bf16(hi) << 16;
#endif
}
/* the causal mask of a tile in columns: row i (a query) sees the tile's keys j0 + c for
 * c < lim (0 for a row from T on), as one int per row, so the elements test c alone */
__device__ __forceinline__ int keys_seen(int64_t i, int64_t j0, int64_t T, int TK) {
    const int64_t n = i - j0 + 1;
    return i >= T || n <= 0 ? 0 : n < TK ? (int)n : TK;
}
struct __align__(16) f32x4 { float v[4]; };
struct __align__(8) bf16x4 { uint32_t lo, hi; };
/* rows r0.. (n of them; rows from T on as zeros) of x (B, T, NH, D), head h, as BF16: sh[r*ld + d].
 * With x 16-byte aligned (D a multiple of 16: so is every row) 4 values a thread at a time, the
 * block's threads across the tile (coalesced, 8-byte shared stores); else a warp a row, the
 * lanes across it */
__device__ void tc_load(bf16 *sh, int ld, const float *x, int64_t b, int64_t r0, int64_t T, int64_t NH, int64_t h,
                        int D, int n) {
    if (((uintptr_t)x & 15) == 0) {
        const int d4 = D / 4;
        for (int e = threadIdx.x; e < n * d4; e += blockDim.x) {
            const int r = e / d4, c = 4 * (e - r * d4);
            const int64_t t = r0 + r;
            f32x4 f = {{0.0f, 0.0f, 0.0f, 0.0f}};
            if (t < T) f = *(const f32x4 *)(x + ((b * T + t) * NH + h) * D + c);
            *(bf16x4 *)(sh + r * ld + c) = bf16x4{pack_bf(f.v[0], f.v[1]), pack_bf(f.v[2], f.v[3])};
        }
        return;
    }
    for (int r = threadIdx.x >> 5; r < n; r += blockDim.x >> 5) {
        const int64_t t = r0 + r;
        for (int c = threadIdx.x & 31; c < D; c += 32)
            sh[r * ld + c] = to_bf(t < T ? x[((b * T + t) * NH + h) * D + c] : 0.0f);
    }
}
/* rows r0.. (n of them, those from T on left out) of x (B, T, NH, D), head h, = scale · sh[r*ld + d] */
__device__ void tc_store(float *x, const float *sh, int ld, float scale, int64_t b, int64_t r0, int64_t T, int64_t NH,
                         int64_t h, int D, int n) {
    for (int r = threadIdx.x >> 5; r < n; r += blockDim.x >> 5) {
        const int64_t t = r0 + r;
        if (t < T)
            for (int c = threadIdx.x & 31; c < D; c += 32) x[((b * T + t) * NH + h) * D + c] = scale * sh[r * ld + c];
    }
}
/* zeros in rows 0..n-1, columns 0..D-1 of a shared FP32 tile */
__device__ void tc_zero(float *sh, int ld, int D, int n) {
    for (int r = threadIdx.x >> 5; r < n; r += blockDim.x >> 5)
        for (int c = threadIdx.x & 31; c < D; c += 32) sh[r * ld + c] = 0.0f;
}
/* lq, dl [n] = lse, delta (B, NH, T) of rows r0.. (0 from T on) */
__device__ void tc_load_stats(float *lq, float *dl, const float *lse, const float *delta, int64_t b, int64_t r0,
                              int64_t T, int64_t NH, int64_t h, int n) {
    for (int e = threadIdx.x; e < n; e += blockDim.x) {
        int64_t t = r0 + e;
        lq[e] = t < T ? lse[(b * NH + h) * T + t] : 0.0f;
        dl[e] = t < T ? delta[(b * NH + h) * T + t] : 0.0f;
    }
}
/* the warp's 16 rows of C (ldc floats, shared) = A (16 x K, row-major, lda) · B (K x ncol), or
 * (acc) C += that: B row-major (ldb), or (BT) given as its transpose (ncol x K, row-major, ldb);
 * ncol and K multiples of 16.  TG output tiles at a time in registers, each A fragment loaded
 * once for them. */
template <int BT>
__device__ void tc_mma(float *C, int ldc, const bf16 *A, int lda, const bf16 *B, int ldb, int ncol, int K, int acc) {
    typedef typename std::conditional<BT != 0, frag_bt, frag_b>::type frag_bb;
    const int nt = ncol / 16;
    for (int n0 = 0; n0 < nt; n0 += TG) {
        const int ng = nt - n0 < TG ? nt - n0 : TG;
        frag_c c[TG];
#pragma unroll
        for (int g = 0; g < TG; g++)
            if (g < ng) {
                if (acc) wmma::load_matrix_sync(c[g], C + 16 * (n0 + g), ldc, wmma::mem_row_major);
                else wmma::fill_fragment(c[g], 0.0f);
            }
        for (int kk = 0; kk < K / 16; kk++) {
            frag_a a;
            wmma::load_matrix_sync(a, A + 16 * kk, lda);
#pragma unroll
            for (int g = 0; g < TG; g++)
                if (g < ng) {
                    const int64_t n = n0 + g;
                    frag_bb bb;
                    wmma::load_matrix_sync(bb, BT ? B + 16 * n * ldb + 16 * kk : B + (int64_t)16 * kk * ldb + 16 * n, ldb);
                    wmma::mma_sync(c[g], a, bb, c[g]);
                }
        }
#pragma unroll
        for (int g = 0; g < TG; g++)
            if (g < ng) wmma::store_matrix_sync(C + 16 * (n0 + g), c[g], ldc, wmma::mem_row_major);
    }
}
/* C = A · Bᵀ (B given row-major (ncol x K)); C += A · B (B row-major (K x ncol)) */
__device__ __forceinline__ void tc_abt(float *C, int ldc, const bf16 *A, int lda, const bf16 *B, int ldb, int ncol,
                                       int K) {
    tc_mma<1>(C, ldc, A, lda, B, ldb, ncol, K, 0);
}
__device__ __forceinline__ void tc_ab_acc(float *C, int ldc, const bf16 *A, int lda, const bf16 *B, int ldb, int ncol,
                                          int K) {
    tc_mma<0>(C, ldc, A, lda, B, ldb, ncol, K, 1);
}

/* ---- accumulators in registers: mma.sync m16n8k16 (BF16 in, FP32 out) ----
 * WMMA leaves a fragment's element-to-lane map unspecified, so the forward
 * above keeps O in shared memory, where the online softmax can rescale its
 * rows.  mma.sync's fragments have the PTX ISA's layout (g = lane / 4,
 * t = lane % 4; a register's low 16 bits hold the lower-numbered element):
 *   A (16 x 16): a0 row g, k 2t..2t+1; a1 row g+8, same k; a2 row g,
 *     k 2t+8..2t+9; a3 row g+8, k 2t+8..;
 *   B (16 x 8): b0 k 2t..2t+1, column g; b1 k 2t+8..2t+9, column g;
 *   C, D (16 x 8): d0, d1 row g, columns 2t, 2t+1; d2, d3 row g+8.
 * So a lane holds two rows of the warp's 16 (g, g+8) and knows which: the
 * running max and sum are two registers, a row's max and sum over its keys
 * are two shuffles across the 4 lanes that share it, the rescale of O is a
 * multiply in registers, and two adjacent 16 x 8 score tiles, rounded to
 * BF16 and paired, are the A fragment of P·V as they stand (the backward's
 * dS and P likewise for dS·K, Pᵀ·dO and dSᵀ·Q): scores never touch shared
 * memory.  B fragments: 32-bit pairs along a tile's rows where k is the
 * head dim (K for S = Q·Kᵀ); where k runs over the tile's rows (V for P·V,
 * K for dS·K, dO and Q for Pᵀ·dO and dSᵀ·Q) ldmatrix .trans, which reads
 * 8 x 8 blocks of the row-major tile and hands each lane its column pairs,
 * two tiles' fragments an instruction.  With the padded rows (ldh: an odd
 * multiple of 4 banks) the 32 lanes' 32-bit reads, and each 8-row block of
 * ldmatrix, hit 32 banks. */
constexpr int OV = 16; /* O's 16 x 8 tiles a warp holds: DV up to 128 (DeepSeek-V3's) */

/* d += A · B (16 x 16 by 16 x 8), BF16 in, FP32 out */
__device__ __forceinline__ void mma_bf16(float *d, const uint32_t *a, const uint32_t *b) {
#if defined(__CUDA_ARCH__)
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    cudamock_mma_bf16(d, a, b);
#endif
}
/* c[n] = A · Bᵀ's 16 x 8 tile n (n < N): A the warp's 16 rows (K wide, lda), B's rows 8n..8n+7
 * (ldb), given at a = &A[g][2t] and b = &B[g][2t]; K a multiple of 16 */
template <int N>
__device__ __forceinline__ void mma_abt(float (&c)[N][4], const bf16 *a, int lda, const bf16 *b, int ldb, int K) {
#pragma unroll
    for (int n = 0; n < N; n++) c[n][0] = c[n][1] = c[n][2] = c[n][3] = 0.0f;
    for (int kk = 0; kk < K / 16; kk++) {
        const bf16 *ap = a + 16 * kk;
        const uint32_t af[4] = {ld_pair(ap), ld_pair(ap + 8 * lda), ld_pair(ap + 8), ld_pair(ap + 8 * lda + 8)};
#pragma unroll
        for (int n = 0; n < N; n++) {
            const bf16 *bp = b + 8 * n * ldb + 16 * kk;
            const uint32_t bb[2] = {ld_pair(bp), ld_pair(bp + 8)};
            mma_bf16(c[n], af, bb);
        }
    }
}
/* 16 x 8 result tiles (N of them, FP32) as the A fragments of their 16 x 8N product, BF16:
 * tiles 2kk and 2kk+1 are fragment kk (c0 c1 | c2 c3 of each, pairs along k) */
template <int N>
__device__ __forceinline__ void frags_of(uint32_t (&af)[N / 2][4], const float (&c)[N][4]) {
#pragma unroll
    for (int n = 0; n < N; n++) {
        af[n / 2][(n & 1) * 2] = pack_bf(c[n][0], c[n][1]);
        af[n / 2][(n & 1) * 2 + 1] = pack_bf(c[n][2], c[n][3]);
    }
}
/* four 8 x 8 BF16 matrices from shared memory, transposed: lane l names row l % 8 of matrix
 * l / 8 (16-byte aligned); register j of lane l gets column l / 4, rows 2 (l % 4) and
 * 2 (l % 4) + 1 of matrix j, the first in the low half (ldmatrix .trans: the B fragment of a
 * row-major [k][n] tile) */
__device__ __forceinline__ void ldsm_x4_t(uint32_t *r, const bf16 *p) {
#if defined(__CUDA_ARCH__)
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
#else
    cudamock_ldmatrix_x4_trans(r, p);
#endif
}
/* c[n] += A · B's tile n (n < nt <= N, nt even), A as KT A fragments in registers (16 rows,
 * 16·KT wide), B (16·KT x 8·nt) row-major at b (ldb, rows 16-byte aligned): one ldmatrix
 * .trans a pair of tiles, matrices (k 0-7, tile n), (k 8-15, n), (k 0-7, n+1), (k 8-15, n+1) */
template <int N, int KT>
__device__ __forceinline__ void mma_frags_ab(float (&c)[N][4], int nt, const uint32_t (&af)[KT][4], const bf16 *b,
                                             int ldb) {
    const int lane = threadIdx.x & 31;
    const bf16 *bl = b + ((lane & 7) + 8 * ((lane >> 3) & 1)) * ldb + 8 * (lane >> 4);
#pragma unroll
    for (int kk = 0; kk < KT; kk++)
#pragma unroll
        for (int n = 0; n < N; n += 2)
            if (n < nt) {
                uint32_t bb[4];
                ldsm_x4_t(bb, bl + 16 * kk * ldb + 8 * n);
                mma_bf16(c[n], af[kk], bb);
                mma_bf16(c[n + 1], af[kk], bb + 2);
            }
}

/* grid (ceil(T/TB), NH, B), TW warps, DV <= 8·OV.  smem: qs[TB][DQ], ks[TK][DQ], vs[TK][DV]
 * (BF16), rows padded (ldh).  The WMMA forward's arithmetic: the scores in FP32 from BF16
 * products, P = exp(s − m) summed in FP32 and rounded to BF16 for P·V. */
template <int TK>
__global__ void k_attn_fwd_mma(float *out, float *lse, const float *q, const float *k, const float *v, int64_t T,
                               int64_t NH, int DQ, int DV, float scale) {
    extern __shared__ tc_smem sm_tc[];
    const int lq = ldh(DQ), lv = ldh(DV), nv = DV / 8;
    bf16 *qs = (bf16 *)sm_tc, *ks = qs + TB * lq, *vs = ks + TK * lq;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int64_t b = blockIdx.z, h = blockIdx.y, i0 = (int64_t)blockIdx.x * TB;
    const int64_t imax = (i0 + TB < T ? i0 + TB : T) - 1;
    const int64_t ir[2] = {i0 + 16 * w + g, i0 + 16 * w + g + 8}; /* the lane's two rows */
    tc_load(qs, lq, q, b, i0, T, NH, h, DQ, TB);
    float o[OV][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int n = 0; n < OV; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    const bf16 *qa = qs + (16 * w + g) * lq + 2 * t; /* a0's pair at k = 0 */
    for (int64_t j0 = 0; j0 <= imax; j0 += TK) {
        __syncthreads(); /* the last tile's readers are done (and qs is written) */
        tc_load(ks, lq, k, b, j0, T, NH, h, DQ, TK);
        tc_load(vs, lv, v, b, j0, T, NH, h, DV, TK);
        __syncthreads();
        if (j0 > i0 + 16 * w + 15) continue; /* every key after the warp's rows: nothing to add */
        float s[TK / 8][4]; /* S = Q Kᵀ: the warp's 16 rows, TK keys */
        mma_abt(s, qa, lq, ks + g * lq + 2 * t, lq, DQ);
        /* the online softmax: element e of tile n is row ir[e / 2], key j0 + 8n + 2t + e % 2 */
        float mx[2] = {-INFINITY, -INFINITY}, sum[2] = {0.0f, 0.0f}, corr[2];
        const int lim[2] = {keys_seen(ir[0], j0, T, TK), keys_seen(ir[1], j0, T, TK)};
#pragma unroll
        for (int n = 0; n < TK / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                s[n][e] = 8 * n + 2 * t + (e & 1) < lim[e >> 1] ? s[n][e] * scale : -INFINITY;
                mx[e >> 1] = fmaxf(mx[e >> 1], s[n][e]);
            }
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            const float mn = fmaxf(m[r], mx[r]);
            corr[r] = mn == -INFINITY ? 1.0f : expf(m[r] - mn);
            m[r] = mn;
        }
#pragma unroll
        for (int n = 0; n < TK / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                s[n][e] = s[n][e] == -INFINITY ? 0.0f : expf(s[n][e] - m[e >> 1]);
                sum[e >> 1] += s[n][e];
            }
        uint32_t p[TK / 16][4]; /* P (BF16) as the A fragments of P·V */
        frags_of(p, s);
#pragma unroll
        for (int r = 0; r < 2; r++) {
            sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 1);
            sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 2);
            l[r] = l[r] * corr[r] + sum[r];
        }
#pragma unroll
        for (int n = 0; n < OV; n++)
            if (n < nv) o[n][0] *= corr[0], o[n][1] *= corr[0], o[n][2] *= corr[1], o[n][3] *= corr[1];
        mma_frags_ab(o, nv, p, vs, lv); /* O += P V */
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int64_t i = ir[r];
        if (i >= T) continue;
        const float inv = 1.0f / l[r];
        float *y = out + ((b * T + i) * NH + h) * DV + 2 * t;
#pragma unroll
        for (int n = 0; n < OV; n++)
            if (n < nv) y[8 * n] = o[n][2 * r] * inv, y[8 * n + 1] = o[n][2 * r + 1] * inv;
        if (lse && t == 0) lse[(b * NH + h) * T + i] = m[r] + logf(l[r]);
    }
}

/* grid (ceil(T/TB), NH, B), TW warps.  smem: qs[TB][DQ], ks[TK][DQ], vs[TK][DV], ps[TB][TK] (BF16);
 * ss[TB][TK], os[TB][DV] (FP32), rows padded (ldh, ldf) */
template <int TK>
__global__ void k_attn_fwd_tc(float *out, float *lse, const float *q, const float *k, const float *v, int64_t T,
                              int64_t NH, int DQ, int DV, float scale) {
    extern __shared__ tc_smem sm_tc[];
    const int lq = ldh(DQ), lv = ldh(DV), lp = ldh(TK), ls = ldf(TK), lo = ldf(DV);
    bf16 *qs = (bf16 *)sm_tc, *ks = qs + TB * lq, *vs = ks + TK * lq, *ps = vs + TK * lv;
    float *ss = (float *)(ps + TB * lp), *os = ss + TB * ls;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t b = blockIdx.z, h = blockIdx.y, i0 = (int64_t)blockIdx.x * TB;
    const int64_t imax = (i0 + TB < T ? i0 + TB : T) - 1;
    tc_load(qs, lq, q, b, i0, T, NH, h, DQ, TB);
    tc_zero(os, lo, DV, TB);
    float m[16], l[16]; /* the running max and sum of the warp's rows (every lane holds them) */
#pragma unroll
    for (int r = 0; r < 16; r++) m[r] = -INFINITY, l[r] = 0.0f;
    for (int64_t j0 = 0; j0 <= imax; j0 += TK) {
        __syncthreads(); /* the last tile's readers are done (and qs, os are written) */
        tc_load(ks, lq, k, b, j0, T, NH, h, DQ, TK);
        tc_load(vs, lv, v, b, j0, T, NH, h, DV, TK);
        __syncthreads();
        tc_abt(ss + 16 * w * ls, ls, qs + 16 * w * lq, lq, ks, lq, TK, DQ);
        __syncwarp();
        /* the online softmax, a row at a time, the lanes across its keys (unrolled: m, l in registers) */
#pragma unroll
        for (int r = 0; r < 16; r++) {
            const int row = 16 * w + r;
            const int64_t i = i0 + row;
            float sv[TK / 32], mx = -INFINITY, sum = 0.0f;
#pragma unroll
            for (int u = 0; u < TK / 32; u++) {
                int c = lane + 32 * u;
                int64_t j = j0 + c;
                sv[u] = i < T && j <= i ? ss[row * ls + c] * scale : -INFINITY;
                mx = fmaxf(mx, sv[u]);
            }
            mx = warp_max(mx);
            float mn = fmaxf(m[r], mx), corr = mn == -INFINITY ? 1.0f : expf(m[r] - mn);
#pragma unroll
            for (int u = 0; u < TK / 32; u++) {
                float p = sv[u] == -INFINITY ? 0.0f : expf(sv[u] - mn);
                sum += p;
                ps[row * lp + lane + 32 * u] = to_bf(p);
            }
            l[r] = l[r] * corr + warp_sum(sum), m[r] = mn;
            for (int c = lane; c < DV; c += 32) os[row * lo + c] *= corr;
        }
        __syncwarp();
        tc_ab_acc(os + 16 * w * lo, lo, ps + 16 * w * lp, lp, vs, lv, DV, TK);
        __syncwarp();
    }
#pragma unroll
    for (int r = 0; r < 16; r++) {
        const int row = 16 * w + r;
        const int64_t i = i0 + row;
        if (i >= T) break;
        float inv = 1.0f / l[r];
        for (int c = lane; c < DV; c += 32) out[((b * T + i) * NH + h) * DV + c] = os[row * lo + c] * inv;
        if (lse && lane == 0) lse[(b * NH + h) * T + i] = m[r] + logf(l[r]);
    }
}

/* grid (ceil(T/TB), NH, B): a block's TB keys j0.., each query tile from the
 * one holding j0 on (causal).  smem: ks[TB][DQ], vs[TB][DV], qs[TK][DQ],
 * dos[TK][DV], pt[TB][TK], dst[TB][TK] (BF16); st[TB][TK], dpt[TB][TK],
 * dks[TB][DQ], dvs[TB][DV], lq[TK], dl[TK] (FP32), rows padded.  (dK, dV in
 * registers: k_attn_bwd_kv_mma.) */
template <int TK>
__global__ void k_attn_bwd_kv_tc(float *dk, float *dv, const float *dout, const float *lse, const float *delta,
                                 const float *q, const float *k, const float *v, int64_t T, int64_t NH, int DQ, int DV,
                                 float scale) {
    extern __shared__ tc_smem sm_tc[];
    const int hq = ldh(DQ), hv = ldh(DV), hp = ldh(TK), fs = ldf(TK), fq = ldf(DQ), fv = ldf(DV);
    bf16 *ks = (bf16 *)sm_tc, *vs = ks + TB * hq, *qs = vs + TB * hv, *dos = qs + TK * hq, *pt = dos + TK * hv,
         *dst = pt + TB * hp;
    float *st = (float *)(dst + TB * hp), *dpt = st + TB * fs, *dks = dpt + TB * fs, *dvs = dks + TB * fq,
          *lq = dvs + TB * fv, *dl = lq + TK;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t b = blockIdx.z, h = blockIdx.y, j0 = (int64_t)blockIdx.x * TB;
    tc_load(ks, hq, k, b, j0, T, NH, h, DQ, TB);
    tc_load(vs, hv, v, b, j0, T, NH, h, DV, TB);
    tc_zero(dks, fq, DQ, TB), tc_zero(dvs, fv, DV, TB);
    for (int64_t i0 = j0 / TK * TK; i0 < T; i0 += TK) {
        __syncthreads();
        tc_load(qs, hq, q, b, i0, T, NH, h, DQ, TK);
        tc_load(dos, hv, dout, b, i0, T, NH, h, DV, TK);
        tc_load_stats(lq, dl, lse, delta, b, i0, T, NH, h, TK);
        __syncthreads();
        tc_abt(st + 16 * w * fs, fs, ks + 16 * w * hq, hq, qs, hq, TK, DQ);  /* Sᵀ = K Qᵀ */
        tc_abt(dpt + 16 * w * fs, fs, vs + 16 * w * hv, hv, dos, hv, TK, DV); /* dPᵀ = V dOᵀ */
        __syncwarp();
        for (int r = 0; r < 16; r++) { /* a key at a time, the lanes across the queries */
            const int row = 16 * w + r;
            const int64_t j = j0 + row;
            for (int qi = lane; qi < TK; qi += 32) {
                int64_t i = i0 + qi;
                float p = i < T && j <= i ? expf(st[row * fs + qi] * scale - lq[qi]) : 0.0f;
                pt[row * hp + qi] = to_bf(p);
                dst[row * hp + qi] = to_bf(p * (dpt[row * fs + qi] - dl[qi]));
            }
        }
        __syncwarp();
        tc_ab_acc(dvs + 16 * w * fv, fv, pt + 16 * w * hp, hp, dos, hv, DV, TK); /* dV += Pᵀ dO */
        tc_ab_acc(dks + 16 * w * fq, fq, dst + 16 * w * hp, hp, qs, hq, DQ, TK); /* dK += dSᵀ Q */
        __syncwarp();
    }
    __syncthreads();
    tc_store(dv, dvs, fv, 1.0f, b, j0, T, NH, h, DV, TB);
    tc_store(dk, dks, fq, scale, b, j0, T, NH, h, DQ, TB);
}

/* grid (ceil(T/TB), NH, B): a block's TB queries, key tiles up to the last
 * query.  smem: qs[TB][DQ], dos[TB][DV], ks[TK][DQ], vs[TK][DV], dsb[TB][TK]
 * (BF16); s[TB][TK], dp[TB][TK], dqs[TB][DQ], lq[TB], dl[TB] (FP32), rows
 * padded.  (dQ in registers: k_attn_bwd_q_mma.) */
template <int TK>
__global__ void k_attn_bwd_q_tc(float *dq, const float *dout, const float *lse, const float *delta, const float *q,
                                const float *k, const float *v, int64_t T, int64_t NH, int DQ, int DV, float scale) {
    extern __shared__ tc_smem sm_tc[];
    const int hq = ldh(DQ), hv = ldh(DV), hp = ldh(TK), fs = ldf(TK), fq = ldf(DQ);
    bf16 *qs = (bf16 *)sm_tc, *dos = qs + TB * hq, *ks = dos + TB * hv, *vs = ks + TK * hq, *dsb = vs + TK * hv;
    float *s = (float *)(dsb + TB * hp), *dp = s + TB * fs, *dqs = dp + TB * fs, *lq = dqs + TB * fq, *dl = lq + TB;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t b = blockIdx.z, h = blockIdx.y, i0 = (int64_t)blockIdx.x * TB;
    const int64_t imax = (i0 + TB < T ? i0 + TB : T) - 1;
    tc_load(qs, hq, q, b, i0, T, NH, h, DQ, TB);
    tc_load(dos, hv, dout, b, i0, T, NH, h, DV, TB);
    tc_zero(dqs, fq, DQ, TB);
    tc_load_stats(lq, dl, lse, delta, b, i0, T, NH, h, TB);
    for (int64_t j0 = 0; j0 <= imax; j0 += TK) {
        __syncthreads();
        tc_load(ks, hq, k, b, j0, T, NH, h, DQ, TK);
        tc_load(vs, hv, v, b, j0, T, NH, h, DV, TK);
        __syncthreads();
        tc_abt(s + 16 * w * fs, fs, qs + 16 * w * hq, hq, ks, hq, TK, DQ);    /* S = Q Kᵀ */
        tc_abt(dp + 16 * w * fs, fs, dos + 16 * w * hv, hv, vs, hv, TK, DV); /* dP = dO Vᵀ */
        __syncwarp();
        for (int r = 0; r < 16; r++) { /* a query at a time, the lanes across the keys */
            const int row = 16 * w + r;
            const int64_t i = i0 + row;
            for (int kj = lane; kj < TK; kj += 32) {
                int64_t j = j0 + kj;
                float p = i < T && j <= i ? expf(s[row * fs + kj] * scale - lq[row]) : 0.0f;
                dsb[row * hp + kj] = to_bf(p * (dp[row * fs + kj] - dl[row]));
            }
        }
        __syncwarp();
        tc_ab_acc(dqs + 16 * w * fq, fq, dsb + 16 * w * hp, hp, ks, hq, DQ, TK); /* dQ += dS K */
        __syncwarp();
    }
    __syncthreads();
    tc_store(dq, dqs, fq, scale, b, i0, T, NH, h, DQ, TB);
}

/* grid (ceil(T/TB), NH, B), TW warps, DQ <= 8·QV: dq on mma.sync, the k_attn_fwd_mma way.  A
 * lane's two rows (g, g+8) keep their lse and Δ in registers; S = Q Kᵀ and dP = dO Vᵀ in
 * registers; dS = P ∘ (dP − Δ), rounded to BF16 and paired, is dQ += dS K's A fragment in
 * place (K's B fragments by ldmatrix .trans).  smem: qs[TB][DQ], dos[TB][DV], ks[TK][DQ],
 * vs[TK][DV] (BF16), rows padded.  The WMMA dq kernel's
 * arithmetic. */
constexpr int QV = 24; /* dQ's 16 x 8 tiles a warp holds: DQ up to 192 (DeepSeek-V3's) */
template <int TK>
__global__ void k_attn_bwd_q_mma(float *dq, const float *dout, const float *lse, const float *delta, const float *q,
                                 const float *k, const float *v, int64_t T, int64_t NH, int DQ, int DV, float scale) {
    extern __shared__ tc_smem sm_tc[];
    const int hq = ldh(DQ), hv = ldh(DV), nq = DQ / 8;
    bf16 *qs = (bf16 *)sm_tc, *dos = qs + TB * hq, *ks = dos + TB * hv, *vs = ks + TK * hq;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int64_t b = blockIdx.z, h = blockIdx.y, i0 = (int64_t)blockIdx.x * TB;
    const int64_t imax = (i0 + TB < T ? i0 + TB : T) - 1;
    const int64_t ir[2] = {i0 + 16 * w + g, i0 + 16 * w + g + 8};
    float lq[2], dl[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        lq[r] = ir[r] < T ? lse[(b * NH + h) * T + ir[r]] : 0.0f;
        dl[r] = ir[r] < T ? delta[(b * NH + h) * T + ir[r]] : 0.0f;
    }
    tc_load(qs, hq, q, b, i0, T, NH, h, DQ, TB);
    tc_load(dos, hv, dout, b, i0, T, NH, h, DV, TB);
    float acc[QV][4];
#pragma unroll
    for (int n = 0; n < QV; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    const bf16 *qa = qs + (16 * w + g) * hq + 2 * t, *da = dos + (16 * w + g) * hv + 2 * t;
    for (int64_t j0 = 0; j0 <= imax; j0 += TK) {
        __syncthreads();
        tc_load(ks, hq, k, b, j0, T, NH, h, DQ, TK);
        tc_load(vs, hv, v, b, j0, T, NH, h, DV, TK);
        __syncthreads();
        if (j0 > i0 + 16 * w + 15) continue; /* every key after the warp's rows */
        float s[TK / 8][4], dp[TK / 8][4]; /* S = Q Kᵀ, dP = dO Vᵀ */
        mma_abt(s, qa, hq, ks + g * hq + 2 * t, hq, DQ);
        mma_abt(dp, da, hv, vs + g * hv + 2 * t, hv, DV);
        const int lim[2] = {keys_seen(ir[0], j0, T, TK), keys_seen(ir[1], j0, T, TK)};
#pragma unroll
        for (int n = 0; n < TK / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float p = 8 * n + 2 * t + (e & 1) < lim[e >> 1] ? expf(s[n][e] * scale - lq[e >> 1]) : 0.0f;
                s[n][e] = p * (dp[n][e] - dl[e >> 1]);
            }
        uint32_t ds[TK / 16][4]; /* dS (BF16) as the A fragments of dS K */
        frags_of(ds, s);
        mma_frags_ab(acc, nq, ds, ks, hq); /* dQ += dS K */
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int64_t i = ir[r];
        if (i >= T) continue;
        float *y = dq + ((b * T + i) * NH + h) * DQ + 2 * t;
#pragma unroll
        for (int n = 0; n < QV; n++)
            if (n < nq) y[8 * n] = scale * acc[n][2 * r], y[8 * n + 1] = scale * acc[n][2 * r + 1];
    }
}

/* grid (ceil(T/TB), NH, B), TW warps, DQ <= 8·KQ, DV <= 8·KV: dk, dv on mma.sync.  A warp's 16
 * keys are the rows: Sᵀ = K Qᵀ and dPᵀ = V dOᵀ in registers (B fragments from Q's and dO's
 * rows), Pᵀ and dSᵀ = Pᵀ ∘ (dPᵀ − Δ) rounded to BF16 and paired as the A fragments of dV += Pᵀ dO
 * and dK += dSᵀ Q (B fragments from dO's and Q's tiles by ldmatrix .trans); a
 * column's lse and Δ from shared memory.  smem: ks[TB][DQ], vs[TB][DV], qs[TK][DQ],
 * dos[TK][DV] (BF16), lq[TK], dl[TK] (FP32), rows padded.  The WMMA
 * dk/dv kernel's arithmetic. */
constexpr int KQ = 24, KV = 16; /* dK's and dV's 16 x 8 tiles a warp holds: (192, 128) */
template <int TK>
__global__ void k_attn_bwd_kv_mma(float *dk, float *dv, const float *dout, const float *lse, const float *delta,
                                  const float *q, const float *k, const float *v, int64_t T, int64_t NH, int DQ, int DV,
                                  float scale) {
    extern __shared__ tc_smem sm_tc[];
    const int hq = ldh(DQ), hv = ldh(DV), nq = DQ / 8, nv = DV / 8;
    bf16 *ks = (bf16 *)sm_tc, *vs = ks + TB * hq, *qs = vs + TB * hv, *dos = qs + TK * hq;
    float *lq = (float *)(dos + TK * hv), *dl = lq + TK;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int64_t b = blockIdx.z, h = blockIdx.y, j0 = (int64_t)blockIdx.x * TB;
    const int64_t jr[2] = {j0 + 16 * w + g, j0 + 16 * w + g + 8};
    tc_load(ks, hq, k, b, j0, T, NH, h, DQ, TB);
    tc_load(vs, hv, v, b, j0, T, NH, h, DV, TB);
    float ak[KQ][4], av[KV][4];
#pragma unroll
    for (int n = 0; n < KQ; n++) ak[n][0] = ak[n][1] = ak[n][2] = ak[n][3] = 0.0f;
#pragma unroll
    for (int n = 0; n < KV; n++) av[n][0] = av[n][1] = av[n][2] = av[n][3] = 0.0f;
    const bf16 *ka = ks + (16 * w + g) * hq + 2 * t, *va = vs + (16 * w + g) * hv + 2 * t;
    for (int64_t i0 = j0 / TK * TK; i0 < T; i0 += TK) {
        __syncthreads();
        tc_load(qs, hq, q, b, i0, T, NH, h, DQ, TK);
        tc_load(dos, hv, dout, b, i0, T, NH, h, DV, TK);
        tc_load_stats(lq, dl, lse, delta, b, i0, T, NH, h, TK);
        __syncthreads();
        if (i0 + TK <= j0 + 16 * w) continue; /* every query before the warp's keys */
        float st[TK / 8][4], dpt[TK / 8][4]; /* Sᵀ = K Qᵀ, dPᵀ = V dOᵀ */
        mma_abt(st, ka, hq, qs + g * hq + 2 * t, hq, DQ);
        mma_abt(dpt, va, hv, dos + g * hv + 2 * t, hv, DV);
        /* key j is seen by the tile's queries i0 + c for lo <= c < hi */
        const int64_t hl = T - i0;
        const int hi = hl < TK ? (int)hl : TK;
        int lo[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int64_t d = jr[r] - i0;
            lo[r] = d < 0 ? 0 : d > TK ? TK : (int)d;
        }
#pragma unroll
        for (int n = 0; n < TK / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int c = 8 * n + 2 * t + (e & 1);
                const float p = c >= lo[e >> 1] && c < hi ? expf(st[n][e] * scale - lq[c]) : 0.0f;
                st[n][e] = p;
                dpt[n][e] = p * (dpt[n][e] - dl[c]);
            }
        uint32_t pt[TK / 16][4], dst[TK / 16][4]; /* Pᵀ, dSᵀ (BF16) as A fragments */
        frags_of(pt, st);
        frags_of(dst, dpt);
        mma_frags_ab(av, nv, pt, dos, hv); /* dV += Pᵀ dO */
        mma_frags_ab(ak, nq, dst, qs, hq); /* dK += dSᵀ Q */
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int64_t j = jr[r];
        if (j >= T) continue;
        float *yk = dk + ((b * T + j) * NH + h) * DQ + 2 * t, *yv = dv + ((b * T + j) * NH + h) * DV + 2 * t;
#pragma unroll
        for (int n = 0; n < KQ; n++)
            if (n < nq) yk[8 * n] = scale * ak[n][2 * r], yk[8 * n + 1] = scale * ak[n][2 * r + 1];
#pragma unroll
        for (int n = 0; n < KV; n++)
            if (n < nv) yv[8 * n] = av[n][2 * r], yv[8 * n + 1] = av[n][2 * r + 1];
    }
}

/* the kernels' shared memory at a key (query) tile of tk, the backward's
 * accumulators in registers (reg) or shared memory */
size_t tc_fwd_smem(int64_t DQ, int64_t DV, int tk, int reg) {
    if (reg) return (size_t)(TB * ldh(DQ) + tk * ldh(DQ) + tk * ldh(DV)) * 2;
    return (size_t)(TB * ldh(DQ) + tk * ldh(DQ) + tk * ldh(DV) + TB * ldh(tk)) * 2 +
           (size_t)(TB * ldf(tk) + TB * ldf(DV)) * 4;
}
size_t tc_kv_smem(int64_t DQ, int64_t DV, int tk, int reg) {
    if (reg) return (size_t)(TB * ldh(DQ) + TB * ldh(DV) + tk * ldh(DQ) + tk * ldh(DV)) * 2 + (size_t)(2 * tk) * 4;
    return (size_t)(TB * ldh(DQ) + TB * ldh(DV) + tk * ldh(DQ) + tk * ldh(DV) + 2 * TB * ldh(tk)) * 2 +
           (size_t)(2 * TB * ldf(tk) + TB * ldf(DQ) + TB * ldf(DV) + 2 * tk) * 4;
}
size_t tc_q_smem(int64_t DQ, int64_t DV, int tk, int reg) {
    if (reg) return (size_t)(TB * ldh(DQ) + TB * ldh(DV) + tk * ldh(DQ) + tk * ldh(DV)) * 2;
    return (size_t)(TB * ldh(DQ) + TB * ldh(DV) + tk * ldh(DQ) + tk * ldh(DV) + TB * ldh(tk)) * 2 +
           (size_t)(2 * TB * ldf(tk) + TB * ldf(DQ) + 2 * TB) * 4;
}
/* A kernel's variant: its key (query) tile, and whether its accumulators
 * live in registers (the mma.sync kernels: O; dQ; dK and dV) or in shared
 * memory (the WMMA kernels).  Each kernel takes the first of: registers at
 * 64, registers at 32 (dk/dv: 32 before 64), shared at 64, shared at 32,
 * that lets two blocks share an SM (one block of TW warps an SM leaves the
 * tensor cores waiting on each block's loads and barriers), else the first
 * that fits the device at all; tk 0 where none does.  Registers hold head
 * dims up to (192, 128) (DeepSeek-V3's; O: DV up to 128).  Shared memory
 * with registers, at 64 (dk/dv 32): `small`'s (96, 64) the forward 35 KiB,
 * dq 44, dk/dv 33.25; (192, 128) 67, 84 and 63.25 KiB (the WMMA kernels
 * there, at 64: 126, 176.5 and 218.5 KiB).  A variant that failed
 * the self-check (tc_off) is never taken.  tc_tile and tc_regs force the
 * tile and the registers (tests, A/B runs). */
struct tc_var { int tk, reg; };
enum { K_FWD, K_Q, K_KV };
const char *const tc_kname[3] = {"forward", "dq", "dk/dv"};
size_t (*const tc_smem_of[3])(int64_t, int64_t, int, int) = {tc_fwd_smem, tc_q_smem, tc_kv_smem};
int tc_bit(const tc_var &v) { return 1 << (2 * (v.tk == 32) + (v.reg != 0)); }
int tc_tile = -1; /* 0: picked, 32 or 64: forced; -1: DSV3_CUDA_ATTN_TILE not read yet */
int tc_regs = -2; /* -1: picked, 0 never, 1 wherever the dims allow; -2: DSV3_CUDA_ATTN_REGS not read yet */
int tc_off[3];    /* per kernel, the variants (tc_bit) that failed the self-check */
tc_var tc_pick(int kern, int64_t DQ, int64_t DV) {
    const cudaDeviceProp &p = g_cu.prop;
    if (tc_tile < 0) {
        const char *e = getenv("DSV3_CUDA_ATTN_TILE");
        tc_tile = e && (!strcmp(e, "32") || !strcmp(e, "64")) ? atoi(e) : 0;
    }
    if (tc_regs < -1) {
        const char *e = getenv("DSV3_CUDA_ATTN_REGS");
        tc_regs = e && (!strcmp(e, "0") || !strcmp(e, "1")) ? atoi(e) : -1;
    }
    const int can_reg = tc_regs != 0 && (kern == K_FWD ? DV <= 8 * OV
                                         : kern == K_Q ? DQ <= 8 * QV
                                                       : DQ <= 8 * KQ && DV <= 8 * KV);
    /* dk/dv's register kernel fills the register file at 64 (255 registers), so 32 first */
    const tc_var mma[4] = {{64, 1}, {32, 1}, {64, 0}, {32, 0}}, kv[4] = {{32, 1}, {64, 1}, {64, 0}, {32, 0}};
    const tc_var *order = kern == K_KV ? kv : mma;
    size_t (*smem)(int64_t, int64_t, int, int) = tc_smem_of[kern];
    auto allowed = [&](const tc_var &v) {
        return (!tc_tile || v.tk == tc_tile) && (v.reg ? can_reg : !(can_reg && tc_regs == 1)) &&
               !(tc_off[kern] & tc_bit(v));
    };
    for (int i = 0; i < 4; i++)
        if (allowed(order[i]) &&
            2 * (smem(DQ, DV, order[i].tk, order[i].reg) + p.reservedSharedMemPerBlock) <= p.sharedMemPerMultiprocessor)
            return order[i];
    for (int i = 0; i < 4; i++)
        if (allowed(order[i]) && smem(DQ, DV, order[i].tk, order[i].reg) <= p.sharedMemPerBlockOptin) return order[i];
    return tc_var{0, 0};
}

/* ---- the paths, under the entry lock ------------------------------------------------ */
void fwd_fp32(float *out, float *lse, const float *q, const float *k, const float *v, int64_t B, int64_t T, int64_t NH,
              int64_t DQ, int64_t DV, float scale) {
    if (DQ <= 128 && DV <= 128) attn_fwd<4>(out, lse, q, k, v, B, T, NH, DQ, DV, scale);
    else attn_fwd<2>(out, lse, q, k, v, B, T, NH, DQ, DV, scale);
}
/* Δ = rowsum(dout ∘ out) into scratch */
const float *attn_delta(const float *dout, const float *out, int64_t B, int64_t T, int64_t NH, int64_t DV) {
    int64_t rows = B * T * NH;
    float *delta = (float *)ds_cu_scratch(SCR_F32, (size_t)rows * sizeof(float));
    k_attn_delta<<<ds_cu_blocks(rows * 32, 256), 256, 0, g_cu.stream>>>(delta, dout, out, rows, T, NH, (int)DV);
    CU_LAUNCHED();
    return delta;
}
void bwd_fp32(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse, const float *q,
              const float *k, const float *v, int64_t B, int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale) {
    const float *delta = attn_delta(dout, out, B, T, NH, DV);
    if (DQ <= 128 && DV <= 128) attn_bwd<4>(dq, dk, dv, dout, lse, delta, q, k, v, B, T, NH, DQ, DV, scale);
    else attn_bwd<2>(dq, dk, dv, dout, lse, delta, q, k, v, B, T, NH, DQ, DV, scale);
}
template <int TK, bool REG>
void launch_fwd(float *out, float *lse, const float *q, const float *k, const float *v, int64_t B, int64_t T,
                int64_t NH, int64_t DQ, int64_t DV, float scale) {
    size_t sm = tc_fwd_smem(DQ, DV, TK, REG);
    auto kernel = REG ? k_attn_fwd_mma<TK> : k_attn_fwd_tc<TK>;
    set_smem(kernel, sm);
    dim3 grid((unsigned)((T + TB - 1) / TB), (unsigned)NH, (unsigned)B);
    kernel<<<grid, TW * 32, sm, g_cu.stream>>>(out, lse, q, k, v, T, NH, (int)DQ, (int)DV, scale);
    CU_LAUNCHED();
}
template <int TK, bool REG>
void launch_bwd_q(float *dq, const float *dout, const float *lse, const float *delta, const float *q, const float *k,
                  const float *v, int64_t B, int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale) {
    size_t sm = tc_q_smem(DQ, DV, TK, REG);
    auto kernel = REG ? k_attn_bwd_q_mma<TK> : k_attn_bwd_q_tc<TK>;
    set_smem(kernel, sm);
    dim3 grid((unsigned)((T + TB - 1) / TB), (unsigned)NH, (unsigned)B);
    kernel<<<grid, TW * 32, sm, g_cu.stream>>>(dq, dout, lse, delta, q, k, v, T, NH, (int)DQ, (int)DV, scale);
    CU_LAUNCHED();
}
template <int TK, bool REG>
void launch_bwd_kv(float *dk, float *dv, const float *dout, const float *lse, const float *delta, const float *q,
                   const float *k, const float *v, int64_t B, int64_t T, int64_t NH, int64_t DQ, int64_t DV,
                   float scale) {
    size_t sm = tc_kv_smem(DQ, DV, TK, REG);
    auto kernel = REG ? k_attn_bwd_kv_mma<TK> : k_attn_bwd_kv_tc<TK>;
    set_smem(kernel, sm);
    dim3 grid((unsigned)((T + TB - 1) / TB), (unsigned)NH, (unsigned)B);
    kernel<<<grid, TW * 32, sm, g_cu.stream>>>(dk, dv, dout, lse, delta, q, k, v, T, NH, (int)DQ, (int)DV, scale);
    CU_LAUNCHED();
}
/* force: the variant of every kernel (the self-check); NULL: tc_pick's */
void fwd_tc(float *out, float *lse, const float *q, const float *k, const float *v, int64_t B, int64_t T, int64_t NH,
            int64_t DQ, int64_t DV, float scale, const tc_var *force = NULL) {
    const tc_var f = force ? *force : tc_pick(K_FWD, DQ, DV);
    /* [tile 32][registers] */
    static decltype(&launch_fwd<64, false>) const lf[2][2] = {{launch_fwd<64, false>, launch_fwd<64, true>},
                                                             {launch_fwd<32, false>, launch_fwd<32, true>}};
    lf[f.tk == 32][f.reg != 0](out, lse, q, k, v, B, T, NH, DQ, DV, scale);
}
void bwd_tc(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse, const float *q,
            const float *k, const float *v, int64_t B, int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale,
            const tc_var *force = NULL) {
    const float *delta = attn_delta(dout, out, B, T, NH, DV);
    const tc_var fq = force ? *force : tc_pick(K_Q, DQ, DV);
    const tc_var fkv = force ? *force : tc_pick(K_KV, DQ, DV);
    /* [tile 32][registers] */
    static decltype(&launch_bwd_q<64, false>) const lq[2][2] = {{launch_bwd_q<64, false>, launch_bwd_q<64, true>},
                                                               {launch_bwd_q<32, false>, launch_bwd_q<32, true>}};
    static decltype(&launch_bwd_kv<64, false>) const lkv[2][2] = {{launch_bwd_kv<64, false>, launch_bwd_kv<64, true>},
                                                                 {launch_bwd_kv<32, false>, launch_bwd_kv<32, true>}};
    lq[fq.tk == 32][fq.reg != 0](dq, dout, lse, delta, q, k, v, B, T, NH, DQ, DV, scale);
    lkv[fkv.tk == 32][fkv.reg != 0](dk, dv, dout, lse, delta, q, k, v, B, T, NH, DQ, DV, scale);
}

/* ---- the tensor-core path's switch and self-check ------------------------------------ */
int tc_state; /* 0: not checked, 1: on (the default), -1: off (DSV3_CUDA_ATTN=fp32 or 0, its self-check failed, turned off) */

/* Σ (a-b)² / Σ b² over n values */
double nmse(const std::vector<float> &a, const std::vector<float> &b) {
    double e = 0, s = 0;
    for (size_t i = 0; i < a.size(); i++) {
        double d = (double)a[i] - b[i];
        e += a[i] == a[i] ? d * d : INFINITY;
        s += (double)b[i] * b[i];
    }
    return s > 0 ? e / s : e;
}
/* The tensor-core kernels against the FP32 ones on inputs that are BF16
 * values already (so both see the same operands): one sequence of 80 tokens
 * (a full tile and a ragged one), 2 heads, `tiny`'s head dims (48, 32), every
 * kernel in every variant (tiles of 32 and 64, accumulators in shared memory
 * and in registers).  The backward runs from the FP32 forward's out and lse,
 * so each kernel is judged on its own outputs: the forward on out and lse,
 * dq's on dq, dk/dv's on dk and dv.  P's and dS's BF16 rounding leave NMSE
 * ~1e-6; a wrong fragment layout, tile or rescale O(1).  Bound 1e-4.  off[]:
 * the variants (tc_bit) that failed, per kernel; err the worst NMSE of out,
 * lse, dq, dk, dv. */
void tc_self_check(double err[5], int off[3]) {
    const int64_t B = 1, T = 80, NH = 2, DQ = 48, DV = 32, nq = B * T * NH * DQ, nv = B * T * NH * DV, nl = B * NH * T;
    const float scale = 1.0f / sqrtf((float)DQ);
    std::vector<float> h[4] = {std::vector<float>(nq), std::vector<float>(nq), std::vector<float>(nv),
                               std::vector<float>(nv)}; /* q, k, v, dout */
    ds_rng rng;
    ds_rng_seed(&rng, 2463534242u);
    for (int t = 0; t < 4; t++)
        for (float &f : h[t]) {
            float u = (float)(2.0 * ds_rng_uniform(&rng) - 1.0); /* [-1, 1) */
            f = ds_bf16_to_f32(ds_f32_to_bf16(t < 2 ? 3.0f * u : t == 2 ? u : 0.01f * u));
        }
    /* device: q k v dout | out lse dq dk dv (tensor cores) | the same (FP32) */
    const int64_t n_in = 2 * nq + 2 * nv, n_out = nv + nl + nq + nq + nv;
    float *d;
    CU_CHECK(cudaMalloc((void **)&d, (size_t)(n_in + 2 * n_out) * sizeof(float)));
    float *q = d, *k = q + nq, *v = k + nq, *dout = v + nv;
    for (int t = 0; t < 4; t++)
        CU_CHECK(cudaMemcpyAsync(t == 0 ? q : t == 1 ? k : t == 2 ? v : dout, h[t].data(), h[t].size() * sizeof(float),
                                 cudaMemcpyHostToDevice, g_cu.stream));
    float *o[2][5];
    for (int p = 0; p < 2; p++) {
        float *b = d + n_in + p * n_out;
        o[p][0] = b, o[p][1] = b + nv, o[p][2] = o[p][1] + nl, o[p][3] = o[p][2] + nq, o[p][4] = o[p][3] + nq;
    }
    fwd_fp32(o[1][0], o[1][1], q, k, v, B, T, NH, DQ, DV, scale);
    bwd_fp32(o[1][2], o[1][3], o[1][4], dout, o[1][0], o[1][1], q, k, v, B, T, NH, DQ, DV, scale);
    const int64_t len[5] = {nv, nl, nq, nq, nv};
    const int kern[5] = {K_FWD, K_FWD, K_Q, K_KV, K_KV};
    for (int i = 0; i < 5; i++) err[i] = 0;
    off[K_FWD] = off[K_Q] = off[K_KV] = 0;
    const tc_var vars[4] = {{32, 0}, {64, 0}, {32, 1}, {64, 1}};
    for (const tc_var &f : vars) {
        fwd_tc(o[0][0], o[0][1], q, k, v, B, T, NH, DQ, DV, scale, &f);
        bwd_tc(o[0][2], o[0][3], o[0][4], dout, o[1][0], o[1][1], q, k, v, B, T, NH, DQ, DV, scale, &f);
        for (int i = 0; i < 5; i++) {
            std::vector<float> a((size_t)len[i]), b((size_t)len[i]);
            CU_CHECK(cudaMemcpyAsync(a.data(), o[0][i], a.size() * sizeof(float), cudaMemcpyDeviceToHost, g_cu.stream));
            CU_CHECK(cudaMemcpyAsync(b.data(), o[1][i], b.size() * sizeof(float), cudaMemcpyDeviceToHost, g_cu.stream));
            CU_CHECK(cudaStreamSynchronize(g_cu.stream));
            double e = nmse(a, b);
            if (!(e <= err[i])) err[i] = e;
            if (!(e <= 1e-4)) off[kern[i]] |= tc_bit(f);
        }
    }
    CU_CHECK(cudaFree(d));
}

/* on (checked at first use) or off.  A variant that fails the self-check is
 * left out (tc_off) while each kernel keeps one that passed; where a kernel
 * has none, the path is off.  Either way a line on stderr names them. */
int tc_ready(void) {
    if (!tc_state) {
        const char *e = getenv("DSV3_CUDA_ATTN");
        tc_off[K_FWD] = tc_off[K_Q] = tc_off[K_KV] = 0;
        if (e && (!strcmp(e, "fp32") || !strcmp(e, "0"))) {
            tc_state = -1;
            return 0;
        }
        double err[5];
        tc_self_check(err, tc_off);
        char which[512] = "";
        size_t len = 0;
        int dead = 0;
        for (int kn = 0; kn < 3; kn++) {
            dead |= tc_off[kn] == 15;
            for (int vi = 0; vi < 4; vi++)
                if (tc_off[kn] >> vi & 1 && len < sizeof which)
                    len += (size_t)snprintf(which + len, sizeof which - len, "%s%s tile %d %s", len ? ", " : "",
                                            tc_kname[kn], vi & 2 ? 32 : 64, vi & 1 ? "registers" : "shared");
        }
        tc_state = dead ? -1 : 1;
        if (len)
            fprintf(stderr,
                    "dsv3: cuda: the tensor-core attention failed its self-check against the FP32 kernels in %s "
                    "(worst NMSE out %.3g, lse %.3g, dq %.3g, dk %.3g, dv %.3g; bound 1e-4); %s\n",
                    which, err[0], err[1], err[2], err[3], err[4],
                    dead ? "the BF16 and FP8 tables run attention on the FP32 kernels"
                         : "those variants are left out, the others run");
    }
    return tc_state > 0;
}
/* the tensor-core kernels take these dims (multiples of 16, tiles within the
 * device's shared memory) and are on */
int tc_fits(int64_t DQ, int64_t DV) {
    if (DQ % 16 || DV % 16 || DQ > 256 || DV > 256 || !tc_ready()) return 0;
    return tc_pick(K_FWD, DQ, DV).tk && tc_pick(K_KV, DQ, DV).tk && tc_pick(K_Q, DQ, DV).tk;
}

/* uniform values in [-1, 1) from a hash of the index */
__global__ void k_bench_fill(float *x, int64_t n, uint32_t seed) {
    GRID_STRIDE(i, n) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
        x[i] = (float)(h >> 8) * (2.0f / 16777216.0f) - 1.0f;
    }
}

} // namespace

/* Attention forward and backward (the entries' paths, causal) on random
 * inputs: how "fp32" (the FP32 kernels), "tc" (the tensor-core kernels in the
 * variants tc_pick takes), "tc-tile64" (a tile of 64 everywhere), "tc-smem"
 * (every accumulator in shared memory: the WMMA kernels).  TFLOPS of the
 * products over the B·NH·T(T+1)/2 causal pairs: forward 2·(DQ + DV) a pair (S, O),
 * backward 2·(3·DQ + 2·DV) (S, dP, dV, dQ, dK; the recomputations left
 * out); the backward's time includes its Δ. */
extern "C" int ds_cuda_attention_bench(const char *how, int64_t B, int64_t T, int64_t NH, int64_t DQ, int64_t DV,
                                       int iters, double *fwd_tflops, double *bwd_tflops) {
    if (!g_cu.ok) return ds_err("attention bench: no CUDA device");
    const int fp32 = !strcmp(how, "fp32"), t64 = !strcmp(how, "tc-tile64"), smem = !strcmp(how, "tc-smem");
    if (!fp32 && !t64 && !smem && strcmp(how, "tc"))
        return ds_err("attention bench: unknown path %s (fp32, tc, tc-tile64, tc-smem)", ds_quote(how));
    if (B < 1 || T < 1 || NH < 1 || DQ < 1 || DV < 1 || DQ > 256 || DV > 256 || B > 65535 || NH > 65535)
        return ds_err("attention bench: bad shape");
    CU_ENTRY();
    const int tile = tc_tile, regs = tc_regs;
    if (t64) tc_tile = 64;
    if (smem) tc_regs = 0;
    if (!fp32 && !tc_fits(DQ, DV)) {
        tc_tile = tile, tc_regs = regs;
        return ds_err("attention bench: the tensor-core kernels are off or do not take head dims (%lld, %lld)",
                      (long long)DQ, (long long)DV);
    }
    const int64_t nq = B * T * NH * DQ, nv = B * T * NH * DV, nl = B * NH * T;
    float *d;
    CU_CHECK(cudaMalloc((void **)&d, (size_t)(4 * nq + 4 * nv + nl) * sizeof(float)));
    float *q = d, *k = q + nq, *v = k + nq, *dout = v + nv, *out = dout + nv, *lse = out + nv, *dq = lse + nl,
          *dk = dq + nq, *dv = dk + nq;
    k_bench_fill<<<256, 256, 0, g_cu.stream>>>(d, 2 * nq + 2 * nv, 7u); /* q, k, v, dout */
    CU_LAUNCHED();
    const float scale = 1.0f / sqrtf((float)DQ);
    const double fms = ds_cu_bench_ms([&]() {
        if (fp32) fwd_fp32(out, lse, q, k, v, B, T, NH, DQ, DV, scale);
        else fwd_tc(out, lse, q, k, v, B, T, NH, DQ, DV, scale);
    }, iters);
    const double bms = ds_cu_bench_ms([&]() {
        if (fp32) bwd_fp32(dq, dk, dv, dout, out, lse, q, k, v, B, T, NH, DQ, DV, scale);
        else bwd_tc(dq, dk, dv, dout, out, lse, q, k, v, B, T, NH, DQ, DV, scale);
    }, iters);
    tc_tile = tile, tc_regs = regs;
    CU_CHECK(cudaFree(d));
    const double pairs = (double)B * NH * T * (T + 1) / 2;
    *fwd_tflops = 2.0 * pairs * (double)(DQ + DV) / (fms / 1e3) / 1e12;
    *bwd_tflops = 2.0 * pairs * (double)(3 * DQ + 2 * DV) / (bms / 1e3) / 1e12;
    return 0;
}

extern "C" int ds_cuda_attention_tc_set(int on) { return ds_cu_checked_set(&tc_state, tc_ready, on); }
extern "C" int ds_cuda_attention_tc_tile(int tk) {
    std::lock_guard<std::mutex> g(g_cu_lock);
    int was = tc_tile < 0 ? 0 : tc_tile;
    tc_tile = tk == 32 || tk == 64 ? tk : 0;
    return was;
}
extern "C" int ds_cuda_attention_tc_off(int kern) {
    std::lock_guard<std::mutex> g(g_cu_lock);
    return kern >= 0 && kern < 3 && tc_state > 0 ? tc_off[kern] : 0;
}
extern "C" int ds_cuda_attention_tc_regs(int on) {
    std::lock_guard<std::mutex> g(g_cu_lock);
    int was = tc_regs < -1 ? -1 : tc_regs;
    tc_regs = on == 0 || on == 1 ? on : -1;
    return was;
}

extern "C" void ds_cu_attention_forward_bf16(float *out, float *lse, const float *q, const float *k, const float *v,
                                             int64_t B, int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale) {
    CU_ENTRY();
    if (B * T * NH <= 0) return;
    check_dims(DQ, DV, B, NH);
    if (tc_fits(DQ, DV)) fwd_tc(out, lse, q, k, v, B, T, NH, DQ, DV, scale);
    else fwd_fp32(out, lse, q, k, v, B, T, NH, DQ, DV, scale);
}

extern "C" void ds_cu_attention_backward_bf16(float *dq, float *dk, float *dv, const float *dout, const float *out,
                                              const float *lse, const float *q, const float *k, const float *v,
                                              int64_t B, int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale) {
    CU_ENTRY();
    if (B * T * NH <= 0) return;
    check_dims(DQ, DV, B, NH);
    if (tc_fits(DQ, DV)) bwd_tc(dq, dk, dv, dout, out, lse, q, k, v, B, T, NH, DQ, DV, scale);
    else bwd_fp32(dq, dk, dv, dout, out, lse, q, k, v, B, T, NH, DQ, DV, scale);
}

extern "C" void ds_cu_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                                        int64_t B, int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale) {
    CU_ENTRY();
    if (B * T * NH <= 0) return;
    check_dims(DQ, DV, B, NH);
    fwd_fp32(out, lse, q, k, v, B, T, NH, DQ, DV, scale);
}

extern "C" void ds_cu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                                         const float *lse, const float *q, const float *k, const float *v, int64_t B,
                                         int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale) {
    CU_ENTRY();
    if (B * T * NH <= 0) return;
    check_dims(DQ, DV, B, NH);
    bwd_fp32(dq, dk, dv, dout, out, lse, q, k, v, B, T, NH, DQ, DV, scale);
}
