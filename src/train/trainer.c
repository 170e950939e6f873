/*
 * trainer.c — the training loop of trainer.h, validation, MFU accounting and
 * the end-of-run sampler.
 */
#include "train/trainer.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/profile.h"
#include "base/base.h"
#include "io/json.h"
#include "model/backward.h"
#include "model/presets.h"
#include "infer/infer.h"
#include "tokenizer/tokenizer.h"
#include "train/adamw.h"
#include "train/optim.h"
#include "train/balance.h"
#include "train/checkpoint.h"
#include "train/loader.h"
#include "train/zero.h"
#include "train/pp.h"
#include "model/moe_ep.h"
#include "model/expert_shard.h"

/* ---- memory report ------------------------------------------------------------- */

void ds_train_memory_of(ds_train_memory *r, const ds_model *m, const struct ds_ops *ops, int64_t B, int64_t T, int mtp,
                        int bf16_moments, int precision, int fp8_cache, size_t bwd_bytes) {
    const ds_config *c = &m->cfg;
    memset(r, 0, sizeof *r);
    size_t n = (size_t)m->layout.total;
    r->params = r->grads = n * sizeof(float);
    r->moments_fp32 = 2 * n * sizeof(float);
    r->moments = bf16_moments ? 2 * n * sizeof(uint16_t) : r->moments_fp32;
    r->acts_fp32 = ds_acts_arena_bytes(m, B, T, mtp, 0);
    r->acts_fp8 = ds_acts_arena_bytes(m, B, T, mtp, DS_ACTS_FP8_CACHE);
    r->acts = precision == DS_PREC_FP8 && fp8_cache ? r->acts_fp8 : r->acts_fp32;
    r->bwd = bwd_bytes;
    {
        /* every linear (rows, out, in), rows <= B*T (an expert sees a token at most once) */
        const int64_t N = B * T, H = c->hidden_size, nh = c->num_attention_heads, dq = ds_config_qk_head_dim(c);
        const int64_t dn = c->qk_nope_head_dim, dv = c->v_head_dim, dr = c->qk_rope_head_dim;
        const int64_t rq = c->q_lora_rank, rkv = c->kv_lora_rank, Im = c->moe_intermediate_size;
        int64_t I = c->intermediate_size > Im * c->n_shared_experts ? c->intermediate_size : Im * c->n_shared_experts;
        const int64_t lin[][2] = {{rq > 0 ? rq : nh * dq, H}, {nh * dq, rq > 0 ? rq : H}, {rkv + dr, H},
                                  {nh * (dn + dv), rkv},     {H, nh * dv},               {I, H},
                                  {H, I},                    {Im, H},                    {H, Im}};
        size_t best = 0;
        for (size_t i = 0; i < sizeof lin / sizeof lin[0]; i++) {
            size_t ws = ops->linear_workspace(N, lin[i][1], lin[i][0]);
            if (ws > best) best = ws;
        }
        r->fp8_ws = best;
    }
    /* the weights' copies kept per step (backend/cpu/wcache.h): at most 2 bytes
     * a parameter in BF16, 1 byte and a scale per 128x128 block (with slack) in FP8 */
    r->weight_copies = !ops->weights_epoch                ? 0
                       : precision == DS_PREC_BF16 ? n * sizeof(uint16_t)
                       : precision == DS_PREC_FP8  ? n + n / 1024
                                                   : 0;
    r->weight_copies_fp8 = precision == DS_PREC_FP8;
    r->total = r->params + r->grads + r->moments + r->acts + r->bwd + r->fp8_ws * (size_t)ds_threads() + r->weight_copies;
}

static double mib(size_t b) { return (double)b / (1024.0 * 1024.0); }

void ds_train_memory_log(const ds_train_memory *r) {
    ds_log(DS_LOG_INFO, "memory: parameters %.1f MiB, gradients %.1f MiB, AdamW moments %.1f MiB (%s; FP32 %.1f MiB)",
           mib(r->params), mib(r->grads), mib(r->moments), r->moments < r->moments_fp32 ? "bf16" : "fp32",
           mib(r->moments_fp32));
    ds_log(DS_LOG_INFO, "memory: activation arena %.1f MiB (FP32 %.1f MiB, with --fp8-cache %.1f MiB: %.1f MiB saved, %.1f%%)",
           mib(r->acts), mib(r->acts_fp32), mib(r->acts_fp8), mib(r->acts_fp32 - r->acts_fp8),
           r->acts_fp32 ? 100.0 * (double)(r->acts_fp32 - r->acts_fp8) / (double)r->acts_fp32 : 0.0);
    char ev[128] = "";
    if (r->eval_acts) snprintf(ev, sizeof ev, ", validation arena %.1f MiB", mib(r->eval_acts));
    if (r->weight_copies)
        snprintf(ev + strlen(ev), sizeof ev - strlen(ev), ", %s weight copies %.1f MiB", r->weight_copies_fp8 ? "FP8" : "BF16",
                 mib(r->weight_copies));
    ds_log(DS_LOG_INFO, "memory: backward workspace %.1f MiB, FP8 quantization workspace %.1f MiB per thread%s; "
           "total %.1f MiB (--bf16-moments saves %.1f MiB)",
           mib(r->bwd), mib(r->fp8_ws), ev, mib(r->total), mib(r->moments_fp32 / 2));
}

void ds_train_memory_json(char *buf, size_t cap, const ds_train_memory *r) {
    snprintf(buf, cap,
             "\"mem_params\": %zu, \"mem_grads\": %zu, \"mem_moments\": %zu, \"mem_moments_fp32\": %zu, "
             "\"mem_acts\": %zu, \"mem_acts_fp32\": %zu, \"mem_acts_fp8_cache\": %zu, \"mem_bwd\": %zu, "
             "\"mem_fp8_ws_per_thread\": %zu, \"mem_eval_acts\": %zu, \"mem_weight_copies\": %zu, \"mem_total\": %zu",
             r->params, r->grads, r->moments, r->moments_fp32, r->acts, r->acts_fp32, r->acts_fp8, r->bwd, r->fp8_ws,
             r->eval_acts, r->weight_copies, r->total);
}

ds_train_opts ds_train_opts_default(void) {
    ds_train_opts o;
    memset(&o, 0, sizeof o);
    o.batch = 8, o.seq = 128, o.accum = 1;
    o.balance = DS_TRAIN_AUX_FREE;
    o.gamma = 0.001, o.gamma_until = 0.97;
    o.v2_a1 = 0.003, o.v2_a2 = 0.05, o.v2_a3 = 0.02; /* DeepSeek-V2 */
    o.mtp_lambda = 0.3;                                /* DeepSeek-V3, first 10T tokens */
    o.lr = 3e-3, o.min_lr = 3e-4, o.weight_decay = 0.1, o.clip = 1.0, o.decay_start = 0.5;
    o.warmup = 20;
    o.eval_every = 100, o.eval_batches = 16, o.save_every = 0, o.keep = 2, o.log_every = 1;
    o.seed = 1234;
    o.sample_tokens = 64, o.temperature = 0.8;
    return o;
}

/* ---- the options a checkpoint keeps ------------------------------------- */

static const char *prec_name(int p) { return p == DS_PREC_BF16 ? "bf16" : p == DS_PREC_FP8 ? "fp8" : "fp32"; }

static const char *balance_name(int b) {
    return b == DS_TRAIN_AUX_FREE ? "aux-free" : b == DS_TRAIN_AUX_LOSS ? "aux-loss" : "none";
}

void ds_train_options_json(const ds_train_opts *o, char *buf, size_t cap) {
    ds_sbuf b = {0};
    ds_sbuf_puts(&b, "{\"config\": ");
    ds_json_put_string(&b, o->config ? o->config : "");
    ds_sbuf_printf(&b, ", \"precision\": \"%s\", \"balance\": \"%s\"", prec_name(o->precision), balance_name(o->balance));
    const struct { const char *k; double v; } d[] = {
        {"bias_gamma", o->gamma}, {"gamma_until", o->gamma_until}, {"seq_aux_alpha", o->seq_alpha},
        {"mtp_lambda", o->mtp_lambda}, {"lr", o->lr}, {"min_lr", o->min_lr}, {"decay_start", o->decay_start},
        {"weight_decay", o->weight_decay}, {"clip", o->clip},
    };
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) ds_sbuf_printf(&b, ", \"%s\": %.17g", d[i].k, d[i].v);
    ds_sbuf_printf(&b, ", \"warmup\": %lld, \"bf16_moments\": %d, \"fp8_cache\": %d, \"seed\": %llu, \"batch\": %lld, "
                       "\"seq\": %lld, \"grad_accum\": %lld, \"threads\": %d",
                   (long long)o->warmup, o->bf16_moments, o->fp8_cache, (unsigned long long)o->seed, (long long)o->batch,
                   (long long)o->seq, (long long)o->accum, ds_threads());
    ds_sbuf_printf(&b, ", \"eval_every\": %lld, \"eval_batches\": %lld, \"save_every\": %lld, \"keep\": %lld, "
                       "\"log_every\": %lld, \"skip_nonfinite\": %d}",
                   (long long)o->eval_every, (long long)o->eval_batches, (long long)o->save_every, (long long)o->keep,
                   (long long)o->log_every, o->skip_nonfinite);
    char *t = ds_sbuf_take(&b);
    snprintf(buf, cap, "%s", t);
    free(t);
}

