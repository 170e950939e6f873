/*
 * test_main.c — runner for the dsv3 test suite.  Usage:
 *   build/test_dsv3 [substring ...]   run tests whose file:name contains any substring
 * Each test runs in a forked child (crash isolation, 900 s alarm), in its own
 * process group, which is killed when the test ends: nothing it started
 * outlives it.
 */
#include "test.h"

#include "base/base.h"
#include "tokenizer/tokenizer.h"

#include <ctype.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct { const char *name, *file; ds_test_fn fn; } test_entry;
static test_entry *g_tests;
static int g_ntests, g_cap;
int ds_test_fails;
static int g_skipped;
static char g_tmpdir[512];

void ds_test_register(const char *name, const char *file, ds_test_fn fn) {
    if (g_ntests == g_cap) {
        g_cap = g_cap ? 2 * g_cap : 64;
        g_tests = realloc(g_tests, g_cap * sizeof *g_tests);
    }
    g_tests[g_ntests++] = (test_entry){name, file, fn};
}

void ds_test_skip(void) { g_skipped = 1; }

const char *ds_test_shared(const char *rel) {
    static _Thread_local char buf[8][1024];
    static _Thread_local int k;
    char *p = buf[k++ & 7];
    const char *root = getenv("DS_SHARED");
    snprintf(p, 1024, "%s/%s", root ? root : "../shared", rel);
    struct stat st;
    return stat(p, &st) == 0 ? p : NULL;
}

const char *ds_test_tmpdir(void) { return g_tmpdir; }

ds_tokenizer *ds_test_byte_tokenizer(void) {
    const char *text = "abc";
    size_t tl = 3;
    ds_bpe_train_opts o = {.vocab_size = 256, .pretok = DS_PRETOK_GPT2, .split_lines = 0};
    return ds_bpe_train_texts(&text, &tl, 1, &o);
}

void ds_test_write_word_salad(const char *path, uint64_t seed, int lines) {
    static const char *w[] = {"the", "king", "and", "queen", "of", "a", "land", "where", "rivers", "run",
                              "to", "sea", "with", "light", "upon", "hills", "shall", "come", "unto", "them"};
    FILE *f = fopen(path, "w");
    if (!f) return;
    ds_rng r;
    ds_rng_seed(&r, seed);
    for (int line = 0; line < lines; line++) {
        int n = 4 + (int)ds_rng_below(&r, 8);
        for (int i = 0; i < n; i++) fprintf(f, "%s%s", i ? " " : "", w[ds_rng_below(&r, 20)]);
        fputs(".\n", f);
    }
    fclose(f);
}

int ds_test_sh(char *out, size_t cap, const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    char full[8400];
    snprintf(full, sizeof full, "( %s ) 2>&1", cmd);
    FILE *p = popen(full, "r");
    if (!p) return -1;
    size_t n = 0;
    char tmp[4096];
    size_t got;
    while ((got = fread(tmp, 1, sizeof tmp, p)) > 0) {
        if (out && n + 1 < cap) {
            size_t c = got < cap - 1 - n ? got : cap - 1 - n;
            memcpy(out + n, tmp, c);
            n += c;
        }
    }
    if (out && cap) out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static float *randn_alloc(ds_rng *r, int64_t n) {
    float *v = ds_malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) v[i] = ds_rng_normal(r);
    return v;
}

void ds_test_linear_init(ds_test_linear *t, uint64_t seed, int64_t N, int64_t C, int64_t OC, int nw) {
    ds_rng r;
    ds_rng_seed(&r, seed);
    memset(t, 0, sizeof *t);
    t->N = N, t->C = C, t->OC = OC, t->nw = nw < DS_TEST_LINEAR_MAX_W ? nw : DS_TEST_LINEAR_MAX_W;
    t->x = randn_alloc(&r, N * C), t->dy = randn_alloc(&r, N * OC);
    for (int k = 0; k < t->nw; k++) t->w[k] = randn_alloc(&r, OC * C);
    t->y = ds_malloc((size_t)(t->nw * N * OC) * sizeof(float)), t->yr = ds_malloc((size_t)(t->nw * N * OC) * sizeof(float));
    t->dx = ds_malloc((size_t)(N * C) * sizeof(float)), t->dxr = ds_malloc((size_t)(N * C) * sizeof(float));
}

void ds_test_linear_free(ds_test_linear *t) {
    for (int k = 0; k < t->nw; k++) free(t->w[k]);
    free(t->x), free(t->dy), free(t->y), free(t->yr), free(t->dx), free(t->dxr);
    memset(t, 0, sizeof *t);
}

