/*
 * main.c — the dsv3 binary: global options, then dispatch to a subcommand.
 *   dsv3 [--threads N] [--quiet|--verbose] <command> [options]
 */
#include "cli/cli.h"

#include <signal.h>

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

/* OpenBLAS reads OPENBLAS_CORETYPE once, when the library loads, so it must be
 * in the environment before exec.  Its DYNAMIC_ARCH detection does not know
 * every recent CPU and falls back to a slow generic kernel; pick a core type by
 * the instruction sets this CPU has, and re-exec once.  The same re-exec sets
 * OMP_WAIT_POLICY=PASSIVE (when unset): idle OpenMP threads sleep instead of
 * spinning, which on a machine shared with other jobs made the 2-thread
 * forward 6x faster (spinning threads wait on a descheduled peer at every
 * barrier); on an idle machine the cost is a futex wake-up per parallel region. */
static void select_openblas_core(char **argv) {
    if (getenv("DS_NO_REEXEC")) return;
    int reexec = 0;
    if (!getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
        reexec = 1;
    }
#ifdef DS_HAVE_OPENBLAS
    if (!getenv("OPENBLAS_CORETYPE")) {
        __builtin_cpu_init();
        const char *core = NULL;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl"))
            core = "SkylakeX";
        else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
            core = "Haswell";
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
    select_openblas_core(argv);
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
