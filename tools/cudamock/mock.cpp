/*
 * mock.cpp — cudamock: the CUDA runtime, the kernel launch and cuBLASLt on
 * the CPU, so the CUDA backend's kernels run (slowly) on a machine without a
 * GPU (tools/cudamock/README.md).  A launch runs its blocks one after
 * another; a block's threads are OS threads, __syncthreads a barrier over
 * them, a warp shuffle two barriers over the warp.  cuBLASLt's matmul is a
 * double-precision loop over the documented column-major semantics, with the
 * FP8 block-scale layouts the backend assumes (gemm.cu): it checks the
 * backend's use of them, not cuBLASLt itself.
 */
#include <atomic>
#include <barrier>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "cublasLt.h"
#include "cublas_v2.h"
#include "cuda_fp8.h"
#include "cuda_runtime.h"

extern "C" {
#include "num/dtype.h"
#include "num/fp8.h"
}

thread_local dim3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
unsigned char *cudamock_smem;

static std::barrier<> *block_bar;
static std::vector<std::unique_ptr<std::barrier<>>> warp_bar;
static std::vector<uint64_t> warp_slot;
static thread_local int my_tid;

/* A launch: its blocks one after another.  seq (a kernel with no barrier and
 * no warp exchange, as transform.py reads it): a block's threads one after
 * another on the calling thread; else each an OS thread. */
static void launch(dim3 grid, dim3 block, size_t smem, const std::function<void()> &fn, bool seq) {
    static std::mutex one;
    std::lock_guard<std::mutex> g(one);
    /* dynamic shared memory: 256-byte aligned, NaN-filled (all bits set) at each
     * block's start so that a read before a write shows, and followed by a
     * canary that a write past the launch's size breaks */
    constexpr size_t CANARY = 4096;
    if (smem > 227 * 1024) {
        std::fprintf(stderr, "cudamock: a launch asks for %zu bytes of dynamic shared memory (the most: 227 KiB)\n", smem);
        std::abort();
    }
    static std::vector<unsigned char> sm;
    if (sm.size() < smem + CANARY + 256) sm.resize(smem + CANARY + 256);
    cudamock_smem = sm.data() + (256 - (uintptr_t)sm.data() % 256) % 256;
    std::memset(cudamock_smem + smem, 0xA5, CANARY);
    auto block_start = [&] { std::memset(cudamock_smem, 0xFF, smem); };
    auto block_end = [&] {
        for (size_t i = 0; i < CANARY; i++)
            if (cudamock_smem[smem + i] != 0xA5) {
                std::fprintf(stderr, "cudamock: a kernel wrote shared memory %zu bytes past its launch's %zu\n", i, smem);
                std::abort();
            }
    };
    gridDim = grid;
    blockDim = block;
    int nt = (int)(block.x * block.y * block.z), nw = (nt + 31) / 32;
    auto as_thread = [&](int t, unsigned x, unsigned y, unsigned z) {
        my_tid = t;
        blockIdx = dim3(x, y, z);
        threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
        fn();
    };
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                block_start();
                if (seq) {
                    block_bar = nullptr;
                    warp_bar.clear();
                    for (int t = 0; t < nt; t++) as_thread(t, x, y, z);
                    block_end();
                    continue;
                }
                std::barrier<> bb(nt);
                block_bar = &bb;
                warp_bar.clear();
                for (int w = 0; w < nw; w++)
                    warp_bar.emplace_back(new std::barrier<>(w == nw - 1 && nt % 32 ? nt % 32 : 32));
                warp_slot.assign((size_t)nw * 32, 0);
                std::vector<std::thread> th;
                th.reserve(nt);
                for (int t = 0; t < nt; t++)
                    th.emplace_back([&, t, x, y, z] {
                        as_thread(t, x, y, z);
                        warp_bar[t / 32]->arrive_and_drop();
                        block_bar->arrive_and_drop();
                    });
                for (auto &t : th) t.join();
                block_end();
            }
}
void cudamock_launch(dim3 grid, dim3 block, size_t smem, const std::function<void()> &fn) {
    launch(grid, block, smem, fn, false);
}
void cudamock_launch_seq(dim3 grid, dim3 block, size_t smem, const std::function<void()> &fn) {
    launch(grid, block, smem, fn, true);
}

