/* test_optim_ops.c — the optimizer entries of the ops table (`sumsq`,
 * `adamw`, `bias_update`): the fast CPU kernels (backend/cpu/optim.c) against
 * the scalar references on odd sizes and segment layouts, the finite-check
 * property of sumsq, and bit-identical results for 1, 2 and 3 threads. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "base/base.h"
#include "num/dtype.h"
#include "test.h"

static void fill(float *x, int64_t n, uint64_t seed, float scale) {
    ds_rng r;
    ds_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) x[i] = scale * (float)(2 * ds_rng_uniform(&r) - 1);
}

TEST(optim_ops_sumsq_matches_ref) {
    const int64_t sizes[] = {0, 1, 7, 31, 32, 33, 8191, 8192, 8193, 100003};
    float *x = ds_malloc(100003 * sizeof(float));
    fill(x, 100003, 7, 3.0f);
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int64_t n = sizes[k];
        double a = ds_ops_cpu.sumsq(x + 1, n > 0 ? n - 1 : 0), b = ds_ops_ref.sumsq(x + 1, n > 0 ? n - 1 : 0);
        /* the reference's serial sum is off by up to n·2⁻⁵³ of the total */
        CHECK_MSG(fabs(a - b) <= 1.2e-16 * (double)n * b, "n %lld: cpu %.17g ref %.17g", (long long)n, a, b);
    }
    /* closed form: Σ (i+1)² over 1..n in exact double range */
    for (int64_t i = 0; i < 1000; i++) x[i] = (float)(i + 1);
    CHECK(ds_ops_cpu.sumsq(x, 1000) == 1000.0 * 1001.0 * 2001.0 / 6.0);
    free(x);
}

/* non-finite iff an element is: FLT_MAX² overflows float, not double */
TEST(optim_ops_sumsq_is_the_finite_check) {
    const int64_t n = 20001;
    float *x = ds_malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = 3.0e38f;
    CHECK(isfinite(ds_ops_cpu.sumsq(x, n)) && isfinite(ds_ops_ref.sumsq(x, n)));
    const int64_t at[] = {0, 31, 8192, n - 1};
    for (size_t k = 0; k < sizeof at / sizeof at[0]; k++) {
        x[at[k]] = NAN;
        CHECK_MSG(isnan(ds_ops_cpu.sumsq(x, n)), "NaN at %lld not seen", (long long)at[k]);
        x[at[k]] = -INFINITY;
        CHECK_MSG(!isfinite(ds_ops_cpu.sumsq(x, n)), "-Inf at %lld not seen", (long long)at[k]);
        CHECK(!isfinite(ds_ops_ref.sumsq(x, n)));
        x[at[k]] = 1.0f;
    }
    free(x);
}

/* A layout like the model's: segments of odd sizes, decay and no decay,
 * with gaps (padding, skipped tensors) that must stay untouched. */
static const ds_optim_seg segs[] = {{3, 5, 0}, {16, 8200, 1}, {8224, 1, 0}, {8240, 0, 1}, {8240, 20000, 1},
                                    {28250, 33, 0}, {28300, 16390, 1}};
#define NSEG ((int64_t)(sizeof segs / sizeof segs[0]))
#define TOTAL 44700

typedef struct {
    float *p, *g;
    void *m, *v;
} state;

static void state_init(state *s, int bf16) {
    s->p = ds_malloc(TOTAL * sizeof(float));
    s->g = ds_malloc(TOTAL * sizeof(float));
    s->m = ds_malloc(TOTAL * 4);
    s->v = ds_malloc(TOTAL * 4);
    fill(s->p, TOTAL, 1, 1.0f);
    fill(s->g, TOTAL, 2, 0.01f);
    float *m = ds_malloc(TOTAL * sizeof(float)), *v = ds_malloc(TOTAL * sizeof(float));
    fill(m, TOTAL, 3, 0.001f);
    fill(v, TOTAL, 4, 1e-5f);
    for (int64_t i = 0; i < TOTAL; i++) {
        v[i] = fabsf(v[i]);
        if (bf16) ((uint16_t *)s->m)[i] = ds_f32_to_bf16(m[i]), ((uint16_t *)s->v)[i] = ds_f32_to_bf16(v[i]);
        else ((float *)s->m)[i] = m[i], ((float *)s->v)[i] = v[i];
    }
    free(m), free(v);
}

static void state_free(state *s) { free(s->p), free(s->g), free(s->m), free(s->v); }

static void run_steps(const struct ds_ops *ops, state *s, int bf16) {
    ds_adamw_hparams h = {1e-3, 0.9, 0.95, 1e-8, 0.1};
    for (int64_t t = 1; t <= 3; t++) ops->adamw(s->p, s->g, s->m, s->v, bf16, segs, NSEG, t, &h, 0.37f);
}

