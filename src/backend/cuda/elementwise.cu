/*
 * elementwise.cu — the row and element kernels of the CUDA backend, each the
 * CPU entry's arithmetic (the .c files of backend/cpu/) in FP32: RMSNorm, RoPE and its
 * tables, SwiGLU, embedding, residual, the MoE router, permute and combine,
 * the MLA K/V split, cross-entropy.  Forward and backward side by side.
 *
 * Reductions that the CPU runs in row order (embedding and dbias-like column
 * sums) run in the same order here (a thread per column, or per token id and
 * column), so they give the same bits; block reductions (RMSNorm,
 * cross-entropy, dot products) differ from the CPU in summation order only.
 */
#include "backend/cuda/common.cuh"

extern "C" {
#include "backend/cpu/route_select.h"
}

#include <math.h>
#include <string.h>

/* ---- RMSNorm -------------------------------------------------------------------- */
namespace {
__global__ void k_rmsnorm_fwd(float *out, float *rstd, const float *inp, const float *w, int64_t C, int64_t ld_out,
                              int64_t ld_in, float eps) {
    __shared__ float sh[32];
    int64_t n = blockIdx.x;
    const float *x = inp + n * ld_in;
    float ss = 0;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += x[c] * x[c];
    ss = block_sum(ss, sh);
    float r = 1.0f / sqrtf(ss / (float)C + eps);
    if (rstd && threadIdx.x == 0) rstd[n] = r;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) out[n * ld_out + c] = w[c] * (x[c] * r);
}

__device__ float row_rstd(const float *x, int64_t C, float eps, float *sh) {
    float ss = 0;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += x[c] * x[c];
    ss = block_sum(ss, sh);
    return 1.0f / sqrtf(ss / (float)C + eps);
}

/* dinp += r·(w⊙dy − x·r·dot), dot = r/C · Σ w·dy·x; also the row's r into rs */
__global__ void k_rmsnorm_bwd_dx(float *dinp, float *rs, const float *dout, const float *inp, const float *w,
                                 const float *rstd, int64_t C, int64_t ld_din, int64_t ld_dout, int64_t ld_in,
                                 float eps) {
    __shared__ float sh[32];
    int64_t n = blockIdx.x;
    const float *x = inp + n * ld_in, *dy = dout + n * ld_dout;
    float r = rstd ? rstd[n] : row_rstd(x, C, eps, sh);
    if (rs && threadIdx.x == 0) rs[n] = r;
    if (!dinp) return;
    float dot = 0;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dot += w[c] * dy[c] * x[c];
    dot = block_sum(dot, sh) * (r / (float)C);
    float *dx = dinp + n * ld_din;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dx[c] += r * (w[c] * dy[c] - x[c] * r * dot);
}

/* dw[c] += Σ_n dy·x·r.  The rows go in chunks of `chunk`: a thread per
 * (chunk, column) sums its chunk in row order into part[j*C + c], then a
 * thread per column adds the chunks in order (k_col_chunks_add) — a fixed
 * order for any launch.  Up to 256 rows one chunk holds them all (the CPU's
 * order and bits); beyond, chunks of 64 rows: a thread per column over every
 * row would be C threads for N·C work, a few warps on a GPU of 132 SMs. */
constexpr int64_t DW_CHUNK = 64;
__global__ void k_rmsnorm_bwd_dw_part(float *part, const float *dout, const float *inp, const float *rs, int64_t N,
                                      int64_t C, int64_t ld_dout, int64_t ld_in, int64_t chunk) {
    const int64_t NC = (N + chunk - 1) / chunk;
    ROWS(j, NC) {
        const int64_t n1 = (j + 1) * chunk < N ? (j + 1) * chunk : N;
        COLS(c, C) {
            float acc = 0;
            for (int64_t n = j * chunk; n < n1; n++) acc += dout[n * ld_dout + c] * inp[n * ld_in + c] * rs[n];
            part[j * C + c] = acc;
        }
    }
}
__global__ void k_col_chunks_add(float *dw, const float *part, int64_t NC, int64_t C) {
    GRID_STRIDE(c, C) {
        float acc = part[c]; /* one chunk: exactly the row-order sum */
        for (int64_t j = 1; j < NC; j++) acc += part[j * C + c];
        dw[c] += acc;
    }
}
} // namespace

