/*
 * suggest.c — nearest candidates for a mistyped word (suggest.h).
 */
#include "base/suggest.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ds_edit_distance(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b);
    /* three rows of the OSA table */
    int *r0 = calloc(m + 1, sizeof(int)), *r1 = calloc(m + 1, sizeof(int)), *r2 = calloc(m + 1, sizeof(int));
    if (!r0 || !r1 || !r2) {
        free(r0), free(r1), free(r2);
        return (int)(n > m ? n : m);
    }
    for (size_t j = 0; j <= m; j++) r1[j] = (int)j;
    for (size_t i = 1; i <= n; i++) {
        int *prev2 = r0, *prev = r1, *cur = r2;
        cur[0] = (int)i;
        for (size_t j = 1; j <= m; j++) {
            int ca = tolower((unsigned char)a[i - 1]), cb = tolower((unsigned char)b[j - 1]);
            int d = prev[j - 1] + (ca != cb);
            if (prev[j] + 1 < d) d = prev[j] + 1;
            if (cur[j - 1] + 1 < d) d = cur[j - 1] + 1;
            if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) && tolower((unsigned char)a[i - 2]) == cb &&
                prev2[j - 2] + 1 < d)
                d = prev2[j - 2] + 1;
            cur[j] = d;
        }
        r0 = prev, r1 = cur, r2 = prev2;
    }
    int d = r1[m];
    free(r0), free(r1), free(r2);
    return d;
}

static int prefix_of(const char *a, const char *b) { /* a starts b, case-insensitive */
    size_t n = strlen(a);
    if (n < 3 || n > strlen(b)) return 0;
    for (size_t i = 0; i < n; i++)
        if (tolower((unsigned char)a[i]) != tolower((unsigned char)b[i])) return 0;
    return 1;
}

int ds_suggest(const char *word, const char *const *cands, int n, const char **out, int max_out) {
    if (!word || max_out <= 0) return 0;
    /* a leading "--" is not part of the spelling */
    const char *w = word;
    while (*w == '-') w++;
    int limit = (int)strlen(w) / 3;
    if (limit < 2) limit = 2;
    int nout = 0, *dist = calloc((size_t)max_out, sizeof(int));
    if (!dist) return 0;
    for (int i = 0; i < n; i++) {
        if (!cands[i]) continue;
        const char *c = cands[i];
        while (*c == '-') c++;
        int d = ds_edit_distance(w, c);
        if (d > limit) {
            if (prefix_of(w, c) || prefix_of(c, w)) d = limit; /* --temp, --temperatures */
            else continue;
        }
        if (d == 0 && !strcmp(word, cands[i])) continue; /* the word itself */
        int k = nout < max_out ? nout++ : max_out;        /* insertion sort, stable */
        if (k == max_out) {
            if (d >= dist[max_out - 1]) continue;
            k = max_out - 1;
        }
        while (k > 0 && dist[k - 1] > d) {
            dist[k] = dist[k - 1], out[k] = out[k - 1];
            k--;
        }
        dist[k] = d, out[k] = cands[i];
    }
    free(dist);
    return nout;
}

char *ds_suggest_text(char *buf, size_t cap, const char *word, const char *const *cands, int n) {
    const char *best[3];
    int k = ds_suggest(word, cands, n, best, 3);
    if (!cap) return buf;
    buf[0] = 0;
    if (!k) return buf;
    size_t len = (size_t)snprintf(buf, cap, "did you mean ");
    for (int i = 0; i < k && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s'%s'", i == 0 ? "" : i + 1 == k ? " or " : ", ", best[i]);
    if (len < cap) snprintf(buf + len, cap - len, "?");
    return buf;
}
