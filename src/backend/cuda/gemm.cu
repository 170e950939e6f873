/*
 * gemm.cu — the GEMM entries of the CUDA backend:
 *
 *   FP32   cuBLASLt, FP32 compute (CUBLAS_COMPUTE_32F: no TF32), bias added after
 *   BF16   operands rounded to BF16 (RNE, as ds_f32_to_bf16), cuBLASLt BF16 x BF16
 *          with FP32 accumulation and FP32 output
 *   FP8    DeepSeek-V3's recipe as backend/cpu/fp8_linear.h computes it:
 *            fprop  out = X·Wᵀ     X 1x128 tiles, W 128x128 blocks
 *            dgrad  dX  = dY·W     dY 1x128, W 128x128 (codes transposed)
 *            wgrad  dW += dYᵀ·X    dY, X 128x1 (tiles of 128 tokens, codes transposed)
 *          quantized on the device with the CPU's arithmetic (amax ≥ 1e-4,
 *          s = amax/448, code = sat_e4m3(x / s) RNE: the same codes and
 *          scales), then cuBLASLt's block-scaled FP8 GEMM
 *          (CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F / BLK128x128_32F, Hopper)
 *          or, where cuBLASLt takes no algorithm for the shape (or
 *          ds_cuda_fp8_force_own), dsv3's own kernel: FP32 block sums of 128
 *          in k order, promoted as C = fma(bsum, sA·sB, C) — the CPU's
 *          ds_gemm_blocked_ arithmetic, so the same bits as the CPU.
 *
 * cuBLASLt is column-major; a row-major (R, K) matrix is a column-major K x R
 * one.  Every product here is D (m x n, column-major) = op(A) · op(B) with A
 * stored K-major (transa = T) and B K-major (transb = N) — the "TN" layout
 * Hopper's FP8 tensor cores need; the row-major output (n, m) is D.
 *
 * Scale layouts (cuBLASLt's; the own kernel reads the same):
 *   VEC128 of an operand with R rows and inner K:  s[kb * R + r]   (rows contiguous)
 *   BLK128x128:                                     s[rb * ld + kb], ld = ceil(KB/4)*4
 */
#include "backend/cuda/common.cuh"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <string.h>

extern "C" {
#include "backend/cpu/linear_fp8w.h"
}

/* ---- cuBLASLt ---------------------------------------------------------------- */
namespace {

struct lt_operand {
    const void *p;
    cudaDataType type;
    int trans;            /* 1: stored K-major (row-major (rows, K)) */
    int64_t ld;
    const float *scale;   /* FP8 only */
    int scale_mode;       /* cublasLtMatmulMatrixScale_t */
    int64_t stride;       /* strided batch (lt_matmul's batch > 1): elements from one matrix to the next */
};

/* The heuristic's answer per class of problems, asked once: the MoE layers
 * run a few shapes thousands of times with row counts that change every step
 * (an expert's routed rows), and a search costs more host time than a small
 * GEMM takes on the device (tens to hundreds of microseconds, more for BF16
 * than FP32).  The key is everything the search sees, with m, n, k and the
 * leading dimensions above 64 rounded up to a bucket (2 significant bits: at
 * most 1.5x apart): types, transposes, scale modes and the operands'
 * alignment (min(256, lowest set bit of the address), also given to the
 * search as the minimum alignment, so an algorithm that needs more is never
 * picked for a row offset inside a buffer).  A problem that is not the one
 * searched has its algorithm checked first (cublasLtMatmulAlgoCheck: host
 * only, no search), and a failed check searches for that problem exactly.
 * An answer of "none" is kept too (the FP8 fallback asks once).  Guarded by
 * the entry lock. */
struct lt_key {
    int64_t m, n, k, lda, ldb, ldd;
    int32_t ta, tb, tya, tyb, tyd, sa, sb, ala, alb, ald, batch, tuned;
};
struct lt_slot {
    lt_key key;        /* bucketed */
    lt_key exact;      /* the problem the search was for */
    int used, found;
    cublasLtMatmulAlgo_t algo;
};
enum { LT_SLOTS = 4096 };
lt_slot lt_cache[LT_SLOTS];
int64_t lt_searches, lt_hits, lt_checks;

/* DSV3_CUDA_LT_TUNE=1 (or ds_cuda_lt_tune): a search asks the heuristic for
 * up to LT_TUNE_MAX algorithms and keeps the one that runs the problem
 * fastest (a launch to warm up, then LT_TUNE_REPS timed, into scratch where
 * beta is not 0 so D keeps its sum), where the default keeps the heuristic's
 * first.  Off by default: the timing picks, so two runs may take different
 * algorithms and sum in another order (results then differ in the last
 * bits).  Tuned and untuned answers are cached apart (the key's `tuned`). */
enum { LT_TUNE_MAX = 8, LT_TUNE_REPS = 3 };
int lt_tune_state; /* 0 not read yet, 1 on, -1 off (off unless the variable is set and not "0") */
int64_t lt_tuned, lt_tune_moved;   /* tuned searches; those whose winner was not the heuristic's first */
ds_cuda_lt_tune_info lt_last;      /* the last tuned search */
int lt_tune_on(void) {
    if (!lt_tune_state) {
        const char *e = getenv("DSV3_CUDA_LT_TUNE");
        lt_tune_state = e && *e && strcmp(e, "0") ? 1 : -1;
    }
    return lt_tune_state > 0;
}
/* x itself up to 64 (decode's few rows get their own algorithm, searched
 * for them: one shared with 16 rows ran decode 1.4x slower), else rounded up
 * to 2 significant bits */
int64_t lt_bucket(int64_t x) {
    if (x <= 64) return x;
    int64_t p = 64;
    while (p * 2 < x) p *= 2;           /* p < x <= 2p */
    return x <= p + p / 2 ? p + p / 2 : 2 * p;
}
int32_t align_of(const void *p) {
    uintptr_t a = (uintptr_t)p;
    int32_t al = 256;
    while (al > 1 && (a & (uintptr_t)(al - 1))) al >>= 1;
    return al;
}
int64_t type_bytes(cudaDataType t) { return t == CUDA_R_32F ? 4 : t == CUDA_R_16BF ? 2 : 1; }
int32_t min_align(int32_t al, int64_t bytes) {
    while (al > 1 && (bytes & (int64_t)(al - 1))) al >>= 1;
    return al;
}
lt_slot *lt_lookup(const lt_key &k, int *fresh) {
    uint64_t h = 1469598103934665603ull;
    const unsigned char *b = (const unsigned char *)&k;
    for (size_t i = 0; i < sizeof k; i++) h = (h ^ b[i]) * 1099511628211ull;
    for (size_t i = 0; i < LT_SLOTS; i++) {
        lt_slot *s = &lt_cache[(h + i) % LT_SLOTS];
        if (!s->used) { /* filled by the caller once its search succeeds */
            *fresh = 1;
            return s;
        }
        if (!memcmp(&s->key, &k, sizeof k)) {
            *fresh = 0;
            return s;
        }
    }
    *fresh = -1; /* full: search every time */
    return NULL;
}

} // namespace
void ds_cu_lt_stats(int64_t *searches, int64_t *hits, int64_t *checks) {
    *searches = lt_searches, *hits = lt_hits, *checks = lt_checks;
}
extern "C" int ds_cuda_lt_tune(int on) {
    const int prev = lt_tune_on();
    lt_tune_state = on ? 1 : -1;
    return prev;
}
extern "C" void ds_cuda_lt_tune_stats(int64_t *tuned, int64_t *moved, ds_cuda_lt_tune_info *last) {
    if (tuned) *tuned = lt_tuned;
    if (moved) *moved = lt_tune_moved;
    if (last) *last = lt_last;
}
namespace {

/* the fastest of nres candidates on the problem (index into cand): each
 * launched once, then timed over LT_TUNE_REPS launches; a candidate whose
 * launch fails is passed over (the first stands if all do).  D's extent is
 * ldd·n (+ sd a matrix of the batch); with beta ≠ 0 the launches write
 * scratch of that size instead of D. */
int lt_pick(const cublasLtMatmulHeuristicResult_t *cand, int nres, cublasLtMatmulDesc_t op,
            cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb, cublasLtMatrixLayout_t lc, const void *a,
            const void *b, float beta, void *D, cudaDataType dtype, int64_t ldd, int64_t n, int batch, int64_t sd) {
    const float alpha = 1.0f;
    void *out = D;
    if (beta != 0.0f) {
        const size_t bytes = (size_t)(ldd * n + (int64_t)(batch - 1) * sd) * (size_t)type_bytes(dtype);
        out = ds_cu_scratch(SCR_TUNE, bytes);
        CU_CHECK(cudaMemsetAsync(out, 0, bytes, g_cu.stream));
    }
    cudaEvent_t e0, e1;
    CU_CHECK(cudaEventCreate(&e0));
    CU_CHECK(cudaEventCreate(&e1));
    int best = 0;
    float best_ms = -1, first_ms = -1;
    for (int i = 0; i < nres; i++) {
        const cublasLtMatmulAlgo_t *al = &cand[i].algo;
        if (cand[i].workspaceSize > g_cu.lt_ws_bytes ||
            cublasLtMatmul(g_cu.lt, op, &alpha, a, la, b, lb, &beta, out, lc, out, lc, al, g_cu.lt_ws,
                           g_cu.lt_ws_bytes, g_cu.stream) != CUBLAS_STATUS_SUCCESS)
            continue;
        CU_CHECK(cudaEventRecord(e0, g_cu.stream));
        for (int r = 0; r < LT_TUNE_REPS; r++)
            LT_CHECK(cublasLtMatmul(g_cu.lt, op, &alpha, a, la, b, lb, &beta, out, lc, out, lc, al, g_cu.lt_ws,
                                       g_cu.lt_ws_bytes, g_cu.stream));
        CU_CHECK(cudaEventRecord(e1, g_cu.stream));
        CU_CHECK(cudaEventSynchronize(e1));
        float ms;
        CU_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        if (i == 0) first_ms = ms;
        if (best_ms < 0 || ms < best_ms) best_ms = ms, best = i;
    }
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    lt_tuned++;
    lt_tune_moved += best != 0;
    lt_last.candidates = nres, lt_last.best = best;
    lt_last.first_ms = first_ms / LT_TUNE_REPS, lt_last.best_ms = best_ms / LT_TUNE_REPS;
    return best;
}

/* D (m x n col-major, ldd) = op(A) op(B) + beta D.  Returns the cuBLAS status
 * of the algorithm search or the launch; nothing is launched on failure.
 * batch > 1: that many products at once (strided batch), the operands' i-th
 * matrices at A.stride, B.stride and sd elements times i (the alignment asked
 * of cuBLASLt is the lowest of the first matrix's and the stride's). */
cublasStatus_t lt_matmul(int64_t m, int64_t n, int64_t k, const lt_operand &A, const lt_operand &B, float beta,
                         void *D, cudaDataType dtype, int64_t ldd, int batch = 1, int64_t sd = 0) {
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasStatus_t st;
    cublasOperation_t ta = A.trans ? CUBLAS_OP_T : CUBLAS_OP_N, tb = B.trans ? CUBLAS_OP_N : CUBLAS_OP_T;
    cublasLtMatmulHeuristicResult_t res;
    int nres = 0;
    float alpha = 1.0f;
#define TRY(x) do { if ((st = (x)) != CUBLAS_STATUS_SUCCESS) goto done; } while (0)
    TRY(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    TRY(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    TRY(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    if (A.scale) {
        int32_t mode = A.scale_mode;
        TRY(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof mode));
        TRY(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &A.scale, sizeof A.scale));
    }
    if (B.scale) {
        int32_t mode = B.scale_mode;
        TRY(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof mode));
        TRY(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &B.scale, sizeof B.scale));
    }
    /* stored shapes: A is K x m (trans) or m x K; B is K x n (K-major) or n x K */
    TRY(cublasLtMatrixLayoutCreate(&la, A.type, A.trans ? k : m, A.trans ? m : k, A.ld));
    TRY(cublasLtMatrixLayoutCreate(&lb, B.type, B.trans ? k : n, B.trans ? n : k, B.ld));
    TRY(cublasLtMatrixLayoutCreate(&lc, dtype, m, n, ldd));
    if (batch > 1) {
        const int32_t b32 = batch;
        const int64_t strides[3] = {A.stride, B.stride, sd};
        cublasLtMatrixLayout_t ls[3] = {la, lb, lc};
        for (int i = 0; i < 3; i++) {
            TRY(cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &b32, sizeof b32));
            TRY(cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &strides[i],
                                                 sizeof strides[i]));
        }
    }
    {
        lt_key exact, key;
        memset(&exact, 0, sizeof exact); /* padding too: the key is compared bytewise */
        exact.m = m, exact.n = n, exact.k = k, exact.lda = A.ld, exact.ldb = B.ld, exact.ldd = ldd;
        exact.ta = (int32_t)ta, exact.tb = (int32_t)tb, exact.tya = (int32_t)A.type, exact.tyb = (int32_t)B.type;
        exact.tyd = (int32_t)dtype, exact.sa = A.scale ? A.scale_mode : -1, exact.sb = B.scale ? B.scale_mode : -1;
        exact.ala = align_of(A.p), exact.alb = align_of(B.p), exact.ald = align_of(D);
        if (batch > 1) { /* every matrix of the batch as aligned as the alignment asked for */
            exact.ala = min_align(exact.ala, A.stride * type_bytes(A.type));
            exact.alb = min_align(exact.alb, B.stride * type_bytes(B.type));
            exact.ald = min_align(exact.ald, sd * type_bytes(dtype));
        }
        exact.batch = batch;
        exact.tuned = lt_tune_on();
        key = exact;
        key.m = lt_bucket(m), key.n = lt_bucket(n), key.k = lt_bucket(k);
        key.lda = lt_bucket(A.ld), key.ldb = lt_bucket(B.ld), key.ldd = lt_bucket(ldd);
        int fresh;
        lt_slot *slot = lt_lookup(key, &fresh);
        if (!fresh && memcmp(&slot->exact, &exact, sizeof exact)) {
            /* another problem of the class: the algorithm must take it (tile
             * and split-K limits, workspace), else search for it exactly (a
             * class without an algorithm is searched per problem) */
            cublasLtMatmulHeuristicResult_t chk;
            lt_checks++;
            if (!slot->found ||
                cublasLtMatmulAlgoCheck(g_cu.lt, op, la, lb, lc, lc, &slot->algo, &chk) != CUBLAS_STATUS_SUCCESS ||
                chk.workspaceSize > g_cu.lt_ws_bytes)
                fresh = 1;
        }
        if (fresh) {
            uint32_t al[3] = {(uint32_t)key.ala, (uint32_t)key.alb, (uint32_t)key.ald};
            lt_searches++;
            TRY(cublasLtMatmulPreferenceCreate(&pref));
            TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &g_cu.lt_ws_bytes,
                                                     sizeof g_cu.lt_ws_bytes));
            TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al[0], sizeof al[0]));
            TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al[1], sizeof al[1]));
            TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al[2], sizeof al[2]));
            TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al[2], sizeof al[2]));
            if (exact.tuned) {
                cublasLtMatmulHeuristicResult_t cand[LT_TUNE_MAX];
                TRY(cublasLtMatmulAlgoGetHeuristic(g_cu.lt, op, la, lb, lc, lc, pref, LT_TUNE_MAX, cand, &nres));
                if (nres >= 1) res = cand[lt_pick(cand, nres, op, la, lb, lc, A.p, B.p, beta, D, dtype, ldd, n, batch, sd)];
            } else {
                TRY(cublasLtMatmulAlgoGetHeuristic(g_cu.lt, op, la, lb, lc, lc, pref, 1, &res, &nres));
            }
            if (slot) slot->key = key, slot->exact = exact, slot->found = nres >= 1, slot->algo = res.algo, slot->used = 1;
        } else {
            lt_hits++;
            nres = slot->found;
            res.algo = slot->algo;
        }
    }
    if (nres < 1) {
        st = CUBLAS_STATUS_NOT_SUPPORTED;
        goto done;
    }
    st = cublasLtMatmul(g_cu.lt, op, &alpha, A.p, la, B.p, lb, &beta, D, lc, D, lc, &res.algo, g_cu.lt_ws,
                        g_cu.lt_ws_bytes, g_cu.stream);
