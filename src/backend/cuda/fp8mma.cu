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
 * two blocks an SM).  K goes by 128-wide blocks through two stages of shared
 * memory (55.5 KB): while the warps multiply block kb out of one, block kb+1's
 * codes arrive in the other by cp.async (16 bytes a copy, past the registers),
 * with its scales.  Rows are padded to 144 bytes, so the fragment loads
 * (ldmatrix .x4: four 8-row x 16-byte matrices, one instruction for a whole A
 * fragment or two B ones) hit 32 distinct banks; 4 k32 steps, then the
 * promotion.  No wgmma yet.  The mma.sync fragment layout (PTX ISA, m16n8k32
 * with 8-bit types; g = lane / 4, t = lane % 4), which ldmatrix's b16 layout
 * (lane l: bytes 4 (l % 4).. of row l / 4) gives as is:
 * A: a0 (row g, k 4t..4t+3), a1 (row g+8, same k), a2 (row g, k 16+4t..),
 * a3 (row g+8, k 16+4t..); B: b0 (col g, k 4t..4t+3), b1 (col g, k 16+4t..);
 * D: d0, d1 (row g, cols 2t, 2t+1), d2, d3 (row g+8, same cols).
 *
 * Not run on a GPU yet: a self-check at first use (ds_cu_fp8_mma_ready)
 * compares it with a double-precision host reference and turns it off, with a
 * line on stderr, if it disagrees.  tools/cudamock runs it over warp-wide
 * stand-ins for the two instructions (cudamock_mma_e4m3, cudamock_ldmatrix_x4).
 */
#include "backend/cuda/common.cuh"
#include <cuda_fp8.h>
extern "C" {
#include "num/fp8.h"
}
#include <math.h>
#include <string.h>
#include <vector>

/* the CPU stand-ins for mma.sync and ldmatrix (tools/cudamock/mock.cpp); never called on a GPU */
__device__ void cudamock_mma_e4m3(float *d, const uint32_t *a, const uint32_t *b);
__device__ void cudamock_ldmatrix_x4(uint32_t *r, const void *p);

int64_t g_cu_fp8_mma_launches;

namespace {

/* a TM x TN output tile a block: 8 warps, 4 x 2, each 32 x 32 outputs (FM x FN
 * m16n8 fragments); two blocks an SM (128 registers a thread) */
enum { TM = 128, TN = 64, TLD = 128 + 16, TTHREADS = 256, FM = 2, FN = 4 };
/* the dynamic shared memory: two stages, each A's and B's slab and scales */
enum { STAGE_BYTES = (TM + TN) * TLD + (TM + TN) * 4, SMEM_BYTES = 2 * STAGE_BYTES };

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

/* four 8 x 16-byte matrices from shared memory: lane l gives the address of
 * row l % 8 of matrix l / 8 (16-byte aligned); register j of lane l gets
 * bytes 4 (l % 4).. of row l / 4 of matrix j (ldmatrix m8n8 .b16: the
 * mma.sync 8-bit fragments' layout) */
__device__ __forceinline__ void ldsm_x4(uint32_t *r, const uint8_t *p) {
#if defined(__CUDA_ARCH__)
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
#else
    cudamock_ldmatrix_x4(r, p);
#endif
}

/* 16 bytes global -> shared without the registers (cp.async, sm_80 and up),
 * waited for by cp_wait */
__device__ __forceinline__ void cp16(uint8_t *s, const uint8_t *g) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned a = (unsigned)__cvta_generic_to_shared(s);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(a), "l"(g));
#else
    *(uint4 *)s = *(const uint4 *)g;
