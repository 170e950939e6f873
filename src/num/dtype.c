/*
 * dtype.c — dtype traits table and scalar decoders (the references).
 */
#include "num/dtype.h"

#include <math.h>

const ds_dtype_traits ds_dtype_table[DS_DTYPE_COUNT] = {
    [DS_F32] = {"F32", 4, 1},      [DS_F16] = {"F16", 2, 1},
    [DS_BF16] = {"BF16", 2, 1},    [DS_F8_E4M3] = {"F8_E4M3", 1, 1},
    [DS_F8_E5M2] = {"F8_E5M2", 1, 1}, [DS_F64] = {"F64", 8, 1},
    [DS_I8] = {"I8", 1, 0},        [DS_U8] = {"U8", 1, 0},
    [DS_I16] = {"I16", 2, 0},      [DS_I32] = {"I32", 4, 0},
    [DS_I64] = {"I64", 8, 0},      [DS_BOOL] = {"BOOL", 1, 0},
};

int ds_dtype_from_st_name(const char *name) {
    for (int i = 0; i < DS_DTYPE_COUNT; i++)
        if (strcmp(ds_dtype_table[i].st_name, name) == 0) return i;
    return -1;
}

float ds_f16_to_f32(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    float v;
    if (e == 0) v = ldexpf((float)m, -24);
    else if (e == 31) v = m ? NAN : INFINITY;
    else v = ldexpf((float)(m | 1024), e - 25);
    return s ? -v : v;
}

uint16_t ds_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t s = (u >> 16) & 0x8000;
    uint32_t a = u & 0x7fffffff;
    if (a > 0x7f800000) return (uint16_t)(s | 0x7e00);          /* NaN */
    if (a >= 0x477ff000) return (uint16_t)(s | 0x7c00);         /* overflow to inf (RNE) */
    if (a < 0x38800000) {                                      /* subnormal or zero */
        float af;
        memcpy(&af, &a, 4);
        float q = af * 16777216.0f;                            /* units of 2^-24 */
        uint32_t r = (uint32_t)nearbyintf(q);                  /* RNE under default mode */
        return (uint16_t)(s | r);
    }
    uint32_t e = ((a >> 23) - 112) << 10, m = a & 0x7fffff;
    uint32_t h = e | (m >> 13);
    uint32_t rem = m & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(s | h);
}

/* E4M3 "fn": bias 7, no infinities, S.1111.111 is NaN, max 448. */
float ds_e4m3_to_f32(uint8_t v) {
    int s = v >> 7, e = (v >> 3) & 15, m = v & 7;
    float r;
    if (e == 15 && m == 7) return NAN;
    if (e == 0) r = ldexpf((float)m, -9);
    else r = ldexpf((float)(8 + m), e - 10);
    return s ? -r : r;
}

/* E5M2: bias 15, IEEE-like with inf and NaN, max 57344. */
float ds_e5m2_to_f32(uint8_t v) {
    int s = v >> 7, e = (v >> 2) & 31, m = v & 3;
    float r;
    if (e == 31) r = m ? NAN : INFINITY;
    else if (e == 0) r = ldexpf((float)m, -16);
    else r = ldexpf((float)(4 + m), e - 17);
    return s ? -r : r;
}
