/*
 * comm.h — the communicator: the collectives data and expert parallelism
 * need, behind one interface with one implementation per transport.
 *
 *   single.c   one rank, no MPI: every collective is a copy or a no-op
 *   mpi.c      MPI (built with DS_HAVE_MPI, i.e. when the build finds mpicc)
 *
 * A later transport (NCCL) adds a file and a constructor; callers see only
 * this header.  Buffers are host memory here (a transport that takes device
 * pointers says so in ds_comm.device_ptrs).
 *
 * Counts are elements of `dt`.  The -v collectives take one count (and for
 * all-to-all-v one displacement) per rank of the communicator; a count may be
 * 0.  Every collective returns 0, or -1 with ds_err; a failed MPI call ends
 * the whole job (MPI_Abort with the message), since the other ranks would
 * otherwise wait forever in their next collective.
 *
 * Traffic: each call adds the bytes this rank sends to stats.bytes[kind] of
 * the communicator's current kind (ds_comm_set_kind) and the seconds spent
 * inside the call to stats.wait_s.
 */
#ifndef DS_COMM_H
#define DS_COMM_H

#include <stddef.h>
#include <stdint.h>

typedef enum { DS_COMM_F32, DS_COMM_F64, DS_COMM_I64, DS_COMM_U8, DS_COMM_U16 } ds_comm_dtype;
typedef enum { DS_COMM_SUM, DS_COMM_MAX } ds_comm_op;
/* what the bytes were for (the step log reports them by kind) */
typedef enum { DS_COMM_OTHER, DS_COMM_DISPATCH, DS_COMM_COMBINE, DS_COMM_GRAD, DS_COMM_PARAM,
               DS_COMM_PP /* activations and their gradients between pipeline stages */, DS_COMM_NKINDS } ds_comm_kind;

typedef struct {
    double bytes[DS_COMM_NKINDS];
    double wait_s;
    int64_t calls;
} ds_comm_stats;

typedef struct ds_comm ds_comm;

typedef struct {
    int (*allreduce)(ds_comm *c, void *buf, int64_t n, ds_comm_dtype dt, ds_comm_op op);
    /* recv (counts[rank]) = the sum over ranks of send's block `rank`;
     * blocks of send are consecutive, counts[0], counts[1], ... long */
    int (*reduce_scatter)(ds_comm *c, const void *send, void *recv, const int64_t *counts, ds_comm_dtype dt);
    /* recv = the ranks' send blocks (counts[r] each) one after the other;
     * send may point at this rank's block inside recv (in place) */
    int (*allgather)(ds_comm *c, const void *send, void *recv, const int64_t *counts, ds_comm_dtype dt);
    /* n elements to every rank and from every rank (send and recv: size·n) */
    int (*alltoall)(ds_comm *c, const void *send, void *recv, int64_t n, ds_comm_dtype dt);
    int (*alltoallv)(ds_comm *c, const void *send, const int64_t *scounts, const int64_t *sdispls, void *recv,
                     const int64_t *rcounts, const int64_t *rdispls, ds_comm_dtype dt);
    int (*bcast)(ds_comm *c, void *buf, int64_t n, ds_comm_dtype dt, int root);
    int (*barrier)(ds_comm *c);
    /* ranks with the same color form a new communicator, ordered by key */
    ds_comm *(*split)(ds_comm *c, int color, int key);
    void (*free)(ds_comm *c);
    /* point-to-point (pipeline parallelism): n elements to / from rank peer
     * of this communicator with a tag; non-blocking: *req is completed by
     * wait (a NULL *req is already complete).  The buffer must stay
     * untouched until then.  One rank (single.c): an error. */
    int (*isend)(ds_comm *c, const void *buf, int64_t n, ds_comm_dtype dt, int peer, int tag, void **req);
    int (*irecv)(ds_comm *c, void *buf, int64_t n, ds_comm_dtype dt, int peer, int tag, void **req);
    int (*wait)(ds_comm *c, void **req);
} ds_comm_vtable;

struct ds_comm {
    const ds_comm_vtable *vt;
    const char *transport; /* "single", "mpi" */
    int rank, size;
    int device_ptrs;       /* collectives accept device memory (0 here) */
    int kind;              /* ds_comm_kind the next calls count under */
    ds_comm_stats stats;
    void *impl;
};

