/*
 * mla.c — Multi-head Latent Attention (doc §4.2, §4.5; mla.h): the q path,
 * the latent kv_a projection and its norm, RoPE, o_proj and the residual are
 * one code; the attention core is either the expanded training form or the
 * absorbed form over the latent cache (infer.h has the algebra).
 */
#include "model/mla.h"

/* a block's linear W (FP32 p->W or FP8-resident p->W8) */
#define LIN(out, inp, W, bias, N_, C_, OC_) ds_linear_any(ops, out, inp, p->W, p->W##8, bias, N_, C_, OC_)

void ds_mla_forward(ds_block_acts *a, const float *inp, const ds_block *p, const ds_model *m,
                    const struct ds_ops *ops, const float *cos_t, const float *sin_t, int64_t B, int64_t T,
                    const ds_mla_cache *kv) {
    const ds_config *c = &m->cfg;
    const int64_t N = B * T, H = c->hidden_size;
    const int64_t nh = c->num_attention_heads, dq = ds_config_qk_head_dim(c), dn = c->qk_nope_head_dim;
    const int64_t dv = c->v_head_dim, dr = c->qk_rope_head_dim, rq = c->q_lora_rank, rkv = c->kv_lora_rank;
    const float eps = (float)c->rms_norm_eps, eps_lat = 1e-6f; /* latent norms: HF default eps (doc §1.2) */
    const int halves = !c->rope_interleave;

    ops->rmsnorm_forward(a->ln1, a->ln1_rstd, inp, p->in_norm, N, H, H, H, eps);
    if (rq > 0) {
        LIN(a->qa, a->ln1, q_a, p->q_a_bias, N, H, rq);
        ops->rmsnorm_forward(a->qa_n, a->qa_rstd, a->qa, p->q_a_norm, N, rq, rq, rq, eps_lat);
        LIN(a->q, a->qa_n, q_b, NULL, N, rq, nh * dq);
        ds_fp8_act_store(ops, &a->fp8_qa_n, a->qa_n, N, rq); /* FP8 cache (no-op when off) */
    } else {
        LIN(a->q, a->ln1, q_proj, NULL, N, H, nh * dq);
    }
    /* q per head = [nope | rope]; each sequence at its own positions when kv->pos_b */
    if (kv && kv->pos_b) ops->rope_pos_forward(a->q, cos_t, sin_t, kv->pos_b, B, T, nh, dq, dn, dr, halves);
    else ops->rope_forward(a->q, cos_t, sin_t, B, T, nh, dq, dn, dr, halves);
    LIN(a->kva, a->ln1, kv_a, p->kv_a_bias, N, H, rkv + dr); /* [latent | k_pe] */
    ds_fp8_act_store(ops, &a->fp8_ln1, a->ln1, N, H);
    ops->rmsnorm_forward(a->ckv, a->ckv_rstd, a->kva, p->kv_a_norm, N, rkv, rkv, rkv + dr, eps_lat);
    if (kv && kv->pos_b) ops->rope_pos_forward(a->kva, cos_t, sin_t, kv->pos_b, B, T, 1, rkv + dr, rkv, dr, halves);
    else ops->rope_forward(a->kva, cos_t, sin_t, B, T, 1, rkv + dr, rkv, dr, halves);
    if (!kv) {
        /* expanded: per head k = [W_UK c ; k_pe], v = W_UV c, causal attention over the T tokens */
        LIN(a->kv, a->ckv, kv_b, NULL, N, rkv, nh * (dn + dv)); /* per head [k_nope | v] */
        ds_fp8_act_store(ops, &a->fp8_ckv, a->ckv, N, rkv);
        ops->mla_kv_assemble(a->k, a->v, a->kv, a->kva, N, nh, dn, dv, rkv, dr);
        ops->attention_forward(a->att, a->lse, a->q, a->k, a->v, B, T, nh, dq, dv, m->softmax_scale);
    } else {
        /* absorbed over the cache.  With an FP8-resident kv_b the expanded form
         * runs kv_b on the 1x128-quantized latent; caching the latent after the
         * same round trip makes the absorbed attention compute what the FP8
         * forward computes (up to FP32 rounding).  (DeepSeek's absorb mode
         * caches the unquantized latent: a difference of one activation
         * quantization.) */
        if (p->kv_b8 && p->kv_b8->q && a->lat8.q) { /* FP8, not BF16 */
            ops->act_quant_1x128(a->lat8.q, a->lat8.s, a->ckv, N, rkv);
            ops->act_dequant_1x128(a->ckv, a->lat8.q, a->lat8.s, N, rkv);
        }
        ops->kv_append(kv->ckv, kv->kpe, a->ckv, a->kva, B, T, kv->pos, kv->Lmax, rkv, dr, kv->pos_b, kv->rows);
        ops->mla_absorbed_attention(a->att, a->q, kv->ckv, kv->kpe, p->kv_b, B, T, kv->pos, kv->Lmax, nh, dn, dv, dr,
                                    rkv, m->softmax_scale, kv->pos_b, kv->rows);
    }
    LIN(a->attn_proj, a->att, o_proj, p->o_bias, N, nh * dv, H);
    ops->residual_forward(a->x_mid, inp, a->attn_proj, N * H);
}
