/*
 * select.cu — the CUDA entries that order, count and choose (docs/engine.md
 * §2.5): the MoE routing sort (moe_sort), the balance losses of one sequence
 * (balance_loss), and the sampler's distribution and draw (sample_probs,
 * sample_pick).  All on the device: no operand goes through the host; what
 * the contract returns to the host (the balance terms, the drawn token) is
 * copied back after the kernels, a few bytes.
 *
 *   moe_sort: a tile of 256 slots per block (stable ranks within the tile,
 *     per-expert tile counts), one block scanning the counts expert-major,
 *     then the placement: the CPU's counting sort, the same bits (order,
 *     pos, counts, offsets).  No atomics: the result does not depend on
 *     scheduling.
 *   balance_loss: a thread per token (sel row, Σ s), a thread per expert
 *     (P, f in token order), one thread for the coefficients and terms
 *     (backend/cpu/balance_loss.c's loops, the same order), a thread per
 *     token for the gradient.  Same order in double as the CPU; FMA
 *     contraction may move a last bit.
 *   sample_probs: one block: argmax (temperature ≤ 0, or the softmax's max),
 *     or — with top-k / top-p — a stable LSD radix sort of the logits
 *     (descending, ties by ascending index: the CPU's qsort order; −0 as +0)
 *     into scratch, then the softmax over the kept prefix and the top-p cut
 *     by a chunked prefix sum.  Sums in double in block order, not the CPU's
 *     left-to-right order: the same kept set except where a cumulative sum
 *     falls within rounding of top_p.
 *   sample_pick: one block: Σ prob, the first token whose cumulative mass
 *     exceeds u·Σ (chunked prefix sum in double), the CPU's fallbacks.
 * A NaN logit has no place in the CPU's order either (its qsort comparator is
 * then inconsistent); it sorts first here.
 */
#include "backend/cuda/common.cuh"

#include <math.h>

#define SEL_THREADS 256 /* the one-block kernels; the sort's tile */

