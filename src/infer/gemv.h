/*
 * gemv.h — the few-row matmul of decode steps (gemv.c).
 */
#ifndef DS_GEMV_H
#define DS_GEMV_H

#include <stdint.h>

#define DS_GEMV_MAX_ROWS 4

/* out (N, OC) = inp (N, C) · weight (OC, C)ᵀ + bias (OC or NULL); any N, meant for N ≤ DS_GEMV_MAX_ROWS */
void ds_gemv_forward(float *out, const float *inp, const float *weight, const float *bias, int64_t N, int64_t C,
                     int64_t OC);

#endif
