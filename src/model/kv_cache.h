/*
 * kv_cache.h — the MLA latent KV cache (kv_cache.c, DESIGN.md "MLA"): per
 * layer and position only the normalised latent c (kv_lora_rank) and the
 * rotated rope key k_pe (qk_rope_head_dim), one allocation sized for max_len
 * positions.  ds_model_forward_ex appends to it and reads it (model.h).
 */
#ifndef DS_KV_CACHE_H
#define DS_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

struct ds_ops;
typedef struct {
    int64_t B, max_len, nlayers, rkv, dr;
    const struct ds_ops *dev; /* whose memory mem is (NULL: host) */
    float *mem;      /* one allocation */
    float **ckv;     /* per layer (B, max_len, rkv) normalised latent */
    float **kpe;     /* per layer (B, max_len, dr) rotated rope key */
} ds_kv_cache;
int ds_kv_cache_create(ds_kv_cache *kc, int64_t nlayers, int64_t B, int64_t max_len, int64_t rkv, int64_t dr);
/* The same in the memory of table dev (its alloc, zero-filled; NULL: host). */
int ds_kv_cache_create_on(ds_kv_cache *kc, const struct ds_ops *dev, int64_t nlayers, int64_t B, int64_t max_len,
                          int64_t rkv, int64_t dr);
void ds_kv_cache_free(ds_kv_cache *kc);
/* Bytes per token per layer (for messages and docs). */
static inline size_t ds_kv_cache_token_bytes(const ds_kv_cache *kc) { return (size_t)(kc->rkv + kc->dr) * sizeof(float); }

#endif
