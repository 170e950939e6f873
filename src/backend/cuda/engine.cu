/*
 * engine.cu — the CUDA entries of the engine's later table rows
 * (docs/engine.md §2.2): memory, the optimizer (sumsq, AdamW, bias update),
 * the grouped GEMMs, the backward row moves, FP8 1x128
 * activation tiles, BF16 casts, the decode entries (latent cache append,
 * absorbed MLA attention, row gather, argmax).  Each mirrors its CPU entry (the .c files of backend/cpu/):
 *   same bits: copies and gathers, casts, FP8 codes and scales, argmax,
 *     bias_update, sumsq (the CPU's 8192-element blocks, each summed in the
 *     CPU's 32 double lanes and fixed tree, the blocks summed in order on the host);
 *   FP32 arithmetic in another order: AdamW (FMA contraction may differ),
 *     absorbed attention (block reductions), the k_pe head sum;
 * moe_sort, balance_loss, sample_probs and sample_pick are select.cu's.
 * The grouped linears run the experts in order through self->linear_* (one
 * cuBLASLt GEMM per expert over its sorted rows).
 */
#include "backend/cuda/common.cuh"

#include <cuda_fp8.h>
#include <math.h>
#include <string.h>

extern "C" {
#include "backend/cpu/optim_step.h"
#include "backend/cpu/balance_loss.h"
#include "backend/cpu/decode.h"
#include "backend/cpu/kernels.h"
#include "backend/cpu/optim.h"
}

/* ---- memory ---------------------------------------------------------------------- */
extern "C" void *ds_cu_alloc(size_t bytes) {
    void *p = ds_cuda_alloc(bytes);
    if (p) ds_cuda_memset(p, 0, bytes ? bytes : 1); /* the contract: zero-filled */
    return p;
}
extern "C" size_t ds_cu_linear_workspace(int64_t N, int64_t C, int64_t OC) {
    (void)N, (void)C, (void)OC;
    return 0; /* the quantized copies live in device scratch, not per host thread */
}

/* host staging of the host-side entries */
static void *hbuf(size_t bytes) { return ds_malloc(bytes ? bytes : 1); }
static void *tmp_up(int slot, const void *h, size_t bytes) {
    void *d = ds_cu_scratch(slot, bytes ? bytes : 4);
    if (bytes) CU_CHECK(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, g_cu.stream));
    return d;
}

/* ---- sumsq ----------------------------------------------------------------------------- */
namespace {
/* one warp per DS_OPTIM_BLOCK block: lane j sums x[j], x[j+32], ... in double
 * (the CPU's lane a[j]), then the tree a[j] += a[j+w], w = 16..1 */
__global__ void k_sumsq_blocks(double *part, const float *x, int64_t n, int64_t nb) {
    int lane = threadIdx.x & 31;
    int64_t nw = (int64_t)gridDim.x * (blockDim.x >> 5);
    for (int64_t b = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; b < nb; b += nw) {
        int64_t o = b * DS_OPTIM_BLOCK, len = n - o < DS_OPTIM_BLOCK ? n - o : DS_OPTIM_BLOCK;
        double a = 0;
        for (int64_t i = lane; i < len; i += 32) {
            double v = (double)x[o + i];
            a += v * v; /* exact square: an FMA gives the same bits */
        }
        /* butterfly: lane 0's partner at step w holds the CPU's a[w] of that step */
        for (int w = 16; w > 0; w >>= 1) a += __shfl_xor_sync(0xffffffffu, a, w);
        if (lane == 0) part[b] = a;
    }
}
} // namespace

extern "C" double ds_cu_sumsq(const float *x, int64_t n) {
    if (n <= 0) return 0;
    int64_t nb = (n + DS_OPTIM_BLOCK - 1) / DS_OPTIM_BLOCK;
    double *h = (double *)hbuf((size_t)nb * sizeof(double));
    {
        CU_ENTRY();
        double *part = (double *)ds_cu_scratch(SCR_F32, (size_t)nb * sizeof(double));
        k_sumsq_blocks<<<ds_cu_blocks(nb * 32, 256), 256, 0, g_cu.stream>>>(part, x, n, nb);
        CU_LAUNCHED();
        CU_CHECK(cudaMemcpyAsync(h, part, (size_t)nb * sizeof(double), cudaMemcpyDeviceToHost, g_cu.stream));
        CU_CHECK(cudaStreamSynchronize(g_cu.stream));
    }
    double s = 0;
    for (int64_t b = 0; b < nb; b++) s += h[b];
    free(h);
    return s;
}

