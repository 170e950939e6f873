/*
 * cmd_data.c — `dsv3 data prepare`: text files and JSONL to token shards.
 *
 *   dsv3 data prepare --tokenizer T --input FILE|DIR [...] --out DIR
 *        [--val-fraction F] [--split-prob P] [--docs file|blank|line]
 *        [--seed S] [--shard-tokens N]
 *
 * Documents: a .jsonl line's "text" field; a .txt file is one document, or
 * (--docs blank) pieces separated by blank lines, or (--docs line) one per
 * line.  Each document goes to the validation split with probability F
 * (seeded, so the split is reproducible); a corpus of a single document gives
 * its last F of lines to validation instead.  Documents are tokenized in
 * parallel in batches and written as DIR/train_NNN.bin and DIR/val_NNN.bin
 * (format: src/io/shard.h), each preceded by the separator (BOS, else EOS)
 * and, when the tokenizer has both BOS and EOS and no --sep is given,
 * followed by EOS.
 * --split-prob P applies the token-boundary randomization (DeepSeek-V3 §4.1)
 * to the training split.  tokenizer.json is copied to DIR.
 *
 * Nothing is written before every input is checked (the tokenizer loads, a
 * separator exists, every input file is readable, DIR is new, empty, or -
 * with --force - a data folder of dsv3's).  The folder is built as
 * DIR.tmp-XXXXXX beside DIR and renamed to DIR at the end (with --force,
 * swapped with the old folder, which is then deleted), so a failed run
 * leaves an existing DIR as it was and no partial DIR behind.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "cli/cli.h"
#include "io/shard.h"
#include "tokenizer/tok_config.h"
#include "tokenizer/tokenizer.h"

typedef struct {
    const char **v;
    int n, cap;
} strvec;

static void sv_push(strvec *s, const char *x) {
    if (s->n == s->cap) { s->cap = s->cap ? 2 * s->cap : 16; s->v = ds_realloc(s->v, s->cap * sizeof *s->v); }
    s->v[s->n++] = x;
}

static int has_ext(const char *p, const char *ext) {
    size_t a = strlen(p), b = strlen(ext);
    return a >= b && strcmp(p + a - b, ext) == 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Expand inputs: files as given, folders recursively (*.txt, *.jsonl), sorted. */
static int collect(const char *path, strvec *out) {
    struct stat st;
    if (stat(path, &st) != 0) return ds_err("%s: no such file or directory", path);
    if (!S_ISDIR(st.st_mode)) { sv_push(out, ds_strdup(path)); return 0; }
    DIR *d = opendir(path);
    if (!d) return ds_err("%s: cannot open directory", path);
    strvec names = {0};
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') sv_push(&names, ds_path_join(path, e->d_name));
    closedir(d);
    qsort(names.v, names.n, sizeof *names.v, cmp_str);
    int rc = 0;
    for (int i = 0; i < names.n && rc == 0; i++) {
        struct stat s2;
        if (stat(names.v[i], &s2) == 0 && (S_ISDIR(s2.st_mode) || has_ext(names.v[i], ".txt") ||
                                           has_ext(names.v[i], ".jsonl")))
            rc = collect(names.v[i], out);
    }
    for (int i = 0; i < names.n; i++) free((void *)names.v[i]);
    free(names.v);
    return rc;
}

/* A batch of documents waiting to be tokenized (texts point into owned buffers). */
typedef struct {
    const char **text;
    size_t *len;
    uint8_t *is_val;
    int64_t n, cap;
    char **owned;
    int64_t nowned;
    size_t bytes;
} docbatch;

static void db_add(docbatch *b, const char *t, size_t len, int is_val) {
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 1024;
        b->text = ds_realloc(b->text, b->cap * sizeof *b->text);
        b->len = ds_realloc(b->len, b->cap * sizeof *b->len);
        b->is_val = ds_realloc(b->is_val, b->cap);
    }
    b->text[b->n] = t;
    b->len[b->n] = len;
    b->is_val[b->n] = (uint8_t)is_val;
    b->n++;
    b->bytes += len;
}

