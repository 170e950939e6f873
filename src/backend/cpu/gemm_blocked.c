/*
 * gemm_blocked.c — packed, blocked GEMM driver for BF16 and block-scaled FP8
 * (see gemm_blocked.h for the arithmetic).
 *
 * Blocking (BLIS style): C is cut into MC x NC tiles, one OpenMP task each
 * (or a group of row tiles sharing one B pack, see tile_group).  For each
 * K block of 128, a tile packs its A rows into strips of MR = 6 rows laid out
 * [k][6] and its B rows into panels of NR = 16 laid out [k][16], decoding to
 * FP32 on the way (FP8 by bit trick or table, BF16 by shift), with the
 * per-row scales beside them.  The 6x16 micro-kernel keeps 12 AVX2
 * accumulators over the 128 k steps, then promotes them into C.  Two K blocks
 * are packed at a time and run back to back on each micro-tile, so the second
 * promotion finds that C in L1 (one block at a time went to L2 for every
 * promotion).  Edges are zero-padded in the packs and written back through a
 * 6x16 scratch tile.
 */
#include "backend/cpu/gemm_blocked.h"
#ifdef _OPENMP
#include <omp.h>
#endif
#include "backend/cpu/cpu_isa.h"
#include "backend/cpu/transpose8.h"
#include "base/base.h"
#include "num/dtype.h"
#include "num/fp8.h"
#include "num/fp8_simd.h"

#include <math.h>
#include <pthread.h>
#include <string.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define DS_GEMM_AVX2 1
#endif

/* KCH: K blocks packed together, run back to back on each C micro-tile */
enum { MR = 6, NR = 16, NR512 = 32, MC = 192, NC = 256, KB = DS_GEMM_KB, KCH = 2 };

const char *ds_gemm_isa_(void) {
#ifdef DS_X86_SIMD
    if (ds_cpu_isa() >= DS_ISA_AVX512) return "avx512";
#endif
#ifdef DS_GEMM_AVX2
    return "avx2+fma";
#else
    return "scalar";
#endif
}

int ds_gemm_check_op_(const char *what, const ds_gemm_op_ *op) {
    if (!op->p) return ds_err("%s: no data", what);
    if ((unsigned)op->elt > DS_GEMM_F32) return ds_err("%s: unknown element type %d", what, (int)op->elt);
    if (!op->scale) return 0;
    switch (op->gran) {
    case DS_QUANT_TENSOR:
    case DS_QUANT_BLOCK_128x128: return 0;
    case DS_QUANT_ROW:
    case DS_QUANT_TILE_1x128:
        if (op->trans)
            return ds_err("%s: %s scales run along the stored rows, but the operand is stored (K, rows): "
                          "quantize it 128x1", what, ds_quant_gran_name(op->gran));
        return 0;
    case DS_QUANT_TILE_128x1:
        if (!op->trans)
            return ds_err("%s: 128x1 scales need the operand stored (K, rows); stored (rows, K) takes 1x128", what);
        return 0;
    default: return ds_err("%s: unknown granularity %d", what, (int)op->gran);
    }
}

static inline float elt_at(const ds_gemm_op_ *op, int64_t idx) {
    switch (op->elt) {
    case DS_GEMM_E4M3: return ds_fp8_e4m3_table[((const uint8_t *)op->p)[idx]];
    case DS_GEMM_E5M2: return ds_fp8_e5m2_table[((const uint8_t *)op->p)[idx]];
    case DS_GEMM_BF16: return ds_bf16_to_f32(((const uint16_t *)op->p)[idx]);
    default: return ((const float *)op->p)[idx];
    }
}

float ds_gemm_op_at_(const ds_gemm_op_ *op, int64_t r, int64_t k, int64_t R, int64_t K) {
    return elt_at(op, op->trans ? k * R + r : r * K + k);
}

/* ---- scalar reference ------------------------------------------------------ */
void ds_gemm_blocked_ref_(float *C, const ds_gemm_op_ *A, const ds_gemm_op_ *B,
                          int64_t M, int64_t N, int64_t K, int accumulate) {
    int scaled = A->scale || B->scale;
    const int pairs = A->elt == DS_GEMM_BF16 && B->elt == DS_GEMM_BF16;
    int64_t nkb = ds_ceil_div(K, KB);
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            float c = accumulate ? C[m * N + n] : 0.0f;
            for (int64_t kb = 0; kb < nkb; kb++) {
                float bsum = 0.0f;
                int64_t k1 = (kb + 1) * KB < K ? (kb + 1) * KB : K;
                for (int64_t kk = kb * KB; kk < (pairs ? (k1 + 1) & ~1 : k1); kk++) {
                    int64_t k = pairs ? kk ^ 1 : kk; /* BF16 x BF16: odd k first in each pair */
                    if (k >= k1) continue;
                    bsum = fmaf(ds_gemm_op_at_(A, m, k, M, K), ds_gemm_op_at_(B, n, k, N, K), bsum);
                }
                if (scaled)
                    c = fmaf(bsum, ds_gemm_op_scale_(A, m, kb, M, K) * ds_gemm_op_scale_(B, n, kb, N, K), c);
                else
                    c = c + bsum;
            }
            C[m * N + n] = c;
        }
}

