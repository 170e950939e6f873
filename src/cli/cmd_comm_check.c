/*
 * cmd_comm_check.c — `dsv3 comm-check [--ranks-per-node N]`: runs every
 * collective of the communicator this launch gets (one rank, or MPI under
 * mpirun) against local computation (dist/check.h); prints one line per
 * rank and exits 0, or 1 with the first wrong element.
 */
#include <stdio.h>

#include "cli/cli.h"
#include "dist/check.h"

static int run(int argc, char **argv) {
    long long rpn = 0;
    const ds_opt opts[] = {
        {"--ranks-per-node", DS_OPT_INT, &rpn, "N  simulate nodes of N ranks (default: the ranks sharing memory)",
         DS_RANGE(0, 1 << 20)},
    };
    ds_cli_parse("comm-check", "[--ranks-per-node N]", argc, argv, opts, 1, NULL, 0, NULL);
    ds_comm *w = ds_comm_world();
    int n = 0;
    char info[128] = "";
    if (ds_comm_check(w, (int)rpn, &n, info, sizeof info)) {
        ds_cli_fail("comm-check");
        ds_comm_abort(1, NULL);
    }
    printf("comm-check: %s rank %d of %d: %d collectives correct; %s\n", w->transport, w->rank, w->size, n, info);
    fflush(stdout);
    ds_comm_finalize();
    return 0;
}

DS_COMMAND("comm-check", "check the collectives of this launch (mpirun -np P dsv3 comm-check)", run)