#undef TRY
done:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (op) cublasLtMatmulDescDestroy(op);
    return st;
}

/* The plain GEMM for a shape cuBLASLt takes no algorithm for (FP32 or BF16
 * operands): a thread per output, k in order, FP32 sums.  A(r, k) sits at
 * a[r*sar + k*sak], B(c, k) at b[c*sbr + k*sbk]; D (m x n) column-major. */
template <typename T>
__device__ __forceinline__ float elt(const T *p, int64_t i);
template <>
__device__ __forceinline__ float elt<float>(const float *p, int64_t i) { return p[i]; }
template <>
__device__ __forceinline__ float elt<uint16_t>(const uint16_t *p, int64_t i) { return __uint_as_float((uint32_t)p[i] << 16); }
template <typename T>
__global__ void k_gemm_plain(float *D, int64_t ldd, const T *a, int64_t sar, int64_t sak, const T *b, int64_t sbr,
                             int64_t sbk, int64_t m, int64_t n, int64_t k, float beta) {
    GRID_STRIDE(i, m * n) {
        int64_t r = i % m, c = i / m;
        float s = 0.0f;
        for (int64_t j = 0; j < k; j++) s += elt(a, r * sar + j * sak) * elt(b, c * sbr + j * sbk);
        D[c * ldd + r] = beta != 0.0f ? s + beta * D[c * ldd + r] : s;
    }
}

/* cuBLASLt, or the plain GEMM (with one line on stderr) where it takes no algorithm */
void lt_or_plain(int64_t m, int64_t n, int64_t k, const lt_operand &A, const lt_operand &B, float beta, float *D,
                 int64_t ldd, const char *what) {
    cublasStatus_t st = lt_matmul(m, n, k, A, B, beta, D, CUDA_R_32F, ldd);
    if (st == CUBLAS_STATUS_SUCCESS) return;
    if (st != CUBLAS_STATUS_NOT_SUPPORTED) ds_cu_fail(what, cublasLtGetStatusString(st), __FILE__, __LINE__);
    static int said;
    if (!said++) fprintf(stderr, "dsv3: cuda: cuBLASLt has no algorithm for a %lldx%lldx%lld GEMM; using a plain kernel\n",
                         (long long)m, (long long)n, (long long)k);
    int64_t sar = A.trans ? A.ld : 1, sak = A.trans ? 1 : A.ld, sbr = B.trans ? B.ld : 1, sbk = B.trans ? 1 : B.ld;
    if (A.type == CUDA_R_16BF)
        k_gemm_plain<uint16_t><<<ds_cu_blocks(m * n, 256), 256, 0, g_cu.stream>>>(
            D, ldd, (const uint16_t *)A.p, sar, sak, (const uint16_t *)B.p, sbr, sbk, m, n, k, beta);
    else
        k_gemm_plain<float><<<ds_cu_blocks(m * n, 256), 256, 0, g_cu.stream>>>(
            D, ldd, (const float *)A.p, sar, sak, (const float *)B.p, sbr, sbk, m, n, k, beta);
    CU_LAUNCHED();
}

/* ---- small kernels --------------------------------------------------------------- */
__global__ void k_add_bias(float *out, const float *bias, int64_t N, int64_t OC) {
    ROWS(n, N) COLS(c, OC) out[n * OC + c] += bias[c];
}
__global__ void k_fill_bias(float *out, const float *bias, int64_t N, int64_t OC) {
    ROWS(n, N) COLS(c, OC) out[n * OC + c] = bias ? bias[c] : 0.0f;
}
/* dbias[o] += Σ_n dout[n, o], rows in order (the CPU's float sum, same bits) */
__global__ void k_dbias(float *dbias, const float *dout, int64_t N, int64_t OC) {
    GRID_STRIDE(o, OC) {
        float s = 0;
        for (int64_t n = 0; n < N; n++) s += dout[n * OC + o];
        dbias[o] += s;
    }
}
/* dbias[o] += dout[n, o] row by row (the CPU's BF16 and FP8 linears add in place) */
__global__ void k_dbias_inplace(float *dbias, const float *dout, int64_t N, int64_t OC) {
    GRID_STRIDE(o, OC)
        for (int64_t n = 0; n < N; n++) dbias[o] += dout[n * OC + o];
}
__global__ void k_add(float *dst, const float *src, int64_t n) { GRID_STRIDE(i, n) dst[i] += src[i]; }

__global__ void k_to_bf16(uint16_t *dst, const float *src, int64_t n) { GRID_STRIDE(i, n) dst[i] = ds_cu_f32_to_bf16(src[i]); }
__global__ void k_widen_bf16(float *dst, const uint16_t *src, int64_t n) {
    GRID_STRIDE(i, n) dst[i] = __uint_as_float((uint32_t)src[i] << 16);
}

uint16_t *to_bf16(int slot, const float *x, int64_t n) {
    uint16_t *d = (uint16_t *)ds_cu_scratch(slot, (size_t)n * sizeof(uint16_t));
    k_to_bf16<<<ds_cu_blocks(n, 256), 256, 0, g_cu.stream>>>(d, x, n);
    CU_LAUNCHED();
    return d;
}

} // namespace

/* ---- FP32 --------------------------------------------------------------------- */
/* out (N, OC) = inp (N, C) · w (OC, C)ᵀ: D = outᵀ (OC x N), A = w (K-major), B = inp (K-major) */
static void gemm_fwd(float *out, const void *inp, const void *w, cudaDataType t, int64_t N, int64_t C, int64_t OC) {
    lt_operand A = {w, t, 1, C, NULL, 0}, B = {inp, t, 1, C, NULL, 0};
    lt_or_plain(OC, N, C, A, B, 0.0f, out, OC, "cublasLtMatmul (forward)");
}
/* dinp (N, C) (+)= dout (N, OC) · w (OC, C): D = dinpᵀ (C x N) = wᵀ... A = w stored (OC, C): as
 * col-major it is C x OC, op N; B = dout (N, OC): col-major OC x N, op N */
static void gemm_dgrad(float *dinp, const void *dout, const void *w, cudaDataType t, int64_t N, int64_t C, int64_t OC,
                       float beta) {
    lt_operand A = {w, t, 0, C, NULL, 0}, B = {dout, t, 1, OC, NULL, 0};
    lt_or_plain(C, N, OC, A, B, beta, dinp, C, "cublasLtMatmul (dgrad)");
}
/* dw (OC, C) += dout (N, OC)ᵀ · inp (N, C): D = dwᵀ (C x OC), A = inp col-major C x N op N,
 * B = dout col-major OC x N, op T */
static void gemm_wgrad(float *dw, const void *dout, const void *inp, cudaDataType t, int64_t N, int64_t C, int64_t OC) {
    lt_operand A = {inp, t, 0, C, NULL, 0}, B = {dout, t, 0, OC, NULL, 0};
    lt_or_plain(C, OC, N, A, B, 1.0f, dw, C, "cublasLtMatmul (wgrad)");
}

static int empty_product(float *out, const float *bias, int64_t N, int64_t C, int64_t OC) {
    if (N <= 0 || OC <= 0) return 1;
    if (C > 0) return 0;
    k_fill_bias<<<ds_cu_row_grid(N, OC), ds_cu_row_block(OC), 0, g_cu.stream>>>(out, bias, N, OC);
    CU_LAUNCHED();
    return 1;
}
static void add_bias(float *out, const float *bias, int64_t N, int64_t OC) {
    if (!bias) return;
    k_add_bias<<<ds_cu_row_grid(N, OC), ds_cu_row_block(OC), 0, g_cu.stream>>>(out, bias, N, OC);
    CU_LAUNCHED();
}
/* inplace: the BF16/FP8 order (each row added into dbias), else the FP32 one
 * (rows summed, then added) */
static void dbias_sum(float *dbias, const float *dout, int64_t N, int64_t OC, int inplace = 0) {
    if (!dbias) return;
    if (inplace) k_dbias_inplace<<<ds_cu_blocks(OC, 128), 128, 0, g_cu.stream>>>(dbias, dout, N, OC);
    else k_dbias<<<ds_cu_blocks(OC, 128), 128, 0, g_cu.stream>>>(dbias, dout, N, OC);
    CU_LAUNCHED();
}

extern "C" void ds_cu_matmul_forward(float *out, const float *inp, const float *w, const float *bias, int64_t N,
                                     int64_t C, int64_t OC) {
    CU_ENTRY();
    if (empty_product(out, bias, N, C, OC)) return;
    gemm_fwd(out, inp, w, CUDA_R_32F, N, C, OC);
    add_bias(out, bias, N, OC);
}

extern "C" void ds_cu_matmul_backward(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                                      const float *w, int64_t N, int64_t C, int64_t OC, int acc) {
    CU_ENTRY();
    if (N <= 0) return;
    if (C > 0 && OC > 0) {
        if (dinp) gemm_dgrad(dinp, dout, w, CUDA_R_32F, N, C, OC, acc ? 1.0f : 0.0f);
        if (dw) gemm_wgrad(dw, dout, inp, CUDA_R_32F, N, C, OC);
    } else if (dinp && !acc && C > 0) {
        CU_CHECK(cudaMemsetAsync(dinp, 0, (size_t)(N * C) * sizeof(float), g_cu.stream));
    }
    dbias_sum(dbias, dout, N, OC);
}

