/*
 * act_quant.c — the activation FP8 round trip of the FP8 cache and the
 * resident decode (ops entries act_quant_1x128 / act_dequant_1x128): E4M3
 * codes with one FP32 scale per 1x128 tile along the row, DeepSeek's
 * act_quant (num/quant.h: s = max(amax, 1e-4)/448, saturating).  The num/
 * codec is already the scalar-exact code, so cpu and ref share it.
 */
#include "backend/cpu/kernels.h"

#include "base/base.h"
#include "num/quant.h"

void ds_act_quant_1x128(uint8_t *q, float *s, const float *x, int64_t R, int64_t C) {
    if (R <= 0 || C <= 0) return;
    ds_quant_opts o = ds_quant_defaults(DS_QUANT_TILE_1x128);
    DS_ASSERT(ds_quantize(q, s, x, R, C, &o) == 0);
}

void ds_act_dequant_1x128(float *x, const uint8_t *q, const float *s, int64_t R, int64_t C) {
    if (R <= 0 || C <= 0) return;
    DS_ASSERT(ds_dequantize(x, q, s, R, C, DS_FP8_E4M3, DS_QUANT_TILE_1x128) == 0);
}
