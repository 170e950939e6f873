/*
 * fp8_simd.h — E4M3 codes to FP32, 16 at a time (AVX2 + F16C), for the hot
 * decoders: ds_fp8_decode (num/fp8.c) and the FP8 GEMM's packs
 * (backend/cpu/gemm_blocked.c).  The same bits as ds_fp8_e4m3_table, NaN codes
 * included (a quiet NaN with the code's sign).
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

static inline void ds_e4m3x16_to_f32(float *dst, const uint8_t *src) {
    __m256i h = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)src));
    h = _mm256_and_si256(_mm256_slli_epi16(h, 7), _mm256_set1_epi16((short)0xbf80));
    const __m256i mag = _mm256_set1_epi16(0x3f80);
    const __m256i nan = _mm256_cmpeq_epi16(_mm256_and_si256(h, mag), mag);
    h = _mm256_xor_si256(h, _mm256_and_si256(nan, _mm256_set1_epi16(0x3f80 ^ 0x7e00)));
    const __m256 two8 = _mm256_set1_ps(256.0f);
    _mm256_storeu_ps(dst, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), two8));
    _mm256_storeu_ps(dst + 8, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)), two8));
}
#endif

#endif
