/*
 * cast_bf16.c — the BF16 wire format of the expert-parallel dispatch and
 * combine (ops entries cast_f32_bf16 / cast_bf16_f32, dist/ep.c): FP32 to
 * BF16 rounds to nearest even (NaN stays a quiet NaN), BF16 to FP32 is the
 * exact widening (num/dtype.h).  Elementwise, so the threaded versions give
 * the references' bits.
 */
#include "backend/cpu/kernels.h"

#include "num/dtype.h"

void ds_cast_f32_bf16_ref(uint16_t *dst, const float *src, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = ds_f32_to_bf16(src[i]);
}

void ds_cast_bf16_f32_ref(float *dst, const uint16_t *src, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = ds_bf16_to_f32(src[i]);
}

void ds_cast_f32_bf16(uint16_t *dst, const float *src, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) dst[i] = ds_f32_to_bf16(src[i]);
}

void ds_cast_bf16_f32(float *dst, const uint16_t *src, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) dst[i] = ds_bf16_to_f32(src[i]);
}