static void db_own(docbatch *b, char *buf) {
    b->owned = ds_realloc(b->owned, (b->nowned + 1) * sizeof *b->owned);
    b->owned[b->nowned++] = buf;
}

static void db_clear(docbatch *b) {
    for (int64_t i = 0; i < b->nowned; i++) free(b->owned[i]);
    b->nowned = 0;
    b->n = 0;
    b->bytes = 0;
}

typedef struct {
    const ds_tokenizer *tok;
    const char *outdir;
    uint32_t vocab;
    int32_t sep;
    int32_t end;               /* EOS after each document (BOS ... EOS), or -1 */
    uint64_t hash;
    int64_t shard_tokens;
    ds_encode_opts train_opts, val_opts;
    ds_shard_writer w[2];      /* 0 = train, 1 = val */
    int open[2], index[2];
    int64_t tokens[2], docs[2];
    size_t bytes[2];
    ds_progress prog;
    size_t bytes_done;
} prep;

static int open_shard(prep *p, int split) {
    char name[64];
    snprintf(name, sizeof name, "%s_%03d.bin", split ? "val" : "train", p->index[split]++);
    char *path = ds_path_join(p->outdir, name);
    int rc = ds_shard_writer_open(&p->w[split], path, p->vocab, p->sep, p->hash);
    free(path);
    if (rc == 0) p->open[split] = 1;
    return rc;
}

static int flush(prep *p, docbatch *b) {
    if (b->n == 0) return 0;
    ds_ids *ids = ds_calloc(b->n, sizeof *ids);
    /* the training split gets the boundary randomization; val is encoded plainly */
    int rc = 0;
    for (int split = 0; split < 2 && rc == 0; split++) {
        int64_t k = 0;
        const char **t = ds_malloc(b->n * sizeof *t);
        size_t *l = ds_malloc(b->n * sizeof *l);
        int64_t *where = ds_malloc(b->n * sizeof *where);
        for (int64_t i = 0; i < b->n; i++)
            if (b->is_val[i] == split) { t[k] = b->text[i]; l[k] = b->len[i]; where[k] = i; k++; }
        ds_ids *sub = ds_calloc(k ? k : 1, sizeof *sub);
        if (k) rc = ds_tokenizer_encode_batch(p->tok, k, t, l, split ? &p->val_opts : &p->train_opts, sub);
        for (int64_t j = 0; j < k; j++) ids[where[j]] = sub[j];
        free(sub); free(t); free(l); free(where);
    }
    for (int64_t i = 0; i < b->n && rc == 0; i++) {
        int s = b->is_val[i];
        if (p->open[s] && p->w[s].n_tokens + ids[i].n + 1 > (uint64_t)p->shard_tokens && p->w[s].n_tokens > 0) {
            rc = ds_shard_writer_commit(&p->w[s]);
            p->open[s] = 0;
        }
        if (rc == 0 && !p->open[s]) rc = open_shard(p, s);
        if (p->end >= 0) ds_ids_push(&ids[i], p->end);
        if (rc == 0) rc = ds_shard_writer_doc(&p->w[s], ids[i].ids, ids[i].n);
        p->tokens[s] += ids[i].n + 1;
        p->docs[s]++;
        p->bytes[s] += b->len[i];
    }
    for (int64_t i = 0; i < b->n; i++) ds_ids_free(&ids[i]);
    free(ids);
    p->bytes_done += b->bytes;
    ds_progress_update(&p->prog, (double)p->bytes_done / 1e6);
    db_clear(b);
    return rc;
}

enum { DOCS_FILE, DOCS_BLANK, DOCS_LINE };