namespace {
/* ---- moe_sort ------------------------------------------------------------------------------- */
/* block t: slots [t·256, t·256+256): rank[s] = earlier slots of the tile on
 * the same expert; tc[e·nt + t] = the tile's slots on expert e */
__global__ void k_sort_tiles(int32_t *tc, int32_t *rank, const int32_t *idx, int64_t S, int64_t E, int64_t nt) {
    __shared__ int32_t se[SEL_THREADS];
    const int64_t t = blockIdx.x, s = t * SEL_THREADS + threadIdx.x;
    int32_t e = s < S ? idx[s] : -1;
    if (e < 0 || e >= E) e = -1; /* outside the experts: not counted, not placed */
    se[threadIdx.x] = e;
    __syncthreads();
    int32_t r = 0;
    for (unsigned j = 0; j < threadIdx.x; j++) r += se[j] == e;
    if (s < S) rank[s] = r;
    for (int64_t x = threadIdx.x; x < E; x += blockDim.x) {
        int32_t c = 0;
        for (int j = 0; j < SEL_THREADS; j++) c += se[j] == x;
        tc[x * nt + t] = c;
    }
}
/* one block: tc → the first sorted place of each (expert, tile), in place;
 * counts (E), offsets (E+1) */
__global__ void k_sort_scan(int64_t *counts, int64_t *offsets, int32_t *tc, int64_t E, int64_t nt) {
    for (int64_t x = threadIdx.x; x < E; x += blockDim.x) {
        int64_t tot = 0;
        for (int64_t t = 0; t < nt; t++) {
            int32_t c = tc[x * nt + t];
            tc[x * nt + t] = (int32_t)tot;
            tot += c;
        }
        counts[x] = tot;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int64_t o = 0;
        for (int64_t x = 0; x < E; x++) offsets[x] = o, o += counts[x];
        offsets[E] = o;
    }
    __syncthreads();
    for (int64_t x = threadIdx.x; x < E; x += blockDim.x) {
        const int64_t o = offsets[x];
        for (int64_t t = 0; t < nt; t++) tc[x * nt + t] += (int32_t)o;
    }
}
__global__ void k_sort_place(int32_t *order, int32_t *pos, const int32_t *idx, const int32_t *rank, const int32_t *tb,
                             int64_t S, int64_t E, int64_t nt) {
    const int64_t t = blockIdx.x, s = t * SEL_THREADS + threadIdx.x;
    if (s >= S) return;
    const int32_t e = idx[s];
    if (e < 0 || e >= E) return;
    const int32_t p = tb[(int64_t)e * nt + t] + rank[s];
    order[p] = (int32_t)s;
    pos[s] = p;
}

/* ---- balance_loss ----------------------------------------------------------------------------- */
/* a thread per token: sel row from idx, Σ_i s (i order) when normalizing */
__global__ void k_bal_rows(uint8_t *sel, double *S, const float *s, const int32_t *idx, int64_t T, int64_t E,
                           int64_t K, int normalize) {
    GRID_STRIDE(t, T) {
        uint8_t *r = sel + t * E;
        for (int64_t i = 0; i < E; i++) r[i] = 0;
        for (int64_t k = 0; k < K; k++) {
            int32_t e = idx[t * K + k];
            if (e >= 0 && e < E) r[e] = 1;
        }
        double a = 0;
        if (normalize)
            for (int64_t i = 0; i < E; i++) a = __dadd_rn(a, (double)s[t * E + i]);
        S[t] = a;
    }
}
/* a thread per expert i < E: P_i, f_i (token order); per group d < D: g_d */
__global__ void k_bal_cols(double *P, double *f, double *g, const uint8_t *sel, const double *S, const float *s,
                           int64_t T, int64_t E, int64_t D, int normalize) {
    GRID_STRIDE(i, E + D) {
        if (i < E) {
            double p = 0, c = 0;
            for (int64_t t = 0; t < T; t++) {
                double v = normalize ? __ddiv_rn((double)s[t * E + i], S[t]) : (double)s[t * E + i];
                p = __dadd_rn(p, v);
                c = __dadd_rn(c, sel[t * E + i] ? 1.0 : 0.0);
            }
            P[i] = p, f[i] = c;
        } else {
            const int64_t d = i - E, per = E / D;
            double a = 0;
            for (int64_t t = 0; t < T; t++) {
                int any = 0;
                for (int64_t j = d * per; j < (d + 1) * per; j++) any |= sel[t * E + j] != 0;
                a = __dadd_rn(a, (double)any);
            }
            g[d] = a;
        }
    }
}
/* one thread: backend/cpu/balance_loss.c's closing loops; terms[3] */
__global__ void k_bal_final(float *coef, double *terms, double *P, double *f, const double *g, int64_t T, int64_t E,
                            int64_t K, int64_t D, int64_t M, double a_exp, double a_dev, double a_comm) {
    if (blockIdx.x || threadIdx.x) return;
    const int64_t per = E / D;
    double ex = 0, dev = 0, comm = 0;
    for (int64_t i = 0; i < E; i++) {
        P[i] = __ddiv_rn(P[i], (double)T);
        f[i] = __dmul_rn(f[i], __ddiv_rn((double)E, __dmul_rn((double)K, (double)T)));
    }
    for (int64_t d = 0; d < D; d++) {
        double fd = 0, Pd = 0, gd = __dmul_rn(__ddiv_rn((double)D, __dmul_rn((double)M, (double)T)), g[d]);
        for (int64_t i = d * per; i < (d + 1) * per; i++) fd = __dadd_rn(fd, f[i]), Pd = __dadd_rn(Pd, P[i]);
        fd = __ddiv_rn(fd, (double)per);
        dev = __dadd_rn(dev, __dmul_rn(fd, Pd));
        comm = __dadd_rn(comm, __dmul_rn(gd, Pd));
        for (int64_t i = d * per; i < (d + 1) * per; i++) {
            ex = __dadd_rn(ex, __dmul_rn(f[i], P[i]));
            coef[i] = (float)__dadd_rn(__dadd_rn(__dmul_rn(a_exp, f[i]), __dmul_rn(a_dev, fd)), __dmul_rn(a_comm, gd));
        }
    }
    terms[0] = ex, terms[1] = dev, terms[2] = comm;
}
/* a thread per token: ds (T,E) += k·dL/ds */
__global__ void k_bal_grad(float *ds, const float *coef, const float *s, int64_t T, int64_t E, int normalize, double k) {
    GRID_STRIDE(t, T) {
        const float *st = s + t * E;
        float *dst = ds + t * E;
        if (!normalize) {
            for (int64_t i = 0; i < E; i++) dst[i] += (float)__dmul_rn(k, (double)coef[i]);
            continue;
        }
        double S = 0, cs = 0;
        for (int64_t i = 0; i < E; i++) S = __dadd_rn(S, (double)st[i]), cs = __dadd_rn(cs, __dmul_rn((double)coef[i], (double)st[i]));
        for (int64_t j = 0; j < E; j++)
            dst[j] += (float)__dmul_rn(k, __dsub_rn(__ddiv_rn((double)coef[j], S), __ddiv_rn(cs, __dmul_rn(S, S))));
    }
}

/* ---- sampling ------------------------------------------------------------------------------------ */
struct blk {          /* one block's shared state for the reductions below */
    double d[32];
    float f[32];
    int64_t i[32];
    double tot[SEL_THREADS];
    int64_t at;
};
/* block_argmax (common.cuh) on a blk's shared state */
__device__ int64_t blk_argmax(const float *x, int64_t n, blk *sh) { return block_argmax(x, n, sh->f, sh->i, &sh->at); }
/* exclusive prefix of each thread's v over the threads in order (serial on
 * thread 0: deterministic); *total the sum */
__device__ double block_excl(double v, blk *sh, double *total) {
    __syncthreads();
    sh->tot[threadIdx.x] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        double a = 0;
        for (unsigned j = 0; j < blockDim.x; j++) {
            double c = sh->tot[j];
            sh->tot[j] = a;
            a += c;
        }
        sh->d[0] = a;
    }
    __syncthreads();
    double r = sh->tot[threadIdx.x];
    *total = sh->d[0];
    __syncthreads();
    return r;
}
__device__ int64_t block_min_i(int64_t v, blk *sh) {
    for (int o = 16; o > 0; o >>= 1) {
        int64_t u = __shfl_xor_sync(0xffffffffu, v, o);
        v = u < v ? u : v;
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) sh->i[threadIdx.x >> 5] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int j = 1; j < (int)(blockDim.x >> 5); j++) v = sh->i[j] < v ? sh->i[j] : v;
        sh->at = v;
    }
    __syncthreads();
    return sh->at;
}
__device__ int64_t block_max_i(int64_t v, blk *sh) { return -block_min_i(-v, sh); }

