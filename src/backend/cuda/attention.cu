/*
 * attention.cu — causal softmax attention on the GPU, flash style: no (T, T)
 * matrix; keys and values stream through shared memory in tiles of 32 while
 * each query keeps a running max m and sum l (online softmax), and the
 * forward saves lse = m + log l per query for the backward, which recomputes
 * the probabilities from it (backend/cpu/attention_backward.c's equations):
 *   P_ij = exp(scale·q_i·k_j − lse_i), Δ_i = dout_i·out_i,
 *   dS_ij = P_ij (dout_i·v_j − Δ_i),
 *   dq_i = scale Σ_j dS_ij k_j,  dk_j = scale Σ_i dS_ij q_i,  dv_j = Σ_i P_ij dout_i.
 * A warp owns one query (forward, dq) or one key (dk, dv); its 32 lanes take
 * the 32 keys (queries) of a tile for the dot products, then the head
 * dimensions for the accumulations, so nothing is written twice and the
 * backward needs no atomics (deterministic).  Head dims up to 256 (DeepSeek-V3:
 * q/k 192, v 128).  FP32 throughout (CUDA cores, not tensor cores).
 */
#include "backend/cuda/common.cuh"

namespace {

constexpr int WARPS = 8, KT = 32, MAXR = 8; /* queries (keys) per block, tile, registers per lane (256/32) */

/* grid (ceil(T/WARPS), NH, B).  smem: qs[WARPS][DQ], ks[KT][DQ+1], vs[KT][DV] */
__global__ void k_attn_fwd(float *out, float *lse, const float *q, const float *k, const float *v, int64_t T,
                           int64_t NH, int DQ, int DV, float scale) {
    extern __shared__ float sm[];
    float *qs = sm, *ks = qs + WARPS * DQ, *vs = ks + KT * (DQ + 1);
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int64_t b = blockIdx.z, h = blockIdx.y, i0 = (int64_t)blockIdx.x * WARPS, i = i0 + w;
    int64_t imax = i0 + WARPS - 1 < T - 1 ? i0 + WARPS - 1 : T - 1;
    bool active = i < T;
    if (active)
        for (int d = lane; d < DQ; d += 32) qs[w * DQ + d] = q[((b * T + i) * NH + h) * DQ + d];
    float m = -INFINITY, l = 0.0f, acc[MAXR];
    for (int r = 0; r < MAXR; r++) acc[r] = 0.0f;
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
        if (!active || j0 > i) continue;
        int64_t j = j0 + lane;
        float s = -INFINITY;
        if (j <= i) {
            float dot = 0.0f;
            for (int d = 0; d < DQ; d++) dot += qs[w * DQ + d] * ks[lane * (DQ + 1) + d];
            s = dot * scale;
        }
        float mn = fmaxf(m, warp_max(s));   /* finite: key j0 <= i is in the tile */
        float corr = expf(m - mn), p = j <= i ? expf(s - mn) : 0.0f;
        l = l * corr + warp_sum(p);
        for (int r = 0; r < MAXR; r++) acc[r] *= corr;
        int nj = i - j0 + 1 < KT ? (int)(i - j0 + 1) : KT;
        for (int jj = 0; jj < nj; jj++) {
            float pj = __shfl_sync(0xffffffffu, p, jj);
            for (int r = 0; r < MAXR; r++) {
                int c = lane + 32 * r;
                if (c < DV) acc[r] += pj * vs[jj * DV + c];
            }
        }
        m = mn;
    }
    if (!active) return;
    for (int r = 0; r < MAXR; r++) {
        int c = lane + 32 * r;
        if (c < DV) out[((b * T + i) * NH + h) * DV + c] = acc[r] / l;
    }
    if (lse && lane == 0) lse[(b * NH + h) * T + i] = m + logf(l);
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

/* dq: warp per query.  smem: qs[WARPS][DQ], dos[WARPS][DV], ks[KT][DQ+1], vs[KT][DV+1] */
__global__ void k_attn_bwd_dq(float *dq, const float *dout, const float *lse, const float *delta, const float *q,
                              const float *k, const float *v, int64_t T, int64_t NH, int DQ, int DV, float scale) {
    extern __shared__ float sm[];
    float *qs = sm, *dos = qs + WARPS * DQ, *ks = dos + WARPS * DV, *vs = ks + KT * (DQ + 1);
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int64_t b = blockIdx.z, h = blockIdx.y, i0 = (int64_t)blockIdx.x * WARPS, i = i0 + w;
    int64_t imax = i0 + WARPS - 1 < T - 1 ? i0 + WARPS - 1 : T - 1;
    bool active = i < T;
    float L = 0.0f, D = 0.0f;
    if (active) {
        for (int d = lane; d < DQ; d += 32) qs[w * DQ + d] = q[((b * T + i) * NH + h) * DQ + d];
        for (int c = lane; c < DV; c += 32) dos[w * DV + c] = dout[((b * T + i) * NH + h) * DV + c];
        L = lse[(b * NH + h) * T + i];
        D = delta[(b * NH + h) * T + i];
    }
    float acc[MAXR];
    for (int r = 0; r < MAXR; r++) acc[r] = 0.0f;
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
        if (!active || j0 > i) continue;
        int64_t j = j0 + lane;
        float dS = 0.0f;
        if (j <= i) {
            float s = 0.0f, dp = 0.0f;
            for (int d = 0; d < DQ; d++) s += qs[w * DQ + d] * ks[lane * (DQ + 1) + d];
            for (int c = 0; c < DV; c++) dp += dos[w * DV + c] * vs[lane * (DV + 1) + c];
            dS = expf(s * scale - L) * (dp - D);
        }
        int nj = i - j0 + 1 < KT ? (int)(i - j0 + 1) : KT;
        for (int jj = 0; jj < nj; jj++) {
            float g = __shfl_sync(0xffffffffu, dS, jj);
            for (int r = 0; r < MAXR; r++) {
                int d = lane + 32 * r;
                if (d < DQ) acc[r] += g * ks[jj * (DQ + 1) + d];
            }
        }
    }
    if (!active) return;
    for (int r = 0; r < MAXR; r++) {
        int d = lane + 32 * r;
        if (d < DQ) dq[((b * T + i) * NH + h) * DQ + d] = scale * acc[r];
    }
}

