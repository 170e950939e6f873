/*
 * rx.h — a regular expression as a DFA over Unicode code points, for guided
 * decoding: JSON Schema's "pattern" (a string's characters, matched as a
 * Python validator matches them: re.search) and a whole answer held to a
 * regex (vLLM's guided_regex / guided_choice: re.fullmatch).
 *
 * The syntax is Python's re for str patterns, less what a DFA cannot hold or
 * what changes the language in ways kept out: literals (UTF-8), ".", classes
 * "[...]" / "[^...]" with ranges, the escapes \d \D \w \W \s \S \t \n \r \f
 * \v \a \xHH \uHHHH \UHHHHHHHH and an escaped non-alphanumeric character,
 * groups "(...)", "(?:...)", "(?P<name>...)", "(?<name>...)", alternation,
 * the quantifiers * + ? {n} {n,} {,m} {n,m} (greedy or lazy: the same
 * language), "^" at the start and "$" at the end of a top-level alternative.
 * Refused, with the reason: backreferences, lookarounds, \b \B \A \Z,
 * inline flags, possessive quantifiers, anchors elsewhere.
 *
 * \s is Python's (str.isspace); \d and \w are taken as their ASCII members
 * ([0-9], [A-Za-z0-9_]), \D and \W as the ASCII characters outside them, and
 * inside a negated class \d and \w also stand for every non-ASCII character:
 * what the DFA accepts is always accepted by Python's re, and only non-ASCII
 * digits and word characters are left out.
 */
#ifndef DS_RX_H
#define DS_RX_H

#include <stdint.h>

typedef struct ds_rx ds_rx;

#define DS_RX_MAX_STATES 4096
#define DS_RX_SEARCH 0 /* re.search: unanchored unless "^" / "$"; "$" also before a final "\n" */
#define DS_RX_FULL 1   /* re.fullmatch: the whole text */

/* NULL with ds_err ("pattern: ...: at offset 3") when refused or too large */
ds_rx *ds_rx_compile(const char *pattern, int mode);
void ds_rx_free(ds_rx *r);
/* Hold the matched text's length (code points) to [lo, hi] (-1: no bound):
 * ds_rx_ok then also says whether such a length can still be reached.  -1
 * with ds_err when no matched text has such a length, or the table would be
 * too large. */
int ds_rx_lengths(ds_rx *r, int64_t lo, int64_t hi);
int32_t ds_rx_start(const ds_rx *r);
/* the state after code point c from q (-1: no text through it matches) */
int32_t ds_rx_step(const ds_rx *r, int32_t q, uint32_t c);
int ds_rx_accepts(const ds_rx *r, int32_t q, int64_t n);  /* q ends a match of n code points */
int ds_rx_ok(const ds_rx *r, int32_t q, int64_t n);       /* some match goes on from q after n code points */
int ds_rx_final(const ds_rx *r, int32_t q);               /* nothing can follow q */
/* some code point in [lo, hi] leads from q (after n code points) to a state ds_rx_ok with n + 1 */
int ds_rx_any(const ds_rx *r, int32_t q, uint32_t lo, uint32_t hi, int64_t n);

#endif
