/*
 * mpi.c — the MPI communicator (built with DS_HAVE_MPI).  Errors come back
 * to dsv3 (MPI_ERRORS_RETURN) and end the job with one line naming the
 * collective and the rank (MPI_Abort), so no rank waits on a dead peer.
 */
#ifdef DS_HAVE_MPI
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "dist/comm.h"

typedef struct {
    MPI_Comm comm;
    int owned; /* MPI_Comm_free on free */
} mpi_impl;

#define COMM(c) (((mpi_impl *)(c)->impl)->comm)

static MPI_Datatype mtype(ds_comm_dtype dt) {
    switch (dt) {
    case DS_COMM_F32: return MPI_FLOAT;
    case DS_COMM_F64: return MPI_DOUBLE;
    case DS_COMM_I64: return MPI_INT64_T;
    case DS_COMM_U16: return MPI_UINT16_T;
    default: return MPI_UINT8_T;
    }
}

static void check(ds_comm *c, int rc, const char *what) {
    if (rc == MPI_SUCCESS) return;
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, s, &len);
    char msg[MPI_MAX_ERROR_STRING + 128];
    snprintf(msg, sizeof msg, "MPI %s failed (%s); a peer rank probably died; ending the job", what, s);
    ds_comm_abort(3, msg);
}

static int icount(int64_t n, const char *what) {
    if (n < 0 || n > INT_MAX) {
        ds_err("%s: %lld elements is over MPI's int count", what, (long long)n);
        return -1;
    }
    return (int)n;
}

static int *ivec(ds_comm *c, const int64_t *v, const char *what) {
    int *r = ds_malloc((size_t)c->size * sizeof(int));
    for (int i = 0; i < c->size; i++)
        if ((r[i] = icount(v[i], what)) < 0) {
            free(r);
            return NULL;
        }
    return r;
}

#define T0 double t0_ = ds_now()
#define T1 (c->stats.wait_s += ds_now() - t0_, c->stats.calls++)

static const int64_t CHUNK = (int64_t)1 << 28;

static int m_allreduce(ds_comm *c, void *buf, int64_t n, ds_comm_dtype dt, ds_comm_op op) {
    T0;
    size_t es = ds_comm_dtype_size(dt);
    for (int64_t i = 0; i < n; i += CHUNK) {
        int k = (int)(n - i < CHUNK ? n - i : CHUNK);
        check(c, MPI_Allreduce(MPI_IN_PLACE, (char *)buf + i * es, k, mtype(dt), op == DS_COMM_MAX ? MPI_MAX : MPI_SUM,
                               COMM(c)), "all-reduce");
    }
    c->stats.bytes[c->kind] += 2.0 * (double)(c->size - 1) / c->size * (double)n * (double)es;
    T1;
    return 0;
}

static int m_reduce_scatter(ds_comm *c, const void *send, void *recv, const int64_t *counts, ds_comm_dtype dt) {
    int *rc = ivec(c, counts, "reduce-scatter");
    if (!rc) return -1;
    T0;
    check(c, MPI_Reduce_scatter(send, recv, rc, mtype(dt), MPI_SUM, COMM(c)), "reduce-scatter");
    int64_t tot = 0;
    for (int i = 0; i < c->size; i++) tot += counts[i];
    c->stats.bytes[c->kind] += (double)(tot - counts[c->rank]) * (double)ds_comm_dtype_size(dt);
    T1;
    free(rc);
    return 0;
}

static int m_allgather(ds_comm *c, const void *send, void *recv, const int64_t *counts, ds_comm_dtype dt) {
    int *rc = ivec(c, counts, "all-gather");
    if (!rc) return -1;
    int *rd = ds_malloc((size_t)c->size * sizeof(int));
    int64_t off = 0;
    for (int i = 0; i < c->size; i++) {
        if (off > INT_MAX) {
            free(rc), free(rd);
            return ds_err("all-gather: %lld elements is over MPI's int displacement", (long long)off);
        }
        rd[i] = (int)off, off += counts[i];
    }
    size_t es = ds_comm_dtype_size(dt);
    const void *s = send == (const char *)recv + (size_t)rd[c->rank] * es ? MPI_IN_PLACE : send;
    T0;
    check(c, MPI_Allgatherv(s, rc[c->rank], mtype(dt), recv, rc, rd, mtype(dt), COMM(c)), "all-gather");
    c->stats.bytes[c->kind] += (double)counts[c->rank] * (double)(c->size - 1) * (double)es;
    T1;
    free(rc), free(rd);
    return 0;
}

static int m_alltoall(ds_comm *c, const void *send, void *recv, int64_t n, ds_comm_dtype dt) {
    int k = icount(n, "all-to-all");
    if (k < 0) return -1;
    T0;
    check(c, MPI_Alltoall(send, k, mtype(dt), recv, k, mtype(dt), COMM(c)), "all-to-all");
    c->stats.bytes[c->kind] += (double)n * (double)(c->size - 1) * (double)ds_comm_dtype_size(dt);
    T1;
    return 0;
}