/* ---- decoding for the packs ------------------------------------------------ */
/* dst[0..n) = FP32 of n contiguous elements starting at element index idx. */
static void decode_run(float *dst, const ds_gemm_op_ *op, int64_t idx, int64_t n) {
    int64_t i = 0;
    switch (op->elt) {
    case DS_GEMM_E4M3: ds_fp8_decode(dst, (const uint8_t *)op->p + idx, n, DS_FP8_E4M3); break;
    case DS_GEMM_E5M2: {
        const uint8_t *s = (const uint8_t *)op->p + idx;
        for (; i < n; i++) dst[i] = ds_fp8_e5m2_table[s[i]];
        break;
    }
    case DS_GEMM_BF16: {
        const uint16_t *s = (const uint16_t *)op->p + idx;
#ifdef DS_GEMM_AVX2
        for (; i + 8 <= n; i += 8) {
            __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + i)));
            _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
        }
#endif
        for (; i < n; i++) dst[i] = ds_bf16_to_f32(s[i]);
        break;
    }
    default: memcpy(dst, (const float *)op->p + idx, (size_t)n * 4); break;
    }
}

#ifdef DS_GEMM_AVX2
/* dst + j * ldd (j < 8) = column j of the 8x8 block at src (row stride lds). */
static inline void transpose8x8(float *dst, int64_t ldd, const float *src, int64_t lds) {
    ds_transpose8x8_store(dst, ldd, _mm256_load_ps(src), _mm256_load_ps(src + lds), _mm256_load_ps(src + 2 * lds),
                          _mm256_load_ps(src + 3 * lds), _mm256_load_ps(src + 4 * lds), _mm256_load_ps(src + 5 * lds),
                          _mm256_load_ps(src + 6 * lds), _mm256_load_ps(src + 7 * lds));
}
/* the same from 8 rows of 32-bit words at byte stride bs, unaligned */
static inline void transpose8x8_bytes(float *dst, int64_t ldd, const char *src, int64_t bs) {
    ds_transpose8x8_store(dst, ldd, _mm256_loadu_ps((const float *)src), _mm256_loadu_ps((const float *)(src + bs)),
                          _mm256_loadu_ps((const float *)(src + 2 * bs)), _mm256_loadu_ps((const float *)(src + 3 * bs)),
                          _mm256_loadu_ps((const float *)(src + 4 * bs)), _mm256_loadu_ps((const float *)(src + 5 * bs)),
                          _mm256_loadu_ps((const float *)(src + 6 * bs)), _mm256_loadu_ps((const float *)(src + 7 * bs)));
}
#endif

/* Pack rows [r0, r0 + w) (w = MR or NR; rows >= R are zero) and k in
 * [k0, k0 + KB) (k >= K zero) as dst[k][w], and the rows' scales for this
 * K block into sc[w] (zero for padding rows).  dst must have 2 floats of
 * slack after KB * w (the w = 6 transpose spills zeros there). */