/* ---- AdamW ------------------------------------------------------------------------------- */
namespace {
__global__ void k_adamw(float *p, const float *g, void *m, void *v, int bf16, int64_t off, int64_t n, ds_adamw_k k) {
    GRID_STRIDE(j, n) {
        int64_t i = off + j;
        float mi = bf16 ? ds_cu_bf16_to_f32(((uint16_t *)m)[i]) : ((float *)m)[i];
        float vi = bf16 ? ds_cu_bf16_to_f32(((uint16_t *)v)[i]) : ((float *)v)[i];
        const ds_adamw_pmv r = ds_adamw_step(p[i], g[i], mi, vi, k);
        p[i] = r.p;
        if (bf16) {
            ((uint16_t *)m)[i] = ds_cu_f32_to_bf16(r.m);
            ((uint16_t *)v)[i] = ds_cu_f32_to_bf16(r.v);
        } else {
            ((float *)m)[i] = r.m;
            ((float *)v)[i] = r.v;
        }
    }
}
} // namespace

extern "C" void ds_cu_adamw(float *p, const float *g, void *m, void *v, int bf16_moments, const ds_optim_seg *seg,
                            int64_t nseg, int64_t t, const ds_adamw_hparams *h, float gscale) {
    CU_ENTRY();
    for (int64_t s = 0; s < nseg; s++) {
        if (seg[s].n <= 0) continue;
        k_adamw<<<ds_cu_blocks(seg[s].n, 256), 256, 0, g_cu.stream>>>(p, g, m, v, bf16_moments, seg[s].off, seg[s].n,
                                                                      ds_adamw_consts(h, t, gscale, seg[s].decay));
        CU_LAUNCHED();
    }
}

/* ---- bias update ------------------------------------------------------------------------- */
namespace {
__global__ void k_bias_update(float *bias, const int64_t *load, int64_t E, float gamma) {
    if (!blockIdx.x && !threadIdx.x) ds_bias_step(bias, load, E, gamma);
}
} // namespace

extern "C" void ds_cu_bias_update(float *bias, const int64_t *load, int64_t E, float gamma) {
    CU_ENTRY();
    if (E <= 0) return;
    const int64_t *dl = (const int64_t *)tmp_up(SCR_A, load, (size_t)E * sizeof(int64_t));
    k_bias_update<<<1, 32, 0, g_cu.stream>>>(bias, dl, E, gamma);
    CU_LAUNCHED();
}

