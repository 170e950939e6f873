/*
 * test_pp_sched.c — pipeline stages and the 1F1B schedule (train/pp_sched.h):
 * hand-written orders, the schedule's invariants counted op by op, the time
 * model against the analytic bubble and a case timed by hand, and the
 * cost-balanced split against every contiguous split enumerated.
 */
#include "test.h"

#include "model/config.h"
#include "model/presets.h"
#include "train/pp_sched.h"

static int same_ops(const ds_pp_op *a, const char *want) { /* "F0 F1 B0 ..." */
    size_t k = 0;
    for (int i = 0; want[k]; i++) {
        char d = want[k] == 'F' ? DS_PP_FWD : DS_PP_BWD;
        int mb = want[k + 1] - '0';
        if (a[i].dir != d || a[i].mb != mb) return 0;
        k += 2;
        while (want[k] == ' ') k++;
    }
    return 1;
}

TEST(pp_1f1b_orders_by_hand) {
    ds_pp_op ops[64];
    CHECK(ds_pp_1f1b(2, 0, 3, ops) == 6 && same_ops(ops, "F0 F1 B0 F2 B1 B2"));
    CHECK(ds_pp_1f1b(2, 1, 3, ops) == 6 && same_ops(ops, "F0 B0 F1 B1 F2 B2"));
    CHECK(ds_pp_1f1b(4, 0, 4, ops) == 8 && same_ops(ops, "F0 F1 F2 F3 B0 B1 B2 B3"));
    CHECK(ds_pp_1f1b(4, 1, 4, ops) == 8 && same_ops(ops, "F0 F1 F2 B0 F3 B1 B2 B3"));
    CHECK(ds_pp_1f1b(4, 3, 4, ops) == 8 && same_ops(ops, "F0 B0 F1 B1 F2 B2 F3 B3"));
    CHECK(ds_pp_1f1b(1, 0, 2, ops) == 4 && same_ops(ops, "F0 B0 F1 B1"));
    CHECK(ds_pp_1f1b(3, 0, 1, ops) == 2 && same_ops(ops, "F0 B0")); /* M < S: warm-up cut to M */
    CHECK(ds_pp_1f1b(2, 2, 3, ops) < 0 && ds_pp_1f1b(0, 0, 3, ops) < 0 && ds_pp_1f1b(2, 0, 0, ops) < 0);
}

TEST(pp_1f1b_invariants) {
    ds_pp_op ops[2 * 16];
    for (int S = 1; S <= 6; S++)
        for (int M = 1; M <= 16; M++)
            for (int s = 0; s < S; s++) {
                CHECK(ds_pp_1f1b(S, s, M, ops) == 2 * M);
                int nf = 0, nb = 0, live = 0, peak = 0;
                for (int i = 0; i < 2 * M; i++) {
                    if (ops[i].dir == DS_PP_FWD) {
                        CHECK(ops[i].mb == nf++);
                        live++;
                    } else {
                        CHECK(ops[i].mb == nb++ && nb <= nf);
                        live--;
                    }
                    if (live > peak) peak = live;
                }
                int bound = S - s < M ? S - s : M;
                CHECK_MSG(nf == M && nb == M && peak == bound && ds_pp_in_flight(S, s, M) == bound,
                          "S %d s %d M %d: peak %d, want %d", S, s, M, peak, bound);
            }
}

