/*
 * fp8_simd.h — E4M3 codes to FP32 through FP16 (AVX2 + F16C), for the hot
 * decoders: ds_fp8_decode (num/fp8.c) and the FP8 GEMM's packs
 * (backend/cpu/gemm_blocked.c) take ds_e4m3x16_to_f32, the same bits as
 * ds_fp8_e4m3_table, NaN codes included (a quiet NaN with the code's sign);
 * the FP8-resident GEMVs (backend/cpu/gemv.c) take the scaled forms below,
 * which leave the 2^8 to the block scale and assume no NaN code.
 *
 * An E4M3 code s.eeee.mmm is an FP16 value once its seven magnitude bits sit
 * at FP16 bits 13..7 and its sign at bit 15: exponent field 0eeee, mantissa
 * mmm0000000, so the FP16 value is 2^(e-15)·1.mmm (2^-14·0.mmm for e = 0),
 * the E4M3 value times 2^-8 — subnormals included, which the FP16 -> FP32
 * conversion keeps exact.  One multiply by 2^8 finishes; the magnitude 0x7f
 * (NaN) is turned into the FP16 quiet NaN 0x7e00 first.  A sign-extended
 * code shifted left by 7 has its sign at bits 14..15 and the magnitude at
 * 13..7: the mask 0xbf80 keeps bit 15 and the magnitude.
 */
#ifndef DS_NUM_FP8_SIMD_H
#define DS_NUM_FP8_SIMD_H

#include <stdint.h>

#if defined(__AVX2__) && defined(__F16C__)
#include <immintrin.h>
#define DS_E4M3X16 1

/* 16 codes -> their FP16 patterns, each 2^-8 times the code's value (the
 * magnitude 0x7f gives 480·2^-8, not NaN: for codes that hold no NaN, such
 * as a checkpoint's weights) */
static inline __m256i ds_e4m3x16_half(const uint8_t *src) {
    const __m256i h = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)src));
    return _mm256_and_si256(_mm256_slli_epi16(h, 7), _mm256_set1_epi16((short)0xbf80));
}

/* 32 codes -> 4 x 8 FP32 in order (f0: codes 0-7, f1: 8-15, f2: 16-23, f3:
 * 24-31), each 2^-8 times the code's value, NaN codes as above: each byte
 * unpacked into the high half of a 16-bit lane, an arithmetic shift by one
 * puts it where FP16 has it and copies the sign into bit 14, which is
 * cleared (unpack works per 128-bit lane: lo holds codes 0-7 | 16-23, hi
 * 8-15 | 24-31) */
static inline void ds_e4m3x32_scaled(const uint8_t *src, __m256 *f0, __m256 *f1, __m256 *f2, __m256 *f3) {
    const __m256i v = _mm256_loadu_si256((const __m256i *)src), z = _mm256_setzero_si256();
    const __m256i keep = _mm256_set1_epi16((short)0xbfff);
    const __m256i lo = _mm256_and_si256(_mm256_srai_epi16(_mm256_unpacklo_epi8(z, v), 1), keep);
    const __m256i hi = _mm256_and_si256(_mm256_srai_epi16(_mm256_unpackhi_epi8(z, v), 1), keep);
    *f0 = _mm256_cvtph_ps(_mm256_castsi256_si128(lo));
    *f1 = _mm256_cvtph_ps(_mm256_castsi256_si128(hi));
    *f2 = _mm256_cvtph_ps(_mm256_extracti128_si256(lo, 1));
    *f3 = _mm256_cvtph_ps(_mm256_extracti128_si256(hi, 1));
}

/* dst[0..16) = the exact FP32 values of src[0..16), NaN codes included */
static inline void ds_e4m3x16_to_f32(float *dst, const uint8_t *src) {
    __m256i h = ds_e4m3x16_half(src);
    const __m256i mag = _mm256_set1_epi16(0x3f80);
    const __m256i nan = _mm256_cmpeq_epi16(_mm256_and_si256(h, mag), mag);
    h = _mm256_xor_si256(h, _mm256_and_si256(nan, _mm256_set1_epi16(0x3f80 ^ 0x7e00)));
    const __m256 two8 = _mm256_set1_ps(256.0f);
    _mm256_storeu_ps(dst, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), two8));
    _mm256_storeu_ps(dst + 8, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)), two8));
}
#endif

#endif
