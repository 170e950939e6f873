/*
 * test_tfevents.c — TensorBoard event files (io/tfevents.h): CRC-32C against
 * the published test vectors, and a whole file byte-identical to the one
 * tensorboard's own RecordWriter + protobuf wrote for the same events
 * (tests/fixtures/tfevents, tools/make_tfevents_fixture.py).
 */
#include <stdint.h>

#include "base/base.h"
#include "io/tfevents.h"
#include "test.h"

TEST(crc32c_published_vectors) {
    /* RFC 3720 (iSCSI) appendix B.4, and the "123456789" check value of CRC-32C */
    uint8_t z[32] = {0}, f[32], inc[32], dec[32];
    for (int i = 0; i < 32; i++) f[i] = 0xff, inc[i] = (uint8_t)i, dec[i] = (uint8_t)(31 - i);
    CHECK(ds_crc32c(0, z, 32) == 0x8A9136AAu);
    CHECK(ds_crc32c(0, f, 32) == 0x62A8AB43u);
    CHECK(ds_crc32c(0, inc, 32) == 0x46DD794Eu);
    CHECK(ds_crc32c(0, dec, 32) == 0x113FDB5Cu);
    CHECK(ds_crc32c(0, "123456789", 9) == 0xE3069283u);
    /* continuing a CRC over a split buffer gives the CRC of the whole */
    CHECK(ds_crc32c(ds_crc32c(0, "1234", 4), "56789", 5) == 0xE3069283u);
}

TEST(tfevents_bytes_equal_tensorboard_writer) {
    size_t rlen, tlen;
    char *ref = ds_read_file("tests/fixtures/tfevents/ref.tfevents", &rlen);
    char *txt = ds_read_file("tests/fixtures/tfevents/ref.txt", &tlen);
    CHECK(ref && txt);
    if (!ref || !txt) return;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tb/sub", ds_test_tmpdir());
    ds_tfevents *w = NULL;
    int n = 0;
    for (char *line = strtok(txt, "\n"); line; line = strtok(NULL, "\n"), n++) {
        char tag[256], val[64];
        double wall;
        long long step;
        CHECK(sscanf(line, "%lf %lld %255s %63s", &wall, &step, tag, val) == 4);
        if (n == 0) {
            w = ds_tfevents_open(dir, wall);
            CHECK(w != NULL);
            if (!w) break;
        } else {
            CHECK(ds_tfevents_scalar(w, tag, step, wall, (float)strtod(val, NULL)) == 0);
        }
    }
    CHECK(n == 8);
    if (w) {
        char *path = ds_strdup(ds_tfevents_path(w));
        CHECK(strstr(path, "/tb/sub/events.out.tfevents.") != NULL);
        CHECK(ds_tfevents_close(w) == 0);
        size_t len;
        char *got = ds_read_file(path, &len);
        CHECK(got && len == rlen);
        if (got && len == rlen) {
            size_t i = 0;
            while (i < len && got[i] == ref[i]) i++;
            CHECK_MSG(i == len, "first difference at byte %zu of %zu", i, len);
        }
        free(got), free(path);
    }
    free(ref), free(txt);
}

TEST(tfevents_bad_dir) {
    /* a file where the folder should be: one-line error, no writer */
    char path[1024];
    snprintf(path, sizeof path, "%s/file", ds_test_tmpdir());
    CHECK(ds_write_file_atomic(path, "x", 1) == 0);
    strcat(path, "/tb");
    CHECK(ds_tfevents_open(path, 0) == NULL);
    CHECK(strchr(ds_errmsg(), '\n') == NULL);
}
