/*
 * quote.h — render input text for a one-line error message.
 *
 * ds_quote("a\nb") gives 'a\nb': single-quoted, with control characters
 * (\n \r \t, else \xNN), the quote and the backslash escaped, bytes that are not
 * valid UTF-8 as \xNN, and invisible or line-breaking code points (C1 controls,
 * U+2028/U+2029, bidirectional controls, U+FEFF) as \uNNNN; valid printable
 * UTF-8 is kept.  Long text is cut after about DS_QUOTE_MAX bytes of output
 * (at a character boundary) and ends with "...", so messages stay short.
 *
 * The result lives in one of DS_QUOTE_SLOTS per-thread buffers used in turn,
 * so up to that many ds_quote results can appear in one ds_err call.
 *
 *   return ds_err("%s: model.vocab[%s]: not an integer", path, ds_quote(key));
 */
#ifndef DS_QUOTE_H
#define DS_QUOTE_H

#include <stddef.h>

#define DS_QUOTE_MAX 80
#define DS_QUOTE_SLOTS 8

/* s as a quoted, escaped, bounded string (s may be NULL: gives "(null)") */
const char *ds_quote(const char *s);
/* the same in double quotes (\" escaped), for messages that quote JSON values so */
const char *ds_dquote(const char *s);
/* escaped and bounded but not quoted, for names in a "path: name: why" position
 * (a clean name prints as itself) */
const char *ds_esc(const char *s);
/* the first n bytes of s (NUL bytes included, escaped) */
const char *ds_quote_n(const char *s, size_t n);
/* write the quoted form of s[0..n) to out (size cap >= 16); returns its length */
size_t ds_quote_into(char *out, size_t cap, const char *s, size_t n);

#endif
