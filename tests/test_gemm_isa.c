/*
 * test_gemm_isa.c — the blocked BF16/FP8 GEMM (gemm_blocked.c) on every ISA
 * path this CPU has: the AVX512_BF16 (vdpbf16ps), AVX-512 6x32 and AVX2 6x16
 * micro-kernels must give the scalar reference's bits (each C element one FP32
 * chain per 128-block of K over exact element products; BF16 x BF16 in pair
 * order: k+1 before k, as vdpbf16ps adds them), on edge-heavy shapes and all
 * operand layouts.
 */
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_isa.h"
#include "backend/cpu/gemm_bf16.h"
#include "backend/cpu/gemm_blocked.h"
#include "backend/cpu/gemm_fp8.h"
#include "num/fp8.h"
#include "base/base.h"
#include "num/dtype.h"
#include "test.h"

TEST(blocked_gemm_bits_match_ref_every_isa) {
    /* N > 480: three or more column tiles, where the AVX512_BF16 path packs A once per call; N = 512: two
     * whole column tiles, one B pack for all row tiles (tile_group); K = 1100: 9 K blocks, run in pairs and a
     * last single one */
    static const int64_t shapes[][3] = {{1, 1, 1},        {7, 33, 129},     {37, 150, 300}, {13, 64, 256},
                                        {200, 70, 131},   {200, 1000, 300}, {37, 1500, 129}, {40, 300, 33},
                                        {64, 512, 1100}};
    ds_rng r;
    ds_rng_seed(&r, 41);
    int top = ds_cpu_isa_max(), prev = ds_cpu_isa();
    for (size_t t = 0; t < sizeof shapes / sizeof *shapes; t++) {
        int64_t M = shapes[t][0], N = shapes[t][1], K = shapes[t][2];
        uint16_t *a = malloc(2 * (size_t)(M * K)), *b = malloc(2 * (size_t)(N * K));
        for (int64_t i = 0; i < M * K; i++) a[i] = ds_f32_to_bf16(ds_rng_normal(&r));
        for (int64_t i = 0; i < N * K; i++) b[i] = ds_f32_to_bf16(ds_rng_normal(&r));
        float *c0 = malloc(4 * (size_t)(M * N)), *c = malloc(4 * (size_t)(M * N)), *cr = malloc(4 * (size_t)(M * N));
        for (int64_t i = 0; i < M * N; i++) c0[i] = ds_rng_normal(&r);
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int acc = 0; acc < 2; acc++) {
                    memcpy(cr, c0, 4 * (size_t)(M * N));
                    CHECK(ds_bf16_gemm_ref(cr, a, ta, b, tb, M, N, K, acc) == 0);
                    /* AVX512_BF16 (where present), AVX-512 FP32, AVX2 FP32 kernels */
                    for (int isa = top, bf = 1; isa >= DS_ISA_AVX2; bf ? (void)(bf = 0) : (void)(isa--, bf = 1)) {
                        ds_cpu_isa_set(isa);
                        int pb = ds_cpu_bf16_set(bf);
                        memcpy(c, c0, 4 * (size_t)(M * N));
                        CHECK(ds_bf16_gemm(c, a, ta, b, tb, M, N, K, acc) == 0);
                        CHECK_MSG(!memcmp(c, cr, 4 * (size_t)(M * N)), "%s bf16=%d M=%lld N=%lld K=%lld ta=%d tb=%d acc=%d",
                                  ds_cpu_isa_name(isa), ds_cpu_has_avx512bf16(), (long long)M, (long long)N,
                                  (long long)K, ta, tb, acc);
                        ds_cpu_bf16_set(pb);
                    }
                    ds_cpu_isa_set(prev);
                }
        free(a), free(b), free(c0), free(c), free(cr);
    }
    ds_cpu_isa_set(prev);
}

