/*
 * guide_cut.h — the guide tests' checks: marked texts fed byte by byte to a
 * fresh state, a '|' marking the byte where the text must stop being taken;
 * a mask over a vocabulary against feeding each token from scratch.
 */
#ifndef DS_TEST_GUIDE_CUT_H
#define DS_TEST_GUIDE_CUT_H

#include "base/base.h"
#include "test.h"
#include "tokenizer/json_guide.h"

/* marked without '|': every byte taken, and (whole) the text complete */
static void guide_cut(const ds_json_schema *sc, const char *marked, int whole) {
    char txt[512];
    int at = -1, n = 0;
    for (const char *p = marked; *p && n < (int)sizeof txt - 1; p++) {
        if (*p == '|') at = n;
        else txt[n++] = *p;
    }
    txt[n] = 0;
    ds_json_state s;
    ds_json_state_init(&s, sc);
    int got = -1;
    for (int i = 0; i < n && got < 0; i++)
        if (ds_json_state_feed(&s, txt + i, 1)) got = i;
    const int complete = at >= 0 || !whole || ds_json_state_done(&s);
    CHECK_MSG(got == at && complete, "%s: refused at byte %d, want %d%s", ds_quote(marked), got, at, complete ? "" : " (not complete)");
}

/* the ids whose bytes, fed after pre from scratch, keep the text a prefix (*want of them) against
 * the mask on[] (1: allowed): the ids where they differ.  Added tokens: never (the guide has no bytes) */
static int64_t from_scratch(const ds_json_guide *g, const ds_json_schema *sc, const char *pre, const char *on, int64_t V,
                            int64_t *want) {
    char buf[256];
    int64_t differ = 0;
    *want = 0;
    for (int64_t i = 0; i < V; i++) {
        size_t len = 0;
        const char *b = ds_json_guide_token(g, (int32_t)i, &len);
        int cont = 0;
        if (b && strlen(pre) + len < sizeof buf) {
            memcpy(buf, pre, strlen(pre));
            memcpy(buf + strlen(pre), b, len);
            ds_json_state f;
            ds_json_state_init(&f, sc);
            cont = !ds_json_state_feed(&f, buf, strlen(pre) + len);
        }
        *want += cont;
        differ += cont != on[i];
    }
    return differ;
}

#endif