int ds_train_saved_opts(const char *run, ds_train_opts *saved, int *has_json, int64_t *threads, int64_t *step) {
    *saved = ds_train_opts_default();
    *has_json = 0, *threads = 0;
    char *dir = ds_ckpt_latest(run);
    if (!dir) return -1;
    ds_train_state st;
    int rc = ds_ckpt_load_state_only(dir, &st);
    if (rc) {
        free(dir);
        return -1;
    }
    *step = st.step;
    saved->lr = st.peak_lr, saved->min_lr = st.min_lr, saved->decay_start = st.decay_start;
    saved->gamma = st.gamma, saved->gamma_until = st.gamma_until, saved->warmup = st.warmup;
    saved->batch = st.batch, saved->seq = st.seq, saved->accum = st.accum;
    if (!st.options[0]) {
        free(dir);
        return 0;
    }
    char what[600];
    snprintf(what, sizeof what, "%s/train_state.safetensors: train_options", dir);
    free(dir);
    cJSON *j = ds_json_parse(st.options, strlen(st.options), what);
    if (!j) return -1;
    static char config[1024]; /* the saved config outlives this call (one resume per process) */
    const cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "config")) && cJSON_IsString(v) && v->valuestring[0]) {
        snprintf(config, sizeof config, "%s", v->valuestring);
        saved->config = config;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "precision")) && cJSON_IsString(v))
        saved->precision = !strcmp(v->valuestring, "bf16") ? DS_PREC_BF16 : !strcmp(v->valuestring, "fp8") ? DS_PREC_FP8 : DS_PREC_FP32;
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "balance")) && cJSON_IsString(v))
        saved->balance = !strcmp(v->valuestring, "aux-loss") ? DS_TRAIN_AUX_LOSS
                         : !strcmp(v->valuestring, "none")   ? DS_TRAIN_BAL_NONE
                                                             : DS_TRAIN_AUX_FREE;
    struct { const char *k; double *d; int64_t *i; int *n; uint64_t *u; } f[] = {
        {"bias_gamma", &saved->gamma, 0, 0, 0},       {"gamma_until", &saved->gamma_until, 0, 0, 0},
        {"seq_aux_alpha", &saved->seq_alpha, 0, 0, 0}, {"mtp_lambda", &saved->mtp_lambda, 0, 0, 0},
        {"lr", &saved->lr, 0, 0, 0},                   {"min_lr", &saved->min_lr, 0, 0, 0},
        {"decay_start", &saved->decay_start, 0, 0, 0}, {"weight_decay", &saved->weight_decay, 0, 0, 0},
        {"clip", &saved->clip, 0, 0, 0},               {"warmup", 0, &saved->warmup, 0, 0},
        {"bf16_moments", 0, 0, &saved->bf16_moments, 0}, {"fp8_cache", 0, 0, &saved->fp8_cache, 0},
        {"seed", 0, 0, 0, &saved->seed},               {"batch", 0, &saved->batch, 0, 0},
        {"seq", 0, &saved->seq, 0, 0},                 {"grad_accum", 0, &saved->accum, 0, 0},
        {"threads", 0, threads, 0, 0},
        {"eval_every", 0, &saved->eval_every, 0, 0},   {"eval_batches", 0, &saved->eval_batches, 0, 0},
        {"save_every", 0, &saved->save_every, 0, 0},   {"keep", 0, &saved->keep, 0, 0},
        {"log_every", 0, &saved->log_every, 0, 0},     {"skip_nonfinite", 0, 0, &saved->skip_nonfinite, 0},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        v = cJSON_GetObjectItemCaseSensitive(j, f[i].k);
        if (!v || !cJSON_IsNumber(v)) continue;
        if (f[i].d) *f[i].d = v->valuedouble;
        else if (f[i].i) *f[i].i = (int64_t)v->valuedouble;
        else if (f[i].n) *f[i].n = (int)v->valuedouble;
        else *f[i].u = (uint64_t)v->valuedouble;
    }
    cJSON_Delete(j);
    *has_json = 1;
    return 0;
}

/* The step of a train_log.jsonl line ({"step": N, ...}), or -1. */
static int64_t log_line_step(const char *line) {
    static const char key[] = "{\"step\": ";
    if (strncmp(line, key, sizeof key - 1)) return -1;
    return strtoll(line + sizeof key - 1, NULL, 10);
}

int ds_train_log_truncate(const char *run, int64_t step, int64_t *dropped) {
    *dropped = 0;
    char *path = ds_path_join(run, "train_log.jsonl");
    if (!ds_file_exists(path)) {
        free(path);
        return 0;
    }
    size_t len;
    char *s = ds_read_file(path, &len);
    if (!s) {
        free(path);
        return -1;
    }
    char *out = ds_malloc(len + 1);
    size_t n = 0;
    for (char *line = s; line < s + len;) {
        char *nl = memchr(line, '\n', (size_t)(s + len - line));
        size_t ll = nl ? (size_t)(nl - line + 1) : (size_t)(s + len - line);
        if (!nl) {
            (*dropped)++; /* a record cut short by the kill */
        } else if (log_line_step(line) > step) {
            (*dropped)++;
        } else {
            memcpy(out + n, line, ll);
            n += ll;
        }
        line += ll;
    }
    int rc = *dropped ? ds_write_file_atomic(path, out, n) : 0;
    free(s), free(out), free(path);
    return rc;
}

/* ---- helpers ------------------------------------------------------------- */

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

typedef struct {
    double loss, bpb, maxvio;
    int64_t tokens, bytes;
    int ok;
} eval_result;

/* Validation over up to nb batches of the val split (file order). */
static eval_result evaluate_on(const ds_model *m, const struct ds_ops *ops, ds_acts *a, ds_loader *val, int64_t nb,
                               const int64_t *tok_bytes, float *losses, int32_t *ids, int32_t *tgt, int32_t *dtgt,
                               int64_t *load) {
    eval_result r = {0};
    if (!val || val->nbatches == 0) return r;
    const ds_config *c = &m->cfg;
    int64_t nt = a->B * a->T, E = c->n_routed_experts;
    if (nb <= 0 || nb > val->nbatches) nb = val->nbatches;
    int64_t L = c->num_hidden_layers;
    memset(load, 0, sizeof(int64_t) * (size_t)(L * (E > 0 ? E : 1)));
    double nats = 0;
    ds_loader_seek(val, 0);
    for (int64_t b = 0; b < nb; b++) {
        ds_loader_next_batch(val, ids, tgt);
        for (int64_t i = 0; i < nt; i++) r.bytes += tok_bytes[tgt[i]];
        if (ds_model_forward(m, a, ops, ids)) return r;
        /* Σ −log p(target) of the batch (every position counts) */
        if (dtgt != tgt) ops->copy_h2d(dtgt, tgt, (size_t)nt * sizeof(int32_t));
        nats += ops->cross_entropy(NULL, losses, NULL, a->logits, dtgt, nt, c->vocab_size, DS_IGNORE_INDEX, 1.0f);
        for (int64_t l = 0; l < L; l++)
            if (m->blocks[l].moe)
                for (int64_t e = 0; e < E; e++) load[l * E + e] += a->blk[l].counts_h[e];
        r.tokens += nt;
    }
    r.loss = nats / (double)r.tokens;
    r.bpb = r.bytes ? nats / log(2.0) / (double)r.bytes : 0;
    for (int64_t l = 0; l < L; l++)
        if (m->blocks[l].moe) {
            ds_routing_stats rs = ds_routing_stats_of(load + l * E, E);
            if (rs.maxvio > r.maxvio) r.maxvio = rs.maxvio;
        }
    r.ok = 1;
    return r;
}

/* a device-resident model: the targets and per-position losses in its memory */
static eval_result evaluate(const ds_model *m, const struct ds_ops *ops, ds_acts *a, ds_loader *val, int64_t nb,
                            const int64_t *tok_bytes, float *losses, int32_t *ids, int32_t *tgt, int64_t *load) {
    const struct ds_ops *dev = m->mem && !m->mem->host_visible ? m->mem : NULL;
    int32_t *dtgt = dev ? ds_model_mem_alloc(dev, (size_t)(a->B * a->T) * sizeof(int32_t)) : tgt;
    float *dloss = dev ? ds_model_mem_alloc(dev, (size_t)(a->B * a->T) * sizeof(float)) : losses;
    eval_result r = {0};
    if (dtgt && dloss) r = evaluate_on(m, ops, a, val, nb, tok_bytes, dloss, ids, tgt, dtgt, load);
    if (dev) ds_model_mem_free(dev, dtgt), ds_model_mem_free(dev, dloss);
    return r;
}

/* ---- sampler -------------------------------------------------------------- */

/* generation stops at an id the tokenizer cannot decode (a model vocabulary
 * larger than the tokenizer's) */
static int outside_vocab(void *ctx, int32_t id) { return id >= *(const int64_t *)ctx; }

char *ds_sample_text(const ds_model *m, const struct ds_ops *ops, const ds_tokenizer *tok, const char *prompt, int64_t ntokens,
                     double temperature, uint64_t seed) {
    int32_t *pids = NULL;
    int64_t n0 = ds_tokenizer_encode(tok, prompt, strlen(prompt), 0, &pids);
    if (n0 < 0) return NULL;
    int32_t bos = ds_tokenizer_bos_id(tok), eos = ds_tokenizer_eos_id(tok);
    if (bos < 0) bos = eos;
    /* documents start after the separator in the shards */
    int32_t *seq = ds_malloc((size_t)(n0 + 1) * sizeof(int32_t));
    int64_t n = 0;
    if (bos >= 0) seq[n++] = bos;
    memcpy(seq + n, pids, (size_t)n0 * sizeof(int32_t));
    n += n0;
    free(pids);
    int64_t maxp = m->cfg.max_position_embeddings, skip = n >= maxp ? n - maxp + 1 : 0; /* the prompt's last positions */
    int64_t stop[2], nstop = 0, Vt = ds_tokenizer_vocab_size(tok);
    if (bos >= 0) stop[nstop++] = bos;
    if (eos >= 0 && eos != bos) stop[nstop++] = eos;
    ds_gen_opts go = {.max_tokens = ntokens, .sp = {temperature, 0, 1.0, seed}, .eos = stop, .neos = (int)nstop};
    int32_t *gen_ids = ds_malloc((size_t)(ntokens > 0 ? ntokens : 1) * sizeof(int32_t));
    int64_t ng = 0;
    ds_gen_stats st;
    int rc = ds_generate(m, ops, seq + skip, n - skip, &go, gen_ids, &ng, outside_vocab, &Vt, &st);
    free(seq);
    if (rc) {
        free(gen_ids);
        return NULL;
    }
    if (st.stopped && ng > 0) ng--; /* the separator, EOS or undecodable id is not text */
    char *gen = ds_tokenizer_decode(tok, gen_ids, ng, 1, NULL);
    free(gen_ids);
    size_t lp = strlen(prompt), lg = gen ? strlen(gen) : 0;
    char *out = ds_malloc(lp + lg + 1);
    memcpy(out, prompt, lp);
    if (gen) memcpy(out + lp, gen, lg);
    out[lp + lg] = 0;
    free(gen);
    return out;
}

