/*
 * ops.h — the ops table (DESIGN.md "Model code"): model code calls kernels
 * only through a `struct ds_ops`, so a backend (cpu now, cuda later) or the
 * scalar references can be swapped in without touching src/model/.
 *   ds_ops_cpu — the fast CPU kernels (OpenMP, BLAS, SIMD)
 *   ds_ops_ref — the scalar references (slow; tests run whole models with it)
 * Signatures and shapes: backend/cpu/kernels.h (forward), backend/cpu/backward.h
 * (backward entries, at the end of the struct).
 */
#ifndef DS_OPS_H
#define DS_OPS_H

#include <stddef.h>

#include "backend/cpu/backward.h"
#include "backend/cpu/balance_loss.h"
#include "backend/cpu/kernels.h"
#include "backend/cpu/linear_fp8w.h"

#include <stddef.h>
#include <stdint.h>

/* ---- optimizer types (train/) ----------------------------------------------
 * AdamW hyper-parameters (torch.optim.AdamW semantics, train/adamw.h), and a
 * segment of the flat parameter buffer that the `adamw` entry updates: the
 * elements [off, off + n) of p, g and the moments, with or without weight
 * decay. */
typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
} ds_adamw_hparams;

typedef struct {
    int64_t off, n;
    int decay;
} ds_optim_seg;

