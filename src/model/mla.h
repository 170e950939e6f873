/*
 * mla.h — the MLA attention sublayer of a decoder block (mla.c, doc §4.2,
 * §4.5), used by the training forward and by decode through
 * ds_model_forward_ex.  Internal to src/model/.
 */
#ifndef DS_MLA_H
#define DS_MLA_H

#include "model/model.h"

/* One cache layer and where the new tokens go. */
typedef struct {
    float *ckv, *kpe;     /* (B, Lmax, rkv), (B, Lmax, dr) */
    int64_t pos, Lmax;    /* the tokens sit at positions pos..pos+T-1 */
    const int64_t *pos_b; /* or [host] (B) sequence b's at pos_b[b]..; NULL: pos */
    const int64_t *rows;  /* [host] (B) sequence b's cache row; NULL: b */
} ds_mla_cache;

/* a->x_mid (B*T, H) = inp + o_proj(MLA(RMSNorm(inp))) for B sequences of T
 * tokens; cos_t/sin_t are the tables' rows of the first token's position
 * (of position 0 when kv->pos_b is set: rope_pos_forward picks each
 * sequence's rows).
 *   kv == NULL: the expanded (training) form: kv_b -> mla_kv_assemble ->
 *               attention_forward over the T tokens, activations kept for the
 *               backward;
 *   kv set:     the cached form: the normalised latent (FP8 round trip when
 *               kv_b is FP8-resident) and the rotated k_pe go to kv_append at
 *               kv->pos, then mla_absorbed_attention reads the cache. */
void ds_mla_forward(ds_block_acts *a, const float *inp, const ds_block *p, const ds_model *m,
                    const struct ds_ops *ops, const float *cos_t, const float *sin_t, int64_t B, int64_t T,
                    const ds_mla_cache *kv);

#endif
