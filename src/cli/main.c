/*
 * main.c — the dsv3 binary: global options, then dispatch to a subcommand.
 *   dsv3 [--threads N] [--quiet|--verbose] <command> [options]
 */
#define _GNU_SOURCE /* sched_getaffinity */
#include "cli/cli.h"

#include <dirent.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "base/suggest.h"

typedef struct { const char *name, *summary; ds_cmd_fn fn; } command;
static command g_cmds[64];
static int g_ncmds;

void ds_cli_register(const char *name, const char *summary, ds_cmd_fn fn) {
    if (g_ncmds < 64) g_cmds[g_ncmds++] = (command){name, summary, fn};
}

static const char *g_names[64];

const char *const *ds_cli_command_names(int *n) {
    for (int i = 0; i < g_ncmds; i++) g_names[i] = g_cmds[i].name;
    *n = g_ncmds;
    return g_names;
}

static int cmp_cmd(const void *a, const void *b) {
    return strcmp(((const command *)a)->name, ((const command *)b)->name);
}

static void usage(FILE *f) {
    fprintf(f, "usage: dsv3 [--threads N] [--peak-gflops G] [--quiet|--verbose] <command> [options]\n\n"
               "DeepSeek-V3 recipe in C: tokenize, train, evaluate, generate.\n\ncommands:\n");
    for (int i = 0; i < g_ncmds; i++) fprintf(f, "  %-12s %s\n", g_cmds[i].name, g_cmds[i].summary);
    fprintf(f, "\nglobal options:\n"
               "  --threads N   worker threads (OpenMP and BLAS; default: all cores)\n"
               "  --peak-gflops G  the FP32 peak for MFU (default: measured at start-up by FMA chains)\n"
               "  --quiet       only errors on stderr\n"
               "  --verbose     debug output\n"
               "  --version     print the version\n"
               "  --help        this text; 'dsv3 <command> --help' for a command\n");
    ds_cli_print_examples(f, "");
}

/* Runnable tasks on the machine outside this process group (a pipeline's
 * other commands, often busy starting up for a moment, do not count), or -1
 * if unknown.  /proc/loadavg's running count first; only when it shows
 * others, the tasks' states in /proc/PID/task/TID/stat (a few ms). */
static int others_running(void) {
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f) return -1;
    double l1, l5, l15;
    int run = 0, tot = 0;
    int ok = fscanf(f, "%lf %lf %lf %d/%d", &l1, &l5, &l15, &run, &tot) == 5;
    fclose(f);
    if (!ok || run < 1) return -1;
    if (run == 1) return 0; /* this process */
    DIR *proc = opendir("/proc");
    if (!proc) return run - 1;
    int n = 0, me = (int)getpid(), pgrp = (int)getpgrp();
    struct dirent *pe;
    while ((pe = readdir(proc))) {
        int pid = atoi(pe->d_name);
        if (pid <= 0 || pid == me) continue;
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/task", pid);
        DIR *tasks = opendir(path);
        if (!tasks) continue;
        struct dirent *te;
        while ((te = readdir(tasks))) {
            if (atoi(te->d_name) <= 0) continue;
            char sp[96], buf[512];
            snprintf(sp, sizeof sp, "/proc/%d/task/%s/stat", pid, te->d_name);
            FILE *sf = fopen(sp, "r");
            if (!sf) continue;
            size_t len = fread(buf, 1, sizeof buf - 1, sf);
            fclose(sf);
            buf[len] = 0;
            /* "pid (comm) S ppid pgrp ...": comm may hold spaces and ')' */
            char *rp = strrchr(buf, ')');
            char st = 0;
            int ppid = 0, pg = 0;
            if (rp && sscanf(rp + 1, " %c %d %d", &st, &ppid, &pg) == 3 && st == 'R' && pg != pgrp) n++;
        }
        closedir(tasks);
    }
    closedir(proc);
    return n;
}

/* CPUs this process may run on (its affinity mask; online CPUs if unknown). */
static int usable_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* The threads this run will use: --threads N before the command, else
 * OMP_NUM_THREADS, else the CPUs this process may run on. */
static int planned_threads(char **argv) {
    for (int i = 1; argv[i] && argv[i][0] == '-'; i++)
        if (!strcmp(argv[i], "--threads") && argv[i + 1]) return atoi(argv[i + 1]);
    const char *e = getenv("OMP_NUM_THREADS");
    if (e && atoi(e) > 0) return atoi(e);
    return usable_cpus();
}

/* OpenBLAS reads OPENBLAS_CORETYPE once, when the library loads, so it must be
 * in the environment before exec.  Its DYNAMIC_ARCH detection does not know
 * every recent CPU and falls back to a slow generic kernel; pick a core type by
 * the instruction sets this CPU has, and re-exec once.  The same re-exec sets
 * how idle OpenMP threads wait (when neither OMP_WAIT_POLICY nor
 * GOMP_SPINCOUNT is set).  When this run's threads fit on the CPUs that no
 * other task is running on, a worker spins a bounded while (GOMP_SPINCOUNT=
 * 10000, about 0.1 ms) before it sleeps: a decode step is ~150 short regions,
 * and a futex wake-up for each made 2 threads slower than 1 (small, idle
 * 2-core machine: 1 thread 262 tokens/s, 2 threads sleeping 250, spinning
 * 332).  When the machine is busy, workers sleep at once
 * (OMP_WAIT_POLICY=PASSIVE): a spinning thread that waits on a descheduled
 * peer burns the core that peer needs (2 threads beside one busy job: 200
 * tokens/s sleeping, 64 spinning). */
