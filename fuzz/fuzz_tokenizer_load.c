/*
 * fuzz_tokenizer_load.c — libFuzzer target for the tokenizer.json loader:
 * any bytes either load (and then encode/decode without crashing and round
 * trip) or fail with a message.  `make fuzz` builds and runs it.
 */
#include "base/base.h"
#include "tokenizer/tokenizer.h"
#include "fuzz_msg.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ds_tokenizer *t = ds_tokenizer_load_mem((const char *)data, size, "fuzz.json");
    if (!t) {
        ds_fuzz_check_msg(ds_errmsg()); /* set, one line, input quoted */
        return 0;
    }
    const char *text = "Hello, world! 123 \xe4\xbd\xa0\xe5\xa5\xbd\n\n  x\xff";
    int32_t *ids = NULL;
    int64_t n = ds_tokenizer_encode(t, text, strlen(text), 1, &ids);
    if (n >= 0) {
        size_t len;
        char *back = ds_tokenizer_decode(t, ids, n, 0, &len);
        free(back);
    }
    free(ids);
    ds_tokenizer_free(t);
    return 0;
}
