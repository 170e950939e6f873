/* st_load.c — bench driver: open a safetensors file or model folder (mmap) and
 * convert every tensor to FP32 into one preallocated parameter buffer (as the
 * model loader does: parameters live in one allocation made before loading).
 * Best of R runs of open + convert + close.  Prints one JSON line.
 *   st_load PATH [R] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "io/safetensors.h"

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: st_load PATH [RUNS]\n"); return 2; }
    int runs = argc > 2 ? atoi(argv[2]) : 3;
    ds_st_set s;
    if (ds_st_set_open(&s, argv[1]) != 0) { fprintf(stderr, "st_load: %s\n", ds_errmsg()); return 1; }
    int64_t elems = 0;
    size_t bytes = 0;
    for (int64_t i = 0; i < s.nrefs; i++) { elems += s.refs[i].t->numel; bytes += s.refs[i].t->nbytes; }
    ds_st_set_close(&s);
    float *params = ds_aligned_alloc((size_t)elems * sizeof(float)); /* zero-filled: pages touched */
    double best = 1e30, best_open = 1e30;
    for (int r = 0; r < runs; r++) {
        double t0 = ds_now();
        if (ds_st_set_open(&s, argv[1]) != 0) { fprintf(stderr, "st_load: %s\n", ds_errmsg()); return 1; }
        double t1 = ds_now();
        int64_t off = 0;
        for (int64_t i = 0; i < s.nrefs; i++) {
            ds_st_to_f32(s.refs[i].t, params + off);
            off += s.refs[i].t->numel;
        }
        ds_st_set_close(&s);
        double t2 = ds_now();
        if (t2 - t0 < best) best = t2 - t0;
        if (t1 - t0 < best_open) best_open = t1 - t0;
    }
    ds_free_aligned(params);
    printf("{\"seconds\": %.6f, \"open_seconds\": %.6f, \"elements\": %lld, \"file_bytes\": %zu, \"threads\": %d}\n",
           best, best_open, (long long)elems, bytes, ds_threads());
    return 0;
}