struct ds_ops {
    const char *name;
    void (*matmul_forward)(float *out, const float *inp, const float *weight, const float *bias,
                           int64_t N, int64_t C, int64_t OC);
    void (*rmsnorm_forward)(float *out, float *rstd, const float *inp, const float *weight,
                            int64_t N, int64_t C, int64_t ld_out, int64_t ld_in, float eps);
    void (*rope_forward)(float *x, const float *cos_t, const float *sin_t,
                         int64_t B, int64_t T, int64_t nv, int64_t ld, int64_t off, int64_t dr, int halves);
    void (*attention_forward)(float *out, float *lse, const float *q, const float *k, const float *v,
                              int64_t B, int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale);
    void (*swiglu_forward)(float *out, const float *gate, const float *up, int64_t N, int64_t I);
    void (*embedding_forward)(float *out, const int32_t *ids, const float *wte, int64_t BT, int64_t C);
    void (*residual_forward)(float *out, const float *a, const float *b, int64_t n);
    void (*moe_route_forward)(float *weights, int32_t *idx, float *scores, const float *logits,
                              const float *bias, const ds_route_params *p, int64_t N);
    /* backward (backend/cpu/backward.h) */
    void (*matmul_backward)(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                            const float *weight, int64_t N, int64_t C, int64_t OC, int acc);
    void (*rmsnorm_backward)(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                             const float *rstd, int64_t N, int64_t C, int64_t ld_din, int64_t ld_dout, int64_t ld_in,
                             float eps);
    void (*rope_backward)(float *dx, const float *cos_t, const float *sin_t, int64_t B, int64_t T, int64_t nv,
                          int64_t ld, int64_t off, int64_t dr, int halves);
    void (*attention_backward)(float *dq, float *dk, float *dv, const float *dout, const float *out,
                               const float *lse, const float *q, const float *k, const float *v, int64_t B,
                               int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale);
    void (*swiglu_backward)(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                            int64_t N, int64_t I);
    void (*embedding_backward)(float *dwte, const float *dout, const int32_t *ids, int64_t BT, int64_t C);
    double (*cross_entropy)(float *dlogits, float *losses, int64_t *count, const float *logits,
                            const int32_t *targets, int64_t N, int64_t V, int32_t ignore, float dscale);
    void (*moe_route_backward)(float *dlogits, const float *dw, const float *dscores, const float *scores,
                               const int32_t *idx, const ds_route_params *p, int64_t N);
    void (*moe_combine_backward)(float *de_out, float *dw, const float *dy, const float *e_out, const float *w,
                                 const int32_t *pos, int64_t N, int64_t K, int64_t H);
    /* the linear layers that FP8 training quantizes (attention q/kv/o
     * projections, dense and expert gate/up/down); same contract as
     * matmul_forward / matmul_backward, and the same functions by default.
     * lm_head, the router and MTP eh_proj always use the matmul entries. */
    void (*linear_forward)(float *out, const float *inp, const float *weight, const float *bias,
                           int64_t N, int64_t C, int64_t OC);
    void (*linear_backward)(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                            const float *weight, int64_t N, int64_t C, int64_t OC, int acc);
    /* the same linears when the weight is FP8-resident (backend/cpu/linear_fp8w.h):
     * out (N, OC) = act_quant(inp (N, C)) · W8ᵀ block-scaled + bias; forward only */
    void (*linear_fp8w_forward)(float *out, const float *inp, const ds_fp8w *w, const float *bias,
                                int64_t N, int64_t C, int64_t OC);
    /* the MoE row moves (backend/cpu/kernels.h, moe_rows.c): gather each
     * token-slot's row into expert-sorted order; weighted sum of the K expert
     * outputs back per token */
    void (*moe_permute)(float *xs, const float *x, const int32_t *order, int64_t N, int64_t K, int64_t H);
    void (*moe_combine_forward)(float *y, const float *e_out, const float *w, const int32_t *pos,
                                int64_t N, int64_t K, int64_t H);
    /* the MLA K/V split (backend/cpu/kernels.h, mla_kv.c): k = [k_nope ; k_pe]
     * per head, v from kv */
    void (*mla_kv_assemble)(float *k, float *v, const float *kv, const float *kva, int64_t N, int64_t nh,
                            int64_t dn, int64_t dv, int64_t rkv, int64_t dr);
    /* the RoPE cos/sin tables (T, h2) (backend/cpu/kernels.h, rope_tables.c) */
    void (*rope_tables)(float *cos_t, float *sin_t, const float *inv_freq, float attn_factor, int64_t T,
                        int64_t h2);
    /* ---- optimizer and balancing (train/; backend/cpu/optim.h) ----
     * sumsq: Σ x² over x (n), accumulated in double over a fixed block
     * decomposition (the same bits for any thread count); non-finite iff an
     * element is.  Synchronises (host value).
     * adamw: one AdamW step (train/adamw.h) over the segments seg[0..nseg)
     * ([host]) of the flat buffers p, g and the moments m, v (FP32, or BF16
     * when bf16_moments; moments indexed like p); the gradient is read as
     * g·gscale (the clip coefficient; 1 for none) and left unchanged.
     * t: the step number after this update (1 for the first).
     * bias_update: the aux-loss-free balancing step (train/balance.h),
     * bias[i] += gamma·sign(mean(load) − load[i]), load [host] (E).
     * linear_workspace: the bytes per thread the linear entries need for an
     * (N, C) x (OC, C)ᵀ GEMM and its backward (0 when none; the FP8 table's
     * quantized copies); the trainer's memory report. */
    double (*sumsq)(const float *x, int64_t n);
    void (*adamw)(float *p, const float *g, void *m, void *v, int bf16_moments, const ds_optim_seg *seg,
                  int64_t nseg, int64_t t, const ds_adamw_hparams *h, float gscale);
    void (*bias_update)(float *bias, const int64_t *load, int64_t E, float gamma);
    size_t (*linear_workspace)(int64_t N, int64_t C, int64_t OC);
    /* ---- decode and sampling (eng-infer; backend/cpu/decode.h, docs/engine.md §3.3) ---- */
    /* the latent cache: ckv (R,Lmax,rkv), kpe (R,Lmax,dr) rows pos..pos+n-1 of each
     * sequence from c (B*n,rkv) and the rotated rope tail of kva (B*n,rkv+dr).
     * pos_b, row_b [host] (B) or NULL: sequence b's tokens go to positions
     * pos_b[b].. (NULL: pos..) of cache row row_b[b] (NULL: b) */
    void (*kv_append)(float *ckv, float *kpe, const float *c, const float *kva, int64_t B, int64_t n, int64_t pos,
                      int64_t Lmax, int64_t rkv, int64_t dr, const int64_t *pos_b, const int64_t *row_b);
    /* absorbed MLA attention over the cache: att (B*n, nh*dv) from q (B*n,nh,dn+dr)
     * (rope applied) at positions pos..pos+n-1, kv_b (nh*(dn+dv), rkv) FP32;
     * pos_b, row_b as in kv_append (each sequence over its own row and prefix) */
    void (*mla_absorbed_attention)(float *att, const float *q, const float *ckv, const float *kpe,
                                   const float *kv_b, int64_t B, int64_t n, int64_t pos, int64_t Lmax, int64_t nh,
                                   int64_t dn, int64_t dv, int64_t dr, int64_t rkv, float scale,
                                   const int64_t *pos_b, const int64_t *row_b);
    /* dst (n,H) = rows idx[0..n) of src; idx [host] (a device backend uploads it) */
    void (*gather_rows)(float *dst, const float *src, const int32_t *idx, int64_t n, int64_t H);
    /* E4M3 1x128 tiles: q (R,C) codes, s (R,ceil(C/128)) scales of x (R,C), and back */
    void (*act_quant_1x128)(uint8_t *q, float *s, const float *x, int64_t R, int64_t C);
    void (*act_dequant_1x128)(float *x, const uint8_t *q, const float *s, int64_t R, int64_t C);
    /* out[host] (N) = argmax of each row of x (N,V), first on ties */
    void (*argmax_rows)(int32_t *out, const float *x, int64_t N, int64_t V);
    /* the sampler's distribution prob (V) of logits (V): temperature (≤ 0: one-hot
     * argmax), top-k (0 off), top-p (≥ 1 off); scratch (V) */
    void (*sample_probs)(float *prob, int32_t *scratch, const float *logits, int64_t V, double temperature,
                         int64_t top_k, double top_p);
    /* the token drawn from prob (V) with u in [0,1) from the host RNG */
    int32_t (*sample_pick)(const float *prob, int64_t V, double u);
    /* the sampler's penalties, in place on logits (V) at n distinct ids [host] < V, with
     * pre, rep, post [host] (n): x = x + pre; x = x > 0 ? x / rep : x * rep; x = x + post
     * (logit_bias, then the repetition penalty, then presence/frequency: vLLM's order) */
    void (*logits_adjust)(float *logits, int64_t V, const int32_t *ids, const float *pre, const float *rep,
                          const float *post, int64_t n);
    /* min-p on prob (V) in place: zero each p < min_p * max(prob), renormalise the rest */
    void (*probs_min_p)(float *prob, int64_t V, double min_p);
    /* ---- engine, model side (docs/engine.md steps 4-6; backend/cpu/kernels.h,
     * backward.h, memory.c).  [dev] pointers are memory of this table (its
     * alloc), [host] host memory; host_visible = 1: the two coincide. */
    int host_visible;
    void *(*alloc)(size_t bytes);                 /* 64-byte aligned, zero-filled; NULL + ds_err on failure */
    void (*free)(void *p);
    void (*memset)(void *dst, int byte, size_t bytes);
    void (*copy_h2d)(void *dst, const void *src, size_t bytes);
    void (*copy_d2h)(void *dst, const void *src, size_t bytes);   /* dst valid on return */
    void (*copy_d2d)(void *dst, const void *src, size_t bytes);
    void (*sync)(void);
    /* load count + expert-sorted slots: counts (E), offsets (E+1), order, pos (N*K) of idx (N,K) */
    void (*moe_sort)(int64_t *counts, int64_t *offsets, int32_t *order, int32_t *pos, const int32_t *idx,
                     int64_t N, int64_t K, int64_t E);
    /* per expert e with counts[e] rows at offsets[e] of the expert-sorted rows:
     * out (R,OC) rows = inp (R,C) rows · W_eᵀ, through self->linear_forward, or
     * self->linear_fp8w_forward where w8 && w8[e] (FP8/BF16-resident);
     * w, w8 [host] arrays of E [dev] weights (w8 may be NULL); counts, offsets [host] */
    void (*grouped_linear_forward)(const struct ds_ops *self, float *out, const float *inp, const float *const *w,
                                   const ds_fp8w *const *w8, const int64_t *counts, const int64_t *offsets, int64_t E,
                                   int64_t C, int64_t OC);
    /* out (N,C) = widen(wte[ids[n]]) of a BF16 table wte (V,C) */
    void (*embedding_bf16_forward)(float *out, const int32_t *ids, const uint16_t *wte, int64_t N, int64_t C);
    /* backward of grouped_linear_forward (FP32 weights): per expert through
     * self->linear_backward: dinp rows written (acc 0) or added (acc 1),
     * dw[e] (OC,C) += */
    void (*grouped_linear_backward)(const struct ds_ops *self, float *dinp, float *const *dw, const float *dout,
                                    const float *inp, const float *const *w, const int64_t *counts,
                                    const int64_t *offsets, int64_t E, int64_t C, int64_t OC, int acc);
    /* backward of mla_kv_assemble: dkv (N,nh,dn+dv) written, dkva (N,rkv+dr)
     * written (latent part 0, k_pe part = Σ over heads) from dk (N,nh,dn+dr), dv (N,nh,dv) */
    void (*mla_kv_assemble_backward)(float *dkv, float *dkva, const float *dk, const float *dv, int64_t N,
                                     int64_t nh, int64_t dn, int64_t dv_, int64_t rkv, int64_t dr);
    /* backward of moe_permute: dx (N,H) += Σ_k dxs[pos[n,k]] (dxs (N*K,H)) */
    void (*moe_permute_backward)(float *dx, const float *dxs, const int32_t *pos, int64_t N, int64_t K, int64_t H);
    /* balance losses of one sequence (balance_loss.h): dscores (T,E) +=
     * scale·dL/ds; coef (E), sel (T,E) scratch; scores (T,E), idx (T,K);
     * G device groups, M devices per token; terms [host] before the weights */
    void (*balance_loss)(float *dscores, float *coef, uint8_t *sel, const float *scores, const int32_t *idx,
                         int64_t T, int64_t E, int64_t K, int64_t G, int64_t M, int normalize, double a_exp,
                         double a_dev, double a_comm, double scale, ds_balance_terms *terms);
    /* ---- expert parallelism (dist/ep.c; backend/cpu/cast_bf16.c) ----
     * the BF16 wire format of the dispatch/combine: dst (n) = round-to-nearest-even
     * BF16 of src (n) (NaN stays a quiet NaN), and back (exact widening) */
    void (*cast_f32_bf16)(uint16_t *dst, const float *src, int64_t n);
    void (*cast_bf16_f32)(float *dst, const uint16_t *src, int64_t n);
    /* ---- continuous batching (rows-engine; backend/cpu/decode.h) ----
     * rope_forward for B sequences at their own positions: sequence b's token
     * i (x (B,T,nv,ld)) at position pos_b[b]+i; cos_t, sin_t the whole tables
     * from position 0; pos_b [host] (B) */
    void (*rope_pos_forward)(float *x, const float *cos_t, const float *sin_t, const int64_t *pos_b, int64_t B,
                             int64_t T, int64_t nv, int64_t ld, int64_t off, int64_t dr, int halves);
    /* ---- evaluation scoring (eval/lm_logits.c; backend/cpu/logprobs.h) ----
     * per row r < N of logits (N,V): logprob[host][r] = log-softmax at
     * targets[host][r] (in [0, V); the caller checks), in double;
     * greedy[host][r] = 1 when that target is the row's first maximum */
    void (*token_logprobs)(float *logprob, uint8_t *greedy, const float *logits, const int32_t *targets, int64_t N,
                           int64_t V);
    /* ---- CPU training speed (backend/cpu/matmul_bf16.h) ----
     * weights_epoch: the caller promises that the GEMM weights do not change
     * until it calls again with another epoch (>= 0), so the linear entries may
     * keep converted copies of them (BF16 GEMMs: converted once per epoch instead
     * of at every call); epoch < 0 ends the promise and frees the copies.
     * NULL where the table keeps nothing (call it only when set). */
    void (*weights_epoch)(int64_t epoch);
};

extern const struct ds_ops ds_ops_cpu;
extern const struct ds_ops ds_ops_ref;

#endif
