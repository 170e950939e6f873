/*
 * base.h — the bottom layer of dsv3: error reporting, checked allocation and
 * file I/O, RNG, timers, thread count, logging.  Knows nothing of models.
 *
 * Errors: a function that can fail returns int (0 = ok, -1 = error) and calls
 * ds_err("what: why") first; the message is kept per thread and read back with
 * ds_errmsg().  The CLI prints it as one line ("dsv3: <msg>") and exits non-zero.
 * Allocation failure is not recoverable: ds_malloc and friends print file:line
 * and exit(1).
 */
#ifndef DS_BASE_H
#define DS_BASE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdarg.h>

#define DS_VERSION "0.1.0"

#if defined(__GNUC__)
#define DS_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define DS_NORETURN __attribute__((noreturn))
#else
#define DS_PRINTF(a, b)
#define DS_NORETURN
#endif
/* a macro's value as a string literal: DS_STR(DS_NGRAM_DRAFT) -> "5" */
#define DS_STR_(x) #x
#define DS_STR(x) DS_STR_(x)

/* ---- errors ------------------------------------------------------------ */
/* Set the thread's error message (printf-style); always returns -1. */
int ds_err(const char *fmt, ...) DS_PRINTF(1, 2);
/* Prefix the current message: "prefix: <old message>"; returns -1. */
int ds_err_prefix(const char *fmt, ...) DS_PRINTF(1, 2);
const char *ds_errmsg(void);
void ds_err_clear(void);
/* ds_quote(text): input echoed in a message, quoted and escaped (base/quote.h) */
#include "base/quote.h"
/* Print "dsv3: msg" to stderr and exit(code). */
DS_NORETURN void ds_die(int code, const char *fmt, ...) DS_PRINTF(2, 3);

