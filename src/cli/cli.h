/*
 * cli.h — subcommand registry and option parsing for the dsv3 binary.
 *
 * A subcommand file defines   static int run(int argc, char **argv)   and
 * registers it with DS_COMMAND("name", "one-line summary", run).  argv[0] is the
 * command name.  Return 0 on success, 1 on a runtime error (after printing the
 * one-line message with ds_cli_fail), 2 on a usage error.
 *
 * Options: fill a ds_opt table and call ds_cli_parse.  "--help" prints usage
 * (ending with the command's examples, src/cli/examples.c) and exits 0; an
 * unknown option (with "did you mean" the nearest listed names), a missing
 * value, or a value out of the option's range prints one line and exits 2.
 * Remaining positional arguments are returned in order.
 *
 * An entry whose help is NULL is a hidden alias: parsed like any option, not
 * listed by ds_cli_usage and never suggested (old spellings kept working:
 * {"--sample-tokens", DS_OPT_INT, &n, NULL} beside {"--max-new-tokens", ...}).
 *
 * Range checks (INT and FLOAT): the trailing fields, set with the macros
 * below after the four positional ones:
 *   {"--lr", DS_OPT_FLOAT, &lr, "LR  peak learning rate", DS_GT(0)}
 *   {"--top-p", DS_OPT_FLOAT, &p, "P  nucleus mass", DS_RANGE(0, 1)}
 * A FLOAT option always rejects NaN and +-inf.  The error names the allowed
 * range: "dsv3 train: --lr: got 'nan'; allowed: (0, inf)".
 */
#ifndef DS_CLI_H
#define DS_CLI_H

#include "base/base.h"
#include "model/model.h"

/* Option tables list the four leading ds_opt fields positionally and set the
 * range fields by designator (or not at all). */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

typedef int (*ds_cmd_fn)(int argc, char **argv);
void ds_cli_register(const char *name, const char *summary, ds_cmd_fn fn);
/* Names of the registered commands (sorted once main has started); *n their count. */
const char *const *ds_cli_command_names(int *n);

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
    const char *help;   /* "DIR  model folder"; NULL: hidden alias */
    int check;          /* DS_CHECK_* bits */
    double min, max;    /* bounds checked when DS_CHECK_MIN / DS_CHECK_MAX */
} ds_opt;

enum {
    DS_CHECK_MIN = 1,      /* value >= min */
    DS_CHECK_MAX = 2,      /* value <= max */
    DS_CHECK_MIN_OPEN = 4, /* with DS_CHECK_MIN: value > min */
    DS_CHECK_MAX_OPEN = 8, /* with DS_CHECK_MAX: value < max */
};
#define DS_MIN(a) .check = DS_CHECK_MIN, .min = (a)
#define DS_GT(a) .check = DS_CHECK_MIN | DS_CHECK_MIN_OPEN, .min = (a)
#define DS_RANGE(a, b) .check = DS_CHECK_MIN | DS_CHECK_MAX, .min = (a), .max = (b)
#define DS_RANGE_OPEN_MIN(a, b) .check = DS_CHECK_MIN | DS_CHECK_MIN_OPEN | DS_CHECK_MAX, .min = (a), .max = (b)

typedef struct { const char **v; int n; } ds_strlist;

/* usage: text printed after "usage: dsv3 <cmd> "; positional: out array
 * (may be NULL if none are accepted), *npos its count on return. */
void ds_cli_parse(const char *cmd, const char *usage, int argc, char **argv,
                  const ds_opt *opts, int nopts, const char **positional,
                  int max_pos, int *npos);
void ds_cli_usage(FILE *f, const char *cmd, const char *usage, const ds_opt *opts, int nopts);
/* Whether the last ds_cli_parse set dst from the command line (through any
 * option, alias included, that writes to dst). */
int ds_cli_given(const void *dst);
/* Up to 3 runnable examples of a command ("generate", "tokenizer train"),
 * NULL-terminated (src/cli/examples.c: one table of all commands' examples),
 * or NULL when it has none; ds_cli_usage prints them last. */
const char *const *ds_cli_examples(const char *cmd);
/* "examples:" and the command's examples into f (nothing when it has none). */
void ds_cli_print_examples(FILE *f, const char *cmd);
/* Exit 2 with "dsv3 <cmd>: <what> 'word'; did you mean ...? (known: ...)"
 * when word is not one of the n candidates; returns when it is. */
void ds_cli_check_choice(const char *cmd, const char *what, const char *word, const char *const *cands, int n);
/* --config PRESET|config.json: a word that names no file and no preset
 * exits 2 with the nearest preset names. */
void ds_cli_check_config(const char *cmd, const char *config);
/* --device NAME (DS_DEVICE_HELP): an unknown NAME exits 2 with "did you
 * mean"; a device this dsv3 has no backend for (cuda without a CUDA build)
 * exits 1 with one line.  Returns the device's FP32 ops table. */
#define DS_DEVICE_HELP "cpu|cuda  where the model runs (default cpu; cuda needs a CUDA build)"
struct ds_ops;
const struct ds_ops *ds_cli_device(const char *cmd, const char *device);
/* The same for a command whose path is device-resident (ds_backend_get_resident:
 * the model and its buffers in the table's memory); also takes the test device
 * "fakedev" (host-invisible memory over the cpu kernels; not in --help).  Says
 * on stderr which table runs (a device other than cpu); ds_cli_device_check
 * only checks (a command that picks its table later: train). */
const struct ds_ops *ds_cli_device_resident(const char *cmd, const char *device);
const struct ds_ops *ds_cli_device_check(const char *cmd, const char *device);
/* --speculative mtp|ngram with the n-gram lookup's options (infer.h): the
 * option entries, and the method (0, DS_SPEC_MTP, DS_SPEC_NGRAM) or a usage
 * error (exit 2) for an unknown method, n-gram options without ngram, or
 * --ngram-min above --ngram-max. */
#define DS_CLI_NGRAM_OPTS(draft_max, ngram_min, ngram_max)                                                              \
    {"--draft-max", DS_OPT_INT, &(draft_max), "K  ngram: most tokens drafted a step (default " DS_STR(DS_NGRAM_DRAFT) ")", \
     DS_RANGE(1, DS_NGRAM_DRAFT_CAP)},                                                                                    \
    {"--ngram-min", DS_OPT_INT, &(ngram_min), "N  ngram: shortest suffix looked up (default " DS_STR(DS_NGRAM_MIN) ")",    \
     DS_RANGE(1, 64)},                                                                                                    \
    {"--ngram-max", DS_OPT_INT, &(ngram_max), "N  ngram: longest suffix looked up (default " DS_STR(DS_NGRAM_MAX) ")",    \
     DS_RANGE(1, 64)}
int ds_cli_speculative(const char *cmd, const char *spec, long long draft_max, long long ngram_min, long long ngram_max);
/* The model of --config (a config.json or a preset name), validated, created
 * in the table mem's memory (NULL: host) with random weights (seed 1), as the
 * benchmarks run it.  0, or -1 with ds_errmsg set. */
int ds_cli_random_model(ds_model *m, const char *config, const struct ds_ops *mem);
/* Print "dsv3 <cmd>: <ds_errmsg()>" and return 1. */
int ds_cli_fail(const char *cmd);
/* Print "dsv3 <cmd>: <msg>" and exit 2 (usage error). */
DS_NORETURN void ds_cli_usage_error(const char *cmd, const char *fmt, ...) DS_PRINTF(2, 3);

#endif
