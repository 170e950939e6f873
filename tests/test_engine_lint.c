/*
 * test_engine_lint.c — tools/check_engine.sh, the engine rule of
 * docs/engine.md §2.6: on a fixture tree with one violation of each rule it
 * prints exactly those lines (tests/fixtures/engine_lint/expected.txt, written
 * by hand from the rules) and fails; more than 12 tagged host loops fail; R3's
 * names are the ones a backend header declares or defines; and the whole tree
 * passes but for the one file still being rewritten (not_yet_clean).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "test.h"

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return buf;
}

TEST(engine_lint_fixture) {
    static char out[16384];
    int rc = ds_test_sh(out, sizeof out, "bash tools/check_engine.sh --root tests/fixtures/engine_lint 2>&1");
    const char *want = slurp("tests/fixtures/engine_lint/expected.txt");
    CHECK(want != NULL);
    TEST_RETURN_IF_FAILED();
    CHECK_MSG(rc == 1, "exit status %d, want 1", rc);
    CHECK_MSG(strcmp(out, want) == 0, "output:\n%s\nwant:\n%s", out, want);
    /* every rule shows exactly once */
    for (int r = 1; r <= 6; r++) {
        char tag[8];
        snprintf(tag, sizeof tag, ": R%d:", r);
        const char *p = strstr(out, tag);
        CHECK_MSG(p && !strstr(p + 1, tag), "rule R%d not exactly once", r);
    }
    /* --report: counts, exit 0 */
    rc = ds_test_sh(out, sizeof out, "bash tools/check_engine.sh --report --root tests/fixtures/engine_lint 2>&1");
    CHECK(rc == 0 && strstr(out, "\nR4 1\n") && strstr(out, "\ntagged 1\n"));
    /* a folder list checks only those folders: the io fixture alone has R6 only */
    rc = ds_test_sh(out, sizeof out, "bash tools/check_engine.sh --root tests/fixtures/engine_lint src/io 2>&1");
    CHECK_MSG(rc == 1 && !strcmp(out, "src/io/r.c:4: R6: #include \"model/m.h\"\n"), "src/io only: %s", out);
    rc = ds_test_sh(out, sizeof out, "bash tools/check_engine.sh --root tests/fixtures/engine_lint src/nope 2>&1");
    CHECK_MSG(rc == 2 && strstr(out, "src/nope"), "missing folder: rc %d, %s", rc, out);
}

/* The cap on tagged host loops: 13 tagged loops in scope fail. */
TEST(engine_lint_tag_cap) {
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/tree", ds_test_tmpdir());
    char out[8192];
    CHECK(ds_test_sh(NULL, 0, "mkdir -p %s/src/model", dir) == 0);
    snprintf(path, sizeof path, "%s/src/model/t.c", dir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    TEST_RETURN_IF_FAILED();
    fprintf(f, "void f(int *ids, long N) {\n");
    for (int i = 0; i < 13; i++) fprintf(f, "    for (long n = 0; n < N; n++) ids[n] = 0; /* host: ids */\n");
    fprintf(f, "}\n");
    fclose(f);
    int rc = ds_test_sh(out, sizeof out, "bash tools/check_engine.sh --root %s 2>&1", dir);
    CHECK_MSG(rc == 1 && strstr(out, "R4: 13 tagged host loops > 12\n"), "rc %d: %s", rc, out);
}
/* R3's names are those a backend header declares or defines at file scope
 * (the fixture's k.h: ds_fixture_kernel, the inline ds_fixture_par), not those
 * an inline body or a macro only calls, nor a name in a string literal. */
TEST(engine_lint_header_names) {
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/hdr", ds_test_tmpdir());
    static char out[8192];
    CHECK(ds_test_sh(NULL, 0, "mkdir -p %s/src/model %s/src/backend/cpu && "
                     "cp tests/fixtures/engine_lint/src/backend/cpu/k.h %s/src/backend/cpu/", dir, dir, dir) == 0);
    snprintf(path, sizeof path, "%s/src/model/u.c", dir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    TEST_RETURN_IF_FAILED();
    fprintf(f, "void f(float *x) {\n"
               "    x[0] = (float)ds_fixture_par(2);\n"
               "    x[1] = (float)ds_fixture_threads();\n"
               "    x[2] = (float)ds_fixture_clamp(1, 0) + (float)ds_fixture_str(0);\n"
               "    x[3] = (float)ds_fixture_macro_call(1);\n"
               "    ds_fixture_kernel(x, 1);\n"
               "}\n");
    fclose(f);
    int rc = ds_test_sh(out, sizeof out, "bash tools/check_engine.sh --root %s 2>&1", dir);
    CHECK_MSG(rc == 1 && !strcmp(out, "src/model/u.c:2: R3: x[0] = (float)ds_fixture_par(2);\n"
                                      "src/model/u.c:6: R3: ds_fixture_kernel(x, 1);\n"),
              "rc %d: %s", rc, out);
}

/* The whole tree is clean (tools/check_engine.sh with no folder: scope S —
 * src/model, src/train, src/infer, src/dist, eval's lm_model.c and
 * lm_logits.c — R1-R5, the CLI R2-R3, R6 on all of src/, the cap on tagged
 * host loops): only tagged host loops are listed, and the script exits 0. */
TEST(engine_lint_clean_folders) {
    static char out[65536];
    int rc = ds_test_sh(out, sizeof out, "bash tools/check_engine.sh 2>&1");
    int bad = 0;
    for (char *line = out; *line;) {
        char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        const char *tag = strstr(line, ": tagged: ");
        if (!tag || tag >= line + len) {
            fprintf(stderr, "  %.*s\n", (int)len, line);
            bad++;
        }
        line += len + (nl != NULL);
    }
    CHECK_MSG(bad == 0 && rc == 0, "tools/check_engine.sh: exit %d, %d violation(s) (listed above)", rc, bad);
}
