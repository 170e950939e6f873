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

namespace {

/* WARPS warps a block; a warp owns P queries (forward, dq) or P keys (dk,
 * dv), P = 4 where the head dims are at most 128 and 2 above (shared memory),
 * so a block shares each tile of KT keys (queries) among WARPS·P rows and a
 * value read from shared memory feeds P FMAs.  Each row's arithmetic is the
 * one-row-per-warp kernel's, in the same order: a tile's terms beyond a
 * row's causal end are exact zeros (p = 0), as they were within its last tile. */
constexpr int WARPS = 8, KT = 32, MAXR = 8; /* warps per block, tile, registers per lane (256/32) */

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
    for (int e = threadIdx.x; e < QB * DQ; e += blockDim.x) {
        int64_t i = i0 + e / DQ;
        qs[e] = i < T ? q[((b * T + i) * NH + h) * DQ + e % DQ] : 0.0f;
    }
    float m[P], l[P], pq[P], acc[P][MAXR];
    for (int a = 0; a < P; a++) {
        m[a] = -INFINITY, l[a] = 0.0f;
        for (int r = 0; r < MAXR; r++) acc[a][r] = 0.0f;
    }
    for (int64_t j0 = 0; j0 <= imax; j0 += KT) {
        __syncthreads();
        for (int e = threadIdx.x; e < KT * DQ; e += blockDim.x) {
            int jj = e / DQ, d = e % DQ;
            int64_t j = j0 + jj;
            ks[jj * (DQ + 1) + d] = j < T ? k[((b * T + j) * NH + h) * DQ + d] : 0.0f;
        }
        for (int e = threadIdx.x; e < KT * DV; e += blockDim.x) {
            int jj = e / DV, c = e % DV;
            int64_t j = j0 + jj;
            vs[jj * DV + c] = j < T ? v[((b * T + j) * NH + h) * DV + c] : 0.0f;
        }
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
    for (int e = threadIdx.x; e < QB * DQ; e += blockDim.x) {
        int64_t i = i0 + e / DQ;
        qs[e] = i < T ? q[((b * T + i) * NH + h) * DQ + e % DQ] : 0.0f;
    }
    for (int e = threadIdx.x; e < QB * DV; e += blockDim.x) {
        int64_t i = i0 + e / DV;
        dos[e] = i < T ? dout[((b * T + i) * NH + h) * DV + e % DV] : 0.0f;
    }
    float L[P], D[P], acc[P][MAXR];
    for (int a = 0; a < P; a++) {
        int64_t i = iw + a;
        L[a] = i < T ? lse[(b * NH + h) * T + i] : 0.0f;
        D[a] = i < T ? delta[(b * NH + h) * T + i] : 0.0f;
        for (int r = 0; r < MAXR; r++) acc[a][r] = 0.0f;
    }
    for (int64_t j0 = 0; j0 <= imax; j0 += KT) {
        __syncthreads();
        for (int e = threadIdx.x; e < KT * DQ; e += blockDim.x) {
            int jj = e / DQ, d = e % DQ;
            int64_t j = j0 + jj;
            ks[jj * (DQ + 1) + d] = j < T ? k[((b * T + j) * NH + h) * DQ + d] : 0.0f;
        }
        for (int e = threadIdx.x; e < KT * DV; e += blockDim.x) {
            int jj = e / DV, c = e % DV;
            int64_t j = j0 + jj;
            vs[jj * (DV + 1) + c] = j < T ? v[((b * T + j) * NH + h) * DV + c] : 0.0f;
        }
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
    for (int e = threadIdx.x; e < KB * DQ; e += blockDim.x) {
        int64_t j = j0b + e / DQ;
        kr[e] = j < T ? k[((b * T + j) * NH + h) * DQ + e % DQ] : 0.0f;
    }
    for (int e = threadIdx.x; e < KB * DV; e += blockDim.x) {
        int64_t j = j0b + e / DV;
        vr[e] = j < T ? v[((b * T + j) * NH + h) * DV + e % DV] : 0.0f;
    }
    float ak[P][MAXR], av[P][MAXR];
    for (int a = 0; a < P; a++)
        for (int r = 0; r < MAXR; r++) ak[a][r] = av[a][r] = 0.0f;
    for (int64_t it = j0b; it < T; it += KT) {
        __syncthreads();
        for (int e = threadIdx.x; e < KT * DQ; e += blockDim.x) {
            int ii = e / DQ, d = e % DQ;
            int64_t i = it + ii;
            qs[ii * (DQ + 1) + d] = i < T ? q[((b * T + i) * NH + h) * DQ + d] : 0.0f;
        }
        for (int e = threadIdx.x; e < KT * DV; e += blockDim.x) {
            int ii = e / DV, c = e % DV;
            int64_t i = it + ii;
            dos[ii * (DV + 1) + c] = i < T ? dout[((b * T + i) * NH + h) * DV + c] : 0.0f;
        }
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

} // namespace

extern "C" void ds_cu_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                                        int64_t B, int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale) {
    CU_ENTRY();
    if (B * T * NH <= 0) return;
    check_dims(DQ, DV, B, NH);
    if (DQ <= 128 && DV <= 128) attn_fwd<4>(out, lse, q, k, v, B, T, NH, DQ, DV, scale);
    else attn_fwd<2>(out, lse, q, k, v, B, T, NH, DQ, DV, scale);
}

extern "C" void ds_cu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                                         const float *lse, const float *q, const float *k, const float *v, int64_t B,
                                         int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale) {
    CU_ENTRY();
    if (B * T * NH <= 0) return;
    check_dims(DQ, DV, B, NH);
    int64_t rows = B * T * NH;
    float *delta = (float *)ds_cu_scratch(SCR_F32, (size_t)rows * sizeof(float));
    k_attn_delta<<<ds_cu_blocks(rows * 32, 256), 256, 0, g_cu.stream>>>(delta, dout, out, rows, T, NH, (int)DV);
    CU_LAUNCHED();
    if (DQ <= 128 && DV <= 128) attn_bwd<4>(dq, dk, dv, dout, lse, delta, q, k, v, B, T, NH, DQ, DV, scale);
    else attn_bwd<2>(dq, dk, dv, dout, lse, delta, q, k, v, B, T, NH, DQ, DV, scale);
}