static int row_threads(int64_t C) { return C >= 1024 ? 512 : C >= 256 ? 256 : 128; }

extern "C" void ds_cu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int64_t N, int64_t C,
                                      int64_t ld_out, int64_t ld_in, float eps) {
    CU_ENTRY();
    if (N <= 0) return;
    k_rmsnorm_fwd<<<(unsigned)N, row_threads(C), 0, g_cu.stream>>>(out, rstd, inp, w, C, ld_out, ld_in, eps);
    CU_LAUNCHED();
}

extern "C" void ds_cu_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                                       const float *rstd, int64_t N, int64_t C, int64_t ld_din, int64_t ld_dout,
                                       int64_t ld_in, float eps) {
    CU_ENTRY();
    if (N <= 0) return;
    float *rs = dw ? (float *)ds_cu_scratch(SCR_F32, (size_t)N * sizeof(float)) : NULL;
    k_rmsnorm_bwd_dx<<<(unsigned)N, row_threads(C), 0, g_cu.stream>>>(dinp, rs, dout, inp, w, rstd, C, ld_din,
                                                                      ld_dout, ld_in, eps);
    CU_LAUNCHED();
    if (dw) {
        int64_t chunk = N <= 4 * DW_CHUNK ? N : DW_CHUNK, NC = (N + chunk - 1) / chunk;
        float *part = (float *)ds_cu_scratch(SCR_A, (size_t)(NC * C) * sizeof(float));
        k_rmsnorm_bwd_dw_part<<<ds_cu_row_grid(NC, C), ds_cu_row_block(C), 0, g_cu.stream>>>(part, dout, inp, rs, N, C,
                                                                                            ld_dout, ld_in, chunk);
        CU_LAUNCHED();
        k_col_chunks_add<<<ds_cu_blocks(C, 128), 128, 0, g_cu.stream>>>(dw, part, NC, C);
        CU_LAUNCHED();
    }
}

/* ---- RoPE ---------------------------------------------------------------------------- */
namespace {
/* a row per vector, a thread per pair; pairs (2i, 2i+1), or (i, i+h) with halves */
__global__ void k_rope(float *x, const float *cos_t, const float *sin_t, int64_t BT, int64_t T, int64_t nv,
                       int64_t ld, int64_t off, int64_t h, int halves, int backward) {
    ROWS(vec, BT * nv) {
        const int64_t t = (vec / nv) % T;
        float *p = x + vec * ld + off;
        COLS(i, h) {
            int64_t i0 = halves ? i : 2 * i, i1 = halves ? i + h : 2 * i + 1;
            float c = cos_t[t * h + i], s = sin_t[t * h + i], x0 = p[i0], x1 = p[i1];
            if (!backward) {
                p[i0] = x0 * c - x1 * s;
                p[i1] = x1 * c + x0 * s;
            } else {
                p[i0] = c * x0 + s * x1;
                p[i1] = c * x1 - s * x0;
            }
        }
    }
}
} // namespace

extern "C" void ds_cu_rope_forward(float *x, const float *cos_t, const float *sin_t, int64_t B, int64_t T, int64_t nv,
                                   int64_t ld, int64_t off, int64_t dr, int halves) {
    CU_ENTRY();
    if (B * T * nv * (dr / 2) <= 0) return;
    k_rope<<<ds_cu_row_grid(B * T * nv, dr / 2), ds_cu_row_block(dr / 2), 0, g_cu.stream>>>(x, cos_t, sin_t, B * T, T,
                                                                                          nv, ld, off, dr / 2, halves, 0);
    CU_LAUNCHED();
}
extern "C" void ds_cu_rope_backward(float *dx, const float *cos_t, const float *sin_t, int64_t B, int64_t T,
                                    int64_t nv, int64_t ld, int64_t off, int64_t dr, int halves) {
    CU_ENTRY();
    if (B * T * nv * (dr / 2) <= 0) return;
    k_rope<<<ds_cu_row_grid(B * T * nv, dr / 2), ds_cu_row_block(dr / 2), 0, g_cu.stream>>>(dx, cos_t, sin_t, B * T, T,
                                                                                          nv, ld, off, dr / 2, halves, 1);
    CU_LAUNCHED();
}

