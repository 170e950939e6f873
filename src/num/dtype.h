/*
 * dtype.h — element types and their traits; scalar conversions.
 * Fast (vector) conversions live in backend/cpu/; these are the references.
 */
#ifndef DS_DTYPE_H
#define DS_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum {
    DS_F32 = 0, DS_F16, DS_BF16, DS_F8_E4M3, DS_F8_E5M2, DS_F64,
    DS_I8, DS_U8, DS_I16, DS_I32, DS_I64, DS_BOOL, DS_DTYPE_COUNT
} ds_dtype;

typedef struct {
    const char *st_name;   /* safetensors name: "F32", "BF16", "F8_E4M3", ... */
    size_t size;           /* bytes per element */
    int is_float;
} ds_dtype_traits;

extern const ds_dtype_traits ds_dtype_table[DS_DTYPE_COUNT];
/* Returns -1 for an unknown name. */
int ds_dtype_from_st_name(const char *name);

static inline float ds_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
/* Round to nearest even; NaN stays NaN (quiet). */
static inline uint16_t ds_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}
float ds_f16_to_f32(uint16_t h);
uint16_t ds_f32_to_f16(float f);
/* FP8 decode (reference); encode lives in num/fp8.h. */
float ds_e4m3_to_f32(uint8_t v);
float ds_e5m2_to_f32(uint8_t v);

#endif
