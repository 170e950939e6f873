/*
 * check.c — every collective of a communicator against the same result
 * computed locally: each rank's data is a known function of (rank, index),
 * so every rank can compute what every other rank sent.  Odd sizes, empty
 * parts and in-place variants.  Behind `dsv3 comm-check` (tests run it under
 * mpirun -np 2 and 4).
 */
#include "dist/check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

/* small integers: float sums are exact, so results must be equal */
static float val(int r, int64_t i) { return (float)((r * 7 + i * 3) % 101) - 50.0f; }
/* the v-collectives' count of rank r (some ranks get 0) */
static int64_t vcount(int r, int variant) { return variant == 0 ? ((r % 2) ? 0 : 3 + r) : (2 * r + 1) % 5; }

#define FAIL(...) do { ds_err(__VA_ARGS__); goto out; } while (0)

static int check_comm(ds_comm *c, int *nchecks) {
    int P = c->size, me = c->rank, rc = -1;
    float *a = NULL, *b = NULL;
    int64_t *cnt = ds_malloc((size_t)P * sizeof(int64_t)), *sc = ds_malloc((size_t)P * sizeof(int64_t)),
            *sd = ds_malloc((size_t)P * sizeof(int64_t)), *rcn = ds_malloc((size_t)P * sizeof(int64_t)),
            *rd = ds_malloc((size_t)P * sizeof(int64_t));
    /* all-reduce: f32 sum, f64 max, i64 sum; sizes 0, 1, 7, 1031 */
    const int64_t sizes[] = {0, 1, 7, 1031};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int64_t n = sizes[si];
        a = ds_malloc((size_t)(n + 1) * sizeof(float));
        for (int64_t i = 0; i < n; i++) a[i] = val(me, i);
        if (ds_allreduce(c, a, n, DS_COMM_F32, DS_COMM_SUM)) goto out;
        for (int64_t i = 0; i < n; i++) {
            float e = 0;
            for (int r = 0; r < P; r++) e += val(r, i);
            if (a[i] != e) FAIL("all-reduce f32 sum n=%lld: [%lld] = %g, expected %g", (long long)n, (long long)i, a[i], e);
        }
        free(a), a = NULL;
        double *d = ds_malloc((size_t)(n + 1) * sizeof(double));
        int64_t *q = ds_malloc((size_t)(n + 1) * sizeof(int64_t));
        for (int64_t i = 0; i < n; i++) d[i] = val(me, i) + 0.25, q[i] = (int64_t)1 << 40 | (me * 1000 + i);
        if (ds_allreduce(c, d, n, DS_COMM_F64, DS_COMM_MAX) || ds_allreduce(c, q, n, DS_COMM_I64, DS_COMM_SUM)) {
            free(d), free(q);
            goto out;
        }
        for (int64_t i = 0; i < n; i++) {
            double e = -1e30;
            int64_t s = 0;
            for (int r = 0; r < P; r++) {
                e = val(r, i) + 0.25 > e ? val(r, i) + 0.25 : e;
                s += (int64_t)1 << 40 | (r * 1000 + i);
            }
            if (d[i] != e || q[i] != s) {
                free(d), free(q);
                FAIL("all-reduce f64 max / i64 sum n=%lld: wrong at [%lld]", (long long)n, (long long)i);
            }
        }
        free(d), free(q);
        *nchecks += 3;
    }
    /* reduce-scatter and all-gather with uneven counts, some 0 */
    for (int variant = 0; variant < 2; variant++) {
        int64_t tot = 0;
        for (int r = 0; r < P; r++) tot += cnt[r] = vcount(r, variant);
        int64_t off = 0;
        for (int r = 0; r < me; r++) off += cnt[r];
        a = ds_malloc((size_t)(tot + 1) * sizeof(float));
        b = ds_malloc((size_t)(cnt[me] + 1) * sizeof(float));
        for (int64_t i = 0; i < tot; i++) a[i] = val(me, i);
        if (ds_reduce_scatter(c, a, b, cnt, DS_COMM_F32)) goto out;
        for (int64_t i = 0; i < cnt[me]; i++) {
            float e = 0;
            for (int r = 0; r < P; r++) e += val(r, off + i);
            if (b[i] != e) FAIL("reduce-scatter variant %d: [%lld] = %g, expected %g", variant, (long long)i, b[i], e);
        }
        /* all-gather: from a separate buffer, then in place */
        for (int inplace = 0; inplace < 2; inplace++) {
            for (int64_t i = 0; i < tot; i++) a[i] = -999;
            for (int64_t i = 0; i < cnt[me]; i++) b[i] = val(me, 100 + i);
            if (inplace) memcpy(a + off, b, (size_t)cnt[me] * sizeof(float));
            if (ds_allgather(c, inplace ? a + off : b, a, cnt, DS_COMM_F32)) goto out;
            for (int r = 0, o = 0; r < P; o += (int)cnt[r], r++)
                for (int64_t i = 0; i < cnt[r]; i++)
                    if (a[o + i] != val(r, 100 + i))
                        FAIL("all-gather variant %d%s: block %d [%lld] = %g, expected %g", variant,
                             inplace ? " in place" : "", r, (long long)i, a[o + i], val(r, 100 + i));
        }
        free(a), free(b), a = b = NULL;
        *nchecks += 3;
    }
    /* all-to-all: 3 per pair; element j from s to d is s*100 + d*10 + j */
    a = ds_malloc((size_t)(3 * P) * sizeof(float)), b = ds_malloc((size_t)(3 * P) * sizeof(float));
    for (int d = 0; d < P; d++)
        for (int j = 0; j < 3; j++) a[d * 3 + j] = (float)(me * 100 + d * 10 + j);
    if (ds_alltoall(c, a, b, 3, DS_COMM_F32)) goto out;
    for (int s = 0; s < P; s++)
        for (int j = 0; j < 3; j++)
            if (b[s * 3 + j] != (float)(s * 100 + me * 10 + j)) FAIL("all-to-all: from %d [%d] wrong", s, j);
    free(a), free(b), a = b = NULL;
    (*nchecks)++;
    /* all-to-all-v: (s + 2d) % 3 elements from s to d (0 for some pairs) */
    {
        int64_t so = 0, ro = 0;
        for (int d = 0; d < P; d++) sc[d] = (me + 2 * d) % 3, sd[d] = so, so += sc[d];
        for (int s = 0; s < P; s++) rcn[s] = (s + 2 * me) % 3, rd[s] = ro, ro += rcn[s];
        a = ds_malloc((size_t)(so + 1) * sizeof(float)), b = ds_malloc((size_t)(ro + 1) * sizeof(float));
        for (int d = 0; d < P; d++)
            for (int64_t j = 0; j < sc[d]; j++) a[sd[d] + j] = (float)(me * 100 + d * 10 + j);
        if (ds_alltoallv(c, a, sc, sd, b, rcn, rd, DS_COMM_F32)) goto out;
        for (int s = 0; s < P; s++)
            for (int64_t j = 0; j < rcn[s]; j++)
                if (b[rd[s] + j] != (float)(s * 100 + me * 10 + j)) FAIL("all-to-all-v: from %d [%lld] wrong", s, (long long)j);
        free(a), free(b), a = b = NULL;
        (*nchecks)++;
    }
    /* broadcast from the last rank, 13 elements */
    a = ds_malloc(13 * sizeof(float));
    for (int i = 0; i < 13; i++) a[i] = me == P - 1 ? val(P - 1, i) : 0;
    if (ds_bcast(c, a, 13, DS_COMM_F32, P - 1)) goto out;
    for (int i = 0; i < 13; i++)
        if (a[i] != val(P - 1, i)) FAIL("broadcast: [%d] = %g, expected %g", i, a[i], val(P - 1, i));
    free(a), a = NULL;
    if (ds_barrier(c)) goto out;
    *nchecks += 2;
    rc = 0;