/* descending float order as ascending unsigned keys (−0 as +0) */
__device__ __forceinline__ uint32_t desc_key(float v) {
    uint32_t u = __float_as_uint(v == 0.0f ? 0.0f : v);
    uint32_t asc = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ~asc;
}

/* one block: temperature ≤ 0 one-hot; unfiltered softmax; or the sorted
 * top-k / top-p distribution.  kA, kB (V) keys, vA (V) values, hist
 * (256·blockDim) scratch; idx (V) receives the sorted token ids */
__global__ void k_sample_probs(float *prob, int32_t *idx, uint32_t *kA, uint32_t *kB, int32_t *vA, int32_t *hist,
                               const float *logits, int64_t V, double temperature, int64_t top_k, double top_p) {
    __shared__ blk sh;
    const int64_t nt = blockDim.x, tid = threadIdx.x;
    if (!(temperature > 0)) {
        int64_t am = blk_argmax(logits, V, &sh);
        for (int64_t i = tid; i < V; i += nt) prob[i] = i == am ? 1.0f : 0.0f;
        return;
    }
    const double invT = 1.0 / temperature;
    const int filtered = (top_k > 0 && top_k < V) || top_p < 1;
    double tot;
    if (!filtered) {
        const double mx = logits[blk_argmax(logits, V, &sh)];
        double a = 0;
        for (int64_t i = tid; i < V; i += nt) {
            double e = exp(((double)logits[i] - mx) * invT);
            prob[i] = (float)e;
            a += e;
        }
        a = block_sum_d(a, sh.d);
        __syncthreads();
        for (int64_t i = tid; i < V; i += nt) prob[i] = (float)(prob[i] / a);
        return;
    }
    /* stable LSD radix sort, 4 passes of 8 bits: logits → (kA, vA) → (kB, idx)
     * → (kA, vA) → (kB, idx); thread t owns the contiguous chunk [lo, hi) */
    const int64_t c = (V + nt - 1) / nt, lo = tid * c < V ? tid * c : V, hi = lo + c < V ? lo + c : V;
    for (int pass = 0; pass < 4; pass++) {
        const int sh8 = 8 * pass;
        const uint32_t *ks = pass == 0 ? NULL : pass & 1 ? kA : kB;
        const int32_t *vs = pass & 1 ? vA : idx;
        uint32_t *kd = pass & 1 ? kB : kA;
        int32_t *vd = pass & 1 ? idx : vA;
        for (int d = 0; d < 256; d++) hist[d * nt + tid] = 0;
        for (int64_t i = lo; i < hi; i++) {
            uint32_t k = ks ? ks[i] : desc_key(logits[i]);
            hist[((k >> sh8) & 255) * nt + tid]++;
        }
        __syncthreads();
        /* exclusive scan of hist (digit-major, then thread): thread t its 256 entries */
        int64_t a = 0;
        for (int j = 0; j < 256; j++) a += hist[tid * 256 + j];
        double base_d = block_excl((double)a, &sh, &tot); /* counts < 2^53: exact */
        int32_t base = (int32_t)base_d;
        for (int j = 0; j < 256; j++) {
            int32_t cnt = hist[tid * 256 + j];
            hist[tid * 256 + j] = base;
            base += cnt;
        }
        __syncthreads();
        for (int64_t i = lo; i < hi; i++) {
            uint32_t k = ks ? ks[i] : desc_key(logits[i]);
            int32_t p = hist[((k >> sh8) & 255) * nt + tid]++;
            kd[p] = k;
            vd[p] = ks ? vs[i] : (int32_t)i;
        }
        __syncthreads();
    }
    /* the kept prefix of the sorted tokens: softmax in double, then the top-p cut */
    int64_t keep = top_k > 0 && top_k < V ? top_k : V;
    const double mx = logits[idx[0]];
    double a = 0;
    for (int64_t r = tid; r < keep; r += nt) a += exp(((double)logits[idx[r]] - mx) * invT);
    double sum = block_sum_d(a, sh.d);
    if (top_p < 1) {
        const int64_t c2 = (keep + nt - 1) / nt, l2 = tid * c2 < keep ? tid * c2 : keep, h2 = l2 + c2 < keep ? l2 + c2 : keep;
        double part = 0;
        for (int64_t r = l2; r < h2; r++) part += exp(((double)logits[idx[r]] - mx) * invT) / sum;
        double cum = block_excl(part, &sh, &tot);
        int64_t first = keep;
        for (int64_t r = l2; r < h2; r++) {
            cum += exp(((double)logits[idx[r]] - mx) * invT) / sum;
            if (cum >= top_p) {
                first = r;
                break;
            }
        }
        first = block_min_i(first, &sh);
        keep = first < keep ? first + 1 : keep;
        a = 0;
        for (int64_t r = tid; r < keep; r += nt) a += exp(((double)logits[idx[r]] - mx) * invT);
        sum = block_sum_d(a, sh.d);
    }
    for (int64_t i = tid; i < V; i += nt) prob[i] = 0.0f;
    __syncthreads();
    for (int64_t r = tid; r < keep; r += nt) prob[idx[r]] = (float)(exp(((double)logits[idx[r]] - mx) * invT) / sum);
}

