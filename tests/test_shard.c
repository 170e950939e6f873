/* test_shard.c — token shard format and the training loader. */
#include "test.h"
#include "base/base.h"
#include "io/shard.h"
#include "train/loader.h"

#include <unistd.h>

/* Writes DIR/<split>_000.bin with ndocs documents of doclen tokens: doc d has
 * tokens 1000*d + i, so every token says where it came from. */
static char *write_shard(const char *split, int ndocs, int doclen, uint32_t vocab, uint64_t hash) {
    char name[64];
    snprintf(name, sizeof name, "%s_000.bin", split);
    char *p = ds_path_join(ds_test_tmpdir(), name);
    ds_shard_writer w;
    CHECK(ds_shard_writer_open(&w, p, vocab, 0, hash) == 0);
    int32_t *ids = malloc(doclen * sizeof *ids);
    for (int d = 0; d < ndocs; d++) {
        for (int i = 0; i < doclen; i++) ids[i] = 1 + (1000 * d + i) % (int)(vocab - 1);
        CHECK(ds_shard_writer_doc(&w, ids, doclen) == 0);
    }
    free(ids);
    CHECK(ds_shard_writer_commit(&w) == 0);
    return p;
}

TEST(shard_roundtrip_and_width) {
    char *p = write_shard("train", 3, 50, 70000, 1234);
    ds_shard s;
    CHECK(ds_shard_open(&s, p, 1234) == 0);
    TEST_RETURN_IF_FAILED();
    CHECK(s.width == 4 && s.n_tokens == 153 && s.n_docs == 3 && s.sep_id == 0);
    CHECK(ds_shard_token(&s, 0) == 0);              /* separator before doc 0 */
    CHECK(ds_shard_token(&s, 1) == 1);              /* doc 0 token 0 */
    CHECK(ds_shard_token(&s, 52) == 1 + 1000);      /* doc 1 token 0 after its separator */
    ds_shard_close(&s);
    free(p);
    p = write_shard("val", 1, 10, 300, 5);
    CHECK(ds_shard_open(&s, p, 0) == 0 && s.width == 2 && s.n_tokens == 11);
    ds_shard_close(&s);
    free(p);
}

TEST(shard_bad_inputs) {
    char *p = write_shard("train", 2, 40, 4096, 77);
    ds_shard s;
    /* another tokenizer */
    CHECK(ds_shard_open(&s, p, 78) != 0);
    CHECK(strstr(ds_errmsg(), "another tokenizer") != NULL);
    /* truncated: drop the last byte */
    CHECK(truncate(p, DS_SHARD_HEADER + 81 * 2 - 1) == 0);
    CHECK(ds_shard_open(&s, p, 0) != 0);
    CHECK(strstr(ds_errmsg(), "truncated") != NULL && strstr(ds_errmsg(), p) != NULL);
    /* wrong magic */
    char *q = ds_path_join(ds_test_tmpdir(), "junk.bin");
    char junk[100] = "NOTASHARD";
    CHECK(ds_write_file_atomic(q, junk, sizeof junk) == 0);
    CHECK(ds_shard_open(&s, q, 0) != 0);
    CHECK(strstr(ds_errmsg(), "bad magic") != NULL);
    /* too short for a header */
    CHECK(ds_write_file_atomic(q, junk, 10) == 0);
    CHECK(ds_shard_open(&s, q, 0) != 0);
    CHECK(strstr(ds_errmsg(), "truncated") != NULL);
    /* missing file */
    CHECK(ds_shard_open(&s, "/nonexistent/train_000.bin", 0) != 0);
    /* token outside the vocabulary refuses to be written, and nothing is left */
    char *r = ds_path_join(ds_test_tmpdir(), "bad_000.bin");
    ds_shard_writer w;
    CHECK(ds_shard_writer_open(&w, r, 100, 0, 1) == 0);
    int32_t bad[2] = {5, 100};
    CHECK(ds_shard_writer_doc(&w, bad, 2) != 0);
    CHECK(ds_shard_writer_commit(&w) != 0);
    CHECK(!ds_file_exists(r));
    free(p); free(q); free(r);
}