static void pack(float *dst, float *sc, const ds_gemm_op_ *op, int64_t r0, int w,
                 int64_t R, int64_t k0, int64_t K, int pairs) {
    int64_t kc = K - k0 < KB ? K - k0 : KB;
    int64_t nr = R - r0 < w ? R - r0 : w;
    if (op->trans) {
        /* stored (K, R): w contiguous elements per k */
        if (kc < KB || nr < w) memset(dst, 0, sizeof(float) * KB * (size_t)w);
#ifdef DS_GEMM_AVX2
        if (op->elt == DS_GEMM_BF16 && nr == w && (w & 7) == 0) {
            /* BF16, whole panels: the widening shift inline (a decode_run
             * call per k of 16 elements was 8% of a BF16 step on AVX2) */
            const uint16_t *s0 = (const uint16_t *)op->p + k0 * R + r0;
            for (int64_t k = 0; k < kc; k++) {
                const uint16_t *sk = s0 + k * R;
                float *d = dst + (pairs ? k ^ 1 : k) * w;
                for (int i = 0; i < w; i += 8) {
                    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(sk + i)));
                    _mm256_storeu_ps(d + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
                }
            }
        } else
#endif
#ifdef DS_E4M3X16
        if (op->elt == DS_GEMM_E4M3 && nr == w && (w & 15) == 0) {
            /* E4M3, whole panels: 16 codes at a time, inline */
            const uint8_t *s0 = (const uint8_t *)op->p + k0 * R + r0;
            for (int64_t k = 0; k < kc; k++)
                for (int i = 0; i < w; i += 16) ds_e4m3x16_to_f32(dst + k * w + i, s0 + k * R + i);
        } else if (op->elt == DS_GEMM_E4M3 && nr == w && w >= 6 && w < 16) {
            /* E4M3, a strip of MR = 6 rows: 16 codes decoded per k, the 16 - w
             * extra lanes spilling into the slots of k + 1 and k + 2 (w ≥ 6),
             * which are written after; the last two k, and any whose 16 codes
             * would run past the operand, through decode_run */
            const uint8_t *s0 = (const uint8_t *)op->p + k0 * R + r0;
            const int64_t room = K * R - (k0 * R + r0) - 16; /* 16 codes readable at s0 + k·R while k·R ≤ room */
            int64_t k = 0;
            for (; k + 2 < kc && k * R <= room; k++) ds_e4m3x16_to_f32(dst + k * w, s0 + k * R);
            for (; k < kc; k++) decode_run(dst + k * w, op, (k0 + k) * R + r0, nr);
        } else
#endif
            for (int64_t k = 0; k < kc; k++) decode_run(dst + (pairs ? k ^ 1 : k) * w, op, (k0 + k) * R + r0, nr);
    } else {
        /* stored (R, K): decode a run of K per row into tmp[row][k], then
         * transpose (8x8 blocks with AVX2) */
        _Alignas(32) float tmp[NR512][KB];
        int rows8 = (w + 7) & ~7;
        for (int64_t i = 0; i < rows8; i++) {
            if (i < nr) {
                decode_run(tmp[i], op, (r0 + i) * K + k0, kc);
#ifdef DS_GEMM_AVX2
                /* the next K block of this row is packed next: fetch it now */
                if (k0 + KB < K) {
                    int64_t esz = op->elt <= DS_GEMM_E5M2 ? 1 : op->elt == DS_GEMM_BF16 ? 2 : 4;
                    const char *nx = (const char *)op->p + ((r0 + i) * K + k0 + KB) * esz;
                    for (int64_t b = 0; b < KB * esz; b += 64) _mm_prefetch(nx + b, _MM_HINT_T0);
                }
#endif
            }
            for (int64_t k = i < nr ? kc : 0; k < KB; k++) tmp[i][k] = 0.0f;
            if (pairs)
                for (int k = 0; k < KB; k += 2) {
                    float t = tmp[i][k];
                    tmp[i][k] = tmp[i][k + 1], tmp[i][k + 1] = t;
                }
        }
#ifdef DS_GEMM_AVX2
        for (int rb = 0; rb < rows8; rb += 8)
            for (int k = 0; k < KB; k += 8) transpose8x8(dst + k * w + rb, w, &tmp[rb][k], KB);
#else
        for (int64_t k = 0; k < KB; k++)
            for (int i = 0; i < w; i++) dst[k * w + i] = tmp[i][k];
#endif
    }
    for (int i = 0; i < w; i++) sc[i] = i < nr ? ds_gemm_op_scale_(op, r0 + i, k0 / KB, R, K) : 0.0f;
}

/* ---- micro-kernel: C (6, 16) at c with row stride ldc ---------------------- */
static void kernel_6x16(float *c, int64_t ldc, const float *ap, const float *bp,
                        const float *sa, const float *sb, int scaled, int kn, int first) {
#ifdef DS_GEMM_AVX2
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
#pragma GCC unroll 4
    for (int k = 0; k < kn; k++) {
        __m256 b0 = _mm256_load_ps(bp + k * NR), b1 = _mm256_load_ps(bp + k * NR + 8), a;
        const float *ak = ap + k * MR;
        a = _mm256_broadcast_ss(ak + 0); c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);
        a = _mm256_broadcast_ss(ak + 1); c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);
        a = _mm256_broadcast_ss(ak + 2); c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);
        a = _mm256_broadcast_ss(ak + 3); c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);
        a = _mm256_broadcast_ss(ak + 4); c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41);
        a = _mm256_broadcast_ss(ak + 5); c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51);
    }
    __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    __m256 sb0 = _mm256_loadu_ps(sb), sb1 = _mm256_loadu_ps(sb + 8);
    for (int i = 0; i < MR; i++) {
        float *ci = c + i * ldc;
        __m256 x0 = _mm256_setzero_ps(), x1 = x0; /* first K block: C starts at +0 */
        if (!first) x0 = _mm256_loadu_ps(ci), x1 = _mm256_loadu_ps(ci + 8);
        if (scaled) {
            __m256 s = _mm256_broadcast_ss(sa + i);
            x0 = _mm256_fmadd_ps(acc[i][0], _mm256_mul_ps(s, sb0), x0);
            x1 = _mm256_fmadd_ps(acc[i][1], _mm256_mul_ps(s, sb1), x1);
        } else {
            x0 = _mm256_add_ps(x0, acc[i][0]);
            x1 = _mm256_add_ps(x1, acc[i][1]);
        }
        _mm256_storeu_ps(ci, x0);
        _mm256_storeu_ps(ci + 8, x1);
    }