static void not_sequential(const char *what) {
    std::fprintf(stderr, "cudamock: %s in a kernel launched sequentially (tools/cudamock/transform.py missed it)\n", what);
    std::abort();
}

void __syncthreads(void) {
    if (!block_bar) not_sequential("__syncthreads");
    block_bar->arrive_and_wait();
}

void __syncwarp(unsigned) {
    if (warp_bar.empty()) not_sequential("__syncwarp");
    warp_bar[my_tid / 32]->arrive_and_wait();
}

uint64_t cudamock_shfl(uint64_t bits, int src) {
    if (warp_bar.empty()) not_sequential("a warp shuffle");
    int w = my_tid / 32, lane = my_tid % 32;
    warp_slot[(size_t)w * 32 + lane] = bits;
    warp_bar[w]->arrive_and_wait();
    uint64_t r = warp_slot[(size_t)w * 32 + src];
    warp_bar[w]->arrive_and_wait();
    return r;
}

/* mma.sync over the warp: each lane's A (4 registers) and B (2) fragments
 * gathered for every lane to read (a barrier, as a shuffle); the lane's row
 * r and column c of output i by the PTX ISA's D layout (g = lane / 4,
 * t = lane % 4: d0, d1 row g, columns 2t, 2t+1; d2, d3 row g+8); sum(f, r, c)
 * gives that output from the gathered fragments f (lane l's register j at
 * f[l * 6 + j]); then another barrier and d += the sums.
 * CUDAMOCK_MMA_BROKEN=1 swaps rows g and g+8 (the self-checks' tests). */
template <typename F>
static void mma_warp(float *d, const uint32_t *a, const uint32_t *b, F sum) {
    if (warp_bar.empty()) not_sequential("mma.sync");
    static uint32_t frag[32 * 32 * 6]; /* blocks run one at a time */
    int w = my_tid / 32, lane = my_tid % 32;
    uint32_t *f = frag + (size_t)w * 32 * 6;
    for (int i = 0; i < 4; i++) f[lane * 6 + i] = a[i];
    f[lane * 6 + 4] = b[0], f[lane * 6 + 5] = b[1];
    warp_bar[w]->arrive_and_wait();
    float out[4];
    for (int i = 0; i < 4; i++) out[i] = sum(f, lane / 4 + (i / 2) * 8, (lane % 4) * 2 + i % 2);
    warp_bar[w]->arrive_and_wait();
    const char *br = getenv("CUDAMOCK_MMA_BROKEN");
    for (int i = 0; i < 4; i++) d[i] += out[br && *br == '1' ? i ^ 2 : i];
}

/* m16n8k32 with 8-bit types (fp8mma.cu): 32 products in k order.  A(r, k)
 * in lane (r % 8) * 4 + (k % 16) / 4, register (r >= 8) + 2 (k >= 16), byte
 * k % 4; B(k, c) in lane c * 4 + (k % 16) / 4, register k >= 16, byte k % 4. */
void cudamock_mma_e4m3(float *d, const uint32_t *a, const uint32_t *b) {
    mma_warp(d, a, b, [](const uint32_t *f, int r, int c) {
        auto byte = [&](int ln, int reg, int k) {
            return ds_fp8_to_f32((uint8_t)(f[ln * 6 + reg] >> (8 * (k % 4))), DS_FP8_E4M3);
        };
        float s = 0.0f;
        for (int k = 0; k < 32; k++)
            s += byte((r % 8) * 4 + (k % 16) / 4, (r >= 8) + 2 * (k >= 16), k) *
                 byte(c * 4 + (k % 16) / 4, 4 + (k >= 16), k);
        return s;
    });
}

/* m16n8k16 with BF16 inputs (attention.cu): 16 products in k order, the
 * lower-numbered element in a register's low 16 bits.  A(r, k) in lane
 * (r % 8) * 4 + (k % 8) / 2, register (r >= 8) + 2 (k >= 8), half k % 2;
 * B(k, c) in lane c * 4 + (k % 8) / 2, register k >= 8, half k % 2. */
