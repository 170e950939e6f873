/*
 * args.c — option parsing shared by all subcommands (see cli.h).
 */
#include "cli/cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "infer/infer.h"
#include "base/suggest.h"
#include "model/model.h"
#include "model/presets.h"

void ds_cli_print_examples(FILE *f, const char *cmd) {
    const char *const *ex = ds_cli_examples(cmd);
    if (!ex || !ex[0]) return;
    fprintf(f, "examples:\n");
    for (int i = 0; ex[i]; i++) fprintf(f, "  %s\n", ex[i]);
}

void ds_cli_usage(FILE *f, const char *cmd, const char *usage, const ds_opt *opts, int nopts) {
    fprintf(f, "usage: dsv3 %s %s\n", cmd, usage ? usage : "[options]");
    if (nopts) fprintf(f, "options:\n");
    for (int i = 0; i < nopts; i++)
        if (opts[i].help) fprintf(f, "  %-16s %s\n", opts[i].name, opts[i].help);
    fprintf(f, "  %-16s %s\n", "--help", "this text");
    ds_cli_print_examples(f, cmd);
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

void ds_cli_check_choice(const char *cmd, const char *what, const char *word, const char *const *cands, int n) {
    for (int i = 0; i < n; i++)
        if (cands[i] && !strcmp(word, cands[i])) return;
    char dym[512], known[1024];
    size_t len = 0;
    known[0] = 0;
    for (int i = 0; i < n && len < sizeof known; i++)
        if (cands[i]) len += (size_t)snprintf(known + len, sizeof known - len, "%s%s", len ? ", " : "", cands[i]);
    ds_suggest_text(dym, sizeof dym, word, cands, n);
    ds_cli_usage_error(cmd, "%s %s; %s%sknown: %s", what, ds_quote(word), dym, dym[0] ? " " : "", known);
}

const struct ds_ops *ds_cli_device(const char *cmd, const char *device) {
    if (!device) device = "cpu";
    ds_cli_check_choice(cmd, "--device: unknown device", device, ds_backend_devices, ds_backend_ndevices);
    const struct ds_ops *ops = ds_backend_get(device);
    if (!ops) exit(ds_cli_fail(cmd));
    return ops;
}

const struct ds_ops *ds_cli_device_check(const char *cmd, const char *device) {
    if (!device) device = "cpu";
    if (strcmp(device, "fakedev"))
        ds_cli_check_choice(cmd, "--device: unknown device", device, ds_backend_devices, ds_backend_ndevices);
    const struct ds_ops *ops = ds_backend_get_resident(device);
    if (!ops) exit(ds_cli_fail(cmd));
    return ops;
}

const struct ds_ops *ds_cli_device_resident(const char *cmd, const char *device) {
    const struct ds_ops *ops = ds_cli_device_check(cmd, device);
    if (device && strcmp(device, "cpu"))
        ds_log(DS_LOG_INFO, "dsv3 %s: --device %s: the device-resident table (the model and its buffers in the device's "
                            "memory)", cmd, device);
    return ops;
}

int ds_cli_random_model(ds_model *m, const char *config, const struct ds_ops *mem) {
    ds_config c;
    int bad = ds_file_exists(config) ? ds_config_load(&c, config) : ds_preset(&c, config);
    if (bad || ds_config_validate(&c, config) || ds_model_create_on(m, &c, NULL, mem)) return -1;
    ds_model_init_random(m, 1);
    return 0;
}

void ds_cli_check_config(const char *cmd, const char *config) {
    if (!config || ds_config_is_path(config) || ds_file_exists(config)) return;
    int n = 0;
    const char *const *names = ds_preset_list(&n);
    ds_cli_check_choice(cmd, "--config: unknown preset", config, names, n);
}

/* Which destinations the last parse set (ds_cli_given). */
static const void *g_given[256];
static int g_ngiven;

int ds_cli_given(const void *dst) {
    for (int i = 0; i < g_ngiven; i++)
        if (g_given[i] == dst) return 1;
    return 0;
}

static void fmt_bound(char *buf, size_t cap, double v, int is_int) {
    if (isinf(v)) snprintf(buf, cap, "%s", v < 0 ? "-inf" : "inf");
    else if (is_int) snprintf(buf, cap, "%.0f", v);
    else snprintf(buf, cap, "%g", v);
}

/* Exit 2 when v is outside o's range (or not finite). */
static void check_range(const char *cmd, const ds_opt *o, double v, const char *val) {
    int is_int = o->kind == DS_OPT_INT;
    int bad = !isfinite(v);
    if (o->check & DS_CHECK_MIN) bad |= (o->check & DS_CHECK_MIN_OPEN) ? !(v > o->min) : !(v >= o->min);
    if (o->check & DS_CHECK_MAX) bad |= (o->check & DS_CHECK_MAX_OPEN) ? !(v < o->max) : !(v <= o->max);
    if (!bad) return;
    char lo[32], hi[32];
    fmt_bound(lo, sizeof lo, (o->check & DS_CHECK_MIN) ? o->min : -INFINITY, is_int);
    fmt_bound(hi, sizeof hi, (o->check & DS_CHECK_MAX) ? o->max : INFINITY, is_int);
    int lo_open = !(o->check & DS_CHECK_MIN) || (o->check & DS_CHECK_MIN_OPEN);
    int hi_open = !(o->check & DS_CHECK_MAX) || (o->check & DS_CHECK_MAX_OPEN);
    ds_cli_usage_error(cmd, "%s: got %s; allowed: %c%s, %s%c%s", o->name, ds_quote(val), lo_open ? '(' : '[', lo, hi,
                       hi_open ? ')' : ']', is_int ? " (an integer)" : "");
}

static void unknown_option(const char *cmd, const char *a, size_t klen, const ds_opt *opts, int nopts) {
    const char **names = ds_malloc((size_t)(nopts + 1) * sizeof *names);
    for (int k = 0; k < nopts; k++) names[k] = opts[k].help ? opts[k].name : NULL;
    names[nopts] = "--help";
    char word[256], dym[512];
    snprintf(word, sizeof word, "%.*s", (int)(klen < 200 ? klen : 200), a);
    ds_suggest_text(dym, sizeof dym, word, names, nopts + 1);
    free(names);
    ds_cli_usage_error(cmd, "unknown option %s%s%s", ds_quote(word), dym[0] ? "; " : "", dym);
}

void ds_cli_parse(const char *cmd, const char *usage, int argc, char **argv,
                  const ds_opt *opts, int nopts, const char **positional,
                  int max_pos, int *npos) {
    int np = 0;
    g_ngiven = 0;
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
            if (!o) unknown_option(cmd, a, klen, opts, nopts);
            if (g_ngiven < (int)(sizeof g_given / sizeof *g_given)) g_given[g_ngiven++] = o->dst;
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
                if (!*val || *end || errno) {
                    if (o->check) check_range(cmd, o, NAN, val);
                    ds_cli_usage_error(cmd, "option %s needs an integer, got %s", o->name, ds_quote(val));
                }
                if (o->check) check_range(cmd, o, (double)v, val);
                *(long long *)o->dst = v;
                break;
            }
            case DS_OPT_FLOAT: {
                double v = strtod(val, &end);
                if (!*val || *end || errno) ds_cli_usage_error(cmd, "option %s needs a number, got %s", o->name, ds_quote(val));
                check_range(cmd, o, v, val);
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

int ds_cli_speculative(const char *cmd, const char *spec, long long draft_max, long long ngram_min, long long ngram_max) {
    const int kind = !spec ? 0 : !strcmp(spec, "mtp") ? DS_SPEC_MTP : !strcmp(spec, "ngram") ? DS_SPEC_NGRAM : -1;
    if (kind < 0) ds_cli_usage_error(cmd, "--speculative: unknown method %s (known: mtp, ngram)", ds_quote(spec));
    if ((draft_max || ngram_min || ngram_max) && kind != DS_SPEC_NGRAM)
        ds_cli_usage_error(cmd, "--draft-max, --ngram-min and --ngram-max go with --speculative ngram");
    if (ngram_min && ngram_max && ngram_min > ngram_max)
        ds_cli_usage_error(cmd, "--ngram-min %lld is above --ngram-max %lld", ngram_min, ngram_max);
    return kind;
}
