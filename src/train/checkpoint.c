/*
 * checkpoint.c — atomic training checkpoints (format: checkpoint.h).
 */
#include "train/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"
#include "io/safetensors.h"
#include "tokenizer/tok_config.h"

static int fsync_path(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return ds_err("%s: cannot open for fsync: %s", path, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    return rc ? ds_err("%s: fsync: %s", path, strerror(errno)) : 0;
}

static int fault_at(const char *what, int64_t step) {
    const char *f = getenv("DSV3_FAULT");
    size_t n = strlen(what);
    return f && !strncmp(f, what, n) && f[n] == ':' && atoll(f + n + 1) == step;
}

static int write_state(const char *path, const ds_train_state *st, const void *mom, const void *vel, int64_t n,
                       int m16) {
    int64_t step[1] = {st->step}, loader[1] = {st->loader}, rng[4], budget[7];
    for (int i = 0; i < 4; i++) rng[i] = (int64_t)st->rng[i];
    budget[0] = st->total_steps, budget[1] = st->warmup, budget[2] = st->tokens_per_step;
    budget[3] = (int64_t)st->data_hash, budget[4] = st->batch, budget[5] = st->seq, budget[6] = st->accum;
    double hp[6] = {st->peak_lr, st->min_lr, st->decay_start, st->gamma, st->gamma_until, st->tokens_seen};
    ds_dtype md = m16 ? DS_BF16 : DS_F32;
    ds_st_entry e[] = {
        {"adam.m", md, 1, {n}, mom},       {"adam.v", md, 1, {n}, vel},
        {"step", DS_I64, 1, {1}, step},    {"loader", DS_I64, 1, {1}, loader},
        {"rng", DS_I64, 1, {4}, rng},      {"budget", DS_I64, 1, {7}, budget},
        {"hparams", DS_F64, 1, {6}, hp},
    };
    const char *const meta[] = {"format", "dsv3-train-state", st->options[0] ? "train_options" : NULL,
                                st->options, NULL};
    return ds_st_write(path, e, 7, meta);
}

static int ckpt_step_of(const char *name, int64_t *step) {
    if (strncmp(name, "ckpt-", 5)) return 0;
    char *end;
    long long s = strtoll(name + 5, &end, 10);
    if (*end || end == name + 5) return 0;
    *step = s;
    return 1;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void prune(const char *run, int64_t keep) {
    if (keep <= 0) return;
    DIR *d = opendir(run);
    if (!d) return;
    int64_t *steps = NULL, n = 0, cap = 0, s;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!ckpt_step_of(e->d_name, &s)) continue;
        if (n == cap) cap = cap ? 2 * cap : 16, steps = ds_realloc(steps, (size_t)cap * sizeof *steps);
        steps[n++] = s;
    }
    closedir(d);
    qsort(steps, (size_t)n, sizeof *steps, cmp_i64);
    for (int64_t i = 0; i + keep < n; i++) {
        char name[64];
        snprintf(name, sizeof name, "ckpt-%lld", (long long)steps[i]);
        char *p = ds_path_join(run, name);
        ds_remove_flat_dir(p);
        free(p);
    }
    free(steps);
}

int ds_ckpt_save(const char *run, const ds_model *m, const char *tokenizer_json, const ds_train_state *st,
                 const void *mom, const void *vel, int64_t n, int m16, int64_t keep) {
    char name[64], tmpname[80];
    snprintf(name, sizeof name, "ckpt-%lld", (long long)st->step);
    snprintf(tmpname, sizeof tmpname, ".tmp-%s", name);
    char *fin = ds_path_join(run, name), *tmp = ds_path_join(run, tmpname);
    char *sp = ds_path_join(tmp, "train_state.safetensors");
    int rc = -1;
    ds_remove_flat_dir(tmp); /* a leftover of an interrupted save */
    if (ds_mkdir_p(tmp)) goto out;
    if (ds_model_save(m, tmp)) goto fail;
    if (fault_at("save", st->step)) {
        ds_err("%s: train_state.safetensors: write failed: No space left on device (injected by DSV3_FAULT)",
               name);
        goto fail;
    }
    /* tokenizer.json and tokenizer_config.json (the data's, or one made from its BOS/EOS) */
    if (tokenizer_json && ds_folder_write_tokenizer(tmp, tokenizer_json, m->cfg.max_position_embeddings)) goto fail;
    if (write_state(sp, st, mom, vel, n, m16)) goto fail;
    if (fsync_path(tmp)) goto fail;
    ds_remove_flat_dir(fin); /* a same-step checkpoint is replaced */
    if (rename(tmp, fin)) {
        ds_err("%s: rename to %s: %s", tmp, fin, strerror(errno));
        goto fail;
    }
    /* RUN/latest -> ckpt-<step>, replaced atomically */
    char *lt = ds_path_join(run, ".tmp-latest"), *ln = ds_path_join(run, "latest");
    unlink(lt);
    if (symlink(name, lt) || rename(lt, ln)) {
        ds_err("%s: cannot point at %s: %s", ln, name, strerror(errno));
        unlink(lt);
        free(lt), free(ln);
        goto out;
    }
    free(lt), free(ln);
    fsync_path(run);
    prune(run, keep);
    rc = 0;
    goto out;
fail:
    ds_err_prefix("saving checkpoint %s", fin);
    ds_remove_flat_dir(tmp);
out:
    free(fin), free(tmp), free(sp);
    return rc;
}