static int m_alltoallv(ds_comm *c, const void *send, const int64_t *sc, const int64_t *sd, void *recv,
                       const int64_t *rc, const int64_t *rd, ds_comm_dtype dt) {
    int *a = ivec(c, sc, "all-to-all-v"), *b = ivec(c, sd, "all-to-all-v"), *x = ivec(c, rc, "all-to-all-v"),
        *y = ivec(c, rd, "all-to-all-v");
    int rcode = -1;
    if (a && b && x && y) {
        T0;
        check(c, MPI_Alltoallv(send, a, b, mtype(dt), recv, x, y, mtype(dt), COMM(c)), "all-to-all-v");
        double s = 0;
        for (int i = 0; i < c->size; i++)
            if (i != c->rank) s += (double)sc[i];
        c->stats.bytes[c->kind] += s * (double)ds_comm_dtype_size(dt);
        T1;
        rcode = 0;
    }
    free(a), free(b), free(x), free(y);
    return rcode;
}

static int m_bcast(ds_comm *c, void *buf, int64_t n, ds_comm_dtype dt, int root) {
    T0;
    size_t es = ds_comm_dtype_size(dt);
    for (int64_t i = 0; i < n; i += CHUNK) {
        int k = (int)(n - i < CHUNK ? n - i : CHUNK);
        check(c, MPI_Bcast((char *)buf + i * es, k, mtype(dt), root, COMM(c)), "broadcast");
    }
    if (c->rank == root) c->stats.bytes[c->kind] += (double)n * (double)es;
    T1;
    return 0;
}

static int m_barrier(ds_comm *c) {
    T0;
    check(c, MPI_Barrier(COMM(c)), "barrier");
    T1;
    return 0;
}

static ds_comm *wrap(MPI_Comm mc, int owned);

static ds_comm *m_split(ds_comm *c, int color, int key) {
    MPI_Comm n;
    check(c, MPI_Comm_split(COMM(c), color, key, &n), "communicator split");
    return wrap(n, 1);
}

ds_comm *ds_comm_mpi_split_shared(ds_comm *c) {
    MPI_Comm n;
    check(c, MPI_Comm_split_type(COMM(c), MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &n), "node split");
    return wrap(n, 1);
}

static void m_free(ds_comm *c) {
    mpi_impl *m = c->impl;
    if (m->owned) MPI_Comm_free(&m->comm);
    free(m);
    free(c);
}

/* point-to-point: the request is a malloc'ed MPI_Request; bytes counted
 * at the send, the time inside wait */
static int m_isend(ds_comm *c, const void *buf, int64_t n, ds_comm_dtype dt, int peer, int tag, void **req) {
    int k = icount(n, "send");
    if (k < 0) return -1;
    T0;
    MPI_Request *r = ds_malloc(sizeof *r);
    check(c, MPI_Isend(buf, k, mtype(dt), peer, tag, COMM(c), r), "send");
    c->stats.bytes[c->kind] += (double)n * (double)ds_comm_dtype_size(dt);
    T1;
    *req = r;
    return 0;
}

static int m_irecv(ds_comm *c, void *buf, int64_t n, ds_comm_dtype dt, int peer, int tag, void **req) {
    int k = icount(n, "receive");
    if (k < 0) return -1;
    T0;
    MPI_Request *r = ds_malloc(sizeof *r);
    check(c, MPI_Irecv(buf, k, mtype(dt), peer, tag, COMM(c), r), "receive");
    T1;
    *req = r;
    return 0;
}

static int m_wait(ds_comm *c, void **req) {
    MPI_Request *r = *req;
    T0;
    check(c, MPI_Wait(r, MPI_STATUS_IGNORE), "point-to-point wait");
    T1;
    free(r);
    *req = NULL;
    return 0;
}

static const ds_comm_vtable mpi_vt = {m_allreduce, m_reduce_scatter, m_allgather, m_alltoall, m_alltoallv,
                                      m_bcast,     m_barrier,        m_split,     m_free,      m_isend,
                                      m_irecv,     m_wait};

static ds_comm *wrap(MPI_Comm mc, int owned) {
    MPI_Comm_set_errhandler(mc, MPI_ERRORS_RETURN);
    ds_comm *c = ds_calloc(1, sizeof *c);
    mpi_impl *m = ds_calloc(1, sizeof *m);
    m->comm = mc, m->owned = owned;
    c->vt = &mpi_vt, c->transport = "mpi", c->impl = m;
    MPI_Comm_rank(mc, &c->rank);
    MPI_Comm_size(mc, &c->size);
    return c;
}

ds_comm *ds_comm_mpi_world(void) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        int provided;
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
            fprintf(stderr, "dsv3: MPI_Init failed\n");
            exit(3);
        }
    }
    return wrap(MPI_COMM_WORLD, 0);
}

void ds_comm_mpi_abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

void ds_comm_mpi_finalize(void) {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
}
#endif
