/* fuzz_config.c — libFuzzer target for the config.json parser.  Properties:
 * no crash; an accepted config serializes (ds_config_to_json) to text that
 * parses back to the same JSON text (write -> read -> write is stable).
 *   make fuzz FUZZ_SECONDS=20      (seeds in fuzz/seeds/fuzz_config) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "model/config.h"
#include "fuzz_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;
    ds_config c;
    if (ds_config_parse(&c, text, "config.json") == 0) {
        char *a = ds_config_to_json(&c);
        ds_config r;
        if (ds_config_parse(&r, a, "again.json") != 0) abort();
        char *b = ds_config_to_json(&r);
        if (strcmp(a, b) != 0) abort();
        for (int64_t l = 0; l < 4; l++) (void)ds_config_layer_is_moe(&c, l);
        free(a);
        free(b);
    } else {
        if (strncmp(ds_errmsg(), "config.json: ", 13) != 0) abort(); /* every message names the file */
        ds_fuzz_check_msg(ds_errmsg());
    }
    free(text);
    return 0;
}
