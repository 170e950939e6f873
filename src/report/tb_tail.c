/*
 * tb_tail.c — train_log.jsonl -> TensorBoard scalars (report.h).
 */
#include "report/report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/base.h"
#include "io/json.h"
#include "io/tfevents.h"

static double wall_time(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

struct ds_tb_tail {
    char *log, *dir;
    ds_tfevents *w;
    long off;
};

ds_tb_tail *ds_tb_tail_open(const char *log_path, const char *dir) {
    ds_tfevents *w = ds_tfevents_open(dir, wall_time());
    if (!w) return NULL;
    ds_tb_tail *t = ds_calloc(1, sizeof *t);
    t->log = ds_strdup(log_path), t->dir = ds_strdup(dir), t->w = w;
    return t;
}

static int put(ds_tb_tail *t, const char *tag, int64_t step, double wall, double v) {
    return ds_tfevents_scalar(t->w, tag, step, wall, (float)v);
}

/* One record's scalars. */
static int record(ds_tb_tail *t, const cJSON *j, double wall) {
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "step");
    if (!cJSON_IsNumber(st)) return 0; /* resume markers */
    int64_t step = (int64_t)st->valuedouble;
    int val = cJSON_GetObjectItemCaseSensitive(j, "val_loss") != NULL;
    const cJSON *it;
    char tag[128];
    cJSON_ArrayForEach(it, j) {
        if (!cJSON_IsNumber(it) || !strcmp(it->string, "step")) continue;
        const char *k = it->string;
        if (val && !strncmp(k, "val_", 4)) k += 4;
        snprintf(tag, sizeof tag, "%s/%s", val ? "val" : "train", k);
        if (put(t, tag, step, wall, it->valuedouble)) return -1;
    }
    const cJSON *load = cJSON_GetObjectItemCaseSensitive(j, "load");
    int l = 0;
    cJSON_ArrayForEach(it, load) { /* one array of expert loads per MoE layer, in layer order */
        double sum = 0, mx = 0;
        int e = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, it) {
            double v = cJSON_IsNumber(x) ? x->valuedouble : 0;
            sum += v, mx = v > mx ? v : mx, e++;
        }
        if (e > 0 && sum > 0) {
            snprintf(tag, sizeof tag, "routing/maxvio/moe%d", l);
            if (put(t, tag, step, wall, mx / (sum / e) - 1)) return -1;
            snprintf(tag, sizeof tag, "routing/busiest_share/moe%d", l);
            if (put(t, tag, step, wall, mx / sum)) return -1;
        }
        l++;
    }
    return 0;
}

int ds_tb_tail_poll(ds_tb_tail *t) {
    FILE *f = fopen(t->log, "rb");
    if (!f) return 0; /* not written yet */
    if (fseek(f, t->off, SEEK_SET) != 0) {
        fclose(f);
        return 0;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = ds_malloc(cap);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) buf = ds_realloc(buf, cap *= 2);
    }
    fclose(f);
    double wall = wall_time();
    int rc = 0;
    size_t at = 0;
    for (;;) {
        char *nl = memchr(buf + at, '\n', n - at);
        if (!nl) break; /* an incomplete last line waits for the next poll */
        size_t ll = (size_t)(nl - (buf + at));
        cJSON *j = ds_json_parse(buf + at, ll, t->log);
        if (j && cJSON_IsObject(j)) rc = record(t, j, wall);
        cJSON_Delete(j);
        at += ll + 1;
        if (rc) break;
    }
    t->off += (long)at;
    free(buf);
    return rc ? rc : ds_tfevents_flush(t->w);
}

int ds_tb_tail_close(ds_tb_tail *t) {
    if (!t) return 0;
    int rc = ds_tb_tail_poll(t);
    if (ds_tfevents_close(t->w)) rc = -1;
    free(t->log), free(t->dir), free(t);
    return rc;
}