/* ---- BF16 --------------------------------------------------------------------- */
extern "C" void ds_cu_matmul_forward_bf16(float *out, const float *inp, const float *w, const float *bias, int64_t N,
                                          int64_t C, int64_t OC) {
    CU_ENTRY();
    if (empty_product(out, bias, N, C, OC)) return;
    uint16_t *x = to_bf16(SCR_A, inp, N * C), *wb = to_bf16(SCR_B, w, OC * C);
    gemm_fwd(out, x, wb, CUDA_R_16BF, N, C, OC);
    add_bias(out, bias, N, OC);
}

extern "C" void ds_cu_matmul_backward_bf16(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                                           const float *w, int64_t N, int64_t C, int64_t OC, int acc) {
    CU_ENTRY();
    if (N <= 0) return;
    if (C > 0 && OC > 0) {
        uint16_t *dy = to_bf16(SCR_A, dout, N * OC);
        if (dinp) gemm_dgrad(dinp, dy, to_bf16(SCR_B, w, OC * C), CUDA_R_16BF, N, C, OC, acc ? 1.0f : 0.0f);
        if (dw) gemm_wgrad(dw, dy, to_bf16(SCR_C, inp, N * C), CUDA_R_16BF, N, C, OC);
    } else if (dinp && !acc && C > 0) {
        CU_CHECK(cudaMemsetAsync(dinp, 0, (size_t)(N * C) * sizeof(float), g_cu.stream));
    }
    dbias_sum(dbias, dout, N, OC, 1);
}

/* ---- grouped expert GEMMs (FP32, BF16) --------------------------------------------
 * One cublasGemmGroupedBatchedEx call per product for all the experts with
 * rows (a group of one problem each: their row counts differ), where the
 * per-expert loop made a cuBLASLt call, its descriptors and launch per
 * expert: 32 experts x 3 products x 2 passes per MoE layer.  The products
 * and their layouts are gemm_fwd / gemm_dgrad / gemm_wgrad's.  FP32: FP32
 * operands and compute (no TF32).  BF16: cuBLAS's grouped call takes no BF16
 * operands with an FP32 result (measured: CUDA 13.0 refuses), so the
 * operands are rounded to BF16 once per call (RNE, as ds_f32_to_bf16; the
 * weights by one kernel over the pointer list) and kept as FP32 values, and
 * the call asks for CUBLAS_COMPUTE_32F_FAST_16BF (tensor cores; its
 * down-conversion to BF16 is then exact), else (CUDA 13.0 refuses that too)
 * runs with FP32 compute: a product of two BF16 values is exact in FP32, so
 * either way the products are BF16 x BF16 with FP32 sums, the BF16 linear's
 * arithmetic; on the CUDA cores only while it pays (bf16_grouped_pays).  The
 * loop stays for decode-sized calls (fewer than 16 rows an expert on
 * average), and where cuBLAS refuses (one line on stderr, then the loop for
 * that precision); DSV3_CUDA_GROUPED=0 asks for the loop. */