/* Cut a .txt file into documents and queue them. */
static void queue_txt(docbatch *b, char *buf, size_t len, int mode, double valf, ds_rng *rng) {
    db_own(b, buf);
    if (mode == DOCS_FILE) {
        /* a single document: its last valf of lines are validation */
        size_t cut = len;
        if (valf > 0) {
            cut = (size_t)((double)len * (1.0 - valf));
            while (cut < len && buf[cut] != '\n') cut++;
            if (cut < len) cut++;
        }
        if (cut > 0) db_add(b, buf, cut, 0);
        if (cut < len) db_add(b, buf + cut, len - cut, 1);
        return;
    }
    size_t i = 0;
    while (i < len) {
        size_t start = i, end;
        if (mode == DOCS_LINE) {
            while (i < len && buf[i] != '\n') i++;
            end = i;
            if (i < len) i++;
        } else {
            /* up to a blank line (only whitespace between two newlines) */
            for (;;) {
                while (i < len && buf[i] != '\n') i++;
                if (i >= len) { end = i; break; }
                size_t j = i + 1;
                while (j < len && buf[j] != '\n' && isspace((unsigned char)buf[j])) j++;
                if (j >= len || buf[j] == '\n') { end = i; i = j < len ? j + 1 : j; break; }
                i++;
            }
        }
        size_t s = start;
        while (s < end && (buf[s] == '\n' || buf[s] == '\r')) s++;
        if (end > s) db_add(b, buf + s, end - s, ds_rng_uniform(rng) < valf);
    }
}

static int queue_jsonl(docbatch *b, char *buf, size_t len, const char *path, double valf, ds_rng *rng) {
    db_own(b, buf);
    int64_t line = 0;
    size_t i = 0;
    while (i < len) {
        size_t s = i;
        while (i < len && buf[i] != '\n') i++;
        size_t e = i;
        if (i < len) i++;
        line++;
        while (s < e && isspace((unsigned char)buf[s])) s++;
        if (s == e) continue;
        cJSON *j = cJSON_ParseWithLength(buf + s, e - s);
        cJSON *t = j ? cJSON_GetObjectItemCaseSensitive(j, "text") : NULL;
        if (!cJSON_IsString(t)) {
            cJSON_Delete(j);
            return ds_err("%s:%lld: %s", path, (long long)line,
                          j ? "no string field \"text\"" : "malformed JSON");
        }
        size_t n = strlen(t->valuestring);
        char *copy = ds_malloc(n + 1);
        memcpy(copy, t->valuestring, n + 1);
        cJSON_Delete(j);
        db_own(b, copy);
        db_add(b, copy, n, ds_rng_uniform(rng) < valf);
    }
    return 0;
}

/* A file name dsv3 data prepare writes: tokenizer.json, tokenizer_config.json, train_NNN.bin, val_NNN.bin. */
static int is_data_file(const char *name) {
    if (!strcmp(name, "tokenizer.json") || !strcmp(name, "tokenizer_config.json")) return 1;
    const char *rest = !strncmp(name, "train_", 6) ? name + 6 : !strncmp(name, "val_", 4) ? name + 4 : NULL;
    if (!rest || !isdigit((unsigned char)rest[0])) return 0;
    while (isdigit((unsigned char)*rest)) rest++;
    return !strcmp(rest, ".bin");
}

/* What is at out: 0 nothing, 1 an empty folder, 2 a data folder (only
 * data files); -1 with a message for anything else. */
static int out_state(const char *out) {
    struct stat st;
    if (stat(out, &st) != 0) {
        if (errno == ENOENT) return 0;
        return ds_err("%s: %s", out, strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) return ds_err("%s: exists and is not a folder", out);
    DIR *d = opendir(out);
    if (!d) return ds_err("%s: cannot open folder: %s", out, strerror(errno));
    int n = 0, other = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        n++;
        if (!is_data_file(e->d_name)) other = 1;
    }
    closedir(d);
    if (other) return ds_err("%s: exists and holds files other than a data folder's (refusing to write there)", out);
    return n ? 2 : 1;
}

