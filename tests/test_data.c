/* test_data.c — `dsv3 data prepare`: shards decode back to the input documents,
 * splits, JSONL, and bad input. */
#include "test.h"
#include "base/base.h"
#include "io/shard.h"
#include "tokenizer/tokenizer.h"

static const char *dsv3(void) { return getenv("DSV3") ? getenv("DSV3") : "./dsv3"; }

/* A small corpus and a tokenizer trained on it with the CLI. */
static int setup(char *tokpath, size_t cap) {
    const char *d = ds_test_tmpdir();
    char *corpus = ds_path_join(d, "corpus.txt");
    FILE *f = fopen(corpus, "w");
    for (int i = 0; i < 200; i++)
        fprintf(f, "Line %d: the quick brown fox, jumps over the lazy dog!\n\nSecond paragraph %d.\n\n", i, i * 7);
    fclose(f);
    snprintf(tokpath, cap, "%s/tok.json", d);
    int rc = ds_test_sh(NULL, 0, "%s --quiet tokenizer train --input %s --vocab-size 300 --special-tokens '<s>' '</s>' --out %s",
                        dsv3(), corpus, tokpath);
    free(corpus);
    return rc;
}

/* Concatenate the documents of a shard (dropping separators) and decode. */
static char *decode_shard(const ds_tokenizer *tok, const char *path, int64_t *ndocs) {
    ds_shard s;
    if (ds_shard_open(&s, path, 0) != 0) return NULL;
    int32_t *ids = malloc(s.n_tokens * sizeof *ids);
    int64_t n = 0;
    for (uint64_t i = 0; i < s.n_tokens; i++) {
        int32_t t = ds_shard_token(&s, i);
        if (t != s.sep_id) ids[n++] = t;
    }
    *ndocs = (int64_t)s.n_docs;
    size_t len;
    char *txt = ds_tokenizer_decode(tok, ids, n, 0, &len);
    free(ids);
    ds_shard_close(&s);
    return txt;
}

TEST(data_prepare_blank_docs_roundtrip) {
    char tokpath[512], out[600], cmd_out[4096];
    CHECK(setup(tokpath, sizeof tokpath) == 0);
    TEST_RETURN_IF_FAILED();
    snprintf(out, sizeof out, "%s/shards", ds_test_tmpdir());
    int rc = ds_test_sh(cmd_out, sizeof cmd_out, "%s --quiet data prepare --tokenizer %s --input %s/corpus.txt --out %s --docs blank --val-fraction 0.1",
                        dsv3(), tokpath, ds_test_tmpdir(), out);
    CHECK_MSG(rc == 0, "%s", cmd_out);
    TEST_RETURN_IF_FAILED();
    ds_tokenizer *tok = ds_tokenizer_load(tokpath);
    CHECK(tok != NULL);
    char p_train[700], p_val[700];
    snprintf(p_train, sizeof p_train, "%s/train_000.bin", out);
    snprintf(p_val, sizeof p_val, "%s/val_000.bin", out);
    int64_t nt = 0, nv = 0;
    char *tr = decode_shard(tok, p_train, &nt), *va = decode_shard(tok, p_val, &nv);
    CHECK(tr && va);
    TEST_RETURN_IF_FAILED();
    /* 400 documents in all; about 10% went to validation */
    CHECK(nt + nv == 400);
    CHECK(nv > 15 && nv < 70);
    /* every paragraph text appears in exactly one split */
    int found = 0;
    for (int i = 0; i < 200; i++) {
        char a[128];
        snprintf(a, sizeof a, "Line %d: the quick brown fox, jumps over the lazy dog!", i);
        int in_t = strstr(tr, a) != NULL, in_v = strstr(va, a) != NULL;
        CHECK(in_t + in_v == 1);
        found += in_t + in_v;
    }
    CHECK(found == 200);
    /* the tokenizer was copied, and its hash is what the shards carry */
    char tj[700];
    snprintf(tj, sizeof tj, "%s/tokenizer.json", out);
    size_t len;
    char *bytes = ds_read_file(tj, &len);
    CHECK(bytes != NULL);
    ds_shard s;
    CHECK(ds_shard_open(&s, p_train, ds_hash64(bytes, len, DS_HASH64_INIT)) == 0);
    ds_shard_close(&s);
    free(bytes); free(tr); free(va);
    ds_tokenizer_free(tok);
}

