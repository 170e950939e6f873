/*
 * sampling.c — next-token choice from logits: greedy (temperature ≤ 0),
 * temperature, top-k, top-p (nucleus: the smallest set of most probable
 * tokens whose mass reaches p), min-p, from a seeded ds_rng so a seed
 * reproduces a run.  Order of the filters as in transformers' generate:
 * temperature, then top-k, then top-p on the renormalised top-k
 * distribution, then min-p.  Before them, on a copy of the logits (the raw
 * ones stay for log-probabilities), the OpenAI/vLLM adjustments in vLLM's
 * order: logit_bias added, the repetition penalty (tokens of the prompt or
 * the output: a positive logit divided by it, another multiplied, as
 * transformers' RepetitionPenaltyLogitsProcessor), then the presence and
 * frequency penalties (tokens of the output: subtracted once, and per
 * occurrence).  The loops over the vocabulary are the table's
 * logits_adjust, sample_probs, probs_min_p, sample_pick and argmax_rows;
 * here: checks, buffers (the table's memory, beside the logits), the host
 * RNG and the token history (host: ids).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "infer/infer.h"

static double rep_of(const ds_sample_params *p) { return p->repetition_penalty == 0 ? 1 : p->repetition_penalty; }

int ds_sample_params_adjusts(const ds_sample_params *p) {
    return rep_of(p) != 1 || p->presence_penalty != 0 || p->frequency_penalty != 0 || p->nbias > 0 ||
           (p->min_tokens > 0 && p->nstop_ids > 0) || p->guide;
}

int ds_sample_params_argmax(const ds_sample_params *p) { return p->temperature <= 0 && !ds_sample_params_adjusts(p); }

static int bad_num(double x, double lo, double hi) { return !(x >= lo && x <= hi); }

/* the slot of id among the adjusted ids, added (no change to its logit yet) when new */
static int32_t add_id(ds_sampler *s, int32_t id) {
    if (s->slot[id]) return s->slot[id] - 1;
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 64;
        s->ids = ds_realloc(s->ids, (size_t)s->cap * sizeof(int32_t));
        s->pre = ds_realloc(s->pre, (size_t)s->cap * sizeof(float));
        s->rep = ds_realloc(s->rep, (size_t)s->cap * sizeof(float));
        s->post = ds_realloc(s->post, (size_t)s->cap * sizeof(float));
    }
    s->ids[s->n] = id, s->pre[s->n] = 0, s->rep[s->n] = 1, s->post[s->n] = 0;
    s->slot[id] = (int32_t)++s->n;
    return (int32_t)(s->n - 1);
}

int ds_sampler_init(ds_sampler *s, const struct ds_ops *ops, const ds_sample_params *p, int64_t V) {
    memset(s, 0, sizeof *s);
    if (V <= 0) return ds_err("sampler: empty vocabulary");
    if (!(p->temperature == p->temperature) || p->temperature < 0)
        return ds_err("sampler: temperature must be ≥ 0 (got %g)", p->temperature);
    if (p->top_k < 0) return ds_err("sampler: top-k must be ≥ 0 (got %lld)", (long long)p->top_k);
    if (!(p->top_p > 0 && p->top_p <= 1)) return ds_err("sampler: top-p must be in (0, 1] (got %g)", p->top_p);
    if (bad_num(p->min_p, 0, 1)) return ds_err("sampler: min-p must be in [0, 1] (got %g)", p->min_p);
    if (!(rep_of(p) > 0 && rep_of(p) <= 1e6))
        return ds_err("sampler: the repetition penalty must be > 0 (got %g)", p->repetition_penalty);
    if (bad_num(p->presence_penalty, -1e6, 1e6) || bad_num(p->frequency_penalty, -1e6, 1e6))
        return ds_err("sampler: the presence and frequency penalties must be finite (got %g, %g)", p->presence_penalty,
                      p->frequency_penalty);
    for (int i = 0; i < p->nbias; i++) {
        if (p->bias[i].id < 0 || p->bias[i].id >= V)
            return ds_err("sampler: logit bias for token id %d, outside the vocabulary [0, %lld)", p->bias[i].id,
                          (long long)V);
        if (bad_num(p->bias[i].bias, -1e6, 1e6))
            return ds_err("sampler: logit bias %g for token id %d is not finite", p->bias[i].bias, p->bias[i].id);
    }
    if (p->min_tokens < 0) return ds_err("sampler: min_tokens must be ≥ 0 (got %lld)", (long long)p->min_tokens);
    for (int i = 0; (p->min_tokens > 0 || p->guide) && i < p->nstop_ids; i++)
        if (p->stop_ids[i] < 0 || p->stop_ids[i] >= V)
            return ds_err("sampler: stop id %d outside the vocabulary [0, %lld)", p->stop_ids[i], (long long)V);
    s->p = *p;
    s->p.bias = NULL, s->p.nbias = 0, s->p.stop_ids = NULL, s->p.nstop_ids = 0;
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
    if (!ds_sample_params_adjusts(p)) return 0;
    s->work = ops->alloc((size_t)V * sizeof(float));
    if (!s->work) {
        ds_sampler_free(s);
        return -1;
    }
    s->count = ds_calloc((size_t)V, sizeof(int32_t));
    s->slot = ds_calloc((size_t)V, sizeof(int32_t));
    /* the biased ids first; a repeated id keeps its last bias */
    for (int i = 0; i < p->nbias; i++) {
        const int32_t k = add_id(s, p->bias[i].id); /* before s->pre is read: add_id may move it */
        s->pre[k] = p->bias[i].bias;
    }
    /* then the ids min_tokens holds back: their logits are -inf until then, then their bias */
    if (p->min_tokens > 0 && p->nstop_ids > 0) {
        s->held = ds_malloc((size_t)p->nstop_ids * sizeof(int32_t));
        s->held_pre = ds_malloc((size_t)p->nstop_ids * sizeof(float));
        for (int i = 0; i < p->nstop_ids; i++) {
            const int32_t k = add_id(s, p->stop_ids[i]);
            int dup = 0;
            for (int j = 0; j < s->nheld; j++) dup |= s->held[j] == k;
            if (!dup) s->held[s->nheld] = k, s->held_pre[s->nheld++] = s->pre[k];
        }
    }
    if (p->guide) { /* the refused ids go through logits_adjust with -inf added */
        const float *t0, *t1, *t2;
        if (ds_json_guide_vocab(p->guide, &t0, &t1, &t2) != V) {
            ds_sampler_free(s);
            return ds_err("sampler: the JSON guide's vocabulary is not the model's %lld", (long long)V);
        }
        ds_json_state_init(&s->gstate, p->schema);
        s->gstop = ds_malloc((size_t)(p->nstop_ids + 1) * sizeof(int32_t));
        for (int i = 0; i < p->nstop_ids; i++) s->gstop[s->ngstop++] = p->stop_ids[i];
        s->gids = ds_malloc((size_t)V * sizeof(int32_t));
    }
    return 0;
}