/* The world: MPI when the build has it and the process was started by an
 * MPI launcher (mpirun/srun set OMPI_COMM_WORLD_SIZE, PMI_SIZE or
 * PMIX_RANK), otherwise one rank.  Created once; later calls return it. */
ds_comm *ds_comm_world(void);
/* 1 when the world is more than one rank */
int ds_comm_is_distributed(void);
/* Ends the job: MPI_Abort with code under MPI (the other ranks stop too),
 * exit(code) otherwise.  Prints msg (one line) first when not NULL. */
void ds_comm_abort(int code, const char *msg);
/* MPI_Finalize (when MPI was started); a no-op otherwise. */
void ds_comm_finalize(void);
/* "OpenMPI" / "none": what this build was compiled with */
const char *ds_comm_built_with(void);

ds_comm *ds_comm_single(void);
#ifdef DS_HAVE_MPI
ds_comm *ds_comm_mpi_world(void);
#endif

/* The ranks of one node: with ranks_per_node > 0 ranks r / ranks_per_node
 * (simulated nodes on one machine), else the ranks sharing memory
 * (MPI_Comm_split_type SHARED).  *node: this rank's node index, *nnodes the
 * number of nodes (both from world rank order; nodes must be equal-sized). */
ds_comm *ds_comm_split_node(ds_comm *c, int ranks_per_node, int *node, int *nnodes);

static inline void ds_comm_set_kind(ds_comm *c, ds_comm_kind k) { c->kind = (int)k; }
size_t ds_comm_dtype_size(ds_comm_dtype dt);
/* Balanced split of n elements over `parts`: block i is [off[i], off[i+1]). */
void ds_comm_blocks(int64_t n, int parts, int64_t *off);
void ds_comm_stats_add(ds_comm_stats *to, const ds_comm_stats *from);

/* Convenience wrappers */
static inline int ds_allreduce(ds_comm *c, void *buf, int64_t n, ds_comm_dtype dt, ds_comm_op op) {
    return c->vt->allreduce(c, buf, n, dt, op);
}
static inline int ds_reduce_scatter(ds_comm *c, const void *send, void *recv, const int64_t *counts, ds_comm_dtype dt) {
    return c->vt->reduce_scatter(c, send, recv, counts, dt);
}
static inline int ds_allgather(ds_comm *c, const void *send, void *recv, const int64_t *counts, ds_comm_dtype dt) {
    return c->vt->allgather(c, send, recv, counts, dt);
}
static inline int ds_alltoall(ds_comm *c, const void *send, void *recv, int64_t n, ds_comm_dtype dt) {
    return c->vt->alltoall(c, send, recv, n, dt);
}
static inline int ds_alltoallv(ds_comm *c, const void *send, const int64_t *sc, const int64_t *sd, void *recv,
                               const int64_t *rc, const int64_t *rd, ds_comm_dtype dt) {
    return c->vt->alltoallv(c, send, sc, sd, recv, rc, rd, dt);
}
static inline int ds_bcast(ds_comm *c, void *buf, int64_t n, ds_comm_dtype dt, int root) {
    return c->vt->bcast(c, buf, n, dt, root);
}
static inline int ds_barrier(ds_comm *c) { return c->vt->barrier(c); }
static inline ds_comm *ds_comm_split(ds_comm *c, int color, int key) { return c->vt->split(c, color, key); }
static inline int ds_isend(ds_comm *c, const void *buf, int64_t n, ds_comm_dtype dt, int peer, int tag, void **req) {
    return c->vt->isend(c, buf, n, dt, peer, tag, req);
}
static inline int ds_irecv(ds_comm *c, void *buf, int64_t n, ds_comm_dtype dt, int peer, int tag, void **req) {
    return c->vt->irecv(c, buf, n, dt, peer, tag, req);
}
/* completes *req (NULL: nothing to do) and sets it NULL */
static inline int ds_wait(ds_comm *c, void **req) { return *req ? c->vt->wait(c, req) : 0; }
/* a blocking receive */
static inline int ds_recv(ds_comm *c, void *buf, int64_t n, ds_comm_dtype dt, int peer, int tag) {
    void *r = NULL;
    return ds_irecv(c, buf, n, dt, peer, tag, &r) || ds_wait(c, &r) ? -1 : 0;
}
static inline void ds_comm_free(ds_comm *c) {
    if (c) c->vt->free(c);
}

#endif
