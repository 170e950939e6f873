/*
 * logprobs.c — token_logprobs (logprobs.h): log-softmax at the target and the
 * greedy test, per row in double.  The CPU entry splits the rows over threads
 * (each row summed by one thread in the same order: the same bits for any
 * thread count, and the same as the reference).
 */
#include "backend/cpu/logprobs.h"

#include <math.h>

#include "backend/cpu/par.h"

static void row_logprob(float *lp, uint8_t *greedy, const float *row, int32_t t, int64_t V) {
    int64_t am = 0;
    for (int64_t v = 1; v < V; v++)
        if (row[v] > row[am]) am = v;
    double mx = row[am], s = 0;
    for (int64_t v = 0; v < V; v++) s += exp((double)row[v] - mx);
    *lp = (float)((double)row[t] - mx - log(s));
    *greedy = am == t;
}

void ds_token_logprobs(float *logprob, uint8_t *greedy, const float *logits, const int32_t *targets, int64_t N,
                       int64_t V) {
    /* ~20 FLOPs an element (a double exp) */
    int nt = ds_par_threads(20.0 * (double)N * (double)V, DS_PAR_MIN_FLOPS);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t r = 0; r < N; r++) row_logprob(&logprob[r], &greedy[r], logits + r * V, targets[r], V);
}

void ds_token_logprobs_ref(float *logprob, uint8_t *greedy, const float *logits, const int32_t *targets, int64_t N,
                           int64_t V) {
    for (int64_t r = 0; r < N; r++) {
        const float *x = logits + r * V;
        int64_t am = 0;
        for (int64_t v = 1; v < V; v++)
            if (x[v] > x[am]) am = v;
        double m = x[am], s = 0;
        for (int64_t v = 0; v < V; v++) s += exp((double)x[v] - m);
        logprob[r] = (float)((double)x[targets[r]] - m - log(s));
        greedy[r] = am == targets[r];
    }
}
