/*
 * memory.c — the memory entries of the CPU tables (cpu and ref): device
 * memory is host memory, so alloc is a 64-byte aligned zero-filled
 * allocation, the three copies are memcpy and sync does nothing.
 */
#include "backend/cpu/kernels.h"

#include <string.h>

#include "base/base.h"

void *ds_cpu_alloc(size_t bytes) { return ds_aligned_alloc(bytes); }

void ds_cpu_free(void *p) { ds_free_aligned(p); }

void ds_cpu_memset(void *dst, int byte, size_t bytes) {
    if (bytes) memset(dst, byte, bytes);
}

void ds_cpu_copy(void *dst, const void *src, size_t bytes) {
    if (bytes && dst != src) memcpy(dst, src, bytes);
}

void ds_cpu_sync(void) {}