#else
    float acc[MR][NR] = {{0}};
    for (int k = 0; k < kn; k++)
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < NR; j++) acc[i][j] = fmaf(ap[k * MR + i], bp[k * NR + j], acc[i][j]);
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) {
            float c0 = first ? 0.0f : c[i * ldc + j];
            c[i * ldc + j] = scaled ? fmaf(acc[i][j], sa[i] * sb[j], c0) : c0 + acc[i][j];
        }
#endif
}

#ifdef DS_X86_SIMD
/* ---- AVX-512 micro-kernel: C (6, 32), B panels of 32 ------------------------ */
DS_TARGET_AVX512 static void kernel_6x32(float *c, int64_t ldc, const float *ap, const float *bp,
                                         const float *sa, const float *sb, int scaled, int kn, int first) {
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m512 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
#pragma GCC unroll 4
    for (int k = 0; k < kn; k++) {
        __m512 b0 = _mm512_load_ps(bp + k * NR512), b1 = _mm512_load_ps(bp + k * NR512 + 16), a;
        const float *ak = ap + k * MR;
        a = _mm512_set1_ps(ak[0]); c00 = _mm512_fmadd_ps(a, b0, c00); c01 = _mm512_fmadd_ps(a, b1, c01);
        a = _mm512_set1_ps(ak[1]); c10 = _mm512_fmadd_ps(a, b0, c10); c11 = _mm512_fmadd_ps(a, b1, c11);
        a = _mm512_set1_ps(ak[2]); c20 = _mm512_fmadd_ps(a, b0, c20); c21 = _mm512_fmadd_ps(a, b1, c21);
        a = _mm512_set1_ps(ak[3]); c30 = _mm512_fmadd_ps(a, b0, c30); c31 = _mm512_fmadd_ps(a, b1, c31);
        a = _mm512_set1_ps(ak[4]); c40 = _mm512_fmadd_ps(a, b0, c40); c41 = _mm512_fmadd_ps(a, b1, c41);
        a = _mm512_set1_ps(ak[5]); c50 = _mm512_fmadd_ps(a, b0, c50); c51 = _mm512_fmadd_ps(a, b1, c51);
    }
    __m512 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    __m512 sb0 = _mm512_loadu_ps(sb), sb1 = _mm512_loadu_ps(sb + 16);
    for (int i = 0; i < MR; i++) {
        float *ci = c + i * ldc;
        __m512 x0 = _mm512_setzero_ps(), x1 = x0;
        if (!first) x0 = _mm512_loadu_ps(ci), x1 = _mm512_loadu_ps(ci + 16);
        if (scaled) {
            __m512 s = _mm512_set1_ps(sa[i]);
            x0 = _mm512_fmadd_ps(acc[i][0], _mm512_mul_ps(s, sb0), x0);
            x1 = _mm512_fmadd_ps(acc[i][1], _mm512_mul_ps(s, sb1), x1);
        } else {
            x0 = _mm512_add_ps(x0, acc[i][0]);
            x1 = _mm512_add_ps(x1, acc[i][1]);
        }
        _mm512_storeu_ps(ci, x0);
        _mm512_storeu_ps(ci + 16, x1);
    }
}
#endif

static void kernel(int nr, float *c, int64_t ldc, const float *ap, const float *bp, const float *sa, const float *sb,
                   int scaled, int kn, int first) {
#ifdef DS_X86_SIMD
    if (nr == NR512) {
        kernel_6x32(c, ldc, ap, bp, sa, sb, scaled, kn, first);
        return;
    }
#endif
    kernel_6x16(c, ldc, ap, bp, sa, sb, scaled, kn, first);
}

/* The k steps of K block kb that hold data: the packs are zero past K, and
 * a short last block (the weight gradients of a few-row expert: K = its
 * rows) would otherwise run all KB steps on zeros.  BF16 pairs go whole. */
static int block_steps(int64_t kb, int64_t K, int pairs) {
    int64_t kc = K - kb * KB < KB ? K - kb * KB : KB;
    return (int)(pairs ? (kc + 1) & ~(int64_t)1 : kc);
}

/* The per-thread pack buffer (A pack, then B pack).  Freed when its thread
 * exits: nested parallel regions (a GEMM called from an inactive outer
 * region) run on short-lived threads. */
/* Row tiles that share one B panel pack: a task is (a group of g consecutive
 * row tiles, one column tile), the B panel of each k-block packed once per
 * task and reused down its rows (packing B for every C tile repacked the
 * weights once per 192 rows).  All row tiles when the column tiles split
 * evenly over the threads (nc columns a tile, the last one at least 3/4
 * full); else g as large as leaves 4 tasks a thread.  Each C tile still sums
 * its k-blocks in order, so the bits are those of any g. */
