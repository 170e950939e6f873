/*
 * convert.h — bulk conversions between FP32 and the stored float types
 * (F32, F64, F16, BF16, F8_E4M3, F8_E5M2), one traits row per dtype (to FP32,
 * from FP32), for loading and writing checkpoints in any of them.  Rounding
 * is nearest-even; FP8 follows torch's `.to()` (E4M3 saturates, E5M2
 * overflows to inf; see num/fp8.h).  Scaled FP8 (block scales) is
 * num/quant.h's business, not this file's.
 */
#ifndef DS_CONVERT_H
#define DS_CONVERT_H

#include <stdint.h>
#include "num/dtype.h"

typedef void (*ds_to_f32_fn)(float *dst, const void *src, int64_t n);
typedef void (*ds_from_f32_fn)(void *dst, const float *src, int64_t n);

typedef struct {
    ds_to_f32_fn to_f32;
    ds_from_f32_fn from_f32;
} ds_convert_traits;

/* NULL for a dtype that is not a float type. */
const ds_convert_traits *ds_convert_traits_of(ds_dtype t);
/* dst (n elements of dtype dt) = src (n of st), through FP32 (F64 -> F64 is
 * a copy).  Returns 0, or -1 with ds_err set for a non-float dtype. */
int ds_convert(void *dst, ds_dtype dt, const void *src, ds_dtype st, int64_t n);

#endif
