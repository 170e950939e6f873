/*
 * kv_cache.c — the MLA latent KV cache (DESIGN.md "MLA"): per layer and
 * position only the normalised latent c (kv_lora_rank) and the rotated rope
 * key k_pe (qk_rope_head_dim), one allocation sized for max_len positions.
 *   mem = [layer 0: ckv (B, max_len, rkv) | kpe (B, max_len, dr)] [layer 1 ...]
 */
#include "model/kv_cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "model/layout.h"
#include "model/model.h"

int ds_kv_cache_create(ds_kv_cache *kc, int64_t nlayers, int64_t B, int64_t max_len, int64_t rkv, int64_t dr) {
    return ds_kv_cache_create_on(kc, NULL, nlayers, B, max_len, rkv, dr);
}

int ds_kv_cache_create_on(ds_kv_cache *kc, const struct ds_ops *dev, int64_t nlayers, int64_t B, int64_t max_len,
                          int64_t rkv, int64_t dr) {
    memset(kc, 0, sizeof *kc);
    if (nlayers <= 0 || B <= 0 || max_len <= 0 || rkv <= 0 || dr < 0)
        return ds_err("kv cache: bad sizes (layers %lld, batch %lld, length %lld)", (long long)nlayers, (long long)B,
                      (long long)max_len);
    int64_t per_l, bytes;
    if (__builtin_mul_overflow(B, max_len, &per_l) || __builtin_mul_overflow(per_l, rkv + dr, &per_l) ||
        __builtin_mul_overflow(per_l, nlayers, &bytes) || __builtin_mul_overflow(bytes, (int64_t)sizeof(float), &bytes))
        bytes = -1;
    char what[96];
    snprintf(what, sizeof what, "the KV cache for %lld x %lld positions", (long long)B, (long long)max_len);
    if (ds_mem_check(bytes, what)) return -1;
    kc->B = B;
    kc->max_len = max_len;
    kc->nlayers = nlayers;
    kc->rkv = rkv;
    kc->dr = dr;
    size_t per = (size_t)(B * max_len) * (size_t)(rkv + dr);
    kc->dev = dev;
    if (dev) {
        kc->mem = ds_model_mem_alloc(dev, (size_t)nlayers * per * sizeof(float)); /* zero-filled */
        if (!kc->mem) return -1;
    } else {
        kc->mem = ds_aligned_alloc((size_t)nlayers * per * sizeof(float) + 64);
        memset(kc->mem, 0, (size_t)nlayers * per * sizeof(float));
    }
    kc->ckv = ds_calloc((size_t)nlayers, sizeof(float *));
    kc->kpe = ds_calloc((size_t)nlayers, sizeof(float *));
    for (int64_t l = 0; l < nlayers; l++) {
        kc->ckv[l] = kc->mem + (size_t)l * per;
        kc->kpe[l] = kc->ckv[l] + (size_t)(B * max_len * rkv);
    }
    return 0;
}

void ds_kv_cache_free(ds_kv_cache *kc) {
    if (kc->dev) ds_model_mem_free(kc->dev, kc->mem);
    else ds_free_aligned(kc->mem);
    free(kc->ckv);
    free(kc->kpe);
    memset(kc, 0, sizeof *kc);
}