static int64_t tile_group(int64_t tm, int64_t tn, int64_t N, int64_t nc) {
    int64_t th = 1;
#ifdef _OPENMP
    th = omp_get_num_threads();
#endif
    if (tn % th == 0 && 4 * (N - (tn - 1) * nc) >= 3 * nc) return tm;
    int64_t g = tm * tn / (4 * th);
    return g < 1 ? 1 : g > tm ? tm : g;
}
#define PACK_A ((MC * KB + 8 + MC + 15) / 16 * 16) /* B pack 64-byte aligned */
#define PACK_B ((NC * KB + 8 + NC + 15) / 16 * 16)
static pthread_key_t packs_key;
static pthread_once_t packs_once = PTHREAD_ONCE_INIT;
static void packs_free(void *p) { ds_free_aligned(p); }
static void packs_key_init(void) { DS_ASSERT(pthread_key_create(&packs_key, packs_free) == 0); }
static float *tl_packs(void) {
    static _Thread_local float *tl;
    if (!tl) {
        pthread_once(&packs_once, packs_key_init);
        tl = ds_aligned_alloc(sizeof(float) * KCH * (PACK_A + PACK_B));
        DS_ASSERT(pthread_setspecific(packs_key, tl) == 0);
    }
    return tl;
}

/* A packed once per call (gemm_dpbf16, ds_gemm_blocked_), grow-only, per
 * calling thread, in 4-byte words */
static _Thread_local void *apk_buf;
static _Thread_local size_t apk_cap;

/* The buffer for A packed once, `words` 4-byte words, or NULL when A is not
 * worth it (fewer than three column tiles) or too large (over 16 MB). */
static void *apk_buffer(int64_t tn, size_t words) {
    if (tn < 3 || words > ((size_t)4 << 20)) return NULL;
    return ds_scratch(&apk_buf, &apk_cap, words * sizeof(uint32_t));
}

/* Packs every strip of A (mr rows; sper strips a row tile of mcap rows) for
 * every K block, by calling strip(ctx, ti, kb, s, m0); inside the GEMM's
 * parallel region.  A block's strips go in order on one thread: a 6-row
 * strip's transpose spills two zeros into the next strip's start (see pack). */
typedef void (*strip_fn)(const void *ctx, int64_t ti, int64_t kb, int64_t s, int64_t m0);
static void pack_a_once(int64_t tm, int64_t nkb, int64_t sper, int mr, int64_t mcap, int64_t M, strip_fn strip,
                        const void *ctx) {
#pragma omp for schedule(static) collapse(2)
    for (int64_t ti = 0; ti < tm; ti++)
        for (int64_t kb = 0; kb < nkb; kb++)
            for (int64_t s = 0; s < sper; s++) {
                int64_t m0 = ti * mcap + s * mr;
                if (m0 < M && s * mr < mcap) strip(ctx, ti, kb, s, m0);
            }
}

typedef struct {
    void *apk;
    float *sc;
    const ds_gemm_op_ *A;
    int64_t nkb, blk, sper, M, K;
    int pairs;
} apk_ctx;

#if defined(DS_X86_SIMD) && defined(DS_GEMM_AVX2)
/* ---- AVX512_BF16: BF16 pairs straight into vdpbf16ps ------------------------
 * Packs hold (k, k+1) pairs of BF16 as 32-bit words: A strips [KB/2][8], B
 * panels [KB/2][48] (C tiles of 192 x 240).  vdpbf16ps adds the odd product, then the even one, to
 * the FP32 accumulator, each rounded to nearest (the products are exact) —
 * the "pairs" order the reference and the FP32 kernels follow for BF16.  It
 * flushes subnormal inputs and results to zero, which the other paths do not
 * (BF16 values below 1.2e-38 only). */
#define DS_TARGET_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

DS_TARGET_BF16 static void pack_pairs_t(uint32_t *dst, const uint16_t *src, int64_t r0, int w, int64_t nr, int64_t R,
                                        int64_t k0, int64_t kc) {
    for (int64_t kk = 0; kk < KB / 2; kk++) {
        int64_t k = 2 * kk;
        const uint16_t *lo = src + (k0 + k) * R + r0, *hi = lo + R;
        uint32_t *d = dst + kk * w;
        for (int i = 0; i < w; i += 16) {
            int64_t n = nr - i < 16 ? nr - i : 16;
            __mmask16 m = n <= 0 ? 0 : (__mmask16)((1u << n) - 1), ms = (__mmask16)((1u << (w - i < 16 ? w - i : 16)) - 1);
            __m512i a = _mm512_setzero_si512(), b = _mm512_setzero_si512();
            if (k < kc) a = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, lo + i));
            if (k + 1 < kc) b = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, hi + i));
            _mm512_mask_storeu_epi32(d + i, ms, _mm512_or_si512(a, _mm512_slli_epi32(b, 16)));
        }
    }
}

