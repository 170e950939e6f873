/*
 * test.h — the dsv3 test framework.  Each tests/test_*.c file declares tests
 * with TEST(name) { ... } and they register themselves (constructor), so a new
 * test file needs no list edits.  The runner (tests/test_main.c) forks per
 * test: a crash is one failed test, not a lost run.  It ends with the line
 * "N passed, N failed, N skipped" and exits non-zero on any failure.
 *
 * A test fails when any CHECK fails; SKIP("why") marks it skipped (e.g. when
 * ../shared/data is absent).  Expected values come from independent oracles:
 * scalar references, finite differences, or fixtures made by tools/.
 */
#ifndef DS_TEST_H
#define DS_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*ds_test_fn)(void);
void ds_test_register(const char *name, const char *file, ds_test_fn fn);
extern int ds_test_fails;

#define TEST(name)                                                              \
    static void test_##name(void);                                              \
    __attribute__((constructor)) static void test_reg_##name(void) {            \
        ds_test_register(#name, __FILE__, test_##name);                         \
    }                                                                           \
    static void test_##name(void)

#define CHECK(c)                                                                \
    do {                                                                        \
        if (!(c)) {                                                             \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); \
            ds_test_fails++;                                                    \
        }                                                                       \
    } while (0)

#define CHECK_MSG(c, ...)                                                       \
    do {                                                                        \
        if (!(c)) {                                                             \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #c); \
            fprintf(stderr, __VA_ARGS__);                                       \
            fputc('\n', stderr);                                                \
            ds_test_fails++;                                                    \
        }                                                                       \
    } while (0)

/* |a - b| <= tol, with NaN failing. */
#define CHECK_NEAR(a, b, tol)                                                   \
    do {                                                                        \
        double a_ = (double)(a), b_ = (double)(b), t_ = (double)(tol);          \
        if (!(fabs(a_ - b_) <= t_)) {                                           \
            fprintf(stderr, "  %s:%d: CHECK_NEAR(%s, %s) failed: %.9g vs %.9g (tol %.3g)\n", \
                    __FILE__, __LINE__, #a, #b, a_, b_, t_);                    \
            ds_test_fails++;                                                    \
        }                                                                       \
    } while (0)

/* Stop the current test (it counts as failed if any CHECK failed). */
#define TEST_RETURN_IF_FAILED() do { if (ds_test_fails) return; } while (0)

/* Mark the test skipped and return from it. */
#define SKIP(...)                                                               \
    do {                                                                        \
        fprintf(stderr, "  skip: ");                                            \
        fprintf(stderr, __VA_ARGS__);                                           \
        fputc('\n', stderr);                                                    \
        ds_test_skip();                                                         \
        return;                                                                 \
    } while (0)
void ds_test_skip(void);

/* Path under ../shared (e.g. "data/tinyshakespeare/input.txt"), or NULL when
 * the file does not exist.  The returned string is static per call site use. */
const char *ds_test_shared(const char *rel);
/* Scratch directory for this test (created, unique per test run). */
const char *ds_test_tmpdir(void);
/* A 256-token byte-level tokenizer (GPT-2 pre-tokenization, no merges): it fits the v3 fixture model's
 * vocabulary of 256.  Free with ds_tokenizer_free. */
struct ds_tokenizer *ds_test_byte_tokenizer(void);
/* Run a shell command; returns its exit status (or -1); captures up to cap-1
 * bytes of combined stdout+stderr into out when out != NULL. */
int ds_test_sh(char *out, size_t cap, const char *fmt, ...);
/* A deterministic word salad of `lines` sentences (20 words, seeded) at
 * path, for tests that need a corpus but not one to learn from. */
void ds_test_write_word_salad(const char *path, uint64_t seed, int lines);
/* A linear layer's operands for the weight-copy tests: x (N, C), dy (N, OC)
 * and nw weights (OC, C) of standard normal values from seed; outputs y, yr
 * (nw x N x OC) and dx, dxr (N, C).  ds_test_linear_free releases them. */
enum { DS_TEST_LINEAR_MAX_W = 8 };
typedef struct {
    int64_t N, C, OC;
    int nw;
    float *x, *dy, *w[DS_TEST_LINEAR_MAX_W], *y, *yr, *dx, *dxr;
} ds_test_linear;
void ds_test_linear_init(ds_test_linear *t, uint64_t seed, int64_t N, int64_t C, int64_t OC, int nw);
void ds_test_linear_free(ds_test_linear *t);
/* Max relative error max|a-b| / max(max|b|, floor) over n floats. */
double ds_test_max_rel(const float *a, const float *b, size_t n, double floor_);
/* Two printed outputs equal but for their real numbers: integers (ids,
 * counts) and all other text byte for byte, a number with a fraction or an
 * exponent within rtol of the other's, or one unit of its last printed digit.
 * 0 with the first difference in why (when given) otherwise. */
int ds_test_same_up_to_reals(const char *a, const char *b, double rtol, char *why, size_t cap);
/* dsv3 eval ($DSV3) with --device device on tests/fixtures/eval: a rolling
 * log-likelihood task on two lines, a multiple-choice and a greedy generation
 * task, 3 documents each; the table in out, the exit status (that of the
 * pipeline's filter), -1 when the fixture is absent */
int ds_test_eval_fixture(char *out, size_t cap, const char *device);
/* TinyShakespeare's first head_bytes (without ../shared: a generated word
 * salad of salad_lines, a document a line) -> a BPE tokenizer of vocab ids
 * trained on it (tmpdir/tok.json) -> a data folder tmpdir/data of the whole
 * text (head_only 0) or of that head (1); the exit status, output in out */
int ds_test_prepare_corpus(char *out, size_t cap, int head_bytes, int vocab, int salad_lines, int head_only);
/* On that data folder with --device device: 4 steps of `tiny` (validation
 * and checkpoints every 2) into tmpdir/run_DEVICE, then a resume to step 6
 * with closing samples; the exit status, the "sample" lines in out */
int ds_test_train_resume(char *out, size_t cap, const char *device);

#endif