/* The tables are computed on the host with the CPU's arithmetic (FP32 angle,
 * double trigonometry) — the same bits — and copied; inv_freq is host memory
 * (docs/engine.md §2.2). */
extern "C" void ds_cu_rope_tables(float *cos_t, float *sin_t, const float *inv_freq, float attn_factor, int64_t T,
                                  int64_t h2) {
    CU_ENTRY();
    if (T <= 0 || h2 <= 0) return;
    size_t n = (size_t)(T * h2);
    float *hc = (float *)ds_malloc(2 * n * sizeof(float)), *hs = hc + n;
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < h2; i++) {
            float ang = (float)t * inv_freq[i];
            hc[t * h2 + i] = (float)cos((double)ang) * attn_factor;
            hs[t * h2 + i] = (float)sin((double)ang) * attn_factor;
        }
    CU_CHECK(cudaMemcpyAsync(cos_t, hc, n * sizeof(float), cudaMemcpyHostToDevice, g_cu.stream));
    CU_CHECK(cudaMemcpyAsync(sin_t, hs, n * sizeof(float), cudaMemcpyHostToDevice, g_cu.stream));
    CU_CHECK(cudaStreamSynchronize(g_cu.stream)); /* the host buffer goes away */
    free(hc);
}

/* ---- SwiGLU, residual ---------------------------------------------------------------- */
namespace {
__global__ void k_swiglu_fwd(float *out, const float *gate, const float *up, int64_t n) {
    GRID_STRIDE(i, n) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}
__global__ void k_swiglu_bwd(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                             int64_t n) {
    GRID_STRIDE(i, n) {
        float g = gate[i], s = 1.0f / (1.0f + expf(-g)), d = dout[i];
        dup[i] = d * g * s;   /* in the CPU's order (up read after dup is written) */
        dgate[i] = d * up[i] * s * (1.0f + g * (1.0f - s));
    }
}
__global__ void k_residual(float *out, const float *a, const float *b, int64_t n) { GRID_STRIDE(i, n) out[i] = a[i] + b[i]; }
} // namespace

extern "C" void ds_cu_swiglu_forward(float *out, const float *gate, const float *up, int64_t N, int64_t I) {
    CU_ENTRY();
    if (N * I <= 0) return;
    k_swiglu_fwd<<<ds_cu_blocks(N * I, 256), 256, 0, g_cu.stream>>>(out, gate, up, N * I);
    CU_LAUNCHED();
}
extern "C" void ds_cu_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                                      int64_t N, int64_t I) {
    CU_ENTRY();
    if (N * I <= 0) return;
    k_swiglu_bwd<<<ds_cu_blocks(N * I, 256), 256, 0, g_cu.stream>>>(dgate, dup, dout, gate, up, N * I);
    CU_LAUNCHED();
}
extern "C" void ds_cu_residual_forward(float *out, const float *a, const float *b, int64_t n) {
    CU_ENTRY();
    if (n <= 0) return;
    k_residual<<<ds_cu_blocks(n, 256), 256, 0, g_cu.stream>>>(out, a, b, n);
    CU_LAUNCHED();
}

/* ---- embedding ------------------------------------------------------------------------ */
namespace {
__global__ void k_embed_fwd(float *out, const int32_t *ids, const float *wte, int64_t BT, int64_t C) {
    ROWS(n, BT) {
        const float *src = wte + (int64_t)ids[n] * C;
        COLS(c, C) out[n * C + c] = src[c];
    }
}
/* dwte[ids[n], c] += dout[n, c] with the rows grouped by id: grp holds the
 * rows of every id in token order (rows[0..BT)), then the groups' starts
 * (nseg + 1) and ids (nseg).  A thread per (group, column) adds its rows in
 * token order, the CPU's order for each element: the same bits, in parallel
 * over ids as well as columns (a thread per column walking every row ran
 * 1.6 ms for `small` at 4,096 tokens, its read-add-writes one after another). */
__global__ void k_embed_bwd(float *dwte, const float *dout, const int32_t *grp, int64_t BT, int64_t nseg, int64_t C) {
    const int32_t *rows = grp, *start = grp + BT, *id = start + nseg + 1;
    ROWS(g, nseg) {
        float *dst = dwte + (int64_t)id[g] * C;
        const int32_t r0 = start[g], r1 = start[g + 1];
        COLS(c, C) {
            float acc = dst[c];
            for (int32_t r = r0; r < r1; r++) acc += dout[(int64_t)rows[r] * C + c];
            dst[c] = acc;
        }
    }
}
} // namespace

