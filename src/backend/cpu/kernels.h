/*
 * kernels.h — the FP32 ops of the forward pass on CPU.  Every op has a scalar
 * reference (`*_ref`, plain loops, the oracle of tests/test_kernels.c) and a
 * fast version (OpenMP, BLAS, AVX2/AVX-512 with a scalar fallback).
 *
 * Argument order as in llm.c: outputs, inputs, parameters, sizes.  Shapes in
 * comments; sizes are int64_t.  Backward functions will stand next to their
 * forward (same files) when the backward issue lands; the forward saves what
 * they need (RMSNorm rstd, attention log-sum-exp, ...).
 */
#ifndef DS_KERNELS_H
#define DS_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "backend/cpu/linear_fp8w.h"

/* ---- matmul.c: out = inp · weightᵀ (+ bias) ------------------------------
 * out (N, OC), inp (N, C), weight (OC, C) row-major as PyTorch stores Linear
 * weights, bias (OC) or NULL.  The fast version calls cblas_sgemm (OpenBLAS;
 * never call it from inside an OpenMP parallel region) or, when built without
 * BLAS, a blocked AVX2/FMA kernel parallel over rows. */
void ds_matmul_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
                           int64_t N, int64_t C, int64_t OC);
void ds_matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                       int64_t N, int64_t C, int64_t OC);
/* The non-BLAS fast kernel, exposed so tests cover it in BLAS builds too. */
void ds_matmul_forward_blocked(float *out, const float *inp, const float *weight, const float *bias,
                               int64_t N, int64_t C, int64_t OC);
/* 1 when the build uses a BLAS library for ds_matmul_forward. */
int ds_matmul_uses_blas(void);

/* ---- rmsnorm.c: y = w ⊙ x / sqrt(mean(x²) + eps)  (doc §2.1) ------------
 * out (N, C), rstd (N) saved for backward (may be NULL), inp (N, C),
 * weight (C).  Rows may be strided: inp row i starts at inp + i*ld_in,
 * out row i at out + i*ld_out (ld = C for dense tensors). */
void ds_rmsnorm_forward_ref(float *out, float *rstd, const float *inp, const float *weight,
                            int64_t N, int64_t C, int64_t ld_out, int64_t ld_in, float eps);
void ds_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight,
                        int64_t N, int64_t C, int64_t ld_out, int64_t ld_in, float eps);

/* ---- rope.c: rotary embedding on interleaved pairs (doc §4.3) -----------
 * In place on x viewed as (B, T, nv, ld): for every vector, the dr values at
 * [off, off+dr) are rotated pairwise (x[2i], x[2i+1]) by angle pos·θ'_i with
 * the precomputed cos/sin tables (T, dr/2) (position = index in the sequence;
 * attention_factor already folded into the tables).  halves = 1: pairs
 * (x[i], x[i+dr/2]) (HF rope_interleave false, NeoX-permuted weights). */
void ds_rope_forward_ref(float *x, const float *cos_t, const float *sin_t,
                         int64_t B, int64_t T, int64_t nv, int64_t ld, int64_t off, int64_t dr, int halves);
void ds_rope_forward(float *x, const float *cos_t, const float *sin_t,
                     int64_t B, int64_t T, int64_t nv, int64_t ld, int64_t off, int64_t dr, int halves);

/* ---- attention.c: causal softmax attention -------------------------------
 * out (B, T, NH, DV), lse (B, NH, T) = log Σ exp(scale·q·k) per query (saved
 * for backward), q (B, T, NH, DQ), k (B, T, NH, DQ), v (B, T, NH, DV).
 * Query t sees keys 0..t.  The reference forms the full score row; the fast
 * version is blocked with an online softmax (memory O(T) per head), OpenMP over
 * (batch, head, query block). */
void ds_attention_forward_ref(float *out, float *lse, const float *q, const float *k, const float *v,
                              int64_t B, int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale);
void ds_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                          int64_t B, int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale);

/* ---- swiglu.c: out = silu(gate) ⊙ up  (doc §2.2) ------------------------
 * out (N, I), gate (N, I), up (N, I). */
void ds_swiglu_forward_ref(float *out, const float *gate, const float *up, int64_t N, int64_t I);
void ds_swiglu_forward(float *out, const float *gate, const float *up, int64_t N, int64_t I);

/* ---- embedding.c: out[b,t,:] = wte[ids[b,t], :] --------------------------
 * out (B*T, C), ids (B*T), wte (V, C).  Ids are checked by the caller. */
void ds_embedding_forward_ref(float *out, const int32_t *ids, const float *wte, int64_t BT, int64_t C);
void ds_embedding_forward(float *out, const int32_t *ids, const float *wte, int64_t BT, int64_t C);

/* ---- residual.c: out = a + b (n) ----------------------------------------- */
void ds_residual_forward_ref(float *out, const float *a, const float *b, int64_t n);
void ds_residual_forward(float *out, const float *a, const float *b, int64_t n);

/* ---- moe_route.c: the MoE router (doc §5.2) ------------------------------ */
typedef struct {
    int64_t E, K;          /* routed experts, experts per token */
    int64_t G, Gk;         /* groups, groups kept (G = 1: no group limit) */
    int sigmoid;           /* 1: sigmoid scores, 0: softmax over experts */
    int group_top2_sum;    /* 1: group score = sum of top-2 (noaux_tc), 0: max */
    int norm_topk;         /* divide the K weights by their sum (+1e-20) */
    float scaling;         /* routed_scaling_factor */
} ds_route_params;
/* weights (N, K), idx (N, K) sorted by expert id ascending, scores (N, E)
 * unbiased affinities (saved for backward and balance losses), inp = router
 * logits (N, E), bias (E) e_score_correction_bias or NULL (selection only).
 * Excluded groups are masked with -inf (the current transformers behaviour). */
