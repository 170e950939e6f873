/* fuzz_json_schema.c — libFuzzer target for the JSON guide's schemas and
 * automaton (src/tokenizer/json_guide.c).  Input: a JSON Schema, a NUL byte,
 * then text.  Properties: no crash; a schema that is not JSON is skipped, a
 * refused one's message passes ds_fuzz_check_msg; a compiled one takes the
 * text byte by byte until it refuses one, and then: fed the taken prefix at
 * once, a fresh state ends where the byte-by-byte one did; a state that is
 * done takes nothing but whitespace; and a done prefix is one JSON document
 * (cJSON parses it) whose top-level value is an object, as the guide promises.
 *   make fuzz FUZZ_TARGETS=fuzz_json_schema FUZZ_SECONDS=20 (seeds in fuzz/seeds/fuzz_json_schema) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "base/base.h"
#include "fuzz_msg.h"
#include "tokenizer/json_guide.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *z = memchr(data, 0, size);
    if (!z || (size_t)(z - data) > 2048) return 0;
    cJSON *j = cJSON_ParseWithLength((const char *)data, (size_t)(z - data));
    if (!j) return 0;
    ds_json_schema *sc = ds_json_schema_compile(j);
    cJSON_Delete(j);
    if (!sc) {
        ds_fuzz_check_msg(ds_errmsg());
        return 0;
    }
    const char *text = (const char *)z + 1;
    const size_t tn = (size_t)(data + size - (const uint8_t *)text);
    ds_json_state s, t;
    ds_json_state_init(&s, sc);
    size_t n = 0;
    while (n < tn && !ds_json_state_feed(&s, text + n, 1)) n++;
    ds_json_state_init(&t, sc);
    if (ds_json_state_feed(&t, text, n)) abort();                                 /* the prefix at once */
    if (ds_json_state_done(&t) != ds_json_state_done(&s)) abort();               /* ends where it did */
    if (n < tn && !ds_json_state_feed(&t, text + n, 1)) abort();                 /* and refuses the same byte */
    if (ds_json_state_done(&s)) {
        ds_json_state u = s;
        if (!ds_json_state_feed(&u, "x", 1) || !ds_json_state_feed(&u, "{", 1)) abort(); /* nothing after */
        cJSON *doc = cJSON_ParseWithLength(text, n);
        if (!cJSON_IsObject(doc)) abort();
        cJSON_Delete(doc);
    }
    ds_json_schema_free(sc);
    return 0;
}