double ds_test_max_rel(const float *a, const float *b, size_t n, double floor_) {
    double mx = floor_, md = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d != d) return INFINITY;
        if (d > md) md = d;
        if (fabs((double)b[i]) > mx) mx = fabs((double)b[i]);
    }
    return md / mx;
}

/* one number of a printed text at s (a sign, digits, a fraction, an
 * exponent): its value, its end, whether it is an integer, and the unit of
 * its last printed digit */
static const char *scan_number(const char *s, double *v, int *integer, double *unit) {
    char *end;
    *v = strtod(s, &end);
    const char *dot = NULL, *e = NULL;
    for (const char *q = s; q < end; q++) {
        if (*q == '.') dot = q;
        if (*q == 'e' || *q == 'E') e = q;
    }
    *integer = !dot && !e;
    const char *last = e ? e : end; /* the mantissa's end */
    int frac = dot ? (int)(last - dot - 1) : 0, ex = e ? atoi(e + 1) : 0;
    *unit = pow(10.0, ex - frac);
    return end;
}

/* a number starts at s of text t (not inside a name such as "x2") */
static int number_starts(const char *t, const char *s) {
    return (isdigit((unsigned char)*s) || (*s == '-' && isdigit((unsigned char)s[1]))) &&
           (s == t || !(isalnum((unsigned char)s[-1]) || s[-1] == '_' || s[-1] == '.'));
}

int ds_test_same_up_to_reals(const char *a, const char *b, double rtol, char *why, size_t cap) {
    const char *p = a, *q = b;
    while (*p && *q) {
        if (number_starts(a, p) && number_starts(b, q)) {
            double x, y, ux, uy;
            int ix, iy;
            const char *ep = scan_number(p, &x, &ix, &ux), *eq = scan_number(q, &y, &iy, &uy);
            int same = ix && iy ? ep - p == eq - q && !memcmp(p, q, (size_t)(ep - p))
                                : fabs(x - y) <= rtol * fmax(fabs(x), fabs(y)) + fmax(ux, uy) * 1.0000001;
            if (!same) {
                if (why) snprintf(why, cap, "%.*s vs %.*s at byte %d", (int)(ep - p), p, (int)(eq - q), q, (int)(p - a));
                return 0;
            }
            p = ep, q = eq;
            continue;
        }
        if (*p != *q) break;
        p++, q++;
    }
    if (*p || *q) {
        if (why) snprintf(why, cap, "the texts differ at byte %d: '%.20s' vs '%.20s'", (int)(p - a), p, q);
        return 0;
    }
    return 1;
}

int ds_test_eval_fixture(char *out, size_t cap, const char *device) {
    const char *fix = "tests/fixtures/eval";
    if (!ds_file_exists("tests/fixtures/eval/model/config.json")) return -1;
    char tp[600];
    snprintf(tp, sizeof tp, "%s/eval_lines.txt", ds_test_tmpdir());
    FILE *f = fopen(tp, "w");
    DS_ASSERT(f);
    fputs("the cat sat on the mat\nhello world again\n", f);
    fclose(f);
    return ds_test_sh(out, cap,
                      "\"${DSV3:-./dsv3}\" --threads 1 eval --model %s/model --max-length 32 --no-progress --batch 2 "
                      "--task 'lm:%s#docs=lines' --task 'mc:%s/greedy_mc.jsonl#delim=\\,,name=g' "
                      "--task 'gen:%s/greedy_gen.jsonl#until=\\n,max_new=8,name=gg' --limit 3 --device %s 2>&1 | "
                      "grep -v 'the device-resident table'", /* the line that names the table */
                      fix, tp, fix, fix, device);
}

int ds_test_prepare_corpus(char *out, size_t cap, int head_bytes, int vocab, int salad_lines, int head_only) {
    const char *txt = ds_test_shared("data/tinyshakespeare/input.txt"), *docs = "blank", *tmp = ds_test_tmpdir();
    char salad[600], data[700];
    if (!txt) {
        snprintf(salad, sizeof salad, "%s/salad.txt", tmp);
        ds_test_write_word_salad(salad, 7, salad_lines);
        txt = salad, docs = "line";
    }
    snprintf(data, sizeof data, head_only ? "%s/head.txt" : "%s", head_only ? tmp : txt);
    return ds_test_sh(out, cap,
                      "head -c %d '%s' > %s/head.txt && "
                      "\"${DSV3:-./dsv3}\" tokenizer train --input %s/head.txt --vocab-size %d --no-special-tokens "
                      "--special-tokens '<|bos|>' --out %s/tok.json && "
                      "\"${DSV3:-./dsv3}\" data prepare --tokenizer %s/tok.json --input '%s' --out %s/data --docs %s",
                      head_bytes, txt, tmp, tmp, vocab, tmp, tmp, data, tmp, docs);
}