TEST(pp_simulate_matches_analytic_and_hand) {
    double f[8], b[8], busy[8], bub;
    for (int S = 1; S <= 8; S++)
        for (int M = S; M <= 3 * S; M += 3) {
            for (int s = 0; s < S; s++) f[s] = 1, b[s] = 2;
            double span = ds_pp_simulate(S, M, f, b, busy, &bub);
            CHECK_MSG(fabs(span - 3.0 * (M + S - 1)) < 1e-9 && fabs(bub - (double)(S - 1) / (M + S - 1)) < 1e-12 &&
                          fabs(ds_pp_bubble_1f1b(S, M) - bub) < 1e-12 && busy[0] == 3.0 * M,
                      "S %d M %d: span %g bubble %g", S, M, span, bub);
        }
    /* S 2, M 2, stage 0 F 1 B 2, stage 1 F 2 B 4: stage 0 F0 [0,1] F1 [1,2];
     * stage 1 F0 [1,3] B0 [3,7] F1 [7,9] B1 [9,13]; stage 0 B0 [7,9] B1 [13,15] */
    f[0] = 1, f[1] = 2, b[0] = 2, b[1] = 4;
    CHECK(fabs(ds_pp_simulate(2, 2, f, b, busy, &bub) - 15) < 1e-12 && busy[0] == 6 && busy[1] == 12 &&
          fabs(bub - 0.4) < 1e-12);
    /* DualPipe (report, Table 2): (PP/2-1)(F&B+B-3W); PP 8, F&B 3, B 2, W 1: 3 x 2 */
    CHECK(ds_pp_dualpipe_bubble(8, 1, 2, 1, 3) == 6 && ds_pp_dualpipe_bubble(2, 1, 2, 1, 3) == 0 &&
          ds_pp_dualpipe_bubble(3, 1, 2, 1, 3) < 0);
}

static double worst_of(const ds_config *c, int S, const int64_t *first, int64_t T) {
    double w = 0;
    for (int s = 0; s < S; s++) {
        double x = ds_pp_stage_cost(c, S, first, s, T);
        if (x > w) w = x;
    }
    return w;
}

/* every way to cut L layers into S non-empty contiguous stages */
static double brute(const ds_config *c, int S, int64_t T, int64_t *first, int s, double best) {
    const int64_t L = c->num_hidden_layers;
    if (s == S) return first[S] == L ? fmin(best, worst_of(c, S, first, T)) : best;
    for (int64_t n = 1; first[s] + n <= L - (S - 1 - s); n++) {
        first[s + 1] = s == S - 1 ? L : first[s] + n;
        best = brute(c, S, T, first, s + 1, best);
        if (s == S - 1) break;
    }
    return best;
}

TEST(pp_split_balanced_and_explicit) {
    ds_config c;
    CHECK(ds_preset(&c, "tiny") == 0);
    c.num_hidden_layers = 7, c.first_k_dense_replace = 2;
    int64_t first[8], tmp[8];
    for (int S = 1; S <= 5; S++) {
        CHECK(ds_pp_split(&c, S, NULL, 256, first) == 0);
        CHECK(first[0] == 0 && first[S] == 7);
        for (int s = 0; s < S; s++) CHECK(first[s + 1] > first[s]);
        tmp[0] = 0;
        double want = brute(&c, S, 256, tmp, 0, 1e300), got = worst_of(&c, S, first, 256);
        CHECK_MSG(fabs(got - want) <= 1e-9 * want, "S %d: most expensive stage %g, best possible %g", S, got, want);
    }
    /* a dense layer costs less than a MoE layer, and stage S-1 carries the head */
    CHECK(ds_pp_layer_cost(&c, 0, 256) != ds_pp_layer_cost(&c, 3, 256) && ds_pp_head_cost(&c, 256) > 0);
    CHECK(ds_pp_split(&c, 3, "2,2,3", 256, first) == 0 && first[1] == 2 && first[2] == 4 && first[3] == 7);
    CHECK(ds_pp_split(&c, 3, "2,2", 256, first) < 0);
    CHECK(ds_pp_split(&c, 3, "2,2,2", 256, first) < 0);
    CHECK(ds_pp_split(&c, 2, "7,0", 256, first) < 0);
    CHECK(ds_pp_split(&c, 2, "3,x", 256, first) < 0);
    CHECK(ds_pp_split(&c, 8, NULL, 256, first) < 0); /* more stages than layers */
}
