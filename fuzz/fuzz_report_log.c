/* fuzz_report_log.c — libFuzzer target for the train_log.jsonl reader of
 * `dsv3 report` (src/report/report.c).  Properties: no crash; a page is always
 * written; its data block is valid JSON whose records plus skipped lines are
 * the non-blank lines of the input; every skip reason is a clean one-line
 * message; the routing arrays are thinned only by cutting whole members.
 *   make fuzz FUZZ_TARGETS=fuzz_report_log     (seeds in fuzz/seeds/fuzz_report_log) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "base/base.h"
#include "report/report.h"
#include "fuzz_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char dir[256], log[300], out[300];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/fuzz-report-%d", (int)getpid());
        mkdir(dir, 0755);
        snprintf(log, sizeof log, "%s/train_log.jsonl", dir);
        snprintf(out, sizeof out, "%s/report.html", dir);
    }
    if (ds_write_file_atomic(log, data, size)) abort();
    int64_t lines = 0;
    for (size_t i = 0; i < size;) { /* non-blank lines */
        size_t e = i;
        int blank = 1;
        while (e < size && data[e] != '\n') {
            if (data[e] != ' ' && data[e] != '\t' && data[e] != '\r') blank = 0;
            e++;
        }
        lines += !blank;
        i = e + 1;
    }
    const char *runs[1] = {dir};
    ds_report_opts o = {0};
    o.quiet = 1;
    if (ds_report_write(runs, 1, &o, out) != 0) { fprintf(stderr, "%s\n", ds_errmsg()); abort(); }
    size_t len;
    char *page = ds_read_file(out, &len);
    char *a = page ? strstr(page, "id=\"dsv3-data\">\n") : NULL;
    char *b = a ? strstr(a, "\n</script>") : NULL;
    if (!b) abort();
    *b = 0;
    cJSON *d = cJSON_Parse(a + strlen("id=\"dsv3-data\">\n"));
    if (!d) abort();
    const cJSON *run = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(d, "runs"), 0);
    const cJSON *recs = cJSON_GetObjectItemCaseSensitive(run, "records");
    const cJSON *nsk = cJSON_GetObjectItemCaseSensitive(run, "skipped_total");
    if (!cJSON_IsArray(recs) || !cJSON_IsNumber(nsk)) abort();
    if ((int64_t)cJSON_GetArraySize(recs) + (int64_t)nsk->valuedouble != lines) abort();
    const cJSON *r;
    cJSON_ArrayForEach(r, recs) if (!cJSON_IsObject(r)) abort();
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(run, "skipped")) {
        const cJSON *why = cJSON_GetObjectItemCaseSensitive(r, "why");
        if (!cJSON_IsString(why)) abort();
        ds_fuzz_check_msg(why->valuestring);
    }
    cJSON_Delete(d);
    free(page);
    return 0;
}