void cudamock_mma_bf16(float *d, const uint32_t *a, const uint32_t *b) {
    mma_warp(d, a, b, [](const uint32_t *f, int r, int c) {
        auto half = [&](int ln, int reg, int k) {
            return ds_bf16_to_f32((uint16_t)(f[ln * 6 + reg] >> (16 * (k % 2))));
        };
        float s = 0.0f;
        for (int k = 0; k < 16; k++)
            s += half((r % 8) * 4 + (k % 8) / 2, (r >= 8) + 2 * (k >= 8), k) * half(c * 4 + (k % 8) / 2, 4 + (k >= 8), k);
        return s;
    });
}

/* ldmatrix m8n8 .x4 .b16 (fp8mma.cu), and .trans (attention.cu): each lane's
 * row address gathered over the warp (two barriers, as a shuffle).  Without
 * .trans register j of lane l is 4 bytes at 4 (l % 4) of the row that lane
 * 8 j + l / 4 named; with it, the 2-byte elements of column l / 4 in rows
 * 2 (l % 4) and 2 (l % 4) + 1 of matrix j (the rows lanes 8 j.. named), the
 * first in the low half.  A row address that is not 16-byte aligned aborts
 * (the instruction requires it).  CUDAMOCK_LDSM_BROKEN=1 swaps matrices 1
 * and 2 (cuda_fp8_mma_selfcheck: the self-check must fall back to the
 * 32-bit loads). */
static void ldmatrix_x4(uint32_t *r, const void *p, bool trans) {
    if (warp_bar.empty()) not_sequential("ldmatrix");
    if ((uintptr_t)p & 15) {
        std::fprintf(stderr, "cudamock: ldmatrix row address %p not 16-byte aligned\n", p);
        std::abort();
    }
    int w = my_tid / 32, lane = my_tid % 32;
    warp_slot[(size_t)w * 32 + lane] = (uint64_t)(uintptr_t)p;
    warp_bar[w]->arrive_and_wait();
    const char *br = getenv("CUDAMOCK_LDSM_BROKEN"); /* the self-check's test: matrices 1 and 2 swapped */
    auto row = [&](int j, int i) { return (const unsigned char *)(uintptr_t)warp_slot[(size_t)w * 32 + j * 8 + i]; };
    for (int j = 0; j < 4; j++) {
        int jj = br && *br == '1' && (j == 1 || j == 2) ? 3 - j : j;
        if (!trans) {
            std::memcpy(&r[j], row(jj, lane / 4) + (lane % 4) * 4, 4);
            continue;
        }
        uint16_t lo, hi;
        std::memcpy(&lo, row(jj, 2 * (lane % 4)) + (lane / 4) * 2, 2);
        std::memcpy(&hi, row(jj, 2 * (lane % 4) + 1) + (lane / 4) * 2, 2);
        r[j] = (uint32_t)lo | (uint32_t)hi << 16;
    }
    warp_bar[w]->arrive_and_wait();
}
void cudamock_ldmatrix_x4(uint32_t *r, const void *p) { ldmatrix_x4(r, p, false); }
void cudamock_ldmatrix_x4_trans(uint32_t *r, const void *p) { ldmatrix_x4(r, p, true); }

/* ---- runtime ---------------------------------------------------------------------- */
cudaError_t cudaGetDeviceCount(int *n) { *n = 1; return cudaSuccess; }
cudaError_t cudaSetDevice(int) { return cudaSuccess; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int) {
    std::snprintf(p->name, sizeof p->name, "cudamock CPU");
    p->major = 9, p->minor = 0, p->multiProcessorCount = 1;
    p->sharedMemPerBlockOptin = 227 * 1024; /* an H100's / H200's */
    p->sharedMemPerMultiprocessor = 228 * 1024, p->reservedSharedMemPerBlock = 1024;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int) {
    *v = a == cudaDevAttrClockRate ? 1000000 : 0; /* kHz: 1 GHz */
    return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned) { *s = nullptr; return cudaSuccess; }
