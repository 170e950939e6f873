/*
 * json_guide.h — constrained decoding to one JSON object (OpenAI's
 * response_format {"type": "json_object"}; the arguments of a forced tool
 * call): a byte-level pushdown automaton for RFC 8259 text whose top-level
 * value is an object, and, for a vocabulary, the tokens whose bytes keep the
 * text so far a prefix of such an object.
 *
 * The automaton accepts exactly the prefixes of JSON objects, with three
 * bounds that keep a model from running away: containers nest at most
 * DS_JSON_MAX_DEPTH deep, at most DS_JSON_MAX_WS whitespace bytes in a row,
 * and nothing after the closing brace (the answer then ends: EOS).  Strings
 * take any UTF-8 but control characters (escapes as JSON has them); numbers
 * follow JSON's grammar (no leading zeros, no bare '.', an exponent needs a
 * digit).  Special (added) tokens are never allowed inside the object.
 */
#ifndef DS_JSON_GUIDE_H
#define DS_JSON_GUIDE_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer/tokenizer.h"

#define DS_JSON_MAX_DEPTH 32
#define DS_JSON_MAX_WS 32

typedef struct {
    uint8_t mode, sub, key, depth, ws, utf8;
    const char *lit;            /* the rest of true / false / null being read */
    char stack[DS_JSON_MAX_DEPTH]; /* '{' or '[' per open container */
} ds_json_state;

void ds_json_state_init(ds_json_state *s);
/* Feed n bytes: 0 when the text is still a prefix of a JSON object (s moved
 * on), -1 when not (s is then unspecified: feed a copy to try). */
int ds_json_state_feed(ds_json_state *s, const char *b, size_t n);
/* 1 once the top-level object is closed */
int ds_json_state_done(const ds_json_state *s);

/* A vocabulary's token bytes, read once (V: the model's vocabulary, ≥ the tokenizer's). */
typedef struct ds_json_guide ds_json_guide;
ds_json_guide *ds_json_guide_new(const ds_tokenizer *t, int64_t V);
void ds_json_guide_free(ds_json_guide *g);
/* The ids that may come next from state s into out (V entries at most; by
 * first byte, then id); their count.  None while the object is open but a special token;
 * once it is closed, none (the caller allows its stop ids). */
int64_t ds_json_guide_allowed(const ds_json_guide *g, const ds_json_state *s, int32_t *out);
/* The ids to refuse next (the complement of what is allowed) into out (V
 * entries at most), their count: once the object is closed, or at a dead end
 * the vocabulary cannot leave, everything but the n stop ids. */
int64_t ds_json_guide_refused(const ds_json_guide *g, const ds_json_state *s, const int32_t *stop, int n, int32_t *out);
/* The vocabulary size, and the terms that make logits_adjust refuse an id:
 * pre -inf, rep 1, post 0 (V each, read-only) */
int64_t ds_json_guide_vocab(const ds_json_guide *g, const float **pre, const float **rep, const float **post);
/* the bytes the guide reads for id (NULL: a token it never allows) */
const char *ds_json_guide_token(const ds_json_guide *g, int32_t id, size_t *len);

#endif
