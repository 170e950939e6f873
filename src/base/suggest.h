/*
 * suggest.h — "did you mean ...": the candidates nearest to a mistyped word.
 *
 * Distance: Damerau-Levenshtein (optimal string alignment: insert, delete,
 * substitute, swap two neighbours), case-insensitive.  A candidate is
 * suggested when its distance is at most max(2, len(word) / 3), or when one
 * of the two starts with the other (a truncated or over-long word: "--temp"
 * for "--temperature").
 */
#ifndef DS_SUGGEST_H
#define DS_SUGGEST_H

#include <stddef.h>

/* Distance between a and b (case-insensitive). */
int ds_edit_distance(const char *a, const char *b);

/* Up to max_out of the n candidates nearest to word, nearest first (ties in
 * candidate order), into out; returns how many.  NULL candidates are
 * skipped. */
int ds_suggest(const char *word, const char *const *cands, int n, const char **out, int max_out);

/* "did you mean 'a' or 'b'?" for ds_suggest's result into buf ("" when
 * there is none); returns buf. */
char *ds_suggest_text(char *buf, size_t cap, const char *word, const char *const *cands, int n);

#endif
