/*
 * decode.h — the decode and sampling entries of the ops table (backend/ops.h,
 * docs/engine.md §3.3): the latent cache append and the absorbed MLA attention
 * (mla_decode.c), row gather and the 1x128 activation round trip (rows.c),
 * argmax and the sampler's logits post-processing (sampling.c).  Each has a
 * scalar reference (`*_ref`) for ds_ops_ref.
 */
#ifndef DS_CPU_DECODE_H
#define DS_CPU_DECODE_H

#include <stdint.h>

/* ckv (R, Lmax, rkv), kpe (R, Lmax, dr): rows p..p+n-1 of cache row r of
 * each sequence b get c[b*n + i] (rkv) and the rope tail kva[b*n + i][rkv..rkv+dr)
 * (rows of kva are rkv + dr wide); p = pos_b[b] (pos_b NULL: pos), r = row_b[b]
 * (row_b NULL: b); pos_b, row_b on the host. */
void ds_kv_append(float *ckv, float *kpe, const float *c, const float *kva, int64_t B, int64_t n, int64_t pos,
                  int64_t Lmax, int64_t rkv, int64_t dr, const int64_t *pos_b, const int64_t *row_b);
void ds_kv_append_ref(float *ckv, float *kpe, const float *c, const float *kva, int64_t B, int64_t n, int64_t pos,
                      int64_t Lmax, int64_t rkv, int64_t dr, const int64_t *pos_b, const int64_t *row_b);

/* Absorbed MLA attention (infer.h, doc §4.5) for B sequences of n queries at
 * positions p..p+n-1, reading cache positions 0..p+i (causal) of cache row r
 * (p, r of sequence b as in ds_kv_append: pos_b[b] or pos, row_b[b] or b):
 *   q (B*n, nh, dn+dr) per head [q_nope | q_pe], rope applied;
 *   kv_b (nh*(dn+dv), rkv): per head W_UK_h (dn rows) then W_UV_h (dv rows);
 *   q_abs = W_UK_hᵀ q_nope; s_j = (q_abs·c_j + q_pe·kpe_j)·scale; x = Σ_j softmax(s)_j c_j;
 *   att (B*n, nh*dv): o_h = W_UV_h x. */
void ds_mla_absorbed_attention(float *att, const float *q, const float *ckv, const float *kpe, const float *kv_b,
                               int64_t B, int64_t n, int64_t pos, int64_t Lmax, int64_t nh, int64_t dn, int64_t dv,
                               int64_t dr, int64_t rkv, float scale, const int64_t *pos_b, const int64_t *row_b);
void ds_mla_absorbed_attention_ref(float *att, const float *q, const float *ckv, const float *kpe, const float *kv_b,
                                   int64_t B, int64_t n, int64_t pos, int64_t Lmax, int64_t nh, int64_t dn,
                                   int64_t dv, int64_t dr, int64_t rkv, float scale, const int64_t *pos_b,
                                   const int64_t *row_b);

/* rope_forward (kernels.h) for B sequences at their own positions: sequence
 * b's tokens x[b] (T, nv, ld) at positions pos_b[b]..pos_b[b]+T-1 of the
 * tables cos_t, sin_t (from position 0, h2 = dr/2 per row); pos_b host. */
void ds_rope_pos_forward(float *x, const float *cos_t, const float *sin_t, const int64_t *pos_b, int64_t B, int64_t T,
                         int64_t nv, int64_t ld, int64_t off, int64_t dr, int halves);
void ds_rope_pos_forward_ref(float *x, const float *cos_t, const float *sin_t, const int64_t *pos_b, int64_t B,
                             int64_t T, int64_t nv, int64_t ld, int64_t off, int64_t dr, int halves);

/* dst[r] = src[idx[r]] for r < n, rows of H floats (idx on the host here). */
void ds_gather_rows(float *dst, const float *src, const int32_t *idx, int64_t n, int64_t H);
void ds_gather_rows_ref(float *dst, const float *src, const int32_t *idx, int64_t n, int64_t H);
/* out[r] = the index of the largest x[r, :] (the first one on ties), r < N. */
void ds_argmax_rows(int32_t *out, const float *x, int64_t N, int64_t V);
void ds_argmax_rows_ref(int32_t *out, const float *x, int64_t N, int64_t V);
/* The sampler's distribution (infer/sampling.c): prob (V) from logits (V)
 * after temperature, top-k (0: off), top-p (≥ 1: off) and renormalisation,
 * in double; temperature ≤ 0: one-hot on the argmax.  scratch (V) ints. */
void ds_sample_probs(float *prob, int32_t *scratch, const float *logits, int64_t V, double temperature,
                     int64_t top_k, double top_p);
/* The token drawn from prob (V) with u in [0, 1): the first i whose
 * cumulative mass exceeds u·Σprob (tokens of probability 0 skipped). */
int32_t ds_sample_pick(const float *prob, int64_t V, double u);
/* The sampler's penalties on logits (V) at n distinct ids (host): x + pre[i],
 * then divided by rep[i] when positive, multiplied when not, then + post[i]. */
void ds_logits_adjust(float *logits, int64_t V, const int32_t *ids, const float *pre, const float *rep,
                      const float *post, int64_t n);
/* min-p: prob[i] < min_p * max(prob) set to 0, the rest renormalised (sum in double). */
void ds_probs_min_p(float *prob, int64_t V, double min_p);

#endif
