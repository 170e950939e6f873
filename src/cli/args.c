/*
 * args.c — option parsing shared by all subcommands (see cli.h).
 */
#include "cli/cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void ds_cli_usage(FILE *f, const char *cmd, const char *usage, const ds_opt *opts, int nopts) {
    fprintf(f, "usage: dsv3 %s %s\n", cmd, usage ? usage : "[options]");
    if (nopts) fprintf(f, "options:\n");
    for (int i = 0; i < nopts; i++) fprintf(f, "  %-16s %s\n", opts[i].name, opts[i].help ? opts[i].help : "");
    fprintf(f, "  %-16s %s\n", "--help", "this text");
}

void ds_cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "dsv3 %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fprintf(stderr, "try 'dsv3 %s --help'\n", cmd);
    exit(2);
}

int ds_cli_fail(const char *cmd) {
    fflush(stdout);
    fprintf(stderr, "dsv3 %s: %s\n", cmd, ds_errmsg());
    return 1;
}

void ds_cli_parse(const char *cmd, const char *usage, int argc, char **argv,
                  const ds_opt *opts, int nopts, const char **positional,
                  int max_pos, int *npos) {
    int np = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            ds_cli_usage(stdout, cmd, usage, opts, nopts);
            exit(0);
        }
        if (a[0] == '-' && a[1] == '-' && a[2]) {
            const char *eq = strchr(a, '=');
            size_t klen = eq ? (size_t)(eq - a) : strlen(a);
            const ds_opt *o = NULL;
            for (int k = 0; k < nopts; k++)
                if (strlen(opts[k].name) == klen && !strncmp(opts[k].name, a, klen)) o = &opts[k];
            if (!o) {
                fprintf(stderr, "dsv3 %s: unknown option %s\n", cmd, ds_quote_n(a, klen));
                ds_cli_usage(stderr, cmd, usage, opts, nopts);
                exit(2);
            }
            if (o->kind == DS_OPT_FLAG) {
                if (eq) ds_cli_usage_error(cmd, "option %s takes no value", o->name);
                *(int *)o->dst = 1;
                continue;
            }
            const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
            if (!val) ds_cli_usage_error(cmd, "option %s needs a value", o->name);
            char *end = NULL;
            errno = 0;
            switch (o->kind) {
            case DS_OPT_STR: *(const char **)o->dst = val; break;
            case DS_OPT_INT: {
                long long v = strtoll(val, &end, 10);
                if (!*val || *end || errno) ds_cli_usage_error(cmd, "option %s needs an integer, got %s", o->name, ds_quote(val));
                *(long long *)o->dst = v;
                break;
            }
            case DS_OPT_FLOAT: {
                double v = strtod(val, &end);
                if (!*val || *end || errno) ds_cli_usage_error(cmd, "option %s needs a number, got %s", o->name, ds_quote(val));
                *(double *)o->dst = v;
                break;
            }
            case DS_OPT_MULTI: {
                ds_strlist *l = o->dst;
                l->v = ds_realloc(l->v, (l->n + argc) * sizeof *l->v);
                l->v[l->n++] = val;
                while (!eq && i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) l->v[l->n++] = argv[++i];
                break;
            }
            default: break;
            }
            continue;
        }
        if (np >= max_pos || !positional) ds_cli_usage_error(cmd, "unexpected argument %s", ds_quote(a));
        positional[np++] = a;
    }
    if (npos) *npos = np;
}
