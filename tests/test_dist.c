/*
 * test_dist.c — the communicator (src/dist/) and training over several
 * processes.  The MPI tests run `mpirun -np P $DSV3 ...` with a bounded time
 * (timeout) and skip when mpirun is absent or this build has no MPI.  The
 * oracles: collectives against local computation (every rank's data is a
 * known function of rank and index), training against the one-process run
 * of the same command (itself checked against PyTorch in test_train.c).
 */
#include <stdarg.h>
#include <string.h>

#include "dist/check.h"
#include "dist/comm.h"
#include "test.h"

/* environment of every mpirun here: root allowed, oversubscribed 2 cores,
 * no CMA (containers forbid it) */
#define MPIRUN                                                                                                   \
    "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none "   \
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

static int count_lines(const char *s, const char *needle) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

TEST(comm_single_collectives) {
    ds_comm *c = ds_comm_single();
    int n = 0;
    char info[128];
    CHECK(ds_comm_check(c, 0, &n, info, sizeof info) == 0);
    CHECK(n > 20);
    CHECK(strstr(info, "node 0 of 1") != NULL);
    /* the one-rank -v collectives copy: a self-send of a different size is an error */
    float a[3] = {1, 2, 3}, b[3] = {0};
    int64_t sc = 3, sd = 0, rc = 2, rd = 0;
    CHECK(ds_alltoallv(c, a, &sc, &sd, b, &rc, &rd, DS_COMM_F32) == -1);
    rc = 3;
    CHECK(ds_alltoallv(c, a, &sc, &sd, b, &rc, &rd, DS_COMM_F32) == 0 && b[2] == 3);
    int node, nn;
    CHECK(ds_comm_split_node(c, 3, &node, &nn) == NULL); /* 3 does not divide 1 rank */
    ds_comm_free(c);
    int64_t off[5];
    ds_comm_blocks(10, 4, off);
    CHECK(off[0] == 0 && off[1] == 3 && off[2] == 6 && off[3] == 8 && off[4] == 10);
    ds_comm_blocks(2, 4, off);
    CHECK(off[1] == 1 && off[2] == 2 && off[3] == 2 && off[4] == 2);
}

TEST(comm_mpi_collectives_np2_np4) {
    NEED_MPI();
    char out[8192];
    int rc = ds_test_sh(out, sizeof out, MPIRUN "$DSV3 comm-check 2>&1", 60, 2);
    CHECK_MSG(rc == 0 && count_lines(out, "collectives correct") == 2, "rc %d:\n%s", rc, out);
    CHECK(strstr(out, "mpi rank 1 of 2") != NULL);
    rc = ds_test_sh(out, sizeof out, MPIRUN "$DSV3 comm-check --ranks-per-node 2 2>&1", 60, 4);
    CHECK_MSG(rc == 0 && count_lines(out, "collectives correct") == 4, "rc %d:\n%s", rc, out);
    CHECK_MSG(strstr(out, "rank 3 of 4: ") && strstr(out, "node 1 of 2"), "%s", out);
    /* 4 ranks, 3 per node: not equal nodes, one line, non-zero */
    rc = ds_test_sh(out, sizeof out, MPIRUN "$DSV3 comm-check --ranks-per-node 3 2>&1", 60, 4);
    CHECK_MSG(rc != 0 && strstr(out, "--ranks-per-node 3 does not divide the 4 ranks"), "rc %d:\n%s", rc, out);
}
