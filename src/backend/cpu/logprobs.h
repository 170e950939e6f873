/*
 * logprobs.h — the scoring entry of the ops table (backend/ops.h
 * `token_logprobs`): the log-probability of each row's target and whether the
 * target is the row's argmax, the loop over the vocabulary behind evaluation's
 * loglik (eval/lm_logits.c).  logprobs.c; one scalar reference for ds_ops_ref.
 */
#ifndef DS_CPU_LOGPROBS_H
#define DS_CPU_LOGPROBS_H

#include <stdint.h>

/* For each row r < N of logits (N, V) and its target targets[r] in [0, V):
 *   logprob[r] = (float)(x_t − m − log Σ_v exp(x_v − m)) in double, m = max_v x_v
 *                (the sum in ascending v);
 *   greedy[r]  = 1 when the target is the first maximum of the row (ties go to
 *                the lowest index, as torch.argmax), else 0. */
void ds_token_logprobs(float *logprob, uint8_t *greedy, const float *logits, const int32_t *targets, int64_t N,
                       int64_t V);
void ds_token_logprobs_ref(float *logprob, uint8_t *greedy, const float *logits, const int32_t *targets, int64_t N,
                           int64_t V);

#endif