int ds_test_train_resume(char *out, size_t cap, const char *device) {
    const char *tmp = ds_test_tmpdir();
    return ds_test_sh(out, cap,
                      "\"${DSV3:-./dsv3}\" --threads 1 train --config tiny --data %s/data --out %s/run_%s --steps 4 "
                      "--batch 2 --seq 16 --eval-every 2 --eval-batches 1 --log-every 1 --save-every 2 --seed 7 "
                      "--device %s > /dev/null 2>%s/err_%s.txt && \"${DSV3:-./dsv3}\" --threads 1 train --data %s/data "
                      "--resume %s/run_%s --steps 6 --override --sample 'the|a' --max-new-tokens 4 --device %s "
                      "2>/dev/null | grep -a '^sample'",
                      tmp, tmp, device, device, tmp, device, tmp, tmp, device, device);
}

static int cmp_tests(const void *a, const void *b) {
    const test_entry *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    return c ? c : 0;
}

int main(int argc, char **argv) {
    /* the OpenBLAS kernels dsv3's CLI picks on this CPU (ds_blas_core_for_cpu; OpenBLAS reads the
     * variable as it loads, hence the re-exec), so that what a test computes in-process and what the
     * CLI it runs computes come from the same sgemm (its own detection differs on some CPUs) */
    if (!getenv("OPENBLAS_CORETYPE") && !getenv("DS_TEST_REEXEC") && ds_blas_core_for_cpu()) {
        setenv("OPENBLAS_CORETYPE", ds_blas_core_for_cpu(), 1);
        setenv("DS_TEST_REEXEC", "1", 1);
        execv("/proc/self/exe", argv);
    }
    /* stable order: by file, then by registration order within a file */
    for (int i = 0; i < g_ntests; i++) g_tests[i].fn = g_tests[i].fn;
    qsort(g_tests, g_ntests, sizeof *g_tests, cmp_tests);
    int passed = 0, failed = 0, skipped = 0;
    char failed_names[8192] = "";
    snprintf(g_tmpdir, sizeof g_tmpdir, "%s/dsv3-test-%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
    mkdir(g_tmpdir, 0777);
    for (int i = 0; i < g_ntests; i++) {
        test_entry *t = &g_tests[i];
        if (argc > 1) {
            int want = 0;
            char id[512];
            snprintf(id, sizeof id, "%s:%s", t->file, t->name);
            for (int a = 1; a < argc; a++) {
                /* a substring of "file:name"; a trailing '$': the end of it */
                size_t n = strlen(argv[a]), m = strlen(id);
                if (n && argv[a][n - 1] == '$') want |= m >= n - 1 && !strncmp(id + m - (n - 1), argv[a], n - 1);
                else if (strstr(id, argv[a])) want = 1;
            }
            if (!want) continue;
        }
        const char *base = strrchr(t->file, '/');
        base = base ? base + 1 : t->file;
        printf("%-28s %-44s ", base, t->name);
        fflush(stdout);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        pid_t pid = fork();
        if (pid == 0) {
            setpgid(0, 0); /* the test and what it starts: one group, ended with it */
            char dir[700];
            snprintf(dir, sizeof dir, "%s/%s", g_tmpdir, t->name);
            mkdir(dir, 0777);
            snprintf(g_tmpdir, sizeof g_tmpdir, "%s", dir);
            alarm(900);
            ds_test_fails = 0;
            t->fn();
            fflush(stdout);
            fflush(stderr);
            _exit(ds_test_fails ? 1 : g_skipped ? 77 : 0);
        }
        setpgid(pid, pid); /* either side may run first */
        int st = 0;
        waitpid(pid, &st, 0);
        kill(-pid, SIGKILL); /* what it left running (a command past its alarm, a server not stopped) */
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double dt = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) { passed++; printf("ok    (%.2fs)\n", dt); }
        else if (WIFEXITED(st) && WEXITSTATUS(st) == 77) { skipped++; printf("skip\n"); }
        else {
            failed++;
            if (WIFSIGNALED(st)) printf("FAIL  (signal %d)\n", WTERMSIG(st));
            else printf("FAIL\n");
            size_t l = strlen(failed_names);
            snprintf(failed_names + l, sizeof failed_names - l, " %s", t->name);
        }
        fflush(stdout);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmpdir);
    if (system(cmd) != 0) { /* best effort */ }
    if (failed) printf("failed:%s\n", failed_names);
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