namespace {
cublasHandle_t g_blas;
int grouped_env;        /* 0: not read, 1: on, -1: off (DSV3_CUDA_GROUPED=0 or no cuBLAS) */
int grouped_refusal[2]; /* per precision (0 FP32, 1 BF16): cuBLAS refused once */
int fast16_refused;     /* the BF16 tensor-core compute type refused once */

int grouped_enabled(void) {
    if (!grouped_env) {
        if (ds_cu_env_on(&grouped_env, "DSV3_CUDA_GROUPED") &&
            (cublasCreate(&g_blas) != CUBLAS_STATUS_SUCCESS || cublasSetStream(g_blas, g_cu.stream) != CUBLAS_STATUS_SUCCESS ||
             cublasSetMathMode(g_blas, CUBLAS_DEFAULT_MATH) != CUBLAS_STATUS_SUCCESS)) {
            fprintf(stderr, "dsv3: cuda: cuBLAS did not start; the expert GEMMs run one by one\n");
            grouped_env = -1;
        }
    }
    return grouped_env > 0;
}
int grouped_on(int bf) { return grouped_enabled() && !grouped_refusal[bf]; }

/* BF16 where the tensor-core compute type is refused: the grouped call then
 * runs on the CUDA cores, which pays while an expert's GEMM is small and the
 * loop's launches dominate, and not once the tensor cores' speed does.
 * Measured on an H200 (CUDA 13.0), BF16 training steps of batch 8 x 512: the
 * `small` preset (512 rows x 512 x 256 an expert, 0.13 GFLOP) 113K tokens/s
 * grouped against 56K by the loop; the ~1B config (768 x 1536 x 512, 1.2
 * GFLOP) 16.6K grouped against 18.9-20.1K by the loop.  The cut between them,
 * 0.5 GFLOP an expert product on average, lies between the two and is not
 * tuned further. */
int bf16_grouped_pays(int64_t rows, int64_t g, int64_t C, int64_t OC) {
    if (!fast16_refused) return 1;
    return 2.0 * (double)rows / (double)g * (double)C * (double)OC <= 0.5e9;
}

__device__ __forceinline__ float round_bf16(float f) { return ds_cu_bf16_to_f32(ds_cu_f32_to_bf16(f)); }
__global__ void k_round_bf16(float *dst, const float *src, int64_t n) { GRID_STRIDE(i, n) dst[i] = round_bf16(src[i]); }
/* blockIdx.y = z: list entry z (n values) rounded to BF16 at dst + z n */
__global__ void k_round_bf16_list(float *dst, const float *const *src, int64_t n) {
    const float *s = src[blockIdx.y];
    float *d = dst + blockIdx.y * n;
    GRID_STRIDE(i, n) d[i] = round_bf16(s[i]);
}

enum { GMAX = 1024, GROUPED_MIN_ROWS = 16 };
struct grouped_call {
    int g;                                          /* groups: experts with rows */
    int64_t e[GMAX];                                /* their expert index */
    cublasOperation_t ta[GMAX], tb[GMAX];
    int m[GMAX], n[GMAX], k[GMAX], lda[GMAX], ldb[GMAX], ldc[GMAX], one[GMAX];
    float alpha[GMAX], beta[GMAX];
    const void *pt[3 * GMAX];                       /* A[0..g), B[g..2g), C[2g..3g) */
};
grouped_call gc_host;   /* guarded by the entry lock */

/* the experts with rows; 0 (the loop) when there are none, too many, or
 * fewer than min_rows rows an expert on average (too few for one call to pay) */
int grouped_list(grouped_call *c, const int64_t *counts, int64_t E, int64_t min_rows = GROUPED_MIN_ROWS) {
    c->g = 0;
    int64_t rows = 0;
    for (int64_t e = 0; e < E; e++)
        if (counts[e] > 0) {
            if (c->g == GMAX || counts[e] > INT32_MAX) return c->g = 0;
            c->e[c->g++] = e;
            rows += counts[e];
        }
    if (rows < min_rows * c->g) c->g = 0;
    return c->g;
}
void grouped_set(grouped_call *c, int i, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k,
                 int64_t lda, int64_t ldb, int64_t ldc, float beta, const void *A, const void *B, void *C) {
    c->ta[i] = ta, c->tb[i] = tb, c->m[i] = (int)m, c->n[i] = (int)n, c->k[i] = (int)k;
    c->lda[i] = (int)lda, c->ldb[i] = (int)ldb, c->ldc[i] = (int)ldc, c->alpha[i] = 1.0f, c->beta[i] = beta;
    c->pt[i] = A, c->pt[c->g + i] = B, c->pt[2 * c->g + i] = C;
}

/* the pointer lists to the device in one copy (pageable: staged before the
 * call returns, so the host lists may change at once), then one grouped
 * call; a refusal is said once and turns this precision's grouped path off */
int grouped_run(grouped_call *c, int bf) {
    const int g = c->g;
    void **dp = (void **)ds_cu_scratch(SCR_PTRS, (size_t)(3 * g) * sizeof(void *));
    CU_CHECK(cudaMemcpyAsync(dp, c->pt, (size_t)(3 * g) * sizeof(void *), cudaMemcpyHostToDevice, g_cu.stream));
    for (int i = 0; i < g; i++) c->one[i] = 1;
    cublasStatus_t st = CUBLAS_STATUS_NOT_SUPPORTED;
    for (int fast = bf && !fast16_refused; fast >= 0; fast--) {
        st = cublasGemmGroupedBatchedEx(g_blas, c->ta, c->tb, c->m, c->n, c->k, c->alpha, (const void *const *)dp,
                                        CUDA_R_32F, c->lda, (const void *const *)(dp + g), CUDA_R_32F, c->ldb, c->beta,
                                        dp + 2 * g, CUDA_R_32F, c->ldc, g, c->one,
                                        fast ? CUBLAS_COMPUTE_32F_FAST_16BF : CUBLAS_COMPUTE_32F);
        if (st == CUBLAS_STATUS_SUCCESS) return 1;
        if (fast) { /* the BF16-rounded operands with FP32 compute: the same products, on the CUDA cores */
            fprintf(stderr, "dsv3: cuda: cublasGemmGroupedBatchedEx (BF16 tensor cores): %s; the BF16 expert GEMMs "
                            "run grouped with FP32 compute on the rounded operands\n", cublasGetStatusString(st));
            cudaGetLastError();
            fast16_refused = 1;
        }
    }
    fprintf(stderr, "dsv3: cuda: cublasGemmGroupedBatchedEx (%s): %s; the expert GEMMs run one by one\n",
            bf ? "BF16" : "FP32", cublasGetStatusString(st));
    cudaGetLastError();
    grouped_refusal[bf] = 1;
    return 0;
}

/* x (n) rounded to BF16 values, in a scratch slot */
const float *rounded(int slot, const float *x, int64_t n) {
    float *d = (float *)ds_cu_scratch(slot, (size_t)n * sizeof(float));
    k_round_bf16<<<ds_cu_blocks(n, 256), 256, 0, g_cu.stream>>>(d, x, n);
    CU_LAUNCHED();
    return d;
}
/* the listed experts' weight pointers, in device memory */
const float *const *weights_list(const grouped_call *c, const float *const *w) {
    const float *src[GMAX];
    for (int i = 0; i < c->g; i++) src[i] = w[c->e[i]];
    const float **dsrc = (const float **)ds_cu_scratch(SCR_PTRS2, (size_t)c->g * sizeof(void *));
    CU_CHECK(cudaMemcpyAsync(dsrc, src, (size_t)c->g * sizeof(void *), cudaMemcpyHostToDevice, g_cu.stream));
    return dsrc;
}
/* the listed experts' weights (n each) rounded to BF16 values, one after another */
const float *rounded_weights(int slot, const grouped_call *c, const float *const *w, int64_t n) {
    const float *const *dsrc = weights_list(c, w);
    float *d = (float *)ds_cu_scratch(slot, (size_t)(n * c->g) * sizeof(float));
    k_round_bf16_list<<<dim3(ds_cu_blocks(n, 256), (unsigned)c->g), 256, 0, g_cu.stream>>>(d, dsrc, n);
    CU_LAUNCHED();
    return d;
}

/* ---- decode-sized expert GEMMs (FP32, BF16): one launch ------------------------------
 * With fewer than GROUPED_MIN_ROWS rows an expert on average (decode: a token's
 * or a batch's few rows spread over the experts) the forward ran the loop: a
 * cuBLASLt call per expert with rows, each with its host time (descriptors,
 * algorithm check, launch: tens of microseconds) for a product that reads the
 * expert's weights once.  Here one launch runs them all: a block of FR_W warps
 * per (FR_W·FR_CW output columns, expert with rows); the expert's rows, FR_R at
 * a time, staged in shared memory by FR_KC-wide slices of C (rounded to BF16
 * in the BF16 table, and its weights as they are read: the BF16 linear's
 * products, exact in FP32), each warp's FR_CW weight rows read once per FR_R
 * rows, coalesced, the lanes' partial sums added across the warp.  FP32 sums
 * in another order than the CPU's (within the tables' bounds).  Off with
 * DSV3_CUDA_FEWROWS=0 (the loop). */
constexpr int FR_W = 8, FR_CW = 4, FR_R = 8, FR_KC = 256;
struct fewrows_job { int64_t o, n; }; /* an expert's rows o.. (n of them); its weights: list entry blockIdx.y */
int fewrows_env;  /* 0: not read, 1: on, -1: off */
int64_t n_fewrows; /* launches (ds_cuda_fewrows_calls) */

__global__ void k_experts_fewrows(float *out, const float *x, const float *const *wl, const fewrows_job *jobs,
                                  int64_t C, int64_t OC, int bf) {
    __shared__ float xs[FR_R][FR_KC];
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const fewrows_job jb = jobs[blockIdx.y];
    const float *W = wl[blockIdx.y];
    const int64_t j0 = ((int64_t)blockIdx.x * FR_W + w) * FR_CW; /* the warp's first output column */
    for (int64_t r0 = 0; r0 < jb.n; r0 += FR_R) {
        const int nr = jb.n - r0 < FR_R ? (int)(jb.n - r0) : FR_R;
        float acc[FR_CW][FR_R];
#pragma unroll
        for (int cw = 0; cw < FR_CW; cw++)
#pragma unroll
            for (int r = 0; r < FR_R; r++) acc[cw][r] = 0.0f;
        for (int64_t c0 = 0; c0 < C; c0 += FR_KC) {
            const int kc = C - c0 < FR_KC ? (int)(C - c0) : FR_KC;
            __syncthreads(); /* the last slice's readers are done */
            for (int e = threadIdx.x; e < FR_R * FR_KC; e += blockDim.x) {
                const int r = e / FR_KC, k = e % FR_KC;
                const float v = r < nr && k < kc ? x[(jb.o + r0 + r) * C + c0 + k] : 0.0f;
                xs[r][k] = bf ? round_bf16(v) : v;
            }
            __syncthreads();
#pragma unroll
            for (int cw = 0; cw < FR_CW; cw++) {
                const int64_t j = j0 + cw;
                if (j < OC) {
                    const float *wr = W + j * C + c0;
                    for (int k = lane; k < kc; k += 32) {
                        const float wv = bf ? round_bf16(wr[k]) : wr[k];
#pragma unroll
                        for (int r = 0; r < FR_R; r++) acc[cw][r] = fmaf(wv, xs[r][k], acc[cw][r]);
                    }
                }
            }
        }
#pragma unroll
        for (int cw = 0; cw < FR_CW; cw++)
#pragma unroll
            for (int r = 0; r < FR_R; r++) {
                const float sum = warp_sum(acc[cw][r]);
                if (lane == 0 && r < nr && j0 + cw < OC) out[(jb.o + r0 + r) * OC + j0 + cw] = sum;
            }
    }
}

int fewrows_on(void) { return ds_cu_env_on(&fewrows_env, "DSV3_CUDA_FEWROWS"); }

/* out (N, OC) = each expert's rows · W_eᵀ in one launch; 0 where it does not
 * run (off, no rows, or not decode-sized: the grouped paths) */
int fewrows_forward(float *out, const float *inp, const float *const *w, const int64_t *counts, const int64_t *offsets,
                    int64_t E, int64_t C, int64_t OC, int bf) {
    grouped_call *c = &gc_host;
    if (!fewrows_on() || !grouped_list(c, counts, E, 0) || offsets[E] >= (int64_t)GROUPED_MIN_ROWS * c->g) return 0;
    fewrows_job jobs[GMAX];
    for (int i = 0; i < c->g; i++) jobs[i] = fewrows_job{offsets[c->e[i]], counts[c->e[i]]};
    fewrows_job *dj = (fewrows_job *)ds_cu_scratch(SCR_JOBS, (size_t)c->g * sizeof(fewrows_job));
    CU_CHECK(cudaMemcpyAsync(dj, jobs, (size_t)c->g * sizeof(fewrows_job), cudaMemcpyHostToDevice, g_cu.stream));
    const float *const *wl = weights_list(c, w);
    dim3 grid((unsigned)((OC + FR_W * FR_CW - 1) / (FR_W * FR_CW)), (unsigned)c->g);
    k_experts_fewrows<<<grid, FR_W * 32, 0, g_cu.stream>>>(out, inp, wl, dj, C, OC, bf);
    CU_LAUNCHED();
    n_fewrows++;
    return 1;
}

/* ---- BF16 expert GEMMs on the tensor cores: strided-batched cuBLASLt, a call per class ----
 * cuBLAS's grouped call takes no BF16 tensor-core compute with FP32 results
 * (CUDA 13.0), so it ran the BF16 experts on the CUDA cores, and a cuBLASLt
 * call per expert costs more host time (descriptors, algorithm check, launch:
 * ~50 µs measured on the H200 for the ~1B config's experts) than the
 * expert's product takes on the tensor cores (~3 µs).  Here the experts with
 * rows are put in classes by their row count rounded up (batch_rows: a
 * multiple of 16 up to 64, then lt_bucket's two significant bits, so at most
 * 1.5x the rows), and each class is one strided-batched cuBLASLt BF16 GEMM
 * (BF16 operands, FP32 accumulation and result: the BF16 linear's
 * arithmetic) over copies laid out for it: each expert's rows rounded to BF16
 * in a block of the class's row count, zero rows after its own (they add
 * nothing to a weight gradient's sums, and their output rows are dropped),
 * the weights rounded one after another.  Forward and input-gradient results
 * land in blocks of the same shape and are copied (or added: acc) to the
 * expert's rows; weight gradients land in one block per expert and are added
 * to dw[e] (the same single rounding as a GEMM with beta 1).  Off with
 * DSV3_CUDA_BATCHED=0 (the grouped call or the loop, as before). */
int batched_env;          /* 0: not read, 1: on, -1: off */
int batched_refused;      /* cuBLASLt refused a batched BF16 call once: off from then */
int64_t n_batched;        /* batched calls made (ds_cuda_batched_calls) */

int64_t batch_rows(int64_t n) { return n <= 64 ? (n + 15) / 16 * 16 : lt_bucket(n); }

/* a listed expert's place: its rows o.. (n of them) in the permuted buffer,
 * its block of mb rows from row p in the padded copies */
struct batch_job { int64_t o, n, p, mb; };
struct batch_plan {
    grouped_call *c;        /* c->e[0..g): the experts with rows, in class order */
    int ncls;
    int i0[GMAX + 1];       /* class j: listed experts [i0[j], i0[j+1]) */
    batch_job job[GMAX];
    int64_t P, most;        /* padded rows in all; the largest class's row count */
};

int batched_on(void) { return ds_cu_env_on(&batched_env, "DSV3_CUDA_BATCHED") && !batched_refused; }

/* the plan for counts; 0 where the batched path does not run (off, no rows,
 * decode-sized calls: fewer than GROUPED_MIN_ROWS rows an expert on average) */
int batch_plan_make(batch_plan *bp, const int64_t *counts, const int64_t *offsets, int64_t E) {
    grouped_call *c = bp->c;
    if (!batched_on() || !grouped_list(c, counts, E)) return 0;
    /* insertion sort of the listed experts by class (stable: expert order within a class) */
    for (int i = 1; i < c->g; i++) {
        int64_t e = c->e[i], mb = batch_rows(counts[e]);
        int j = i;
        for (; j > 0 && batch_rows(counts[c->e[j - 1]]) > mb; j--) c->e[j] = c->e[j - 1];
        c->e[j] = e;
    }
    bp->ncls = 0, bp->P = 0, bp->most = 0;
    for (int i = 0; i < c->g; i++) {
        int64_t e = c->e[i], mb = batch_rows(counts[e]);
        if (i == 0 || mb != bp->job[i - 1].mb) bp->i0[bp->ncls++] = i;
        bp->job[i] = batch_job{offsets[e], counts[e], bp->P, mb};
        bp->P += mb;
        bp->most = mb > bp->most ? mb : bp->most;
    }
    bp->i0[bp->ncls] = c->g;
    return 1;
}

/* dst: blockIdx.y = listed expert i: its mb rows from row p, the first n of
 * them src's rows o.. rounded to BF16, the rest zero; rows of cols values */
__global__ void k_batch_gather(uint16_t *dst, const float *src, int64_t cols, const batch_job *jobs) {
    const batch_job jb = jobs[blockIdx.y];
    ROWS(r, jb.mb) COLS(c, cols) dst[(jb.p + r) * cols + c] = r < jb.n ? ds_cu_f32_to_bf16(src[(jb.o + r) * cols + c]) : 0;
}
/* the expert's first n rows of src (padded blocks) to dst's rows o..: set, or added (acc) */
__global__ void k_batch_scatter(float *dst, const float *src, int64_t cols, const batch_job *jobs, int acc) {
    const batch_job jb = jobs[blockIdx.y];
    ROWS(r, jb.n) COLS(j, cols) {
        float v = src[(jb.p + r) * cols + j];
        if (acc) dst[(jb.o + r) * cols + j] += v;
        else dst[(jb.o + r) * cols + j] = v;
    }
}
/* weight z of the list rounded to BF16 at dst + z * stride */
__global__ void k_to_bf16_list(uint16_t *dst, int64_t stride, const float *const *src, int64_t n) {
    const float *s = src[blockIdx.y];
    uint16_t *d = dst + blockIdx.y * stride;
    GRID_STRIDE(i, n) d[i] = ds_cu_f32_to_bf16(s[i]);
}
/* dst[z] (n) += src + z * stride */
__global__ void k_add_list(float *const *dst, const float *src, int64_t stride, int64_t n) {
    float *d = dst[blockIdx.y];
    const float *s = src + blockIdx.y * stride;
    GRID_STRIDE(i, n) d[i] += s[i];
}

const batch_job *batch_jobs_dev(const batch_plan *bp) {
    batch_job *d = (batch_job *)ds_cu_scratch(SCR_JOBS, (size_t)bp->c->g * sizeof(batch_job));
    CU_CHECK(cudaMemcpyAsync(d, bp->job, (size_t)bp->c->g * sizeof(batch_job), cudaMemcpyHostToDevice, g_cu.stream));
    return d;
}
/* the plan's experts' rows of x (N, cols) in padded BF16 blocks */
const uint16_t *batch_rows_bf16(int slot, const batch_plan *bp, const batch_job *dj, const float *x, int64_t cols) {
    uint16_t *d = (uint16_t *)ds_cu_scratch(slot, (size_t)(bp->P * cols) * sizeof(uint16_t));
    k_batch_gather<<<dim3(ds_cu_row_grid(bp->most, cols), (unsigned)bp->c->g), ds_cu_row_block(cols), 0, g_cu.stream>>>(
        d, x, cols, dj);
    CU_LAUNCHED();
    return d;
}
/* the plan's experts' weights (n each) rounded to BF16, in class order, up128(n) apart */
const uint16_t *batch_weights_bf16(int slot, const batch_plan *bp, const float *const *w, int64_t n) {
    const float *const *dsrc = weights_list(bp->c, w);
    uint16_t *d = (uint16_t *)ds_cu_scratch(slot, (size_t)(up128(n) * bp->c->g) * sizeof(uint16_t));
    k_to_bf16_list<<<dim3(ds_cu_blocks(n, 256), (unsigned)bp->c->g), 256, 0, g_cu.stream>>>(d, up128(n), dsrc, n);
    CU_LAUNCHED();
    return d;
}
void batch_scatter(float *dst, const float *src, int64_t cols, const batch_plan *bp, const batch_job *dj, int acc) {
    k_batch_scatter<<<dim3(ds_cu_row_grid(bp->most, cols), (unsigned)bp->c->g), ds_cu_row_block(cols), 0, g_cu.stream>>>(
        dst, src, cols, dj, acc);
    CU_LAUNCHED();
}
/* the status of a batched call; a refusal is said once and turns the path off */
int batch_ok(cublasStatus_t st, const char *what) {
    if (st == CUBLAS_STATUS_SUCCESS) return 1;
    if (st != CUBLAS_STATUS_NOT_SUPPORTED) ds_cu_fail(what, cublasLtGetStatusString(st), __FILE__, __LINE__);
    fprintf(stderr, "dsv3: cuda: cuBLASLt has no batched BF16 algorithm for the expert GEMMs (%s); they run as "
                    "before\n", what);
    batched_refused = 1;
    return 0;
}

/* per class, one batched call: D (m x mb an expert, in the padded rows' blocks: expert i's at
 * d + p_i·m) = op(W_i) · rows_iᵀ, with the rows K-major in their blocks (rows + p_i·K) and W_i at
 * wb + i·up128(m·K): stored K-major (m, K) (wtrans 1, the forward) or (K, m) (wtrans 0, the
 * input gradient), leading dimension ldw; 0 on a refusal */
int batch_by_class(const batch_plan *bp, const uint16_t *wb, int wtrans, int64_t ldw, const uint16_t *rows, int64_t K,
                   int64_t m, float *d, const char *what) {
    const int64_t ws = up128(m * K);
    for (int j = 0; j < bp->ncls; j++) {
        const int i = bp->i0[j], nb = bp->i0[j + 1] - i;
        const int64_t mb = bp->job[i].mb, p = bp->job[i].p;
        lt_operand A = {wb + (int64_t)i * ws, CUDA_R_16BF, wtrans, ldw, NULL, 0, ws};
        lt_operand B = {rows + p * K, CUDA_R_16BF, 1, K, NULL, 0, mb * K};
        if (!batch_ok(lt_matmul(m, mb, K, A, B, 0.0f, d + p * m, CUDA_R_32F, m, nb, mb * m), what)) return 0;
    }
    n_batched += bp->ncls;
    return 1;
}

/* out (N, OC) = each expert's rows · W_eᵀ; 0 where the batched path did not run (out untouched) */
int bf16_batched_forward(float *out, const float *inp, const float *const *w, const int64_t *counts,
                         const int64_t *offsets, int64_t E, int64_t C, int64_t OC) {
    static batch_plan bp; /* guarded by the entry lock */
    bp.c = &gc_host;
    if (!batch_plan_make(&bp, counts, offsets, E)) return 0;
    const batch_job *dj = batch_jobs_dev(&bp);
    const uint16_t *x = batch_rows_bf16(SCR_A, &bp, dj, inp, C), *wb = batch_weights_bf16(SCR_B, &bp, w, OC * C);
    float *d = (float *)ds_cu_scratch(SCR_F32, (size_t)(bp.P * OC) * sizeof(float));
    /* as gemm_fwd, per expert: D = outᵀ (OC x mb), A = W (K-major), B = the rows (K-major) */
    if (!batch_by_class(&bp, wb, 1, C, x, C, OC, d, "cublasLtMatmul (batched expert forward)")) return 0;
    batch_scatter(out, d, OC, &bp, dj, 0);
    return 1;
}

/* the grouped backward; returns 0 (nothing written), 1 (done), or 2 (dinp
 * done, the weight gradients not) */
int bf16_batched_backward(float *dinp, float *const *dw, const float *dout, const float *inp, const float *const *w,
                          const int64_t *counts, const int64_t *offsets, int64_t E, int64_t C, int64_t OC, int acc) {
    static batch_plan bp; /* guarded by the entry lock */
    bp.c = &gc_host;
    if (!batch_plan_make(&bp, counts, offsets, E)) return 0;
    const batch_job *dj = batch_jobs_dev(&bp);
    const uint16_t *dy = batch_rows_bf16(SCR_A, &bp, dj, dout, OC);
    if (dinp) {
        const uint16_t *wb = batch_weights_bf16(SCR_B, &bp, w, OC * C);
        float *d = (float *)ds_cu_scratch(SCR_F32, (size_t)(bp.P * C) * sizeof(float));
        /* as gemm_dgrad: D = dXᵀ (C x mb), A = W stored (OC, C) (op N), B = dY (K-major) */
        if (!batch_by_class(&bp, wb, 0, C, dy, OC, C, d, "cublasLtMatmul (batched expert dgrad)")) return 0;
        batch_scatter(dinp, d, C, &bp, dj, acc);
    }
    /* as gemm_wgrad, per expert: dW_eᵀ (C x OC) = X_e (C x mb, op N) · dY_e (OC x mb, op T), into
     * blocks added to dw[e] */
    const uint16_t *x = batch_rows_bf16(SCR_C, &bp, dj, inp, C);
    float *d = (float *)ds_cu_scratch(SCR_D, (size_t)(up128(OC * C) * bp.c->g) * sizeof(float));
    for (int j = 0; j < bp.ncls; j++) {
        const int i = bp.i0[j], nb = bp.i0[j + 1] - i;
        const int64_t mb = bp.job[i].mb, p = bp.job[i].p;
        lt_operand A = {x + p * C, CUDA_R_16BF, 0, C, NULL, 0, mb * C};
        lt_operand B = {dy + p * OC, CUDA_R_16BF, 0, OC, NULL, 0, mb * OC};
        if (!batch_ok(lt_matmul(C, OC, mb, A, B, 0.0f, d + (int64_t)i * up128(OC * C), CUDA_R_32F, C, nb,
                                up128(OC * C)),
                      "cublasLtMatmul (batched expert wgrad)"))
            return dinp ? 2 : 0;
    }
    k_add_list<<<dim3(ds_cu_blocks(OC * C, 256), (unsigned)bp.c->g), 256, 0, g_cu.stream>>>(
        (float *const *)weights_list(bp.c, (const float *const *)dw), d, up128(OC * C), OC * C);
    CU_LAUNCHED();
    n_batched += bp.ncls;
    return 1;
}

/* -1: w8 weights (FP8- or BF16-resident: the loop), or a table not of this
 * backend's precisions; else 0 FP32, 1 BF16, 2 FP8 */
int grouped_precision(const struct ds_ops *self, const ds_fp8w *const *w8, int64_t E) {
    if (w8)
        for (int64_t e = 0; e < E; e++)
            if (w8[e]) return -1;
    if (self->linear_forward == ds_cu_matmul_forward) return 0;
    if (self->linear_forward == ds_cu_matmul_forward_bf16) return 1;
    if (self->linear_forward == ds_cu_linear_forward_fp8) return 2;
    return -1;
}
} // namespace

