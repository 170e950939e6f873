/*
 * cli.h — subcommand registry and option parsing for the dsv3 binary.
 *
 * A subcommand file defines   static int run(int argc, char **argv)   and
 * registers it with DS_COMMAND("name", "one-line summary", run).  argv[0] is the
 * command name.  Return 0 on success, 1 on a runtime error (after printing the
 * one-line message with ds_cli_fail), 2 on a usage error.
 *
 * Options: fill a ds_opt table and call ds_cli_parse.  "--help" prints usage and
 * exits 0; an unknown option or a missing value prints one line plus usage and
 * exits 2.  Remaining positional arguments are returned in order.
 */
#ifndef DS_CLI_H
#define DS_CLI_H

#include "base/base.h"

typedef int (*ds_cmd_fn)(int argc, char **argv);
void ds_cli_register(const char *name, const char *summary, ds_cmd_fn fn);

#define DS_COMMAND(name_, summary_, fn_)                                     \
    __attribute__((constructor)) static void ds_cmd_reg_##fn_(void) {         \
        ds_cli_register(name_, summary_, fn_);                                \
    }

typedef enum { DS_OPT_FLAG, DS_OPT_STR, DS_OPT_INT, DS_OPT_FLOAT, DS_OPT_MULTI } ds_opt_kind;

typedef struct {
    const char *name;   /* "--model" */
    ds_opt_kind kind;
    void *dst;          /* int* (FLAG), long long* (INT), const char** (STR), double* (FLOAT),
                           ds_strlist* (MULTI: repeatable, and takes all following
                           non-option words) */
    const char *help;   /* "DIR  model folder" */
} ds_opt;

typedef struct { const char **v; int n; } ds_strlist;

/* usage: text printed after "usage: dsv3 <cmd> "; positional: out array
 * (may be NULL if none are accepted), *npos its count on return. */
void ds_cli_parse(const char *cmd, const char *usage, int argc, char **argv,
                  const ds_opt *opts, int nopts, const char **positional,
                  int max_pos, int *npos);
void ds_cli_usage(FILE *f, const char *cmd, const char *usage, const ds_opt *opts, int nopts);
/* Print "dsv3 <cmd>: <ds_errmsg()>" and return 1. */
int ds_cli_fail(const char *cmd);
/* Print "dsv3 <cmd>: <msg>" and exit 2 (usage error). */
DS_NORETURN void ds_cli_usage_error(const char *cmd, const char *fmt, ...) DS_PRINTF(2, 3);

#endif