/* the rows of ids grouped by id, in token order within a group (a stable LSD
 * radix sort by bytes, only as many passes as the largest id needs), laid out
 * as k_embed_bwd reads it: rows (BT), group starts (nseg + 1), group ids
 * (nseg); returns nseg.  out has room for 3·BT + 1. */
static int64_t group_rows(int32_t *out, const int32_t *ids, int64_t BT) {
    uint32_t *const buf = (uint32_t *)ds_malloc((size_t)BT * 2 * sizeof(uint32_t)), *a = buf, *b = buf + BT;
    uint32_t top = 0;
    for (int64_t n = 0; n < BT; n++) a[n] = (uint32_t)n, top |= (uint32_t)ids[n];
    for (int sh = 0; sh < 32 && (top >> sh); sh += 8) {
        int64_t cnt[257] = {0};
        for (int64_t n = 0; n < BT; n++) cnt[(((uint32_t)ids[a[n]] >> sh) & 255) + 1]++;
        for (int d = 0; d < 256; d++) cnt[d + 1] += cnt[d];
        for (int64_t n = 0; n < BT; n++) b[cnt[((uint32_t)ids[a[n]] >> sh) & 255]++] = a[n];
        uint32_t *t = a;
        a = b, b = t;
    }
    int64_t nseg = 0;
    for (int64_t n = 0; n < BT; n++) {
        out[n] = (int32_t)a[n];
        if (!n || ids[a[n]] != ids[a[n - 1]]) out[BT + nseg++] = (int32_t)n;
    }
    out[BT + nseg] = (int32_t)BT;
    for (int64_t g = 0; g < nseg; g++) out[BT + nseg + 1 + g] = ids[out[out[BT + g]]];
    free(buf);
    return nseg;
}

extern "C" void ds_cu_embedding_forward(float *out, const int32_t *ids, const float *wte, int64_t BT, int64_t C) {
    CU_ENTRY();
    if (BT * C <= 0) return;
    k_embed_fwd<<<ds_cu_row_grid(BT, C), ds_cu_row_block(C), 0, g_cu.stream>>>(out, ids, wte, BT, C);
    CU_LAUNCHED();
}
extern "C" void ds_cu_embedding_backward(float *dwte, const float *dout, const int32_t *ids, int64_t BT, int64_t C) {
    CU_ENTRY();
    if (BT * C <= 0) return;
    int32_t *h = (int32_t *)ds_malloc((size_t)(4 * BT + 1) * sizeof(int32_t)), *hid = h + 3 * BT + 1;
    CU_CHECK(cudaMemcpyAsync(hid, ids, (size_t)BT * sizeof(int32_t), cudaMemcpyDeviceToHost, g_cu.stream));
    CU_CHECK(cudaStreamSynchronize(g_cu.stream));
    const int64_t nseg = group_rows(h, hid, BT), len = BT + 2 * nseg + 1;
    int32_t *grp = (int32_t *)ds_cu_scratch(SCR_JOBS, (size_t)len * sizeof(int32_t));
    CU_CHECK(cudaMemcpyAsync(grp, h, (size_t)len * sizeof(int32_t), cudaMemcpyHostToDevice, g_cu.stream));
    CU_CHECK(cudaStreamSynchronize(g_cu.stream)); /* the host buffer goes away */
    free(h);
    k_embed_bwd<<<ds_cu_row_grid(nseg, C), ds_cu_row_block(C), 0, g_cu.stream>>>(dwte, dout, grp, BT, nseg, C);
    CU_LAUNCHED();
}

