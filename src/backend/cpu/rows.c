/*
 * rows.c — row gather and the 1x128 activation quantize/dequantize entries
 * (decode.h): the last rows of each sequence for the head, the expert-parallel
 * regrouping of rows (dist/ep.c), and the FP8 round trip of the cached
 * latent when kv_b is FP8-resident.
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
#pragma omp parallel for schedule(static) if (n * H > 65536)
    for (int64_t r = 0; r < n; r++) memcpy(dst + r * H, src + (int64_t)idx[r] * H, (size_t)H * sizeof(float));
}
