/*
 * balance_loss.h — MoE balance losses for one layer and one sequence
 * (docs/deepseek-v3.md §6.2-6.3; definitions as in tests/fixtures/model/README.md).
 *
 * For T tokens and E routed experts with affinities s (T, E) and the router's
 * actual choice sel (T, E) (constant, 1 for the K chosen experts):
 *   s'_{t,i} = s_{t,i} / Σ_j s_{t,j}   (normalize = 1, sigmoid scores)
 *            = s_{t,i}                 (normalize = 0, softmax scores)
 *   P_i = (1/T) Σ_t s'_{t,i}           f_i = E/(K T) Σ_t sel_{t,i}
 * Every loss has the form  L = Σ_i c_i P_i  with constant coefficients c:
 *   sequence-wise (V3 eq. 17-20) and V2 expert-level:  c_i = f_i
 *   V2 device-level (devices = D contiguous groups E_d):  c_i = mean_{j∈E_d(i)} f_j
 *   V2 communication-level (M = devices per token):  c_i = D/(M T) Σ_t g_{t,d(i)},
 *      g_{t,d} = 1 if any chosen expert of token t lies in E_d
 * so the gradient reaches the scores only through P (sel is constant).
 */
#ifndef DS_BALANCE_LOSS_H
#define DS_BALANCE_LOSS_H

#include <stdint.h>

typedef struct {
    double expert;   /* Σ_i f_i P_i (sequence-wise / V2 expert-level), before α */
    double device;   /* Σ_d f'_d P'_d, before α2 */
    double comm;     /* Σ_d f''_d P''_d, before α3 */
} ds_balance_terms;

/* Forward: the three terms for one sequence; coef (E) receives
 * a_exp*c_exp + a_dev*c_dev + a_comm*c_comm, the combined coefficients used by
 * the backward.  D = number of device groups (E % D == 0), M = devices per token. */
ds_balance_terms ds_balance_loss_forward(float *coef /* (E) */, const float *s /* (T, E) */,
                                         const uint8_t *sel /* (T, E) */, int64_t T, int64_t E,
                                         int64_t K, int64_t D, int64_t M, int normalize,
                                         double a_exp, double a_dev, double a_comm);

/* Backward: ds (T, E) += scale * dL/ds for L = Σ_i coef_i P_i. */
void ds_balance_loss_backward(float *ds /* (T, E) */, const float *coef /* (E) */,
                              const float *s /* (T, E) */, int64_t T, int64_t E, int normalize,
                              double scale);

/* One sequence end to end (the ops entry balance_loss): sel (T, E) built
 * from idx (T, K), *terms = the forward's terms (before the weights), coef
 * (E) as above, ds (T, E) += scale * dL/ds. */
void ds_balance_loss_seq(float *ds, float *coef, uint8_t *sel, const float *s, const int32_t *idx, int64_t T,
                         int64_t E, int64_t K, int64_t D, int64_t M, int normalize, double a_exp, double a_dev,
                         double a_comm, double scale, ds_balance_terms *terms);

#endif
