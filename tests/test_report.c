/*
 * test_report.c — `dsv3 report`, `dsv3 train --report --tensorboard` and
 * `dsv3 ablate` through the binary.
 * Oracles: train_log.jsonl read here with cJSON (the page's plotted values
 * must equal it), DeepSeek-V3's bias update rule (bias_1 = γ·sign(mean load −
 * load)), headless Chromium (the page renders, no console message, a
 * screenshot is not blank), and tensorboard's own event reader
 * (tools/check_tfevents.py).  The Chromium and tensorboard tests skip, saying
 * why, when those are not installed (.ci/install-deps.sh installs chromium).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "base/base.h"
#include "report/report.h"
#include "test.h"

static const char *bin(void) { return getenv("DSV3") ? getenv("DSV3") : "./dsv3"; }

static void write_synthetic(const char *path) { ds_test_write_word_salad(path, 7, 800); }

/* Shards in DIR/data, then a tiny run DIR/NAME of `steps` steps with `extra`
 * options; 0 on success. */
static int make_data(const char *dir) {
    char corpus[1024], out[4096];
    snprintf(corpus, sizeof corpus, "%s/corpus.txt", dir);
    write_synthetic(corpus);
    int rc = ds_test_sh(out, sizeof out,
                        "%s tokenizer train --input %s --vocab-size 280 --special-tokens '<|bos|>' '<|eos|>' --out %s/tok.json"
                        " && %s data prepare --tokenizer %s/tok.json --input %s --out %s/data --docs line --val-fraction 0.05",
                        bin(), corpus, dir, bin(), dir, corpus, dir);
    if (rc) fprintf(stderr, "  prepare: %s\n", out);
    return rc;
}

static int make_run(const char *dir, const char *name, int steps, const char *extra) {
    char out[8192];
    int rc = ds_test_sh(out, sizeof out,
                        "cd %s && %s%s --threads 2 train --config tiny --data data --out %s --steps %d --batch 2 --seq 32 "
                        "--eval-every 8 --eval-batches 2 --log-every 0 %s",
                        dir, bin()[0] == '/' ? "" : "$OLDPWD/", bin(), name, steps, extra);
    if (rc) fprintf(stderr, "  train: %s\n", out);
    return rc;
}

static char *slurp(const char *dir, const char *name) {
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    size_t len;
    return ds_read_file(p, &len);
}

