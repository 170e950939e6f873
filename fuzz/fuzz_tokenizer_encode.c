/*
 * fuzz_tokenizer_encode.c — libFuzzer target for encode on arbitrary bytes
 * (invalid UTF-8 included) with the Llama-3-style fixture tokenizer, or
 * DeepSeek-V3's when ../shared is present: encode must not fail or crash, and
 * decode(encode(x)) must give x back byte for byte (also streamed).  NFC
 * must not crash and must be idempotent.
 */
#include "base/base.h"
#include "tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>

static ds_tokenizer *g_tok;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_tok) {
        g_tok = ds_tokenizer_load("../shared/data/deepseek_v3_tokenizer/tokenizer.json");
        if (!g_tok) g_tok = ds_tokenizer_load("tests/fixtures/tokenizer/llama3_style.json");
        if (!g_tok) abort();
    }
    int allow = size > 0 && (data[0] & 1);
    ds_ids v = {0};
    ds_encode_opts o = {.allow_special = allow, .split_punct_nl_p = size > 1 && (data[1] & 1) ? 0.5 : 0, .seed = size};
    if (ds_tokenizer_encode_ex(g_tok, (const char *)data, size, &o, &v) < 0) abort();
    size_t len;
    char *back = ds_tokenizer_decode(g_tok, v.ids, v.n, 0, &len);
    if (!back || len != size || memcmp(back, data, size)) abort();
    ds_decode_stream s;
    ds_decode_stream_init(&s, g_tok, 0);
    size_t at = 0;
    for (int64_t i = 0; i < v.n; i++) {
        size_t l;
        const char *p = ds_decode_stream_next(&s, v.ids[i], &l);
        if (!p || at + l > size || memcmp(p, data + at, l)) abort();
        at += l;
    }
    size_t l;
    const char *p = ds_decode_stream_flush(&s, &l);
    if (at + l != size || memcmp(p, data + at, l)) abort();
    free(back);
    ds_ids_free(&v);
    size_t n1, n2;
    char *a = ds_tok_nfc((const char *)data, size, &n1);
    char *b = ds_tok_nfc(a, n1, &n2);
    if (n1 != n2 || memcmp(a, b, n1)) abort();
    free(a);
    free(b);
    return 0;
}
