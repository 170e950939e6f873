/* fuzz_regex.c — libFuzzer target for the regex guide (src/tokenizer/rx.c).
 * Input: a pattern, a NUL byte, then text.  Properties: no crash; a refused
 * pattern's message starts "regex: " and passes ds_fuzz_check_msg; a compiled
 * one walks the text's bytes (as code points) without leaving its states,
 * every state reached can still end a match (the DFA keeps no dead state),
 * and the same pattern held to a length range agrees with the plain DFA on
 * every step it takes.
 *   make fuzz FUZZ_TARGETS=fuzz_regex FUZZ_SECONDS=20 (seeds in fuzz/seeds/fuzz_regex) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "fuzz_msg.h"
#include "tokenizer/rx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *z = memchr(data, 0, size);
    const size_t pl = z ? (size_t)(z - data) : size;
    if (pl > 256) return 0; /* long patterns only take time */
    char *pat = malloc(pl + 1);
    memcpy(pat, data, pl);
    pat[pl] = 0;
    const uint8_t *text = z ? z + 1 : data + size;
    const size_t tn = (size_t)(data + size - text);
    for (int mode = 0; mode < 2; mode++) {
        ds_rx *r = ds_rx_compile(pat, mode), *b = r ? ds_rx_compile(pat, mode) : NULL;
        if (!r) {
            if (strncmp(ds_errmsg(), "regex: ", 7) != 0) abort();
            ds_fuzz_check_msg(ds_errmsg());
            continue;
        }
        if (!b) abort(); /* the same pattern compiles the same way */
        const int64_t lo = tn ? text[0] % 5 : -1, hi = tn > 1 ? lo + text[1] % 7 : -1;
        const int bounded = ds_rx_lengths(b, lo, hi) == 0;
        int32_t q = ds_rx_start(r), qb = ds_rx_start(b);
        if (!ds_rx_ok(r, q, 0)) abort();
        for (size_t i = 0; i < tn && q >= 0; i++) {
            const uint32_t c = text[i] < 0xF0 ? text[i] : 0x80 + (uint32_t)text[i] * 977; /* some past U+00FF */
            const int any = ds_rx_any(r, q, c, c, (int64_t)i);
            q = ds_rx_step(r, q, c);
            if ((q >= 0) != any) abort(); /* a step exists iff ds_rx_any says one leads on */
            if (bounded && qb >= 0) {
                const int32_t nb = ds_rx_step(b, qb, c);
                if (nb != q) abort(); /* the length table does not change the DFA */
                qb = nb >= 0 && ds_rx_ok(b, nb, (int64_t)i + 1) ? nb : -1;
            }
        }
        if (q >= 0 && ds_rx_final(r, q) && !ds_rx_accepts(r, q, 0)) abort(); /* a state with nothing after it ends a match */
        ds_rx_free(r), ds_rx_free(b);
    }
    free(pat);
    return 0;
}