void ds_sampler_free(ds_sampler *s) {
    if (s->ops) {
        s->ops->free(s->prob);
        s->ops->free(s->idx);
        s->ops->free(s->work);
    }
    free(s->count), free(s->slot);
    free(s->ids), free(s->pre), free(s->rep), free(s->post);
    free(s->held), free(s->held_pre);
    free(s->gstop), free(s->gids);
    memset(s, 0, sizeof *s);
}

/* id joins the history: seen (repetition), and counted when it is an output token */
static void note(ds_sampler *s, int32_t id, int output) {
    if (!s->count || id < 0 || id >= s->V) return;
    const int32_t k = add_id(s, id);
    s->rep[k] = (float)rep_of(&s->p);
    if (output) {
        s->count[id]++;
        s->post[k] = -(float)(s->p.frequency_penalty * s->count[id] + s->p.presence_penalty);
    }
}

void ds_sampler_prompt(ds_sampler *s, const int32_t *ids, int64_t P) {
    if (!s->count || rep_of(&s->p) == 1) return; /* only the repetition penalty looks at the prompt */
    for (int64_t i = 0; i < P; i++) note(s, ids[i], 0);
}

const float *ds_sampler_adjust(ds_sampler *s, const float *logits) {
    if (!s->work) return logits;
    for (int i = 0; i < s->nheld; i++) s->pre[s->held[i]] = s->drawn < s->p.min_tokens ? -INFINITY : s->held_pre[i];
    s->ops->copy_d2d(s->work, logits, (size_t)s->V * sizeof(float));
    s->ops->logits_adjust(s->work, s->V, s->ids, s->pre, s->rep, s->post, s->n);
    if (s->p.guide) { /* what the guide refuses: -inf */
        const float *neg, *one, *zero;
        ds_json_guide_vocab(s->p.guide, &neg, &one, &zero);
        const int64_t nd = ds_json_guide_refused(s->p.guide, &s->gstate, s->gstop, s->ngstop, s->gids);
        if (nd) s->ops->logits_adjust(s->work, s->V, s->gids, neg, one, zero, nd);
    }
    return s->work;
}

void ds_sampler_probs(ds_sampler *s, float *prob, const float *logits) {
    s->ops->sample_probs(prob, s->idx, logits, s->V, s->p.temperature, s->p.top_k, s->p.top_p);
    if (s->p.min_p > 0 && s->p.temperature > 0) s->ops->probs_min_p(prob, s->V, s->p.min_p);
}

int32_t ds_sample(ds_sampler *s, const float *logits) {
    int32_t id;
    logits = ds_sampler_adjust(s, logits);
    if (s->p.temperature <= 0) {
        s->ops->argmax_rows(&id, logits, 1, s->V);
    } else {
        ds_sampler_probs(s, s->prob, logits);
        id = s->ops->sample_pick(s->prob, s->V, ds_rng_uniform(&s->rng));
    }
    note(s, id, 1);
    s->drawn++;
    if (s->p.guide) {
        size_t len = 0;
        const char *b = ds_json_guide_token(s->p.guide, id, &len);
        if (b) ds_json_state_feed(&s->gstate, b, len); /* a stop id has no bytes here */
    }
    return id;
}

int ds_sampler_done(const ds_sampler *s) { return s->p.guide && ds_json_state_done(&s->gstate) && !s->ngstop; }