char *ds_ckpt_latest(const char *run) {
    struct stat sb;
    if (stat(run, &sb) || !S_ISDIR(sb.st_mode)) {
        ds_err("%s: no such run folder", run);
        return NULL;
    }
    char *ln = ds_path_join(run, "latest");
    char *st = ds_path_join(ln, "train_state.safetensors");
    int ok = ds_file_exists(st);
    free(st);
    if (!ok) {
        free(ln);
        ds_err("%s: no checkpoint to resume from (latest/train_state.safetensors missing)", run);
        return NULL;
    }
    return ln;
}

static int read_exact(const ds_st_file *f, const char *name, ds_dtype dt, int64_t n, void *out, size_t esz) {
    const ds_st_tensor *t = ds_st_find(f, name);
    if (!t) return ds_err("%s: tensor %s missing", f->path, ds_quote(name));
    if (t->dtype != dt || t->ndim != 1 || t->numel != n)
        return ds_err("%s: tensor %s: expected %lld values of dtype %d, found %lld of dtype %d", f->path, ds_quote(name),
                      (long long)n, (int)dt, (long long)t->numel, (int)t->dtype);
    memcpy(out, t->data, (size_t)n * esz);
    return 0;
}

int ds_ckpt_map_moments(const char *dir, int64_t n, int m16, ds_st_file *f, const void **mom, const void **vel) {
    char *p = ds_path_join(dir, "train_state.safetensors");
    int rc = ds_st_open(f, p);
    free(p);
    if (rc) return -1;
    ds_dtype md = m16 ? DS_BF16 : DS_F32;
    const char *names[2] = {"adam.m", "adam.v"};
    const void **out[2] = {mom, vel};
    for (int k = 0; k < 2; k++) {
        const ds_st_tensor *t = ds_st_find(f, names[k]);
        if (!t || t->dtype != md || t->ndim != 1 || t->numel != n) {
            ds_err("%s: tensor %s: expected %lld values of dtype %d%s", f->path, ds_quote(names[k]), (long long)n, (int)md,
                   t ? ", found others" : ", missing");
            ds_st_close(f);
            return -1;
        }
        *out[k] = t->data;
    }
    return 0;
}

void ds_ckpt_remove_partial(const char *run) {
    DIR *d = opendir(run);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, ".tmp-ckpt-", 10)) continue;
        char *p = ds_path_join(run, e->d_name);
        ds_remove_flat_dir(p);
        free(p);
    }
    closedir(d);
}

int ds_ckpt_load_state_only(const char *dir, ds_train_state *st) {
    return ds_ckpt_load_state(dir, st, NULL, NULL, 0, 0);
}

int ds_ckpt_load_state(const char *dir, ds_train_state *st, void *mom, void *vel, int64_t n, int m16) {
    char *p = ds_path_join(dir, "train_state.safetensors");
    ds_st_file f;
    int rc = ds_st_open(&f, p);
    free(p);
    if (rc) return -1;
    int64_t step, loader, rng[4], budget[7];
    double hp[6];
    ds_dtype md = m16 ? DS_BF16 : DS_F32;
    size_t ms = m16 ? 2 : 4;
    rc = read_exact(&f, "step", DS_I64, 1, &step, 8) || read_exact(&f, "loader", DS_I64, 1, &loader, 8) ||
         read_exact(&f, "rng", DS_I64, 4, rng, 8) || read_exact(&f, "budget", DS_I64, 7, budget, 8) ||
         read_exact(&f, "hparams", DS_F64, 6, hp, 8) || (mom && read_exact(&f, "adam.m", md, n, mom, ms)) ||
         (vel && read_exact(&f, "adam.v", md, n, vel, ms));
    st->options[0] = 0;
    for (int64_t i = 0; !rc && i < f.n_meta; i++)
        if (!strcmp(f.meta_keys[i], "train_options")) snprintf(st->options, sizeof st->options, "%s", f.meta_vals[i]);
    ds_st_close(&f);
    if (rc) return -1;
    st->step = step, st->loader = loader;
    for (int i = 0; i < 4; i++) st->rng[i] = (uint64_t)rng[i];
    st->total_steps = budget[0], st->warmup = budget[1], st->tokens_per_step = budget[2];
    st->data_hash = (uint64_t)budget[3], st->batch = budget[4], st->seq = budget[5], st->accum = budget[6];
    st->peak_lr = hp[0], st->min_lr = hp[1], st->decay_start = hp[2], st->gamma = hp[3];
    st->gamma_until = hp[4], st->tokens_seen = hp[5];
    return 0;
}
