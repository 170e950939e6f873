/*
 * fp8mma.cu — dsv3's FP8 tensor-core GEMM: E4M3 operands with DeepSeek-V3's
 * block scales (1x128 tiles, 128x128 blocks; fp8_operand, common.cuh), the
 * tensor cores summing each 128-wide K block in FP32 (mma.sync m16n8k32,
 * sm_89 and up) and the block's sum promoted to an FP32 accumulator with its
 * two scales on the CUDA cores: D = fma(Σ_{k in kb} a·b, sA·sB, D), as the
 * CPU's blocked FP8 GEMM and dsv3's CUDA-core kernel (gemm.cu) do, with the
 * block sums in the tensor cores' order.
 *
 * What it is for: the routed experts.  cuBLASLt has no grouped block-scaled
 * call, so the FP8 experts ran one cuBLASLt GEMM per expert and product
 * (thousands a step, each tens of microseconds of host time for a few
 * microseconds of device work).  Here one launch runs a list of products
 * (fp8_job): every block looks its product up by its tile index.  It is also
 * the fallback where cuBLASLt takes no algorithm.
 *
 * The tile: 128 x 64 outputs a block of 8 warps (4 x 2, each 32 x 32: 2 x 4
 * m16n8 fragments; 64 accumulators a thread, the block sums and the totals;
 * two blocks an SM), one 128-wide K block at a time staged in shared memory (rows padded to 144
 * bytes: the fragment loads of 8 rows x 4 lanes hit 32 distinct banks), 4 k32
 * steps, then the promotion.  Single-buffered, no cp.async or wgmma yet.  The mma.sync fragment
 * layout (PTX ISA, m16n8k32 with 8-bit types; g = lane / 4, t = lane % 4):
 * A: a0 (row g, k 4t..4t+3), a1 (row g+8, same k), a2 (row g, k 16+4t..),
 * a3 (row g+8, k 16+4t..); B: b0 (col g, k 4t..4t+3), b1 (col g, k 16+4t..);
 * D: d0, d1 (row g, cols 2t, 2t+1), d2, d3 (row g+8, same cols).
 *
 * Not run on a GPU yet: a self-check at first use (ds_cu_fp8_mma_ready)
 * compares it with a double-precision host reference and turns it off, with a
 * line on stderr, if it disagrees.  tools/cudamock runs it over a warp-wide
 * stand-in for the instruction (cudamock_mma_e4m3).
 */
#include "backend/cuda/common.cuh"
#include <cuda_fp8.h>
extern "C" {
#include "num/fp8.h"
}
#include <math.h>
#include <string.h>
#include <vector>

/* the CPU stand-in for mma.sync (tools/cudamock/mock.cpp); never called on a GPU */
__device__ void cudamock_mma_e4m3(float *d, const uint32_t *a, const uint32_t *b);

int64_t g_cu_fp8_mma_launches;

