/* fixture_ids.h — read a model fixture's ids.txt (B lines of T whitespace-separated
 * token ids; tests/fixtures/model/README.md) for the parity tests. */
#ifndef DS_TEST_FIXTURE_IDS_H
#define DS_TEST_FIXTURE_IDS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

/* Returns the ids (B*T, malloc'd) or NULL when the file is missing or holds
 * more than 16384 ids. */
static inline int32_t *read_ids(const char *path, int64_t *B, int64_t *T) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    const int64_t cap = 16384;
    int32_t *ids = ds_malloc((size_t)cap * sizeof *ids);
    int64_t n = 0, b = 0, t = 0;
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        int64_t cnt = 0;
        for (char *p = strtok(line, " \t\r\n"); p; p = strtok(NULL, " \t\r\n")) {
            if (n == cap) { fclose(f); free(ids); return NULL; }
            ids[n++] = atoi(p), cnt++;
        }
        if (cnt) b++, t = cnt;
    }
    fclose(f);
    *B = b;
    *T = t;
    return ids;
}

#endif
