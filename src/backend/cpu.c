/*
 * cpu.c — the CPU backend: the ops table filled with the fast kernels, and a
 * second table with the scalar references (used by tests to run a whole model
 * through the references).
 */
#include "backend/ops.h"

const struct ds_ops ds_ops_cpu = {
    .name = "cpu",
    .matmul_forward = ds_matmul_forward,
    .rmsnorm_forward = ds_rmsnorm_forward,
    .rope_forward = ds_rope_forward,
    .attention_forward = ds_attention_forward,
    .swiglu_forward = ds_swiglu_forward,
    .embedding_forward = ds_embedding_forward,
    .residual_forward = ds_residual_forward,
    .moe_route_forward = ds_moe_route_forward,
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
};