/* Pack rows [r0, r0 + w) (zero past R) and k in [k0, k0 + KB) (zero past K)
 * of a BF16 operand as pairs dst[KB/2][w]. */
static void pack_pairs(uint32_t *dst, const ds_gemm_op_ *op, int64_t r0, int w, int64_t R, int64_t k0, int64_t K) {
    const uint16_t *src = op->p;
    int64_t kc = K - k0 < KB ? K - k0 : KB;
    int64_t nr = R - r0 < w ? R - r0 : w;
    if (op->trans) {
        /* stored (K, R): row k holds the rows' elements side by side; the
         * pairs are row k zero-extended | row k+1 shifted up, 16 at a time */
        pack_pairs_t(dst, src, r0, w, nr, R, k0, kc);
    } else {
        /* stored (R, K): each row's pairs are 32-bit words; transpose them,
         * straight from the rows for a whole K block of 8 whole rows (a
         * pair is the 32 bits at element k, whatever the alignment), through
         * a zero-padded copy at the edges */
        int rows8 = (w + 7) & ~7;
        if (kc == KB && nr == w && (w & 7) == 0) {
            for (int rb = 0; rb < w; rb += 8) {
                const char *s0 = (const char *)(src + (r0 + rb) * K + k0);
                for (int k = 0; k < KB / 2; k += 8)
                    transpose8x8_bytes((float *)dst + k * w + rb, w, s0 + 4 * k, 2 * K);
            }
            return;
        }
        _Alignas(32) uint32_t tmp[48][KB / 2];
        for (int64_t i = 0; i < rows8; i++) {
            uint16_t *t16 = (uint16_t *)tmp[i];
            if (i < nr) memcpy(t16, src + (r0 + i) * K + k0, (size_t)kc * 2);
            for (int64_t k = i < nr ? kc : 0; k < KB; k++) t16[k] = 0;
        }
        for (int rb = 0; rb < rows8; rb += 8)
            for (int k = 0; k < KB / 2; k += 8) transpose8x8((float *)dst + k * w + rb, w, (float *)&tmp[rb][k], KB / 2);
    }
}

/* 8 rows x 48 columns: 24 accumulators cover vdpbf16ps's latency on two pipes */
enum { MRD = 8, NRD = 48, NCD = 240 };
DS_TARGET_BF16 static void kernel_dp_8x48(float *c, int64_t ldc, const uint32_t *ap, const uint32_t *bp, int kp,
                                          int first) {
    __m512 acc[MRD][3];
#pragma GCC unroll 8
    for (int i = 0; i < MRD; i++) acc[i][0] = acc[i][1] = acc[i][2] = _mm512_setzero_ps();
#pragma GCC unroll 2
    for (int k = 0; k < kp; k++) {
        const uint32_t *bk = bp + k * NRD;
        __m512bh b0 = (__m512bh)_mm512_load_si512(bk), b1 = (__m512bh)_mm512_load_si512(bk + 16),
                 b2 = (__m512bh)_mm512_load_si512(bk + 32);
#pragma GCC unroll 8
        for (int i = 0; i < MRD; i++) {
            __m512bh a = (__m512bh)_mm512_set1_epi32((int)ap[k * MRD + i]);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a, b0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a, b1);
            acc[i][2] = _mm512_dpbf16_ps(acc[i][2], a, b2);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MRD; i++) {
        float *ci = c + i * ldc;
        const __m512 z = _mm512_setzero_ps(); /* first K block: C starts at +0 */
        _mm512_storeu_ps(ci, _mm512_add_ps(first ? z : _mm512_loadu_ps(ci), acc[i][0]));
        _mm512_storeu_ps(ci + 16, _mm512_add_ps(first ? z : _mm512_loadu_ps(ci + 16), acc[i][1]));
        _mm512_storeu_ps(ci + 32, _mm512_add_ps(first ? z : _mm512_loadu_ps(ci + 32), acc[i][2]));
    }
}


static void strip_pairs(const void *ctx, int64_t ti, int64_t kb, int64_t s, int64_t m0) {
    const apk_ctx *c = ctx;
    pack_pairs((uint32_t *)c->apk + (ti * c->nkb + kb) * c->blk + s * MRD * (KB / 2), c->A, m0, MRD, c->M, kb * KB, c->K);
}

