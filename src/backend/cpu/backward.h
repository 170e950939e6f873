/*
 * backward.h — the FP32 backward ops (one file per op: <op>_backward.c,
 * cross_entropy.c).  Same conventions as kernels.h: outputs first, then
 * inputs, parameters, sizes; every fast kernel has a scalar `*_ref` oracle
 * (tests/test_backward_ops.c checks the refs against double-precision finite
 * differences and the fast versions against the refs).
 *
 * Accumulation rules: parameter gradients (dweight, dbias) are always added
 * (+=).  Input gradients say per op whether they are written or added.
 */
#ifndef DS_KERNELS_BACKWARD_H
#define DS_KERNELS_BACKWARD_H

#include <stdint.h>

#include "backend/cpu/kernels.h"

/* ---- matmul_backward.c: out = inp · weightᵀ + bias ----------------------
 * dinp (N, C) = dout · weight, written (acc = 0) or added (acc = 1);
 * dinp may be NULL.  dweight (OC, C) += doutᵀ · inp; dbias (OC) += Σ_n dout
 * (NULL: none).  dout (N, OC), inp (N, C), weight (OC, C). */
void ds_matmul_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                            const float *weight, int64_t N, int64_t C, int64_t OC, int acc);
void ds_matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, int64_t N, int64_t C, int64_t OC, int acc);

/* ---- rmsnorm_backward.c: y = w ⊙ x · rstd, rstd = 1/sqrt(mean(x²)+eps) ---
 * dinp (N, C) += rstd·(w⊙dy − x̂·mean(w⊙dy⊙x̂)), x̂ = x·rstd (added);
 * dweight (C) += Σ_n dy ⊙ x̂.  rstd (N) from the forward, or NULL to
 * recompute it from inp with eps.  Row strides: ld_din, ld_dout, ld_in. */
void ds_rmsnorm_backward_ref(float *dinp, float *dweight, const float *dout, const float *inp,
                             const float *weight, const float *rstd, int64_t N, int64_t C, int64_t ld_din,
                             int64_t ld_dout, int64_t ld_in, float eps);
void ds_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                         const float *rstd, int64_t N, int64_t C, int64_t ld_din, int64_t ld_dout, int64_t ld_in,
                         float eps);

/* ---- rope_backward.c: the rotation is orthogonal, so the gradient is the
 * inverse rotation (angle −pos·θ) applied in place to dx; same layout and
 * arguments as ds_rope_forward. */
void ds_rope_backward_ref(float *dx, const float *cos_t, const float *sin_t, int64_t B, int64_t T, int64_t nv,
                          int64_t ld, int64_t off, int64_t dr, int halves);
void ds_rope_backward(float *dx, const float *cos_t, const float *sin_t, int64_t B, int64_t T, int64_t nv,
                      int64_t ld, int64_t off, int64_t dr, int halves);

/* ---- attention_backward.c: causal softmax attention -----------------------
 * dq (B,T,NH,DQ), dk (B,T,NH,DQ), dv (B,T,NH,DV) written; dout, out
 * (B,T,NH,DV); lse (B,NH,T) from the forward; q, k, v as in the forward.
 * With P = exp(scale·q·kᵀ − lse), Δ_i = dout_i·out_i:
 *   dv_j = Σ_i P_ij dout_i,  dS_ij = P_ij (dout_i·v_j − Δ_i),
 *   dq_i = scale Σ_j dS_ij k_j,  dk_j = scale Σ_i dS_ij q_i. */
void ds_attention_backward_ref(float *dq, float *dk, float *dv, const float *dout, const float *out,
                               const float *lse, const float *q, const float *k, const float *v, int64_t B,
                               int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale);
void ds_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                           const float *q, const float *k, const float *v, int64_t B, int64_t T, int64_t NH,
                           int64_t DQ, int64_t DV, float scale);

/* ---- swiglu_backward.c: out = silu(g) ⊙ u --------------------------------
 * dgate, dup (N, I) written; dout, gate, up (N, I). */
void ds_swiglu_backward_ref(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                            int64_t N, int64_t I);
void ds_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, int64_t N,
                        int64_t I);

/* ---- embedding_backward.c: dwte[ids[n], :] += dout[n, :] -----------------
 * dwte (V, C), dout (BT, C), ids (BT). */
void ds_embedding_backward_ref(float *dwte, const float *dout, const int32_t *ids, int64_t BT, int64_t C);
void ds_embedding_backward(float *dwte, const float *dout, const int32_t *ids, int64_t BT, int64_t C);