out:
    free(a), free(b), free(cnt), free(sc), free(sd), free(rcn), free(rd);
    return rc;
}

int ds_comm_check(ds_comm *w, int ranks_per_node, int *nchecks, char *info, size_t cap) {
    *nchecks = 0;
    if (check_comm(w, nchecks)) return ds_err_prefix("rank %d of %d (%s)", w->rank, w->size, w->transport);
    /* sub-communicators: even and odd ranks */
    ds_comm *s = ds_comm_split(w, w->rank % 2, w->rank);
    if (!s) return -1;
    int expect = (w->size - w->rank % 2 + 1) / 2;
    int bad = s->size != expect || s->rank != w->rank / 2;
    int64_t sum = w->rank;
    if (!bad && ds_allreduce(s, &sum, 1, DS_COMM_I64, DS_COMM_SUM)) bad = 1;
    int64_t e = 0;
    for (int r = w->rank % 2; r < w->size; r += 2) e += r;
    if (!bad && sum != e) bad = 1;
    if (!bad && check_comm(s, nchecks)) bad = 1;
    ds_comm_free(s);
    if (bad) return ds_err("rank %d: sub-communicator of parity %d wrong (size %d, sum %lld)", w->rank, w->rank % 2,
                           expect, (long long)sum);
    (*nchecks)++;
    int node = -1, nnodes = 0;
    ds_comm *n = ds_comm_split_node(w, ranks_per_node, &node, &nnodes);
    if (!n) return -1;
    if (ranks_per_node > 0 && (node != w->rank / ranks_per_node || nnodes != w->size / ranks_per_node ||
                               n->size != ranks_per_node || n->rank != w->rank % ranks_per_node)) {
        ds_comm_free(n);
        return ds_err("rank %d: node split with --ranks-per-node %d: node %d of %d, rank %d of %d", w->rank,
                      ranks_per_node, node, nnodes, n->rank, n->size);
    }
    int r = check_comm(n, nchecks);
    snprintf(info, cap, "node %d of %d (%d ranks on it)", node, nnodes, n->size);
    ds_comm_free(n);
    if (r) return -1;
    (*nchecks)++;
    return 0;
}