/* ---- the loop ---------------------------------------------------------------- */

/* A checkpoint of a run over world->size processes: the moment blocks
 * gathered, rank 0 writes (atomically, checkpoint.h), every rank learns
 * whether it worked. */
static int save_all(ds_comm *world, ds_zero1 *z, const char *run, const ds_model *m, const char *tjpath,
                    const ds_train_state *st, const void *mom, const void *vel, int64_t n, int m16, int64_t keep) {
    if (world->size == 1 && m->mem && !m->mem->host_visible) { /* device-resident moments: through the host */
        size_t nb = (size_t)n * (m16 ? 2 : 4);
        void *hm = ds_malloc(nb ? nb : 1), *hv = ds_malloc(nb ? nb : 1);
        m->mem->copy_d2h(hm, mom, nb);
        m->mem->copy_d2h(hv, vel, nb);
        int rc = ds_ckpt_save(run, m, tjpath, st, hm, hv, n, m16, keep);
        free(hm), free(hv);
        return rc;
    }
    if (world->size == 1) return ds_ckpt_save(run, m, tjpath, st, mom, vel, n, m16, keep);
    int es = m16 ? 2 : 4;
    void *fm = ds_malloc((size_t)n * (size_t)es), *fv = ds_malloc((size_t)n * (size_t)es), *hm = NULL, *hv = NULL;
    if (z->mem) { /* device-resident moment blocks: through the host */
        size_t bb = (size_t)ds_zero1_block(z) * (size_t)es;
        hm = ds_malloc(bb + 1), hv = ds_malloc(bb + 1);
        z->mem->copy_d2h(hm, mom, bb);
        z->mem->copy_d2h(hv, vel, bb);
        mom = hm, vel = hv;
    }
    int64_t rc = ds_zero1_gather_state(z, mom, fm, es) || ds_zero1_gather_state(z, vel, fv, es);
    free(hm), free(hv);
    if (!rc && world->rank == 0) rc = ds_ckpt_save(run, m, tjpath, st, fm, fv, n, m16, keep) != 0;
    free(fm), free(fv);
    if (ds_bcast(world, &rc, 1, DS_COMM_I64, 0)) return -1;
    if (rc && world->rank != 0) return ds_err("checkpoint: rank 0 failed to save (its message above)");
    return rc ? -1 : 0;
}

/* The whole model of an expert-sharded run on rank 0 (model/expert_shard.h):
 * gathered over rank 0's expert-parallel group g (world ranks 0..G-1, the
 * other groups hold copies of the same shards); *full zeroed elsewhere. */
static int gather_full(ds_comm *world, ds_comm *g, const ds_model *m, ds_model *full) {
    memset(full, 0, sizeof *full);
    return world->rank < g->size ? ds_shard_gather_model(full, m, g, 0) : 0;
}

/* save_all of an expert-sharded run: the replicated moment blocks gathered
 * to rank 0, each shard's expert blocks to its data-parallel root (world
 * rank j < G holds shard j), those to rank 0 over its expert-parallel group
 * g, with the model's experts; rank 0 puts the whole-model vectors together
 * (full_lo: the whole layout) and writes one checkpoint like a one-process
 * run's. */
static int save_sharded(ds_comm *world, ds_zero1 *z, ds_comm *g, const ds_layout *full_lo, const char *run,
                        const ds_model *m, const char *tjpath, const ds_train_state *st, const void *mom,
                        const void *vel, int m16, int64_t keep) {
    const ds_layout *sh = &m->layout;
    const int es = m16 ? 2 : 4, lead = world->rank == 0, G = sh->ep_size;
    const int64_t nx = sh->total - sh->rep;
    void *rm = lead ? ds_calloc((size_t)sh->rep + 1, (size_t)es) : NULL, *rv = lead ? ds_calloc((size_t)sh->rep + 1, (size_t)es) : NULL;
    void *xm = z->dp->rank == 0 ? ds_calloc((size_t)nx + 1, (size_t)es) : NULL;
    void *xv = z->dp->rank == 0 ? ds_calloc((size_t)nx + 1, (size_t)es) : NULL;
    void *am = lead ? ds_calloc((size_t)(G * nx) + 1, (size_t)es) : NULL, *av = lead ? ds_calloc((size_t)(G * nx) + 1, (size_t)es) : NULL;
    int64_t rc = ds_zero1_gather_root(z, mom, rm, xm, es) || ds_zero1_gather_root(z, vel, rv, xv, es);
    ds_model full;
    if (!rc) rc = gather_full(world, g, m, &full) != 0;
    if (!rc && world->rank < G) {
        int64_t *counts = ds_malloc((size_t)G * sizeof(int64_t));
        for (int j = 0; j < G; j++) counts[j] = nx;
        ds_comm_dtype dt = es == 2 ? DS_COMM_U16 : DS_COMM_F32;
        rc = ds_gather_root(g, xm, am, counts, dt, 0) || ds_gather_root(g, xv, av, counts, dt, 0);
        free(counts);
    }
    if (!rc && lead) {
        void *fm = ds_calloc((size_t)full_lo->total + 1, (size_t)es), *fv = ds_calloc((size_t)full_lo->total + 1, (size_t)es);
        ds_shard_copy(full_lo, sh, rm, fm, 0, sh->rep, es, 1);
        ds_shard_copy(full_lo, sh, rv, fv, 0, sh->rep, es, 1);
        for (int j = 0; j < G; j++) {
            ds_layout lj;
            ds_layout_copy(&lj, full_lo);
            ds_layout_shard(&lj, m->cfg.n_routed_experts, G, j);
            ds_shard_copy(full_lo, &lj, (char *)am + (size_t)(j * nx) * es, fm, lj.rep, lj.total, es, 1);
            ds_shard_copy(full_lo, &lj, (char *)av + (size_t)(j * nx) * es, fv, lj.rep, lj.total, es, 1);
            ds_layout_free(&lj);
        }
        rc = ds_ckpt_save(run, &full, tjpath, st, fm, fv, full_lo->total, m16, keep) != 0;
        free(fm), free(fv);
    }
    if (lead && full.params) ds_model_free(&full);
    free(rm), free(rv), free(xm), free(xv), free(am), free(av);
    if (ds_bcast(world, &rc, 1, DS_COMM_I64, 0)) return -1;
    if (rc && world->rank != 0) return ds_err("checkpoint: rank 0 failed to save (its message above)");
    return rc ? -1 : 0;
}

/* save_all of a pipeline run (train/pp.h ds_pp_gather): the whole model
 * and moments on rank 0, which writes one checkpoint like a one-process
 * run's */
static int save_pp(ds_comm *world, ds_comm *stagec, ds_comm *epc, ds_comm *roots, ds_zero1 *z, const ds_layout *full_lo,
                   const int64_t *first, int S, int G, const char *run, const ds_model *m, const char *tjpath,
                   const ds_train_state *st, const void *mom, const void *vel, int m16, int64_t keep) {
    ds_model full;
    void *fm = NULL, *fv = NULL;
    int64_t rc = ds_pp_gather(world, stagec, epc, roots, z, m, full_lo, first, S, G, mom, vel, m16 ? 2 : 4, &full, &fm, &fv) != 0;
    if (!rc && world->rank == 0) rc = ds_ckpt_save(run, &full, tjpath, st, fm, fv, full_lo->total, m16, keep) != 0;
    if (full.params) ds_model_free(&full);
    free(fm), free(fv);
    if (ds_bcast(world, &rc, 1, DS_COMM_I64, 0)) return -1;
    if (rc && world->rank != 0) return ds_err("checkpoint: rank 0 failed to save (its message above)");
    return rc ? -1 : 0;
}

/* the traffic of the world and of the other communicators (NULL: none) together */
static ds_comm_stats comm_sum4(const ds_comm *a, const ds_comm *b, const ds_comm *c, const ds_comm *d) {
    ds_comm_stats s = a->stats;
    const ds_comm *o[3] = {b, c, d};
    for (int i = 0; i < 3; i++) {
        if (!o[i]) continue;
        for (int k = 0; k < DS_COMM_NKINDS; k++) s.bytes[k] += o[i]->stats.bytes[k];
        s.wait_s += o[i]->stats.wait_s, s.calls += o[i]->stats.calls;
    }
    return s;
}
#define comm_sum(a, b) comm_sum4(a, b, stagec, embc)

/* DSV3_FAULT=die:RANK:STEP — that process is killed (SIGKILL) in the middle
 * of that step, before its gradient collective (tests of a dying rank) */
static void fault_die_at(int rank, int64_t step) {
    const char *f = getenv("DSV3_FAULT");
    int r;
    long long s;
    if (f && sscanf(f, "die:%d:%lld", &r, &s) == 2 && r == rank && s == step) raise(SIGKILL);
}

static int fault_nan_at(int64_t step) {
    const char *f = getenv("DSV3_FAULT");
    return f && !strncmp(f, "nan:", 4) && atoll(f + 4) == step;
}