/* The JSON records of a train_log.jsonl that hold key. */
static cJSON *log_records(const char *path, const char *key) {
    size_t len;
    char *s = ds_read_file(path, &len);
    cJSON *arr = cJSON_CreateArray();
    for (char *line = s ? strtok(s, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        if (j && cJSON_GetObjectItemCaseSensitive(j, key)) cJSON_AddItemToArray(arr, j);
        else cJSON_Delete(j);
    }
    free(s);
    return arr;
}

TEST(report_assets_current) {
    /* the embedded script and style are the files in src/report/ (tools/embed_report_assets.py) */
    size_t len;
    char *js = ds_read_file("src/report/report.js", &len), *css = ds_read_file("src/report/report.css", &len);
    CHECK(js && css);
    if (js) CHECK_MSG(!strcmp(js, ds_report_js), "src/report/report_assets.c is stale: run tools/embed_report_assets.py");
    if (css) CHECK_MSG(!strcmp(css, ds_report_css), "src/report/report_assets.c is stale: run tools/embed_report_assets.py");
    free(js), free(css);
}

TEST(train_report_run_info_and_bias) {
    const char *dir = ds_test_tmpdir();
    CHECK(make_data(dir) == 0);
    TEST_RETURN_IF_FAILED();
    CHECK(make_run(dir, "run", 12, "--report --bias-gamma 0.01") == 0);
    TEST_RETURN_IF_FAILED();
    char *page = slurp(dir, "run/report.html"), *info = slurp(dir, "run/run.json");
    CHECK(page && info);
    if (page) {
        CHECK(strstr(page, "id=\"dsv3-data\"") != NULL);
        CHECK(strstr(page, "http://") == NULL || strstr(page, "http://www.w3.org/2000/svg") != NULL);
        CHECK(strstr(page, "<script src") == NULL && strstr(page, "<link") == NULL); /* nothing fetched */
        CHECK(strstr(page, "\"val_bpb\"") != NULL);                                   /* an evaluation's record */
    }
    cJSON *j = info ? cJSON_Parse(info) : NULL;
    CHECK(j != NULL);
    if (j) {
        const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(j, "command");
        CHECK(cJSON_IsArray(cmd) && cJSON_GetArraySize(cmd) > 5);
        int has_train = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, cmd) has_train |= cJSON_IsString(it) && !strcmp(it->valuestring, "--report");
        CHECK(has_train);
        CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "dsv3_version")));
        CHECK(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(j, "git")));
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "machine");
        CHECK(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(m, "threads")));
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(j, "options");
        CHECK(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, "seed")));
        const cJSON *mc = cJSON_GetObjectItemCaseSensitive(j, "model_config");
        CHECK(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(mc, "n_routed_experts")));
        cJSON_Delete(j);
    }
    /* the logged biases follow DeepSeek-V3's update from the logged loads:
     * after step 1, b_e = γ·sign(mean load − load_e) */
    char lp[2048];
    snprintf(lp, sizeof lp, "%s/run/train_log.jsonl", dir);
    cJSON *recs = log_records(lp, "bias");
    CHECK(cJSON_GetArraySize(recs) == 12);
    cJSON *r1 = cJSON_GetArrayItem(recs, 0);
    const cJSON *load = cJSON_GetObjectItemCaseSensitive(r1, "load"), *bias = cJSON_GetObjectItemCaseSensitive(r1, "bias");
    CHECK(cJSON_GetArraySize(load) == cJSON_GetArraySize(bias) && cJSON_GetArraySize(load) >= 1);
    for (int l = 0; l < cJSON_GetArraySize(load); l++) {
        const cJSON *ld = cJSON_GetArrayItem(load, l), *bs = cJSON_GetArrayItem(bias, l);
        int E = cJSON_GetArraySize(ld);
        double mean = 0;
        for (int e = 0; e < E; e++) mean += cJSON_GetArrayItem(ld, e)->valuedouble / E;
        for (int e = 0; e < E; e++) {
            double d = mean - cJSON_GetArrayItem(ld, e)->valuedouble;
            double want = d > 0 ? 0.01 : d < 0 ? -0.01 : 0;
            CHECK_NEAR(cJSON_GetArrayItem(bs, e)->valuedouble, want, 1e-8);
        }
    }
    cJSON_Delete(recs);
    free(page), free(info);
    /* no validation step in the run: the page of the last step */
    CHECK(make_run(dir, "noval", 3, "--report --eval-every 0") == 0);
    page = slurp(dir, "noval/report.html");
    CHECK(page && strstr(page, "{\"step\": 3, ") != NULL);
    free(page);
}

/* ---- the page in headless Chromium ------------------------------------------- */

static const char *chromium(void) {
    static char path[512];
    char out[512];
    if (ds_test_sh(out, sizeof out, "command -v chromium || command -v chromium-browser || command -v google-chrome") != 0)
        return NULL;
    out[strcspn(out, "\n")] = 0;
    snprintf(path, sizeof path, "%s", out);
    return path;
}

/* The attribute name="..." of a tag (text from '<' to '>'), malloc'ed, or NULL. */
static char *attr(const char *tag, size_t n, const char *name) {
    char pat[64];
    snprintf(pat, sizeof pat, " %s=\"", name);
    size_t pl = strlen(pat);
    for (size_t i = 0; i + pl < n; i++)
        if (!strncmp(tag + i, pat, pl)) {
            const char *v = tag + i + pl, *q = memchr(v, '"', n - (i + pl));
            if (!q) return NULL;
            char *r = ds_malloc((size_t)(q - v) + 1);
            memcpy(r, v, (size_t)(q - v));
            r[q - v] = 0;
            return r;
        }
    return NULL;
}

/* The data-x / data-y lists of the <path> of (run, metric) in the DOM; the
 * number of values, or -1 when there is no such path. */
