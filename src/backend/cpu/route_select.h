/*
 * route_select.h — the routed experts' selection for one token, shared by the
 * CPU's router (moe_route.c) and the CUDA router kernel (backend/cuda/
 * elementwise.cu, one thread a token), so both make the same choices in the
 * same order from the same selection scores.
 *
 * sel (E): the selection scores (affinities plus the balancing bias); the
 * dropped groups' entries become -inf.  gs: G floats of scratch.
 *   group limit (G > 1, Gk < G): a group's score is the sum of its two largest
 *     (noaux_tc) or its largest; the G - Gk weakest groups are dropped (ties:
 *     the later group first, as a stable top-Gk that prefers lower indices)
 *   top-K by repeated arg-max (ties: the lower expert id; a pick never taken
 *     twice), then sorted by expert id into idx (K).
 * Plain C (compiled as C for the CPU, as C++ host/device code by nvcc).
 */
#ifndef DS_ROUTE_SELECT_H
#define DS_ROUTE_SELECT_H

#include <math.h>
#include <stdint.h>

#include "backend/cpu/kernels.h"
#include "backend/hd.h"

DS_HD void ds_route_select(int32_t *idx, float *sel, float *gs, const ds_route_params *p) {
    const int64_t E = p->E, K = p->K, G = p->G > 0 ? p->G : 1, Gk = p->Gk > 0 ? p->Gk : G;
    if (G > 1 && Gk < G) {
        const int64_t per = E / G;
        for (int64_t g = 0; g < G; g++) {
            const float *x = sel + g * per;
            if (p->group_top2_sum) {
                float a = -INFINITY, b = -INFINITY; /* a >= b: the two largest */
                for (int64_t i = 0; i < per; i++) {
                    if (x[i] > a) { b = a; a = x[i]; }
                    else if (x[i] > b) b = x[i];
                }
                gs[g] = per >= 2 ? a + b : a;
            } else {
                float a = -INFINITY;
                for (int64_t i = 0; i < per; i++) a = x[i] > a ? x[i] : a;
                gs[g] = a;
            }
        }
        for (int64_t r = 0; r < G - Gk; r++) {
            int64_t worst = -1;
            for (int64_t g = 0; g < G; g++)
                if (gs[g] != INFINITY && (worst < 0 || gs[g] <= gs[worst])) worst = g;
            gs[worst] = INFINITY; /* marked dropped */
            for (int64_t i = 0; i < per; i++) sel[worst * per + i] = -INFINITY;
        }
    }
    for (int64_t k = 0; k < K; k++) {
        int64_t best = -1;
        for (int64_t e = 0; e < E; e++) {
            int taken = 0;
            for (int64_t j = 0; j < k; j++) taken |= idx[j] == e;
            if (!taken && (best < 0 || sel[e] > sel[best])) best = e;
        }
        idx[k] = (int32_t)best;
    }
    for (int64_t i = 1; i < K; i++) { /* insertion sort by expert id */
        const int32_t x = idx[i];
        int64_t j = i - 1;
        while (j >= 0 && idx[j] > x) { idx[j + 1] = idx[j]; j--; }
        idx[j + 1] = x;
    }
}

#endif
