/*
 * tile_gemm.c — the small strided GEMM of tile_gemm.h.
 */
#include "backend/cpu/tile_gemm.h"

#include <math.h>

#include "backend/cpu/cpu_isa.h"

#ifdef DS_X86_SIMD
#include <immintrin.h>

#define AI(i, p) A[(i) * sai + (p) * sap]

/* mr (≤ 8) rows × up to 32 columns (masks m0, m1) */
DS_TARGET_AVX512 static inline __attribute__((always_inline)) void mk512(int mr, float *C, int64_t ldc,
                                                                          const float *A, int64_t sai, int64_t sap,
                                                                          const float *B, int64_t ldb, int64_t k,
                                                                          __mmask16 m0, __mmask16 m1, int acc) {
    __m512 c0[8], c1[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        if (i < mr) c0[i] = _mm512_setzero_ps(), c1[i] = _mm512_setzero_ps();
    for (int64_t p = 0; p < k; p++) {
        __m512 b0 = _mm512_maskz_loadu_ps(m0, B + p * ldb), b1 = _mm512_maskz_loadu_ps(m1, B + p * ldb + 16);
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++)
            if (i < mr) {
                __m512 a = _mm512_set1_ps(AI(i, p));
                c0[i] = _mm512_fmadd_ps(a, b0, c0[i]);
                c1[i] = _mm512_fmadd_ps(a, b1, c1[i]);
            }
    }
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        if (i < mr) {
            float *ci = C + i * ldc;
            if (acc) {
                c0[i] = _mm512_add_ps(c0[i], _mm512_maskz_loadu_ps(m0, ci));
                c1[i] = _mm512_add_ps(c1[i], _mm512_maskz_loadu_ps(m1, ci + 16));
            }
            _mm512_mask_storeu_ps(ci, m0, c0[i]);
            _mm512_mask_storeu_ps(ci + 16, m1, c1[i]);
        }
}

DS_TARGET_AVX512 static void gemm512(float *C, int64_t ldc, const float *A, int64_t sai, int64_t sap,
                                     const float *B, int64_t ldb, int64_t m, int64_t n, int64_t k, int acc) {
    for (int64_t j = 0; j < n; j += 32) {
        int64_t w = n - j < 32 ? n - j : 32;
        __mmask16 m0 = w >= 16 ? 0xffff : (__mmask16)((1u << w) - 1);
        __mmask16 m1 = w >= 32 ? 0xffff : w > 16 ? (__mmask16)((1u << (w - 16)) - 1) : 0;
        int64_t i = 0;
        for (; i + 8 <= m; i += 8) mk512(8, C + i * ldc + j, ldc, A + i * sai, sai, sap, B + j, ldb, k, m0, m1, acc);
        switch (m - i) {
        case 7: mk512(7, C + i * ldc + j, ldc, A + i * sai, sai, sap, B + j, ldb, k, m0, m1, acc); break;
        case 6: mk512(6, C + i * ldc + j, ldc, A + i * sai, sai, sap, B + j, ldb, k, m0, m1, acc); break;
        case 5: mk512(5, C + i * ldc + j, ldc, A + i * sai, sai, sap, B + j, ldb, k, m0, m1, acc); break;
        case 4: mk512(4, C + i * ldc + j, ldc, A + i * sai, sai, sap, B + j, ldb, k, m0, m1, acc); break;
        case 3: mk512(3, C + i * ldc + j, ldc, A + i * sai, sai, sap, B + j, ldb, k, m0, m1, acc); break;
        case 2: mk512(2, C + i * ldc + j, ldc, A + i * sai, sai, sap, B + j, ldb, k, m0, m1, acc); break;
        case 1: mk512(1, C + i * ldc + j, ldc, A + i * sai, sai, sap, B + j, ldb, k, m0, m1, acc); break;
        default: break;
        }
    }
}