static int plotted(const char *dom, int run, const char *metric, double *xs, double *ys, int cap) {
    char want_run[16];
    snprintf(want_run, sizeof want_run, "%d", run);
    for (const char *p = strstr(dom, "<path "); p; p = strstr(p + 1, "<path ")) {
        const char *end = strchr(p, '>');
        if (!end) break;
        size_t n = (size_t)(end - p);
        char *m = attr(p, n, "data-metric"), *r = attr(p, n, "data-run");
        int hit = m && r && !strcmp(m, metric) && !strcmp(r, want_run);
        free(m), free(r);
        if (!hit) continue;
        char *x = attr(p, n, "data-x"), *y = attr(p, n, "data-y");
        int k = 0;
        if (x && y && *x) {
            char *sx = x, *sy = y;
            while (k < cap && *sx) {
                xs[k] = strtod(sx, &sx);
                ys[k] = strtod(sy, &sy);
                k++;
                if (*sx == ',') sx++;
                if (*sy == ',') sy++;
            }
        }
        free(x), free(y);
        return k;
    }
    return -1;
}

/* Runs Chromium on page#verify: the DOM after the script ran into *dom, the
 * console lines into *console; a screenshot into png.  0 on success. */
static int render(const char *chrome, const char *page, const char *png, char **dom, char **console) {
    char dir[1024], out[256];
    snprintf(dir, sizeof dir, "%s", ds_test_tmpdir());
    const char *flags = "--headless --no-sandbox --disable-gpu --no-first-run --hide-scrollbars --user-data-dir=";
    int rc = ds_test_sh(out, sizeof out,
                        "cd %s && timeout 60 '%s' %s%s/chrome-profile --enable-logging=stderr --v=0 --dump-dom "
                        "'file://%s#verify' > dom.html 2> console.txt",
                        dir, chrome, flags, dir, page);
    if (rc) return rc;
    rc = ds_test_sh(out, sizeof out,
                    "cd %s && timeout 60 '%s' %s%s/chrome-profile --window-size=1200,1600 --screenshot='%s' 'file://%s' "
                    "> /dev/null 2>&1",
                    dir, chrome, flags, dir, png, page);
    *dom = slurp(dir, "dom.html");
    *console = slurp(dir, "console.txt");
    return rc || !*dom || !*console;
}

