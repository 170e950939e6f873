/*
 * staged.h — a host-staged ops table: every entry takes host pointers (as
 * the model, trainer and decode code hold today), copies its operands into
 * device buffers of `mem`, runs the device table's entry on them and copies
 * the results back.  It lets the CUDA kernels run whole models before the
 * code above the backend allocates through the table (docs/engine.md §2.2
 * memory entries); every call synchronises, so it is correct and slow.
 *
 * Sizes come from each entry's contract (backend/ops.h): strided rows
 * (rmsnorm ld_*, rope ld/off) are staged whole and copied in first, so the
 * bytes between rows keep their host values; accumulating outputs (+=) are
 * copied in; an embedding table is staged up to the largest id used; the
 * same host pointer passed twice (cross_entropy's dlogits = logits) is one
 * device buffer.  ds_fp8w descriptors are staged field by field.  An entry
 * the device table lacks (or this file has no wrapper for) is ds_ops_cpu's:
 * the operands are host memory, so the CPU kernel runs on them as they are.
 *
 * Entries may be called from several threads at once (the model's expert
 * loops): a lock lets one call at a time stage and run.
 * One staged set per process (module state): ds_staged_table may be called
 * for each precision (its GEMM entries are kept per precision), all over the
 * same device memory functions.  Tests run it over the CPU table with a
 * device that is separate host memory (tests/test_backend_cuda.c), which
 * checks every size here without a GPU.
 */
#ifndef DS_BACKEND_STAGED_H
#define DS_BACKEND_STAGED_H

#include <stddef.h>

#include "backend/ops.h"

typedef struct {
    void *(*alloc)(size_t bytes);      /* NULL on failure */
    void (*free)(void *p);
    void (*copy_h2d)(void *dst, const void *src, size_t bytes);
    void (*copy_d2h)(void *dst, const void *src, size_t bytes);   /* dst valid on return */
} ds_devmem;

/* *out = the staged table over `dev` (a table of precision `precision`,
 * DS_PREC_*, whose pointers are `mem`'s memory); out->name is dev->name. */
void ds_staged_table(struct ds_ops *out, const struct ds_ops *dev, int precision, const ds_devmem *mem);
/* Frees the device buffers the staged entries hold (a later call regrows them). */
void ds_staged_release(void);

#endif