static void adamw_vs_ref(int bf16) {
    state a, b;
    state_init(&a, bf16), state_init(&b, bf16);
    float *p0 = ds_malloc(TOTAL * sizeof(float));
    memcpy(p0, a.p, TOTAL * sizeof(float));
    run_steps(&ds_ops_cpu, &a, bf16);
    run_steps(&ds_ops_ref, &b, bf16);
    double err = 0, moved = 0;
    int64_t untouched_bad = 0, in_seg = 0;
    for (int64_t i = 0; i < TOTAL; i++) {
        int in = 0;
        for (int64_t k = 0; k < NSEG; k++) in |= i >= segs[k].off && i < segs[k].off + segs[k].n;
        err = fmax(err, fabs((double)a.p[i] - b.p[i]));
        if (in) in_seg++, moved = fmax(moved, fabs((double)a.p[i] - p0[i]));
        else untouched_bad += a.p[i] != p0[i];
    }
    /* the update is ~lr per step; a few float ulps of |p| <= 1 between the two */
    CHECK_MSG(err < 3e-7, "%s moments: cpu vs ref max abs err %g", bf16 ? "bf16" : "fp32", err);
    CHECK_MSG(moved > 1e-3, "parameters did not move (%g)", moved);
    CHECK_MSG(untouched_bad == 0, "%lld elements outside the segments changed", (long long)untouched_bad);
    double merr = 0;
    for (int64_t i = 0; i < TOTAL; i++) {
        float ma = bf16 ? ds_bf16_to_f32(((uint16_t *)a.m)[i]) : ((float *)a.m)[i];
        float mb = bf16 ? ds_bf16_to_f32(((uint16_t *)b.m)[i]) : ((float *)b.m)[i];
        merr = fmax(merr, fabs((double)ma - mb));
    }
    CHECK_MSG(merr <= (bf16 ? 1e-5 : 1e-9), "first moments differ by %g", merr);
    if (getenv("DS_TEST_VERBOSE"))
        fprintf(stderr, "  adamw %s: %lld updated, cpu vs ref max err %g (p), %g (m)\n", bf16 ? "bf16" : "fp32",
                (long long)in_seg, err, merr);
    free(p0);
    state_free(&a), state_free(&b);
}

TEST(optim_ops_adamw_matches_ref) { adamw_vs_ref(0); }
TEST(optim_ops_adamw_bf16_matches_ref) { adamw_vs_ref(1); }

/* --threads 1, 2, 3: the same norm and the same parameters and moments, bit
 * for bit (the blocks are fixed, not per thread) */
TEST(optim_ops_bit_identical_across_threads) {
    int saved = ds_threads();
    const int64_t n = 1000003;
    float *x = ds_malloc((size_t)n * sizeof(float));
    fill(x, n, 11, 2.0f);
    for (int bf16 = 0; bf16 <= 1; bf16++) {
        double norm[3];
        state s[3];
        for (int th = 1; th <= 3; th++) {
            ds_set_threads(th);
            norm[th - 1] = ds_ops_cpu.sumsq(x, n);
            state_init(&s[th - 1], bf16);
            run_steps(&ds_ops_cpu, &s[th - 1], bf16);
        }
        size_t msz = bf16 ? 2 : 4;
        for (int k = 1; k < 3; k++) {
            CHECK_MSG(!memcmp(&norm[0], &norm[k], sizeof(double)), "sumsq: %.17g (1 thread) vs %.17g (%d)", norm[0],
                      norm[k], k + 1);
            CHECK_MSG(!memcmp(s[0].p, s[k].p, TOTAL * sizeof(float)), "params differ: 1 vs %d threads", k + 1);
            CHECK(!memcmp(s[0].m, s[k].m, TOTAL * msz) && !memcmp(s[0].v, s[k].v, TOTAL * msz));
        }
        for (int k = 0; k < 3; k++) state_free(&s[k]);
    }
    ds_set_threads(saved);
    free(x);
}

TEST(optim_ops_bias_update_sign_of_the_load_gap) {
    /* mean 10: under-loaded experts go up by gamma, over-loaded down, equal stay */
    int64_t load[5] = {0, 10, 20, 10, 10};
    float b[5] = {0.25f, 0, 0, -1, 0}, want[5] = {0.25f + 0.5f, 0, -0.5f, -1, 0};
    const struct ds_ops *tab[2] = {&ds_ops_cpu, &ds_ops_ref};
    for (int k = 0; k < 2; k++) {
        float c[5];
        memcpy(c, b, sizeof c);
        tab[k]->bias_update(c, load, 5, 0.5f);
        CHECK_MSG(!memcmp(c, want, sizeof c), "%s: %g %g %g %g %g", tab[k]->name, c[0], c[1], c[2], c[3], c[4]);
    }
}
