/*
 * cpu.c — the CPU backend: the ops table filled with the fast kernels, and a
 * second table with the scalar references (used by tests to run a whole model
 * through the references).
 */
#include "backend/ops.h"

#include "backend/cpu/optim.h"
#include "backend/cpu/decode.h"
#include "backend/cpu/gemv.h"
#include "backend/cpu/logprobs.h"
#include "backend/cpu/smallm.h"

/* The FP32 and resident-weight linears pick the few-row GEMVs (gemv.c) for
 * N ≤ DS_GEMV_MAX_ROWS (decode steps, experts with few tokens): BLAS sgemm
 * packs the whole weight on every call, which costs more than the multiply.
 * Up to DS_LINEAR_ROWWISE_MAX rows (a continuous-batching decode step, the
 * experts of one) they stay on the GEMVs, whose rows are computed
 * independently (FP32: one weight pass; FP8/BF16: groups of
 * DS_GEMV_MAX_ROWS), so a sequence's numbers do not depend on the other
 * rows of its batch: a batched decode step equals batch-1 steps bit for bit.
 * FP32 up to DS_SMALLM_MAX_ROWS rows on AVX-512 (the routed experts of a
 * small training batch): the weight read in place (smallm.c), then BLAS sgemm. */
static void matmul_forward_cpu(float *out, const float *inp, const float *w, const float *bias, int64_t N, int64_t C,
                               int64_t OC) {
    if (N <= DS_LINEAR_ROWWISE_MAX) ds_gemv_forward(out, inp, w, bias, N, C, OC);
    else if (ds_smallm_use(N, 0)) ds_matmul_forward_smallm(out, inp, w, bias, N, C, OC);
    else ds_matmul_forward(out, inp, w, bias, N, C, OC);
}

static void linear_fp8w_forward_cpu(float *out, const float *inp, const ds_fp8w *w, const float *bias, int64_t N,
                                    int64_t C, int64_t OC) {
    if (N > DS_LINEAR_ROWWISE_MAX) {
        ds_linear_fp8w_forward(out, inp, w, bias, N, C, OC);
        return;
    }
    for (int64_t r = 0; r < N; r += DS_GEMV_MAX_ROWS) {
        const int64_t n = N - r < DS_GEMV_MAX_ROWS ? N - r : DS_GEMV_MAX_ROWS;
        if (w->b16) ds_gemv_bf16w_forward(out + r * OC, inp + r * C, w, bias, n, C, OC);
        else ds_gemv_fp8w_forward(out + r * OC, inp + r * C, w, bias, n, C, OC);
    }
}

const struct ds_ops ds_ops_cpu = {
    .name = "cpu",
    .matmul_forward = matmul_forward_cpu,
    .rmsnorm_forward = ds_rmsnorm_forward,
    .rope_forward = ds_rope_forward,
    .attention_forward = ds_attention_forward,
    .swiglu_forward = ds_swiglu_forward,
    .embedding_forward = ds_embedding_forward,
    .residual_forward = ds_residual_forward,
    .moe_route_forward = ds_moe_route_forward,
    .matmul_backward = ds_matmul_backward,
    .rmsnorm_backward = ds_rmsnorm_backward,
    .rope_backward = ds_rope_backward,
    .attention_backward = ds_attention_backward,
    .swiglu_backward = ds_swiglu_backward,
    .embedding_backward = ds_embedding_backward,
    .cross_entropy = ds_cross_entropy,
    .moe_route_backward = ds_moe_route_backward,
    .moe_combine_backward = ds_moe_combine_backward,
    .linear_forward = matmul_forward_cpu,
    .linear_backward = ds_matmul_backward,
    .linear_fp8w_forward = linear_fp8w_forward_cpu,
    .moe_permute = ds_moe_permute,
    .moe_combine_forward = ds_moe_combine_forward,
    .mla_kv_assemble = ds_mla_kv_assemble,
    .rope_tables = ds_rope_tables,
    /* optimizer and balancing (train/) */
    .sumsq = ds_sumsq,
    .adamw = ds_adamw,
    .bias_update = ds_bias_update,
    .linear_workspace = ds_linear_workspace_none,
    /* decode and sampling (eng-infer) */
    .kv_append = ds_kv_append,
    .mla_absorbed_attention = ds_mla_absorbed_attention,
    .gather_rows = ds_gather_rows,
    .act_quant_1x128 = ds_act_quant_1x128,
    .act_dequant_1x128 = ds_act_dequant_1x128,
    .argmax_rows = ds_argmax_rows,
    .sample_probs = ds_sample_probs,
    .sample_pick = ds_sample_pick,
    .logits_adjust = ds_logits_adjust,
    .probs_min_p = ds_probs_min_p,
    /* engine, model side */
    .host_visible = 1,
    .alloc = ds_cpu_alloc,
    .free = ds_cpu_free,
    .memset = ds_cpu_memset,
    .copy_h2d = ds_cpu_copy,
    .copy_d2h = ds_cpu_copy,
    .copy_d2d = ds_cpu_copy,
    .sync = ds_cpu_sync,
    .moe_sort = ds_moe_sort,
    .grouped_linear_forward = ds_grouped_linear_forward,
    .embedding_bf16_forward = ds_embedding_bf16_forward,
    .grouped_linear_backward = ds_grouped_linear_backward,
    .mla_kv_assemble_backward = ds_mla_kv_assemble_backward,
    .moe_permute_backward = ds_moe_permute_backward,
    .balance_loss = ds_balance_loss_seq,
    /* expert parallelism */
    .cast_f32_bf16 = ds_cast_f32_bf16,
    .cast_bf16_f32 = ds_cast_bf16_f32,
    /* continuous batching (rows-engine) */
    .rope_pos_forward = ds_rope_pos_forward,
    /* evaluation scoring */
    .token_logprobs = ds_token_logprobs,
};