/* ---- MoE rows ----------------------------------------------------------------------- */
namespace {
__global__ void k_permute(float *xs, const float *x, const int32_t *order, int64_t S, int64_t K, int64_t H) {
    ROWS(s, S) {
        const float *src = x + (int64_t)(order[s] / K) * H;
        COLS(c, H) xs[s * H + c] = src[c];
    }
}
/* y[n] = Σ_k w[n,k]·e_out[pos[n,k]], k from 0 (the CPU's order) */
__global__ void k_combine(float *y, const float *e_out, const float *w, const int32_t *pos, int64_t N, int64_t K,
                          int64_t H) {
    ROWS(n, N) COLS(c, H) {
        float acc = 0;
        for (int64_t k = 0; k < K; k++) acc += w[n * K + k] * e_out[(int64_t)pos[n * K + k] * H + c];
        y[n * H + c] = acc;
    }
}
/* block per (n, k): de_out row = w·dy, dw = dy·e_out */
__global__ void k_combine_bwd(float *de_out, float *dw, const float *dy, const float *e_out, const float *w,
                              const int32_t *pos, int64_t K, int64_t H) {
    __shared__ float sh[32];
    int64_t nk = blockIdx.x, n = nk / K, s = pos[nk];
    const float *g = dy + n * H, *eo = e_out + s * H;
    float wk = w[nk], dot = 0;
    for (int64_t i = threadIdx.x; i < H; i += blockDim.x) dot += g[i] * eo[i];
    dot = block_sum(dot, sh);   /* every read of e_out is done: de_out may alias it */
    for (int64_t i = threadIdx.x; i < H; i += blockDim.x) de_out[s * H + i] = wk * g[i];
    if (threadIdx.x == 0) dw[nk] = dot;
}
} // namespace

extern "C" void ds_cu_moe_permute(float *xs, const float *x, const int32_t *order, int64_t N, int64_t K, int64_t H) {
    CU_ENTRY();
    if (N * K * H <= 0) return;
    k_permute<<<ds_cu_row_grid(N * K, H), ds_cu_row_block(H), 0, g_cu.stream>>>(xs, x, order, N * K, K, H);
    CU_LAUNCHED();
}
extern "C" void ds_cu_moe_combine_forward(float *y, const float *e_out, const float *w, const int32_t *pos, int64_t N,
                                          int64_t K, int64_t H) {
    CU_ENTRY();
    if (N * H <= 0) return;
    k_combine<<<ds_cu_row_grid(N, H), ds_cu_row_block(H), 0, g_cu.stream>>>(y, e_out, w, pos, N, K, H);
    CU_LAUNCHED();
}
extern "C" void ds_cu_moe_combine_backward(float *de_out, float *dw, const float *dy, const float *e_out,
                                           const float *w, const int32_t *pos, int64_t N, int64_t K, int64_t H) {
    CU_ENTRY();
    if (N * K <= 0) return;
    k_combine_bwd<<<(unsigned)(N * K), row_threads(H), 0, g_cu.stream>>>(de_out, dw, dy, e_out, w, pos, K, H);
    CU_LAUNCHED();
}

/* ---- MLA K/V split --------------------------------------------------------------------- */
namespace {
__global__ void k_mla_kv(float *k, float *v, const float *kv, const float *kva, int64_t N, int64_t nh, int64_t dn,
                         int64_t dv, int64_t rkv, int64_t dr) {
    const int64_t dq = dn + dr, w = dq + dv;   /* a row per (token, head), a thread per element of [k | v] */
    ROWS(nhh, N * nh) {
        const int64_t n = nhh / nh;
        const float *src = kv + nhh * (dn + dv);
        COLS(i, w) {
            if (i < dn) k[nhh * dq + i] = src[i];
            else if (i < dq) k[nhh * dq + i] = kva[n * (rkv + dr) + rkv + (i - dn)];
            else v[nhh * dv + (i - dq)] = src[dn + (i - dq)];
        }
    }
}
} // namespace