TEST(data_prepare_jsonl_and_errors) {
    char tokpath[512], buf[4096];
    CHECK(setup(tokpath, sizeof tokpath) == 0);
    TEST_RETURN_IF_FAILED();
    const char *d = ds_test_tmpdir();
    char *jl = ds_path_join(d, "docs.jsonl");
    FILE *f = fopen(jl, "w");
    for (int i = 0; i < 50; i++) fprintf(f, "{\"text\": \"document number %d\\nwith a second line\", \"id\": %d}\n", i, i);
    fclose(f);
    int rc = ds_test_sh(buf, sizeof buf, "%s --quiet data prepare --tokenizer %s --input %s --out %s/j --val-fraction 0", dsv3(), tokpath, jl, d);
    CHECK_MSG(rc == 0, "%s", buf);
    ds_tokenizer *tok = ds_tokenizer_load(tokpath);
    char p[700];
    snprintf(p, sizeof p, "%s/j/train_000.bin", d);
    int64_t nd = 0;
    char *txt = tok ? decode_shard(tok, p, &nd) : NULL;
    CHECK(txt && nd == 50 && strstr(txt, "document number 49\nwith a second line"));
    free(txt);
    ds_tokenizer_free(tok);
    /* a malformed line: the error names the file and line */
    f = fopen(jl, "a");
    fprintf(f, "{\"text\": \"ok\"}\n{not json\n");
    fclose(f);
    rc = ds_test_sh(buf, sizeof buf, "%s data prepare --tokenizer %s --input %s --out %s/bad", dsv3(), tokpath, jl, d);
    CHECK(rc == 1);
    CHECK_MSG(strstr(buf, "docs.jsonl:52: malformed JSON") != NULL, "%s", buf);
    snprintf(p, sizeof p, "%s/bad/train_000.bin", d);
    CHECK(!ds_file_exists(p)); /* nothing partial written */
    /* missing input, missing tokenizer, bad option */
    rc = ds_test_sh(buf, sizeof buf, "%s data prepare --tokenizer %s --input /nonexistent.txt --out %s/x", dsv3(), tokpath, d);
    CHECK(rc == 1 && strstr(buf, "/nonexistent.txt"));
    rc = ds_test_sh(buf, sizeof buf, "%s data prepare --tokenizer /nonexistent/tok.json --input %s --out %s/x", dsv3(), jl, d);
    CHECK(rc == 1 && strstr(buf, "/nonexistent/tok.json"));
    rc = ds_test_sh(buf, sizeof buf, "%s data prepare --tokenizer %s --input %s --out %s/x --docs nope", dsv3(), tokpath, jl, d);
    CHECK(rc == 2);
    free(jl);
}

/* The bytes of every file of a flat folder, concatenated with their names
 * (for "untouched" comparisons). */
static char *folder_bytes(const char *dir) {
    char buf[256];
    char *listing = NULL;
    size_t cap = 0;
    FILE *m = open_memstream(&listing, &cap);
    snprintf(buf, sizeof buf, "ls -1 %s", dir);
    FILE *ls = popen(buf, "r");
    char name[256];
    while (ls && fgets(name, sizeof name, ls)) {
        name[strcspn(name, "\n")] = 0;
        char *p = ds_path_join(dir, name);
        size_t len = 0;
        char *b = ds_read_file(p, &len);
        fprintf(m, "%s %zu\n", name, len);
        if (b) fwrite(b, 1, len, m);
        free(b);
        free(p);
    }
    if (ls) pclose(ls);
    fclose(m);
    return listing;
}

/* Entries of tmpdir whose name starts with prefix (leftover temporaries). */
static int count_prefixed(const char *dir, const char *prefix) {
    char out[4096];
    ds_test_sh(out, sizeof out, "ls -1a %s | grep -c '^%s' || true", dir, prefix);
    return atoi(out);
}

