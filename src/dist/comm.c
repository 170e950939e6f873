/*
 * comm.c — the world communicator, node split and helpers shared by the
 * transports (see comm.h).
 */
#include "dist/comm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

static ds_comm *g_world;
#ifdef DS_HAVE_MPI
static int g_mpi_started;
#endif

size_t ds_comm_dtype_size(ds_comm_dtype dt) {
    switch (dt) {
    case DS_COMM_F32: return 4;
    case DS_COMM_F64: return 8;
    case DS_COMM_I64: return 8;
    case DS_COMM_U16: return 2;
    default: return 1;
    }
}

void ds_comm_blocks(int64_t n, int parts, int64_t *off) {
    for (int i = 0; i <= parts; i++) off[i] = n / parts * i + (i < n % parts ? i : n % parts);
}

void ds_comm_stats_add(ds_comm_stats *to, const ds_comm_stats *from) {
    for (int k = 0; k < DS_COMM_NKINDS; k++) to->bytes[k] += from->bytes[k];
    to->wait_s += from->wait_s;
    to->calls += from->calls;
}

const char *ds_comm_built_with(void) {
#ifdef DS_HAVE_MPI
    return "OpenMPI";
#else
    return "none";
#endif
}

static int launched_by_mpi(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
}

ds_comm *ds_comm_world(void) {
    if (g_world) return g_world;
#ifdef DS_HAVE_MPI
    if (launched_by_mpi()) {
        g_world = ds_comm_mpi_world();
        g_mpi_started = g_world != NULL;
    }
#else
    if (launched_by_mpi() && getenv("OMPI_COMM_WORLD_SIZE") && atoi(getenv("OMPI_COMM_WORLD_SIZE")) > 1) {
        fprintf(stderr, "dsv3: started by mpirun with %s ranks, but this build has no MPI (install libopenmpi-dev "
                        "and rebuild)\n", getenv("OMPI_COMM_WORLD_SIZE"));
        exit(2);
    }
#endif
    if (!g_world) g_world = ds_comm_single();
    return g_world;
}

int ds_comm_is_distributed(void) { return ds_comm_world()->size > 1; }

#ifdef DS_HAVE_MPI
void ds_comm_mpi_abort(int code);
void ds_comm_mpi_finalize(void);
#endif

void ds_comm_abort(int code, const char *msg) {
    ds_comm *w = g_world;
    if (msg) {
        if (w && w->size > 1) fprintf(stderr, "dsv3: rank %d of %d: %s\n", w->rank, w->size, msg);
        else fprintf(stderr, "dsv3: %s\n", msg);
        fflush(stderr);
    }
#ifdef DS_HAVE_MPI
    if (g_mpi_started) ds_comm_mpi_abort(code);
#endif
    exit(code);
}

void ds_comm_finalize(void) {
#ifdef DS_HAVE_MPI
    if (g_mpi_started) ds_comm_mpi_finalize();
    g_mpi_started = 0;
#endif
}

#ifdef DS_HAVE_MPI
ds_comm *ds_comm_mpi_split_shared(ds_comm *c);
#endif

ds_comm *ds_comm_split_node(ds_comm *c, int ranks_per_node, int *node, int *nnodes) {
    ds_comm *n = NULL;
    if (ranks_per_node > 0) {
        if (c->size % ranks_per_node) {
            ds_err("--ranks-per-node %d does not divide the %d ranks", ranks_per_node, c->size);
            return NULL;
        }
        n = ds_comm_split(c, c->rank / ranks_per_node, c->rank);
    }
#ifdef DS_HAVE_MPI
    else if (!strcmp(c->transport, "mpi")) n = ds_comm_mpi_split_shared(c);
#endif
    else n = ds_comm_split(c, 0, c->rank);
    if (!n) return NULL;
    /* node index: order of the nodes' first ranks */
    int64_t lead = c->rank;
    if (ds_bcast(n, &lead, 1, DS_COMM_I64, 0)) goto fail;
    int64_t *all = ds_malloc((size_t)c->size * sizeof(int64_t));
    int64_t *cnt = ds_malloc((size_t)c->size * sizeof(int64_t));
    for (int i = 0; i < c->size; i++) cnt[i] = 1;
    all[c->rank] = lead;
    if (ds_allgather(c, all + c->rank, all, cnt, DS_COMM_I64)) {
        free(all), free(cnt);
        goto fail;
    }
    int k = 0, mine = -1;
    for (int i = 0; i < c->size; i++)
        if (all[i] == i) {
            if (i == lead) mine = k;
            k++;
        }
    free(all), free(cnt);
    if (c->size % k || n->size != c->size / k) {
        ds_err("nodes have different numbers of ranks (%d ranks on %d nodes, %d on this one)", c->size, k, n->size);
        goto fail;
    }
    *node = mine, *nnodes = k;
    return n;
fail:
    ds_comm_free(n);
    return NULL;
}