/* ---- FP8: quantization -------------------------------------------------------- */
namespace {

__device__ __forceinline__ float group_scale(float a) {
    if (a < 1e-4f) a = 1e-4f;           /* DS_QUANT_AMAX_FLOOR */
    float s = a / 448.0f;
    return s > 0 ? s : 1.0f;
}
__device__ __forceinline__ uint8_t e4m3(float v) {
    return (uint8_t)__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);
}
__device__ __forceinline__ float e4m3_f32(uint8_t c) {
    __half_raw h = __nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)c, __NV_E4M3);
    return __half2float(__half(h));
}

/* one 1x128 tile (row r, block kb) by one warp; codes at q[r * kld + c], the
 * columns from Cc to the tile's end (kld > Cc: K padded) written as 0 */
__device__ __forceinline__ void quant_tile(uint8_t *q, int64_t kld, float *s, const float *x, int64_t R, int64_t Cc,
                                           int64_t KB, int64_t r, int64_t kb, int lane) {
    int64_t c0 = kb * 128;
    const float *xr = x + r * Cc;
    float v[4], a = 0.0f;
    for (int j = 0; j < 4; j++) {
        int64_t c = c0 + lane + 32 * j;
        v[j] = c < Cc ? xr[c] : 0.0f;
        a = fmaxf(a, fabsf(v[j]));   /* fmaxf skips NaN, as the CPU's amax */
    }
    a = warp_max(a);
    float sc = group_scale(a);
    if (lane == 0) s[kb * R + r] = sc;
    for (int j = 0; j < 4; j++) {
        int64_t c = c0 + lane + 32 * j;
        if (c < Cc) q[r * kld + c] = e4m3(v[j] / sc);
        else if (c < kld) q[r * kld + c] = 0;
    }
}

/* 1x128 tiles along the columns of x (R, Cc): one warp per (row, tile).
 * q (R, kld) codes (kld >= Cc, at most the tiles' end); scale s[kb * R + r] (VEC128 layout). */
__global__ void k_quant_1x128(uint8_t *q, int64_t kld, float *s, const float *x, int64_t R, int64_t Cc) {
    int64_t KB = (Cc + 127) / 128, nw = (int64_t)gridDim.x * (blockDim.x >> 5);
    int lane = threadIdx.x & 31;
    for (int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; warp < R * KB; warp += nw)
        quant_tile(q, kld, s, x, R, Cc, KB, warp / KB, warp % KB, lane);
}

/* 128x1 tiles (128 rows of one column) of x (R, Cc), codes written transposed:
 * qt (Cc, kld) row-major (kld = up128(R); the pad as 0), so the tile runs
 * along qt's rows; scale s[rb * Cc + c] (the CPU's 128x1 layout, which is
 * VEC128 for qt).  A block of 8 warps per (band of 128 rows, 32 columns): the
 * band's rows read whole (coalesced) into shared memory, then a warp per
 * column, a lane 4 rows of it: 4 codes in one 32-bit store, the warp's 128
 * bytes one row of qt (a thread per column wrote a byte a row apart). */
struct band_job { int64_t o, n, qo, so; }; /* rows x + o * Cc (n), codes at qt + qo, scales at s + so */
__device__ __forceinline__ void quant_band(uint8_t *qt, int64_t kld, float *s, const float *x, int64_t R, int64_t Cc,
                                           int64_t rb, int64_t c0, float (*sh)[33]) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int64_t r0 = rb * 128;
    __syncthreads(); /* the previous band's reads are done */
    for (int r = w; r < 128; r += 8) {
        int64_t gr = r0 + r, gc = c0 + lane;
        sh[r][lane] = gr < R && gc < Cc ? x[gr * Cc + gc] : 0.0f;
    }
    __syncthreads();
    for (int col = w; col < 32; col += 8) {
        const int64_t c = c0 + col;
        float v[4], a = 0.0f;
        for (int i = 0; i < 4; i++) {
            v[i] = sh[lane * 4 + i][col];
            a = fmaxf(a, fabsf(v[i])); /* fmaxf skips NaN, as the CPU's amax; the pad's zeros change nothing */
        }
        a = warp_max(a);
        if (c >= Cc) continue; /* the whole warp */
        float sc = group_scale(a);
        if (lane == 0) s[rb * Cc + c] = sc;
        uint32_t word = 0;
        for (int i = 0; i < 4; i++)
            if (r0 + lane * 4 + i < R) word |= (uint32_t)e4m3(v[i] / sc) << (8 * i);
        *(uint32_t *)(qt + c * kld + r0 + lane * 4) = word;
    }
}
/* the listed row blocks (blockIdx.z: list entry, or `one` when jobs is NULL),
 * each expert's codes (Cc, up128(n)) at qt + qo */
__global__ void k_quant_128x1_t(uint8_t *qt, float *s, const float *x, int64_t Cc, const band_job *jobs, band_job one) {
    __shared__ float sh[128][33];
    const band_job jb = jobs ? jobs[blockIdx.z] : one;
    const int64_t RB = (jb.n + 127) / 128;
    for (int64_t rb = blockIdx.y; rb < RB; rb += gridDim.y)
        quant_band(qt + jb.qo, RB * 128, s + jb.so, x + jb.o * Cc, jb.n, Cc, rb, (int64_t)blockIdx.x * 32, sh);
}
dim3 band_grid(int64_t Cc, int64_t RB, int64_t jobs) {
    return dim3((unsigned)((Cc + 31) / 32), (unsigned)(RB < 65535 ? (RB > 0 ? RB : 1) : 65535), (unsigned)jobs);
}

/* 128x128 blocks of w (R, Cc): block per (rb, cb).  q (R, kld) and/or qt (Cc,
 * kld) codes (kld >= Cc, or for qt kld = up128(R): the pad of the block as
 * 0); scale s[rb * ld + cb] and/or st[cb * ldt + rb].  qt's codes go through
 * shared memory (tq, 128 x TQ bytes) and out a 32-bit word (4 rows) a thread,
 * a warp 128 contiguous bytes of a qt row (a thread per code wrote bytes a row
 * apart). */
enum { TQ = 132 };
__device__ void quant_128x128_block(uint8_t *q, uint8_t *qt, int64_t kld, float *s, int64_t ld, float *st, int64_t ldt,
                                    const float *w, int64_t R, int64_t Cc, float *sh, uint8_t *tq) {
    int64_t rb = blockIdx.y, cb = blockIdx.x, r0 = rb * 128, c0 = cb * 128;
    int64_t nr = R - r0 < 128 ? R - r0 : 128, nc = Cc - c0 < 128 ? Cc - c0 : 128;
    float a = 0.0f;
    for (int64_t i = threadIdx.x; i < nr * nc; i += blockDim.x) a = fmaxf(a, fabsf(w[(r0 + i / nc) * Cc + c0 + i % nc]));
    a = block_max(a, sh);
    float sc = group_scale(a);
    if (threadIdx.x == 0) {
        if (s) s[rb * ld + cb] = sc;
        if (st) st[cb * ldt + rb] = sc;
    }
    for (int64_t i = threadIdx.x; i < nr * nc; i += blockDim.x) {
        int64_t r = i / nc, c = i % nc;
        uint8_t code = e4m3(w[(r0 + r) * Cc + c0 + c] / sc);
        if (q) q[(r0 + r) * kld + c0 + c] = code;
        if (qt) tq[c * TQ + r] = code;
    }
    /* the K pad inside this block: columns Cc.. of q's rows (last column block),
     * rows R.. of qt's rows (last row block) */
    if (q && c0 + nc < kld && nc < 128)
        for (int64_t i = threadIdx.x; i < nr * (128 - nc); i += blockDim.x) {
            int64_t r = r0 + i / (128 - nc), c = c0 + nc + i % (128 - nc);
            if (c < kld) q[r * kld + c] = 0;
        }
    if (qt) {
        for (int64_t i = threadIdx.x; i < nc * (128 - nr); i += blockDim.x) tq[(i / (128 - nr)) * TQ + nr + i % (128 - nr)] = 0;
        __syncthreads();
        for (int64_t i = threadIdx.x; i < nc * 32; i += blockDim.x) {
            int64_t c = i / 32, wd = i % 32;
            *(uint32_t *)(qt + (c0 + c) * kld + r0 + wd * 4) = *(const uint32_t *)(tq + c * TQ + wd * 4);
        }
    }
}

__global__ void k_quant_128x128(uint8_t *q, uint8_t *qt, int64_t kld, float *s, int64_t ld, float *st, int64_t ldt,
                                const float *w, int64_t R, int64_t Cc) {
    __shared__ float sh[32];
    __shared__ uint32_t tq[128 * TQ / 4];
    quant_128x128_block(q, qt, kld, s, ld, st, ldt, w, R, Cc, sh, (uint8_t *)tq);
}
/* the same over a list of weights (blockIdx.z): weight z's codes at
 * q + z * qstride (or qt), its scales at s + z * sstride (or st) */