/* one block: the token ds_sample_pick draws; *out */
__global__ void k_sample_pick(int32_t *out, const float *prob, int64_t V, double u) {
    __shared__ blk sh;
    const int64_t nt = blockDim.x, tid = threadIdx.x;
    const int64_t c = (V + nt - 1) / nt, lo = tid * c < V ? tid * c : V, hi = lo + c < V ? lo + c : V;
    double part = 0;
    int64_t last = -1;
    for (int64_t i = lo; i < hi; i++)
        if (prob[i] > 0) part += prob[i], last = i;
    double total;
    double cum = block_excl(part, &sh, &total);
    u *= total;
    int64_t hit = V;
    for (int64_t i = lo; i < hi; i++) {
        if (!(prob[i] > 0)) continue;
        cum += prob[i];
        if (u < cum) {
            hit = i;
            break;
        }
    }
    hit = block_min_i(hit, &sh);
    last = block_max_i(last, &sh);
    int64_t am = blk_argmax(prob, V, &sh);
    if (tid == 0) *out = (int32_t)(hit < V ? hit : last >= 0 ? last : am);
}
} // namespace

extern "C" void ds_cu_moe_sort(int64_t *counts, int64_t *offsets, int32_t *order, int32_t *pos, const int32_t *idx,
                               int64_t N, int64_t K, int64_t E) {
    CU_ENTRY();
    const int64_t S = N * K, nt = (S + SEL_THREADS - 1) / SEL_THREADS;
    if (E <= 0) return;
    int32_t *tc = (int32_t *)ds_cu_scratch(SCR_SA, (size_t)(E * (nt ? nt : 1)) * sizeof(int32_t));
    int32_t *rank = (int32_t *)ds_cu_scratch(SCR_SB, (size_t)(S ? S : 1) * sizeof(int32_t));
    if (nt) {
        k_sort_tiles<<<(unsigned)nt, SEL_THREADS, 0, g_cu.stream>>>(tc, rank, idx, S, E, nt);
        CU_LAUNCHED();
    }
    k_sort_scan<<<1, SEL_THREADS, 0, g_cu.stream>>>(counts, offsets, tc, E, nt);
    CU_LAUNCHED();
    if (nt) {
        k_sort_place<<<(unsigned)nt, SEL_THREADS, 0, g_cu.stream>>>(order, pos, idx, rank, tc, S, E, nt);
        CU_LAUNCHED();
    }
}

