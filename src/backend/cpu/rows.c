/*
 * rows.c — row gather and the 1x128 activation quantize/dequantize entries
 * (decode.h): the last rows of each sequence for the head, and the FP8 round
 * trip of the cached latent when kv_b is FP8-resident.
 */
#include "backend/cpu/decode.h"

#include <string.h>

#include "base/base.h"
#include "num/quant.h"

void ds_gather_rows_ref(float *dst, const float *src, const int32_t *idx, int64_t n, int64_t H) {
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < H; j++) dst[r * H + j] = src[(int64_t)idx[r] * H + j];
}

void ds_gather_rows(float *dst, const float *src, const int32_t *idx, int64_t n, int64_t H) {
    for (int64_t r = 0; r < n; r++) memcpy(dst + r * H, src + (int64_t)idx[r] * H, (size_t)H * sizeof(float));
}

void ds_act_quant_1x128(uint8_t *q, float *s, const float *x, int64_t R, int64_t C) {
    if (R <= 0 || C <= 0) return;
    ds_quant_opts o = ds_quant_defaults(DS_QUANT_TILE_1x128);
    DS_ASSERT(ds_quantize(q, s, x, R, C, &o) == 0);
}

void ds_act_dequant_1x128(float *x, const uint8_t *q, const float *s, int64_t R, int64_t C) {
    if (R <= 0 || C <= 0) return;
    DS_ASSERT(ds_dequantize(x, q, s, R, C, DS_FP8_E4M3, DS_QUANT_TILE_1x128) == 0);
}