TEST(loader_deterministic_resumable_sharded) {
    write_shard("train", 20, 63, 50000, 9);   /* 20*64 = 1280 tokens */
    const int64_t B = 4, T = 16;
    ds_loader a, b;
    CHECK(ds_loader_open(&a, ds_test_tmpdir(), "train", B, T, 42, 1, 0, 1, 9) == 0);
    CHECK(ds_loader_open(&b, ds_test_tmpdir(), "train", B, T, 42, 1, 0, 1, 9) == 0);
    TEST_RETURN_IF_FAILED();
    CHECK(a.nwin == (1280 - 1) / 16 && a.nbatches == a.nwin / B);
    int32_t x[4 * 17], y[4 * 17];
    /* one epoch: every window exactly once, each window is contiguous tokens */
    int64_t *seen = calloc(a.nwin, sizeof *seen);
    ds_shard *s = &a.shards[0];
    for (int64_t i = 0; i < a.nbatches; i++) {
        CHECK(ds_loader_next(&a, x) == 0);
        for (int r = 0; r < B; r++) {
            /* find the window by its first token's position: tokens are unique per position */
            int64_t found = -1;
            for (int64_t w = 0; w < a.nwin; w++) {
                int ok = 1;
                for (int t = 0; t <= T && ok; t++) ok = ds_shard_token(s, w * T + t) == x[r * 17 + t];
                if (ok) { found = w; break; }
            }
            CHECK(found >= 0);
            if (found >= 0) seen[found]++;
        }
    }
    int64_t covered = 0;
    for (int64_t w = 0; w < a.nwin; w++) { CHECK(seen[w] <= 1); covered += seen[w]; }
    CHECK(covered == a.nbatches * B);
    /* shuffled: epoch 0 is not file order */
    CHECK(ds_loader_next(&b, y) == 0);
    int in_order = 1;
    for (int t = 0; t <= T; t++) in_order &= y[t] == ds_shard_token(s, t);
    CHECK(!in_order || y[17] != ds_shard_token(s, T));
    /* resume: a fresh loader seeked to a position gives the same next batch */
    for (int i = 0; i < 7; i++) ds_loader_next(&b, y);
    ds_loader c;
    CHECK(ds_loader_open(&c, ds_test_tmpdir(), "train", B, T, 42, 1, 0, 1, 9) == 0);
    ds_loader_seek(&c, ds_loader_tell(&b));
    ds_loader_next(&b, y);
    ds_loader_next(&c, x);
    CHECK(memcmp(x, y, sizeof x) == 0);
    /* two ranks split the global batches: rank 1's first batch is global batch 1 */
    ds_loader r0, r1;
    CHECK(ds_loader_open(&r0, ds_test_tmpdir(), "train", B, T, 42, 1, 0, 1, 9) == 0);
    CHECK(ds_loader_open(&r1, ds_test_tmpdir(), "train", B, T, 42, 1, 1, 2, 9) == 0);
    ds_loader_next(&r0, x);
    ds_loader_next(&r0, x);
    ds_loader_next(&r1, y);
    CHECK(memcmp(x, y, sizeof x) == 0);
    free(seen);
    ds_loader_close(&a); ds_loader_close(&b); ds_loader_close(&c); ds_loader_close(&r0); ds_loader_close(&r1);
}

TEST(loader_errors) {
    ds_loader l;
    CHECK(ds_loader_open(&l, "/nonexistent-data", "train", 2, 8, 1, 1, 0, 1, 0) != 0);
    CHECK(strstr(ds_errmsg(), "/nonexistent-data") != NULL);
    CHECK(ds_loader_open(&l, ds_test_tmpdir(), "train", 2, 8, 1, 1, 0, 1, 0) != 0); /* no shards */
    write_shard("train", 1, 10, 1000, 3);
    CHECK(ds_loader_open(&l, ds_test_tmpdir(), "train", 2, 8, 1, 1, 0, 1, 0) != 0); /* fewer than a batch */
    CHECK(strstr(ds_errmsg(), "fewer than one batch") != NULL);
}