/* ---- row moves ------------------------------------------------------------------------------ */
namespace {
__global__ void k_embedding_bf16(float *out, const int32_t *ids, const uint16_t *wte, int64_t N, int64_t C) {
    ROWS(n, N) {
        const uint16_t *src = wte + (int64_t)ids[n] * C;
        COLS(c, C) out[n * C + c] = ds_cu_bf16_to_f32(src[c]);
    }
}
__global__ void k_mla_kv_bwd_dkv(float *dkv, const float *dk, const float *dv, int64_t NH, int64_t dn, int64_t dv_,
                                 int64_t dr) {
    const int64_t w = dn + dv_;
    ROWS(nh, NH) COLS(i, w) dkv[nh * w + i] = i < dn ? dk[nh * (dn + dr) + i] : dv[nh * dv_ + (i - dn)];
}
/* dkva (N, rkv+dr): latent part 0, k_pe part Σ over heads in head order */
__global__ void k_mla_kv_bwd_dkva(float *dkva, const float *dk, int64_t N, int64_t nh, int64_t dn, int64_t rkv,
                                  int64_t dr) {
    const int64_t w = rkv + dr, dq = dn + dr;
    ROWS(n, N) COLS(i, w) {
        float acc = 0;
        if (i >= rkv)
            for (int64_t h = 0; h < nh; h++) acc += dk[(n * nh + h) * dq + dn + (i - rkv)];
        dkva[n * w + i] = acc;
    }
}
__global__ void k_moe_permute_bwd(float *dx, const float *dxs, const int32_t *pos, int64_t N, int64_t K, int64_t H) {
    ROWS(n, N) COLS(i, H) {
        float d = dx[n * H + i];
        for (int64_t k = 0; k < K; k++) d += dxs[(int64_t)pos[n * K + k] * H + i];
        dx[n * H + i] = d;
    }
}
/* t0[b]: the cache slot (row·Lmax + first position) of sequence b */
__global__ void k_kv_append(float *ckv, float *kpe, const float *c, const float *kva, const int64_t *t0, int64_t B,
                            int64_t n, int64_t rkv, int64_t dr) {
    const int64_t w = rkv + dr;
    ROWS(r, B * n) {
        const int64_t t = t0[r / n] + r % n;
        COLS(j, w) {
            if (j < rkv) ckv[t * rkv + j] = c[r * rkv + j];
            else kpe[t * dr + (j - rkv)] = kva[r * w + j];
        }
    }
}
__global__ void k_gather_rows(float *dst, const float *src, const int32_t *idx, int64_t n, int64_t H) {
    ROWS(r, n) {
        const float *s = src + (int64_t)idx[r] * H;
        COLS(c, H) dst[r * H + c] = s[c];
    }
}
__global__ void k_cast_f32_bf16(uint16_t *dst, const float *src, int64_t n) { GRID_STRIDE(i, n) dst[i] = ds_cu_f32_to_bf16(src[i]); }
__global__ void k_cast_bf16_f32(float *dst, const uint16_t *src, int64_t n) { GRID_STRIDE(i, n) dst[i] = ds_cu_bf16_to_f32(src[i]); }
} // namespace

extern "C" void ds_cu_embedding_bf16_forward(float *out, const int32_t *ids, const uint16_t *wte, int64_t N, int64_t C) {
    CU_ENTRY();
    if (N * C <= 0) return;
    k_embedding_bf16<<<ds_cu_row_grid(N, C), ds_cu_row_block(C), 0, g_cu.stream>>>(out, ids, wte, N, C);
    CU_LAUNCHED();
}
extern "C" void ds_cu_mla_kv_assemble_backward(float *dkv, float *dkva, const float *dk, const float *dv, int64_t N,
                                               int64_t nh, int64_t dn, int64_t dv_, int64_t rkv, int64_t dr) {
    CU_ENTRY();
    if (N <= 0) return;
    if (N * nh * (dn + dv_) > 0) {
        k_mla_kv_bwd_dkv<<<ds_cu_row_grid(N * nh, dn + dv_), ds_cu_row_block(dn + dv_), 0, g_cu.stream>>>(dkv, dk, dv, N * nh, dn, dv_, dr);
        CU_LAUNCHED();
    }
    k_mla_kv_bwd_dkva<<<ds_cu_row_grid(N, rkv + dr), ds_cu_row_block(rkv + dr), 0, g_cu.stream>>>(dkva, dk, N, nh, dn, rkv, dr);
    CU_LAUNCHED();
}
extern "C" void ds_cu_moe_permute_backward(float *dx, const float *dxs, const int32_t *pos, int64_t N, int64_t K,
                                           int64_t H) {
    CU_ENTRY();
    if (N * H <= 0) return;
    k_moe_permute_bwd<<<ds_cu_row_grid(N, H), ds_cu_row_block(H), 0, g_cu.stream>>>(dx, dxs, pos, N, K, H);
    CU_LAUNCHED();
}
extern "C" void ds_cu_kv_append(float *ckv, float *kpe, const float *c, const float *kva, int64_t B, int64_t n,
                                int64_t pos, int64_t Lmax, int64_t rkv, int64_t dr, const int64_t *pos_b,
                                const int64_t *row_b) {
    CU_ENTRY();
    if (B * n * (rkv + dr) <= 0) return;
    int64_t *h = (int64_t *)hbuf((size_t)B * sizeof(int64_t)); /* pos_b, row_b [host] */
    for (int64_t b = 0; b < B; b++) h[b] = (row_b ? row_b[b] : b) * Lmax + (pos_b ? pos_b[b] : pos);
    const int64_t *t0 = (const int64_t *)tmp_up(SCR_SB, h, (size_t)B * sizeof(int64_t));
    free(h);
    k_kv_append<<<ds_cu_row_grid(B * n, rkv + dr), ds_cu_row_block(rkv + dr), 0, g_cu.stream>>>(ckv, kpe, c, kva, t0, B, n, rkv, dr);
    CU_LAUNCHED();
}
extern "C" void ds_cu_gather_rows(float *dst, const float *src, const int32_t *idx, int64_t n, int64_t H) {
    CU_ENTRY();
    if (n * H <= 0) return;
    const int32_t *di = (const int32_t *)tmp_up(SCR_A, idx, (size_t)n * sizeof(int32_t)); /* idx is [host] */
    k_gather_rows<<<ds_cu_row_grid(n, H), ds_cu_row_block(H), 0, g_cu.stream>>>(dst, src, di, n, H);
    CU_LAUNCHED();
}
namespace {
/* one thread per id: the ids are distinct, so no two threads write one logit */
__global__ void k_logits_adjust(float *x, const int32_t *ids, const float *t, int64_t n) {
    GRID_STRIDE(i, n) {
        const float pre = t[i], rep = t[n + i], post = t[2 * n + i];
        float v = x[ids[i]] + pre;
        if (rep != 1.0f) v = v > 0 ? v / rep : v * rep;
        x[ids[i]] = v + post;
    }
}
/* one warp (a few strided passes over V; shuffles only, no shared memory): max, zero below
 * min_p * max, Σ in double, renormalise */
__global__ void k_probs_min_p(float *p, int64_t V, float min_p) {
    float mx = -INFINITY;
    for (int64_t i = threadIdx.x; i < V; i += 32) mx = fmaxf(mx, p[i]);
    mx = warp_max(mx);
    const float thr = min_p * mx;
    double sum = 0;
    for (int64_t i = threadIdx.x; i < V; i += 32) {
        float v = p[i] < thr ? 0.0f : p[i];
        p[i] = v;
        sum += v;
    }
    sum = warp_sum_d(sum);
    for (int64_t i = threadIdx.x; i < V; i += 32) p[i] = (float)(p[i] / sum);
}
} // namespace