TEST(data_prepare_failure_leaves_existing_folder_untouched) {
    char tokpath[512], buf[4096];
    CHECK(setup(tokpath, sizeof tokpath) == 0);
    TEST_RETURN_IF_FAILED();
    const char *d = ds_test_tmpdir();
    char out[600], other_tok[600];
    snprintf(out, sizeof out, "%s/data", d);
    int rc = ds_test_sh(buf, sizeof buf, "%s --quiet data prepare --tokenizer %s --input %s/corpus.txt --out %s --docs blank",
                        dsv3(), tokpath, d, out);
    CHECK_MSG(rc == 0, "%s", buf);
    TEST_RETURN_IF_FAILED();
    char *before = folder_bytes(out);
    CHECK(before && strstr(before, "tokenizer.json ") && strstr(before, "train_000.bin "));
    /* a second tokenizer (different vocabulary), so a replaced folder would differ */
    snprintf(other_tok, sizeof other_tok, "%s/tok2.json", d);
    rc = ds_test_sh(buf, sizeof buf, "%s --quiet tokenizer train --input %s/corpus.txt --vocab-size 280 --special-tokens '<s>' --out %s",
                    dsv3(), d, other_tok);
    CHECK_MSG(rc == 0, "%s", buf);
    char *bad = ds_path_join(d, "bad.jsonl");
    CHECK(ds_write_file_atomic(bad, "{\"text\": \"fine\"}\n{not json\n", 27) == 0);
    /* 1. an existing data folder without --force: refused before anything is written */
    rc = ds_test_sh(buf, sizeof buf, "%s data prepare --tokenizer %s --input %s/corpus.txt --out %s", dsv3(), other_tok, d, out);
    CHECK_MSG(rc == 1 && strstr(buf, "already holds a data folder") && strstr(buf, "--force"), "%d %s", rc, buf);
    /* 2. --force, but an input fails halfway: the old folder stays */
    rc = ds_test_sh(buf, sizeof buf, "%s data prepare --tokenizer %s --input %s/corpus.txt %s --out %s --force", dsv3(),
                    other_tok, d, bad, out);
    CHECK_MSG(rc == 1 && strstr(buf, "bad.jsonl:2: malformed JSON"), "%d %s", rc, buf);
    /* 3. an unreadable / missing input, a bad --sep: checked before writing */
    rc = ds_test_sh(buf, sizeof buf, "%s data prepare --tokenizer %s --input %s/nope.txt --out %s --force", dsv3(), other_tok, d, out);
    CHECK(rc == 1 && strstr(buf, "nope.txt"));
    rc = ds_test_sh(buf, sizeof buf, "%s data prepare --tokenizer %s --input %s/corpus.txt --out %s --force --sep '<zz>'", dsv3(),
                    other_tok, d, out);
    CHECK(rc == 1 && strstr(buf, "--sep '<zz>' is not a token"));
    char *after = folder_bytes(out);
    CHECK_MSG(after && !strcmp(before, after), "the data folder changed");
    CHECK(count_prefixed(d, "data.tmp-") == 0 && count_prefixed(d, "data.old-") == 0);
    /* 4. a failed run into a new folder leaves no folder */
    rc = ds_test_sh(buf, sizeof buf, "%s data prepare --tokenizer %s --input %s --out %s/fresh", dsv3(), tokpath, bad, d);
    CHECK(rc == 1);
    char fresh[700];
    snprintf(fresh, sizeof fresh, "%s/fresh", d);
    CHECK(!ds_file_exists(fresh) && count_prefixed(d, "fresh.tmp-") == 0);
    /* 5. a folder with other files is never written into, even with --force */
    char mine[700];
    snprintf(mine, sizeof mine, "%s/mine", d);
    ds_mkdir_p(mine);
    char *note = ds_path_join(mine, "notes.txt");
    CHECK(ds_write_file_atomic(note, "keep", 4) == 0);
    rc = ds_test_sh(buf, sizeof buf, "%s data prepare --tokenizer %s --input %s/corpus.txt --out %s --force", dsv3(), tokpath, d, mine);
    CHECK_MSG(rc == 1 && strstr(buf, "holds files other than a data folder's"), "%s", buf);
    /* 6. --force that succeeds replaces the folder whole: the new tokenizer, no old shards */
    rc = ds_test_sh(buf, sizeof buf, "%s --quiet data prepare --tokenizer %s --input %s/corpus.txt --out %s --force --shard-tokens 1024",
                    dsv3(), other_tok, d, out);
    CHECK_MSG(rc == 0, "%s", buf);
    char *t2 = ds_path_join(out, "tokenizer.json");
    size_t l1 = 0, l2 = 0;
    char *a = ds_read_file(t2, &l1), *b = ds_read_file(other_tok, &l2);
    CHECK(a && b && l1 == l2 && !memcmp(a, b, l1));
    CHECK(count_prefixed(d, "data.tmp-") == 0 && count_prefixed(d, "data.old-") == 0);
    free(a); free(b); free(t2); free(note); free(bad); free(before); free(after);
}