/* Put the finished folder tmp at out (state: out_state(out) before the run). */
static int install(const char *tmp, const char *out, int state) {
    if (state == 1 && rmdir(out) != 0) return ds_err("%s: cannot replace the empty folder: %s", out, strerror(errno));
    if (state != 2) {
        if (rename(tmp, out) != 0) return ds_err("%s: cannot rename %s to it: %s", out, tmp, strerror(errno));
        return 0;
    }
    /* swap atomically where the file system can; else two renames */
#ifdef RENAME_EXCHANGE
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, out, RENAME_EXCHANGE) == 0) {
        ds_remove_flat_dir(tmp); /* now the old folder */
        return 0;
    }
#endif
    size_t n = strlen(out) + 32;
    char *old = ds_malloc(n);
    snprintf(old, n, "%s.old-%d", out, (int)getpid());
    if (rename(out, old) != 0) {
        free(old);
        return ds_err("%s: cannot move the old folder aside: %s", out, strerror(errno));
    }
    if (rename(tmp, out) != 0) {
        int err = errno;
        rename(old, out);
        free(old);
        return ds_err("%s: cannot rename %s to it: %s", out, tmp, strerror(err));
    }
    ds_remove_flat_dir(old);
    free(old);
    return 0;
}

static int prepare(int argc, char **argv) {
    const char *tokpath = NULL, *out = NULL, *docs = "file", *sep = NULL;
    ds_strlist inputs = {0};
    double valf = 0.01, splitp = 0;
    long long seed = 1234, shard_tokens = 100000000;
    int force = 0;
    ds_opt opts[] = {
        {"--tokenizer", DS_OPT_STR, &tokpath, "PATH     tokenizer.json (or its folder)"},
        {"--input", DS_OPT_MULTI, &inputs, "PATH...  .txt / .jsonl files or folders of them"},
        {"--out", DS_OPT_STR, &out, "DIR      output folder for train_*.bin, val_*.bin"},
        {"--val-fraction", DS_OPT_FLOAT, &valf, "F        share of documents for validation (0.01)"},
        {"--split-prob", DS_OPT_FLOAT, &splitp, "P        token-boundary randomization on train (0)"},
        {"--docs", DS_OPT_STR, &docs, "MODE     .txt documents: file (default), blank, line"},
        {"--seed", DS_OPT_INT, &seed, "S        seed of the split and randomization (1234)"},
        {"--shard-tokens", DS_OPT_INT, &shard_tokens, "N        tokens per shard (100M)"},
        {"--sep", DS_OPT_STR, &sep, "TOKEN    document separator (default: BOS, else EOS, else special id 0)"},
        {"--force", DS_OPT_FLAG, &force, "         replace DIR when it is an existing data folder"},
    };
    int nopts = sizeof opts / sizeof *opts;
    ds_cli_parse("data prepare", "--tokenizer T --input PATH... --out DIR [options]", argc, argv, opts,
                 nopts, NULL, 0, NULL);
    if (!tokpath || !out || inputs.n == 0)
        ds_cli_usage_error("data prepare", "--tokenizer, --input and --out are required");
    int mode = !strcmp(docs, "file") ? DOCS_FILE : !strcmp(docs, "blank") ? DOCS_BLANK
             : !strcmp(docs, "line") ? DOCS_LINE : -1;
    if (mode < 0) ds_cli_usage_error("data prepare", "--docs must be file, blank or line, not %s", ds_quote(docs));
    if (!(valf >= 0 && valf < 1)) ds_cli_usage_error("data prepare", "--val-fraction must be in [0, 1)");
    if (!(splitp >= 0 && splitp <= 1)) ds_cli_usage_error("data prepare", "--split-prob must be in [0, 1]");
    if (shard_tokens < 1024) ds_cli_usage_error("data prepare", "--shard-tokens must be at least 1024");

    /* ---- check every input before writing anything ---- */
    ds_tokenizer *tok = ds_tokenizer_load(tokpath);
    if (!tok) return ds_cli_fail("data prepare");
    /* hash the exact tokenizer.json bytes; copy them beside the shards */
    struct stat st;
    char *tjpath = (stat(tokpath, &st) == 0 && S_ISDIR(st.st_mode)) ? ds_path_join(tokpath, "tokenizer.json")
                                                                    : ds_strdup(tokpath);
    size_t tjlen = 0;
    char *tj = ds_read_file(tjpath, &tjlen);
    prep p = {0};
    p.tok = tok;
    p.hash = tj ? ds_hash64(tj, tjlen, DS_HASH64_INIT) : 0;
    p.vocab = (uint32_t)ds_tokenizer_vocab_size(tok);
    if (sep) p.sep = ds_tokenizer_token_to_id(tok, sep);
    else if (ds_tokenizer_bos_id(tok) >= 0) p.sep = ds_tokenizer_bos_id(tok);
    else if (ds_tokenizer_eos_id(tok) >= 0) p.sep = ds_tokenizer_eos_id(tok);
    else p.sep = ds_tokenizer_is_special(tok, 0) ? 0 : -1; /* trained tokenizers put specials first */
    /* a tokenizer with both BOS and EOS (tokenizer train makes them): each
     * document is BOS ... EOS, so a trained model learns to end a document
     * with EOS and generation stops there; --sep keeps one separator only */
    p.end = -1;
    if (!sep && p.sep >= 0 && p.sep == ds_tokenizer_bos_id(tok) && ds_tokenizer_eos_id(tok) >= 0 &&
        ds_tokenizer_eos_id(tok) != p.sep)
        p.end = ds_tokenizer_eos_id(tok);
    p.shard_tokens = shard_tokens;
    p.train_opts = (ds_encode_opts){.allow_special = 0, .split_punct_nl_p = splitp, .seed = (uint64_t)seed};
    p.val_opts = (ds_encode_opts){.allow_special = 0};
    int rc = tj ? 0 : -1;
    if (rc == 0 && p.sep < 0 && sep) rc = ds_err("%s: --sep %s is not a token of this tokenizer", tjpath, ds_quote(sep));
    else if (rc == 0 && p.sep < 0)
        rc = ds_err("%s: the tokenizer has no BOS, EOS or special token to separate documents (use --sep)", tjpath);
    strvec files = {0};
    for (int i = 0; i < inputs.n && rc == 0; i++) rc = collect(inputs.v[i], &files);
    if (rc == 0 && files.n == 0) rc = ds_err("no .txt or .jsonl input files found");
    for (int i = 0; i < files.n && rc == 0; i++) {
        FILE *f = fopen(files.v[i], "rb");
        if (!f) rc = ds_err("%s: cannot read: %s", files.v[i], strerror(errno));
        else fclose(f);
    }
    /* the output: new, an empty folder, or (--force) a data folder to replace */
    char *outdir = ds_strdup(out);
    for (size_t k = strlen(outdir); k > 1 && outdir[k - 1] == '/'; k--) outdir[k - 1] = 0;
    int state = rc == 0 ? out_state(outdir) : 0;
    if (state < 0) rc = -1;
    if (rc == 0 && state == 2 && !force)
        rc = ds_err("%s: already holds a data folder (tokenizer.json, shards); --force replaces it", outdir);
    /* ---- build it beside the output ---- */
    char *tmp = NULL;
    if (rc == 0) {
        char *slash = strrchr(outdir, '/');
        if (slash && slash != outdir) {
            *slash = 0;
            rc = ds_mkdir_p(outdir);
            *slash = '/';
        }
    }
    if (rc == 0) {
        size_t n = strlen(outdir) + 16;
        tmp = ds_malloc(n);
        snprintf(tmp, n, "%s.tmp-XXXXXX", outdir);
        if (!mkdtemp(tmp)) {
            rc = ds_err("%s: cannot create: %s", tmp, strerror(errno));
            free(tmp);
            tmp = NULL;
        }
    }
    p.outdir = tmp;
    if (rc == 0) ds_log(DS_LOG_INFO, "document separator: id %d %s%s%s", p.sep, ds_tokenizer_id_to_token(tok, p.sep),
                        p.end >= 0 ? ", each document ended by " : "", p.end >= 0 ? ds_tokenizer_id_to_token(tok, p.end) : "");
    if (rc == 0) {
        char *tjout = ds_path_join(tmp, "tokenizer.json");
        rc = ds_write_file_atomic(tjout, tj, tjlen);
        free(tjout);
        if (rc == 0) rc = ds_folder_write_tokenizer(tmp, tokpath, 0); /* and tokenizer_config.json (BOS/EOS) */
    }
    free(tj);
    size_t total = 0;
    for (int i = 0; i < files.n; i++)
        if (stat(files.v[i], &st) == 0) total += (size_t)st.st_size;
    ds_rng rng;
    ds_rng_seed(&rng, (uint64_t)seed);
    docbatch b = {0};
    double t0 = ds_now();
    ds_progress_start(&p.prog, "tokenizing", (double)total / 1e6, "MB");
    for (int i = 0; i < files.n && rc == 0; i++) {
        size_t len;
        char *buf = ds_read_file(files.v[i], &len);
        if (!buf) { rc = -1; break; }
        if (has_ext(files.v[i], ".jsonl")) rc = queue_jsonl(&b, buf, len, files.v[i], valf, &rng);
        else queue_txt(&b, buf, len, mode, valf, &rng);
        if (rc == 0 && b.bytes >= (32u << 20)) rc = flush(&p, &b);
    }
    if (rc == 0) rc = flush(&p, &b);
    db_clear(&b);
    free(b.text); free(b.len); free(b.is_val); free(b.owned);
    for (int s = 0; s < 2; s++)
        if (p.open[s]) {
            if (rc == 0) rc = ds_shard_writer_commit(&p.w[s]);
            else ds_shard_writer_abort(&p.w[s]);
        }
    if (rc == 0 && p.docs[0] == 0) rc = ds_err("no training documents (all input went to validation or was empty)");
    if (rc == 0) rc = install(tmp, outdir, state);
    else if (tmp) ds_remove_flat_dir(tmp);
    free(tmp);
    free(outdir);
    double dt = ds_now() - t0;
    if (rc == 0) {
        ds_progress_end(&p.prog, (double)total / 1e6);
        printf("train: %lld docs, %lld tokens (%d shards); val: %lld docs, %lld tokens; "
               "%.2f bytes/token; %.1f MB/s\n",
               (long long)p.docs[0], (long long)p.tokens[0], p.index[0], (long long)p.docs[1],
               (long long)p.tokens[1],
               (double)(p.bytes[0] + p.bytes[1]) / (double)(p.tokens[0] + p.tokens[1] ? p.tokens[0] + p.tokens[1] : 1),
               (double)p.bytes_done / 1e6 / (dt > 0 ? dt : 1e-9));
    }
    for (int i = 0; i < files.n; i++) free((void *)files.v[i]);
    free(files.v);
    free(inputs.v);
    free(tjpath);
    ds_tokenizer_free(tok);
    return rc == 0 ? 0 : ds_cli_fail("data prepare");
}

static int cmd_data(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        FILE *f = argc < 2 ? stderr : stdout;
        fprintf(f, "usage: dsv3 data prepare --tokenizer T --input PATH... --out DIR [options]\n"
                   "  'dsv3 data prepare --help' for the options\n");
        ds_cli_print_examples(f, "data");
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "prepare")) return prepare(argc - 1, argv + 1);
    fprintf(stderr, "dsv3 data: unknown subcommand %s\n", ds_quote(argv[1]));
    return 2;
}

DS_COMMAND("data", "prepare token shards from text/JSONL (data prepare)", cmd_data)
