/*
 * pp_sched.c — stages, the 1F1B order and its time model (see pp_sched.h).
 */
#include "train/pp_sched.h"

#include <stdlib.h>
#include <string.h>

#include "base/base.h"

double ds_pp_layer_cost(const ds_config *c, int64_t l, int64_t T) {
    double H = (double)c->hidden_size, nh = (double)c->num_attention_heads;
    double dq = (double)ds_config_qk_head_dim(c), dn = (double)c->qk_nope_head_dim, dv = (double)c->v_head_dim;
    double rkv = (double)c->kv_lora_rank, dr = (double)c->qk_rope_head_dim, rq = (double)c->q_lora_rank;
    double w = rq > 0 ? H * rq + rq * nh * dq : H * nh * dq; /* q */
    w += H * (rkv + dr) + rkv * nh * (dn + dv) + nh * dv * H; /* kv_a, kv_b, o */
    if (ds_config_layer_is_moe(c, l))
        w += (double)(c->num_experts_per_tok + c->n_shared_experts) * 3 * H * (double)c->moe_intermediate_size +
             H * (double)c->n_routed_experts;
    else
        w += 3 * H * (double)c->intermediate_size;
    /* 2 FLOPs per weight; attention: 2·nh·(dq+dv) per (query, key) pair, (T+1)/2 keys per query */
    return 2 * w + 2 * nh * (dq + dv) * ((double)T + 1) / 2;
}

double ds_pp_head_cost(const ds_config *c, int64_t T) {
    double H = (double)c->hidden_size, V = (double)c->vocab_size;
    double f = 2 * V * H; /* output head */
    for (int64_t k = 1; k <= c->num_nextn_predict_layers; k++)
        f += 2 * 2 * H * H + ds_pp_layer_cost(c, c->num_hidden_layers + k - 1, T) + 2 * V * H;
    return f;
}

double ds_pp_stage_cost(const ds_config *c, int S, const int64_t *first, int s, int64_t T) {
    double f = 0;
    for (int64_t l = first[s]; l < first[s + 1]; l++) f += ds_pp_layer_cost(c, l, T);
    if (s == S - 1) f += ds_pp_head_cost(c, T);
    return f;
}

static int split_spec(const ds_config *c, int S, const char *spec, int64_t *first) {
    const int64_t L = c->num_hidden_layers;
    const char *p = spec;
    first[0] = 0;
    for (int s = 0; s < S; s++) {
        char *end;
        long long n = strtoll(p, &end, 10);
        if (end == p || n <= 0 || (s < S - 1 && *end != ',') || (s == S - 1 && *end))
            return ds_err("--pp-layers %s: want %d positive layer counts separated by commas", spec, S);
        first[s + 1] = first[s] + n;
        p = end + 1;
    }
    if (first[S] != L)
        return ds_err("--pp-layers %s: the counts sum to %lld, the model has %lld layers", spec, (long long)first[S],
                      (long long)L);
    return 0;
}

int ds_pp_split(const ds_config *c, int S, const char *spec, int64_t T, int64_t *first) {
    const int64_t L = c->num_hidden_layers;
    if (S < 1) return ds_err("--pp %d: want at least 1 stage", S);
    if (S > L) return ds_err("--pp %d: the model has %lld layers, at least one per stage", S, (long long)L);
    if (spec && *spec) return split_spec(c, S, spec, first);
    /* best[s][j]: the smallest possible most expensive stage when stages 0..s-1
     * hold layers [0, j); stage S-1 also carries the head.  O(S·L²). */
    double *pre = malloc(sizeof(double) * (size_t)(L + 1));
    double *best = malloc(sizeof(double) * (size_t)(S + 1) * (size_t)(L + 1));
    int64_t *arg = malloc(sizeof(int64_t) * (size_t)(S + 1) * (size_t)(L + 1));
    if (!pre || !best || !arg) {
        free(pre), free(best), free(arg);
        return ds_err("--pp: out of memory");
    }
    pre[0] = 0;
    for (int64_t l = 0; l < L; l++) pre[l + 1] = pre[l] + ds_pp_layer_cost(c, l, T);
    const double head = ds_pp_head_cost(c, T), inf = 1e300;
#define BEST(s, j) best[(size_t)(s) * (size_t)(L + 1) + (size_t)(j)]
#define ARG(s, j) arg[(size_t)(s) * (size_t)(L + 1) + (size_t)(j)]
    for (int s = 0; s <= S; s++)
        for (int64_t j = 0; j <= L; j++) BEST(s, j) = inf, ARG(s, j) = -1;
    BEST(0, 0) = 0;
    for (int s = 1; s <= S; s++)
        for (int64_t j = s; j <= L - (S - s); j++) 
            for (int64_t i = s - 1; i < j; i++) {
                if (BEST(s - 1, i) >= inf) continue;
                double stage = pre[j] - pre[i] + (s == S ? head : 0);
                double worst = BEST(s - 1, i) > stage ? BEST(s - 1, i) : stage;
                /* ties: the later cut, which puts more layers early (the last stage has the head) */
                if (worst <= BEST(s, j)) BEST(s, j) = worst, ARG(s, j) = i;
            }
    int64_t j = L;
    first[S] = L;
    for (int s = S; s >= 1; s--) j = first[s - 1] = ARG(s, j);
#undef BEST
#undef ARG
    free(pre), free(best), free(arg);
    return 0;
}