void ds_moe_route_forward_ref(float *weights, int32_t *idx, float *scores, const float *logits,
                              const float *bias, const ds_route_params *p, int64_t N);
void ds_moe_route_forward(float *weights, int32_t *idx, float *scores, const float *logits,
                          const float *bias, const ds_route_params *p, int64_t N);

/* ---- moe_route.c: token-slot sort by expert (counting sort) -------------
 * counts (E) tokens per expert (the per-expert load), offsets (E+1) prefix
 * sums, order (N*K) slot ids n*K+k sorted by expert (stable: ascending slot
 * within an expert), pos (N*K) the inverse (slot -> sorted position). */
void ds_moe_sort(int64_t *counts, int64_t *offsets, int32_t *order, int32_t *pos,
                 const int32_t *idx, int64_t N, int64_t K, int64_t E);

/* ---- moe_rows.c: the MoE permute and forward combine ---------------------
 * permute: xs (N*K, H), xs[s] = x[order[s] / K] (order from ds_moe_sort).
 * combine: y (N, H), y[n] = Σ_k w[n,k]·e_out[pos[n,k]] summed in k order
 * from 0; e_out (N*K, H) in expert-sorted order, w (N, K), pos (N*K). */
void ds_moe_permute_ref(float *xs, const float *x, const int32_t *order, int64_t N, int64_t K, int64_t H);
void ds_moe_permute(float *xs, const float *x, const int32_t *order, int64_t N, int64_t K, int64_t H);
void ds_moe_combine_forward_ref(float *y, const float *e_out, const float *w, const int32_t *pos,
                                int64_t N, int64_t K, int64_t H);
void ds_moe_combine_forward(float *y, const float *e_out, const float *w, const int32_t *pos,
                            int64_t N, int64_t K, int64_t H);

/* ---- mla_kv.c: the MLA K/V split ------------------------------------------
 * kv (N, nh, dn+dv) per head [k_nope | v]; kva (N, rkv+dr) [latent | k_pe];
 * k (N, nh, dn+dr) per head [k_nope | k_pe] (k_pe the same for every head),
 * v (N, nh, dv). */
void ds_mla_kv_assemble_ref(float *k, float *v, const float *kv, const float *kva, int64_t N, int64_t nh,
                            int64_t dn, int64_t dv, int64_t rkv, int64_t dr);
void ds_mla_kv_assemble(float *k, float *v, const float *kv, const float *kva, int64_t N, int64_t nh,
                        int64_t dn, int64_t dv, int64_t rkv, int64_t dr);

/* ---- rope_tables.c: the RoPE cos/sin tables -------------------------------
 * cos_t, sin_t (T, h2): cos/sin(float(t)·inv_freq[i]) (angle in FP32, the
 * trigonometry in double, rounded to float) × attn_factor; inv_freq (h2). */
void ds_rope_tables_ref(float *cos_t, float *sin_t, const float *inv_freq, float attn_factor, int64_t T,
                        int64_t h2);
void ds_rope_tables(float *cos_t, float *sin_t, const float *inv_freq, float attn_factor, int64_t T, int64_t h2);

/* ---- the engine entries of the model side (docs/engine.md steps 4-6) ------
 * Signatures and contracts: the matching entries of struct ds_ops
 * (backend/ops.h).  cpu and ref share one function where the code is scalar. */
struct ds_ops;
/* memory.c: host memory (aligned malloc, memcpy, memset; sync a no-op) */
void *ds_cpu_alloc(size_t bytes);
void ds_cpu_free(void *p);
void ds_cpu_memset(void *dst, int byte, size_t bytes);
void ds_cpu_copy(void *dst, const void *src, size_t bytes);
void ds_cpu_sync(void);
/* grouped_linear.c: per-expert GEMMs over expert-sorted rows through
 * self->linear_* (the fast version runs experts in parallel, each GEMM then
 * single-threaded, in the forward when R >= 64·E and always in the backward;
 * the reference runs them in order) */
void ds_grouped_linear_forward(const struct ds_ops *self, float *out, const float *inp, const float *const *w,
                               const ds_fp8w *const *w8, const int64_t *counts, const int64_t *offsets, int64_t E,
                               int64_t C, int64_t OC);
void ds_grouped_linear_forward_ref(const struct ds_ops *self, float *out, const float *inp, const float *const *w,
                                   const ds_fp8w *const *w8, const int64_t *counts, const int64_t *offsets, int64_t E,
                                   int64_t C, int64_t OC);
/* act_quant.c: 1x128-tile E4M3 quantization of activations (num/quant.h
 * defaults: amax floor 1e-4, saturating); one implementation for cpu and ref */
void ds_act_quant_1x128(uint8_t *q, float *s, const float *x, int64_t R, int64_t C);
void ds_act_dequant_1x128(float *x, const uint8_t *q, const float *s, int64_t R, int64_t C);
/* linear_bf16w.c: the scalar reference of ds_embedding_bf16_forward */
void ds_embedding_bf16_forward_ref(float *out, const int32_t *ids, const uint16_t *table, int64_t N, int64_t C);

/* cast_bf16.c: the BF16 wire format of the expert-parallel exchange
 * (round to nearest even, NaN quiet; widening exact); _ref: plain loops */
void ds_cast_f32_bf16(uint16_t *dst, const float *src, int64_t n);
void ds_cast_bf16_f32(float *dst, const uint16_t *src, int64_t n);
void ds_cast_f32_bf16_ref(uint16_t *dst, const float *src, int64_t n);
void ds_cast_bf16_f32_ref(float *dst, const uint16_t *src, int64_t n);

#endif