static void gemm_dpbf16(float *C, const ds_gemm_op_ *A, const ds_gemm_op_ *B, int64_t M, int64_t N, int64_t K,
                        int accumulate) {
    const int nr = NRD;
    int64_t mcap = MC, tn = ds_ceil_div(N, NCD), nkb = ds_ceil_div(K, KB);
    if (ds_ceil_div(M, mcap) * tn < 8 * (int64_t)ds_threads()) mcap = MC / 2;
    const int64_t tm = ds_ceil_div(M, mcap), sper = mcap / MRD, blk = sper * MRD * (KB / 2);
    /* Every column tile's task packs the A rows it needs; with many column
     * tiles (the LM head: 134 of them at 32000 outputs) that repacked A as
     * often, as many elements as the weight itself.  Then A is packed once,
     * [row tile][K block][strips], before the tasks, and they read it. */
    uint32_t *apk = apk_buffer(tn, (size_t)(tm * nkb * blk));
    const apk_ctx actx = {apk, NULL, A, nkb, blk, sper, M, K, 1};
#pragma omp parallel if ((double)M * N * K >= 262144.0)
    {
        if (apk) pack_a_once(tm, nkb, sper, MRD, mcap, M, strip_pairs, &actx);
        /* the FP32 pack buffers hold twice what the pairs need */
        float *pk = tl_packs();
        uint32_t *ap = (uint32_t *)pk, *bp = (uint32_t *)(pk + PACK_A);
        float edge[MRD * NRD] = {0};
        const int64_t g = tile_group(tm, tn, N, NCD), tg = ds_ceil_div(tm, g);
#pragma omp for schedule(dynamic, 1) collapse(2)
        for (int64_t gi = 0; gi < tg; gi++)
            for (int64_t tj = 0; tj < tn; tj++) {
                int64_t n0 = tj * NCD, nc = N - n0 < NCD ? N - n0 : NCD, np = ds_ceil_div(nc, nr);
                int64_t ti1 = (gi + 1) * g < tm ? (gi + 1) * g : tm;
                for (int64_t kb = 0; kb < nkb; kb++) {
                    const int kp = block_steps(kb, K, 1) / 2, first = kb == 0 && !accumulate;
                    for (int64_t p = 0; p < np; p++) pack_pairs(bp + p * nr * (KB / 2), B, n0 + p * nr, nr, N, kb * KB, K);
                    for (int64_t ti = gi * g; ti < ti1; ti++) {
                    int64_t m0 = ti * mcap, mc = M - m0 < mcap ? M - m0 : mcap, ns = ds_ceil_div(mc, MRD);
                    const uint32_t *apt = apk ? apk + (ti * nkb + kb) * blk : ap;
                    if (!apk)
                        for (int64_t s = 0; s < ns; s++) pack_pairs(ap + s * MRD * (KB / 2), A, m0 + s * MRD, MRD, M, kb * KB, K);
                    for (int64_t p = 0; p < np; p++)
                        for (int64_t s = 0; s < ns; s++) {
                            int64_t mi = m0 + s * MRD, nj = n0 + p * nr;
                            int64_t h = M - mi < MRD ? M - mi : MRD, w = N - nj < nr ? N - nj : nr;
                            float *c = C + mi * N + nj;
                            const uint32_t *as = apt + s * MRD * (KB / 2), *bs = bp + p * nr * (KB / 2);
                            if (h == MRD && w == nr) {
                                kernel_dp_8x48(c, N, as, bs, kp, first);
                            } else {
                                for (int64_t i = 0; i < h && !first; i++) memcpy(edge + i * nr, c + i * N, sizeof(float) * (size_t)w);
                                kernel_dp_8x48(edge, nr, as, bs, kp, first);
                                for (int64_t i = 0; i < h; i++) memcpy(c + i * N, edge + i * nr, sizeof(float) * (size_t)w);
                            }
                        }
                    }
                }
            }
    }
}
#endif

static void strip_f32(const void *ctx, int64_t ti, int64_t kb, int64_t s, int64_t m0) {
    const apk_ctx *c = ctx;
    const int64_t b = ti * c->nkb + kb;
    pack((float *)c->apk + b * c->blk + s * MR * KB, c->sc + b * c->sper * MR + s * MR, c->A, m0, MR, c->M, kb * KB,
         c->K, c->pairs);
}

void ds_gemm_blocked_(float *C, const ds_gemm_op_ *A, const ds_gemm_op_ *B,
                      int64_t M, int64_t N, int64_t K, int accumulate) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { /* otherwise the first K block writes C when not accumulating */
        if (!accumulate) {
#pragma omp parallel for schedule(static) if (M * N >= 65536)
            for (int64_t m = 0; m < M; m++) memset(C + m * N, 0, sizeof(float) * (size_t)N);
        }
        return;
    }
    const int scaled = A->scale || B->scale;
    const int pairs = A->elt == DS_GEMM_BF16 && B->elt == DS_GEMM_BF16;
#if defined(DS_X86_SIMD) && defined(DS_GEMM_AVX2)
    if (pairs && ds_cpu_has_avx512bf16()) {
        gemm_dpbf16(C, A, B, M, N, K, accumulate);
        return;
    }
#endif
    /* B panels of 32 columns for the AVX-512 micro-kernel, 16 for AVX2 */
#ifdef DS_X86_SIMD
    const int nr = ds_cpu_isa() >= DS_ISA_AVX512 ? NR512 : NR;
