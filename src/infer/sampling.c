/*
 * sampling.c — next-token choice from logits: greedy (temperature ≤ 0),
 * temperature, top-k, top-p (nucleus: the smallest set of most probable
 * tokens whose mass reaches p), from a seeded ds_rng so a seed reproduces a
 * run.  Order of the filters as in transformers' generate: temperature, then
 * top-k, then top-p on the renormalised top-k distribution.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "infer/infer.h"

int ds_sampler_init(ds_sampler *s, const ds_sample_params *p, int64_t V) {
    memset(s, 0, sizeof *s);
    if (V <= 0) return ds_err("sampler: empty vocabulary");
    if (!(p->temperature == p->temperature) || p->temperature < 0)
        return ds_err("sampler: temperature must be ≥ 0 (got %g)", p->temperature);
    if (p->top_k < 0) return ds_err("sampler: top-k must be ≥ 0 (got %lld)", (long long)p->top_k);
    if (!(p->top_p > 0 && p->top_p <= 1)) return ds_err("sampler: top-p must be in (0, 1] (got %g)", p->top_p);
    s->p = *p;
    s->V = V;
    ds_rng_seed(&s->rng, p->seed);
    s->prob = ds_malloc((size_t)V * sizeof(float));
    s->idx = ds_malloc((size_t)V * sizeof(int32_t));
    return 0;
}

void ds_sampler_free(ds_sampler *s) {
    free(s->prob);
    free(s->idx);
    memset(s, 0, sizeof *s);
}

int32_t ds_argmax(const float *x, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return (int32_t)best;
}

/* descending by value, ties by ascending index (a total order: deterministic) */
static int cmp_desc(const void *a, const void *b, void *ctx) {
    const float *v = ctx;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (v[i] > v[j]) return -1;
    if (v[i] < v[j]) return 1;
    return (i > j) - (i < j);
}

void ds_sampler_probs(ds_sampler *s, float *prob, const float *logits) {
    const int64_t V = s->V;
    if (s->p.temperature <= 0) {
        memset(prob, 0, (size_t)V * sizeof(float));
        prob[ds_argmax(logits, V)] = 1.0f;
        return;
    }
    const double invT = 1.0 / s->p.temperature;
    int64_t keep = V;
    int filtered = (s->p.top_k > 0 && s->p.top_k < V) || s->p.top_p < 1;
    if (!filtered) {
        float mx = logits[ds_argmax(logits, V)];
        double sum = 0;
        for (int64_t i = 0; i < V; i++) {
            double e = exp(((double)logits[i] - mx) * invT);
            prob[i] = (float)e;
            sum += e;
        }
        for (int64_t i = 0; i < V; i++) prob[i] = (float)(prob[i] / sum);
        return;
    }
    for (int64_t i = 0; i < V; i++) s->idx[i] = (int32_t)i;
    qsort_r(s->idx, (size_t)V, sizeof(int32_t), cmp_desc, (void *)logits);
    if (s->p.top_k > 0 && s->p.top_k < V) keep = s->p.top_k;
    /* softmax over the kept (sorted) tokens, in double */
    const double mx = logits[s->idx[0]];
    double sum = 0;
    for (int64_t r = 0; r < keep; r++) sum += exp(((double)logits[s->idx[r]] - mx) * invT);
    if (s->p.top_p < 1) {
        double cum = 0;
        int64_t r = 0;
        for (; r < keep; r++) {
            cum += exp(((double)logits[s->idx[r]] - mx) * invT) / sum;
            if (cum >= s->p.top_p) break;
        }
        keep = r < keep ? r + 1 : keep;
        sum = 0;
        for (r = 0; r < keep; r++) sum += exp(((double)logits[s->idx[r]] - mx) * invT);
    }
    memset(prob, 0, (size_t)V * sizeof(float));
    for (int64_t r = 0; r < keep; r++) prob[s->idx[r]] = (float)(exp(((double)logits[s->idx[r]] - mx) * invT) / sum);
}

int32_t ds_sample(ds_sampler *s, const float *logits) {
    if (s->p.temperature <= 0) return ds_argmax(logits, s->V);
    ds_sampler_probs(s, s->prob, logits);
    double u = ds_rng_uniform(&s->rng), cum = 0, total = 0;
    for (int64_t i = 0; i < s->V; i++) total += s->prob[i];
    u *= total;
    int64_t last = -1;
    for (int64_t i = 0; i < s->V; i++) {
        if (s->prob[i] <= 0) continue;
        cum += s->prob[i];
        last = i;
        if (u < cum) return (int32_t)i;
    }
    return (int32_t)(last >= 0 ? last : ds_argmax(logits, s->V));
}