extern "C" void ds_cu_mla_kv_assemble(float *k, float *v, const float *kv, const float *kva, int64_t N, int64_t nh,
                                      int64_t dn, int64_t dv, int64_t rkv, int64_t dr) {
    CU_ENTRY();
    if (N * nh * (dn + dr + dv) <= 0) return;
    k_mla_kv<<<ds_cu_row_grid(N * nh, dn + dr + dv), ds_cu_row_block(dn + dr + dv), 0, g_cu.stream>>>(k, v, kv, kva, N, nh,
                                                                                                   dn, dv, rkv, dr);
    CU_LAUNCHED();
}

/* ---- cross-entropy ---------------------------------------------------------------------- */
namespace {
/* block per row: lse, loss, dlogits = dscale·softmax − dscale·onehot (dlogits
 * may alias logits: every element is read by the thread that writes it, after
 * the reductions) */
__global__ void k_xent(float *dlogits, float *losses, const float *logits, const int32_t *targets, int64_t V,
                       int32_t ignore, float dscale) {
    __shared__ float sh[32];
    int64_t n = blockIdx.x;
    const float *z = logits + n * V;
    float *dz = dlogits ? dlogits + n * V : NULL;
    int32_t t = targets[n];
    if (t == ignore) {
        if (threadIdx.x == 0) losses[n] = 0;
        if (dz)
            for (int64_t v = threadIdx.x; v < V; v += blockDim.x) dz[v] = 0;
        return;
    }
    float mx = -INFINITY;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, z[v]);
    mx = block_max(mx, sh);
    float s = 0;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) s += expf(z[v] - mx);
    s = block_sum(s, sh);
    float lse = mx + logf(s), zt = z[t];
    __syncthreads();                       /* zt read by all before any write */
    if (threadIdx.x == 0) losses[n] = lse - zt;
    if (dz)
        for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
            float g = dscale * expf(z[v] - lse);
            dz[v] = v == t ? g - dscale : g;
        }
}
} // namespace

/* The sum over counted rows runs on the host in row order, in double, as the CPU's. */
extern "C" double ds_cu_cross_entropy(float *dlogits, float *losses, int64_t *count, const float *logits,
                                      const int32_t *targets, int64_t N, int64_t V, int32_t ignore, float dscale) {
    CU_ENTRY();
    if (N <= 0) {
        if (count) *count = 0;
        return 0.0;
    }
    float *l = losses ? losses : (float *)ds_cu_scratch(SCR_STAGE, (size_t)N * sizeof(float));
    k_xent<<<(unsigned)N, row_threads(V), 0, g_cu.stream>>>(dlogits, l, logits, targets, V, ignore, dscale);
    CU_LAUNCHED();
    float *hl = (float *)ds_malloc((size_t)N * sizeof(float));
    int32_t *ht = (int32_t *)ds_malloc((size_t)N * sizeof(int32_t));
    CU_CHECK(cudaMemcpyAsync(hl, l, (size_t)N * sizeof(float), cudaMemcpyDeviceToHost, g_cu.stream));
    CU_CHECK(cudaMemcpyAsync(ht, targets, (size_t)N * sizeof(int32_t), cudaMemcpyDeviceToHost, g_cu.stream));
    CU_CHECK(cudaStreamSynchronize(g_cu.stream));
    double total = 0;
    int64_t cnt = 0;
    for (int64_t n = 0; n < N; n++)
        if (ht[n] != ignore) total += hl[n], cnt++;
    free(hl);
    free(ht);
    if (count) *count = cnt;
    return total;
}