/* dk, dv: warp per key.  smem: kr[WARPS][DQ], vr[WARPS][DV], qs[KT][DQ+1],
 * dos[KT][DV+1], ls[KT], ds[KT] */
__global__ void k_attn_bwd_dkv(float *dk, float *dv, const float *dout, const float *lse, const float *delta,
                               const float *q, const float *k, const float *v, int64_t T, int64_t NH, int DQ, int DV,
                               float scale) {
    extern __shared__ float sm[];
    float *kr = sm, *vr = kr + WARPS * DQ, *qs = vr + WARPS * DV, *dos = qs + KT * (DQ + 1);
    float *ls = dos + KT * (DV + 1), *dl = ls + KT;
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int64_t b = blockIdx.z, h = blockIdx.y, j0b = (int64_t)blockIdx.x * WARPS, j = j0b + w;
    bool active = j < T;
    if (active) {
        for (int d = lane; d < DQ; d += 32) kr[w * DQ + d] = k[((b * T + j) * NH + h) * DQ + d];
        for (int c = lane; c < DV; c += 32) vr[w * DV + c] = v[((b * T + j) * NH + h) * DV + c];
    }
    float ak[MAXR], av[MAXR];
    for (int r = 0; r < MAXR; r++) ak[r] = av[r] = 0.0f;
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
        if (!active) continue;
        int64_t i = it + lane;
        float P = 0.0f, dS = 0.0f;
        if (i < T && i >= j) {
            float s = 0.0f, dp = 0.0f;
            for (int d = 0; d < DQ; d++) s += qs[lane * (DQ + 1) + d] * kr[w * DQ + d];
            for (int c = 0; c < DV; c++) dp += dos[lane * (DV + 1) + c] * vr[w * DV + c];
            P = expf(s * scale - ls[lane]);
            dS = P * (dp - dl[lane]);
        }
        for (int ii = 0; ii < KT; ii++) {
            float p = __shfl_sync(0xffffffffu, P, ii), g = __shfl_sync(0xffffffffu, dS, ii);
            if (p == 0.0f && g == 0.0f) continue;   /* masked (warp-uniform) */
            for (int r = 0; r < MAXR; r++) {
                int c = lane + 32 * r;
                if (c < DV) av[r] += p * dos[ii * (DV + 1) + c];
                if (c < DQ) ak[r] += g * qs[ii * (DQ + 1) + c];
            }
        }
    }
    if (!active) return;
    for (int r = 0; r < MAXR; r++) {
        int c = lane + 32 * r;
        if (c < DV) dv[((b * T + j) * NH + h) * DV + c] = av[r];
        if (c < DQ) dk[((b * T + j) * NH + h) * DQ + c] = scale * ak[r];
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

} // namespace

extern "C" void ds_cu_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                                        int64_t B, int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale) {
    CU_ENTRY();
    if (B * T * NH <= 0) return;
    check_dims(DQ, DV, B, NH);
    size_t sm = (size_t)(WARPS * DQ + KT * (DQ + 1) + KT * DV) * sizeof(float);
    set_smem(k_attn_fwd, sm);
    dim3 grid((unsigned)((T + WARPS - 1) / WARPS), (unsigned)NH, (unsigned)B);
    k_attn_fwd<<<grid, WARPS * 32, sm, g_cu.stream>>>(out, lse, q, k, v, T, NH, (int)DQ, (int)DV, scale);
    CU_LAUNCHED();
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
    dim3 grid((unsigned)((T + WARPS - 1) / WARPS), (unsigned)NH, (unsigned)B);
    size_t sm_q = (size_t)(WARPS * DQ + WARPS * DV + KT * (DQ + 1) + KT * (DV + 1)) * sizeof(float);
    set_smem(k_attn_bwd_dq, sm_q);
    k_attn_bwd_dq<<<grid, WARPS * 32, sm_q, g_cu.stream>>>(dq, dout, lse, delta, q, k, v, T, NH, (int)DQ, (int)DV,
                                                            scale);
    CU_LAUNCHED();
    size_t sm_kv = (size_t)(WARPS * DQ + WARPS * DV + KT * (DQ + 1) + KT * (DV + 1) + 2 * KT) * sizeof(float);
    set_smem(k_attn_bwd_dkv, sm_kv);
    k_attn_bwd_dkv<<<grid, WARPS * 32, sm_kv, g_cu.stream>>>(dk, dv, dout, lse, delta, q, k, v, T, NH, (int)DQ,
                                                              (int)DV, scale);
    CU_LAUNCHED();
}