/* A tokenizer with BOS and EOS (tokenizer train's default): every document is
 * written as BOS ... EOS, so a model trained on the shards learns to end a
 * document with EOS (and generate stops there); with --sep only the
 * separator precedes each document, as before. */
TEST(data_prepare_documents_end_with_eos) {
    char tokpath[512], out[600], cmd_out[4096];
    CHECK(setup(tokpath, sizeof tokpath) == 0);
    TEST_RETURN_IF_FAILED();
    ds_tokenizer *tok = ds_tokenizer_load(tokpath);
    CHECK(tok != NULL);
    TEST_RETURN_IF_FAILED();
    int32_t bos = ds_tokenizer_bos_id(tok), eos = ds_tokenizer_eos_id(tok);
    CHECK(bos >= 0 && eos >= 0 && bos != eos);
    for (int with_sep = 0; with_sep < 2; with_sep++) {
        snprintf(out, sizeof out, "%s/shards%d", ds_test_tmpdir(), with_sep);
        int rc = ds_test_sh(cmd_out, sizeof cmd_out,
                            "%s --quiet data prepare --tokenizer %s --input %s/corpus.txt --out %s --docs blank "
                            "--val-fraction 0 %s",
                            dsv3(), tokpath, ds_test_tmpdir(), out, with_sep ? "--sep '</s>'" : "");
        CHECK_MSG(rc == 0, "%s", cmd_out);
        TEST_RETURN_IF_FAILED();
        char p[700];
        snprintf(p, sizeof p, "%s/train_000.bin", out);
        ds_shard s;
        CHECK(ds_shard_open(&s, p, 0) == 0);
        TEST_RETURN_IF_FAILED();
        int64_t nb = 0, ne = 0, bad = 0;
        int32_t sep = ds_tokenizer_token_to_id(tok, "</s>");
        for (uint64_t i = 0; i < s.n_tokens; i++) {
            int32_t t = ds_shard_token(&s, i);
            if (!with_sep) {
                nb += t == bos, ne += t == eos;
                /* BOS opens the shard and follows each EOS; EOS closes it */
                if (t == bos && i > 0 && ds_shard_token(&s, i - 1) != eos) bad++;
                if (t == eos && i + 1 < s.n_tokens && ds_shard_token(&s, i + 1) != bos) bad++;
            } else {
                nb += t == sep, ne += t == eos;
            }
        }
        CHECK(s.n_docs == 400);
        if (!with_sep) {
            CHECK(ds_shard_token(&s, 0) == bos && ds_shard_token(&s, s.n_tokens - 1) == eos);
            CHECK_MSG(nb == 400 && ne == 400 && bad == 0, "BOS %lld EOS %lld misplaced %lld", (long long)nb,
                      (long long)ne, (long long)bad);
        } else {
            CHECK_MSG(nb == 400 && ne == 0, "sep %lld EOS %lld", (long long)nb, (long long)ne);
        }
        ds_shard_close(&s);
    }
    ds_tokenizer_free(tok);
}
