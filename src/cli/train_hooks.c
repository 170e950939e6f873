/*
 * train_hooks.c — run.json, --report and --tensorboard of `dsv3 train`
 * (train_hooks.h).
 */
#include "cli/train_hooks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"
#include "io/json.h"
#include "model/config.h"
#include "model/presets.h"

/* First line of a command's output (trailing newline dropped), or "" when it fails. */
static void run_line(const char *cmd, char *out, size_t cap) {
    out[0] = 0;
    FILE *p = popen(cmd, "r");
    if (!p) return;
    if (!fgets(out, (int)cap, p)) out[0] = 0;
    out[strcspn(out, "\n")] = 0;
    if (pclose(p) != 0) out[0] = 0;
}

static void put_git(ds_sbuf *b) {
    /* the source tree the binary was built in: the folder of /proc/self/exe */
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        ds_sbuf_puts(b, "{\"error\": \"no /proc/self/exe\"}");
        return;
    }
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    ds_sbuf q = {0};
    ds_sbuf_puts(&q, "git -C '");
    for (const char *c = exe; *c; c++) {
        if (*c == '\'') ds_sbuf_puts(&q, "'\\''");
        else ds_sbuf_put(&q, c, 1);
    }
    ds_sbuf_puts(&q, "' ");
    char *pre = ds_sbuf_take(&q), cmd[8400], rev[128], dirty[512];
    snprintf(cmd, sizeof cmd, "%srev-parse HEAD 2>/dev/null", pre);
    run_line(cmd, rev, sizeof rev);
    if (!rev[0]) {
        ds_sbuf_puts(b, "{\"error\": \"the binary's folder is not a git checkout\"}");
        free(pre);
        return;
    }
    snprintf(cmd, sizeof cmd, "%sstatus --porcelain --untracked-files=no 2>/dev/null | head -1", pre);
    run_line(cmd, dirty, sizeof dirty);
    ds_sbuf_puts(b, "{\"rev\": ");
    ds_json_put_string(b, rev);
    ds_sbuf_printf(b, ", \"dirty\": %s, \"tree\": ", dirty[0] ? "true" : "false");
    ds_json_put_string(b, exe);
    ds_sbuf_puts(b, "}");
    free(pre);
}

static void put_machine(ds_sbuf *b) {
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    struct utsname u;
    char os[400] = "";
    if (uname(&u) == 0) snprintf(os, sizeof os, "%s %s %s", u.sysname, u.release, u.machine);
    char cpu[256] = "", line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
            char *v = strchr(line, ':') + 1;
            while (*v == ' ' || *v == '\t') v++;
            snprintf(cpu, sizeof cpu, "%s", v);
            cpu[strcspn(cpu, "\n")] = 0;
            break;
        }
    if (f) fclose(f);
    ds_sbuf_puts(b, "{\"hostname\": ");
    ds_json_put_string(b, host);
    ds_sbuf_puts(b, ", \"os\": ");
    ds_json_put_string(b, os);
    ds_sbuf_puts(b, ", \"cpu\": ");
    ds_json_put_string(b, cpu);
    ds_sbuf_printf(b, ", \"cores\": %ld, \"threads\": %d}", sysconf(_SC_NPROCESSORS_ONLN), ds_threads());
}

static void put_command(ds_sbuf *b) {
    size_t len = 0;
    char *s = ds_read_file("/proc/self/cmdline", &len);
    ds_sbuf_puts(b, "[");
    for (size_t i = 0, k = 0; s && i < len; k++) {
        if (k) ds_sbuf_puts(b, ", ");
        ds_json_put_string(b, s + i);
        i += strlen(s + i) + 1;
    }
    ds_sbuf_puts(b, "]");
    free(s);
}

int ds_write_run_info(const char *run, const ds_train_opts *o) {
    ds_sbuf b = {0};
    time_t now = time(NULL);
    char when[64], cwd[4096] = "";
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    if (!getcwd(cwd, sizeof cwd)) cwd[0] = 0;
    ds_sbuf_printf(&b, "{\"dsv3_version\": \"%s\", \"started\": \"%s\", \"command\": ", DS_VERSION, when);
    put_command(&b);
    ds_sbuf_puts(&b, ", \"cwd\": ");
    ds_json_put_string(&b, cwd);
    ds_sbuf_puts(&b, ",\n \"git\": ");
    put_git(&b);
    ds_sbuf_puts(&b, ",\n \"machine\": ");
    put_machine(&b);
    ds_sbuf_puts(&b, ",\n \"data\": ");
    ds_json_put_string(&b, o->data ? o->data : "");
    char opts[4096];
    ds_train_options_json(o, opts, sizeof opts);
    ds_sbuf_printf(&b, ",\n \"options\": %s", opts);
    ds_config c;
    int ok = o->config && (ds_config_is_path(o->config) ? ds_config_load(&c, o->config) : ds_preset(&c, o->config)) == 0;
    char *cj = ok ? ds_config_to_json(&c) : NULL;
    ds_sbuf_printf(&b, ",\n \"model_config\": %s}\n", cj ? cj : "null");
    free(cj);
    char *text = ds_sbuf_take(&b);
    char *path = ds_path_join(run, "run.json");
    int rc = ds_write_file_atomic(path, text, strlen(text));
    free(path), free(text);
    return rc;
}

static int write_report(ds_train_hooks *h, const char *run) {
    char *out = ds_path_join(run, "report.html");
    const char *runs[1] = {run};
    const char *labels[1] = {h->label};
    ds_report_opts ro = {0};
    ro.labels = h->label ? labels : NULL;
    ro.quiet = 1;
    int rc = ds_report_write(runs, 1, &ro, out);
    free(out);
    return rc ? ds_err_prefix("--report") : 0;
}

static int on_step(void *ctx, const char *run, int64_t step, int evaluated) {
    ds_train_hooks *h = ctx;
    (void)step;
    h->run = run;
    if (!h->started) {
        h->started = 1;
        char *p = ds_path_join(run, "run.json");
        int have = ds_file_exists(p);
        free(p);
        if ((!h->o->resume || !have) && ds_write_run_info(run, h->o)) return -1;
        if (h->tb_dir) {
            char *log = ds_path_join(run, "train_log.jsonl");
            h->tb = ds_tb_tail_open(log, h->tb_dir);
            free(log);
            if (!h->tb) return ds_err_prefix("--tensorboard %s", h->tb_dir);
        }
    }
    if (h->tb && ds_tb_tail_poll(h->tb)) return -1;
    if (h->report && evaluated) {
        if (write_report(h, run)) return -1;
        h->reported = step;
    }
    h->last = step;
    return 0;
}

void ds_train_hooks_attach(ds_train_hooks *h, ds_train_opts *o) {
    h->o = o;
    o->on_step = on_step;
    o->on_step_ctx = h;
}

int ds_train_hooks_end(ds_train_hooks *h) {
    int rc = ds_tb_tail_close(h->tb);
    /* the last step's page when it was no validation step (no validation split) */
    if (h->report && h->run && h->reported != h->last && write_report(h, h->run)) rc = -1;
    h->tb = NULL;
    return rc;
}