static long file_size(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

TEST(report_renders_in_chromium_with_the_logged_values) {
    const char *chrome = chromium();
    if (!chrome) SKIP("chromium not installed (.ci/install-deps.sh installs the Debian package)");
    const char *dir = ds_test_tmpdir();
    CHECK(make_data(dir) == 0);
    TEST_RETURN_IF_FAILED();
    CHECK(make_run(dir, "moe", 16, "") == 0);
    TEST_RETURN_IF_FAILED();
    /* a second run that logs other metrics: a dense model's log (no MTP, no
     * loads, no validation), with a truncated last line and a bad line */
    char p[2048];
    snprintf(p, sizeof p, "%s/dense", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/dense/train_log.jsonl", dir);
    FILE *f = fopen(p, "w");
    for (int s = 1; s <= 10; s++)
        fprintf(f, "{\"step\": %d, \"loss\": %.6g, \"lr\": 0.001, \"grad_norm\": %.4g, \"tokens\": %d}\n", s,
                6.0 - 0.25 * s, 1.0 / s, 64 * s);
    fputs("not json at all\n{\"step\": 11, \"loss\": 3.", f);
    fclose(f);
    char *absdir = realpath(dir, NULL);
    CHECK(absdir != NULL);
    if (!absdir) return;
    char page[2048], out[4096];
    snprintf(page, sizeof page, "%s/report.html", absdir);
    free(absdir);
    CHECK(ds_test_sh(out, sizeof out, "%s report %s/moe %s/dense --out %s", bin(), dir, dir, page) == 0);
    CHECK(strstr(out, "line 11") && strstr(out, "line 12")); /* said which lines were skipped */
    char png[2200];
    snprintf(png, sizeof png, "%s/shot.png", dir);
    char *dom = NULL, *console = NULL;
    CHECK(render(chrome, page, png, &dom, &console) == 0);
    TEST_RETURN_IF_FAILED();
    /* the script ran to the end, with no error and no console message */
    CHECK(strstr(dom, "data-rendered=\"1\"") != NULL);
    CHECK(strstr(dom, "data-error=\"") == NULL);
    CHECK_MSG(strstr(console, ":CONSOLE") == NULL, "console: %.300s", strstr(console, ":CONSOLE"));
    CHECK(strstr(dom, "(not logged)") != NULL); /* the dense run's MTP loss */
    CHECK(strstr(dom, "id=\"warnings\"") != NULL && strstr(dom, "2 lines of train_log.jsonl skipped") != NULL);
    /* the plotted points are the logged values */
    snprintf(p, sizeof p, "%s/moe/train_log.jsonl", dir);
    cJSON *tr = log_records(p, "loss"), *va = log_records(p, "val_bpb");
    static double xs[4096], ys[4096];
    const struct { const char *metric; cJSON *recs; } cases[] = {
        {"loss", tr}, {"mtp_loss", tr}, {"lr", tr}, {"grad_norm", tr}, {"tokens_per_s", tr}, {"val_bpb", va}, {"val_loss", va}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int n = plotted(dom, 0, cases[c].metric, xs, ys, 4096);
        CHECK_MSG(n == cJSON_GetArraySize(cases[c].recs) && n > 0, "%s: %d points", cases[c].metric, n);
        for (int i = 0; i < n && i < cJSON_GetArraySize(cases[c].recs); i++) {
            const cJSON *r = cJSON_GetArrayItem(cases[c].recs, i);
            CHECK(xs[i] == cJSON_GetObjectItemCaseSensitive(r, "step")->valuedouble);
            CHECK_MSG(ys[i] == cJSON_GetObjectItemCaseSensitive(r, cases[c].metric)->valuedouble, "%s step %d",
                      cases[c].metric, i + 1);
        }
    }
    /* MaxVio of MoE layer 0 from the loads: max / mean − 1 */
    int n = plotted(dom, 0, "maxvio_layer0", xs, ys, 4096);
    CHECK(n == cJSON_GetArraySize(tr));
    for (int i = 0; i < n; i++) {
        const cJSON *ld = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(tr, i), "load"), 0);
        double s = 0, mx = 0;
        int E = cJSON_GetArraySize(ld);
        for (int e = 0; e < E; e++) {
            double v = cJSON_GetArrayItem(ld, e)->valuedouble;
            s += v, mx = v > mx ? v : mx;
        }
        CHECK_NEAR(ys[i], mx / (s / E) - 1, 1e-12);
    }
    /* the dense run: its 10 valid records, no MTP points */
    CHECK(plotted(dom, 1, "loss", xs, ys, 4096) == 10);
    CHECK(ys[9] == 3.5);
    CHECK(plotted(dom, 1, "mtp_loss", xs, ys, 4096) == 0);
    cJSON_Delete(tr), cJSON_Delete(va);
    /* the screenshot is not blank: far larger than one of an empty page */
    char blank[2200];
    snprintf(blank, sizeof blank, "%s/blank.html", dir);
    CHECK(ds_write_file_atomic(blank, "<html><body></body></html>", 26) == 0);
    char bpng[2200];
    snprintf(bpng, sizeof bpng, "%s/blank.png", dir);
    char *d2 = NULL, *c2 = NULL;
    render(chrome, blank, bpng, &d2, &c2);
    long a = file_size(png), b = file_size(bpng);
    CHECK_MSG(a > 20000 && b > 0 && a > 5 * b, "screenshot %ld bytes, blank page %ld", a, b);
    free(d2), free(c2), free(dom), free(console);
}