extern "C" void ds_cu_logits_adjust(float *x, int64_t V, const int32_t *ids, const float *pre, const float *rep,
                                    const float *post, int64_t n) {
    (void)V;
    if (n <= 0) return;
    CU_ENTRY();
    /* ids, pre, rep, post are [host]: one upload of (ids | pre | rep | post) */
    char *h = (char *)hbuf((size_t)n * 16);
    memcpy(h, ids, (size_t)n * 4);
    memcpy(h + n * 4, pre, (size_t)n * 4), memcpy(h + n * 8, rep, (size_t)n * 4), memcpy(h + n * 12, post, (size_t)n * 4);
    char *d = (char *)tmp_up(SCR_A, h, (size_t)n * 16);
    free(h);
    k_logits_adjust<<<ds_cu_blocks(n, 256), 256, 0, g_cu.stream>>>(x, (const int32_t *)d, (const float *)(d + n * 4), n);
    CU_LAUNCHED();
}
extern "C" void ds_cu_probs_min_p(float *prob, int64_t V, double min_p) {
    if (V <= 0 || min_p <= 0) return;
    CU_ENTRY();
    k_probs_min_p<<<1, 32, 0, g_cu.stream>>>(prob, V, (float)min_p);
    CU_LAUNCHED();
}
extern "C" void ds_cu_cast_f32_bf16(uint16_t *dst, const float *src, int64_t n) {
    CU_ENTRY();
    if (n <= 0) return;
    k_cast_f32_bf16<<<ds_cu_blocks(n, 256), 256, 0, g_cu.stream>>>(dst, src, n);
    CU_LAUNCHED();
}
extern "C" void ds_cu_cast_bf16_f32(float *dst, const uint16_t *src, int64_t n) {
    CU_ENTRY();
    if (n <= 0) return;
    k_cast_bf16_f32<<<ds_cu_blocks(n, 256), 256, 0, g_cu.stream>>>(dst, src, n);
    CU_LAUNCHED();
}