extern "C" void ds_cu_balance_loss(float *dscores, float *coef, uint8_t *sel, const float *scores, const int32_t *idx,
                                   int64_t T, int64_t E, int64_t K, int64_t G, int64_t M, int normalize, double a_exp,
                                   double a_dev, double a_comm, double scale, ds_balance_terms *terms) {
    DS_ASSERT(T > 0 && E > 0 && K > 0 && G > 0 && E % G == 0 && M > 0); /* as the CPU's forward */
    double h[3];
    {
        CU_ENTRY();
        /* scratch (doubles): S (T), P (E), f (E), g (G), terms (3) */
        double *S = (double *)ds_cu_scratch(SCR_SC, (size_t)(T + 2 * E + G + 3) * sizeof(double));
        double *P = S + T, *f = P + E, *g = f + E, *tm = g + G;
        k_bal_rows<<<ds_cu_blocks(T, 128), 128, 0, g_cu.stream>>>(sel, S, scores, idx, T, E, K, normalize);
        CU_LAUNCHED();
        k_bal_cols<<<ds_cu_blocks(E + G, 128), 128, 0, g_cu.stream>>>(P, f, g, sel, S, scores, T, E, G, normalize);
        CU_LAUNCHED();
        k_bal_final<<<1, 32, 0, g_cu.stream>>>(coef, tm, P, f, g, T, E, K, G, M, a_exp, a_dev, a_comm);
        CU_LAUNCHED();
        k_bal_grad<<<ds_cu_blocks(T, 128), 128, 0, g_cu.stream>>>(dscores, coef, scores, T, E, normalize, scale / (double)T);
        CU_LAUNCHED();
        CU_CHECK(cudaMemcpyAsync(h, tm, sizeof h, cudaMemcpyDeviceToHost, g_cu.stream));
        CU_CHECK(cudaStreamSynchronize(g_cu.stream));
    }
    terms->expert = h[0], terms->device = h[1], terms->comm = h[2];
}

extern "C" void ds_cu_sample_probs(float *prob, int32_t *scratch, const float *logits, int64_t V, double temperature,
                                   int64_t top_k, double top_p) {
    if (V <= 0) return;
    CU_ENTRY();
    uint32_t *kA = (uint32_t *)ds_cu_scratch(SCR_SA, (size_t)V * sizeof(uint32_t));
    uint32_t *kB = (uint32_t *)ds_cu_scratch(SCR_SB, (size_t)V * sizeof(uint32_t));
    int32_t *vA = (int32_t *)ds_cu_scratch(SCR_SC, (size_t)V * sizeof(int32_t));
    int32_t *hist = (int32_t *)ds_cu_scratch(SCR_SD, (size_t)256 * SEL_THREADS * sizeof(int32_t));
    k_sample_probs<<<1, SEL_THREADS, 0, g_cu.stream>>>(prob, scratch, kA, kB, vA, hist, logits, V, temperature, top_k,
                                                       top_p);
    CU_LAUNCHED();
}

extern "C" int32_t ds_cu_sample_pick(const float *prob, int64_t V, double u) {
    if (V <= 0) return 0;
    int32_t h;
    {
        CU_ENTRY();
        int32_t *d = (int32_t *)ds_cu_scratch(SCR_SD, sizeof(int32_t));
        k_sample_pick<<<1, SEL_THREADS, 0, g_cu.stream>>>(d, prob, V, u);
        CU_LAUNCHED();
        CU_CHECK(cudaMemcpyAsync(&h, d, sizeof h, cudaMemcpyDeviceToHost, g_cu.stream));
        CU_CHECK(cudaStreamSynchronize(g_cu.stream));
    }
    return h;
}