TEST(report_bad_input) {
    const char *dir = ds_test_tmpdir();
    char out[4096], p[2048];
    /* a run folder without a log: one line, exit 1, no page */
    snprintf(p, sizeof p, "%s/empty", dir);
    mkdir(p, 0755);
    CHECK(ds_test_sh(out, sizeof out, "%s report %s/empty --out %s/r.html", bin(), dir, dir) == 1);
    CHECK(strstr(out, "train_log.jsonl") != NULL && strchr(out, '\n') == strrchr(out, '\n'));
    snprintf(p, sizeof p, "%s/r.html", dir);
    CHECK(!ds_file_exists(p));
    CHECK(ds_test_sh(out, sizeof out, "%s report %s/missing --out %s/r.html", bin(), dir, dir) == 1);
    CHECK(strstr(out, "no such run folder") != NULL);
    /* usage errors: exit 2 */
    CHECK(ds_test_sh(out, sizeof out, "%s report --out %s/r.html", bin(), dir) == 2);
    CHECK(ds_test_sh(out, sizeof out, "%s report %s/empty", bin(), dir) == 2);
    CHECK(ds_test_sh(out, sizeof out, "%s report %s/empty --out x.html --label a b", bin(), dir) == 2);
    CHECK(ds_test_sh(out, sizeof out, "%s report %s/empty --out x.html --colour red", bin(), dir) == 2);
    /* a log with a truncated line in the middle and at the end: the page is
     * made from the valid lines and lists the skipped ones */
    snprintf(p, sizeof p, "%s/cut/train_log.jsonl", dir);
    snprintf(out, sizeof out, "%s/cut", dir);
    mkdir(out, 0755);
    FILE *f = fopen(p, "w");
    fputs("{\"step\": 1, \"loss\": 5.5, \"lr\": 0.001}\n{\"step\": 2, \"loss\": 5.\n{\"step\": 3, \"loss\": 5.25, \"lr\": 0.002}\n"
          "[1, 2]\n{\"step\": 4, \"lo", f);
    fclose(f);
    CHECK(ds_test_sh(out, sizeof out, "%s report %s/cut --out %s/cut.html", bin(), dir, dir) == 0);
    CHECK(strstr(out, "line 2") && strstr(out, "line 4") && strstr(out, "line 5") && strstr(out, "cut short"));
    char *page = slurp(dir, "cut.html");
    CHECK(page && strstr(page, "\"skipped_total\": 3") != NULL);
    CHECK(page && strstr(page, "{\"step\": 3, \"loss\": 5.25, \"lr\": 0.002}") != NULL);
    CHECK(page && strstr(page, "\"step\": 2, \"loss\": 5.\n") == NULL);
    free(page);
    /* an attached file of an unknown kind, a --baseline that is not a run */
    snprintf(p, sizeof p, "%s/x.json", dir);
    CHECK(ds_write_file_atomic(p, "{\"a\": 1}", 8) == 0);
    CHECK(ds_test_sh(out, sizeof out, "%s report %s/cut --out %s/c2.html --attach %s", bin(), dir, dir, p) == 1);
    CHECK(strstr(out, "neither") != NULL);
    CHECK(ds_test_sh(out, sizeof out, "%s report %s/cut --out %s/c2.html --baseline bf16", bin(), dir, dir) == 1);
    CHECK(strstr(out, "not one of the runs") != NULL);
    /* a raw control character inside a string: valid for cJSON, not for the
     * page's JSON.parse: skipped (found by fuzz/fuzz_report_log.c) */
    snprintf(p, sizeof p, "%s/cut/train_log.jsonl", dir);
    CHECK(ds_write_file_atomic(p, "{\"step\": 1, \"loss\": 2}\n{\"step\": 2, \"skipped\": \"a\tb\"}\n", 53) == 0);
    CHECK(ds_test_sh(out, sizeof out, "%s report %s/cut --out %s/c4.html", bin(), dir, dir) == 0);
    CHECK(strstr(out, "line 2: a control character inside a string") != NULL);
    page = slurp(dir, "c4.html");
    CHECK(page && strstr(page, "\"skipped_total\": 1") != NULL);
    free(page);
    /* a script end tag inside a logged string cannot end the data block */
    snprintf(p, sizeof p, "%s/cut/train_log.jsonl", dir);
    CHECK(ds_write_file_atomic(p, "{\"step\": 1, \"skipped\": \"</script><b>\"}\n", 38) == 0);
    CHECK(ds_test_sh(out, sizeof out, "%s report %s/cut --out %s/c3.html", bin(), dir, dir) == 0);
    page = slurp(dir, "c3.html");
    CHECK(page && strstr(page, "<\\/script><b>") != NULL);
    free(page);
}

TEST(tensorboard_files_read_by_tensorboard) {
    char out[4096];
    if (ds_test_sh(out, sizeof out, "python3 -c 'import tensorboard.backend.event_processing.event_accumulator'") != 0)
        SKIP("python3 tensorboard package not installed (pip install tensorboard): tools/check_tfevents.py not run");
    const char *dir = ds_test_tmpdir();
    CHECK(make_data(dir) == 0);
    TEST_RETURN_IF_FAILED();
    CHECK(make_run(dir, "run", 10, "--tensorboard tb") == 0);
    TEST_RETURN_IF_FAILED();
    int rc = ds_test_sh(out, sizeof out, "python3 tools/check_tfevents.py %s/run %s/tb", dir, dir);
    CHECK_MSG(rc == 0, "%s", out);
    CHECK(strstr(out, ": ok") != NULL);
    /* `dsv3 report --tensorboard` writes the same scalars from the log */
    CHECK(ds_test_sh(out, sizeof out, "%s report %s/run --out %s/r.html --label r1 --tensorboard %s/tb2", bin(), dir, dir, dir) == 0);
    rc = ds_test_sh(out, sizeof out, "python3 tools/check_tfevents.py %s/run %s/tb2/r1", dir, dir);
    CHECK_MSG(rc == 0, "%s", out);
}