/* ---- MoE router ------------------------------------------------------------------------- */
namespace {
/* block per token; shared: s (E), sel (E), gs (G).  Scores in parallel, then
 * thread 0 runs the CPU's selection (group limit, top-K by repeated arg-max,
 * sort by expert id, normalisation) on them — the same choices and order. */
__global__ void k_route_fwd(float *w, int32_t *idx, float *scores, const float *logits, const float *bias,
                            ds_route_params p) {
    extern __shared__ float smem[];
    __shared__ float red[32];
    int64_t E = p.E, K = p.K, n = blockIdx.x;
    float *s = smem, *sel = smem + E, *gs = smem + 2 * E;
    const float *lg = logits + n * E;
    if (p.sigmoid) {
        for (int64_t e = threadIdx.x; e < E; e += blockDim.x) s[e] = 1.0f / (1.0f + expf(-lg[e]));
    } else {
        float mx = -INFINITY;
        for (int64_t e = threadIdx.x; e < E; e += blockDim.x) mx = fmaxf(mx, lg[e]);
        mx = block_max(mx, red);
        float sum = 0;
        for (int64_t e = threadIdx.x; e < E; e += blockDim.x) sum += (s[e] = expf(lg[e] - mx));
        sum = block_sum(sum, red);
        float inv = 1.0f / sum;
        for (int64_t e = threadIdx.x; e < E; e += blockDim.x) s[e] *= inv;
    }
    __syncthreads();
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
        scores[n * E + e] = s[e];
        sel[e] = s[e] + (bias ? bias[e] : 0.0f);
    }
    __syncthreads();
    if (threadIdx.x != 0) return;
    int32_t *ix = idx + n * K;
    ds_route_select(ix, sel, gs, &p);
    float sum = 0;
    for (int64_t k = 0; k < K; k++) sum += s[ix[k]];
    for (int64_t k = 0; k < K; k++) {
        float x = s[ix[k]];
        if (p.norm_topk) x /= sum + 1e-20f;
        w[n * K + k] = x * p.scaling;
    }
}

__global__ void k_route_bwd(float *dlogits, const float *dw, const float *dscores, const float *scores,
                            const int32_t *idx, ds_route_params p) {
    extern __shared__ float ds[];
    __shared__ float red[32];
    int64_t E = p.E, K = p.K, n = blockIdx.x;
    const float *s = scores + n * E;
    for (int64_t i = threadIdx.x; i < E; i += blockDim.x) ds[i] = dscores ? dscores[n * E + i] : 0.0f;
    __syncthreads();
    if (threadIdx.x == 0) {
        const int32_t *ix = idx + n * K;
        const float *g = dw + n * K;
        if (p.norm_topk) {
            float S = 1e-20f, ws = 0;
            for (int64_t k = 0; k < K; k++) S += s[ix[k]];
            for (int64_t k = 0; k < K; k++) ws += g[k] * s[ix[k]];
            float inv = 1.0f / S, t = ws * inv * inv;
            for (int64_t k = 0; k < K; k++) ds[ix[k]] += p.scaling * (g[k] * inv - t);
        } else {
            for (int64_t k = 0; k < K; k++) ds[ix[k]] += p.scaling * g[k];
        }
    }
    __syncthreads();
    float *dz = dlogits + n * E;
    if (p.sigmoid) {
        for (int64_t i = threadIdx.x; i < E; i += blockDim.x) dz[i] = ds[i] * s[i] * (1.0f - s[i]);
    } else {
        float dot = 0;
        for (int64_t i = threadIdx.x; i < E; i += blockDim.x) dot += ds[i] * s[i];
        dot = block_sum(dot, red);
        for (int64_t i = threadIdx.x; i < E; i += blockDim.x) dz[i] = s[i] * (ds[i] - dot);
    }
}
} // namespace

extern "C" void ds_cu_moe_route_forward(float *w, int32_t *idx, float *scores, const float *logits, const float *bias,
                                        const ds_route_params *p, int64_t N) {
    CU_ENTRY();
    if (N <= 0) return;
    int64_t G = p->G > 0 ? p->G : 1;
    size_t sm = (size_t)(2 * p->E + G) * sizeof(float);
    if (sm > 48 * 1024) CU_CHECK(cudaFuncSetAttribute(k_route_fwd, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm));
    k_route_fwd<<<(unsigned)N, 128, sm, g_cu.stream>>>(w, idx, scores, logits, bias, *p);
    CU_LAUNCHED();
}
extern "C" void ds_cu_moe_route_backward(float *dlogits, const float *dw, const float *dscores, const float *scores,
                                         const int32_t *idx, const ds_route_params *p, int64_t N) {
    CU_ENTRY();
    if (N <= 0) return;
    size_t sm = (size_t)p->E * sizeof(float);
    if (sm > 48 * 1024) CU_CHECK(cudaFuncSetAttribute(k_route_bwd, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm));
    k_route_bwd<<<(unsigned)N, 128, sm, g_cu.stream>>>(dlogits, dw, dscores, scores, idx, *p);
    CU_LAUNCHED();
}
