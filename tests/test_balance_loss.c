/* test_balance_loss.c — balance losses: closed-form cases and finite differences. */
#include "test.h"
#include "base/base.h"
#include "backend/cpu/balance_loss.h"

/* Random scores: sigmoid of N(0,1) logits, or a softmax of them. */
static void make_scores(float *s, uint8_t *sel, int64_t T, int64_t E, int64_t K, int softmax, ds_rng *r) {
    for (int64_t t = 0; t < T; t++) {
        double z[64], mx = -1e30, sum = 0;
        for (int64_t i = 0; i < E; i++) { z[i] = ds_rng_normal(r); if (z[i] > mx) mx = z[i]; }
        for (int64_t i = 0; i < E; i++) {
            if (softmax) { z[i] = exp(z[i] - mx); sum += z[i]; }
            else z[i] = 1.0 / (1.0 + exp(-z[i]));
        }
        for (int64_t i = 0; i < E; i++) { s[t * E + i] = (float)(softmax ? z[i] / sum : z[i]); sel[t * E + i] = 0; }
        for (int64_t k = 0; k < K; k++) { /* K distinct random experts */
            int64_t i;
            do i = (int64_t)ds_rng_below(r, (uint64_t)E); while (sel[t * E + i]);
            sel[t * E + i] = 1;
        }
    }
}

TEST(balance_loss_uniform_is_one) {
    /* perfectly balanced selection with uniform scores: f_i = 1, P_i = 1/E, Σ f P = 1 */
    enum { T = 8, E = 8, K = 2 };
    float s[T * E];
    uint8_t sel[T * E] = {0};
    for (int t = 0; t < T; t++)
        for (int i = 0; i < E; i++) { s[t * E + i] = 0.3f; sel[t * E + i] = (i / K) == (t % (E / K)); }
    float coef[E];
    ds_balance_terms r = ds_balance_loss_forward(coef, s, sel, T, E, K, 4, 2, 1, 1, 0, 0);
    CHECK_NEAR(r.expert, 1.0, 1e-12);
    /* 4 devices of 2 experts: f'_d = 1, P'_d = 2/8, so Σ_d f'_d P'_d = 1 */
    CHECK_NEAR(r.device, 1.0, 1e-12);
    /* each token reaches one device, each device 2 tokens: f''_d = D/(M T) * 2 = 0.5; Σ_d 0.5 * 1/4 = 0.5 */
    CHECK_NEAR(r.comm, 0.5, 1e-12);
    /* collapse: every token picks experts 0 and 1 and puts its mass there:
       f_0 = f_1 = E/K = 4, P_0 = P_1 = 0.9 / 2.4, Σ f P = 8 * 0.9 / 2.4 = 3 */
    for (int t = 0; t < T; t++)
        for (int i = 0; i < E; i++) { sel[t * E + i] = i < 2; s[t * E + i] = i < 2 ? 0.9f : 0.1f; }
    r = ds_balance_loss_forward(coef, s, sel, T, E, K, 4, 2, 1, 1, 0, 0);
    CHECK_NEAR(r.expert, 3.0, 1e-6);
}

static double total(const float *s, const uint8_t *sel, int64_t T, int64_t E, int64_t K, int norm,
                    double a1, double a2, double a3) {
    ds_balance_terms r = ds_balance_loss_forward(NULL, s, sel, T, E, K, 4, 2, norm, a1, a2, a3);
    return a1 * r.expert + a2 * r.device + a3 * r.comm;
}

TEST(balance_loss_backward_matches_finite_differences) {
    enum { T = 6, E = 8, K = 3 };
    ds_rng r;
    ds_rng_seed(&r, 7);
    for (int norm = 0; norm <= 1; norm++) {
        float s[T * E], ds[T * E] = {0}, coef[E];
        uint8_t sel[T * E];
        make_scores(s, sel, T, E, K, !norm, &r);
        double a1 = 0.01, a2 = 0.05, a3 = 0.02;
        ds_balance_loss_forward(coef, s, sel, T, E, K, 4, 2, norm, a1, a2, a3);
        ds_balance_loss_backward(ds, coef, s, T, E, norm, 1.0);
        double maxerr = 0, maxg = 0;
        for (int i = 0; i < T * E; i++) {
            float keep = s[i];
            const double h = 1e-3; /* the loss is linear in each P_i; float steps of 1e-3 keep rounding < 1e-6 */
            s[i] = keep + (float)h;
            double lp = total(s, sel, T, E, K, norm, a1, a2, a3);
            s[i] = keep - (float)h;
            double lm = total(s, sel, T, E, K, norm, a1, a2, a3);
            s[i] = keep;
            double fd = (lp - lm) / ((double)(keep + (float)h) - (double)(keep - (float)h));
            maxerr = fmax(maxerr, fabs(fd - ds[i]));
            maxg = fmax(maxg, fabs(fd));
        }
        CHECK_MSG(maxerr <= 1e-4 * maxg + 1e-9, "normalize=%d: max abs err %g (max grad %g)", norm, maxerr, maxg);
    }
}