static void set_runtime_env(char **argv) {
    if (getenv("DS_NO_REEXEC")) return;
    int reexec = 0;
    if (!getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT")) {
        int others = others_running(), th = planned_threads(argv), ranks = 1;
        /* under mpirun the ranks on this machine share its CPUs (and often its
         * process group, which others_running does not count) */
        const char *ls = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
        if (!ls) ls = getenv("MPI_LOCALNRANKS");
        if (ls && atoi(ls) > 1) ranks = atoi(ls);
        const int spin = th > 1 && others >= 0 && others + th * ranks <= usable_cpus();
        setenv(spin ? "GOMP_SPINCOUNT" : "OMP_WAIT_POLICY", spin ? "10000" : "PASSIVE", 1);
        char why[192];
        snprintf(why, sizeof why, "%s: %d other task(s) running, %d thread(s) x %d local rank(s), %d CPUs",
                 spin ? "spin, then sleep (GOMP_SPINCOUNT=10000)" : "sleep (OMP_WAIT_POLICY=PASSIVE)", others, th,
                 ranks, usable_cpus());
        setenv("DS_OMP_WAIT", why, 1);
        reexec = 1;
    }
#ifdef DS_HAVE_OPENBLAS
    if (!getenv("OPENBLAS_CORETYPE")) {
        const char *core = ds_blas_core_for_cpu();
        if (core) {
            setenv("OPENBLAS_CORETYPE", core, 1);
            reexec = 1;
        }
    }
#endif
    if (!reexec) return;
    setenv("DS_NO_REEXEC", "1", 1);
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the runtime's defaults */
}

int main(int argc, char **argv) {
    set_runtime_env(argv);
    /* past a file size limit (ulimit -f) a write fails with EFBIG, reported
     * with the file's name like a full disk, instead of a silent kill */
    signal(SIGXFSZ, SIG_IGN);
    qsort(g_cmds, g_ncmds, sizeof *g_cmds, cmp_cmd);
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        if (!strcmp(a, "--version")) { printf("dsv3 %s\n", DS_VERSION); return 0; }
        if (!strcmp(a, "--quiet")) { ds_log_level = DS_LOG_QUIET; continue; }
        if (!strcmp(a, "--verbose")) { ds_log_level = DS_LOG_DEBUG; continue; }
        if (!strcmp(a, "--threads")) {
            char *end = NULL;
            long n = i + 1 < argc ? strtol(argv[i + 1], &end, 10) : 0;
            if (!end || *end || n <= 0 || n > 4096) {
                fprintf(stderr, "dsv3: --threads: got %s; allowed: [1, 4096] (an integer)\n",
                        ds_quote(i + 1 < argc ? argv[i + 1] : ""));
                return 2;
            }
            ds_set_threads((int)n);
            i++;
            continue;
        }
        if (!strcmp(a, "--peak-gflops")) {
            char *end = NULL;
            double g = i + 1 < argc ? strtod(argv[i + 1], &end) : 0;
            if (!end || *end || !(g > 0 && g < 1e9)) {
                fprintf(stderr, "dsv3: --peak-gflops: got %s; allowed: a number of GFLOP/s > 0\n",
                        ds_quote(i + 1 < argc ? argv[i + 1] : ""));
                return 2;
            }
            ds_backend_set_peak(g);
            i++;
            continue;
        }
        static const char *const globals[] = {"--threads", "--peak-gflops", "--quiet", "--verbose", "--version",
                                              "--help"};
        char dym[256];
        ds_suggest_text(dym, sizeof dym, a, globals, 6);
        /* a command's option before the command */
        fprintf(stderr, "dsv3: unknown global option %s%s%s (command options go after the command)\n", ds_quote(a),
                dym[0] ? "; " : "", dym);
        fprintf(stderr, "try 'dsv3 --help'\n");
        return 2;
    }
    if (i >= argc) { usage(stderr); return 2; }
    if (getenv("DS_OMP_WAIT")) ds_log(DS_LOG_DEBUG, "OpenMP workers wait: %s", getenv("DS_OMP_WAIT"));
    for (int c = 0; c < g_ncmds; c++)
        if (!strcmp(argv[i], g_cmds[c].name)) return g_cmds[c].fn(argc - i, argv + i);
    int n;
    const char *const *names = ds_cli_command_names(&n);
    char dym[256];
    ds_suggest_text(dym, sizeof dym, argv[i], names, n);
    fprintf(stderr, "dsv3: unknown command %s%s%s\n", ds_quote(argv[i]), dym[0] ? "; " : "", dym);
    fprintf(stderr, "try 'dsv3 --help' for the commands\n");
    return 2;
}
