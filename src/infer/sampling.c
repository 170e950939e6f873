/*
 * sampling.c — next-token choice from logits: greedy (temperature ≤ 0),
 * temperature, top-k, top-p (nucleus: the smallest set of most probable
 * tokens whose mass reaches p), from a seeded ds_rng so a seed reproduces a
 * run.  Order of the filters as in transformers' generate: temperature, then
 * top-k, then top-p on the renormalised top-k distribution.  The loops over
 * the vocabulary are the table's sample_probs, sample_pick and argmax_rows;
 * here: checks, buffers (the table's memory, beside the logits) and the host RNG.
 */
#include <stdlib.h>
#include <string.h>

#include "infer/infer.h"

int ds_sampler_init(ds_sampler *s, const struct ds_ops *ops, const ds_sample_params *p, int64_t V) {
    memset(s, 0, sizeof *s);
    if (V <= 0) return ds_err("sampler: empty vocabulary");
    if (!(p->temperature == p->temperature) || p->temperature < 0)
        return ds_err("sampler: temperature must be ≥ 0 (got %g)", p->temperature);
    if (p->top_k < 0) return ds_err("sampler: top-k must be ≥ 0 (got %lld)", (long long)p->top_k);
    if (!(p->top_p > 0 && p->top_p <= 1)) return ds_err("sampler: top-p must be in (0, 1] (got %g)", p->top_p);
    s->p = *p;
    s->V = V;
    s->ops = ops;
    ds_rng_seed(&s->rng, p->seed);
    /* the distribution and the sort's scratch live beside the logits: the table's memory */
    s->prob = ops->alloc((size_t)V * sizeof(float));
    s->idx = ops->alloc((size_t)V * sizeof(int32_t));
    if (!s->prob || !s->idx) {
        ds_sampler_free(s);
        return -1;
    }
    return 0;
}

void ds_sampler_free(ds_sampler *s) {
    if (s->ops) {
        s->ops->free(s->prob);
        s->ops->free(s->idx);
    }
    memset(s, 0, sizeof *s);
}

void ds_sampler_probs(ds_sampler *s, float *prob, const float *logits) {
    s->ops->sample_probs(prob, s->idx, logits, s->V, s->p.temperature, s->p.top_k, s->p.top_p);
}

int32_t ds_sample(ds_sampler *s, const float *logits) {
    int32_t id;
    if (s->p.temperature <= 0) {
        s->ops->argmax_rows(&id, logits, 1, s->V);
        return id;
    }
    ds_sampler_probs(s, s->prob, logits);
    return s->ops->sample_pick(s->prob, s->V, ds_rng_uniform(&s->rng));
}
