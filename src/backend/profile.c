/*
 * profile.c — the profiling ops table (profile.h).  The wrappers, one per
 * entry of struct ds_ops, are generated into profile_gen.h by
 * tools/gen_ops_profile.py.
 */
#include "backend/profile.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

static const struct ds_ops *g_inner;
static struct ds_ops g_prof;
static atomic_int g_depth; /* entries running: > 0 at entry means nested */

typedef struct {
    atomic_llong calls, nested;
    double seconds; /* outermost calls only: the main thread's */
} pf_stat;

static double pf_begin(void);
static void pf_end(int e, double t);

#include "backend/profile_gen.h"

static pf_stat g_stat[PF_COUNT];

static double pf_begin(void) { return atomic_fetch_add(&g_depth, 1) == 0 ? ds_now() : -1.0; }

static void pf_end(int e, double t) {
    if (t >= 0) {
        g_inner->sync();
        g_stat[e].seconds += ds_now() - t;
        atomic_fetch_add(&g_stat[e].calls, 1);
    } else {
        atomic_fetch_add(&g_stat[e].nested, 1);
    }
    atomic_fetch_sub(&g_depth, 1);
}

const struct ds_ops *ds_ops_profile(const struct ds_ops *inner) {
    g_inner = inner;
    g_prof = *inner; /* name, host_visible and any field that is not an entry */
    pf_fill(&g_prof, inner);
    ds_ops_profile_reset();
    return &g_prof;
}

void ds_ops_profile_reset(void) {
    for (int e = 0; e < PF_COUNT; e++) {
        atomic_store(&g_stat[e].calls, 0);
        atomic_store(&g_stat[e].nested, 0);
        g_stat[e].seconds = 0;
    }
}

const char *ds_ops_profile_entry(int e, long long *calls, long long *nested, double *seconds) {
    if (e < 0 || e >= PF_COUNT) return NULL;
    if (calls) *calls = atomic_load(&g_stat[e].calls);
    if (nested) *nested = atomic_load(&g_stat[e].nested);
    if (seconds) *seconds = g_stat[e].seconds;
    return pf_names[e];
}

static int by_time(const void *a, const void *b) {
    double x = g_stat[*(const int *)a].seconds, y = g_stat[*(const int *)b].seconds;
    return x < y ? 1 : x > y ? -1 : *(const int *)a - *(const int *)b;
}

void ds_ops_profile_print(FILE *f, int steps, double step_s) {
    int order[PF_COUNT], n = 0;
    double tot = 0;
    for (int e = 0; e < PF_COUNT; e++)
        if (atomic_load(&g_stat[e].calls) || atomic_load(&g_stat[e].nested)) order[n++] = e, tot += g_stat[e].seconds;
    qsort(order, (size_t)n, sizeof *order, by_time);
    if (steps < 1) steps = 1;
    fprintf(f, "%-26s %10s %10s %12s %7s\n", "ops entry", "calls/step", "nested", "ms/step", "share");
    for (int i = 0; i < n; i++) {
        const pf_stat *s = &g_stat[order[i]];
        double ms = 1e3 * s->seconds / steps;
        fprintf(f, "%-26s %10.1f %10.1f %12.3f %6.1f%%\n", pf_names[order[i]], (double)atomic_load(&s->calls) / steps,
                (double)atomic_load(&s->nested) / steps, ms, step_s > 0 ? 100.0 * ms / (1e3 * step_s) : 0.0);
    }
    double rest = step_s - tot / steps;
    fprintf(f, "%-26s %10s %10s %12.3f %6.1f%%\n", "(outside the entries)", "", "", 1e3 * rest,
            step_s > 0 ? 100.0 * rest / step_s : 0.0);
}

void ds_ops_profile_json(char *buf, size_t cap, int steps) {
    size_t o = 0;
    if (cap == 0) return;
    if (steps < 1) steps = 1;
    o += (size_t)snprintf(buf, cap, "{");
    int first = 1;
    for (int e = 0; e < PF_COUNT && o < cap; e++) {
        long long c = atomic_load(&g_stat[e].calls);
        if (!c && !atomic_load(&g_stat[e].nested)) continue;
        o += (size_t)snprintf(buf + o, cap - o, "%s\"%s\": {\"calls\": %.1f, \"ms_per_step\": %.4f}", first ? "" : ", ",
                              pf_names[e], (double)c / steps, 1e3 * g_stat[e].seconds / steps);
        first = 0;
    }
    if (o < cap) snprintf(buf + o, cap - o, "}");
    else buf[cap - 1] = '\0';
}
