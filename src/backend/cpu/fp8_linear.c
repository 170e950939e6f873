/*
 * fp8_linear.c — FP8 linear layer forward/backward from FP32 inputs: quantize
 * (num/quant.h) into the caller's workspace, then the block-scaled GEMMs
 * (backend/cpu/gemm_fp8.h).
 *
 * Workspace layout (each part 64-byte aligned): codes of the largest operand
 * pair, then their scales:
 *   qa: max(M*K, M*N) bytes    sa: max scale count of the A-side operand
 *   qb: max(N*K, M*K) bytes    sb: max scale count of the B-side operand
 */
#include "backend/cpu/fp8_linear.h"
#include "backend/cpu/gemm_fp8.h"
#include "backend/cpu/wcache.h"
#include "num/quant.h"
#include "base/base.h"

static size_t up64(size_t n) { return (n + 63) & ~(size_t)63; }
static int64_t max2(int64_t a, int64_t b) { return a > b ? a : b; }

typedef struct { uint8_t *qa, *qb; float *sa, *sb; } parts;

/* Sizes of the four parts, then their offsets; returns the total bytes. */
static size_t layout(parts *p, void *ws, int64_t M, int64_t N, int64_t K) {
    int64_t na = max2(M * K, M * N), nb = max2(N * K, M * K);
    int64_t ssa = max2(ds_quant_scale_count(DS_QUANT_TILE_1x128, M, max2(K, N)),
                       ds_quant_scale_count(DS_QUANT_TILE_128x1, M, N));
    int64_t ssb = max2(ds_quant_scale_count(DS_QUANT_BLOCK_128x128, N, K),
                       ds_quant_scale_count(DS_QUANT_TILE_128x1, M, K));
    size_t o1 = up64((size_t)na), o2 = o1 + up64((size_t)nb), o3 = o2 + up64(sizeof(float) * (size_t)ssa);
    if (p) {
        char *c = ws;
        p->qa = (uint8_t *)c;
        p->qb = (uint8_t *)(c + o1);
        p->sa = (float *)(c + o2);
        p->sb = (float *)(c + o3);
    }
    return o3 + up64(sizeof(float) * (size_t)ssb);
}

size_t ds_fp8_linear_workspace(int64_t M, int64_t N, int64_t K) { return layout(NULL, NULL, M, N, K); }

static int check(const char *what, int64_t M, int64_t N, int64_t K, const void *ws) {
    if (M < 0 || N < 0 || K < 0)
        return ds_err("%s: negative size (M=%lld, N=%lld, K=%lld)", what, (long long)M, (long long)N, (long long)K);
    if (!ws) return ds_err("%s: no workspace", what);
    return 0;
}

/* The weight W (N, K) in 128x128 blocks: its copy for this epoch (wcache.h:
 * codes, then the scales at a 64-byte offset), or quantized now into the
 * workspace's B part.  The forward and the input gradient quantize W alike. */
static size_t wblock_codes(int64_t rows, int64_t cols) { return up64((size_t)(rows * cols)); }
static void quantize_w_block(void *dst, const float *w, int64_t rows, int64_t cols) {
    ds_quant_opts ow = ds_quant_defaults(DS_QUANT_BLOCK_128x128);
    DS_ASSERT(ds_quantize(dst, (float *)((char *)dst + wblock_codes(rows, cols)), w, rows, cols, &ow) == 0);
}
static int weight_blocks(const uint8_t **q, const float **s, const float *W, int64_t N, int64_t K, const parts *p) {
    size_t codes = wblock_codes(N, K), scales = sizeof(float) * (size_t)ds_quant_scale_count(DS_QUANT_BLOCK_128x128, N, K);
    const char *c = ds_wcache_get(DS_WCACHE_FP8_BLOCK, W, N, K, codes + scales, quantize_w_block);
    if (c) {
        *q = (const uint8_t *)c, *s = (const float *)(c + codes);
        return 0;
    }
    ds_quant_opts ow = ds_quant_defaults(DS_QUANT_BLOCK_128x128);
    *q = p->qb, *s = p->sb;
    return ds_quantize(p->qb, p->sb, W, N, K, &ow);
}

int ds_fp8_linear_forward(float *Y, const float *X, const float *W, int64_t M, int64_t N, int64_t K,
                          void *ws) {
    if (check("fp8 linear forward", M, N, K, ws)) return -1;
    parts p;
    layout(&p, ws, M, N, K);
    ds_quant_opts ox = ds_quant_defaults(DS_QUANT_TILE_1x128);
    const uint8_t *qw;
    const float *sw;
    if (ds_quantize(p.qa, p.sa, X, M, K, &ox) || weight_blocks(&qw, &sw, W, N, K, &p)) return -1;
    return ds_fp8_gemm(Y, p.qa, p.sa, qw, sw, M, N, K, NULL);
}

int ds_fp8_linear_backward(float *dX, float *dW, const float *dY, const float *X, const float *W,
                           int64_t M, int64_t N, int64_t K, void *ws) {
    if (check("fp8 linear backward", M, N, K, ws)) return -1;
    parts p;
    layout(&p, ws, M, N, K);
    if (dX) {
        ds_quant_opts od = ds_quant_defaults(DS_QUANT_TILE_1x128);
        const uint8_t *qw;
        const float *sw;
        if (ds_quantize(p.qa, p.sa, dY, M, N, &od) || weight_blocks(&qw, &sw, W, N, K, &p)) return -1;
        if (ds_fp8_gemm_dgrad(dX, p.qa, p.sa, qw, sw, M, N, K, NULL)) return -1;
    }
    if (dW) {
        /* 128x1 tiles are re-quantized from FP32 (a 1x128-quantized tensor
         * cannot be re-tiled without a second rounding) */
        ds_quant_opts o = ds_quant_defaults(DS_QUANT_TILE_128x1);
        if (ds_quantize(p.qa, p.sa, dY, M, N, &o) || ds_quantize(p.qb, p.sb, X, M, K, &o)) return -1;
        ds_fp8_gemm_opts acc = {.accumulate = 1};
        if (ds_fp8_gemm_wgrad(dW, p.qa, p.sa, p.qb, p.sb, M, N, K, &acc)) return -1;
    }
    return 0;
}