/* ---- FP8 1x128 activation tiles (num/quant.c's act_quant) ---------------------------------- */
namespace {
__device__ __forceinline__ uint8_t e4m3(float v) { return (uint8_t)__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3); }
__device__ __forceinline__ float e4m3_f32(uint8_t c) {
    __half_raw h = __nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)c, __NV_E4M3);
    return __half2float(__half(h));
}
/* one warp per (row, tile); scales s[r * KB + kb] (row-major, as the CPU's) */
__global__ void k_act_quant(uint8_t *q, float *s, const float *x, int64_t R, int64_t C) {
    int64_t KB = (C + 127) / 128, nw = (int64_t)gridDim.x * (blockDim.x >> 5);
    int lane = threadIdx.x & 31;
    for (int64_t wi = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; wi < R * KB; wi += nw) {
        int64_t r = wi / KB, kb = wi % KB, c0 = kb * 128;
        float v[4], a = 0.0f;
        for (int j = 0; j < 4; j++) {
            int64_t c = c0 + lane + 32 * j;
            v[j] = c < C ? x[r * C + c] : 0.0f;
            a = fmaxf(a, fabsf(v[j])); /* NaN skipped, as the CPU's amax */
        }
        a = warp_max(a);
        if (a < 1e-4f) a = 1e-4f; /* DS_QUANT_AMAX_FLOOR */
        float sc = a / 448.0f;
        if (!(sc > 0)) sc = 1.0f;
        if (lane == 0) s[r * KB + kb] = sc;
        for (int j = 0; j < 4; j++) {
            int64_t c = c0 + lane + 32 * j;
            if (c < C) q[r * C + c] = e4m3(v[j] / sc);
        }
    }
}
__global__ void k_act_dequant(float *x, const uint8_t *q, const float *s, int64_t R, int64_t C) {
    const int64_t KB = (C + 127) / 128;
    ROWS(r, R) COLS(c, C) x[r * C + c] = e4m3_f32(q[r * C + c]) * s[r * KB + c / 128];
}
} // namespace

extern "C" void ds_cu_act_quant_1x128(uint8_t *q, float *s, const float *x, int64_t R, int64_t C) {
    CU_ENTRY();
    if (R <= 0 || C <= 0) return;
    k_act_quant<<<ds_cu_blocks(R * ((C + 127) / 128) * 32, 256), 256, 0, g_cu.stream>>>(q, s, x, R, C);
    CU_LAUNCHED();
}
extern "C" void ds_cu_act_dequant_1x128(float *x, const uint8_t *q, const float *s, int64_t R, int64_t C) {
    CU_ENTRY();
    if (R <= 0 || C <= 0) return;
    k_act_dequant<<<ds_cu_row_grid(R, C), ds_cu_row_block(C), 0, g_cu.stream>>>(x, q, s, R, C);
    CU_LAUNCHED();
}

/* ---- argmax ------------------------------------------------------------------------------------- */
namespace {
/* one block per row (block_argmax, common.cuh) */
__global__ void k_argmax_rows(int32_t *out, const float *x, int64_t V) {
    __shared__ float sf[32];
    __shared__ int64_t si[32], at;
    int64_t bi = block_argmax(x + (int64_t)blockIdx.x * V, V, sf, si, &at);
    if (threadIdx.x == 0) out[blockIdx.x] = (int32_t)bi;
}
} // namespace

extern "C" void ds_cu_argmax_rows(int32_t *out, const float *x, int64_t N, int64_t V) {
    if (N <= 0) return;
    CU_ENTRY();
    int32_t *d = (int32_t *)ds_cu_scratch(SCR_B, (size_t)N * sizeof(int32_t));
    k_argmax_rows<<<(unsigned)N, 256, 0, g_cu.stream>>>(d, x, V);
    CU_LAUNCHED();
    CU_CHECK(cudaMemcpyAsync(out, d, (size_t)N * sizeof(int32_t), cudaMemcpyDeviceToHost, g_cu.stream));
    CU_CHECK(cudaStreamSynchronize(g_cu.stream));
}

