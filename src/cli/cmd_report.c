/*
 * cmd_report.c — `dsv3 report RUN [RUN ...] --out report.html`: one
 * self-contained HTML page of training runs (src/report/report.h): curves
 * overlaid per run, routing heatmaps, the FP8 gap to a BF16 run, eval and
 * fp8 analyze tables, configs diffed.  --tensorboard DIR also converts each
 * run's log to TensorBoard event files (DIR/<run label>/).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "cli/cli.h"
#include "io/json.h"
#include "report/report.h"

static int run(int argc, char **argv) {
    const char *out = NULL, *baseline = NULL, *title = NULL, *tb = NULL, *ablation = NULL;
    ds_strlist labels = {0}, attach = {0};
    int quiet = 0;
    const ds_opt opts[] = {
        {"--out", DS_OPT_STR, &out, "FILE  the HTML page to write (required)"},
        {"--label", DS_OPT_MULTI, &labels, "L1 L2 ...  names of the runs in the page (default: folder names)"},
        {"--baseline", DS_OPT_STR, &baseline, "RUN  the BF16 run the FP8 loss gap is measured against (path or label; "
                                              "default: the one bf16 run beside fp8 runs)"},
        {"--attach", DS_OPT_MULTI, &attach, "FILE ...  `dsv3 eval --out` or `dsv3 fp8 analyze --json` files to show "
                                            "(RUN/*.json of those kinds are shown anyway)"},
        {"--title", DS_OPT_STR, &title, "TEXT  page title (default \"dsv3 report\")"},
        {"--tensorboard", DS_OPT_STR, &tb, "DIR  also write each run's log as TensorBoard event files in DIR/<label>/"},
        {"--ablation", DS_OPT_STR, &ablation,
         "FILE  OUT/ablation.json of `dsv3 ablate`: its summary on top; its runs when no RUN is given"},
        {"--no-warnings", DS_OPT_FLAG, &quiet, "  do not list skipped log lines on stderr"},
    };
    const char *pos[256];
    int npos = 0;
    ds_cli_parse("report", "RUN [RUN ...] --out report.html [--baseline RUN] [--label L ...] [--attach FILE ...]", argc,
                 argv, opts, (int)(sizeof opts / sizeof opts[0]), pos, 256, &npos);
    char *abl_text = NULL;
    cJSON *abl = NULL;
    const char *abl_runs[16], *abl_labels[16];
    static char abl_paths[16][1024];
    if (ablation) {
        size_t len;
        abl_text = ds_read_file(ablation, &len);
        abl = abl_text ? ds_json_parse(abl_text, len, ablation) : NULL;
        if (!abl) return ds_cli_fail("report");
        const cJSON *vs = cJSON_GetObjectItemCaseSensitive(abl, "variants"), *v;
        int k = 0;
        cJSON_ArrayForEach(v, vs) {
            const cJSON *r = cJSON_GetObjectItemCaseSensitive(v, "run"), *n = cJSON_GetObjectItemCaseSensitive(v, "variant");
            if (!cJSON_IsString(r) || !cJSON_IsString(n) || k == 16) {
                ds_err("%s: \"variants\" must list up to 16 {\"variant\": NAME, \"run\": FOLDER}", ablation);
                cJSON_Delete(abl), free(abl_text);
                return ds_cli_fail("report");
            }
            /* the variant folders sit beside ablation.json */
            const char *rs = r->valuestring, *base = strrchr(rs, '/');
            size_t dl = strrchr(ablation, '/') ? (size_t)(strrchr(ablation, '/') - ablation) : 0;
            snprintf(abl_paths[k], sizeof abl_paths[k], "%.*s%s%s", (int)dl, ablation, dl ? "/" : "",
                     rs[0] == '/' ? rs : base ? base + 1 : rs);
            if (rs[0] == '/') snprintf(abl_paths[k], sizeof abl_paths[k], "%s", rs);
            abl_runs[k] = abl_paths[k], abl_labels[k++] = n->valuestring;
        }
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(abl, "baseline");
        if (!baseline && cJSON_IsString(b)) baseline = b->valuestring;
        if (npos == 0) {
            for (int i = 0; i < k; i++) pos[i] = abl_runs[i];
            npos = k;
            if (!labels.n) {
                free(labels.v);
                labels.v = ds_malloc(sizeof *labels.v * (size_t)(k > 0 ? k : 1));
                for (int i = 0; i < k; i++) labels.v[i] = abl_labels[i];
                labels.n = k;
            }
        }
    }
    if (npos < 1) ds_cli_usage_error("report", "give at least one RUN folder (the --out of `dsv3 train`)");
    if (!out) ds_cli_usage_error("report", "--out FILE is required");
    if (labels.n && labels.n != npos)
        ds_cli_usage_error("report", "--label: %d labels for %d runs (give one per run, in order)", labels.n, npos);
    ds_report_opts o = {0};
    o.title = title, o.baseline = baseline, o.labels = labels.n ? labels.v : NULL;
    o.extra_json = attach.v, o.n_extra = attach.n, o.quiet = quiet, o.ablation_json = abl_text;
    int wrc = ds_report_write(pos, npos, &o, out);
    if (wrc) {
        cJSON_Delete(abl), free(abl_text), free(labels.v), free(attach.v);
        return ds_cli_fail("report");
    }
    if (tb) {
        for (int i = 0; i < npos; i++) {
            char *log = ds_path_join(pos[i], "train_log.jsonl");
            const char *lab = labels.n ? labels.v[i] : NULL;
            char name[512];
            if (!lab) { /* the folder's name */
                size_t n = strlen(pos[i]);
                while (n > 1 && pos[i][n - 1] == '/') n--;
                size_t b = n;
                while (b > 0 && pos[i][b - 1] != '/') b--;
                snprintf(name, sizeof name, "%.*s", (int)(n - b), pos[i] + b);
                lab = name;
            }
            char *dir = ds_path_join(tb, lab);
            ds_tb_tail *t = ds_tb_tail_open(log, dir);
            int rc = !t || ds_tb_tail_close(t);
            free(log), free(dir);
            if (rc) {
                cJSON_Delete(abl), free(abl_text), free(labels.v), free(attach.v);
                return ds_cli_fail("report");
            }
        }
    }
    if (!quiet) fprintf(stderr, "dsv3 report: wrote %s (%d run%s)\n", out, npos, npos > 1 ? "s" : "");
    cJSON_Delete(abl), free(abl_text), free(labels.v), free(attach.v);
    return 0;
}
DS_COMMAND("report", "an HTML page of training runs: curves, routing, FP8 gap, evals, configs", run)