TEST(f32_to_bf16_n_matches_scalar_rounding) {
    /* the vector conversions (every ISA path; plain and streaming stores) against ds_f32_to_bf16 (RNE, quiet NaN):
     * random bit patterns (every class), ties, ±inf, NaNs with low payloads */
    ds_rng r;
    ds_rng_seed(&r, 42);
    enum { N = 100003 };
    float *x = malloc(sizeof(float) * N);
    uint16_t *y = malloc(2 * N);
    for (int i = 0; i < N; i++) {
        uint32_t u = (uint32_t)ds_rng_u64(&r);
        if (i % 7 == 0) u = (u & 0xffff0000u) | 0x8000u; /* exact ties */
        memcpy(&x[i], &u, 4);
    }
    const uint32_t sp[] = {0x7f800000u, 0xff800000u, 0x7f800001u, 0xffc00000u, 0x7fffffffu, 0x00000001u, 0x7f7fffffu};
    for (int i = 0; i < 7; i++) memcpy(&x[i], &sp[i], 4);
    int top = ds_cpu_isa_max(), prev = ds_cpu_isa();
    for (int isa = top; isa >= DS_ISA_SCALAR; isa--) {
        ds_cpu_isa_set(isa);
        memset(y, 0, 2 * N);
        ds_f32_to_bf16_n(y, x, N);
        int bad = 0;
        for (int i = 0; i < N; i++) bad += y[i] != ds_f32_to_bf16(x[i]);
        CHECK_MSG(bad == 0, "%s: %d of %d differ", ds_cpu_isa_name(isa), bad, N);
        /* the streaming variant (AdamW's refresh of the weight copies): a
         * scalar head up to the 32-byte boundary, the tail, nothing outside */
        for (int off = 0; off < 17; off += 3)
            for (int len = 0; len < 70; len += 13) {
                memset(y, 0xab, 2 * 128);
                ds_f32_to_bf16_stream(y + off, x + 1000 + len, len + 31);
                int b2 = 0;
                for (int i = 0; i < 128; i++) {
                    int in = i >= off && i < off + len + 31;
                    b2 += in ? y[i] != ds_f32_to_bf16(x[1000 + len + i - off]) : y[i] != 0xabab;
                }
                CHECK_MSG(b2 == 0, "%s stream: offset %d length %d: %d differ", ds_cpu_isa_name(isa), off, len + 31, b2);
            }
    }
    ds_cpu_isa_set(prev);
    free(x), free(y);
}

/* The FP8 packs' decoding (E4M3 codes to FP32: 16 lanes on AVX-512, 8 on
 * AVX2, the table in C) on every path, for every code but NaN: C = A · Bᵀ with
 * A one row of the codes 0..255 and B one-hot rows of 1.0 (0x38), scales 1,
 * so C[n] is code n decoded.  Oracle: the E4M3 table (tested against torch). */
TEST(fp8_pack_decode_every_code_every_isa) {
    enum { K = 256, M = 3 };
    uint8_t *a = calloc(M * K, 1), *b = calloc(K * K, 1);
    for (int m = 0; m < M; m++)
        for (int k = 0; k < K; k++) a[m * K + k] = (k & 0x7f) == 0x7f ? 0 : (uint8_t)k; /* no NaN: it would spread */
    for (int n = 0; n < K; n++) b[n * K + n] = 0x38;
    float one = 1.0f, *c = malloc(sizeof(float) * M * K);
    ds_fp8_operand A = {a, &one, DS_QUANT_TENSOR, 0, DS_FP8_E4M3}, B = {b, &one, DS_QUANT_TENSOR, 0, DS_FP8_E4M3};
    int top = ds_cpu_isa_max(), prev = ds_cpu_isa();
    for (int isa = top; isa >= DS_ISA_SCALAR; isa--) {
        ds_cpu_isa_set(isa);
        CHECK(ds_fp8_gemm_ex(c, &A, &B, M, K, K, NULL) == 0);
        int bad = 0;
        for (int m = 0; m < M; m++)
            for (int n = 0; n < K; n++) {
                float want = 0.0f + ds_fp8_e4m3_table[a[m * K + n]]; /* -0 (0x80) sums to +0 */
                bad += memcmp(&c[m * K + n], &want, 4) != 0;
            }
        CHECK_MSG(bad == 0, "%s: %d codes decoded wrong", ds_cpu_isa_name(isa), bad);
    }
    ds_cpu_isa_set(prev);
    free(a), free(b), free(c);
}