/* ---- absorbed MLA attention over the latent cache ---------------------------------------------------- */
namespace {
/* qabs (N*nh, rkv): Σ_d q_nope[r,h,d] · kv_b[h*(dn+dv) + d, :] in d order */
__global__ void k_mla_qabs(float *qabs, const float *q, const float *kv_b, int64_t NH, int64_t nh, int64_t dn,
                           int64_t dv, int64_t dr, int64_t rkv) {
    GRID_STRIDE(e, NH * rkv) {
        int64_t rh = e / rkv, j = e % rkv, h = rh % nh;
        const float *qn = q + rh * (dn + dr), *w = kv_b + h * (dn + dv) * rkv + j;
        float a = 0;
        for (int64_t d = 0; d < dn; d++) a += qn[d] * w[d * rkv];
        qabs[e] = a;
    }
}
/* block per (sequence, head, query): scores over positions 0..t, softmax,
 * latent mix, W_UV; s: scratch (t+1) per block, ctx (rkv) */
/* pr[b], pr[B + b]: sequence b's first position and cache row; span: the
 * largest pos + n (the per-block score stride) */
__global__ void k_mla_absorbed(float *att, const float *q, const float *qabs, const float *ckv, const float *kpe,
                               const float *kv_b, float *sbuf, const int64_t *pr, int64_t B, int64_t n, int64_t span,
                               int64_t Lmax, int64_t nh, int64_t dn, int64_t dv, int64_t dr, int64_t rkv, float scale) {
    __shared__ float sh[32];
    const int64_t w = blockIdx.x, b = w / (nh * n), h = (w / n) % nh, i = w % n, t = pr[b] + i, r = b * n + i;
    const int64_t dq = dn + dr, row = pr[B + b];
    float *s = sbuf + w * (span + rkv), *ctx = s + span;
    const float *qa = qabs + (r * nh + h) * rkv, *qpe = q + (r * nh + h) * dq + dn;
    const float *Cc = ckv + row * Lmax * rkv, *KP = kpe + row * Lmax * dr;
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j <= t; j += blockDim.x) {
        float a = 0, c = 0;
        for (int64_t k = 0; k < rkv; k++) a += qa[k] * Cc[j * rkv + k];
        for (int64_t k = 0; k < dr; k++) c += qpe[k] * KP[j * dr + k];
        float v = (a + c) * scale;
        s[j] = v;
        mx = fmaxf(mx, v);
    }
    mx = block_max(mx, sh);
    float sum = 0;
    for (int64_t j = threadIdx.x; j <= t; j += blockDim.x) {
        float ev = expf(s[j] - mx);
        s[j] = ev;
        sum += ev;
    }
    sum = block_sum(sum, sh);
    __syncthreads(); /* every s[j] written */
    const float inv = 1.0f / sum;
    for (int64_t k = threadIdx.x; k < rkv; k += blockDim.x) {
        float a = 0;
        for (int64_t j = 0; j <= t; j++) a += s[j] * Cc[j * rkv + k];
        ctx[k] = a * inv;
    }
    __syncthreads();
    const float *wv = kv_b + (h * (dn + dv) + dn) * rkv;
    float *o = att + r * nh * dv + h * dv;
    for (int64_t v = threadIdx.x; v < dv; v += blockDim.x) {
        float a = 0;
        for (int64_t k = 0; k < rkv; k++) a += wv[v * rkv + k] * ctx[k];
        o[v] = a;
    }
}
} // namespace

