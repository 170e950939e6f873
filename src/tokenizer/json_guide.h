/*
 * json_guide.h — constrained decoding to JSON (OpenAI's response_format
 * json_object and json_schema; the arguments of a forced tool call): a
 * byte-level pushdown automaton for RFC 8259 text, optionally held to a
 * JSON Schema, and, for a vocabulary, the tokens whose bytes keep the text
 * so far a prefix of an accepted document.
 *
 * Without a schema the automaton accepts exactly the prefixes of JSON
 * objects.  With one (ds_json_schema_compile) it also holds each value to
 * its schema: "type" (one or a list), "properties" (keys are read against
 * the names not yet seen), "required" (an object closes only when they are
 * all there), "additionalProperties" (false, true or a schema; JSON
 * Schema's default is true), "items", "enum" and "const" (the value is one
 * of the members as Python's json.dumps writes them), "$ref" to the
 * schema's "$defs", "anyOf" / "oneOf" of alternatives that start with
 * different bytes, "allOf" of one schema, "minLength" / "maxLength" (code
 * points of the decoded string, as Python's len), "minItems" / "maxItems",
 * "minProperties" / "maxProperties", and "minimum" / "maximum" /
 * "exclusiveMinimum" / "exclusiveMaximum" (a number's text is held to those
 * that some continuation can still meet, compared as doubles as Python's
 * json and a validator compare them; such a number is written without an
 * exponent, at most 23 characters), "multipleOf" of integers by a whole
 * number (at most 15 digits), and "pattern" (the decoded string's
 * characters, as a validator's re.search: rx.h).  Annotations (title,
 * description, default, examples, format, $schema, $id, $comment,
 * deprecated, readOnly, writeOnly) are ignored; any other keyword
 * (uniqueItems, contains, ...) is refused when the schema is compiled, so
 * a request finds out at once.  The top-level value is an object; or, with
 * ds_json_schema_regex, the whole text is held to a regex instead.
 *
 * Bounds that keep a model from running away: containers nest at most
 * DS_JSON_MAX_DEPTH deep, at most DS_JSON_MAX_WS whitespace bytes in a row,
 * nothing after the top-level value (the answer then ends: EOS).  Strings
 * take any UTF-8 but control characters (escapes as JSON has them); numbers
 * follow JSON's grammar.  Added tokens (markers) are never allowed.
 */
#ifndef DS_JSON_GUIDE_H
#define DS_JSON_GUIDE_H

#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "tokenizer/tokenizer.h"

#define DS_JSON_MAX_DEPTH 32
#define DS_JSON_MAX_WS 32
#define DS_JSON_MAX_MEMBERS 64 /* properties of one object schema, members of one enum */

typedef struct ds_json_schema ds_json_schema;
typedef struct ds_json_node ds_json_node;

/* A JSON Schema (see above), or NULL with ds_err naming the keyword and where
 * it is ("properties.unit: 'contains' is not supported"). */
ds_json_schema *ds_json_schema_compile(const cJSON *schema);
/* A choice: one of k literal texts (none a prefix of another), then a JSON
 * object held to that text's schema (schemas[i] NULL, or one outside the
 * subset: any object).  A forced tool call without a name: each tool's
 * name and what follows it in the call's format, then its parameters. */
ds_json_schema *ds_json_schema_choice(const char *const *texts, const cJSON *const *schemas, int k);
/* Text held to a regex as a whole (re.fullmatch; rx.h has the syntax): vLLM's
 * guided_regex.  The state completes (done) when nothing can follow; it may
 * stop earlier wherever ds_json_state_can_stop says. */
ds_json_schema *ds_json_schema_regex(const char *pattern);
void ds_json_schema_free(ds_json_schema *s);

typedef struct {
    const ds_json_node *node; /* the container's schema (NULL: any) */
    uint64_t seen;            /* object: the properties already given */
    int8_t cur;               /* object: the property whose value is read (-1: another key) */
    char kind;                /* '{' or '[' */
    uint32_t count;           /* the keys or items begun (minProperties / minItems and the max bounds) */
    uint64_t used;            /* array of uniqueItems: the enum members its items took */
} ds_json_frame;

typedef struct {
    uint8_t mode, sub, key, depth, ws, utf8, is_int;
    uint8_t u8lo, u8hi;        /* the next continuation byte's range after some lead bytes (0: 0x80-0xBF) */
    uint16_t pos;              /* key or enum: bytes matched */
    uint64_t cand;             /* key: the property names still matching; enum: the members */
    const char *lit;           /* the rest of true / false / null being read */
    const ds_json_node *want;  /* the schema of the value about to start (NULL: any) */
    uint32_t slen;             /* a string value: its characters so far (minLength / maxLength) */
    uint16_t hex;              /* a \u escape: the digits so far */
    uint8_t hi_sur;            /* the last character was a \u escape of a high surrogate (a low one joins it) */
    uint8_t nlen;              /* a number under bounds: its text so far in num */
    int32_t rq;                /* a string held to a pattern, or text to a regex: the DFA's state */
    uint32_t cp;               /* the code point being decoded (UTF-8) */
    char num[24];
    ds_json_frame stack[DS_JSON_MAX_DEPTH]; /* last: a copy takes only the open ones */
} ds_json_state;

/* schema NULL: any JSON object */
void ds_json_state_init(ds_json_state *s, const ds_json_schema *schema);
/* Feed n bytes: 0 when the text is still a prefix of an accepted document (s
 * moved on), -1 when not (s is then unspecified: feed a copy to try). */
int ds_json_state_feed(ds_json_state *s, const char *b, size_t n);
/* 1 once the top-level value is complete */
int ds_json_state_done(const ds_json_state *s);
/* 1 when the text may end here: done, or text held to a regex that matches it so far */
int ds_json_state_can_stop(const ds_json_state *s);

/* A vocabulary's token bytes, read once (V: the model's vocabulary, ≥ the tokenizer's). */
typedef struct ds_json_guide ds_json_guide;
ds_json_guide *ds_json_guide_new(const ds_tokenizer *t, int64_t V);
void ds_json_guide_free(ds_json_guide *g);
/* The ids that may come next from state s into out (V entries at most; by
 * first byte, then id); their count.  None once the document is complete. */
int64_t ds_json_guide_allowed(const ds_json_guide *g, const ds_json_state *s, int32_t *out);
/* The ids to refuse next (the complement of what is allowed) into out (V
 * entries at most), their count: once the document is complete, or at a
 * dead end the vocabulary cannot leave, everything but the n stop ids; where
 * the text may stop (ds_json_state_can_stop), never the stop ids. */
int64_t ds_json_guide_refused(const ds_json_guide *g, const ds_json_state *s, const int32_t *stop, int n, int32_t *out);
/* The vocabulary size, and the terms that make logits_adjust refuse an id:
 * pre -inf, rep 1, post 0 (V each, read-only) */
int64_t ds_json_guide_vocab(const ds_json_guide *g, const float **pre, const float **rep, const float **post);
/* the bytes the guide reads for id (NULL: a token it never allows) */
const char *ds_json_guide_token(const ds_json_guide *g, int32_t id, size_t *len);

#endif