#else
    const int nr = NR;
#endif
    /* MC rows per tile, halved when that leaves fewer than 8 tiles a thread
     * (dynamic scheduling then evens out the load) */
    int64_t mcap = MC, tn = ds_ceil_div(N, NC), nkb = ds_ceil_div(K, KB);
    if (ds_ceil_div(M, mcap) * tn < 8 * (int64_t)ds_threads()) mcap = MC / 2;
    const int64_t tm = ds_ceil_div(M, mcap), sper = ds_ceil_div(mcap, MR), blk = sper * MR * KB + 8;
    /* A packed once per call when three or more column tiles would each
     * repack it (see gemm_dpbf16): [row tile][K block] blocks of the strips
     * (8 floats of slack each), their scales beside */
    float *apk = apk_buffer(tn, (size_t)(tm * nkb) * (size_t)(blk + sper * MR));
    float *apk_sc = apk ? apk + (size_t)(tm * nkb) * (size_t)blk : NULL;
    const apk_ctx actx = {apk, apk_sc, A, nkb, blk, sper, M, K, pairs};
    /* small products (decode-sized prefill chunks, tiny models) are not worth a fork */
#pragma omp parallel if ((double)M * N * K >= 262144.0)
    {
        /* per-thread packs (kept for the life of the thread: no page faults
         * per call), 8 floats of slack (see pack), then the scales */
        float *ap = tl_packs(), *bp = ap + KCH * PACK_A;
        float edge[MR * NR512] = {0};
        if (apk) pack_a_once(tm, nkb, sper, MR, mcap, M, strip_f32, &actx);
        const int64_t g = tile_group(tm, tn, N, NC), tg = ds_ceil_div(tm, g);
#pragma omp for schedule(dynamic, 1) collapse(2)
        for (int64_t gi = 0; gi < tg; gi++)
            for (int64_t tj = 0; tj < tn; tj++) {
                int64_t n0 = tj * NC, nc = N - n0 < NC ? N - n0 : NC, np = ds_ceil_div(nc, nr);
                int64_t ti1 = (gi + 1) * g < tm ? (gi + 1) * g : tm;
                for (int64_t kc0 = 0; kc0 < nkb; kc0 += KCH) {
                    const int nch = nkb - kc0 < KCH ? (int)(nkb - kc0) : KCH, first = kc0 == 0 && !accumulate;
                    int kn[KCH];
                    for (int j = 0; j < nch; j++) {
                        float *bpj = bp + j * PACK_B, *sbj = bpj + NC * KB + 8;
                        kn[j] = block_steps(kc0 + j, K, pairs);
                        for (int64_t p = 0; p < np; p++) pack(bpj + p * nr * KB, sbj + p * nr, B, n0 + p * nr, nr, N, (kc0 + j) * KB, K, pairs);
                    }
                    for (int64_t ti = gi * g; ti < ti1; ti++) {
                    int64_t m0 = ti * mcap, mc = M - m0 < mcap ? M - m0 : mcap, ns = ds_ceil_div(mc, MR);
                    const float *apt[KCH], *sat[KCH];
                    for (int j = 0; j < nch; j++) {
                        float *apj = ap + j * PACK_A, *saj = apj + MC * KB + 8;
                        apt[j] = apk ? apk + (ti * nkb + kc0 + j) * blk : apj;
                        sat[j] = apk ? apk_sc + (ti * nkb + kc0 + j) * sper * MR : saj;
                        if (!apk)
                            for (int64_t s = 0; s < ns; s++) pack(apj + s * MR * KB, saj + s * MR, A, m0 + s * MR, MR, M, (kc0 + j) * KB, K, pairs);
                    }
                    for (int64_t p = 0; p < np; p++)
                        for (int64_t s = 0; s < ns; s++) {
                            int64_t mi = m0 + s * MR, nj = n0 + p * nr;
                            int64_t h = M - mi < MR ? M - mi : MR, w = N - nj < nr ? N - nj : nr;
                            float *c = C + mi * N + nj, *cc = c;
                            int64_t ldc = N;
                            const int whole = h == MR && w == nr;
                            if (!whole) {
                                for (int64_t i = 0; i < h && !first; i++) memcpy(edge + i * nr, c + i * N, sizeof(float) * (size_t)w);
                                cc = edge, ldc = nr;
                            }
                            for (int j = 0; j < nch; j++) {
                                const float *bpj = bp + j * PACK_B, *sbj = bpj + NC * KB + 8;
                                kernel(nr, cc, ldc, apt[j] + s * MR * KB, bpj + p * nr * KB, sat[j] + s * MR, sbj + p * nr, scaled, kn[j], first && j == 0);
                            }
                            if (!whole)
                                for (int64_t i = 0; i < h; i++) memcpy(c + i * N, edge + i * nr, sizeof(float) * (size_t)w);
                        }
                    }
                }
            }
    }
}