int ds_pp_1f1b(int S, int s, int M, ds_pp_op *ops) {
    if (S < 1 || s < 0 || s >= S || M < 1) return ds_err("1F1B: stage %d of %d with %d micro-batches", s, S, M);
    int warm = S - 1 - s < M ? S - 1 - s : M, n = 0, f = 0, b = 0;
    for (; f < warm; f++) ops[n++] = (ds_pp_op){DS_PP_FWD, f};
    while (f < M) {
        ops[n++] = (ds_pp_op){DS_PP_FWD, f++};
        ops[n++] = (ds_pp_op){DS_PP_BWD, b++};
    }
    while (b < M) ops[n++] = (ds_pp_op){DS_PP_BWD, b++};
    return n;
}

double ds_pp_simulate(int S, int M, const double *f, const double *b, double *busy, double *bubble) {
    if (S < 1 || M < 1) return -1;
    ds_pp_op *ops = malloc(sizeof(ds_pp_op) * (size_t)S * 2 * (size_t)M);
    double *fend = calloc((size_t)S * (size_t)M, sizeof(double)), *bend = calloc((size_t)S * (size_t)M, sizeof(double));
    int *pc = calloc((size_t)S, sizeof(int));
    double *clock = calloc((size_t)S, sizeof(double));
    if (!ops || !fend || !bend || !pc || !clock) {
        free(ops), free(fend), free(bend), free(pc), free(clock);
        return -1;
    }
    for (int s = 0; s < S; s++) ds_pp_1f1b(S, s, M, ops + (size_t)s * 2 * (size_t)M);
    /* run every stage's next op as soon as its input is there; 1F1B never deadlocks */
    int left = 2 * M * S;
    while (left > 0) {
        int progress = 0;
        for (int s = 0; s < S; s++) {
            while (pc[s] < 2 * M) {
                ds_pp_op op = ops[(size_t)s * 2 * (size_t)M + (size_t)pc[s]];
                double ready;
                if (op.dir == DS_PP_FWD) {
                    if (s > 0 && fend[(size_t)(s - 1) * M + op.mb] <= 0) break;
                    ready = s > 0 ? fend[(size_t)(s - 1) * M + op.mb] : 0;
                } else {
                    if (s < S - 1 && bend[(size_t)(s + 1) * M + op.mb] <= 0) break;
                    ready = s < S - 1 ? bend[(size_t)(s + 1) * M + op.mb] : fend[(size_t)s * M + op.mb];
                }
                double t0 = clock[s] > ready ? clock[s] : ready;
                clock[s] = t0 + (op.dir == DS_PP_FWD ? f[s] : b[s]);
                (op.dir == DS_PP_FWD ? fend : bend)[(size_t)s * M + op.mb] = clock[s] > 0 ? clock[s] : 1e-300;
                pc[s]++, left--, progress = 1;
            }
        }
        if (!progress) break; /* not reached for 1F1B */
    }
    double span = 0, work = 0;
    for (int s = 0; s < S; s++) {
        if (clock[s] > span) span = clock[s];
        double w = (double)M * (f[s] + b[s]);
        work += w;
        if (busy) busy[s] = w;
    }
    if (bubble) *bubble = span > 0 ? 1 - work / ((double)S * span) : 0;
    free(ops), free(fend), free(bend), free(pc), free(clock);
    return left > 0 ? -1 : span;
}
