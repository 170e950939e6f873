/*
 * dist_test.h — what the many-processes tests share (test_dist.c,
 * test_dist_pp.c): the mpirun environment, the skip when MPI is unusable,
 * and the word-salad corpus with its tokenizer and shards.
 */
#ifndef DS_DIST_TEST_H
#define DS_DIST_TEST_H

#include <stdio.h>
#include <string.h>

#include "test.h"

/* environment of every mpirun here: root allowed, oversubscribed 2 cores,
 * no CMA (containers forbid it); under make SAN=1 no leak report from the
 * MPI processes (OpenMPI keeps memory at exit; the same dsv3 code runs
 * leak-checked in one process: comm_single_collectives, ep_one_process) */
#define MPIRUN                                                                                                   \
    "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none "   \
    "ASAN_OPTIONS=detect_leaks=0 "                                                                             \
    "OMPI_MCA_rmaps_base_oversubscribe=1 timeout -k 5 %d mpirun --oversubscribe -np %d "

/* 0 when mpirun can start this dsv3 on 2 ranks (else the test skips) */
static int mpi_usable(void) {
    static int known = -1;
    if (known >= 0) return known;
    char out[4096];
    if (ds_test_sh(NULL, 0, "command -v mpirun >/dev/null 2>&1") != 0) return known = 0;
    int rc = ds_test_sh(out, sizeof out, MPIRUN "$DSV3 comm-check 2>&1", 60, 2);
    known = rc == 0 || !strstr(out, "has no MPI");
    return known;
}

#define NEED_MPI()                                                                                               \
    do {                                                                                                         \
        if (!mpi_usable()) SKIP("mpirun absent or this dsv3 built without MPI");                                 \
    } while (0)

/* word salad (~50 KB): tokenizer of 300 and shards in DIR/data */
static const char *dist_data(void) {
    const char *tmp = ds_test_tmpdir();
    char path[600];
    snprintf(path, sizeof path, "%s/corpus.txt", tmp);
    ds_test_write_word_salad(path, 5, 1500);
    char out[4096];
    int rc = ds_test_sh(out, sizeof out,
                        "$DSV3 tokenizer train --input %s --vocab-size 300 --special-tokens '<|bos|>' '<|eos|>' --out %s/tok.json"
                        " && $DSV3 data prepare --tokenizer %s/tok.json --input %s --out %s/data --docs line --val-fraction 0.05",
                        path, tmp, tmp, path, tmp);
    if (rc) fprintf(stderr, "  prepare: %s\n", out);
    return rc ? NULL : tmp;
}

#endif