const struct ds_ops ds_ops_ref = {
    .name = "ref",
    .matmul_forward = ds_matmul_forward_ref,
    .rmsnorm_forward = ds_rmsnorm_forward_ref,
    .rope_forward = ds_rope_forward_ref,
    .attention_forward = ds_attention_forward_ref,
    .swiglu_forward = ds_swiglu_forward_ref,
    .embedding_forward = ds_embedding_forward_ref,
    .residual_forward = ds_residual_forward_ref,
    .moe_route_forward = ds_moe_route_forward_ref,
    .matmul_backward = ds_matmul_backward_ref,
    .rmsnorm_backward = ds_rmsnorm_backward_ref,
    .rope_backward = ds_rope_backward_ref,
    .attention_backward = ds_attention_backward_ref,
    .swiglu_backward = ds_swiglu_backward_ref,
    .embedding_backward = ds_embedding_backward_ref,
    .cross_entropy = ds_cross_entropy_ref,
    .moe_route_backward = ds_moe_route_backward_ref,
    .moe_combine_backward = ds_moe_combine_backward_ref,
    .linear_forward = ds_matmul_forward_ref,
    .linear_backward = ds_matmul_backward_ref,
    .linear_fp8w_forward = ds_linear_fp8w_forward_ref,
    .moe_permute = ds_moe_permute_ref,
    .moe_combine_forward = ds_moe_combine_forward_ref,
    .mla_kv_assemble = ds_mla_kv_assemble_ref,
    .rope_tables = ds_rope_tables_ref,
    /* optimizer and balancing (train/) */
    .sumsq = ds_sumsq_ref,
    .adamw = ds_adamw_ref,
    .bias_update = ds_bias_update,
    .linear_workspace = ds_linear_workspace_none,
    /* decode and sampling (eng-infer) */
    .kv_append = ds_kv_append_ref,
    .mla_absorbed_attention = ds_mla_absorbed_attention_ref,
    .gather_rows = ds_gather_rows_ref,
    .act_quant_1x128 = ds_act_quant_1x128,
    .act_dequant_1x128 = ds_act_dequant_1x128,
    .argmax_rows = ds_argmax_rows_ref,
    .sample_probs = ds_sample_probs,
    .sample_pick = ds_sample_pick,
    .logits_adjust = ds_logits_adjust,
    .probs_min_p = ds_probs_min_p,
    /* engine, model side */
    .host_visible = 1,
    .alloc = ds_cpu_alloc,
    .free = ds_cpu_free,
    .memset = ds_cpu_memset,
    .copy_h2d = ds_cpu_copy,
    .copy_d2h = ds_cpu_copy,
    .copy_d2d = ds_cpu_copy,
    .sync = ds_cpu_sync,
    .moe_sort = ds_moe_sort,
    .grouped_linear_forward = ds_grouped_linear_forward_ref,
    .embedding_bf16_forward = ds_embedding_bf16_forward_ref,
    .grouped_linear_backward = ds_grouped_linear_backward_ref,
    .mla_kv_assemble_backward = ds_mla_kv_assemble_backward_ref,
    .moe_permute_backward = ds_moe_permute_backward_ref,
    .balance_loss = ds_balance_loss_seq,
    /* expert parallelism */
    .cast_f32_bf16 = ds_cast_f32_bf16_ref,
    .cast_bf16_f32 = ds_cast_bf16_f32_ref,
    /* continuous batching (rows-engine) */
    .rope_pos_forward = ds_rope_pos_forward_ref,
    /* evaluation scoring */
    .token_logprobs = ds_token_logprobs_ref,
};
