/*
 * report.c — evaluation results: the terminal table and the results JSON
 *   {"dsv3_version", "model", "config": {limit, batch, max_length, prefix_id, add_bos},
 *    "results": {TASK: {"kind", "source", "n", "skipped", "add_bos", "seconds", "cpu_seconds",
 *                       "metrics": {NAME: {"value", "stderr"}}}},
 *    "errors": {TASK: "message"}}   (only when a task failed)
 * A stderr lm-eval does not define (corpus perplexities) is null.
 */
#include "eval/eval.h"
#include "base/base.h"

#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *kind_name(ds_task_kind k) {
    return k == DS_TASK_MC ? "mc" : k == DS_TASK_LL ? "ll" : k == DS_TASK_LM ? "lm" : "gen";
}

void ds_eval_print_table(FILE *f, const ds_task *tasks, const ds_task_result *res, int n, const char *const *errors) {
    fprintf(f, "%-14s %-4s %-18s %12s   %-12s %8s\n", "task", "kind", "metric", "value", "stderr", "n");
    for (int i = 0; i < n; i++) {
        if (errors && errors[i]) {
            fprintf(f, "%-14s %-4s %-18s %12s\n", tasks[i].name, kind_name(tasks[i].kind), "(failed)", "-");
            continue;
        }
        for (int m = 0; m < res[i].n_metrics; m++) {
            const ds_metric *x = &res[i].metrics[m];
            char se[32] = "", v[32];
            /* large perplexities in exponent form so the columns stay aligned */
            const char *fmt = fabs(x->value) < 1e6 ? "%.4f" : "%.4e";
            snprintf(v, sizeof v, fmt, x->value);
            if (x->has_stderr) {
                char e[24];
                snprintf(e, sizeof e, fabs(x->stderr_) < 1e6 ? "%.4f" : "%.4e", x->stderr_);
                snprintf(se, sizeof se, "± %s", e);
            }
            fprintf(f, "%-14s %-4s %-18s %12s   %-12s %8lld\n", m ? "" : tasks[i].name,
                    m ? "" : kind_name(tasks[i].kind), x->name, v, se, (long long)res[i].n);
        }
    }
}

static cJSON *num_or_null(double v, int ok) {
    return ok && isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull();
}

int ds_eval_write_json(const char *path, const ds_lm *lm, const char *model, const ds_eval_opts *o,
                       const ds_task *tasks, const ds_task_result *res, int n, const char *const *errors) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "dsv3_version", DS_VERSION);
    cJSON_AddStringToObject(root, "model", model ? model : "");
    cJSON *cfg = cJSON_AddObjectToObject(root, "config");
    cJSON_AddNumberToObject(cfg, "limit", (double)o->limit);
    cJSON_AddNumberToObject(cfg, "batch", (double)o->batch);
    cJSON_AddNumberToObject(cfg, "max_length", (double)lm->max_length);
    cJSON_AddNumberToObject(cfg, "prefix_id", (double)lm->prefix_id);
    cJSON_AddBoolToObject(cfg, "add_bos", o->add_bos);
    cJSON *all = cJSON_AddObjectToObject(root, "results");
    cJSON *errs = NULL;
    for (int i = 0; i < n; i++) {
        if (errors && errors[i]) {
            if (!errs) errs = cJSON_CreateObject();
            char key[80];
            snprintf(key, sizeof key, "%s", tasks[i].name);
            for (int k = 2; cJSON_GetObjectItemCaseSensitive(errs, key); k++) snprintf(key, sizeof key, "%s_%d", tasks[i].name, k);
            cJSON_AddStringToObject(errs, key, errors[i]);
            continue;
        }
        cJSON *t = cJSON_CreateObject();
        cJSON_AddStringToObject(t, "kind", kind_name(tasks[i].kind));
        cJSON_AddStringToObject(t, "source", tasks[i].path);
        cJSON_AddNumberToObject(t, "n", (double)res[i].n);
        cJSON_AddNumberToObject(t, "skipped", (double)tasks[i].n_skipped);
        cJSON_AddBoolToObject(t, "add_bos", ds_task_add_bos(&tasks[i], o));
        cJSON_AddNumberToObject(t, "seconds", res[i].seconds);
        cJSON_AddNumberToObject(t, "cpu_seconds", res[i].cpu_seconds);
        cJSON *ms = cJSON_AddObjectToObject(t, "metrics");
        for (int m = 0; m < res[i].n_metrics; m++) {
            const ds_metric *x = &res[i].metrics[m];
            cJSON *e = cJSON_CreateObject();
            cJSON_AddItemToObject(e, "value", num_or_null(x->value, 1));
            cJSON_AddItemToObject(e, "stderr", num_or_null(x->stderr_, x->has_stderr));
            cJSON_AddItemToObject(ms, x->name, e);
        }
        /* two specs with the same name: keep both, the later one suffixed */
        char key[80];
        snprintf(key, sizeof key, "%s", tasks[i].name);
        for (int k = 2; cJSON_GetObjectItemCaseSensitive(all, key); k++)
            snprintf(key, sizeof key, "%s_%d", tasks[i].name, k);
        cJSON_AddItemToObject(all, key, t);
    }
    if (errs) cJSON_AddItemToObject(root, "errors", errs);
    char *s = cJSON_Print(root);
    cJSON_Delete(root);
    size_t len = strlen(s);
    s = ds_realloc(s, len + 2);
    s[len] = '\n';
    s[len + 1] = 0;
    int rc = ds_write_file_atomic(path, s, len + 1);
    free(s);
    return rc;
}
