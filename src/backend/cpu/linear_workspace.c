/*
 * linear_workspace.c — the `linear_workspace` entry (backend/cpu/optim.h):
 * per-thread bytes of the linear entries, for the trainer's memory report.
 */
#include "backend/cpu/fp8_linear.h"
#include "backend/cpu/optim.h"

size_t ds_linear_workspace_none(int64_t N, int64_t C, int64_t OC) { return 0; }

size_t ds_linear_workspace_fp8(int64_t N, int64_t C, int64_t OC) {
    return ds_fp8_linear_workspace(N, OC, C) + (size_t)(N * C) * sizeof(float);
}