__global__ void k_quant_128x128_list(uint8_t *q, uint8_t *qt, int64_t kld, int64_t qstride, float *s, int64_t ld,
                                     float *st, int64_t ldt, int64_t sstride, const float *const *wl, int64_t R,
                                     int64_t Cc) {
    __shared__ float sh[32];
    __shared__ uint32_t tq[128 * TQ / 4];
    const int64_t z = blockIdx.z;
    quant_128x128_block(q ? q + z * qstride : NULL, qt ? qt + z * qstride : NULL, kld, s ? s + z * sstride : NULL, ld,
                        st ? st + z * sstride : NULL, ldt, wl[z], R, Cc, sh, (uint8_t *)tq);
}

/* 1x128 tiles of the rows of the experts' permuted activations x (N, Cc),
 * all experts at once (a tile lies in one row, so its codes and scale are the
 * per-expert call's), with each expert's scales in its own VEC128 block: the
 * rows of expert e (offsets[e] <= r < offsets[e+1], n_e of them) at
 * s[KB * offsets[e] + kb * n_e + (r - offsets[e])].  Codes q (N, kld) as
 * k_quant_1x128.  offsets (E+1) in device memory. */
__global__ void k_quant_1x128_experts(uint8_t *q, int64_t kld, float *s, const float *x, int64_t N, int64_t Cc,
                                      const int64_t *offsets, int64_t E) {
    int64_t KB = (Cc + 127) / 128, nw = (int64_t)gridDim.x * (blockDim.x >> 5);
    int lane = threadIdx.x & 31;
    for (int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; warp < N * KB; warp += nw) {
        /* the largest e with offsets[e] <= r: experts without rows share their
         * successor's offset, so it is the one whose rows hold r */
        int64_t r = warp / KB, kb = warp % KB, lo = 0, hi = E;
        while (hi - lo > 1) {
            int64_t mid = (lo + hi) / 2;
            if (offsets[mid] <= r) lo = mid;
            else hi = mid;
        }
        int64_t o = offsets[lo], n = offsets[lo + 1] - o;
        /* the expert's block viewed as its own (n, Cc) operand */
        quant_tile(q + o * kld, kld, s + KB * o, x + o * Cc, n, Cc, KB, r - o, kb, lane);
    }
}


/* copy (rows, cols) scales with row stride ld_in to row stride ld_out */
__global__ void k_restride(float *dst, int64_t ld_out, const float *src, int64_t ld_in, int64_t rows, int64_t cols) {
    ROWS(r, rows) COLS(c, cols) dst[r * ld_out + c] = src[r * ld_in + c];
}

/* ---- FP8: dsv3's own block-scaled GEMM ------------------------------------------
 * D (m x n col-major, ldd) = Σ_kb fma(bsum, sA(r, kb)·sB(c, kb), D) with D
 * starting at 0 or (beta) at its contents; bsum = Σ_{k in kb} a·b in k order
 * (exact products: the same bits as ds_gemm_blocked_).  A: m rows, B: n rows,
 * both K-major codes (fp8_operand, common.cuh). */
enum { OT = 16 };
__global__ void k_fp8_gemm_own(float *D, int64_t ldd, fp8_operand A, fp8_operand B, int64_t m, int64_t n, int64_t K,
                               int beta) {
    __shared__ float ta[OT][129], tb[OT][129];
    int tx = threadIdx.x, ty = threadIdx.y, tid = ty * OT + tx;
    int64_t r = (int64_t)blockIdx.x * OT + tx, c = (int64_t)blockIdx.y * OT + ty;
    float acc = 0.0f;
    if (beta && r < m && c < n) acc = D[c * ldd + r];
    int64_t KB = (K + 127) / 128;
    for (int64_t kb = 0; kb < KB; kb++) {
        int64_t k0 = kb * 128, nk = K - k0 < 128 ? K - k0 : 128;
        __syncthreads();
        for (int i = tid; i < OT * 128; i += OT * OT) {
            int row = i / 128, kk = i % 128;
            int64_t ra = (int64_t)blockIdx.x * OT + row, rbb = (int64_t)blockIdx.y * OT + row;
            ta[row][kk] = ra < m && kk < nk ? e4m3_f32(A.q[ra * A.kld + k0 + kk]) : 0.0f;
            tb[row][kk] = rbb < n && kk < nk ? e4m3_f32(B.q[rbb * B.kld + k0 + kk]) : 0.0f;
        }
        __syncthreads();
        if (r < m && c < n) {
            float bsum = 0.0f;
            for (int kk = 0; kk < nk; kk++) bsum = fmaf(ta[tx][kk], tb[ty][kk], bsum);
            acc = fmaf(bsum, fp8_scale(A, r, kb, m) * fp8_scale(B, c, kb, n), acc);
        }
    }
    if (r < m && c < n) D[c * ldd + r] = acc;
}

int fp8_own_only = -1;   /* -1: not read from DSV3_CUDA_FP8 yet */
int64_t n_lt, n_own, n_mma; /* FP8 GEMMs on cuBLASLt, the CUDA-core kernel, the tensor-core one (fp8mma.cu) */

/* One block-scaled product; A and B as above.  cuBLASLt first unless told
 * otherwise, over K padded to the 128-block's end where both operands carry
 * the zero pad (the sums are the same: the pad's codes are 0), so a K that is
 * not a multiple of 16 (an expert's row count in wgrad) still runs there.
 * Where it has no algorithm: the tensor-core kernel (fp8mma.cu) if on, else
 * the CUDA-core one; DSV3_CUDA_FP8=own: the CUDA-core one always (the CPU's
 * bits). */
int fp8_own(void) {
    if (fp8_own_only < 0) {
        const char *e = getenv("DSV3_CUDA_FP8");
        fp8_own_only = e && !strcmp(e, "own");
    }
    return fp8_own_only;
}
void fp8_gemm(float *D, int64_t ldd, const fp8_operand &A, const fp8_operand &B, int64_t m, int64_t n, int64_t K,
              int beta) {
    fp8_own();
    int64_t Kg = A.kld >= up128(K) && B.kld >= up128(K) ? up128(K) : K;
    if (!fp8_own_only && Kg % 16 == 0 && A.kld % 16 == 0 && B.kld % 16 == 0) {
        lt_operand a = {A.q, CUDA_R_8F_E4M3, 1, A.kld, A.s,
                        A.blk ? CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F : CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F};
        lt_operand b = {B.q, CUDA_R_8F_E4M3, 1, B.kld, B.s,
                        B.blk ? CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F : CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F};
        if (lt_matmul(m, n, Kg, a, b, beta ? 1.0f : 0.0f, D, CUDA_R_32F, ldd) == CUBLAS_STATUS_SUCCESS) {
            n_lt++;
            return;
        }
    }
    if (!fp8_own_only && m < INT32_MAX && n < INT32_MAX && K < INT32_MAX && ds_cu_fp8_mma_ready()) {
        fp8_job j = {D, ldd, A, B, m, n, K, beta, 0, 0, 0};
        ds_cu_fp8_mma(&j, 1);
        n_mma++;
        return;
    }
    n_own++;
    dim3 grid((unsigned)((m + OT - 1) / OT), (unsigned)((n + OT - 1) / OT)), block(OT, OT);
    k_fp8_gemm_own<<<grid, block, 0, g_cu.stream>>>(D, ldd, A, B, m, n, K, beta);
    CU_LAUNCHED();
}

int64_t up4(int64_t x) { return (x + 3) / 4 * 4; }

/* The operands quantized here carry K padded with zero codes to the 128-block's
 * end (row stride up128(K)), so fp8_gemm may hand cuBLASLt any K. */
/* activation (R, Cc) -> codes (R, up128(Cc)) + VEC128 scales, in scratch slots */
fp8_operand quant_1x128(int slot_q, int slot_s, const float *x, int64_t R, int64_t Cc) {
    int64_t KB = (Cc + 127) / 128, kld = up128(Cc);
    uint8_t *q = (uint8_t *)ds_cu_scratch(slot_q, (size_t)(R * kld));
    float *s = (float *)ds_cu_scratch(slot_s, (size_t)(R * KB) * sizeof(float));
    int64_t threads = R * KB * 32;
    k_quant_1x128<<<ds_cu_blocks(threads, 256), 256, 0, g_cu.stream>>>(q, kld, s, x, R, Cc);
    CU_LAUNCHED();
    return fp8_operand{q, s, 0, 0, kld};
}
/* (R, Cc) -> transposed codes (Cc, up128(R)) with 128x1 tiles = VEC128 along R */
fp8_operand quant_128x1_t(int slot_q, int slot_s, const float *x, int64_t R, int64_t Cc) {
    int64_t RB = (R + 127) / 128, kld = up128(R);
    uint8_t *q = (uint8_t *)ds_cu_scratch(slot_q, (size_t)(kld * Cc));
    float *s = (float *)ds_cu_scratch(slot_s, (size_t)(RB * Cc) * sizeof(float));
    k_quant_128x1_t<<<band_grid(Cc, RB, 1), 256, 0, g_cu.stream>>>(q, s, x, Cc, NULL, band_job{0, R, 0, 0});
    CU_LAUNCHED();
    return fp8_operand{q, s, 0, 0, kld};
}
/* weight (R, Cc) 128x128: codes as stored (R, up128(Cc)) (trans 0) or
 * transposed (Cc, up128(R)) (trans 1) */
fp8_operand quant_128x128(int slot_q, int slot_s, const float *w, int64_t R, int64_t Cc, int trans) {
    int64_t RB = (R + 127) / 128, CB = (Cc + 127) / 128;
    int64_t ld = trans ? up4(RB) : up4(CB), nblk_rows = trans ? CB : RB;
    int64_t kld = trans ? up128(R) : up128(Cc), rows = trans ? Cc : R;
    uint8_t *q = (uint8_t *)ds_cu_scratch(slot_q, (size_t)(rows * kld));
    float *s = (float *)ds_cu_scratch(slot_s, (size_t)(nblk_rows * ld) * sizeof(float));
    dim3 grid((unsigned)CB, (unsigned)RB);
    if (trans) k_quant_128x128<<<grid, 256, 0, g_cu.stream>>>(NULL, q, kld, NULL, 0, s, ld, w, R, Cc);
    else k_quant_128x128<<<grid, 256, 0, g_cu.stream>>>(q, NULL, kld, s, ld, NULL, 0, w, R, Cc);
    CU_LAUNCHED();
    return fp8_operand{q, s, 1, ld, kld};
}

} // namespace

extern "C" int64_t ds_cuda_fewrows_calls(void) { return n_fewrows; }
extern "C" int ds_cuda_fewrows_set(int on) {
    std::lock_guard<std::mutex> g(g_cu_lock);
    int was = fewrows_on();
    fewrows_env = on ? 1 : -1;
    return was;
}
extern "C" int64_t ds_cuda_batched_calls(void) { return n_batched; }
extern "C" int ds_cuda_batched_set(int on) {
    int prev = batched_on();
    batched_env = on ? 1 : -1;
    if (on) batched_refused = 0;
    return prev;
}

extern "C" int ds_cuda_fp8_force_own(int on) {
    int prev = fp8_own_only > 0;
    fp8_own_only = on ? 1 : 0;
    return prev;
}
extern "C" void ds_cuda_fp8_counts(int64_t *lt, int64_t *own) {
    if (lt) *lt = n_lt;
    if (own) *own = n_own;
}
extern "C" void ds_cuda_fp8_mma_counts(int64_t *jobs, int64_t *launches) {
    if (jobs) *jobs = n_mma;
    if (launches) *launches = g_cu_fp8_mma_launches;
}

/* ---- FP8: the linear entries -------------------------------------------------- */
extern "C" void ds_cu_linear_forward_fp8(float *out, const float *inp, const float *w, const float *bias, int64_t N,
                                         int64_t C, int64_t OC) {
    CU_ENTRY();
    if (empty_product(out, bias, N, C, OC)) return;
    fp8_operand x = quant_1x128(SCR_A, SCR_SA, inp, N, C);
    fp8_operand wq = quant_128x128(SCR_B, SCR_SB, w, OC, C, 0);
    fp8_gemm(out, OC, wq, x, OC, N, C, 0);   /* outᵀ (OC x N) = W (OC rows) · X (N rows) */
    add_bias(out, bias, N, OC);
}