TEST(ablate_cli) {
    const char *dir = ds_test_tmpdir();
    char out[8192];
    CHECK(ds_test_sh(out, sizeof out, "%s ablate --data x --steps 2", bin()) == 2);
    CHECK(ds_test_sh(out, sizeof out, "%s ablate --data x --what balanse --steps 2", bin()) == 2);
    CHECK(strstr(out, "balance") != NULL);
    CHECK(ds_test_sh(out, sizeof out, "%s ablate --data x --what mtp", bin()) == 2);
    CHECK(ds_test_sh(out, sizeof out, "%s ablate --data x --what mtp --steps 2 --minutes 1", bin()) == 2);
    CHECK(make_data(dir) == 0);
    TEST_RETURN_IF_FAILED();
    int rc = ds_test_sh(out, sizeof out,
                        "cd %s && %s%s --threads 2 ablate --data data --what balance --steps 6 --batch 2 --seq 32 "
                        "--eval-every 3 --out abl",
                        dir, bin()[0] == '/' ? "" : "$OLDPWD/", bin());
    CHECK_MSG(rc == 0, "%.2000s", out);
    TEST_RETURN_IF_FAILED();
    /* three runs, the same seed, steps and tokens; the balance options differ */
    const char *names[] = {"aux-free", "aux-loss", "none"};
    for (int i = 0; i < 3; i++) {
        char p[2048];
        snprintf(p, sizeof p, "%s/abl/%s/train_log.jsonl", dir, names[i]);
        cJSON *tr = log_records(p, "loss");
        CHECK(cJSON_GetArraySize(tr) == 6);
        const cJSON *last = cJSON_GetArrayItem(tr, 5);
        CHECK(last && cJSON_GetObjectItemCaseSensitive(last, "tokens")->valuedouble == 6 * 2 * 32);
        cJSON_Delete(tr);
        snprintf(p, sizeof p, "abl/%s/run.json", names[i]);
        char *info = slurp(dir, p);
        CHECK(info && strstr(info, "\"seed\": 1234") && strstr(info, names[i]));
        free(info);
    }
    char *page = slurp(dir, "abl/report.html");
    CHECK(page && strstr(page, "\"what\": \"balance\"") != NULL);
    CHECK(page && strstr(page, "\"variant\": \"aux-loss\"") != NULL);
    free(page);
    /* --what mtp: the MTP acceptance measures are percentages */
    rc = ds_test_sh(out, sizeof out,
                    "cd %s && %s%s --threads 2 ablate --data data --what mtp --steps 3 --batch 2 --seq 32 --eval-every 3 "
                    "--out ablm --prompts 'the king' --gen-tokens 8 2>&1",
                    dir, bin()[0] == '/' ? "" : "$OLDPWD/", bin());
    CHECK_MSG(rc == 0, "%.2000s", out);
    char *aj = slurp(dir, "ablm/ablation.json");
    cJSON *j = aj ? cJSON_Parse(aj) : NULL;
    const cJSON *v0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "variants"), 0);
    const cJSON *v1 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "variants"), 1);
    const cJSON *pv = cJSON_GetObjectItemCaseSensitive(v0, "mtp_acceptance_val_pct");
    const cJSON *pg = cJSON_GetObjectItemCaseSensitive(v0, "mtp_acceptance_generated_pct");
    CHECK(cJSON_IsNumber(pv) && pv->valuedouble >= 0 && pv->valuedouble <= 100);
    CHECK(cJSON_IsNumber(pg) && pg->valuedouble >= 0 && pg->valuedouble <= 100);
    CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(v1, "mtp_acceptance_val_pct"))); /* no MTP: not measured */
    cJSON_Delete(j);
    free(aj);
    /* the page remade from OUT/ablation.json, from another folder */
    CHECK(ds_test_sh(out, sizeof out, "cd / && %s%s report --ablation %s%s/abl/ablation.json --out %s%s/again.html",
                     bin()[0] == '/' ? "" : "$OLDPWD/", bin(), dir[0] == '/' ? "" : "$OLDPWD/", dir,
                     dir[0] == '/' ? "" : "$OLDPWD/", dir) == 0);
    page = slurp(dir, "again.html");
    CHECK(page && strstr(page, "\"ablation\": {\"baseline\": null, \"what\": \"balance\"") != NULL);
    CHECK(page && strstr(page, "\"label\": \"none\"") != NULL);
    free(page);
}

