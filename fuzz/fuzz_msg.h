/*
 * fuzz_msg.h — the property every fuzz target checks of an error message: set,
 * one line, and free of raw control bytes (C0, DEL, C1, U+2028/U+2029) and of
 * invalid UTF-8, i.e. every echoed input went through ds_quote (base/quote.h).
 * A violation aborts, which libFuzzer reports as a crash.
 */
#ifndef DS_FUZZ_MSG_H
#define DS_FUZZ_MSG_H

#include <stdio.h>
#include <stdlib.h>

static void ds_fuzz_check_msg(const char *m) {
    const unsigned char *s = (const unsigned char *)m;
    if (!s[0]) { fprintf(stderr, "fuzz: empty error message\n"); abort(); }
    for (size_t i = 0; s[i];) {
        unsigned c = s[i], k;
        unsigned cp;
        if (c < 0x20 || c == 0x7F) goto bad;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) { k = 2; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { k = 3; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { k = 4; cp = c & 0x07; }
        else goto bad;
        for (unsigned j = 1; j < k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) goto bad;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if ((k == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (k == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
            goto bad;
        if ((cp >= 0x80 && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029) goto bad;
        i += k;
    }
    return;
bad:
    fprintf(stderr, "fuzz: error message with a raw control byte or invalid UTF-8:\n");
    for (const unsigned char *p = s; *p; p++) fprintf(stderr, (*p < 0x20 || *p >= 0x7F) ? "\\x%02X" : "%c", *p);
    fputc('\n', stderr);
    abort();
}

#endif
