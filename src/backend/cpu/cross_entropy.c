/*
 * cross_entropy.c — softmax cross-entropy over the vocabulary with an ignore
 * id, forward and backward in one pass over each logits row:
 *   loss_n = log Σ_v exp(z_v) − z_target,  dz = dscale·(softmax(z) − onehot).
 * The reference works in double; the fast version in float with the max
 * subtracted, OpenMP over rows, the per-row losses summed in double in row
 * order.
 */
#include "backend/cpu/backward.h"
#include "backend/cpu/vmath.h"

#include <math.h>
#include <string.h>

double ds_cross_entropy_ref(float *dlogits, float *losses, int64_t *count, const float *logits,
                            const int32_t *targets, int64_t N, int64_t V, int32_t ignore, float dscale) {
    double total = 0;
    int64_t cnt = 0;
    for (int64_t n = 0; n < N; n++) {
        const float *z = logits + n * V;
        float *dz = dlogits ? dlogits + n * V : NULL;
        if (targets[n] == ignore) {
            if (dz) memset(dz, 0, (size_t)V * sizeof(float));
            if (losses) losses[n] = 0;
            continue;
        }
        double mx = -INFINITY, s = 0;
        for (int64_t v = 0; v < V; v++) mx = z[v] > mx ? z[v] : mx;
        for (int64_t v = 0; v < V; v++) s += exp((double)z[v] - mx);
        double lse = mx + log(s);
        total += lse - z[targets[n]];
        if (losses) losses[n] = (float)(lse - z[targets[n]]);
        cnt++;
        if (dz)
            for (int64_t v = 0; v < V; v++)
                dz[v] = (float)(dscale * (exp((double)z[v] - lse) - (v == targets[n] ? 1.0 : 0.0)));
    }
    if (count) *count = cnt;
    return total;
}

double ds_cross_entropy(float *dlogits, float *loss, int64_t *count, const float *logits, const int32_t *targets,
                        int64_t N, int64_t V, int32_t ignore, float dscale) {
#pragma omp parallel for schedule(static) if (N * V > 65536)
    for (int64_t n = 0; n < N; n++) {
        const float *z = logits + n * V;
        float *dz = dlogits ? dlogits + n * V : NULL;
        int32_t t = targets[n];
        if (t == ignore) {
            loss[n] = 0;
            if (dz) memset(dz, 0, (size_t)V * sizeof(float));
            continue;
        }
        /* vector max, exp-sum and exp (vmath.h) */
        float mx = ds_vmax(z, V);
        float s = ds_vexp_sum(NULL, z, mx, V);
        float lse = mx + ds_logf_fast(s);
        float zt = z[t];
        loss[n] = lse - zt;
        if (dz) {
            ds_vexp_sum(dz, z, lse, V);
            #pragma omp simd
            for (int64_t v = 0; v < V; v++) dz[v] *= dscale;
            dz[t] -= dscale;
        }
    }
    double total = 0;
    int64_t cnt = 0;
    for (int64_t n = 0; n < N; n++)
        if (targets[n] != ignore) total += loss[n], cnt++;
    if (count) *count = cnt;
    return total;
}
