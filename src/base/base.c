/*
 * base.c — error messages, checked allocation and I/O, RNG, timers, threads.
 */
#include "base/base.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef DS_HAVE_OPENBLAS
#include <cblas.h>
#endif

/* ---- errors -------------------------------------------------------------- */
static _Thread_local char err_buf[1024];

int ds_err(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    return -1;
}

int ds_err_prefix(const char *fmt, ...) {
    char pre[512], old[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, err_buf, sizeof old);
    snprintf(err_buf, sizeof err_buf, "%s: %s", pre, old);
    return -1;
}

const char *ds_errmsg(void) { return err_buf[0] ? err_buf : "unknown error"; }
void ds_err_clear(void) { err_buf[0] = 0; }

void ds_die(int code, const char *fmt, ...) {
    va_list ap;
    fflush(stdout);
    fputs("dsv3: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(code);
}

/* ---- allocation ---------------------------------------------------------- */
static void oom(size_t n, const char *file, int line) {
    ds_die(1, "out of memory allocating %zu bytes at %s:%d", n, file, line);
}

void *ds_malloc_(size_t n, const char *file, int line) {
    void *p = malloc(n ? n : 1);
    if (!p) oom(n, file, line);
    return p;
}

void *ds_calloc_(size_t n, size_t sz, const char *file, int line) {
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) oom(n * sz, file, line);
    return p;
}

void *ds_realloc_(void *q, size_t n, const char *file, int line) {
    void *p = realloc(q, n ? n : 1);
    if (!p) oom(n, file, line);
    return p;
}

/* Buffers of 4 MiB and more (parameters, gradients, moments, activation
 * arenas) start on a 2 MiB boundary and ask for transparent huge pages before
 * their first touch: the optimizer streams 7 arrays of the model's size and
 * a GEMM packs big weights, and with 4 KiB pages each of those walks misses
 * the TLB every 4 KiB.  Where THP is off (or "never") the advice is ignored. */
#define DS_HUGE_MIN ((size_t)4 << 20)
#define DS_HUGE_ALIGN ((size_t)2 << 20)

void *ds_aligned_alloc_(size_t n, const char *file, int line) {
    size_t m = (n + 63) & ~(size_t)63;
    void *p = NULL;
    if (m >= DS_HUGE_MIN) {
        m = (m + DS_HUGE_ALIGN - 1) & ~(DS_HUGE_ALIGN - 1);
        if (posix_memalign(&p, DS_HUGE_ALIGN, m) != 0) oom(n, file, line);
#ifdef MADV_HUGEPAGE
        (void)madvise(p, m, MADV_HUGEPAGE);
#endif
    } else if (posix_memalign(&p, 64, m ? m : 64) != 0) {
        oom(n, file, line);
    }
    memset(p, 0, m ? m : 64);
    return p;
}

void ds_free_aligned(void *p) { free(p); }

/* The _Thread_local scratch buffers a thread has used, freed by a key
 * destructor when the thread ends (serve's scheduler thread and its OpenMP
 * team end before the process does; the main thread's stay until exit). */
enum { SCRATCH_MAX = 32 };
typedef struct {
    void **buf[SCRATCH_MAX];
    size_t *cap[SCRATCH_MAX];
    int n;
} scratch_list;
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static void scratch_release(void *p) {
    scratch_list *l = p;
    for (int i = 0; i < l->n; i++) {
        free(*l->buf[i]);
        *l->buf[i] = NULL, *l->cap[i] = 0;
    }
    free(l);
}
static void scratch_key_make(void) {
    if (pthread_key_create(&scratch_key, scratch_release)) { /* no key: the buffers live until exit */ }
}
static void scratch_note(void **buf, size_t *cap) {
    pthread_once(&scratch_once, scratch_key_make);
    scratch_list *l = pthread_getspecific(scratch_key);
    if (!l) {
        l = calloc(1, sizeof *l);
        if (!l || pthread_setspecific(scratch_key, l)) {
            free(l);
            return;
        }
    }
    for (int i = 0; i < l->n; i++)
        if (l->buf[i] == buf) return;
    if (l->n < SCRATCH_MAX) l->buf[l->n] = buf, l->cap[l->n] = cap, l->n++;
}

void *ds_scratch_(void **buf, size_t *cap, size_t bytes, const char *file, int line) {
    if (!*buf) scratch_note(buf, cap);
    if (bytes > *cap || !*buf) {
        /* whole 4 KiB pages: a slowly growing need (a decode step's scores,
         * one more position each token) does not reallocate every call */
        size_t c = (bytes + 4095) & ~(size_t)4095;
        free(*buf);
        *buf = ds_aligned_alloc_(c ? c : 4096, file, line);
        *cap = c ? c : 4096;
    }
    return *buf;
}

char *ds_strdup_(const char *s, const char *file, int line) {
    size_t n = strlen(s) + 1;
    char *p = ds_malloc_(n, file, line);
    memcpy(p, s, n);
    return p;
}