extern "C" void ds_cu_linear_backward_fp8(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                                          const float *w, int64_t N, int64_t C, int64_t OC, int acc) {
    CU_ENTRY();
    if (N <= 0) return;
    if (C > 0 && OC > 0) {
        if (dinp) {
            /* dXᵀ (C x N) = Wᵀ (C rows, inner OC) · dY (N rows, inner OC) */
            fp8_operand dy = quant_1x128(SCR_A, SCR_SA, dout, N, OC);
            fp8_operand wt = quant_128x128(SCR_B, SCR_SB, w, OC, C, 1);
            float *dx = acc ? (float *)ds_cu_scratch(SCR_F32, (size_t)(N * C) * sizeof(float)) : dinp;
            fp8_gemm(dx, C, wt, dy, C, N, OC, 0);
            if (acc) {
                k_add<<<ds_cu_blocks(N * C, 256), 256, 0, g_cu.stream>>>(dinp, dx, N * C);
                CU_LAUNCHED();
            }
        }
        if (dw) {
            /* dWᵀ (C x OC) += Xᵀ (C rows, inner N) · dYᵀ (OC rows, inner N) */
            fp8_operand xt = quant_128x1_t(SCR_C, SCR_SC, inp, N, C);
            fp8_operand dyt = quant_128x1_t(SCR_D, SCR_SD, dout, N, OC);
            fp8_gemm(dw, C, xt, dyt, C, OC, N, 1);
        }
    } else if (dinp && !acc && C > 0) {
        CU_CHECK(cudaMemsetAsync(dinp, 0, (size_t)(N * C) * sizeof(float), g_cu.stream));
    }
    dbias_sum(dbias, dout, N, OC, 1);
}

/* ---- FP8: the grouped expert linears ---------------------------------------------------
 * The per-expert FP8 linear quantized every operand per expert: about a dozen
 * launches per expert and product.  Here each operand is quantized once per
 * call for all listed experts (the activations' 1x128 tiles lie in one row, so
 * the whole permuted buffer at once gives each expert's codes and scales;
 * the weights' 128x128 blocks by one kernel over the pointer list; the
 * weight gradient's 128x1 bands per expert by one kernel over a job list), in
 * the per-expert layouts, then all experts' products in one launch of the
 * tensor-core kernel (fp8mma.cu; cuBLASLt has no grouped FP8 call), or where
 * that is off one block-scaled GEMM per expert: the same codes, scales and
 * products as the loop. */
namespace {
/* E+1 offsets to the device */
const int64_t *offsets_dev(const int64_t *offsets, int64_t E) {
    int64_t *d = (int64_t *)ds_cu_scratch(SCR_OFFS, (size_t)(E + 1) * sizeof(int64_t));
    CU_CHECK(cudaMemcpyAsync(d, offsets, (size_t)(E + 1) * sizeof(int64_t), cudaMemcpyHostToDevice, g_cu.stream));
    return d;
}
/* the listed experts' weights (R, Cc) as 128x128 codes: as stored
 * ((R, up128(Cc)) each) or transposed ((Cc, up128(R)) each), like quant_128x128 */
fp8_operand weights_128x128(int slot_q, int slot_s, const grouped_call *c, const float *const *w, int64_t R,
                            int64_t Cc, int trans, int64_t *qstride, int64_t *sstride) {
    int64_t RB = (R + 127) / 128, CB = (Cc + 127) / 128;
    int64_t ld = trans ? up4(RB) : up4(CB), nblk_rows = trans ? CB : RB;
    int64_t kld = trans ? up128(R) : up128(Cc), rows = trans ? Cc : R;
    *qstride = rows * kld, *sstride = nblk_rows * ld;
    const float *const *dsrc = weights_list(c, w);
    uint8_t *q = (uint8_t *)ds_cu_scratch(slot_q, (size_t)(*qstride * c->g));
    float *s = (float *)ds_cu_scratch(slot_s, (size_t)(*sstride * c->g) * sizeof(float));
    dim3 grid((unsigned)CB, (unsigned)RB, (unsigned)c->g);
    if (trans) k_quant_128x128_list<<<grid, 256, 0, g_cu.stream>>>(NULL, q, kld, *qstride, NULL, 0, s, ld, *sstride, dsrc, R, Cc);
    else k_quant_128x128_list<<<grid, 256, 0, g_cu.stream>>>(q, NULL, kld, *qstride, s, ld, NULL, 0, *sstride, dsrc, R, Cc);
    CU_LAUNCHED();
    return fp8_operand{q, s, 1, ld, kld};
}
/* the experts' rows of x (N, Cc) as 1x128 codes (N, up128(Cc)), scales per expert */
fp8_operand rows_1x128(int slot_q, int slot_s, const float *x, int64_t N, int64_t Cc, const int64_t *doff, int64_t E) {
    int64_t KB = (Cc + 127) / 128, kld = up128(Cc);
    uint8_t *q = (uint8_t *)ds_cu_scratch(slot_q, (size_t)(N * kld));
    float *s = (float *)ds_cu_scratch(slot_s, (size_t)(N * KB) * sizeof(float));
    k_quant_1x128_experts<<<ds_cu_blocks(N * KB * 32, 256), 256, 0, g_cu.stream>>>(q, kld, s, x, N, Cc, doff, E);
    CU_LAUNCHED();
    return fp8_operand{q, s, 0, 0, kld};
}
/* expert i's part of rows_1x128's operand */
fp8_operand rows_of(const fp8_operand &a, int64_t o, int64_t Cc) {
    return fp8_operand{a.q + o * a.kld, a.s + ((Cc + 127) / 128) * o, 0, 0, a.kld};
}

/* The experts' products: one launch of the tensor-core kernel (fp8mma.cu)
 * where it is on, else one fp8_gemm each. */
fp8_job gj[GMAX]; /* guarded by the entry lock */
void fp8_products(fp8_job *j, int nj) {
    if (!fp8_own() && ds_cu_fp8_mma_ready()) {
        ds_cu_fp8_mma(j, nj);
        n_mma += nj;
        return;
    }
    for (int i = 0; i < nj; i++) fp8_gemm(j[i].D, j[i].ldd, j[i].a, j[i].b, j[i].m, j[i].n, j[i].K, j[i].beta);
}

int fp8_grouped_forward(float *out, const float *inp, const float *const *w, const int64_t *counts,
                        const int64_t *offsets, int64_t E, int64_t C, int64_t OC) {
    grouped_call *c = &gc_host;
    if (!grouped_enabled() || !grouped_list(c, counts, E)) return 0;
    fp8_operand x = rows_1x128(SCR_A, SCR_SA, inp, offsets[E], C, offsets_dev(offsets, E), E);
    int64_t qs, ss;
    fp8_operand wq = weights_128x128(SCR_B, SCR_SB, c, w, OC, C, 0, &qs, &ss);
    for (int i = 0; i < c->g; i++) {
        int64_t e = c->e[i], o = offsets[e];
        fp8_operand we = {wq.q + i * qs, wq.s + i * ss, 1, wq.ld, wq.kld};
        gj[i] = fp8_job{out + o * OC, OC, we, rows_of(x, o, C), OC, counts[e], C, 0, 0, 0, 0};
    }
    fp8_products(gj, c->g);
    return 1;
}

int fp8_grouped_backward(float *dinp, float *const *dw, const float *dout, const float *inp, const float *const *w,
                         const int64_t *counts, const int64_t *offsets, int64_t E, int64_t C, int64_t OC, int acc) {
    grouped_call *c = &gc_host;
    if (!grouped_enabled() || !grouped_list(c, counts, E)) return 0;
    const int64_t N = offsets[E];
    const int64_t *doff = offsets_dev(offsets, E);
    if (dinp) {
        /* dXᵀ (C x n) = Wᵀ (C rows, inner OC) · dY (n rows, inner OC), per expert */
        fp8_operand dy = rows_1x128(SCR_A, SCR_SA, dout, N, OC, doff, E);
        int64_t qs, ss;
        fp8_operand wt = weights_128x128(SCR_B, SCR_SB, c, w, OC, C, 1, &qs, &ss);
        float *dx = acc ? (float *)ds_cu_scratch(SCR_F32, (size_t)(N * C) * sizeof(float)) : dinp;
        for (int i = 0; i < c->g; i++) {
            int64_t e = c->e[i], o = offsets[e];
            fp8_operand we = {wt.q + i * qs, wt.s + i * ss, 1, wt.ld, wt.kld};
            gj[i] = fp8_job{dx + o * C, C, we, rows_of(dy, o, OC), C, counts[e], OC, 0, 0, 0, 0};
        }
        fp8_products(gj, c->g);
        if (acc) {
            k_add<<<ds_cu_blocks(N * C, 256), 256, 0, g_cu.stream>>>(dinp, dx, N * C);
            CU_LAUNCHED();
        }
    }
    /* dWᵀ (C x OC) += Xᵀ (C rows, inner n) · dYᵀ (OC rows, inner n): 128x1 bands per expert */
    band_job jobs[2 * GMAX];
    int64_t qx = 0, sx = 0, qy = 0, sy = 0, most = 0;
    for (int i = 0; i < c->g; i++) {
        int64_t e = c->e[i], n = counts[e], RB = (n + 127) / 128;
        jobs[i] = band_job{offsets[e], n, qx, sx};
        jobs[c->g + i] = band_job{offsets[e], n, qy, sy};
        qx += C * up128(n), sx += RB * C, qy += OC * up128(n), sy += RB * OC;
        most = RB > most ? RB : most;
    }
    band_job *dj = (band_job *)ds_cu_scratch(SCR_JOBS, (size_t)(2 * c->g) * sizeof(band_job));
    CU_CHECK(cudaMemcpyAsync(dj, jobs, (size_t)(2 * c->g) * sizeof(band_job), cudaMemcpyHostToDevice, g_cu.stream));
    uint8_t *xq = (uint8_t *)ds_cu_scratch(SCR_C, (size_t)qx), *yq = (uint8_t *)ds_cu_scratch(SCR_D, (size_t)qy);
    float *xs = (float *)ds_cu_scratch(SCR_SC, (size_t)sx * sizeof(float));
    float *ys = (float *)ds_cu_scratch(SCR_SD, (size_t)sy * sizeof(float));
    k_quant_128x1_t<<<band_grid(C, most, c->g), 256, 0, g_cu.stream>>>(xq, xs, inp, C, dj, band_job{});
    CU_LAUNCHED();
    k_quant_128x1_t<<<band_grid(OC, most, c->g), 256, 0, g_cu.stream>>>(yq, ys, dout, OC, dj + c->g, band_job{});
    CU_LAUNCHED();
    for (int i = 0; i < c->g; i++) {
        int64_t e = c->e[i], n = counts[e];
        fp8_operand xt = {xq + jobs[i].qo, xs + jobs[i].so, 0, 0, up128(n)};
        fp8_operand dyt = {yq + jobs[c->g + i].qo, ys + jobs[c->g + i].so, 0, 0, up128(n)};
        gj[i] = fp8_job{dw[e], C, xt, dyt, C, OC, n, 1, 0, 0, 0};
    }
    fp8_products(gj, c->g);
    return 1;
}
} // namespace

extern "C" void ds_cu_grouped_linear_forward(const struct ds_ops *self, float *out, const float *inp,
                                             const float *const *w, const ds_fp8w *const *w8, const int64_t *counts,
                                             const int64_t *offsets, int64_t E, int64_t C, int64_t OC) {
    const int bf = grouped_precision(self, w8, E);
    if (bf == 2 && C > 0 && OC > 0) {
        CU_ENTRY();
        if (fp8_grouped_forward(out, inp, w, counts, offsets, E, C, OC)) return;
    } else if (bf >= 0 && C > 0 && OC > 0) {
        CU_ENTRY();
        if (fewrows_forward(out, inp, w, counts, offsets, E, C, OC, bf)) return;
        if (bf == 1 && bf16_batched_forward(out, inp, w, counts, offsets, E, C, OC)) return;
        grouped_call *c = &gc_host;
        if (grouped_on(bf) && grouped_list(c, counts, E) && (!bf || bf16_grouped_pays(offsets[E], c->g, C, OC))) {
            const float *x = bf ? rounded(SCR_A, inp, offsets[E] * C) : inp;
            const float *wr = bf ? rounded_weights(SCR_B, c, w, OC * C) : NULL;
            for (int i = 0; i < c->g; i++) {
                int64_t e = c->e[i], o = offsets[e];
                grouped_set(c, i, CUBLAS_OP_T, CUBLAS_OP_N, OC, counts[e], C, C, C, OC, 0.0f,
                            bf ? wr + (int64_t)i * OC * C : w[e], x + o * C, out + o * OC);
            }
            if (grouped_run(c, bf)) return;
        }
    } /* the entry lock is released: the loop takes it per expert */
    ds_grouped_linear_forward_ref(self, out, inp, w, w8, counts, offsets, E, C, OC);
}

