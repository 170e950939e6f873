/*
 * check.h — the collectives of a communicator checked against local
 * computation (`dsv3 comm-check`).
 */
#ifndef DS_DIST_CHECK_H
#define DS_DIST_CHECK_H

#include <stddef.h>

#include "dist/comm.h"

/* Runs every collective on w, on its even/odd split and on its node split
 * (ranks_per_node > 0: simulated nodes).  0 with *nchecks, info = "node i of
 * n ..."; or -1 with ds_err naming the collective and the wrong element. */
int ds_comm_check(ds_comm *w, int ranks_per_node, int *nchecks, char *info, size_t cap);

#endif
