/*
 * quote.c — quoted, escaped, bounded rendering of input text for one-line
 * error messages (see quote.h).
 */
#include "base/quote.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* length of the valid UTF-8 sequence at s[0..n) and its code point, or 0 */
static size_t utf8_seq(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned c = s[0];
    size_t k;
    uint32_t v;
    if (c < 0x80) { *cp = c; return 1; }
    if (c >= 0xC2 && c <= 0xDF) { k = 2; v = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { k = 3; v = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { k = 4; v = c & 0x07; }
    else return 0;
    if (k > n) return 0;
    for (size_t j = 1; j < k; j++) {
        if ((s[j] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[j] & 0x3F);
    }
    if ((k == 3 && (v < 0x800 || (v >= 0xD800 && v <= 0xDFFF))) || (k == 4 && (v < 0x10000 || v > 0x10FFFF))) return 0;
    *cp = v;
    return k;
}

/* code points that would break the line or hide text in a terminal */
static int invisible(uint32_t cp) {
    return (cp >= 0x80 && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029 || cp == 0x200E || cp == 0x200F ||
           (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069) || cp == 0xFEFF || cp == 0x061C;
}

static size_t quote_into(char *out, size_t cap, const char *s, size_t n, char q) {
    /* room: quote + text + "..." + quote + NUL */
    size_t lim = cap - 6, o = 0;
    const unsigned char *u = (const unsigned char *)s;
    if (q) out[o++] = q;
    size_t i = 0;
    while (i < n) {
        char piece[16];
        size_t pl, adv;
        uint32_t cp = 0;
        unsigned c = u[i];
        size_t k = utf8_seq(u + i, n - i, &cp);
        if (k == 0) {
            pl = (size_t)snprintf(piece, sizeof piece, "\\x%02X", c);
            adv = 1;
        } else if (k == 1) {
            adv = 1;
            if (c == '\n') pl = (size_t)snprintf(piece, sizeof piece, "\\n");
            else if (c == '\r') pl = (size_t)snprintf(piece, sizeof piece, "\\r");
            else if (c == '\t') pl = (size_t)snprintf(piece, sizeof piece, "\\t");
            else if (c == '\\' || (q && c == (unsigned char)q)) pl = (size_t)snprintf(piece, sizeof piece, "\\%c", c);
            else if (c < 0x20 || c == 0x7F) pl = (size_t)snprintf(piece, sizeof piece, "\\x%02X", c);
            else { piece[0] = (char)c; pl = 1; }
        } else if (invisible(cp)) {
            pl = (size_t)snprintf(piece, sizeof piece, "\\u%04X", (unsigned)cp);
            adv = k;
        } else {
            memcpy(piece, u + i, k);
            pl = k;
            adv = k;
        }
        if (o + pl > lim || o + pl > DS_QUOTE_MAX + 1) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        memcpy(out + o, piece, pl);
        o += pl;
        i += adv;
    }
    if (q) out[o++] = q;
    out[o] = 0;
    return o;
}

size_t ds_quote_into(char *out, size_t cap, const char *s, size_t n) { return quote_into(out, cap, s, n, '\''); }

static _Thread_local char g_slots[DS_QUOTE_SLOTS][DS_QUOTE_MAX + 24];
static _Thread_local unsigned g_next;

static const char *slot_quote(const char *s, size_t n, char q) {
    char *out = g_slots[g_next++ % DS_QUOTE_SLOTS];
    if (!s) {
        snprintf(out, sizeof g_slots[0], "(null)");
        return out;
    }
    quote_into(out, sizeof g_slots[0], s, n, q);
    return out;
}

const char *ds_quote_n(const char *s, size_t n) { return slot_quote(s, n, '\''); }
const char *ds_quote(const char *s) { return slot_quote(s, s ? strlen(s) : 0, '\''); }
const char *ds_dquote(const char *s) { return slot_quote(s, s ? strlen(s) : 0, '"'); }
const char *ds_esc(const char *s) { return slot_quote(s, s ? strlen(s) : 0, 0); }