extern "C" void ds_cu_grouped_linear_backward(const struct ds_ops *self, float *dinp, float *const *dw,
                                              const float *dout, const float *inp, const float *const *w,
                                              const int64_t *counts, const int64_t *offsets, int64_t E, int64_t C,
                                              int64_t OC, int acc) {
    const int bf = grouped_precision(self, NULL, E);
    int dinp_done = 0;
    if (bf == 2 && C > 0 && OC > 0) {
        CU_ENTRY();
        if (fp8_grouped_backward(dinp, dw, dout, inp, w, counts, offsets, E, C, OC, acc)) return;
    } else if (bf >= 0 && C > 0 && OC > 0) {
        CU_ENTRY();
        const int done = bf == 1 ? bf16_batched_backward(dinp, dw, dout, inp, w, counts, offsets, E, C, OC, acc) : 0;
        if (done == 1) return;
        if (done == 2) dinp_done = dinp != NULL;
        grouped_call *c = &gc_host;
        if (!done && grouped_on(bf) && grouped_list(c, counts, E) &&
            (!bf || bf16_grouped_pays(offsets[E], c->g, C, OC))) {
            const int64_t N = offsets[E];
            const float *dy = bf ? rounded(SCR_A, dout, N * OC) : dout;
            int ok = 1;
            if (dinp) {
                /* dX_e (C x n col-major) = W_e (C x OC, op N) · dY_e (OC x n, op N) */
                const float *wr = bf ? rounded_weights(SCR_B, c, w, OC * C) : NULL;
                for (int i = 0; i < c->g; i++) {
                    int64_t e = c->e[i], o = offsets[e];
                    grouped_set(c, i, CUBLAS_OP_N, CUBLAS_OP_N, C, counts[e], OC, C, OC, C, acc ? 1.0f : 0.0f,
                                bf ? wr + (int64_t)i * OC * C : w[e], dy + o * OC, dinp + o * C);
                }
                ok = grouped_run(c, bf);
            }
            if (ok) {
                /* dW_eᵀ (C x OC) += X_e (C x n, op N) · dY_e (OC x n, op T) */
                const float *x = bf ? rounded(SCR_C, inp, N * C) : inp;
                for (int i = 0; i < c->g; i++) {
                    int64_t e = c->e[i], o = offsets[e];
                    grouped_set(c, i, CUBLAS_OP_N, CUBLAS_OP_T, C, OC, counts[e], C, OC, C, 1.0f, x + o * C,
                                dy + o * OC, dw[e]);
                }
                if (grouped_run(c, bf)) return;
                dinp_done = dinp != NULL; /* the loop for the weight gradients alone */
            }
        }
    } /* the entry lock is released: the loop takes it per expert */
    ds_grouped_linear_backward_ref(self, dinp_done ? NULL : dinp, dw, dout, inp, w, counts, offsets, E, C, OC, acc);
}

/* FP8-resident (or BF16-resident) weight: w->q (OC, C) E4M3 and w->scale
 * (ceil(OC/128), ceil(C/128)) row-major, device memory; the struct itself is host. */
extern "C" void ds_cu_linear_fp8w_forward(float *out, const float *inp, const ds_fp8w *w, const float *bias,
                                          int64_t N, int64_t C, int64_t OC) {
    CU_ENTRY();
    if (empty_product(out, bias, N, C, OC)) return;
    if (w->b16) {
        /* out = inp · widen(W)ᵀ: widening is exact, then the FP32 GEMM */
        float *wf = (float *)ds_cu_scratch(SCR_F32, (size_t)(OC * C) * sizeof(float));
        k_widen_bf16<<<ds_cu_blocks(OC * C, 256), 256, 0, g_cu.stream>>>(wf, w->b16, OC * C);
        CU_LAUNCHED();
        gemm_fwd(out, inp, wf, CUDA_R_32F, N, C, OC);
    } else {
        int64_t OB = (OC + 127) / 128, KB = (C + 127) / 128, ld = up4(KB);
        const float *s = w->scale;
        if (ld != KB) {
            float *p = (float *)ds_cu_scratch(SCR_SB, (size_t)(OB * ld) * sizeof(float));
            k_restride<<<ds_cu_row_grid(OB, KB), ds_cu_row_block(KB), 0, g_cu.stream>>>(p, ld, w->scale, KB, OB, KB);
            CU_LAUNCHED();
            s = p;
        }
        fp8_operand x = quant_1x128(SCR_A, SCR_SA, inp, N, C);
        fp8_operand wq = {w->q, s, 1, ld, C}; /* stored codes: no pad (cuBLASLt where C % 16 == 0) */
        fp8_gemm(out, OC, wq, x, OC, N, C, 0);
    }
    add_bias(out, bias, N, OC);
}

/* ---- benchmark ------------------------------------------------------------------ */
namespace {
__global__ void k_rand_codes(uint8_t *q, int64_t n, uint32_t seed) {
    GRID_STRIDE(i, n) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
        uint8_t c = (uint8_t)(h & 0xff);
        if ((c & 0x7f) == 0x7f) c &= 0xfe;   /* no NaN codes */
        q[i] = c;
    }
}
__global__ void k_fill(float *x, int64_t n, float v) { GRID_STRIDE(i, n) x[i] = v; }
} // namespace

extern "C" int ds_cuda_gemm_bench(const char *kind, int64_t M, int64_t N, int64_t K, int iters, double *tflops,
                                  const char **path) {
    if (!g_cu.ok) return ds_err("gemm bench: no CUDA device");
    CU_ENTRY();
    const int tuned = !strcmp(kind, "fp8-tuned") || !strcmp(kind, "bf16-tuned");
    int fp8 = !strcmp(kind, "fp8") || !strcmp(kind, "fp8-own") || !strcmp(kind, "fp8-tuned");
    int bf16 = !strcmp(kind, "bf16") || !strcmp(kind, "bf16-tuned"), f32 = !strcmp(kind, "fp32");
    int mma = !strcmp(kind, "fp8-mma");
    if (!fp8 && !bf16 && !f32 && !mma)
        return ds_err("gemm bench: unknown kind %s (fp8, fp8-own, fp8-mma, fp8-tuned, bf16, bf16-tuned, fp32)",
                      ds_quote(kind));
    if (mma && !ds_cu_fp8_mma_ready()) return ds_err("gemm bench: the FP8 tensor-core kernel is off on this device");
    fp8 |= mma;
    size_t esz = fp8 ? 1 : bf16 ? 2 : 4;
    int64_t KB = (K + 127) / 128, NB = (N + 127) / 128;
    void *a = NULL, *b = NULL;
    float *d = NULL, *sa = NULL, *sb = NULL;
    CU_CHECK(cudaMalloc(&a, (size_t)(N * K) * esz));   /* weights (N, K) */
    CU_CHECK(cudaMalloc(&b, (size_t)(M * K) * esz));   /* activations (M, K) */
    CU_CHECK(cudaMalloc((void **)&d, (size_t)(M * N) * sizeof(float)));
    CU_CHECK(cudaMalloc((void **)&sa, (size_t)(NB * up4(KB)) * sizeof(float)));
    CU_CHECK(cudaMalloc((void **)&sb, (size_t)(M * KB) * sizeof(float)));
    /* random bytes are valid codes for every kind once NaN patterns are cleared
     * (BF16/FP32 get finite values from the same bytes often enough for timing) */
    k_rand_codes<<<1024, 256, 0, g_cu.stream>>>((uint8_t *)a, (int64_t)((size_t)(N * K) * esz), 1u);
    k_rand_codes<<<1024, 256, 0, g_cu.stream>>>((uint8_t *)b, (int64_t)((size_t)(M * K) * esz), 2u);
    k_fill<<<256, 256, 0, g_cu.stream>>>(sa, NB * up4(KB), 0.01f);
    k_fill<<<256, 256, 0, g_cu.stream>>>(sb, M * KB, 0.01f);
    CU_LAUNCHED();
    int prev = fp8_own_only;
    if (fp8) fp8_own_only = !strcmp(kind, "fp8-own");
    const int tune_prev = lt_tune_on();
    lt_tune_state = tuned ? 1 : -1; /* the plain kinds: the heuristic's first, whatever the environment says */
    const int64_t lt0 = n_lt, tuned0 = lt_tuned;
    auto once = [&]() {
        if (fp8) {
            fp8_operand A = {(const uint8_t *)a, sa, 1, up4(KB), K}, B = {(const uint8_t *)b, sb, 0, 0, K};
            if (mma) {
                fp8_job j = {d, N, A, B, N, M, K, 0, 0, 0, 0};
                ds_cu_fp8_mma(&j, 1);
            } else {
                fp8_gemm(d, N, A, B, N, M, K, 0);
            }
        } else {
            gemm_fwd(d, b, a, bf16 ? CUDA_R_16BF : CUDA_R_32F, M, K, N);
        }
    };
    const double ms = ds_cu_bench_ms(once, iters);
    *tflops = 2.0 * (double)M * N * K / (ms / 1e3) / 1e12;
    static char tpath[96];
    if (tuned && lt_tuned > tuned0)
        snprintf(tpath, sizeof tpath, "cublaslt tuned: #%d of %d (first %.3f ms, winner %.3f)", lt_last.best,
                 lt_last.candidates, lt_last.first_ms, lt_last.best_ms);
    else if (tuned)
        snprintf(tpath, sizeof tpath, "%s (no search)", fp8 && n_lt == lt0 ? "own" : "cublaslt");
    if (path) *path = tuned ? tpath : mma ? "mma" : !fp8 ? "cublaslt" : n_lt > lt0 ? "cublaslt" : "own";
    lt_tune_state = tune_prev ? 1 : -1;
    fp8_own_only = prev;
    cudaFree(a), cudaFree(b), cudaFree(d), cudaFree(sa), cudaFree(sb);
    return 0;
}

/* G experts' FP8 products of the same shape, each W_g (N, K) · X_g (rows, K)ᵀ
 * (the routed experts' forward): how "lt", one fp8_gemm each (cuBLASLt), or
 * "mma", one launch of the tensor-core kernel.  The operands are quantized
 * before the timing; the time is the device's from the first product's
 * enqueue to the last one's end, host gaps included. */
extern "C" int ds_cuda_gemm_bench_experts(const char *how, int64_t G, int64_t rows, int64_t N, int64_t K, int iters,
                                          double *tflops, const char **path) {
    if (!g_cu.ok) return ds_err("gemm bench: no CUDA device");
    const int plain = !strcmp(how, "mma-plain"), mma = plain || !strcmp(how, "mma");
    if (!mma && strcmp(how, "lt"))
        return ds_err("gemm bench: unknown expert path %s (lt, mma, mma-plain)", ds_quote(how));
    if (G < 1 || G > GMAX || rows < 1 || N < 1 || K < 1) return ds_err("gemm bench: bad expert shape");
    CU_ENTRY();
    if (mma && !ds_cu_fp8_mma_ready()) return ds_err("gemm bench: the FP8 tensor-core kernel is off on this device");
    const int64_t KB = (K + 127) / 128, NB = (N + 127) / 128, ws = NB * up4(KB);
    uint8_t *w = NULL, *x = NULL;
    float *d = NULL, *sw = NULL, *sx = NULL;
    CU_CHECK(cudaMalloc((void **)&w, (size_t)(G * N * K)));
    CU_CHECK(cudaMalloc((void **)&x, (size_t)(G * rows * K)));
    CU_CHECK(cudaMalloc((void **)&d, (size_t)(G * rows * N) * sizeof(float)));
    CU_CHECK(cudaMalloc((void **)&sw, (size_t)(G * ws) * sizeof(float)));
    CU_CHECK(cudaMalloc((void **)&sx, (size_t)(G * rows * KB) * sizeof(float)));
    k_rand_codes<<<1024, 256, 0, g_cu.stream>>>(w, G * N * K, 3u);
    k_rand_codes<<<1024, 256, 0, g_cu.stream>>>(x, G * rows * K, 4u);
    k_fill<<<256, 256, 0, g_cu.stream>>>(sw, G * ws, 0.01f);
    k_fill<<<256, 256, 0, g_cu.stream>>>(sx, G * rows * KB, 0.01f);
    CU_LAUNCHED();
    int prev = fp8_own_only;
    fp8_own_only = 0;
    const int64_t lt0 = n_lt;
    auto once = [&]() {
        for (int64_t g = 0; g < G; g++) {
            fp8_operand A = {w + g * N * K, sw + g * ws, 1, up4(KB), K}, B = {x + g * rows * K, sx + g * rows * KB, 0, 0, K};
            gj[g] = fp8_job{d + g * rows * N, N, A, B, N, rows, K, 0, 0, 0, 0};
        }
        if (mma) ds_cu_fp8_mma(gj, (int)G);
        else
            for (int64_t g = 0; g < G; g++) fp8_gemm(gj[g].D, gj[g].ldd, gj[g].a, gj[g].b, gj[g].m, gj[g].n, gj[g].K, 0);
    };
    const int ldsm = plain ? ds_cu_fp8_mma_ldsm(0) : -1; /* "mma": the loads the self-check chose */
    const double ms = ds_cu_bench_ms(once, iters);
    if (plain) ds_cu_fp8_mma_ldsm(ldsm);
    *tflops = 2.0 * (double)G * rows * N * K / (ms / 1e3) / 1e12;
    if (path) *path = mma ? how : n_lt - lt0 == (iters + 2) * G ? "cublaslt" : "cublaslt+fallback";
    fp8_own_only = prev;
    cudaFree(w), cudaFree(x), cudaFree(d), cudaFree(sw), cudaFree(sx);
    return 0;
}
