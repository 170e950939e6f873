/*
 * cross_entropy.c — softmax cross-entropy over the vocabulary with an ignore
 * id, forward and backward in one pass over each logits row:
 *   loss_n = log Σ_v exp(z_v) − z_target,  dz = dscale·(softmax(z) − onehot).
 * The reference works in double; the fast version in float with the max
 * subtracted, OpenMP over rows, the per-row losses summed in double in row
 * order.
 */
#include "kernels/backward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

double ds_cross_entropy_ref(float *dlogits, int64_t *count, const float *logits, const int32_t *targets, int64_t N,
                            int64_t V, int32_t ignore, float dscale) {
    double total = 0;
    int64_t cnt = 0;
    for (int64_t n = 0; n < N; n++) {
        const float *z = logits + n * V;
        float *dz = dlogits ? dlogits + n * V : NULL;
        if (targets[n] == ignore) {
            if (dz) memset(dz, 0, (size_t)V * sizeof(float));
            continue;
        }
        double mx = -INFINITY, s = 0;
        for (int64_t v = 0; v < V; v++) mx = z[v] > mx ? z[v] : mx;
        for (int64_t v = 0; v < V; v++) s += exp((double)z[v] - mx);
        double lse = mx + log(s);
        total += lse - z[targets[n]];
        cnt++;
        if (dz)
            for (int64_t v = 0; v < V; v++)
                dz[v] = (float)(dscale * (exp((double)z[v] - lse) - (v == targets[n] ? 1.0 : 0.0)));
    }
    if (count) *count = cnt;
    return total;
}

double ds_cross_entropy(float *dlogits, int64_t *count, const float *logits, const int32_t *targets, int64_t N,
                        int64_t V, int32_t ignore, float dscale) {
    double *loss = ds_malloc((size_t)(N > 0 ? N : 1) * sizeof(double));
#pragma omp parallel for schedule(static) if (N * V > 65536)
    for (int64_t n = 0; n < N; n++) {
        const float *z = logits + n * V;
        float *dz = dlogits ? dlogits + n * V : NULL;
        int32_t t = targets[n];
        if (t == ignore) {
            loss[n] = NAN;
            if (dz) memset(dz, 0, (size_t)V * sizeof(float));
            continue;
        }
        float mx = -INFINITY, s = 0;
        for (int64_t v = 0; v < V; v++) mx = z[v] > mx ? z[v] : mx;
        for (int64_t v = 0; v < V; v++) s += expf(z[v] - mx);
        float lse = mx + logf(s);
        float zt = z[t];
        loss[n] = (double)lse - (double)zt;
        if (dz) {
            for (int64_t v = 0; v < V; v++) dz[v] = dscale * expf(z[v] - lse);
            dz[t] -= dscale;
        }
    }
    double total = 0;
    int64_t cnt = 0;
    for (int64_t n = 0; n < N; n++)
        if (targets[n] != ignore) total += loss[n], cnt++;
    free(loss);
    if (count) *count = cnt;
    return total;
}
