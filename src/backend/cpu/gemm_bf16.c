/*
 * gemm_bf16.c — BF16 x BF16 -> FP32 GEMM through the blocked driver of
 * gemm_blocked.c (vdpbf16ps on packed BF16 pairs where the CPU has
 * AVX512_BF16; elsewhere decode to FP32 while packing, FP32 FMA micro-kernel),
 * and the FP32 -> BF16 conversion of the inputs (AVX-512, AVX2, or scalar).
 */
#include "backend/cpu/gemm_bf16.h"
#include "backend/cpu/gemm_blocked.h"
#include "backend/cpu/cpu_isa.h"
#include "backend/cpu/par.h"
#include "base/base.h"
#include "num/dtype.h"
#ifdef DS_X86_SIMD
#include <immintrin.h>
#endif

static int run(float *C, const uint16_t *A, int ta, const uint16_t *B, int tb,
               int64_t M, int64_t N, int64_t K, int accumulate, int ref) {
    if (M < 0 || N < 0 || K < 0)
        return ds_err("bf16 gemm: negative size (M=%lld, N=%lld, K=%lld)", (long long)M, (long long)N, (long long)K);
    if (!A || !B || !C) return ds_err("bf16 gemm: no data");
    ds_gemm_op_ a = {A, DS_GEMM_BF16, ta ? 1 : 0, NULL, DS_QUANT_TENSOR};
    ds_gemm_op_ b = {B, DS_GEMM_BF16, tb ? 1 : 0, NULL, DS_QUANT_TENSOR};
    if (ref) ds_gemm_blocked_ref_(C, &a, &b, M, N, K, accumulate);
    else ds_gemm_blocked_(C, &a, &b, M, N, K, accumulate);
    return 0;
}

int ds_bf16_gemm(float *C, const uint16_t *A, int trans_a, const uint16_t *B, int trans_b,
                 int64_t M, int64_t N, int64_t K, int accumulate) {
    return run(C, A, trans_a, B, trans_b, M, N, K, accumulate, 0);
}
int ds_bf16_gemm_ref(float *C, const uint16_t *A, int trans_a, const uint16_t *B, int trans_b,
                     int64_t M, int64_t N, int64_t K, int accumulate) {
    return run(C, A, trans_a, B, trans_b, M, N, K, accumulate, 1);
}

#ifdef DS_X86_SIMD
/* 16 at a time: the same integer RNE and quiet-NaN rule as ds_f32_to_bf16 */
DS_TARGET_AVX512 static inline __m256i bf16x16(__m512i x) {
    const __m512i r7 = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1), abs = _mm512_set1_epi32(0x7fffffff);
    const __m512i inf = _mm512_set1_epi32(0x7f800000), q = _mm512_set1_epi32(0x40);
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(_mm512_add_epi32(x, r7), _mm512_and_si512(_mm512_srli_epi32(x, 16), one)), 16);
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(x, abs), inf);
    return _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(x, 16), q)));
}
/* nt: streaming stores past a scalar head up to dst's 32-byte boundary (a
 * copy written once and read much later: no read of its lines first) */
DS_TARGET_AVX512 static void to_bf16_512(uint16_t *dst, const float *src, int64_t n, int nt) {
    int64_t i = 0;
    if (nt) {
        for (; i < n && ((uintptr_t)(dst + i) & 31); i++) dst[i] = ds_f32_to_bf16(src[i]);
        for (; i + 16 <= n; i += 16) _mm256_stream_si256((__m256i *)(dst + i), bf16x16(_mm512_loadu_si512(src + i)));
    }
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
        _mm256_mask_storeu_epi16(dst + i, m, bf16x16(_mm512_maskz_loadu_epi32(m, src + i)));
    }
}
DS_TARGET_AVX2 static void to_bf16_256(uint16_t *dst, const float *src, int64_t n, int nt) {
    const __m256i r7 = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1), abs = _mm256_set1_epi32(0x7fffffff);
    const __m256i inf = _mm256_set1_epi32(0x7f800000), q = _mm256_set1_epi32(0x40);
    int64_t i = 0;
    if (nt)
        for (; i < n && ((uintptr_t)(dst + i) & 31); i++) dst[i] = ds_f32_to_bf16(src[i]);
    for (; i + 16 <= n; i += 16) {
        __m256i h[2];
        for (int j = 0; j < 2; j++) {
            __m256i x = _mm256_loadu_si256((const __m256i *)(src + i + 8 * j));
            __m256i r = _mm256_srli_epi32(
                _mm256_add_epi32(_mm256_add_epi32(x, r7), _mm256_and_si256(_mm256_srli_epi32(x, 16), one)), 16);
            /* NaN: |x| > inf as signed compare (both non-negative) */
            __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, abs), inf);
            h[j] = _mm256_blendv_epi8(r, _mm256_or_si256(_mm256_srli_epi32(x, 16), q), nan);
        }
        /* 32-bit lanes (all <= 0xffff) to 16 bits, back in order */
        __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(h[0], h[1]), 0xd8);
        if (nt) _mm256_stream_si256((__m256i *)(dst + i), p);
        else _mm256_storeu_si256((__m256i *)(dst + i), p);
    }
    for (; i < n; i++) dst[i] = ds_f32_to_bf16(src[i]);
}
#endif

static void to_bf16(uint16_t *dst, const float *src, int64_t n, int nt) {
#ifdef DS_X86_SIMD
    const int isa = ds_cpu_isa();
    if (isa >= DS_ISA_AVX2) {
        if (isa >= DS_ISA_AVX512) to_bf16_512(dst, src, n, nt);
        else to_bf16_256(dst, src, n, nt);
        if (nt) _mm_sfence();
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) dst[i] = ds_f32_to_bf16(src[i]);
}
void ds_f32_to_bf16_run(uint16_t *dst, const float *src, int64_t n) { to_bf16(dst, src, n, 0); }
void ds_f32_to_bf16_stream(uint16_t *dst, const float *src, int64_t n) { to_bf16(dst, src, n, 1); }

void ds_f32_to_bf16_n(uint16_t *dst, const float *src, int64_t n) {
    const int nt = ds_par_threads((double)n * 6, DS_PAR_MIN_BYTES);
    const int64_t chunk = 4096, nc = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t c = 0; c < nc; c++) {
        int64_t i0 = c * chunk, len = n - i0 < chunk ? n - i0 : chunk;
        ds_f32_to_bf16_run(dst + i0, src + i0, len);
    }
}
