/*
 * single.c — the one-rank communicator: collectives are copies (when the
 * buffers differ) or no-ops.
 */
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "dist/comm.h"

static void cp(void *dst, const void *src, int64_t n, ds_comm_dtype dt) {
    if (dst != src && n > 0) memmove(dst, src, (size_t)n * ds_comm_dtype_size(dt));
}

static int s_allreduce(ds_comm *c, void *buf, int64_t n, ds_comm_dtype dt, ds_comm_op op) { return 0; }
static int s_reduce_scatter(ds_comm *c, const void *send, void *recv, const int64_t *counts, ds_comm_dtype dt) {
    cp(recv, send, counts[0], dt);
    return 0;
}
static int s_allgather(ds_comm *c, const void *send, void *recv, const int64_t *counts, ds_comm_dtype dt) {
    cp(recv, send, counts[0], dt);
    return 0;
}
static int s_alltoall(ds_comm *c, const void *send, void *recv, int64_t n, ds_comm_dtype dt) {
    cp(recv, send, n, dt);
    return 0;
}
static int s_alltoallv(ds_comm *c, const void *send, const int64_t *sc, const int64_t *sd, void *recv,
                       const int64_t *rc, const int64_t *rd, ds_comm_dtype dt) {
    if (sc[0] != rc[0]) return ds_err("alltoallv: sends %lld to itself but expects %lld", (long long)sc[0], (long long)rc[0]);
    size_t es = ds_comm_dtype_size(dt);
    cp((char *)recv + rd[0] * es, (const char *)send + sd[0] * es, sc[0], dt);
    return 0;
}
static int s_bcast(ds_comm *c, void *buf, int64_t n, ds_comm_dtype dt, int root) { return 0; }
static int s_barrier(ds_comm *c) { return 0; }
static ds_comm *s_split(ds_comm *c, int color, int key) { return ds_comm_single(); }
static void s_free(ds_comm *c) { free(c); }

static int s_isend(ds_comm *c, const void *buf, int64_t n, ds_comm_dtype dt, int peer, int tag, void **req) {
    return ds_err("send to rank %d: a one-rank communicator has no peer", peer);
}
static int s_irecv(ds_comm *c, void *buf, int64_t n, ds_comm_dtype dt, int peer, int tag, void **req) {
    return ds_err("receive from rank %d: a one-rank communicator has no peer", peer);
}
static int s_wait(ds_comm *c, void **req) { return 0; }

static const ds_comm_vtable single_vt = {s_allreduce, s_reduce_scatter, s_allgather, s_alltoall, s_alltoallv,
                                         s_bcast,     s_barrier,        s_split,     s_free,      s_isend,
                                         s_irecv,     s_wait};

ds_comm *ds_comm_single(void) {
    ds_comm *c = ds_calloc(1, sizeof *c);
    c->vt = &single_vt, c->transport = "single", c->rank = 0, c->size = 1;
    return c;
}