/* The E4M3 packs' vector decodes (16 codes a step: whole panels stored
 * (K, rows), MR-row strips of a transposed operand, runs along K) against the
 * reference's bits on every ISA path, both layouts of each operand: 200 and
 * 3100 rows (3100: 192-row tiles of 32 strips, the last strip's pack ending
 * where the tile's scales begin), K = 131, 300 and 600 (a short last K block;
 * K blocks run in pairs), N = 20, 37 and 70 (ragged panels), 512 (two whole
 * column tiles, one B pack for all row tiles); random finite codes,
 * 1x128 / 128x1 tile and 128x128 block scales. */
TEST(fp8_e4m3_packs_match_ref_every_isa_and_layout) {
    static const int64_t shapes[][3] = {{200, 37, 131}, {200, 70, 300}, {6, 16, 129}, {13, 33, 3}, {3100, 20, 131}, {200, 512, 600}};
    ds_rng r;
    ds_rng_seed(&r, 43);
    int top = ds_cpu_isa_max(), prev = ds_cpu_isa();
    for (size_t t = 0; t < sizeof shapes / sizeof *shapes; t++) {
        const int64_t M = shapes[t][0], N = shapes[t][1], K = shapes[t][2], rows[2] = {M, N};
        uint8_t *q[2];
        float *sc[2];
        for (int i = 0; i < 2; i++) {
            q[i] = malloc((size_t)(rows[i] * K));
            for (int64_t j = 0; j < rows[i] * K; j++) {
                uint8_t v = (uint8_t)ds_rng_below(&r, 256);
                q[i][j] = (v & 0x7f) == 0x7f ? 0x3f : v; /* no NaN: it would spread */
            }
            /* enough scales for any of the layouts: 1x128 (rows x K/128), 128x1 (K/128 x rows), blocks */
            const int64_t ns = ds_quant_scale_count(DS_QUANT_TILE_1x128, rows[i], K) +
                               ds_quant_scale_count(DS_QUANT_TILE_128x1, K, rows[i]);
            sc[i] = malloc(4 * (size_t)ns);
            for (int64_t j = 0; j < ns; j++) sc[i][j] = 0.5f + (float)ds_rng_below(&r, 8) / 8.0f;
        }
        float *c0 = malloc(4 * (size_t)(M * N)), *c = malloc(4 * (size_t)(M * N)), *cr = malloc(4 * (size_t)(M * N));
        for (int64_t i = 0; i < M * N; i++) c0[i] = ds_rng_normal(&r);
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int blk = 0; blk < 2; blk++) {
                    /* stored (rows, K) takes 1x128 tiles, (K, rows) 128x1; or 128x128 blocks */
                    ds_fp8_operand A = {q[0], sc[0], blk ? DS_QUANT_BLOCK_128x128 : ta ? DS_QUANT_TILE_128x1 : DS_QUANT_TILE_1x128,
                                        ta, DS_FP8_E4M3};
                    ds_fp8_operand B = {q[1], sc[1], DS_QUANT_BLOCK_128x128, tb, DS_FP8_E4M3};
                    ds_fp8_gemm_opts o = {.accumulate = blk};
                    memcpy(cr, c0, 4 * (size_t)(M * N));
                    CHECK(ds_fp8_gemm_ex_ref(cr, &A, &B, M, N, K, &o) == 0);
                    for (int isa = top; isa >= DS_ISA_AVX2; isa--) {
                        ds_cpu_isa_set(isa);
                        memcpy(c, c0, 4 * (size_t)(M * N));
                        CHECK(ds_fp8_gemm_ex(c, &A, &B, M, N, K, &o) == 0);
                        CHECK_MSG(!memcmp(c, cr, 4 * (size_t)(M * N)), "%s M=%lld N=%lld K=%lld ta=%d tb=%d blocks=%d",
                                  ds_cpu_isa_name(isa), (long long)M, (long long)N, (long long)K, ta, tb, blk);
                    }
                    ds_cpu_isa_set(prev);
                }
        for (int i = 0; i < 2; i++) free(q[i]), free(sc[i]);
        free(c0), free(c), free(cr);
    }
    ds_cpu_isa_set(prev);
}
