/*
 * json.h — small JSON helpers on top of cJSON for the readers (config.json,
 * safetensors headers, index files) and a string builder for the writers.
 *
 * Readers get a parse error as one line with the position ("config.json:
 * invalid JSON at line 3, column 7").  Writers build text with ds_sbuf and the
 * ds_json_put_* functions, which print keys and numbers the way Python's json
 * module does (so files diff cleanly against the ones Hugging Face writes).
 */
#ifndef DS_JSON_H
#define DS_JSON_H

#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

/* Parse len bytes of text (need not be NUL-terminated).  On failure returns
 * NULL and sets "<what>: invalid JSON at line L, column C" (or "...: empty").
 * A key repeated in an object keeps its last value, as Python's json.load
 * does (the earlier members are removed from the tree). */
cJSON *ds_json_parse(const char *text, size_t len, const char *what);
/* The same, keeping every member of a repeated key (for readers that refuse
 * duplicates themselves: safetensors headers). */
cJSON *ds_json_parse_keep_dups(const char *text, size_t len, const char *what);

/* 1 when s[0..n) is valid UTF-8 (no overlongs, surrogates or values past
 * U+10FFFF); else 0 with the offset of the first bad byte in *bad_at. */
int ds_utf8_valid(const unsigned char *s, size_t n, size_t *bad_at);

/* Name of a JSON value's type for messages: "string", "number", "object", ... */
const char *ds_json_type_name(const cJSON *v);

/* A number that is an exact integer in [-2^53, 2^53]: stored in *out, returns 0.
 * Otherwise returns -1 (no message set). */
int ds_json_int64(const cJSON *v, int64_t *out);

/* Growable text buffer. */
typedef struct {
    char *p;
    size_t n, cap;
} ds_sbuf;
void ds_sbuf_put(ds_sbuf *b, const char *s, size_t n);
void ds_sbuf_puts(ds_sbuf *b, const char *s);
void ds_sbuf_printf(ds_sbuf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Returns the NUL-terminated text (caller frees) and resets the buffer. */
char *ds_sbuf_take(ds_sbuf *b);

/* A JSON string literal with escapes (as Python's json.dumps with
 * ensure_ascii=True: non-ASCII as \uXXXX, surrogate pairs above U+FFFF).
 * Invalid UTF-8 bytes are written as U+FFFD. */
void ds_json_put_string(ds_sbuf *b, const char *s);
/* Shortest text that reads back as the same double, Python style: 2.5, 1e-06,
 * 10000.0 (always with a '.' or an exponent, so it stays a float). */
void ds_json_put_double(ds_sbuf *b, double v);

#endif