int ds_train(const ds_train_opts *o) {
    int rc = -1;
    const char *run = o->out ? o->out : o->resume;
    if (!run) return ds_err("--out RUN is required");
    if (!o->data) return ds_err("--data DIR is required");
    if (!is_dir(o->data)) return ds_err("%s: data folder not found (make it with `dsv3 data prepare`)", o->data);
    if (o->batch <= 0 || o->seq <= 1 || o->accum <= 0) return ds_err("--batch, --seq (> 1) and --grad-accum must be positive");
    if (!o->resume && !o->config) return ds_err("--config PRESET|config.json is required for a new run");
    if (!o->resume && !o->steps && !o->tokens && !(o->minutes > 0))
        return ds_err("a budget is required: --steps N, --tokens N or --minutes M");
    /* the step's table (GEMMs in the run's precision); validation and
     * sampling run in FP32 on the same device */
    /* many processes (mpirun): each rank trains rows [R·B/P, (R+1)·B/P) of
     * every batch; rank 0 logs, validates and writes checkpoints */
    ds_comm *world = ds_comm_world();
    /* device-resident (the model, gradients and moments in the table's
     * memory, docs/engine.md §2.5): one process, or data parallel over many
     * (the broadcast and the ZeRO-1 exchanges through host buffers);
     * expert parallelism (--ep) stays on host pointers (its dispatch and the
     * expert-sharded exchanges read them) */
    const int resident = world->size == 1 || o->ep <= 1;
    struct ds_ops ops;
    const struct ds_ops *fp32 = resident ? ds_backend_get_resident(o->device) : ds_backend_get(o->device);
    if (!fp32 || (resident ? ds_backend_table_resident(&ops, o->device, o->precision)
                           : ds_backend_table(&ops, o->device, o->precision)))
        return -1;
    const struct ds_ops *dmem = fp32->host_visible ? NULL : fp32; /* the model's memory */
    struct ds_ops plain = ops; /* --profile: the profiling table wraps it */
    if (o->profile) ops = *ds_ops_profile(&plain);
    const int P = world->size, R = world->rank, lead = R == 0;
    /* pipeline: S stages of Q processes (stage-major ranks); the Q ranks of
     * a stage split the rows of each batch */
    const int S = o->pp > 1 ? o->pp : 1, M = S > 1 ? o->micro_batches : 1;
    if (P % S) return ds_err("--pp %d does not divide the %d processes", S, P);
    if (S > 1 && M < S) return ds_err("--micro-batches %d: 1F1B needs at least --pp %d micro-batches", M, S);
    const int Q = P / S;
    if (o->batch > 0 && o->batch % Q)
        return ds_err("--batch %lld is not a multiple of the %d processes (each takes an equal slice)",
                      (long long)o->batch, Q);
    if (S > 1 && (o->batch / Q) % M)
        return ds_err("--micro-batches %d does not divide the %lld rows of each batch per process", M,
                      (long long)(o->batch / Q));
    if (S > 1 && o->ep > 0 && Q % o->ep)
        return ds_err("--ep %d does not divide the %d processes of a pipeline stage", o->ep, Q);
    int log_level0 = ds_log_level;
    if (!lead) ds_log_level = DS_LOG_QUIET;
    if (o->device && strcmp(o->device, "cpu")) {
        if (resident)
            ds_log(DS_LOG_INFO, "device %s: the device-resident table (weights, gradients and AdamW moments in the "
                                "device's memory%s)", o->device, P > 1 ? "; the ZeRO-1 exchanges through host buffers" : "");
        else
            ds_log(DS_LOG_INFO, "device %s: the host-staged table (%d processes with --ep: the expert dispatch and the "
                                "sharded exchanges read host memory; each entry copies its operands to the device and "
                                "back)", o->device, P);
    }

    /* tokenizer of the data: its hash ties the shards to it */
    char *tjpath = ds_path_join(o->data, "tokenizer.json");
    size_t tjlen;
    char *tj = ds_read_file(tjpath, &tjlen);
    if (!tj) {
        free(tjpath);
        return ds_err_prefix("data folder %s", o->data);
    }
    uint64_t hash = ds_hash64(tj, tjlen, DS_HASH64_INIT);
    ds_tokenizer *tok = ds_tokenizer_load(tjpath); /* with DATA/tokenizer_config.json: its BOS/EOS */
    free(tj);
    if (!tok) {
        free(tjpath);
        return -1;
    }

    /* model */
    ds_model m;
    memset(&m, 0, sizeof m);
    ds_layout full_lo; /* an expert-sharded run: the whole layout */
    memset(&full_lo, 0, sizeof full_lo);
    ds_comm *dpc = NULL; /* and the shard's data-parallel group */
    char *resume_dir = NULL;
    ds_train_state st;
    memset(&st, 0, sizeof st);
    int have_model = 0;
    ds_loader tr, va;
    memset(&tr, 0, sizeof tr), memset(&va, 0, sizeof va);
    int have_tr = 0, have_va = 0;
    /* --ep E > 1: this rank keeps only its group rank's routed experts
     * (model/expert_shard.h), from the start */
    /* --pp S > 1: this rank keeps only its stage's layers (and its group
     * rank's experts of them), ds_stage_keep */
    const int sharded = (o->ep > 1 && P % o->ep == 0) || S > 1;
    const int EPn = o->ep > 1 ? o->ep : 1; /* expert shards of the layout */
    const int stage = R / Q;
    int64_t first[65];
    ds_stage_keep keep;
    memset(&keep, 0, sizeof keep);
    ds_comm *stagec = NULL, *roots = NULL, *embc = NULL; /* pipeline: the stage's ranks, the stages' first ranks, embedding pairs */
    if (o->resume) {
        resume_dir = ds_ckpt_latest(o->resume);
        if (!resume_dir) goto out0;
        ds_load_opts lopt = {.mem = dmem};
        lopt.ep_size = sharded ? EPn : 0, lopt.ep_rank = sharded ? R % EPn : 0;
        if (S > 1) { /* the split from the run's config */
            char *cj = ds_path_join(resume_dir, "config.json");
            ds_config rc0;
            int bad = ds_config_load(&rc0, cj) || ds_pp_split(&rc0, S, o->pp_layers, o->seq, first);
            free(cj);
            if (bad) goto out0;
            keep = (ds_stage_keep){first[stage], first[stage + 1], rc0.num_hidden_layers, stage == 0, stage == S - 1};
            lopt.stage = &keep;
        }
        if (ds_model_load_ex(&m, resume_dir, &lopt)) goto out0;
    } else {
        ds_config c;
        int bad = ds_config_is_path(o->config) ? ds_config_load(&c, o->config)
                                                                         : ds_preset(&c, o->config);
        if (bad) goto out0;
        int64_t tv = ds_tokenizer_vocab_size(tok);
        if (!ds_config_is_path(o->config)) {
            /* a preset takes the data's vocabulary and special ids */
            c.vocab_size = tv;
            int32_t b = ds_tokenizer_bos_id(tok), e = ds_tokenizer_eos_id(tok);
            c.bos_token_id = b >= 0 ? b : e;
            c.eos_token_id = e >= 0 ? e : b;
        }
        if (ds_config_validate(&c, o->config) || (S > 1 && ds_pp_split(&c, S, o->pp_layers, o->seq, first))) goto out0;
        keep = (ds_stage_keep){S > 1 ? first[stage] : 0, S > 1 ? first[stage + 1] : 0, c.num_hidden_layers, stage == 0,
                               stage == S - 1};
        if (S > 1 ? ds_model_create_stage(&m, &c, EPn, R % EPn, &keep)
                  : sharded ? ds_model_create_shard(&m, &c, o->ep, R % o->ep) : ds_model_create_on(&m, &c, NULL, dmem))
            goto out0;
        ds_model_init_random(&m, o->seed);
    }
    have_model = 1;
    const ds_config *c = &m.cfg;

    /* data */
    if (ds_loader_open(&tr, o->data, "train", o->batch, o->seq, o->seed, 1, 0, 1, hash)) goto out0;
    have_tr = 1;
    if (tr.vocab_size > (uint32_t)c->vocab_size) {
        ds_err("%s: shards have vocab %u but the model has %lld", o->data, tr.vocab_size, (long long)c->vocab_size);
        goto out0;
    }
    if (tr.nbatches == 0) {
        ds_err("%s: too little training data for one batch of %lld x %lld tokens", o->data, (long long)o->batch,
               (long long)(o->seq + 1));
        goto out0;
    }
    if (ds_loader_open(&va, o->data, "val", o->batch, o->seq, o->seed, 0, 0, 1, hash) == 0) have_va = 1;
    else ds_log(DS_LOG_INFO, "no validation data (%s): validation off", ds_errmsg());

    /* buffers */
    int64_t B = o->batch, T = o->seq, A = o->accum, E = c->n_routed_experts, L = c->num_hidden_layers;
    const int64_t Bl = B / Q, r0 = (R % Q) * Bl; /* this rank's rows of each batch */
    int mtp = o->mtp_lambda > 0 && c->num_nextn_predict_layers > 0;
    int64_t mtp_depth = mtp ? (c->num_nextn_predict_layers < DS_MAX_MTP ? c->num_nextn_predict_layers : DS_MAX_MTP) : 0;
    ds_acts a, ea;
    ds_grads g;
    ds_bwd w;
    if (o->fp8_cache && o->precision != DS_PREC_FP8) {
        ds_err("--fp8-cache needs --precision fp8");
        goto out0;
    }
    int cache = o->precision == DS_PREC_FP8 && o->fp8_cache;
    if (o->ep > 0 && cache) {
        ds_err("--ep with --fp8-cache is not supported yet");
        goto out0;
    }
    ds_moe_ep epx;
    int have_ep = 0;
    memset(&epx, 0, sizeof epx);
    if (o->ep > 0) {
        if (ds_moe_ep_create(&epx, &m, world, o->ep, o->dispatch, o->ranks_per_node)) goto out0;
        have_ep = 1;
    }
    /* an expert-sharded run: full_lo, the whole layout, maps the shard to
     * the whole model (checkpoints); dpc, the shard's data-parallel group */
    int64_t whole_floats = m.layout.total;
    if (S > 1) { /* the stage's ranks play the world's part for data and expert parallelism */
        if (!(stagec = ds_comm_split(world, stage, R)) || !(roots = ds_comm_split(world, R % Q == 0 ? 0 : 1, R)) ||
            !(embc = ds_comm_split(world, stage == 0 || stage == S - 1 ? R % Q : Q + R % Q, R)))
            goto out0;
    }
    ds_comm *dpw = S > 1 ? stagec : world; /* the data-parallel world */
    if (sharded) {
        if (ds_layout_build(&full_lo, c)) goto out0;
        whole_floats = full_lo.total;
        if (!(dpc = ds_comm_split(dpw, R % EPn, R))) goto out0;
    }
    if (P > 1 && !o->resume) { /* one model: rank 0's initialization (each shard's from its group's first rank) */
        ds_comm_set_kind(dpw, DS_COMM_PARAM);
        if (dmem) { /* device-resident (no expert shard): through the host */
            const size_t nbytes = (size_t)m.layout.total * sizeof(float);
            float *h = ds_malloc(nbytes + 1);
            dmem->copy_d2h(h, m.params, nbytes);
            int bad = ds_bcast(dpw, h, m.layout.total, DS_COMM_F32, 0);
            if (!bad) dmem->copy_h2d(m.params, h, nbytes);
            free(h);
            if (bad) goto out0;
        } else if (ds_bcast(dpw, m.params, sharded ? m.layout.rep : m.layout.total, DS_COMM_F32, 0)) goto out0;
        if (sharded && ds_bcast(dpc, m.params + m.layout.rep, m.layout.total - m.layout.rep, DS_COMM_F32, 0)) goto out0;
    }
    ds_pp pp;
    memset(&pp, 0, sizeof pp);
    memset(&a, 0, sizeof a), memset(&ea, 0, sizeof ea), memset(&w, 0, sizeof w), memset(&g, 0, sizeof g);
    size_t acts_live0 = ds_acts_live_bytes();
    if (S > 1) { /* in-flight arenas of one micro-batch, this stage's layers only */
        if (ds_pp_init(&pp, world, &m, S, o->pp_layers, M, Bl / M, T, mtp, cache ? DS_ACTS_FP8_CACHE : 0)) {
            ds_pp_free(&pp);
            goto out0;
        }
    } else if (ds_acts_create_ex(&a, &m, Bl, T, mtp, cache ? DS_ACTS_FP8_CACHE : 0))
        goto out0;
    const size_t acts_live = ds_acts_live_bytes() - acts_live0; /* the training arenas, counted by the arena */
    if (ds_acts_create(&ea, &m, lead ? B : 1, T, 0) || ds_bwd_create(&w, &m, Bl / M, T)) goto out0;
    ds_grads_create(&g, &m);
    int m16 = o->bf16_moments;
    size_t msz = m16 ? 2 : 4;
    /* ZeRO-1: the moments of this rank's block only */
    ds_zero1 zero;
    if (sharded) ds_zero1_init_ep(&zero, dpw, m.layout.rep, dpc, g.n - m.layout.rep);
    else ds_zero1_init(&zero, world, g.n);
    int64_t emb_off = -1, emb_n = c->vocab_size * c->hidden_size; /* the embedding in this stage's buffer */
    if (S > 1) { /* the norm over every stage, the last stage's copy of the embedding counted once */
        if (!zero.gshard) zero.gshard = ds_malloc((size_t)(ds_zero1_block(&zero) + 1) * sizeof(float));
        zero.norm = world;
        int64_t ei = ds_layout_find(&m.layout, "model.embed_tokens.weight");
        emb_off = ei >= 0 ? m.layout.p[ei].offset : -1;
        if (stage == S - 1 && emb_off >= 0) zero.skip_lo = emb_off, zero.skip_hi = emb_off + emb_n;
    }
    int64_t nmom = P > 1 ? ds_zero1_block(&zero) : g.n;
    void *mom = ds_model_mem_alloc(dmem, ((size_t)nmom + 1) * msz), *vel = ds_model_mem_alloc(dmem, ((size_t)nmom + 1) * msz);
    float *losses = ds_malloc((size_t)(B * T) * sizeof(float)); /* validation CE per position */
    int32_t *ids = ds_malloc((size_t)(B * T) * sizeof(int32_t)), *tgt = ds_malloc((size_t)(B * T) * sizeof(int32_t));
    int64_t nb = m.nblocks, Ee = E > 0 ? E : 1;
    int64_t nrun = mtp ? nb : L; /* blocks that run (and route) in a training step */
    int64_t *load = ds_calloc((size_t)(nb * Ee), sizeof(int64_t));
    int64_t *vload = ds_calloc((size_t)(nb * Ee), sizeof(int64_t));
    int64_t *tok_bytes = ds_calloc((size_t)c->vocab_size, sizeof(int64_t));
    float *bias_h = ds_calloc((size_t)Ee, sizeof(float)); /* a router bias read back for the log */
    int ea_whole = 0; /* pipeline: ea re-made from the whole model at the first validation */
    float *pbias = ds_calloc((size_t)(L * (Ee + 1)), sizeof(float)); /* pipeline: every stage's biases */
    ds_tokenizer_byte_lengths(tok, tok_bytes, c->vocab_size);

    if (ds_zero1_set_mem(&zero, dmem)) goto out1; /* device-resident ZeRO-1: its staging */

    /* state */
    int64_t tokens_per_step = A * B * T;
    ds_rng rng;
    ds_rng_seed(&rng, o->seed ^ 0x5eed);
    if (o->resume) {
        if (P == 1 && dmem) { /* into device memory through the host */
            void *hm = ds_malloc((size_t)g.n * msz + 1), *hv = ds_malloc((size_t)g.n * msz + 1);
            int bad = ds_ckpt_load_state(resume_dir, &st, hm, hv, g.n, m16);
            if (!bad) dmem->copy_h2d(mom, hm, (size_t)g.n * msz), dmem->copy_h2d(vel, hv, (size_t)g.n * msz);
            free(hm), free(hv);
            if (bad) goto out1;
        } else if (P == 1) {
            if (ds_ckpt_load_state(resume_dir, &st, mom, vel, g.n, m16)) goto out1;
        } else {
            /* the moments mapped: this process copies its blocks only */
            ds_st_file sf;
            const void *fm = NULL, *fv = NULL;
            int bad = ds_ckpt_load_state(resume_dir, &st, NULL, NULL, 0, m16) ||
                      ds_ckpt_map_moments(resume_dir, whole_floats, m16, &sf, &fm, &fv);
            if (!bad && sharded) { /* this rank's replicated block, then its expert block */
                int64_t nr = zero.hi - zero.lo, x0 = zero.n + zero.elo, x1 = zero.n + zero.ehi;
                ds_shard_copy(&full_lo, &m.layout, fm, mom, zero.lo, zero.hi, (int)msz, 0);
                ds_shard_copy(&full_lo, &m.layout, fv, vel, zero.lo, zero.hi, (int)msz, 0);
                ds_shard_copy(&full_lo, &m.layout, fm, (char *)mom + (size_t)nr * msz, x0, x1, (int)msz, 0);
                ds_shard_copy(&full_lo, &m.layout, fv, (char *)vel + (size_t)nr * msz, x0, x1, (int)msz, 0);
            } else if (!bad && dmem) { /* device-resident: this rank's blocks to the device */
                dmem->copy_h2d(mom, (const char *)fm + (size_t)zero.lo * msz, (size_t)nmom * msz);
                dmem->copy_h2d(vel, (const char *)fv + (size_t)zero.lo * msz, (size_t)nmom * msz);
            } else if (!bad) {
                memcpy(mom, (const char *)fm + (size_t)zero.lo * msz, (size_t)nmom * msz);
                memcpy(vel, (const char *)fv + (size_t)zero.lo * msz, (size_t)nmom * msz);
            }
            if (!bad) ds_st_close(&sf);
            if (bad) goto out1;
        }
        if (st.data_hash != hash) {
            ds_err("%s: the data's tokenizer differs from the one the run was trained with", o->data);
            goto out1;
        }
        if (st.batch != B || st.seq != T || st.accum != A) {
            ds_err("--resume %s: --batch %lld --seq %lld --grad-accum %lld differ from the run's %lld, %lld, %lld "
                   "(a bit-exact resume needs the same batches)", o->resume, (long long)B, (long long)T, (long long)A,
                   (long long)st.batch, (long long)st.seq, (long long)st.accum);
            goto out1;
        }
        memcpy(rng.s, st.rng, sizeof rng.s);
        ds_loader_seek(&tr, (uint64_t)st.loader);
    } else {
        st.tokens_per_step = tokens_per_step, st.data_hash = hash;
        st.batch = B, st.seq = T, st.accum = A;
        st.total_steps = -1;
    }
    /* the schedule and γ: the run's own on a resume (`dsv3 train` restores
     * them into o), or what --override gave */
    st.peak_lr = o->lr, st.min_lr = o->min_lr, st.decay_start = o->decay_start;
    st.gamma = o->gamma, st.gamma_until = o->gamma_until, st.warmup = o->warmup;
    ds_train_options_json(o, st.options, sizeof st.options);
    /* budget: an explicit one replaces the stored one */
    if (o->steps > 0) st.total_steps = o->steps;
    else if (o->tokens > 0) st.total_steps = ds_ceil_div(o->tokens, tokens_per_step);
    else if (o->minutes > 0) st.total_steps = -1; /* fixed after timing a few steps */
    if (o->resume && st.total_steps >= 0 && st.step >= st.total_steps) {
        ds_err("--resume %s: the run already did %lld of %lld steps (give a larger --steps)", o->resume,
               (long long)st.step, (long long)st.total_steps);
        goto out1;
    }
    if (ds_mkdir_p(run)) goto out1;
    if (o->resume && lead) {
        ds_ckpt_remove_partial(run); /* the temp folder of a save that was killed */
        /* records past the checkpoint (an invocation killed or failed before
         * its next save) are dropped: those steps run again */
        int64_t dropped;
        if (ds_train_log_truncate(run, st.step, &dropped)) goto out1;
        if (dropped)
            ds_log(DS_LOG_INFO, "train_log.jsonl: %lld records after step %lld dropped (no checkpoint had them)",
                   (long long)dropped, (long long)st.step);
    }
    char *logpath = ds_path_join(run, "train_log.jsonl");
    FILE *logf = fopen(lead ? logpath : "/dev/null", o->resume && lead ? "a" : "w");
    if (!logf) {
        ds_err("%s: cannot open for writing", logpath);
        free(logpath);
        goto out1;
    }
    free(logpath);
    if (o->resume) {
        fprintf(logf, "{\"resume_step\": %lld, \"overrides\": %s}\n", (long long)st.step,
                o->resume_overrides ? o->resume_overrides : "{}");
        fflush(logf);
    }

    ds_loss_opts lo = ds_loss_opts_default();
    lo.mtp_lambda = mtp ? o->mtp_lambda : 0;
    if (o->balance == DS_TRAIN_AUX_LOSS) lo.balance = DS_BAL_V2, lo.a1 = o->v2_a1, lo.a2 = o->v2_a2, lo.a3 = o->v2_a3;
    else if (o->balance == DS_TRAIN_AUX_FREE && o->seq_alpha > 0) lo.balance = DS_BAL_SEQ, lo.alpha = o->seq_alpha;
    lo.ce_denom = (double)(A * B * T);
    for (int64_t k = 1; k <= c->num_nextn_predict_layers && k <= DS_MAX_MTP; k++)
        lo.mtp_denom[k - 1] = (double)(A * B * (T - k));
    lo.seq_denom = (double)(A * B);

    char how[256];
    double peak = ds_backend_peak_flops_prec(o->device, o->precision, ds_threads(), how, sizeof how) * P;
    double step_flops = 3.0 * ds_model_forward_flops(&m, B, T, mtp) * (double)A;
    ds_param_counts pc;
    ds_layout_count(&pc, &m.layout, c);
    ds_log(DS_LOG_INFO, "model: %lld parameters (%lld activated), %lld MTP; vocab %lld; data: %lld train windows",
           (long long)pc.total, (long long)pc.activated, (long long)pc.mtp, (long long)c->vocab_size,
           (long long)tr.nwin);
    ds_log(DS_LOG_INFO, "peak FP32: %s", how);
    char blas[192];
    int narrow;
    ds_blas_name(blas, sizeof blas, &narrow);
    ds_log(DS_LOG_INFO, "FP32 GEMM: %s%s", blas, narrow ? DS_BLAS_NARROW_NOTE : "");
    ds_log(DS_LOG_INFO, "precision %s (GEMM inputs), FP32 master weights; AdamW moments %s",
           o->precision == DS_PREC_BF16 ? "bf16" : o->precision == DS_PREC_FP8 ? "fp8" : "fp32", m16 ? "bf16" : "fp32");
    if (cache) ds_log(DS_LOG_INFO, "fp8 cache: linear inputs saved for the weight gradients in E4M3 1x128 tiles");
    ds_train_memory mem;
    ds_train_memory_of(&mem, &m, &ops, B, T, mtp, m16, o->precision, cache, w.arena_floats * sizeof(float));
    mem.eval_acts = ea.arena_floats * sizeof(float);
    mem.total += mem.eval_acts;
    if (P > 1) { /* ZeRO-1: this process's moment blocks */
        mem.total -= mem.moments;
        mem.moments = (size_t)nmom * 2 * (m16 ? sizeof(uint16_t) : sizeof(float));
        mem.moments_fp32 = (size_t)nmom * 2 * sizeof(float);
        mem.total += mem.moments;
    }
    if (S > 1) { /* the in-flight arenas of this stage */
        mem.total -= mem.acts;
        mem.acts = acts_live;
        mem.total += mem.acts;
    }
    ds_train_memory_log(&mem);
    if (S > 1 && R % Q == 0) /* one line per stage, from its first process */
        fprintf(stderr, "pipeline stage %d of %d: layers %lld..%lld%s%s, %d of %d micro-batches of %lld rows in flight: "
                "activation arenas %zu bytes = %d x %zu (all %d would take %zu); parameters here: %lld floats of %lld\n",
                pp.s, S, (long long)pp.l0, (long long)pp.l1 - 1, pp.s == 0 ? " + embedding" : "",
                pp.s == S - 1 ? " + head and MTP" : "", pp.K, M, (long long)pp.Bm, acts_live, pp.K, pp.arena_bytes, M,
                (size_t)M * pp.arena_bytes, (long long)m.layout.total, (long long)whole_floats);
    if (S > 1)
        ds_log(DS_LOG_INFO, "pipeline: %d stages of %d processes, 1F1B over %d micro-batches (analytic bubble %.3f)", S, Q,
               M, ds_pp_bubble_1f1b(S, M));
    if (have_ep)
        ds_log(DS_LOG_INFO, "expert parallel: groups of %d processes (data-parallel degree %d), experts %lld..%lld of "
               "%lld here (parameters here: %lld floats of %lld); dispatch %s, combine %s; %d node(s)", o->ep, P / o->ep,
               (long long)epx.ep.first_expert,
               (long long)(epx.ep.first_expert + epx.ep.experts_per_rank - 1), (long long)E, (long long)m.layout.total,
               (long long)whole_floats,
               o->dispatch == DS_EP_FP8 ? "fp8 (E4M3, 1x128 scales)" : o->dispatch == DS_EP_BF16 ? "bf16" : "fp32",
               epx.combine == DS_EP_BF16 ? "bf16" : "fp32", epx.nnodes);
    if (P > 1)
        ds_log(DS_LOG_INFO, "data parallel over %d processes%s (%s): %lld rows of each batch per process; ZeRO-1: "
               "AdamW moments of %lld of %lld parameters per process (%.1f MiB)", Q, S > 1 ? " per pipeline stage" : "",
               world->transport, (long long)Bl, (long long)nmom, (long long)whole_floats,
               (double)nmom * 2 * (double)msz / 1048576.0);
    ds_log(DS_LOG_INFO, "balance %s, γ %g until %.0f%% of the run, MTP λ %g, batch %lld x %lld x %lld, lr %g",
           balance_name(o->balance), o->gamma, 100 * o->gamma_until, lo.mtp_lambda, (long long)A, (long long)B,
           (long long)T, st.peak_lr);
    ds_log(DS_LOG_INFO, "logged: loss = next-token cross-entropy%s%s", mtp ? ", mtp_loss = MTP cross-entropy (mean over depths)" : "",
           mtp || lo.balance != DS_BAL_NONE ? ", total = loss + λ·mtp_loss + balance loss (the objective)" : "");

    ds_adamw_hparams hp = ds_adamw_default(st.peak_lr);
    hp.weight_decay = o->weight_decay;
    double t_start = ds_now(), t_train = 0;
    int64_t timed = 0, skipped = 0, last_saved = o->resume ? st.step : -1;
    const int64_t step0 = st.step; /* --profile: from the second step of this invocation */
    ds_progress bar;
    int64_t stop_at = o->stop_after > 0 ? o->stop_after : INT64_MAX;
    ds_progress_start(&bar, "train", st.total_steps > 0 ? (double)st.total_steps : 0, "step");
    int tty = isatty(2);
    rc = 0;
    /* the GEMM weights change only at the optimizer step: the table may keep
     * converted copies of them between steps (ops.h weights_epoch) */
    int64_t wepoch = 0;
    if (ops.weights_epoch) ops.weights_epoch(wepoch);
    while (st.total_steps < 0 || st.step < st.total_steps) {
        if (st.step >= stop_at) break;
        int64_t s = st.step;
        int64_t total = st.total_steps > 0 ? st.total_steps : INT64_MAX / 4;
        ds_lr_schedule sch = {st.peak_lr, st.min_lr, st.min_lr, st.warmup, 0, 0, INT64_MAX};
        sch.stable_end = st.total_steps > 0 ? (int64_t)(st.decay_start * (double)total) : INT64_MAX / 2;
        if (sch.stable_end < sch.warmup) sch.stable_end = sch.warmup;
        sch.decay_end = st.total_steps > 0 ? total : INT64_MAX / 2;
        double lr = ds_lr_at(&sch, s);
        hp.lr = lr;
        double t0 = ds_now();
        ds_comm_stats comm0 = comm_sum(world, dpc), ep0 = have_ep ? epx.ep.comm->stats : world->stats;
        ds_grads_zero(&g);
        memset(load, 0, sizeof(int64_t) * (size_t)(nb * Ee));
        double loss = 0, ce = 0, mtp_ce = 0, bal = 0;
        double pp_bytes0 = world->stats.bytes[DS_COMM_PP];
        for (int64_t k = 0; S > 1 && k < A; k++) { /* pipeline: the batch's rows as M micro-batches through 1F1B */
            ds_loader_next_batch_rows(&tr, ids, tgt, r0, r0 + Bl);
            double t4[4] = {0, 0, 0, 0};
            m.ep = have_ep ? &epx : NULL;
            int bad = ds_pp_run(&pp, &m, &ops, &g, &w, ids, tgt, &lo, mtp_depth, t4, load, Ee);
            m.ep = NULL;
            if (bad) {
                rc = -1;
                break;
            }
            loss += t4[0], ce += t4[1], bal += t4[2], mtp_ce += t4[3];
        }
        for (int64_t k = 0; S == 1 && k < A; k++) {
            ds_loader_next_batch_rows(&tr, ids, tgt, r0, r0 + Bl);
            ds_loss_terms lt;
            m.ep = have_ep ? &epx : NULL; /* the step's MoE layers over the expert-parallel group */
            int bad = ds_model_forward(&m, &a, &ops, ids) || ds_model_backward(&m, &a, &ops, &g, &w, tgt, &lo, &lt);
            m.ep = NULL;
            if (bad) {
                rc = -1;
                break;
            }
            loss += lt.loss, ce += lt.ce, bal += lt.bal;
            for (int64_t k = 0; k < mtp_depth; k++) mtp_ce += lt.mtp_ce[k] / (double)mtp_depth;
            for (int64_t l = 0; l < nrun; l++)
                if (m.blocks[l].moe)
                    for (int64_t e = 0; e < E; e++) load[l * Ee + e] += a.blk[l].counts_h[e];
        }
        if (rc) break;
        if (S > 1 && (stage == 0 || stage == S - 1) && emb_off >= 0) {
            /* the embedding's two copies (first stage: the tokens; last: the MTP modules) get one gradient */
            ds_comm_set_kind(embc, DS_COMM_GRAD);
            if (ds_allreduce(embc, g.g + emb_off, emb_n, DS_COMM_F32, DS_COMM_SUM)) {
                rc = -1;
                break;
            }
        }
        fault_die_at(R, s + 1);
        if (fault_nan_at(s + 1)) {
            const float nanv = NAN;
            loss = NAN;
            ops.copy_h2d(g.g, &nanv, sizeof nanv);
        }
        /* one reduction: the global norm, and non-finite iff a gradient is */
        double ss = isfinite(loss) ? ops.sumsq(g.g, g.n) : NAN;
        const char *badg = NULL;
        if (!isfinite(loss)) badg = "loss";
        else if (!isfinite(ss) && !(badg = ds_grads_check_finite(&g, &m, &ops))) badg = "gradient buffer";
        if (P > 1) { /* global loss terms, loads and finiteness */
            double t4[4] = {loss, ce, bal, mtp_ce};
            int64_t anybad = badg != NULL;
            if (ds_allreduce(world, t4, 4, DS_COMM_F64, DS_COMM_SUM) ||
                ds_allreduce(world, load, nb * Ee, DS_COMM_I64, DS_COMM_SUM) ||
                ds_allreduce(world, &anybad, 1, DS_COMM_I64, DS_COMM_MAX)) {
                rc = -1;
                break;
            }
            loss = t4[0], ce = t4[1], bal = t4[2], mtp_ce = t4[3];
            if (anybad && !badg) badg = isfinite(loss) ? "gradient (on another process)" : "loss";
        }
        if (badg) {
            if (o->skip_nonfinite) {
                skipped++;
                ds_log(DS_LOG_INFO, "step %lld: non-finite %s (loss %g): step skipped (--skip-nonfinite)",
                       (long long)(s + 1), badg, loss);
                fprintf(logf, "{\"step\": %lld, \"skipped\": \"non-finite %s\"}\n", (long long)(s + 1), badg);
                st.step++;
                st.loader = (int64_t)ds_loader_tell(&tr);
                continue;
            }
            char keep[64] = "no checkpoint was saved yet";
            if (last_saved >= 0) snprintf(keep, sizeof keep, "last good checkpoint ckpt-%lld kept", (long long)last_saved);
            ds_err("step %lld: loss is %s (non-finite %s); stopping, %s (lower --lr, or --skip-nonfinite)",
                   (long long)(s + 1), isnan(loss) ? "NaN" : isfinite(loss) ? "finite" : "Inf", badg, keep);
            rc = -1;
            break;
        }
        double gnorm;
        if (P > 1) {
            if (ds_zero1_step(&zero, &ops, &m, &g, mom, vel, m16, s + 1, &hp, mtp, o->clip, &gnorm)) {
                rc = -1;
                break;
            }
        } else {
            gnorm = sqrt(ss);
            ds_model_adamw_step(&ops, &m, &g, mom, vel, m16, s + 1, &hp, ds_clip_coef(gnorm, o->clip), mtp);
        }
        if (ops.weights_epoch) ops.weights_epoch(++wepoch);
        /* balance: bias update from the loads of the whole step; metrics */
        double gamma = (o->balance == DS_TRAIN_AUX_FREE && (st.total_steps < 0 || (double)s < st.gamma_until * (double)total))
                           ? st.gamma : 0.0;
        double worst = 0;
        int collapsed = 0;
        int64_t worst_layer = -1;
        for (int64_t l = 0; l < nrun; l++) {
            if (!m.blocks[l].moe) continue;
            if (gamma > 0 && m.blocks[l].router_bias)
                ops.bias_update(m.blocks[l].router_bias, load + l * Ee, E, (float)gamma);
            if (l >= L) continue; /* metrics: main layers */
            ds_routing_stats rs = ds_routing_stats_of(load + l * Ee, E);
            if (rs.maxvio >= worst) worst = rs.maxvio, worst_layer = l;
            collapsed |= rs.collapsed;
        }
        double dt = ds_now() - t0;
        st.step++;
        st.loader = (int64_t)ds_loader_tell(&tr);
        st.tokens_seen += (double)tokens_per_step;
        memcpy(st.rng, rng.s, sizeof st.rng);
        if (st.step > 1) t_train += dt, timed++; /* the first step warms caches */
        if (o->profile && st.step == step0 + 1) ds_ops_profile_reset();
        if (st.total_steps < 0 && timed >= 3) {
            double per = t_train / (double)timed, left = o->minutes * 60 * 0.92 - (ds_now() - t_start);
            st.total_steps = st.step + (left > 0 ? (int64_t)(left / per) : 0);
            if (st.total_steps < st.step + 1) st.total_steps = st.step + 1;
            bar.total = (double)st.total_steps;
            ds_log(DS_LOG_INFO, "budget %.1f min: %.3f s/step -> %lld steps", o->minutes, per,
                   (long long)st.total_steps);
        }
        if (o->minutes > 0 && !o->steps && !o->tokens && ds_now() - t_start > o->minutes * 60 &&
            st.total_steps > st.step) {
            ds_log(DS_LOG_INFO, "time budget of %.1f min used up at step %lld", o->minutes, (long long)st.step);
            st.total_steps = st.step; /* the machine got slower than the first steps said */
        }
        if (P > 1 && o->minutes > 0 && ds_bcast(world, &st.total_steps, 1, DS_COMM_I64, 0)) {
            rc = -1; /* a time budget: rank 0's clock decides for all */
            break;
        }
        double tps = (double)tokens_per_step / dt, gf = step_flops / dt / 1e9;
        char comm_s[256] = "", comm_j[384] = "", pp_s[256] = "", pp_j[1024] = "";
        if (S > 1) { /* the pipeline's busy time, bubble and traffic, over all stages */
            ds_pp_report pr;
            if (ds_pp_step_report(&pp, pp_bytes0, &pr)) {
                rc = -1;
                break;
            }
            /* the router biases of every stage's layers for rank 0's log: [has one, E values] per layer */
            memset(pbias, 0, sizeof(float) * (size_t)(L * (Ee + 1)));
            for (int64_t l = 0; R % Q == 0 && l < L; l++)
                if (m.blocks[l].moe && m.blocks[l].router_bias) {
                    pbias[l * (Ee + 1)] = 1;
                    ops.copy_d2h(pbias + l * (Ee + 1) + 1, m.blocks[l].router_bias, (size_t)E * sizeof(float));
                }
            if (ds_allreduce(world, pbias, L * (Ee + 1), DS_COMM_F32, DS_COMM_SUM)) {
                rc = -1;
                break;
            }
            size_t k = (size_t)snprintf(pp_s, sizeof pp_s, " | pp bubble %.2f (1F1B %.2f) busy ", pr.bubble, pr.analytic);
            for (int st_i = 0; st_i < S && k < sizeof pp_s; st_i++)
                k += (size_t)snprintf(pp_s + k, sizeof pp_s - k, "%s%.2f", st_i ? "/" : "", pr.busy[st_i]);
            if (k < sizeof pp_s) snprintf(pp_s + k, sizeof pp_s - k, " s | pp MB %.1f", pr.bytes / 1e6);
            k = (size_t)snprintf(pp_j, sizeof pp_j, "\"pp_bubble\": %.6f, \"pp_bubble_analytic\": %.6f, \"pp_bubble_model\": %.6f, "
                                 "\"pp_stage_busy_s\": [", pr.bubble, pr.analytic, pr.model);
            for (int st_i = 0; st_i < S && k < sizeof pp_j; st_i++)
                k += (size_t)snprintf(pp_j + k, sizeof pp_j - k, "%s%.6f", st_i ? ", " : "", pr.busy[st_i]);
            if (k < sizeof pp_j)
                snprintf(pp_j + k, sizeof pp_j - k, "], \"pp_bytes\": %.0f, \"pp_act_bytes\": %.0f, ", pr.bytes, pr.act_bytes);
        }
        if (P > 1) {
            const ds_comm_stats csum = comm_sum(world, dpc), *cs = &csum;
            snprintf(comm_j, sizeof comm_j, "\"comm_bytes\": {\"grad\": %.0f, \"param\": %.0f, \"dispatch\": %.0f, "
                     "\"combine\": %.0f, \"other\": %.0f}, \"comm_wait_s\": %.6f, ",
                     cs->bytes[DS_COMM_GRAD] - comm0.bytes[DS_COMM_GRAD], cs->bytes[DS_COMM_PARAM] - comm0.bytes[DS_COMM_PARAM],
                     cs->bytes[DS_COMM_DISPATCH] - comm0.bytes[DS_COMM_DISPATCH],
                     cs->bytes[DS_COMM_COMBINE] - comm0.bytes[DS_COMM_COMBINE],
                     cs->bytes[DS_COMM_OTHER] - comm0.bytes[DS_COMM_OTHER], cs->wait_s - comm0.wait_s);
            snprintf(comm_s, sizeof comm_s, " | comm MB grad %.2f param %.2f dispatch %.2f combine %.2f, wait %.3f s",
                     (cs->bytes[DS_COMM_GRAD] - comm0.bytes[DS_COMM_GRAD]) / 1e6,
                     (cs->bytes[DS_COMM_PARAM] - comm0.bytes[DS_COMM_PARAM]) / 1e6,
                     (cs->bytes[DS_COMM_DISPATCH] - comm0.bytes[DS_COMM_DISPATCH]) / 1e6,
                     (cs->bytes[DS_COMM_COMBINE] - comm0.bytes[DS_COMM_COMBINE]) / 1e6, cs->wait_s - comm0.wait_s);
        }
        if (have_ep) { /* the group's traffic and node-limited routing, summed over the world */
            ds_comm_stats *es = &epx.ep.comm->stats;
            double v[4] = {es->bytes[DS_COMM_DISPATCH] - ep0.bytes[DS_COMM_DISPATCH],
                           es->bytes[DS_COMM_COMBINE] - ep0.bytes[DS_COMM_COMBINE], (double)epx.node_sum,
                           (double)epx.tok_layers};
            int64_t mx = epx.node_max;
            if (ds_allreduce(world, v, 4, DS_COMM_F64, DS_COMM_SUM) || ds_allreduce(world, &mx, 1, DS_COMM_I64, DS_COMM_MAX)) {
                rc = -1;
                break;
            }
            size_t k = strlen(comm_s);
            snprintf(comm_s + k, sizeof comm_s - k, " | ep MB dispatch %.2f combine %.2f, nodes/token %.2f max %lld",
                     v[0] / 1e6, v[1] / 1e6, v[3] > 0 ? v[2] / v[3] : 0.0, (long long)mx);
            k = strlen(comm_j);
            snprintf(comm_j + k, sizeof comm_j - k, "\"ep_dispatch_bytes\": %.0f, \"ep_combine_bytes\": %.0f, "
                     "\"nodes_per_token\": %.6f, \"nodes_max\": %lld, ", v[0], v[1], v[3] > 0 ? v[2] / v[3] : 0.0, (long long)mx);
            epx.node_sum = epx.tok_layers = epx.node_max = 0;
        }
        if (lead && o->log_every > 0 && (st.step % o->log_every == 0 || st.step == st.total_steps)) {
            if (tty) fputs("\r\033[K", stderr);
            char mtps[64] = "";
            if (mtp_depth) snprintf(mtps, sizeof mtps, " | mtp_loss %.4f | total %.4f", mtp_ce, loss);
            else if (bal != 0) snprintf(mtps, sizeof mtps, " | total %.4f", loss);
            printf("step %6lld | loss %.4f%s | lr %.2e | gnorm %.3f | %.0f tok/s | %.1f GFLOP/s | "
                   "MFU %.1f%% | maxvio %.2f%s%s%s\n",
                   (long long)st.step, ce, mtps, lr, gnorm, tps, gf, 100 * gf * 1e9 / peak, worst,
                   collapsed ? " COLLAPSED" : "", comm_s, pp_s);
            fflush(stdout);
        }
        if (collapsed && (st.step % 50 == 1 || o->log_every == 1))
            ds_log(DS_LOG_INFO,
                   "warning: step %lld: MoE layer %lld looks collapsed (busiest expert > 4x its fair share, or over half "
                   "the experts idle)", (long long)st.step, (long long)worst_layer);
        fprintf(logf,
                "{\"step\": %lld, \"loss\": %.8g, \"mtp_loss\": %.8g, \"balance_loss\": %.8g, \"total_loss\": %.8g, "
                "\"lr\": %.8g, \"grad_norm\": %.8g, \"tokens_per_s\": %.1f, \"gflops\": %.2f, \"mfu\": %.5f, "
                "\"gamma\": %g, \"maxvio\": %.6g, \"collapsed\": %d, \"tokens\": %.0f, %s%s\"load\": [",
                (long long)st.step, ce, mtp_ce, bal, loss, lr, gnorm, tps, gf, gf * 1e9 / peak, gamma, worst, collapsed,
                st.tokens_seen, comm_j, pp_j);
        for (int64_t l = 0, first = 1; l < L; l++) {
            if (!m.blocks[l].moe) continue;
            fprintf(logf, "%s[", first ? "" : ", ");
            for (int64_t e = 0; e < E; e++) fprintf(logf, "%s%lld", e ? "," : "", (long long)load[l * Ee + e]);
            fputc(']', logf);
            first = 0;
        }
        fputc(']', logf);
        /* report: the router biases of the main MoE layers (aux-loss-free balancing) */
        int64_t nbias = 0;
        for (int64_t l = 0; l < L; l++) {
            if (S > 1 ? pbias[l * (Ee + 1)] == 0 : !m.blocks[l].moe || !m.blocks[l].router_bias) continue;
            fputs(nbias++ ? ", [" : ", \"bias\": [[", logf);
            if (S > 1) memcpy(bias_h, pbias + l * (Ee + 1) + 1, (size_t)E * sizeof(float));
            else ops.copy_d2h(bias_h, m.blocks[l].router_bias, (size_t)E * sizeof(float));
            for (int64_t e = 0; e < E; e++) fprintf(logf, "%s%.6g", e ? "," : "", (double)bias_h[e]);
            fputc(']', logf);
        }
        fputs(nbias ? "]}\n" : "}\n", logf);
        fflush(logf);
        ds_progress_update(&bar, (double)st.step);
        int last = st.step == st.total_steps || st.step == stop_at;
        ds_model fullm; /* validation of an expert-sharded run: the whole model gathered to rank 0 */
        memset(&fullm, 0, sizeof fullm);
        if (sharded && have_va && o->eval_every > 0 && (st.step % o->eval_every == 0 || last) &&
            (S > 1 ? ds_pp_gather(world, stagec, have_ep ? epx.ep.comm : NULL, roots, &zero, &m, &full_lo, first, S, EPn,
                                  NULL, NULL, 4, &fullm, NULL, NULL)
                   : gather_full(world, epx.ep.comm, &m, &fullm))) {
            rc = -1;
            break;
        }
        if (lead && have_va && o->eval_every > 0 && (st.step % o->eval_every == 0 || last)) {
            if (S > 1 && !ea_whole) { /* a stage's model has its layers only: the validation set from the whole one */
                ds_acts_free(&ea);
                if (ds_acts_create(&ea, &fullm, B, T, 0)) {
                    ds_model_free(&fullm);
                    rc = -1;
                    break;
                }
                ea_whole = 1;
            }
            eval_result er = evaluate(sharded ? &fullm : &m, fp32, &ea, &va, o->eval_batches, tok_bytes, losses, ids, tgt, vload);
            if (sharded) ds_model_free(&fullm);
            if (er.ok) {
                if (tty) fputs("\r\033[K", stderr);
                printf("eval step %lld | val loss %.4f | val bpb %.4f | val maxvio %.3f | %lld tokens, %lld bytes\n",
                       (long long)st.step, er.loss, er.bpb, er.maxvio, (long long)er.tokens, (long long)er.bytes);
                fflush(stdout);
                fprintf(logf, "{\"step\": %lld, \"val_loss\": %.8g, \"val_bpb\": %.8g, \"val_maxvio\": %.6g, "
                              "\"val_tokens\": %lld, \"val_bytes\": %lld}\n",
                        (long long)st.step, er.loss, er.bpb, er.maxvio, (long long)er.tokens, (long long)er.bytes);
                fflush(logf);
            }
        }
        if ((o->save_every > 0 && st.step % o->save_every == 0) || last) {
            if (S > 1 ? save_pp(world, stagec, have_ep ? epx.ep.comm : NULL, roots, &zero, &full_lo, first, S, EPn, run, &m,
                                tjpath, &st, mom, vel, m16, o->keep)
                : sharded ? save_sharded(world, &zero, epx.ep.comm, &full_lo, run, &m, tjpath, &st, mom, vel, m16, o->keep)
                          : save_all(world, &zero, run, &m, tjpath, &st, mom, vel, g.n, m16, o->keep)) {
                rc = -1;
                break;
            }
            last_saved = st.step;
        }
        if (lead && o->on_step && o->on_step(o->on_step_ctx, run, st.step,
                                     have_va && o->eval_every > 0 && (st.step % o->eval_every == 0 || last))) {
            rc = -1;
            break;
        }
    }
    if (ops.weights_epoch) ops.weights_epoch(-1);
    ds_progress_end(&bar, (double)st.step);
    if (rc == 0 && st.step > last_saved) {
        /* a run stopped by --stop-after between saves */
        if (S > 1 ? save_pp(world, stagec, have_ep ? epx.ep.comm : NULL, roots, &zero, &full_lo, first, S, EPn, run, &m,
                            tjpath, &st, mom, vel, m16, o->keep)
            : sharded ? save_sharded(world, &zero, epx.ep.comm, &full_lo, run, &m, tjpath, &st, mom, vel, m16, o->keep)
                      : save_all(world, &zero, run, &m, tjpath, &st, mom, vel, g.n, m16, o->keep))
            rc = -1;
    }
    ds_model sampm; /* sampling of an expert-sharded run: the whole model on rank 0 */
    memset(&sampm, 0, sizeof sampm);
    if (rc == 0 && sharded && o->sample_prompts &&
        (S > 1 ? ds_pp_gather(world, stagec, have_ep ? epx.ep.comm : NULL, roots, &zero, &m, &full_lo, first, S, EPn, NULL,
                              NULL, 4, &sampm, NULL, NULL)
               : gather_full(world, epx.ep.comm, &m, &sampm)))
        rc = -1;
    if (rc == 0 && lead) {
        double el = ds_now() - t_start;
        ds_log(DS_LOG_INFO, "done: %lld steps, %.0f tokens in %.1f s (%lld skipped); model in %s/latest",
               (long long)st.step, st.tokens_seen, el, (long long)skipped, run);
        if (timed)
            ds_log(DS_LOG_INFO, "mean step %.3f s: %.0f tokens/s, %.2f GFLOP/s, MFU %.1f%% of %.0f GFLOP/s",
                   t_train / timed, (double)tokens_per_step * timed / t_train, step_flops * timed / t_train / 1e9,
                   100 * step_flops * timed / t_train / peak, peak / 1e9);
        if (o->profile && st.step - step0 > 1) {
            fprintf(stderr, "train --profile: the ops entries of a step, mean of steps %lld-%lld (validation and "
                            "checkpoints included)\n", (long long)step0 + 2, (long long)st.step);
            ds_ops_profile_print(stderr, (int)(st.step - step0 - 1), timed ? t_train / timed : 0.0);
        }
        if (o->sample_prompts) {
            char *ps = ds_strdup(o->sample_prompts), *save = NULL;
            int k = 0;
            for (char *pr = strtok_r(ps, "|", &save); pr; pr = strtok_r(NULL, "|", &save), k++) {
                char *txt = ds_sample_text(sharded ? &sampm : &m, fp32, tok, pr, o->sample_tokens, o->temperature, o->seed + (uint64_t)k);
                if (!txt) {
                    rc = -1;
                    break;
                }
                printf("sample %d: %s\n", k + 1, txt);
                free(txt);
            }
            free(ps);
        }
    }
    if (sampm.params) ds_model_free(&sampm);
    fclose(logf);
out1:
    ds_pp_free(&pp);
    ds_zero1_free(&zero);
    if (have_ep) ds_moe_ep_free(&epx);
    ds_model_mem_free(dmem, mom), ds_model_mem_free(dmem, vel), free(bias_h), free(pbias), free(losses), free(ids), free(tgt), free(load), free(vload), free(tok_bytes);
    ds_grads_free(&g);
    ds_bwd_free(&w);
    ds_acts_free(&a);
    ds_acts_free(&ea);
    goto out;
out0:
    rc = -1;
out:
    if (have_tr) ds_loader_close(&tr);
    if (have_va) ds_loader_close(&va);
    if (have_model) ds_model_free(&m);
    ds_comm_free(dpc);
    ds_comm_free(embc), ds_comm_free(roots), ds_comm_free(stagec);
    ds_layout_free(&full_lo);
    free(resume_dir);
    free(tjpath);
    ds_tokenizer_free(tok);
    ds_log_level = log_level0;
    return rc;
}
