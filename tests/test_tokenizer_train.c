/*
 * test_tokenizer_train.c — the BPE trainer against its two oracles: the CS336
 * reference (lexicographic tie-break: corpus.en, vocab 500, 243 merges, shared
 * data) and `tokenizers`' BpeTrainer (default tie-break: TinyShakespeare at
 * vocab 1000 and 8000, merges in tests/fixtures/tokenizer/train_*.json made by
 * tools/make_tokenizer_fixtures.py).  Also the CLI `dsv3 tokenizer train`.
 */
#include "test.h"
#include "base/base.h"
#include "tokenizer/tok_internal.h"

#include <cJSON.h>

/* CS336's worked example (docs §1.1): words low x5, lower x2, widest x3, newest x6
 * (one per line, so "\n" pieces hold no pairs) give exactly these 12 merges. */
TEST(train_cs336_worked_example) {
    ds_tok_sbuf b = {0};
    const char *words[] = {"low", "lower", "widest", "newest"};
    const int reps[] = {5, 2, 3, 6};
    for (int w = 0; w < 4; w++)
        for (int r = 0; r < reps[w]; r++) { ds_tok_sbuf_puts(&b, words[w]); ds_tok_sbuf_puts(&b, "\n"); }
    const char *sp[] = {"<|endoftext|>"};
    ds_bpe_train_opts o = {.vocab_size = 1 + 256 + 12, .special = sp, .nspecial = 1, .pretok = DS_PRETOK_GPT2,
                           .tie = DS_TIE_LEX, .split_lines = 0};
    const char *tp = b.p;
    ds_tokenizer *t = ds_bpe_train_texts(&tp, &b.n, 1, &o);
    CHECK_MSG(t != NULL, "%s", ds_errmsg());
    const char *exp[12][2] = {{"s", "t"}, {"e", "st"}, {"o", "w"}, {"l", "ow"}, {"w", "est"}, {"n", "e"},
                              {"ne", "west"}, {"w", "i"}, {"wi", "d"}, {"wid", "est"}, {"low", "e"}, {"lowe", "r"}};
    CHECK(t && ds_tokenizer_num_merges(t) == 12);
    for (int i = 0; t && i < 12; i++) {
        const char *a, *c;
        CHECK(ds_tokenizer_merge(t, i, &a, &c) == 0 && !strcmp(a, exp[i][0]) && !strcmp(c, exp[i][1]));
    }
    ds_tokenizer_free(t);
    free(b.p);
}

static char *read_shared(const char *rel, size_t *n) {
    const char *p = ds_test_shared(rel);
    return p ? ds_read_file(p, n) : NULL;
}

TEST(train_cs336_oracle_lexicographic) {
    size_t n, mn;
    char *text = read_shared("data/cs336_bpe_fixtures/corpus.en", &n);
    char *ref = read_shared("data/cs336_bpe_fixtures/train-bpe-reference-merges.txt", &mn);
    if (!text || !ref) { free(text); free(ref); SKIP("../shared/data/cs336_bpe_fixtures absent"); }
    const char *sp[] = {"<|endoftext|>"};
    ds_bpe_train_opts o = {.vocab_size = 500, .special = sp, .nspecial = 1, .pretok = DS_PRETOK_GPT2,
                           .tie = DS_TIE_LEX, .split_lines = 0};
    double t0 = ds_now();
    const char *tp = text;
    ds_tokenizer *t = ds_bpe_train_texts(&tp, &n, 1, &o);
    fprintf(stderr, "  trained corpus.en to vocab 500 in %.3f s\n", ds_now() - t0);
    CHECK_MSG(t != NULL, "%s", ds_errmsg());
    if (t) {
        CHECK(ds_tokenizer_vocab_size(t) == 500);
        int64_t i = 0;
        char *line = ref;
        while (line && *line) {
            char *nl = strchr(line, '\n');
            if (nl) *nl = 0;
            char *spc = strchr(line, ' ');
            const char *a, *b;
            if (spc && ds_tokenizer_merge(t, i, &a, &b) == 0) {
                *spc = 0;
                int ok = !strcmp(a, line) && !strcmp(b, spc + 1);
                CHECK_MSG(ok, "merge %lld: got '%s %s', expected '%s %s'", (long long)i, a, b, line, spc + 1);
                if (!ok) break;
            }
            i++;
            line = nl ? nl + 1 : NULL;
        }
        CHECK(i == 243);
        CHECK(ds_tokenizer_num_merges(t) == 243);
        CHECK(ds_tokenizer_token_to_id(t, "<|endoftext|>") == 0);
    }
    ds_tokenizer_free(t);
    free(text);
    free(ref);
}

