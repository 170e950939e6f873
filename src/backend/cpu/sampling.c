/*
 * sampling.c — argmax and the sampler's logits post-processing (decode.h),
 * the loops over the vocabulary behind infer/sampling.c: temperature, then
 * top-k, then top-p on the renormalised top-k distribution (the order of
 * transformers' generate), softmax in double; and the cumulative draw.
 * One implementation serves the cpu and ref tables (argmax has a plain
 * reference for the op test).
 */
#define _GNU_SOURCE
#include "backend/cpu/decode.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int32_t argmax(const float *x, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return (int32_t)best;
}

void ds_argmax_rows(int32_t *out, const float *x, int64_t N, int64_t V) {
#pragma omp parallel for schedule(static) if (N > 1 && N * V > 65536)
    for (int64_t r = 0; r < N; r++) out[r] = argmax(x + r * V, V);
}

void ds_argmax_rows_ref(int32_t *out, const float *x, int64_t N, int64_t V) {
    for (int64_t r = 0; r < N; r++) {
        int32_t best = 0;
        for (int64_t i = 1; i < V; i++)
            if (x[r * V + i] > x[r * V + best]) best = (int32_t)i;
        out[r] = best;
    }
}

/* descending by value, ties by ascending index (a total order: deterministic) */
static int cmp_desc(const void *a, const void *b, void *ctx) {
    const float *v = ctx;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (v[i] > v[j]) return -1;
    if (v[i] < v[j]) return 1;
    return (i > j) - (i < j);
}

void ds_sample_probs(float *prob, int32_t *idx, const float *logits, int64_t V, double temperature, int64_t top_k,
                     double top_p) {
    if (temperature <= 0) {
        memset(prob, 0, (size_t)V * sizeof(float));
        prob[argmax(logits, V)] = 1.0f;
        return;
    }
    const double invT = 1.0 / temperature;
    int64_t keep = V;
    int filtered = (top_k > 0 && top_k < V) || top_p < 1;
    if (!filtered) {
        float mx = logits[argmax(logits, V)];
        double sum = 0;
        for (int64_t i = 0; i < V; i++) {
            double e = exp(((double)logits[i] - mx) * invT);
            prob[i] = (float)e;
            sum += e;
        }
        for (int64_t i = 0; i < V; i++) prob[i] = (float)(prob[i] / sum);
        return;
    }
    for (int64_t i = 0; i < V; i++) idx[i] = (int32_t)i;
    qsort_r(idx, (size_t)V, sizeof(int32_t), cmp_desc, (void *)logits);
    if (top_k > 0 && top_k < V) keep = top_k;
    /* softmax over the kept (sorted) tokens, in double */
    const double mx = logits[idx[0]];
    double sum = 0;
    for (int64_t r = 0; r < keep; r++) sum += exp(((double)logits[idx[r]] - mx) * invT);
    if (top_p < 1) {
        double cum = 0;
        int64_t r = 0;
        for (; r < keep; r++) {
            cum += exp(((double)logits[idx[r]] - mx) * invT) / sum;
            if (cum >= top_p) break;
        }
        keep = r < keep ? r + 1 : keep;
        sum = 0;
        for (r = 0; r < keep; r++) sum += exp(((double)logits[idx[r]] - mx) * invT);
    }
    memset(prob, 0, (size_t)V * sizeof(float));
    for (int64_t r = 0; r < keep; r++) prob[idx[r]] = (float)(exp(((double)logits[idx[r]] - mx) * invT) / sum);
}

int32_t ds_sample_pick(const float *prob, int64_t V, double u) {
    double cum = 0, total = 0;
    for (int64_t i = 0; i < V; i++) total += prob[i];
    u *= total;
    int64_t last = -1;
    for (int64_t i = 0; i < V; i++) {
        if (prob[i] <= 0) continue;
        cum += prob[i];
        last = i;
        if (u < cum) return (int32_t)i;
    }
    return (int32_t)(last >= 0 ? last : argmax(prob, V));
}

void ds_logits_adjust(float *x, int64_t V, const int32_t *ids, const float *pre, const float *rep, const float *post,
                      int64_t n) {
    (void)V;
    for (int64_t i = 0; i < n; i++) {
        float v = x[ids[i]] + pre[i];
        if (rep[i] != 1.0f) v = v > 0 ? v / rep[i] : v * rep[i];
        x[ids[i]] = v + post[i];
    }
}

void ds_probs_min_p(float *p, int64_t V, double min_p) {
    if (V <= 0 || min_p <= 0) return;
    float mx = p[0];
    for (int64_t i = 1; i < V; i++) mx = p[i] > mx ? p[i] : mx;
    const float thr = (float)min_p * mx; /* transformers: min_p times the top probability, in FP32 */
    double sum = 0;
    for (int64_t i = 0; i < V; i++) {
        if (p[i] < thr) p[i] = 0;
        sum += p[i];
    }
    for (int64_t i = 0; i < V; i++) p[i] = (float)(p[i] / sum);
}