TEST(report_thins_routing_arrays_of_long_logs) {
    /* 1200 records with loads: every scalar stays, the per-expert arrays of
     * every 3rd record (and the last) do: at most 500 */
    const char *dir = ds_test_tmpdir();
    char p[2048], out[4096];
    snprintf(p, sizeof p, "%s/long", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/long/train_log.jsonl", dir);
    FILE *f = fopen(p, "w");
    for (int s = 1; s <= 1200; s++)
        fprintf(f, "{\"step\": %d, \"loss\": %.17g, \"load\": [[%d, 2, 3, 4]], \"bias\": [[0.5, 0, 0, -0.5]]}\n", s,
                5.0 / s, s);
    fclose(f);
    CHECK(ds_test_sh(out, sizeof out, "%s report %s/long --out %s/long.html", bin(), dir, dir) == 0);
    char *page = slurp(dir, "long.html");
    CHECK(page != NULL);
    if (!page) return;
    char *a = strstr(page, "id=\"dsv3-data\">"), *b = a ? strstr(a, "</script>") : NULL;
    CHECK(a && b);
    if (!a || !b) return;
    *b = 0;
    cJSON *d = cJSON_Parse(a + strlen("id=\"dsv3-data\">"));
    CHECK(d != NULL);
    const cJSON *recs = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(d, "runs"), 0), "records");
    CHECK(cJSON_GetArraySize(recs) == 1200);
    int nload = 0, k = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, recs) {
        k++;
        CHECK(cJSON_GetObjectItemCaseSensitive(r, "loss")->valuedouble == 5.0 / k); /* exact, thinned or not */
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(r, "load");
        if (l) {
            nload++;
            CHECK(cJSON_GetArrayItem(cJSON_GetArrayItem(l, 0), 0)->valuedouble == k);
            CHECK(cJSON_GetObjectItemCaseSensitive(r, "bias") != NULL);
        } else {
            CHECK(cJSON_GetObjectItemCaseSensitive(r, "bias") == NULL);
        }
    }
    CHECK_MSG(nload == 401, "%d records keep their loads", nload);
    cJSON_Delete(d);
    free(page);
}

/* ablate --device: every variant (training, the MTP measures: the speculative
 * generate and the teacher-forced agreement by the table's argmax) on the
 * device-resident path; under the test device fakedev (memory the host cannot
 * touch) the losses and the MTP measures equal --device cpu's. */
TEST(ablate_device_resident_fakedev) {
    const char *dir = ds_test_tmpdir();
    char out[8192], got[2][8192];
    CHECK(make_data(dir) == 0);
    TEST_RETURN_IF_FAILED();
    const char *dev[2] = {"cpu", "fakedev"};
    for (int i = 0; i < 2; i++) {
        int rc = ds_test_sh(out, sizeof out,
                            "cd %s && %s%s --threads 2 ablate --data data --what mtp --steps 2 --batch 2 --seq 16 "
                            "--eval-every 2 --eval-batches 1 --out abl_%s --prompts 'the king' --gen-tokens 6 --device %s 2>&1 "
                            "| grep 'MTP' && grep -ho '\"loss\": [^,]*' abl_%s/*/train_log.jsonl",
                            dir, bin()[0] == '/' ? "" : "$OLDPWD/", bin(), dev[i], dev[i], dev[i]);
        CHECK_MSG(rc == 0 && strstr(out, "MTP draft = ") && strstr(out, "\"loss\""), "--device %s: %.2000s", dev[i], out);
        snprintf(got[i], sizeof got[i], "%s", out);
    }
    CHECK_MSG(!strcmp(got[0], got[1]), "cpu:\n%s\nfakedev:\n%s", got[0], got[1]);
}