namespace {

/* a TM x TN output tile a block: 8 warps, 4 x 2, each 32 x 32 outputs (FM x FN
 * m16n8 fragments); two blocks an SM (128 registers a thread), so one block's
 * staging overlaps the other's products */
enum { TM = 128, TN = 64, TLD = 128 + 16, TTHREADS = 256, FM = 2, FN = 4 };

/* d += A (16 x 32) · B (32 x 8), E4M3 in, FP32 out */
__device__ __forceinline__ void mma_e4m3(float *d, const uint32_t *a, const uint32_t *b) {
#if defined(__CUDA_ARCH__)
#if __CUDA_ARCH__ >= 890
    asm volatile("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    /* no FP8 tensor cores in this build: NaN, which the self-check refuses */
    d[0] = d[1] = d[2] = d[3] = __int_as_float(0x7fc00000);
#endif
#else
    cudamock_mma_e4m3(d, a, b);
#endif
}

/* rows r0.. r0+rows-1 of one 128-wide K block of an operand into a (rows x
 * TLD) tile, zero beyond its rows (and, vec 0, beyond K) */
__device__ __forceinline__ void stage(uint8_t *t, const fp8_operand &o, int r0, int rows, int R, int kb, int K,
                                      int vec) {
    const int tid = threadIdx.x;
    if (vec) {
        for (int i = tid; i < rows * 8; i += TTHREADS) {
            int row = i >> 3, ch = i & 7;
            uint4 v = make_uint4(0, 0, 0, 0);
            if (r0 + row < R) v = *(const uint4 *)(o.q + (int64_t)(r0 + row) * o.kld + kb * 128 + ch * 16);
            *(uint4 *)(t + row * TLD + ch * 16) = v;
        }
    } else {
#pragma unroll 1
        for (int i = tid; i < rows * 128; i += TTHREADS) {
            int row = i >> 7, kk = i & 127, k = kb * 128 + kk;
            t[row * TLD + kk] = r0 + row < R && k < K ? o.q[(int64_t)(r0 + row) * o.kld + k] : 0;
        }
    }
}

/* the tile row and column of accumulator i of fragment (mi, ni) of the warp at
 * (wr, wc): the D layout (d0, d1 row g; d2, d3 row g+8; columns 2t, 2t+1) */
__device__ __forceinline__ int frag_row(int wr, int mi, int g, int i) { return wr + mi * 16 + g + (i >> 1) * 8; }
__device__ __forceinline__ int frag_col(int wc, int ni, int t, int i) { return wc + ni * 8 + t * 2 + (i & 1); }

__global__ void __launch_bounds__(TTHREADS, 2) k_fp8_mma(const fp8_job *jobs, int nj) {
    __shared__ uint4 ta16[TM * TLD / 16], tb16[TN * TLD / 16]; /* 16-byte aligned */
    uint8_t *ta = (uint8_t *)ta16, *tb = (uint8_t *)tb16;
    __shared__ float sa[TM], sb[TN];
    __shared__ fp8_job J;  /* in shared memory: the registers hold the sums */
    if (threadIdx.x == 0) {
        int lo = 0, hi = nj;   /* the job holding this tile: the last with tile0 <= blockIdx.x */
        while (hi - lo > 1) {
            int mid = (lo + hi) / 2;
            if (jobs[mid].tile0 <= (int64_t)blockIdx.x) lo = mid;
            else hi = mid;
        }
        J = jobs[lo];
    }
    __syncthreads();
    /* row and column counts below 2^31 (ds_cu_fp8_mma checks) */
    const int64_t rel = (int64_t)blockIdx.x - J.tile0;
    const int r0 = (int)(rel % J.mt) * TM, c0 = (int)(rel / J.mt) * TN, m = (int)J.m, n = (int)J.n, K = (int)J.K;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
    const int wr = (warp & 3) * 32, wc = (warp >> 2) * 32;
    float tot[FM][FN][4], part[FM][FN][4];
    for (int mi = 0; mi < FM; mi++)
        for (int ni = 0; ni < FN; ni++)
            for (int i = 0; i < 4; i++) {
                int r = r0 + frag_row(wr, mi, g, i), c = c0 + frag_col(wc, ni, t, i);
                tot[mi][ni][i] = J.beta && r < m && c < n ? J.D[c * J.ldd + r] : 0.0f;
            }
    const int KB = (K + 127) / 128;
    for (int kb = 0; kb < KB; kb++) {
        __syncthreads();
        stage(ta, J.a, r0, TM, m, kb, K, J.vec);
        stage(tb, J.b, c0, TN, n, kb, K, J.vec);
        if (tid < TM) sa[tid] = r0 + tid < m ? fp8_scale(J.a, r0 + tid, kb, m) : 0.0f;
        else if (tid < TM + TN) sb[tid - TM] = c0 + tid - TM < n ? fp8_scale(J.b, c0 + tid - TM, kb, n) : 0.0f;
        __syncthreads();
        for (int mi = 0; mi < FM; mi++)
            for (int ni = 0; ni < FN; ni++)
                for (int i = 0; i < 4; i++) part[mi][ni][i] = 0.0f;
#pragma unroll 1 /* unrolled, the fragment loads of all four steps are hoisted: spills */
        for (int ks = 0; ks < 4; ks++) {
            uint32_t af[FM][4], bf[FN][2];
            for (int mi = 0; mi < FM; mi++) {
                const uint8_t *p = ta + (wr + mi * 16 + g) * TLD + ks * 32 + t * 4;
                af[mi][0] = *(const uint32_t *)p;
                af[mi][1] = *(const uint32_t *)(p + 8 * TLD);
                af[mi][2] = *(const uint32_t *)(p + 16);
                af[mi][3] = *(const uint32_t *)(p + 8 * TLD + 16);
            }
            for (int ni = 0; ni < FN; ni++) {
                const uint8_t *p = tb + (wc + ni * 8 + g) * TLD + ks * 32 + t * 4;
                bf[ni][0] = *(const uint32_t *)p;
                bf[ni][1] = *(const uint32_t *)(p + 16);
            }
            for (int mi = 0; mi < FM; mi++)
                for (int ni = 0; ni < FN; ni++) mma_e4m3(part[mi][ni], af[mi], bf[ni]);
        }
        for (int mi = 0; mi < FM; mi++)
            for (int ni = 0; ni < FN; ni++)
                for (int i = 0; i < 4; i++) {
                    int rr = frag_row(wr, mi, g, i), cc = frag_col(wc, ni, t, i);
                    tot[mi][ni][i] = fmaf(part[mi][ni][i], sa[rr] * sb[cc], tot[mi][ni][i]);
                }
    }
    for (int mi = 0; mi < FM; mi++)
        for (int ni = 0; ni < FN; ni++)
            for (int i = 0; i < 4; i++) {
                int r = r0 + frag_row(wr, mi, g, i), c = c0 + frag_col(wc, ni, t, i);
                if (r < m && c < n) J.D[c * J.ldd + r] = tot[mi][ni][i];
            }
}

int vec_ok(const fp8_operand &o, int64_t K) {
    return o.kld % 16 == 0 && ((uintptr_t)o.q & 15) == 0 && o.kld >= up128(K);
}

/* ---- the self-check --------------------------------------------------------------- */
/* D = Σ_kb Σ_k a·b · sA·sB in double, the operands' layouts read as the kernel reads them */
double ref_at(const uint8_t *qa, const float *sa, const fp8_operand &A, const uint8_t *qb, const float *sb,
              const fp8_operand &B, int64_t m, int64_t n, int64_t K, int64_t r, int64_t c) {
    double d = 0;
    for (int64_t kb = 0; kb * 128 < K; kb++) {
        double s = 0;
        for (int64_t k = kb * 128; k < K && k < kb * 128 + 128; k++)
            s += (double)ds_fp8_to_f32(qa[r * A.kld + k], DS_FP8_E4M3) * ds_fp8_to_f32(qb[c * B.kld + k], DS_FP8_E4M3);
        double fa = A.blk ? sa[(r / 128) * A.ld + kb] : sa[kb * m + r];
        double fb = B.blk ? sb[(c / 128) * B.ld + kb] : sb[kb * n + c];
        d += s * fa * fb;
    }
    return d;
}

int mma_state; /* 0: not checked, 1: on, -1: off */

/* Two products in one launch: A 150 x 300 (128x128 blocks) by B 70 x 300
 * (1x128 tiles) with the codes padded to 384 (16-byte loads), and the same
 * operands read with K = 300 rows as stored (byte loads, the pad ignored)
 * added to a D of ones.  Random codes (no NaN), scales of mixed sizes. */
struct check_report {
    double err, scale;               /* the largest difference; the largest reference value */
    int64_t outputs, bad[2], worst_r, worst_c; /* outputs a product, those off by more than the bound; the worst */
    int worst_j;
    double got, want;
};
int self_check(check_report *rep) {
    const int64_t m = 150, n = 70, K = 300, kld = 384, KB = 3, ld = 4;
    std::vector<uint8_t> qa((size_t)(m * kld), 0), qb((size_t)(n * kld), 0);
    std::vector<float> sa((size_t)(2 * ld)), sb((size_t)(KB * n)), d0((size_t)(m * n)), d1((size_t)(m * n), 1.0f);
    uint32_t h = 12345;
    auto next = [&]() { h ^= h << 13, h ^= h >> 17, h ^= h << 5; return h; };
    for (int64_t r = 0; r < m; r++)
        for (int64_t k = 0; k < K; k++) {
            uint8_t c = (uint8_t)next();
            qa[(size_t)(r * kld + k)] = (c & 0x7f) == 0x7f ? 0x7e : c;
        }
    for (int64_t r = 0; r < n; r++)
        for (int64_t k = 0; k < K; k++) {
            uint8_t c = (uint8_t)next();
            qb[(size_t)(r * kld + k)] = (c & 0x7f) == 0x7f ? 0x3f : c;
        }
    for (auto &v : sa) v = ldexpf(1.0f + (next() % 100) / 100.0f, (int)(next() % 7) - 3);
    for (auto &v : sb) v = ldexpf(1.0f + (next() % 100) / 100.0f, (int)(next() % 7) - 3);
    uint8_t *dqa, *dqb;
    float *dsa, *dsb, *dd;
    CU_CHECK(cudaMalloc((void **)&dqa, qa.size()));
    CU_CHECK(cudaMalloc((void **)&dqb, qb.size()));
    CU_CHECK(cudaMalloc((void **)&dsa, sa.size() * 4));
    CU_CHECK(cudaMalloc((void **)&dsb, sb.size() * 4));
    CU_CHECK(cudaMalloc((void **)&dd, 2 * d0.size() * 4));
    CU_CHECK(cudaMemcpyAsync(dqa, qa.data(), qa.size(), cudaMemcpyHostToDevice, g_cu.stream));
    CU_CHECK(cudaMemcpyAsync(dqb, qb.data(), qb.size(), cudaMemcpyHostToDevice, g_cu.stream));
    CU_CHECK(cudaMemcpyAsync(dsa, sa.data(), sa.size() * 4, cudaMemcpyHostToDevice, g_cu.stream));
    CU_CHECK(cudaMemcpyAsync(dsb, sb.data(), sb.size() * 4, cudaMemcpyHostToDevice, g_cu.stream));
    CU_CHECK(cudaMemcpyAsync(dd + d0.size(), d1.data(), d1.size() * 4, cudaMemcpyHostToDevice, g_cu.stream));
    fp8_operand A = {dqa, dsa, 1, ld, kld}, B = {dqb, dsb, 0, 0, kld};
    fp8_operand A2 = {dqa, dsa, 1, ld, K}, B2 = {dqb, dsb, 0, 0, K}; /* rows K apart: other codes, same reading */
    fp8_job jobs[2] = {{dd, m, A, B, m, n, K, 0, 0, 0, 0}, {dd + d0.size(), m, A2, B2, m, n, K, 1, 0, 0, 0}};
    ds_cu_fp8_mma(jobs, 2);
    CU_CHECK(cudaMemcpyAsync(d0.data(), dd, d0.size() * 4, cudaMemcpyDeviceToHost, g_cu.stream));
    CU_CHECK(cudaMemcpyAsync(d1.data(), dd + d0.size(), d1.size() * 4, cudaMemcpyDeviceToHost, g_cu.stream));
    CU_CHECK(cudaStreamSynchronize(g_cu.stream));
    cudaFree(dqa), cudaFree(dqb), cudaFree(dsa), cudaFree(dsb), cudaFree(dd);
    std::vector<double> want(2 * d0.size());
    *rep = check_report{};
    for (int64_t r = 0; r < m; r++)
        for (int64_t c = 0; c < n; c++) {
            want[(size_t)(c * m + r)] = ref_at(qa.data(), sa.data(), A, qb.data(), sb.data(), B, m, n, K, r, c);
            want[d0.size() + (size_t)(c * m + r)] =
                1.0 + ref_at(qa.data(), sa.data(), A2, qb.data(), sb.data(), B2, m, n, K, r, c);
        }
    for (double v : want) rep->scale = fmax(rep->scale, fabs(v));
    rep->outputs = m * n;
    /* the tensor cores' sums of 32 exact products keep fewer bits than FP32
     * (DeepSeek-V3 §3.3.2: about 14, below the largest term: ~1e-4 of a block's
     * largest product, a few blocks and scales of up to 16 a side); a wrong
     * fragment layout, row, scale or block is off by O(1) of the largest value */
    const double bound = 1e-2 * rep->scale;
    for (int j = 0; j < 2; j++)
        for (size_t i = 0; i < d0.size(); i++) {
            double g = (j ? d1 : d0)[i], w = want[j * d0.size() + i], e = g == g ? fabs(g - w) : INFINITY;
            if (e > bound) rep->bad[j]++;
            if (e > rep->err) {
                rep->err = e, rep->worst_j = j, rep->worst_r = (int64_t)i % m, rep->worst_c = (int64_t)i / m;
                rep->got = g, rep->want = w;
            }
        }
    return jobs[0].vec && !jobs[1].vec && !rep->bad[0] && !rep->bad[1];
}

} // namespace


int ds_cu_fp8_mma_ready(void) {
    if (mma_state) return mma_state > 0;
    const char *e = getenv("DSV3_CUDA_FP8_MMA");
    if ((e && !strcmp(e, "0")) || !g_cu.ok || g_cu.prop.major * 10 + g_cu.prop.minor < 89) {
        mma_state = -1;
        return 0;
    }
    check_report r;
    mma_state = self_check(&r) ? 1 : -1;
    if (mma_state < 0)
        fprintf(stderr,
                "dsv3: cuda: the FP8 tensor-core kernel failed its self-check (%lld and %lld of %lld outputs off by more "
                "than 1e-2 of the largest value %.3g; the worst: product %d row %lld col %lld, %.6g for %.6g); FP8 "
                "experts run one cuBLASLt GEMM each\n",
                (long long)r.bad[0], (long long)r.bad[1], (long long)r.outputs, r.scale, r.worst_j, (long long)r.worst_r,
                (long long)r.worst_c, r.got, r.want);
    return mma_state > 0;
}

void ds_cu_fp8_mma(fp8_job *jobs, int nj) {
    int64_t tiles = 0;
    for (int i = 0; i < nj; i++) {
        fp8_job &j = jobs[i];
        j.vec = vec_ok(j.a, j.K) && vec_ok(j.b, j.K);
        if (j.m >= INT32_MAX || j.n >= INT32_MAX || j.K >= INT32_MAX)
            ds_cu_fail("ds_cu_fp8_mma", "a product with a dimension of 2^31 or more", __FILE__, __LINE__);
        j.mt = (j.m + TM - 1) / TM;
        j.tile0 = tiles;
        if (j.m > 0 && j.n > 0) tiles += j.mt * ((j.n + TN - 1) / TN);
    }
    if (!tiles) return;
    fp8_job *dj = (fp8_job *)ds_cu_scratch(SCR_MMA_JOBS, (size_t)nj * sizeof(fp8_job));
    CU_CHECK(cudaMemcpyAsync(dj, jobs, (size_t)nj * sizeof(fp8_job), cudaMemcpyHostToDevice, g_cu.stream));
    k_fp8_mma<<<(unsigned)tiles, TTHREADS, 0, g_cu.stream>>>(dj, nj);
    CU_LAUNCHED();
    g_cu_fp8_mma_launches++;
}

/* the state before (checked first if it was not yet); on from off: checked again at its next use */
extern "C" int ds_cuda_fp8_mma_set(int on) {
    if (!g_cu.ok) return 0;
    ds_cu_bind();
    std::lock_guard<std::mutex> g(g_cu_lock);
    int prev = ds_cu_fp8_mma_ready();
    if (!on) mma_state = -1;
    else if (mma_state < 0) mma_state = 0;
    return prev;
}