/* Contract checks that stay on in release builds. */
#define DS_ASSERT(c)                                                          \
    do {                                                                      \
        if (!(c)) ds_die(70, "internal error: %s:%d: assertion '%s' failed", \
                         __FILE__, __LINE__, #c);                             \
    } while (0)
/* Can't-happen branch markers (SQLite style): evaluate to the condition. */
#define DS_NEVER(c) (c)
#define DS_ALWAYS(c) (c)

/* ---- checked allocation -------------------------------------------------- */
void *ds_malloc_(size_t n, const char *file, int line);
void *ds_calloc_(size_t n, size_t sz, const char *file, int line);
void *ds_realloc_(void *p, size_t n, const char *file, int line);
/* 64-byte aligned, zero-filled; free with ds_free_aligned. */
void *ds_aligned_alloc_(size_t n, const char *file, int line);
char *ds_strdup_(const char *s, const char *file, int line);
/* the n bytes at s, NUL-terminated */
char *ds_strndup_(const char *s, size_t n, const char *file, int line);
#define ds_malloc(n) ds_malloc_((n), __FILE__, __LINE__)
#define ds_calloc(n, sz) ds_calloc_((n), (sz), __FILE__, __LINE__)
#define ds_realloc(p, n) ds_realloc_((p), (n), __FILE__, __LINE__)
#define ds_aligned_alloc(n) ds_aligned_alloc_((n), __FILE__, __LINE__)
#define ds_strdup(s) ds_strdup_((s), __FILE__, __LINE__)
#define ds_strndup(s, n) ds_strndup_((s), (n), __FILE__, __LINE__)
void ds_free_aligned(void *p);
/* A grow-only per-thread scratch buffer (64-byte aligned): *buf of *cap
 * bytes is replaced by a fresh one of `bytes` rounded up to whole 4 KiB when
 * `bytes` is more; the contents are not kept.  buf and cap must be
 * _Thread_local: the buffer is freed (and *buf, *cap reset) when the thread
 * ends. */
void *ds_scratch_(void **buf, size_t *cap, size_t bytes, const char *file, int line);
#define ds_scratch(buf, cap, bytes) ds_scratch_((buf), (cap), (bytes), __FILE__, __LINE__)

/* ---- file helpers ------------------------------------------------------- */
/* Read a whole file (NUL-terminated for convenience; *len excludes the NUL).
 * Returns NULL and sets the error ("path: No such file or directory"). */
char *ds_read_file(const char *path, size_t *len);
/* The same for an open stream (e.g. stdin); name is used in messages. */
char *ds_read_stream(FILE *f, const char *name, size_t *len);
/* Write atomically: path.tmp.<pid>, fsync, rename.  Nothing is left behind
 * on failure and an existing file at path stays intact. */
int ds_write_file_atomic(const char *path, const void *data, size_t len);
/* strerror for a failed write; EFBIG (past `ulimit -f`, SIGXFSZ being
 * ignored by the dsv3 binary) says so, like the full disk it amounts to. */
const char *ds_write_strerror(int e);
/* Atomic writer for streamed output: ds_afile_open gives a FILE* on a temp
 * name; ds_afile_commit flushes, fsyncs, checks for write errors (full disk)
 * and renames; ds_afile_abort removes the temp file. */
typedef struct {
    FILE *f;
    char *tmp_path;
    char *final_path;
} ds_afile;
int ds_afile_open(ds_afile *af, const char *path);
int ds_afile_commit(ds_afile *af);
void ds_afile_abort(ds_afile *af);
int ds_mkdir_p(const char *path);
int ds_file_exists(const char *path);
/* Join a directory and a file name into a new string. */
char *ds_path_join(const char *dir, const char *name);
/* Remove a flat folder: its files, then the folder (no subfolders; errors ignored). */
void ds_remove_flat_dir(const char *dir);

/* ---- RNG: xoshiro256** seeded by splitmix64; state is 4 x uint64 -------- */
typedef struct { uint64_t s[4]; } ds_rng;
void ds_rng_seed(ds_rng *r, uint64_t seed);
uint64_t ds_rng_u64(ds_rng *r);
double ds_rng_uniform(ds_rng *r);          /* [0, 1) with 53 bits */
float ds_rng_normal(ds_rng *r);            /* N(0, 1), Box-Muller */
uint64_t ds_rng_below(ds_rng *r, uint64_t n); /* uniform in [0, n) */
/* Host fills (model init, docs/engine.md §1.1): x[i] = std·N(0,1) drawn in
 * order i = 0..n-1; x[i] = v. */
void ds_rng_fill_normal(ds_rng *r, float *x, int64_t n, float std);
void ds_fill_f32(float *x, int64_t n, float v);

/* ---- time, threads, logging --------------------------------------------- */
double ds_now(void); /* seconds, monotonic */
void ds_set_threads(int n); /* OpenMP and BLAS; n <= 0 keeps the default */
int ds_threads(void);
/* The OpenBLAS kernel family dsv3 runs on this CPU when OPENBLAS_CORETYPE is
 * unset (SkylakeX with AVX-512, Haswell with AVX2+FMA; OpenBLAS's own
 * detection does not know every recent CPU and picks other families on
 * others, e.g. Cooperlake on a Zen 4); NULL: OpenBLAS's own choice.  OpenBLAS
 * reads the variable when it loads, so a program sets it and re-executes
 * itself (cli/main.c; the test runner too, so that its in-process numbers
 * and the CLI's come from the same kernels). */
const char *ds_blas_core_for_cpu(void);
/* "OpenBLAS <core>" (or the fallback) into buf; *narrow = 1 when the OpenBLAS
 * kernel family is narrower than this CPU's vectors */
const char *ds_blas_name(char *buf, size_t cap, int *narrow);
#define DS_BLAS_NARROW_NOTE " (OPENBLAS_CORETYPE from the environment; this CPU has AVX-512: unset it for the SkylakeX kernels)"

enum { DS_LOG_QUIET = 0, DS_LOG_INFO = 1, DS_LOG_DEBUG = 2 };
extern int ds_log_level;
void ds_log(int level, const char *fmt, ...) DS_PRINTF(2, 3);

/* ---- small utilities ---------------------------------------------------- */
static inline int64_t ds_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
/* FNV-1a 64-bit over bytes, for content hashes in file headers. */
uint64_t ds_hash64(const void *data, size_t n, uint64_t h);
#define DS_HASH64_INIT 0xcbf29ce484222325ULL

/* ---- progress bar --------------------------------------------------------- */
/* One line on stderr, redrawn at most 10 times a second when stderr is a
 * terminal (otherwise a plain line every ~10 s): label, percent, rate, ETA. */
typedef struct {
    const char *label, *unit;
    double total, t0, last;
    int tty;
} ds_progress;
void ds_progress_start(ds_progress *p, const char *label, double total, const char *unit);
void ds_progress_update(ds_progress *p, double done);
void ds_progress_end(ds_progress *p, double done);

/* ---- arenas carved in two passes ------------------------------------------ */
/* Pass 1 with base = NULL counts the floats a layout needs (cv.off); pass 2 with
 * base = the allocation hands out the same pointers.  Each piece is rounded up
 * to 16 floats (64 bytes), so every carved pointer stays 64-byte aligned. */
typedef struct {
    float *base;
    size_t off;
} ds_carver;
static inline void *ds_carve(ds_carver *cv, int64_t n) {
    void *p = cv->base ? (void *)(cv->base + cv->off) : NULL;
    /* the count saturates at SIZE_MAX (sizes past any memory) instead of wrapping */
    size_t r;
    if (n < 0 || n > INT64_MAX - 15 || __builtin_add_overflow(cv->off, (size_t)((n + 15) / 16 * 16), &r)) r = SIZE_MAX;
    cv->off = r;
    return p;
}

#endif