/* fresh memory is NaN-filled, so a read of an unwritten value shows */
cudaError_t cudaMalloc(void **p, size_t n) {
    *p = std::aligned_alloc(256, (n + 255) / 256 * 256);
    std::memset(*p, 0xff, n);
    return *p ? cudaSuccess : 2;
}
cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t) { return cudaMalloc(p, n); }
cudaError_t cudaFree(void *p) { std::free(p); return cudaSuccess; }
cudaError_t cudaFreeAsync(void *p, cudaStream_t) { std::free(p); return cudaSuccess; }
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind, cudaStream_t) {
    std::memmove(d, s, n);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t) { std::memset(d, v, n); return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
const char *cudaGetErrorString(cudaError_t e) { return e ? "cudamock error" : "no error"; }
/* Time is a counter: cuBLASLt matmuls advance it (1 a launch, 2 for the
 * heuristic's first algorithm under CUDAMOCK_LT_SLOW_FIRST=1); an event
 * holds its value when recorded, and an elapsed time is 1 ms plus the
 * difference (never 0: the benchmarks divide by it). */
static std::atomic<long> mock_clock{0};
cudaError_t cudaEventCreate(cudaEvent_t *e) { *e = new long(0); return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) { *(long *)e = mock_clock.load(); return cudaSuccess; }
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    *ms = 1.0f + (float)(*(long *)b - *(long *)a);
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) { delete (long *)e; return cudaSuccess; }

/* ---- FP8 ---------------------------------------------------------------------------------- */
__nv_fp8_storage_t __nv_cvt_float_to_fp8(float v, __nv_saturation_t, __nv_fp8_interpretation_t) {
    return ds_f32_to_e4m3(v, DS_FP8_SAT);
}
__half_raw __nv_cvt_fp8_to_halfraw(__nv_fp8_storage_t c, __nv_fp8_interpretation_t) {
    return __half_raw{ds_fp8_e4m3_table[c]};
}

/* ---- cuBLASLt ------------------------------------------------------------------------------ */
struct cudamock_lt { int dummy; };
struct cudamock_desc {
    int ta = 0, tb = 0, amode = 0, bmode = 0;
    const float *as = nullptr, *bs = nullptr;
};
struct cudamock_layout {
    cudaDataType t;
    int64_t rows, cols, ld;
    int32_t batch = 1;      /* strided batch: that many matrices, stride elements apart */
    int64_t stride = 0;
};
struct cudamock_pref { int dummy; };

/* CUDAMOCK_LT_FP8=0: the FP8 matmul says NOT_SUPPORTED (the backend's own kernel runs);
 * CUDAMOCK_LT_F32=0: the same for FP32/BF16 (the backend's plain GEMM runs) */
static int env_ok(const char *name) {
    const char *e = std::getenv(name);
    return !e || std::strcmp(e, "0");
}
static int fp8_ok() { return env_ok("CUDAMOCK_LT_FP8"); }

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) { *h = new cudamock_lt; return CUBLAS_STATUS_SUCCESS; }
const char *cublasLtGetStatusString(cublasStatus_t s) { return s ? "cudamock cuBLASLt error" : "success"; }
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t, cudaDataType) {
    *d = new cudamock_desc;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) { delete d; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const void *v,
                                              size_t) {
    switch (a) {
    case CUBLASLT_MATMUL_DESC_TRANSA: d->ta = *(const int *)v; break;
    case CUBLASLT_MATMUL_DESC_TRANSB: d->tb = *(const int *)v; break;
    case CUBLASLT_MATMUL_DESC_A_SCALE_MODE: d->amode = *(const int32_t *)v; break;
    case CUBLASLT_MATMUL_DESC_B_SCALE_MODE: d->bmode = *(const int32_t *)v; break;
    case CUBLASLT_MATMUL_DESC_A_SCALE_POINTER: d->as = *(const float *const *)v; break;
    case CUBLASLT_MATMUL_DESC_B_SCALE_POINTER: d->bs = *(const float *const *)v; break;
    default: return CUBLAS_STATUS_INVALID_VALUE;
    }
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType t, uint64_t rows, uint64_t cols,
                                          int64_t ld) {
    if (ld < (int64_t)rows) return CUBLAS_STATUS_INVALID_VALUE;
    *l = new cudamock_layout{t, (int64_t)rows, (int64_t)cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) { delete l; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t a,
                                                const void *v, size_t n) {
    if (a == CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT && n == sizeof(int32_t) && *(const int32_t *)v >= 1)
        l->batch = *(const int32_t *)v;
    else if (a == CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET && n == sizeof(int64_t) && *(const int64_t *)v >= 0)
        l->stride = *(const int64_t *)v;
    else return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
    *p = new cudamock_pref;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) { delete p; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t,
                                                    const void *, size_t) {
    return CUBLAS_STATUS_SUCCESS;
}

/* what Hopper's FP8 path demands: TN, K-major leading dims multiple of 16 */
static int supported(cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                     cublasLtMatrixLayout_t c) {
    if (a->t != b->t || c->t != CUDA_R_32F) return 0;
    if (a->batch != b->batch || a->batch != c->batch) return 0;
    /* batched FP8 with block scales: not what the backend asks for (refused) */
    if (a->batch > 1 && a->t == CUDA_R_8F_E4M3) return 0;
    if (a->batch > 1 && !env_ok("CUDAMOCK_LT_BATCHED")) return 0;
    if (a->t == CUDA_R_8F_E4M3)
        return fp8_ok() && d->ta == CUBLAS_OP_T && d->tb == CUBLAS_OP_N && a->ld % 16 == 0 && b->ld % 16 == 0 &&
               (d->as != nullptr) == (d->amode != 0) && (d->bs != nullptr) == (d->bmode != 0);
    return env_ok("CUDAMOCK_LT_F32") && d->amode == 0 && d->bmode == 0;
}
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                              cublasLtMatrixLayout_t, cublasLtMatmulPreference_t, int want,
                                              cublasLtMatmulHeuristicResult_t *res, int *nres) {
    /* CUDAMOCK_LT_ALGOS=n: up to n algorithms (numbered in .dummy; all the same arithmetic), else one */
    const char *e = std::getenv("CUDAMOCK_LT_ALGOS");
    int n = e ? std::atoi(e) : 1;
    n = n < 1 ? 1 : n > want ? want : n;
    *nres = supported(d, a, b, c) ? n : 0;
    for (int i = 0; i < *nres; i++) res[i].algo.dummy = i, res[i].workspaceSize = 0;
    return CUBLAS_STATUS_SUCCESS;
}