/* ---- cross_entropy.c: loss_n = logsumexp(logits_n) − logits_n[target_n] --
 * Rows whose target equals `ignore` contribute nothing.  Returns Σ_n loss_n
 * over the counted rows (summed in double, in row order); losses (N) gets
 * every row's loss (0 on ignored rows; required by the fast version, may be
 * NULL for the reference); *count (may be NULL) the number of counted rows.
 * dlogits (N, V) (may be NULL, may alias logits) = dscale·(softmax − onehot)
 * on counted rows, 0 on ignored rows (written).  Targets outside [0, V) other
 * than `ignore` are the caller's to reject. */
double ds_cross_entropy_ref(float *dlogits, float *losses, int64_t *count, const float *logits,
                            const int32_t *targets, int64_t N, int64_t V, int32_t ignore, float dscale);
double ds_cross_entropy(float *dlogits, float *losses, int64_t *count, const float *logits, const int32_t *targets,
                        int64_t N, int64_t V, int32_t ignore, float dscale);

/* ---- moe_backward.c ---------------------------------------------------------
 * Router: weights w (N, K) were computed from the unbiased scores s (N, E) of
 * the selected experts idx (N, K): w_k = scaling·s_{idx_k} (/ (Σ_k s_{idx_k}
 * + 1e-20) when norm_topk).  Given dw (N, K) and dscores (N, E) (gradient that
 * reaches the scores directly, e.g. from a balance loss; NULL = none), writes
 * dlogits (N, E) = ∂/∂z through sigmoid (s = σ(z)) or softmax over E.  The
 * correction bias only chose idx and gets no gradient. */
void ds_moe_route_backward_ref(float *dlogits, const float *dw, const float *dscores, const float *scores,
                               const int32_t *idx, const ds_route_params *p, int64_t N);
void ds_moe_route_backward(float *dlogits, const float *dw, const float *dscores, const float *scores,
                           const int32_t *idx, const ds_route_params *p, int64_t N);
/* Combine y[n] = Σ_k w[n,k]·e_out[pos[n,k]] (H wide): writes de_out
 * (N*K, H) in expert order and dw (N, K). */
void ds_moe_combine_backward_ref(float *de_out, float *dw, const float *dy, const float *e_out, const float *w,
                                 const int32_t *pos, int64_t N, int64_t K, int64_t H);
void ds_moe_combine_backward(float *de_out, float *dw, const float *dy, const float *e_out, const float *w,
                             const int32_t *pos, int64_t N, int64_t K, int64_t H);
/* Permute backward: dx[n] += Σ_k dxs[pos[n,k]]  (dx (N, H), dxs (N*K, H)),
 * k in order from 0 (both versions: same bits). */
void ds_moe_permute_backward_ref(float *dx, const float *dxs, const int32_t *pos, int64_t N, int64_t K, int64_t H);
void ds_moe_permute_backward(float *dx, const float *dxs, const int32_t *pos, int64_t N, int64_t K, int64_t H);

/* ---- grouped_linear.c: backward of ds_grouped_linear_forward (FP32 weights)
 * through self->linear_backward per expert: dinp rows written (acc 0) or
 * added (acc 1), dw[e] (OC, C) += (ops.h grouped_linear_backward). */
void ds_grouped_linear_backward(const struct ds_ops *self, float *dinp, float *const *dw, const float *dout,
                                const float *inp, const float *const *w, const int64_t *counts,
                                const int64_t *offsets, int64_t E, int64_t C, int64_t OC, int acc);
void ds_grouped_linear_backward_ref(const struct ds_ops *self, float *dinp, float *const *dw, const float *dout,
                                    const float *inp, const float *const *w, const int64_t *counts,
                                    const int64_t *offsets, int64_t E, int64_t C, int64_t OC, int acc);

/* ---- mla_kv.c: backward of ds_mla_kv_assemble: dkv (N, nh, dn+dv) written
 * [dk_nope | dv] per head; dkva (N, rkv+dr) written: latent part 0, k_pe part
 * = Σ_h dk_pe (h ascending). */
void ds_mla_kv_assemble_backward_ref(float *dkv, float *dkva, const float *dk, const float *dv, int64_t N,
                                     int64_t nh, int64_t dn, int64_t dv_, int64_t rkv, int64_t dr);
void ds_mla_kv_assemble_backward(float *dkv, float *dkva, const float *dk, const float *dv, int64_t N, int64_t nh,
                                 int64_t dn, int64_t dv_, int64_t rkv, int64_t dr);

#endif
