/*
 * fp8.h — FP8 codecs: E4M3 ("fn": finite only, max 448) and E5M2 (IEEE-like, max
 * 57344).  Decode by 256-entry table; encode by round-to-nearest-even with
 * subnormals, signed NaN and one of two overflow rules:
 *
 *   DS_FP8_SAT     clamp to +-max before rounding (DeepSeek's casts:
 *                  x.clamp(-448, 448).to(e4m3)); +-inf -> +-max; NaN -> NaN.
 *   DS_FP8_NONSAT  OCP non-saturating: a value that rounds beyond max (and
 *                  +-inf) becomes NaN in E4M3 (no inf there) and +-inf in E5M2.
 *
 * torch 2.15 `.to(torch.float8_e4m3fn)` saturates (inf -> 448 too) and
 * `.to(torch.float8_e5m2)` does not (overflow -> inf): DS_FP8_TORCH picks that
 * rule per format, and the fixtures in tests/fixtures/fp8 pin it bit for bit.
 * NaN encodes as S.1111.111 (E4M3) / S.11111.11 (E5M2), keeping its sign.
 * The scalar decoders in num/dtype.h are the references for the tables.
 */
#ifndef DS_FP8_H
#define DS_FP8_H

#include <stddef.h>
#include <stdint.h>

typedef enum { DS_FP8_E4M3 = 0, DS_FP8_E5M2 = 1 } ds_fp8_format;
typedef enum { DS_FP8_SAT = 0, DS_FP8_NONSAT = 1, DS_FP8_TORCH = 2 } ds_fp8_mode;

/* Format traits. */
typedef struct {
    const char *name;      /* "e4m3", "e5m2" */
    int exp_bits, man_bits, bias;
    float max;             /* largest finite: 448, 57344 */
    float min_normal;      /* 2^-6, 2^-14 */
    float min_subnormal;   /* 2^-9, 2^-16 */
    int has_inf;
} ds_fp8_traits;
extern const ds_fp8_traits ds_fp8_traits_table[2];

/* Decode tables (all 256 codes), filled before main() runs. */
extern float ds_fp8_e4m3_table[256];
extern float ds_fp8_e5m2_table[256];

uint8_t ds_f32_to_e4m3(float f, ds_fp8_mode mode);
uint8_t ds_f32_to_e5m2(float f, ds_fp8_mode mode);
static inline uint8_t ds_f32_to_fp8(float f, ds_fp8_format fmt, ds_fp8_mode mode) {
    return fmt == DS_FP8_E4M3 ? ds_f32_to_e4m3(f, mode) : ds_f32_to_e5m2(f, mode);
}
static inline float ds_fp8_to_f32(uint8_t v, ds_fp8_format fmt) {
    return fmt == DS_FP8_E4M3 ? ds_fp8_e4m3_table[v] : ds_fp8_e5m2_table[v];
}

/* Bulk conversions over n elements. */
void ds_fp8_encode(uint8_t *dst, const float *src, int64_t n, ds_fp8_format fmt, ds_fp8_mode mode);
void ds_fp8_decode(float *dst, const uint8_t *src, int64_t n, ds_fp8_format fmt);
/* dst[i] = encode_sat(src[i] / s): the quantizers' cast (AVX2 for E4M3;
 * the same bits as the scalar encoder). */
void ds_fp8_encode_div_sat(uint8_t *dst, const float *src, int64_t n, float s, ds_fp8_format fmt);
/* dst[i] = encode_sat(src[i] / s[i]) (per-element divisors, 128x1 tiles). */
void ds_fp8_encode_divv_sat(uint8_t *dst, const float *src, const float *s, int64_t n, ds_fp8_format fmt);
/* The same casts where the caller knows every src[i] is finite and
 * |src[i] / s| <= 448 (1 + 2^-22) (a group's scale from its own amax): E4M3
 * only, the same bits in fewer operations (fp8.c).  The divv form takes
 * 256 s[i]. */
void ds_fp8_e4m3_encode_div_bounded(uint8_t *dst, const float *src, int64_t n, float s);
void ds_fp8_e4m3_encode_divv_bounded(uint8_t *dst, const float *src, const float *s256, int64_t n);
/* max |x| over nr rows of nc values at stride ld as FP32 bits, NaN and inf
 * included: a result >= 0x7f800000 says one of them is there. */
uint32_t ds_f32_absmax_bits_2d(const float *x, int64_t ld, int64_t nr, int64_t nc);
/* am[i] = max(am[i], |src[i]| as bits), NaN and inf included. */
void ds_f32_absmax_bits_update(uint32_t *am, const float *src, int64_t n);
/* max |src[i]| over n values; NaN is skipped (like fmaxf). */
float ds_f32_amax(const float *src, int64_t n);
/* the same over nr rows of nc values at stride ld */
float ds_f32_amax_2d(const float *x, int64_t ld, int64_t nr, int64_t nc);
/* am[i] = max(am[i], |src[i]|), NaN skipped. */
void ds_f32_amax_update(float *am, const float *src, int64_t n);
/* Parse "e4m3" / "e5m2"; -1 when unknown. */
int ds_fp8_format_from_name(const char *name);

#endif