/* Merges equal to BpeTrainer's, in order. */
static void check_hf_merges(const char *fixture, ds_pretok_kind pk) {
    size_t n, fn;
    char *text = read_shared("data/tinyshakespeare/input.txt", &n);
    if (!text) SKIP("../shared/data/tinyshakespeare absent");
    char *fj = ds_read_file(fixture, &fn);
    cJSON *f = fj ? cJSON_Parse(fj) : NULL;
    CHECK(f != NULL);
    if (!f) { free(text); free(fj); return; }
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(f, "special_tokens"), *x;
    const char *specials[8];
    int ns = 0;
    cJSON_ArrayForEach(x, sp) if (ns < 8) specials[ns++] = x->valuestring;
    ds_bpe_train_opts o = {.vocab_size = (int64_t)cJSON_GetObjectItemCaseSensitive(f, "vocab_size")->valuedouble,
                           .special = specials, .nspecial = ns, .pretok = pk, .tie = DS_TIE_HF, .split_lines = 1};
    double t0 = ds_now();
    const char *tp = text;
    ds_tokenizer *t = ds_bpe_train_texts(&tp, &n, 1, &o);
    fprintf(stderr, "  trained TinyShakespeare to vocab %lld in %.3f s\n", (long long)o.vocab_size, ds_now() - t0);
    CHECK_MSG(t != NULL, "%s", ds_errmsg());
    if (t) {
        const cJSON *merges = cJSON_GetObjectItemCaseSensitive(f, "merges");
        CHECK(ds_tokenizer_num_merges(t) == cJSON_GetArraySize(merges));
        CHECK(ds_tokenizer_vocab_size(t) == (int64_t)cJSON_GetObjectItemCaseSensitive(f, "nvocab")->valuedouble);
        int64_t i = 0;
        cJSON_ArrayForEach(x, merges) {
            const char *a, *b;
            if (ds_tokenizer_merge(t, i, &a, &b)) break;
            const char *ea = cJSON_GetArrayItem(x, 0)->valuestring, *eb = cJSON_GetArrayItem(x, 1)->valuestring;
            int ok = !strcmp(a, ea) && !strcmp(b, eb);
            CHECK_MSG(ok, "merge %lld: got '%s' '%s', expected '%s' '%s'", (long long)i, a, b, ea, eb);
            if (!ok) break;
            i++;
        }
    }
    ds_tokenizer_free(t);
    cJSON_Delete(f);
    free(fj);
    free(text);
}

TEST(train_hf_parity_ts1000_gpt2) { check_hf_merges("tests/fixtures/tokenizer/train_ts1000_gpt2.json", DS_PRETOK_GPT2); }
TEST(train_hf_parity_ts8000_deepseek) {
    check_hf_merges("tests/fixtures/tokenizer/train_ts8000_dsv3.json", DS_PRETOK_DEEPSEEK_V3);
}

/* CLI: train -> tokenizer.json that loads and round-trips; bad arguments fail cleanly. */
TEST(train_cli_round_trip) {
    const char *in = ds_test_shared("data/tinyshakespeare/input.txt");
    if (!in) SKIP("../shared/data/tinyshakespeare absent");
    const char *dir = ds_test_tmpdir();
    char out[4096];
    int rc = ds_test_sh(out, sizeof out, "$DSV3 --quiet tokenizer train --input %s --vocab-size 600 --special-tokens '<|endoftext|>' "
                                         "--pretokenizer llama3 --out %s/t.json", in, dir);
    CHECK_MSG(rc == 0, "%s", out);
    rc = ds_test_sh(out, sizeof out, "printf 'Hello world.\\nTo be, or not to be<|endoftext|>' | $DSV3 tokenizer encode --tokenizer %s/t.json "
                                     "> %s/ids && $DSV3 tokenizer decode --tokenizer %s/t.json %s/ids", dir, dir, dir, dir);
    CHECK_MSG(rc == 0 && !strcmp(out, "Hello world.\nTo be, or not to be<|endoftext|>"), "rc %d: '%s'", rc, out);
    rc = ds_test_sh(out, sizeof out, "$DSV3 tokenizer info --tokenizer %s/t.json", dir);
    CHECK(rc == 0 && strstr(out, "vocab_size: 600"));
    /* usage errors: exit 2, nothing written */
    rc = ds_test_sh(out, sizeof out, "$DSV3 tokenizer train --input %s --vocab-size 600 --pretokenizer nope --out %s/u.json", in, dir);
    CHECK(rc == 2 && strstr(out, "pretokenizer"));
    rc = ds_test_sh(out, sizeof out, "$DSV3 tokenizer train --input /no/such/file --vocab-size 600 --out %s/u.json", dir);
    CHECK(rc == 1 && strstr(out, "/no/such/file"));
    rc = ds_test_sh(out, sizeof out, "test -e %s/u.json", dir);
    CHECK(rc != 0);
}