static double elt(const void *p, cudaDataType t, int64_t i) {
    if (t == CUDA_R_32F) return ((const float *)p)[i];
    if (t == CUDA_R_16BF) return ds_bf16_to_f32(((const uint16_t *)p)[i]);
    return ds_fp8_e4m3_table[((const uint8_t *)p)[i]];
}
/* scale of logical (row r of R, k-block kb of K) */
static double scl(const float *s, int mode, int64_t r, int64_t kb, int64_t R, int64_t K) {
    if (!s) return 1.0;
    if (mode == CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F) return s[kb * R + r];
    if (mode == CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F) return s[(r / 128) * (((K + 127) / 128 + 3) / 4 * 4) + kb];
    return s[0];
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t d, const void *alpha, const void *A,
                              cublasLtMatrixLayout_t la, const void *B, cublasLtMatrixLayout_t lb, const void *beta,
                              const void *C, cublasLtMatrixLayout_t lc, void *D, cublasLtMatrixLayout_t ldd,
                              const cublasLtMatmulAlgo_t *algo, void *, size_t, cudaStream_t) {
    if (!supported(d, la, lb, lc)) return CUBLAS_STATUS_NOT_SUPPORTED;
    const char *slow = std::getenv("CUDAMOCK_LT_SLOW_FIRST");
    mock_clock += algo && algo->dummy == 0 && slow && !std::strcmp(slow, "1") ? 2 : 1;
    int64_t m = lc->rows, n = lc->cols, k = d->ta ? la->rows : la->cols;
    if ((d->ta ? la->cols : la->rows) != m || (d->tb ? lb->rows : lb->cols) != n || (d->tb ? lb->cols : lb->rows) != k)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (ldd->batch != la->batch) return CUBLAS_STATUS_INVALID_VALUE;
    float al = *(const float *)alpha, be = *(const float *)beta;
    std::vector<float> out((size_t)(m * n));
    for (int32_t bi = 0; bi < la->batch; bi++) {
        /* matrix bi of each operand (element sizes: FP32 4, BF16 2, E4M3 1) */
        auto at = [bi](const void *p, cublasLtMatrixLayout_t l) {
            size_t es = l->t == CUDA_R_32F ? 4 : l->t == CUDA_R_16BF ? 2 : 1;
            return (const char *)p + (size_t)(bi * l->stride) * es;
        };
        const void *Ab = at(A, la), *Bb = at(B, lb);
        const float *Cf = (const float *)at(C, lc);
        float *Df = (float *)at(D, ldd);
        for (int64_t c = 0; c < n; c++)
            for (int64_t r = 0; r < m; r++) {
                double s = 0;
                for (int64_t j = 0; j < k; j++) {
                    double a = elt(Ab, la->t, d->ta ? j + r * la->ld : r + j * la->ld);
                    double b = elt(Bb, lb->t, d->tb ? c + j * lb->ld : j + c * lb->ld);
                    s += a * b * scl(d->as, d->amode, r, j / 128, m, k) * scl(d->bs, d->bmode, c, j / 128, n, k);
                }
                out[(size_t)(c * m + r)] = (float)(al * s + (be != 0 ? be * Cf[c * lc->ld + r] : 0.0));
            }
        for (int64_t c = 0; c < n; c++)
            for (int64_t r = 0; r < m; r++) Df[c * ldd->ld + r] = out[(size_t)(c * m + r)];
    }
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoCheck(cublasLtHandle_t, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                                       cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t,
                                       const cublasLtMatmulAlgo_t *, cublasLtMatmulHeuristicResult_t *res) {
    if (res) res->workspaceSize = 0;
    return supported(d, a, b, c) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_SUPPORTED;
}

/* ---- cuBLAS: the grouped GEMM (column-major, the legacy API's semantics) ---- */
struct cudamock_blas { int dummy; };
cublasStatus_t cublasCreate(cublasHandle_t *h) { *h = new cudamock_blas; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
const char *cublasGetStatusString(cublasStatus_t s) { return s ? "cudamock cuBLAS error" : "success"; }
cublasStatus_t cublasGemmGroupedBatchedEx(cublasHandle_t, const cublasOperation_t transa[],
                                          const cublasOperation_t transb[], const int m[], const int n[],
                                          const int k[], const void *alpha, const void *const A[], cudaDataType at,
                                          const int lda[], const void *const B[], cudaDataType bt, const int ldb[],
                                          const void *beta, void *const C[], cudaDataType ct, const int ldc[],
                                          int group_count, const int group_size[], cublasComputeType_t compute) {
    if (!env_ok("CUDAMOCK_GROUPED")) return CUBLAS_STATUS_NOT_SUPPORTED;
    /* CUDAMOCK_FAST16=0: the BF16 compute type refused (as CUDA 13.0 does) */
    if (compute == CUBLAS_COMPUTE_32F_FAST_16BF && !env_ok("CUDAMOCK_FAST16")) return CUBLAS_STATUS_NOT_SUPPORTED;
    /* FAST_16BF: FP32 operands down-converted to BF16, here by truncation, so
     * operands the caller did not round itself show up as a difference */
    auto in = [compute](const void *p, cudaDataType t, int64_t i) {
        double v = elt(p, t, i);
        if (compute == CUBLAS_COMPUTE_32F_FAST_16BF && t == CUDA_R_32F) {
            float f = (float)v;
            uint32_t u;
            std::memcpy(&u, &f, 4);
            u &= 0xffff0000u;
            std::memcpy(&f, &u, 4);
            v = f;
        }
        return v;
    };
    if (at != bt || ct != CUDA_R_32F || (at != CUDA_R_32F && at != CUDA_R_16BF)) return CUBLAS_STATUS_NOT_SUPPORTED;
    int64_t p = 0;
    for (int g = 0; g < group_count; g++)
        for (int j = 0; j < group_size[g]; j++, p++) {
            const float al = ((const float *)alpha)[g], be = ((const float *)beta)[g];
            float *Cf = (float *)C[p];
            for (int64_t c = 0; c < n[g]; c++)
                for (int64_t r = 0; r < m[g]; r++) {
                    double s = 0;
                    for (int64_t q = 0; q < k[g]; q++)
                        s += in(A[p], at, transa[g] ? q + r * lda[g] : r + q * lda[g]) *
                             in(B[p], bt, transb[g] ? c + q * ldb[g] : q + c * ldb[g]);
                    float *o = &Cf[c * ldc[g] + r];
                    *o = (float)(al * s + (be != 0 ? be * *o : 0.0));
                }
        }
    return CUBLAS_STATUS_SUCCESS;
}