/* mr (≤ 6) rows × up to 16 columns (masks k0, k1) */
DS_TARGET_AVX2 static inline __attribute__((always_inline)) void mk256(int mr, float *C, int64_t ldc,
                                                                        const float *A, int64_t sai, int64_t sap,
                                                                        const float *B, int64_t ldb, int64_t k,
                                                                        __m256i k0, __m256i k1, int full, int acc) {
    __m256 c0[6], c1[6];
#pragma GCC unroll 6
    for (int i = 0; i < 6; i++)
        if (i < mr) c0[i] = _mm256_setzero_ps(), c1[i] = _mm256_setzero_ps();
    for (int64_t p = 0; p < k; p++) {
        __m256 b0, b1;
        if (full) b0 = _mm256_loadu_ps(B + p * ldb), b1 = _mm256_loadu_ps(B + p * ldb + 8);
        else b0 = _mm256_maskload_ps(B + p * ldb, k0), b1 = _mm256_maskload_ps(B + p * ldb + 8, k1);
#pragma GCC unroll 6
        for (int i = 0; i < 6; i++)
            if (i < mr) {
                __m256 a = _mm256_set1_ps(AI(i, p));
                c0[i] = _mm256_fmadd_ps(a, b0, c0[i]);
                c1[i] = _mm256_fmadd_ps(a, b1, c1[i]);
            }
    }
#pragma GCC unroll 6
    for (int i = 0; i < 6; i++)
        if (i < mr) {
            float *ci = C + i * ldc;
            if (full) {
                if (acc) {
                    c0[i] = _mm256_add_ps(c0[i], _mm256_loadu_ps(ci));
                    c1[i] = _mm256_add_ps(c1[i], _mm256_loadu_ps(ci + 8));
                }
                _mm256_storeu_ps(ci, c0[i]);
                _mm256_storeu_ps(ci + 8, c1[i]);
            } else {
                if (acc) {
                    c0[i] = _mm256_add_ps(c0[i], _mm256_maskload_ps(ci, k0));
                    c1[i] = _mm256_add_ps(c1[i], _mm256_maskload_ps(ci + 8, k1));
                }
                _mm256_maskstore_ps(ci, k0, c0[i]);
                _mm256_maskstore_ps(ci + 8, k1, c1[i]);
            }
        }
}

#define MK256_ROWS(full)                                                                                            \
    do {                                                                                                            \
        int64_t i = 0;                                                                                              \
        for (; i + 6 <= m; i += 6) mk256(6, C + i * ldc + j, ldc, A + i * sai, sai, sap, B + j, ldb, k, k0, k1, full, acc); \
        switch (m - i) {                                                                                            \
        case 5: mk256(5, C + i * ldc + j, ldc, A + i * sai, sai, sap, B + j, ldb, k, k0, k1, full, acc); break;     \
        case 4: mk256(4, C + i * ldc + j, ldc, A + i * sai, sai, sap, B + j, ldb, k, k0, k1, full, acc); break;     \
        case 3: mk256(3, C + i * ldc + j, ldc, A + i * sai, sai, sap, B + j, ldb, k, k0, k1, full, acc); break;     \
        case 2: mk256(2, C + i * ldc + j, ldc, A + i * sai, sai, sap, B + j, ldb, k, k0, k1, full, acc); break;     \
        case 1: mk256(1, C + i * ldc + j, ldc, A + i * sai, sai, sap, B + j, ldb, k, k0, k1, full, acc); break;     \
        default: break;                                                                                             \
        }                                                                                                           \
    } while (0)

DS_TARGET_AVX2 static void gemm256(float *C, int64_t ldc, const float *A, int64_t sai, int64_t sap,
                                   const float *B, int64_t ldb, int64_t m, int64_t n, int64_t k, int acc) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int64_t j = 0; j < n; j += 16) {
        int64_t w = n - j < 16 ? n - j : 16;
        __m256i k0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)w), idx);
        __m256i k1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)w - 8), idx);
        if (w == 16) MK256_ROWS(1);
        else MK256_ROWS(0);
    }
}
#endif

void ds_tile_gemm(float *C, int64_t ldc, const float *A, int64_t sai, int64_t sap, const float *B, int64_t ldb,
                  int64_t m, int64_t n, int64_t k, int acc) {
    if (m <= 0 || n <= 0) return;
#ifdef DS_X86_SIMD
    int isa = ds_cpu_isa();
    if (isa == DS_ISA_AVX512) return gemm512(C, ldc, A, sai, sap, B, ldb, m, n, k, acc);
    if (isa == DS_ISA_AVX2) return gemm256(C, ldc, A, sai, sap, B, ldb, m, n, k, acc);
#endif
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            float s = 0.0f;
            for (int64_t p = 0; p < k; p++) s = fmaf(A[i * sai + p * sap], B[p * ldb + j], s);
            C[i * ldc + j] = acc ? C[i * ldc + j] + s : s;
        }
}