extern "C" void ds_cu_mla_absorbed_attention(float *att, const float *q, const float *ckv, const float *kpe,
                                             const float *kv_b, int64_t B, int64_t n, int64_t pos, int64_t Lmax,
                                             int64_t nh, int64_t dn, int64_t dv, int64_t dr, int64_t rkv, float scale,
                                             const int64_t *pos_b, const int64_t *row_b) {
    CU_ENTRY();
    const int64_t N = B * n, work = B * nh * n;
    if (N <= 0 || nh <= 0) return;
    int64_t *h = (int64_t *)hbuf((size_t)(2 * B) * sizeof(int64_t)), span = 0; /* pos_b, row_b [host] */
    for (int64_t b = 0; b < B; b++) {
        h[b] = pos_b ? pos_b[b] : pos;
        h[B + b] = row_b ? row_b[b] : b;
        if (h[b] + n > span) span = h[b] + n;
    }
    const int64_t *pr = (const int64_t *)tmp_up(SCR_SA, h, (size_t)(2 * B) * sizeof(int64_t));
    free(h);
    float *qabs = (float *)ds_cu_scratch(SCR_C, (size_t)(N * nh * (rkv ? rkv : 1)) * sizeof(float));
    float *sbuf = (float *)ds_cu_scratch(SCR_D, (size_t)(work * (span + rkv)) * sizeof(float));
    if (N * nh * rkv > 0) {
        k_mla_qabs<<<ds_cu_blocks(N * nh * rkv, 256), 256, 0, g_cu.stream>>>(qabs, q, kv_b, N * nh, nh, dn, dv, dr, rkv);
        CU_LAUNCHED();
    }
    k_mla_absorbed<<<(unsigned)work, 128, 0, g_cu.stream>>>(att, q, qabs, ckv, kpe, kv_b, sbuf, pr, B, n, span, Lmax,
                                                           nh, dn, dv, dr, rkv, scale);
    CU_LAUNCHED();
}

/* ---- continuous batching: RoPE at per-sequence positions ------------------------------------------- */
extern "C" void ds_cu_rope_pos_forward(float *x, const float *cos_t, const float *sin_t, const int64_t *pos_b,
                                       int64_t B, int64_t T, int64_t nv, int64_t ld, int64_t off, int64_t dr,
                                       int halves) {
    const int64_t h2 = dr / 2; /* pos_b [host]: one launch per sequence, as the CPU's loop */
    for (int64_t b = 0; b < B; b++)
        ds_cu_rope_forward(x + b * T * nv * ld, cos_t + pos_b[b] * h2, sin_t + pos_b[b] * h2, 1, T, nv, ld, off, dr,
                           halves);
}

/* ---- evaluation scoring: log-softmax at the target, greedy flag --------------------------------------- */
namespace {
/* block per row: the first maximum (as argmax_rows), Σ exp(x − max) in double */
__global__ void k_token_logprobs(float *lp, uint8_t *greedy, const float *x, const int32_t *tg, int64_t V) {
    __shared__ double sd[32];
    __shared__ float sf[32];
    __shared__ int64_t si[32], am_s;
    const float *row = x + (int64_t)blockIdx.x * V;
    block_argmax(row, V, sf, si, &am_s);
    __syncthreads();
    const int64_t am = am_s;
    const double mx = row[am];
    double s = 0;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) s += exp((double)row[i] - mx);
    s = block_sum_d(s, sd);
    if (threadIdx.x == 0) {
        int32_t t = tg[blockIdx.x];
        lp[blockIdx.x] = (float)((double)row[t] - mx - log(s));
        greedy[blockIdx.x] = am == t;
    }
}
} // namespace

extern "C" void ds_cu_token_logprobs(float *logprob, uint8_t *greedy, const float *logits, const int32_t *targets,
                                     int64_t N, int64_t V) {
    if (N <= 0) return;
    CU_ENTRY();
    const int32_t *dt = (const int32_t *)tmp_up(SCR_A, targets, (size_t)N * sizeof(int32_t)); /* [host] */
    float *dl = (float *)ds_cu_scratch(SCR_B, (size_t)N * sizeof(float));
    uint8_t *dg = (uint8_t *)ds_cu_scratch(SCR_SC, (size_t)N);
    k_token_logprobs<<<(unsigned)N, 256, 0, g_cu.stream>>>(dl, dg, logits, dt, V);
    CU_LAUNCHED();
    CU_CHECK(cudaMemcpyAsync(logprob, dl, (size_t)N * sizeof(float), cudaMemcpyDeviceToHost, g_cu.stream));
    CU_CHECK(cudaMemcpyAsync(greedy, dg, (size_t)N, cudaMemcpyDeviceToHost, g_cu.stream));
    CU_CHECK(cudaStreamSynchronize(g_cu.stream));
}

int ds_cu_checked_set(int *state, int (*ready)(void), int on) {
    if (!g_cu.ok) return 0;
    ds_cu_bind();
    std::lock_guard<std::mutex> g(g_cu_lock);
    int prev = ready();
    if (!on) *state = -1;
    else if (*state < 0) *state = 0;
    return prev;
}