char *ds_strndup_(const char *s, size_t n, const char *file, int line) {
    char *p = ds_malloc_(n + 1, file, line);
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* ---- files ---------------------------------------------------------------- */
char *ds_read_stream(FILE *f, const char *name, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = ds_malloc(cap);
    for (;;) {
        if (n + 1 >= cap) { cap *= 2; buf = ds_realloc(buf, cap); }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        ds_err("%s: read error: %s", name, strerror(errno));
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

char *ds_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { ds_err("%s: %s", path, strerror(errno)); return NULL; }
    char *buf = ds_read_stream(f, path, len);
    fclose(f);
    return buf;
}

const char *ds_write_strerror(int e) {
    if (e == EFBIG) return "File too large: the file size limit (ulimit -f) was reached";
    return strerror(e);
}

int ds_afile_open(ds_afile *af, const char *path) {
    size_t n = strlen(path) + 32;
    af->final_path = ds_strdup(path);
    af->tmp_path = ds_malloc(n);
    snprintf(af->tmp_path, n, "%s.tmp.%d", path, (int)getpid());
    af->f = fopen(af->tmp_path, "wb");
    if (!af->f) {
        ds_err("%s: cannot create: %s", af->tmp_path, strerror(errno));
        free(af->tmp_path); free(af->final_path);
        af->tmp_path = af->final_path = NULL;
        return -1;
    }
    return 0;
}

void ds_afile_abort(ds_afile *af) {
    if (af->f) fclose(af->f);
    if (af->tmp_path) unlink(af->tmp_path);
    free(af->tmp_path); free(af->final_path);
    af->f = NULL; af->tmp_path = af->final_path = NULL;
}

int ds_afile_commit(ds_afile *af) {
    int bad = ferror(af->f) || fflush(af->f) != 0 || fsync(fileno(af->f)) != 0;
    int e = errno;
    if (fclose(af->f) != 0 && !bad) { bad = 1; e = errno; }
    af->f = NULL;
    if (bad) {
        ds_err("%s: write failed: %s (nothing was replaced)", af->final_path, ds_write_strerror(e));
        ds_afile_abort(af);
        return -1;
    }
    if (rename(af->tmp_path, af->final_path) != 0) {
        ds_err("%s: rename failed: %s", af->final_path, strerror(errno));
        ds_afile_abort(af);
        return -1;
    }
    free(af->tmp_path); free(af->final_path);
    af->tmp_path = af->final_path = NULL;
    return 0;
}

int ds_write_file_atomic(const char *path, const void *data, size_t len) {
    ds_afile af;
    if (ds_afile_open(&af, path) != 0) return -1;
    if (len && fwrite(data, 1, len, af.f) != len) {
        ds_err("%s: write failed: %s (nothing was replaced)", path, ds_write_strerror(errno));
        ds_afile_abort(&af);
        return -1;
    }
    return ds_afile_commit(&af);
}

int ds_mkdir_p(const char *path) {
    char *p = ds_strdup(path);
    for (char *s = p + 1; ; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s;
            *s = 0;
            if (mkdir(p, 0777) != 0 && errno != EEXIST) {
                ds_err("%s: cannot create directory: %s", p, strerror(errno));
                free(p);
                return -1;
            }
            *s = c;
            if (!c) break;
        }
    }
    free(p);
    return 0;
}

int ds_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

char *ds_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = ds_malloc(a + b + 2);
    memcpy(p, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

void ds_remove_flat_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char *p = ds_path_join(dir, e->d_name);
            unlink(p);
            free(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

/* ---- RNG ------------------------------------------------------------------ */
static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void ds_rng_seed(ds_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t ds_rng_u64(ds_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t; s[3] = rotl(s[3], 45);
    return out;
}

double ds_rng_uniform(ds_rng *r) { return (ds_rng_u64(r) >> 11) * 0x1.0p-53; }

/* Box-Muller on two uniforms (no sum in it: no FMA contraction can make two
 * call sites differ) */
static inline float box_muller(double u1, double u2) {
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

float ds_rng_normal(ds_rng *r) {
    double u1 = ds_rng_uniform(r), u2 = ds_rng_uniform(r);
    return box_muller(u1, u2);
}

/* The same values as n calls of ds_rng_normal: the uniforms are drawn in
 * order, a chunk at a time, and the chunk's log/cos (most of the time: a
 * 1B-parameter model's initialisation) run on the OpenMP threads. */
void ds_rng_fill_normal(ds_rng *r, float *x, int64_t n, float std) {
    enum { CH = 1 << 16 };
    if (n < CH) {
        for (int64_t i = 0; i < n; i++) x[i] = std * ds_rng_normal(r);
        return;
    }
    double *u = ds_malloc(2 * (size_t)CH * sizeof(double));
    for (int64_t i0 = 0; i0 < n; i0 += CH) {
        const int64_t m = n - i0 < CH ? n - i0 : CH;
        for (int64_t j = 0; j < 2 * m; j++) u[j] = ds_rng_uniform(r);
#pragma omp parallel for schedule(static)
        for (int64_t j = 0; j < m; j++) x[i0 + j] = std * box_muller(u[2 * j], u[2 * j + 1]);
    }
    free(u);
}

void ds_fill_f32(float *x, int64_t n, float v) {
    for (int64_t i = 0; i < n; i++) x[i] = v;
}

uint64_t ds_rng_below(ds_rng *r, uint64_t n) {
    if (n <= 1) return 0;
    uint64_t lim = UINT64_MAX - UINT64_MAX % n, x;
    do x = ds_rng_u64(r); while (x >= lim);
    return x % n;
}

/* ---- time, threads, logging ------------------------------------------------ */
double ds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int g_threads = 0;

void ds_set_threads(int n) {
    if (n <= 0) return;
    g_threads = n;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
#ifdef DS_HAVE_OPENBLAS
    openblas_set_num_threads(n);
#endif
}

const char *ds_blas_core_for_cpu(void) {
#ifdef DS_HAVE_OPENBLAS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
    return NULL;
}

/* The FP32 GEMM library and, for OpenBLAS, the kernel family it runs.
 * OPENBLAS_CORETYPE from the environment is kept (dsv3 sets it only when
 * unset, cli/main.c); a family narrower than the CPU (Haswell's AVX2 sgemm on
 * an AVX-512 CPU) makes the FP32 GEMMs of a training step 1.3-2x slower, so
 * *narrow tells the caller to say so. */
const char *ds_blas_name(char *buf, size_t cap, int *narrow) {
    if (narrow) *narrow = 0;
#ifdef DS_HAVE_OPENBLAS
    const char *core = openblas_get_corename();
    char lc[32] = "";
    for (size_t i = 0; core && core[i] && i + 1 < sizeof lc; i++)
        lc[i] = (char)(core[i] >= 'A' && core[i] <= 'Z' ? core[i] - 'A' + 'a' : core[i]), lc[i + 1] = 0;
    __builtin_cpu_init();
    int n = core && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && !strstr(lc, "skylakex") && !strstr(lc, "cooperlake") &&
            !strstr(lc, "sapphirerapids");
    if (narrow) *narrow = n;
    snprintf(buf, cap, "OpenBLAS %s", core ? core : "?");
#else
    snprintf(buf, cap, "none (dsv3's blocked GEMM)");
#endif
    return buf;
}

int ds_threads(void) {
    if (g_threads > 0) return g_threads;
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int ds_log_level = DS_LOG_INFO;

void ds_log(int level, const char *fmt, ...) {
    if (level > ds_log_level) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

uint64_t ds_hash64(const void *data, size_t n, uint64_t h) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 0x100000001b3ULL; }
    return h;
}

/* ---- progress bar ------------------------------------------------------------ */
void ds_progress_start(ds_progress *p, const char *label, double total, const char *unit) {
    p->label = label;
    p->unit = unit;
    p->total = total;
    p->t0 = p->last = ds_now();
    p->tty = isatty(2);
}

static void fmt_eta(char *buf, size_t n, double s) {
    if (!(s >= 0) || s > 1e7) { snprintf(buf, n, "--:--"); return; }
    int h = (int)(s / 3600), m = (int)(s / 60) % 60, sec = (int)s % 60;
    if (h) snprintf(buf, n, "%d:%02d:%02d", h, m, sec);
    else snprintf(buf, n, "%02d:%02d", m, sec);
}

static void progress_draw(ds_progress *p, double done, int final) {
    double now = ds_now(), el = now - p->t0, rate = el > 0 ? done / el : 0;
    double frac = p->total > 0 ? done / p->total : 0;
    if (frac > 1) frac = 1;
    char eta[32];
    fmt_eta(eta, sizeof eta, final ? el : (rate > 0 ? (p->total - done) / rate : -1));
    char bar[31];
    int fill = (int)(frac * 30);
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    fprintf(stderr, "%s%s [%s] %5.1f%% %.3g %s/s %s %s%s", p->tty ? "\r" : "", p->label, bar, 100 * frac,
            rate, p->unit, final ? "took" : "eta", eta, (final || !p->tty) ? "\n" : "");
    fflush(stderr);
    p->last = now;
}

void ds_progress_update(ds_progress *p, double done) {
    if (ds_log_level < DS_LOG_INFO) return;
    double now = ds_now();
    if (now - p->last < (p->tty ? 0.1 : 10.0)) return;
    progress_draw(p, done, 0);
}

void ds_progress_end(ds_progress *p, double done) {
    if (ds_log_level < DS_LOG_INFO) return;
    progress_draw(p, done, 1);
}
