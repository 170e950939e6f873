/*
 * fp8_fixture.h — loads the raw little-endian arrays of tests/fixtures/fp8
 * (made by tools/make_fp8_fixtures.py; shapes in manifest.txt).
 */
#ifndef DS_TEST_FP8_FIXTURE_H
#define DS_TEST_FP8_FIXTURE_H

#include "base/base.h"
#include <stdlib.h>

/* Returns the bytes of tests/fixtures/fp8/<name> (free()), *n = element count
 * for element size esz; NULL (and a message) when missing or of odd length. */
static inline void *fp8_fixture(const char *name, size_t esz, size_t *n) {
    char path[512];
    snprintf(path, sizeof path, "tests/fixtures/fp8/%s", name);
    size_t len = 0;
    char *d = ds_read_file(path, &len);
    if (!d) { fprintf(stderr, "  fixture missing: %s\n", path); return NULL; }
    if (len % esz) { fprintf(stderr, "  fixture %s: length %zu not a multiple of %zu\n", path, len, esz); free(d); return NULL; }
    *n = len / esz;
    return d;
}

#endif