#endif
}
__device__ __forceinline__ void cp_commit(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
/* every group but the newest done (this thread's copies; a barrier after it for the block's) */
__device__ __forceinline__ void cp_wait1(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group 1;\n" ::);
#endif
}

/* rows r0.. r0+rows-1 of one 128-wide K block of an operand into a (rows x
 * TLD) tile, zero beyond its rows (and, vec 0, beyond K); vec: cp.async */
__device__ __forceinline__ void stage(uint8_t *t, const fp8_operand &o, int r0, int rows, int R, int kb, int K,
                                      int vec) {
    const int tid = threadIdx.x;
    if (vec) {
        for (int i = tid; i < rows * 8; i += TTHREADS) {
            int row = i >> 3, ch = i & 7;
            if (r0 + row < R) cp16(t + row * TLD + ch * 16, o.q + (int64_t)(r0 + row) * o.kld + kb * 128 + ch * 16);
            else *(uint4 *)(t + row * TLD + ch * 16) = make_uint4(0, 0, 0, 0);
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

/* One block per output tile of a job.  Two stages in shared memory: while the
 * warps multiply K block kb out of one, block kb+1's codes arrive in the other
 * (cp.async) with its scales.  LDSM: the fragments by ldmatrix (1), or by
 * 32-bit shared-memory loads (0: the fallback where the ldmatrix build fails
 * the self-check, and DSV3_CUDA_FP8_MMA=plain). */
template <int LDSM>
__global__ void __launch_bounds__(TTHREADS, 2) k_fp8_mma(const fp8_job *jobs, int nj) {
    extern __shared__ uint4 smem16[]; /* SMEM_BYTES, 16-byte aligned */
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
    /* stage s: A's slab, B's, A's scales, B's */
    auto ta = [&](int s) { return (uint8_t *)smem16 + s * STAGE_BYTES; };
    auto tb = [&](int s) { return ta(s) + TM * TLD; };
    auto sa = [&](int s) { return (float *)(ta(s) + (TM + TN) * TLD); };
    auto sb = [&](int s) { return sa(s) + TM; };
    auto load = [&](int kb, int s) {
        stage(ta(s), J.a, r0, TM, m, kb, K, J.vec);
        stage(tb(s), J.b, c0, TN, n, kb, K, J.vec);
        if (tid < TM) sa(s)[tid] = r0 + tid < m ? fp8_scale(J.a, r0 + tid, kb, m) : 0.0f;
        else if (tid < TM + TN) sb(s)[tid - TM] = c0 + tid - TM < n ? fp8_scale(J.b, c0 + tid - TM, kb, n) : 0.0f;
        cp_commit();
    };
    float tot[FM][FN][4], part[FM][FN][4];
    for (int mi = 0; mi < FM; mi++)
        for (int ni = 0; ni < FN; ni++)
            for (int i = 0; i < 4; i++) {
                int r = r0 + frag_row(wr, mi, g, i), c = c0 + frag_col(wc, ni, t, i);
                tot[mi][ni][i] = J.beta && r < m && c < n ? J.D[c * J.ldd + r] : 0.0f;
            }
    const int KB = (K + 127) / 128;
    load(0, 0);
    /* the lanes' ldmatrix rows: matrix l / 8, its row l % 8 */
    const int lm = lane >> 3, lr = lane & 7;
    for (int kb = 0; kb < KB; kb++) {
        const int s = kb & 1;
        if (kb + 1 < KB) load(kb + 1, s ^ 1); /* stage s ^ 1 was last read before the barrier ending kb - 1 */
        else cp_commit();                      /* an empty group: "all but the newest" is stage s */
        cp_wait1();
        __syncthreads();
        const uint8_t *A = ta(s), *B = tb(s);
        for (int mi = 0; mi < FM; mi++)
            for (int ni = 0; ni < FN; ni++)
                for (int i = 0; i < 4; i++) part[mi][ni][i] = 0.0f;
#pragma unroll 1 /* unrolled, the fragment loads of all four steps are hoisted: spills */
        for (int ks = 0; ks < 4; ks++) {
            uint32_t af[FM][4], bf[FN][2];
            if (LDSM) {
                /* A: matrices (rows 0-7, k 0-15), (rows 8-15, k 0-15), (0-7, 16-31), (8-15, 16-31) = a0..a3 */
                for (int mi = 0; mi < FM; mi++)
                    ldsm_x4(af[mi], A + (wr + mi * 16 + (lm & 1) * 8 + lr) * TLD + ks * 32 + (lm >> 1) * 16);
                /* B, two fragments at once: (cols of ni, k 0-15), (ni, 16-31), (ni+1, 0-15), (ni+1, 16-31) */
                for (int ni = 0; ni < FN; ni += 2) {
                    uint32_t r4[4];
                    ldsm_x4(r4, B + (wc + (ni + (lm >> 1)) * 8 + lr) * TLD + ks * 32 + (lm & 1) * 16);
                    bf[ni][0] = r4[0], bf[ni][1] = r4[1], bf[ni + 1][0] = r4[2], bf[ni + 1][1] = r4[3];
                }
            } else {
                for (int mi = 0; mi < FM; mi++) {
                    const uint8_t *p = A + (wr + mi * 16 + g) * TLD + ks * 32 + t * 4;
                    af[mi][0] = *(const uint32_t *)p;
                    af[mi][1] = *(const uint32_t *)(p + 8 * TLD);
                    af[mi][2] = *(const uint32_t *)(p + 16);
                    af[mi][3] = *(const uint32_t *)(p + 8 * TLD + 16);
                }
                for (int ni = 0; ni < FN; ni++) {
                    const uint8_t *p = B + (wc + ni * 8 + g) * TLD + ks * 32 + t * 4;
                    bf[ni][0] = *(const uint32_t *)p;
                    bf[ni][1] = *(const uint32_t *)(p + 16);
                }
            }
            for (int mi = 0; mi < FM; mi++)
                for (int ni = 0; ni < FN; ni++) mma_e4m3(part[mi][ni], af[mi], bf[ni]);
        }
        const float *SA = sa(s), *SB = sb(s);
        for (int mi = 0; mi < FM; mi++)
            for (int ni = 0; ni < FN; ni++)
                for (int i = 0; i < 4; i++) {
                    int rr = frag_row(wr, mi, g, i), cc = frag_col(wc, ni, t, i);
                    tot[mi][ni][i] = fmaf(part[mi][ni][i], SA[rr] * SB[cc], tot[mi][ni][i]);
                }
        __syncthreads(); /* stage s is free for block kb + 2 */
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
int mma_ldsm;  /* the fragment loads the kernel runs with: 1 ldmatrix, 0 32-bit loads */

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
    ds_rng rng;
    ds_rng_seed(&rng, 12345);
    auto next = [&]() { return (uint32_t)ds_rng_u64(&rng); };
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

void say_failed(const check_report &r, int ldsm, const char *then) {
    fprintf(stderr,
            "dsv3: cuda: the FP8 tensor-core kernel with %s fragment loads failed its self-check (%lld and %lld of %lld "
            "outputs off by more than 1e-2 of the largest value %.3g; the worst: product %d row %lld col %lld, %.6g for "
            "%.6g); %s\n",
            ldsm ? "ldmatrix" : "32-bit shared-memory", (long long)r.bad[0], (long long)r.bad[1], (long long)r.outputs, r.scale, r.worst_j,
            (long long)r.worst_r, (long long)r.worst_c, r.got, r.want, then);
}

} // namespace

/* on where the device has FP8 tensor cores and a build passes the self-check:
 * the ldmatrix one, else the one with 32-bit fragment loads (each failure said
 * on stderr), else off */
int ds_cu_fp8_mma_ready(void) {
    if (mma_state) return mma_state > 0;
    const char *e = getenv("DSV3_CUDA_FP8_MMA");
    if ((e && !strcmp(e, "0")) || !g_cu.ok || g_cu.prop.major * 10 + g_cu.prop.minor < 89) {
        mma_state = -1;
        return 0;
    }
    check_report r;
    mma_state = -1;
    for (mma_ldsm = e && !strcmp(e, "plain") ? 0 : 1; mma_ldsm >= 0; mma_ldsm--) {
        if (self_check(&r)) {
            mma_state = 1;
            break;
        }
        say_failed(r, mma_ldsm, mma_ldsm ? "trying 32-bit loads" : "FP8 experts run one cuBLASLt GEMM each");
    }
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
    static int attr; /* more than the 48 KB a block gets unasked; the SM's memory as shared memory, two blocks' worth */
    if (!attr++)
        for (auto k : {k_fp8_mma<1>, k_fp8_mma<0>}) {
            CU_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM_BYTES));
            CU_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributePreferredSharedMemoryCarveout, 100));
        }
    if (mma_ldsm) k_fp8_mma<1><<<(unsigned)tiles, TTHREADS, SMEM_BYTES, g_cu.stream>>>(dj, nj);
    else k_fp8_mma<0><<<(unsigned)tiles, TTHREADS, SMEM_BYTES, g_cu.stream>>>(dj, nj);
    CU_LAUNCHED();
    g_cu_fp8_mma_launches++;
}

int ds_cu_fp8_mma_ldsm(int ldsm) {
    int prev = mma_ldsm;
    mma_ldsm = ldsm;
    return prev;
}

extern "C" int ds_cuda_fp8_mma_set(int on) { return ds_cu_checked_set(&mma_state, ds_cu_fp8_mma_ready, on); }

/* the fragment loads of the kernel where it is on: 1 ldmatrix, 0 32-bit loads; -1 off */
extern "C" int ds_cuda_fp8_mma_loads(void) {
    if (!g_cu.ok) return -1;
    ds_cu_bind();
    std::lock_guard<std::mutex> g(g_cu_lock);
    return ds_cu_fp8_mma_ready() ? mma_ldsm : -1;
}
