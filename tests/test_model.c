/*
 * test_model.c — the parameter layout, RoPE/YaRN setup, init/save/load, the
 * fast forward against the all-reference forward on a random model, and the
 * CLI commands init / inspect / forward with their error cases.
 * Oracles: the parameter counts and YaRN numbers published in
 * docs/deepseek-v3.md (§1.5, §4.4, Appendix A, computed there from the
 * official configs), the scalar reference ops, and the transformers fixtures.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/base.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/presets.h"
#include "test.h"

TEST(layout_deepseek_v3_671b_counts_and_names) {
    ds_config c;
    ds_config_default(&c); /* the DeepSeek-V3 config (doc §1.1) */
    ds_layout lo;
    CHECK(ds_layout_build(&lo, &c) == 0);
    ds_param_counts pc;
    ds_layout_count(&pc, &lo, &c);
    /* doc §1.5: 671.03B total, 37.55B activated, 11.61B MTP (rounded to 0.01B) */
    CHECK_NEAR(pc.total / 1e9, 671.03, 0.006);
    CHECK_NEAR(pc.activated / 1e9, 37.55, 0.006);
    CHECK_NEAR(pc.mtp / 1e9, 11.61, 0.006);
    CHECK(pc.buffers == 58 * 256 + 256); /* correction bias of 58 MoE layers + the MTP layer */
    struct { const char *name; int64_t r, c; int alias; } want[] = {
        {"model.embed_tokens.weight", 129280, 7168, 0},
        {"model.layers.0.self_attn.q_a_proj.weight", 1536, 7168, 0},
        {"model.layers.0.self_attn.q_b_proj.weight", 128 * 192, 1536, 0},
        {"model.layers.0.self_attn.kv_a_proj_with_mqa.weight", 576, 7168, 0},
        {"model.layers.0.self_attn.kv_b_proj.weight", 128 * 256, 512, 0},
        {"model.layers.0.self_attn.o_proj.weight", 7168, 16384, 0},
        {"model.layers.2.mlp.gate_proj.weight", 18432, 7168, 0},
        {"model.layers.3.mlp.gate.weight", 256, 7168, 0},
        {"model.layers.3.mlp.gate.e_score_correction_bias", 256, 0, 0},
        {"model.layers.60.mlp.experts.255.down_proj.weight", 7168, 2048, 0},
        {"model.layers.60.mlp.shared_experts.up_proj.weight", 2048, 7168, 0},
        {"lm_head.weight", 129280, 7168, 0},
        {"model.layers.61.embed_tokens.weight", 129280, 7168, 1},
        {"model.layers.61.eh_proj.weight", 7168, 14336, 0},
        {"model.layers.61.enorm.weight", 7168, 0, 0},
        {"model.layers.61.mlp.experts.7.gate_proj.weight", 2048, 7168, 0},
        {"model.layers.61.shared_head.norm.weight", 7168, 0, 0},
        {"model.layers.61.shared_head.head.weight", 129280, 7168, 1},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        int64_t k = ds_layout_find(&lo, want[i].name);
        CHECK_MSG(k >= 0, "%s missing", want[i].name);
        if (k < 0) continue;
        const ds_param *p = &lo.p[k];
        CHECK_MSG(p->shape[0] == want[i].r && p->shape[1] == want[i].c, "%s shape", want[i].name);
        CHECK(!!(p->flags & DS_PARAM_ALIAS) == want[i].alias);
    }
    CHECK(ds_layout_find(&lo, "model.layers.2.mlp.gate.weight") < 0); /* dense layer */
    CHECK(ds_layout_find(&lo, "model.layers.0.self_attn.q_proj.weight") < 0);
    CHECK(lo.p[ds_layout_find(&lo, "model.layers.61.shared_head.head.weight")].offset ==
          lo.p[ds_layout_find(&lo, "lm_head.weight")].offset);
    /* owned tensors do not overlap and are 64-byte aligned */
    int64_t end = 0;
    for (int64_t i = 0; i < lo.n; i++) {
        if (lo.p[i].flags & DS_PARAM_ALIAS) continue;
        CHECK(lo.p[i].offset >= end && lo.p[i].offset % 16 == 0);
        end = lo.p[i].offset + lo.p[i].numel;
    }
    CHECK(end <= lo.total);
    ds_layout_free(&lo);
}

TEST(rope_yarn_v3_matches_doc_appendix_a) {
    ds_config c;
    ds_config_default(&c);
    c.rope_type = DS_ROPE_YARN;
    c.rope_factor = 40;
    c.rope_original_max_position_embeddings = 4096;
    c.max_position_embeddings = 163840;
    c.rope_mscale = c.rope_mscale_all_dim = 1.0;
    float inv[32], af, sc;
    ds_rope_setup(&c, inv, &af, &sc);
    CHECK_NEAR(sc, 0.1352338, 1e-6);  /* doc §4.4 */
    CHECK_NEAR(af, 1.0, 1e-7);
    const struct { int i; double v; } tab[] = {{0, 1.0}, {5, 2.371373706e-01}, {10, 5.623413252e-02},
                                               {11, 3.900692657e-02}, {16, 5.5e-03}, {20, 7.905694150e-04},
                                               {22, 1.778279410e-04}, {23, 3.333803580e-05}, {31, 3.333803580e-06}};
    for (size_t k = 0; k < sizeof tab / sizeof tab[0]; k++)
        CHECK_MSG(fabs(inv[tab[k].i] - tab[k].v) <= 2e-6 * tab[k].v, "inv_freq[%d] = %.9g, doc %.9g", tab[k].i,
                  inv[tab[k].i], tab[k].v);
    c.rope_mscale = c.rope_mscale_all_dim = 0.707; /* V2-Lite: doc §4.4 gives 0.1147214 */
    ds_rope_setup(&c, inv, &af, &sc);
    CHECK_NEAR(sc, 0.1147214, 1e-6);
    c.rope_type = DS_ROPE_DEFAULT;
    ds_rope_setup(&c, inv, &af, &sc);
    CHECK_NEAR(sc, 1 / sqrt(192.0), 1e-8);
    CHECK_NEAR(inv[1], pow(10000.0, -2.0 / 64), 1e-7);
}

TEST(presets_validate_and_sizes) {
    ds_config c;
    CHECK(ds_preset(&c, "tiny") == 0 && ds_config_validate(&c, "tiny") == 0);
    CHECK(ds_preset(&c, "small") == 0 && ds_config_validate(&c, "small") == 0);
    ds_layout lo;
    ds_layout_build(&lo, &c);
    ds_param_counts pc;
    ds_layout_count(&pc, &lo, &c);
    CHECK(pc.total > 90000000 && pc.total < 115000000); /* ~100M */
    ds_layout_free(&lo);
    CHECK(ds_preset(&c, "base") == 0 && ds_config_validate(&c, "base") == 0);
    ds_layout_build(&lo, &c);
    ds_layout_count(&pc, &lo, &c);
    CHECK_MSG(pc.total > 240000000 && pc.total < 300000000, "base: %lld parameters", (long long)pc.total); /* ~270M */
    ds_layout_free(&lo);
    CHECK(ds_preset(&c, "huge") != 0 && strstr(ds_errmsg(), "unknown preset"));
}

TEST(init_save_load_roundtrip) {
    ds_config c;
    ds_preset(&c, "tiny");
    ds_model m, m2;
    CHECK(ds_model_create(&m, &c) == 0);
    ds_model_init_random(&m, 7);
    /* HF init: norms 1, correction bias 0, weights N(0, 0.02) */
    CHECK(m.blocks[0].in_norm[5] == 1.0f && m.norm[0] == 1.0f);
    CHECK(m.blocks[1].router_bias[3] == 0.0f);
    double s = 0, s2 = 0;
    int64_t n = c.vocab_size * c.hidden_size;
    for (int64_t i = 0; i < n; i++) s += m.embed[i], s2 += (double)m.embed[i] * m.embed[i];
    CHECK_NEAR(sqrt(s2 / n), 0.02, 0.0005);
    CHECK_NEAR(s / n, 0.0, 0.0005);
    char dir[600];
    snprintf(dir, sizeof dir, "%s/tiny", ds_test_tmpdir());
    CHECK(ds_model_save(&m, dir) == 0);
    CHECK(ds_model_load(&m2, dir) == 0);
    CHECK(m2.layout.total == m.layout.total);
    CHECK(memcmp(m.params, m2.params, (size_t)m.layout.total * sizeof(float)) == 0);
    /* the MTP copy of the embedding is in the file and equals the main one */
    char path[700];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    ds_st_file f;
    CHECK(ds_st_open(&f, path) == 0);
    const ds_st_tensor *t = ds_st_find(&f, "model.layers.3.embed_tokens.weight");
    CHECK(t && t->numel == n && memcmp(t->data, m.embed, (size_t)n * 4) == 0);
    ds_st_close(&f);
    ds_model_free(&m);
    ds_model_free(&m2);
}

TEST(forward_fast_vs_reference_ops_random_model) {
    ds_config c;
    ds_preset(&c, "tiny");
    c.initializer_range = 0.1; /* larger weights: less uniform routing, sharper attention */
    ds_model m;
    CHECK(ds_model_create(&m, &c) == 0);
    ds_model_init_random(&m, 11);
    ds_rng r;
    ds_rng_seed(&r, 5);
    for (int64_t l = 0; l < m.nblocks; l++)
        if (m.blocks[l].router_bias)
            for (int64_t e = 0; e < c.n_routed_experts; e++) m.blocks[l].router_bias[e] = 0.05f * (float)ds_rng_uniform(&r);
    int64_t B = 2, T = 45; /* T spans several attention query/key blocks */
    int32_t ids[90];
    for (int i = 0; i < B * T; i++) ids[i] = (int32_t)ds_rng_below(&r, (uint64_t)c.vocab_size);
    ds_acts a, b;
    CHECK(ds_acts_create(&a, &m, B, T, 1) == 0 && ds_acts_create(&b, &m, B, T, 1) == 0);
    CHECK(ds_model_forward(&m, &a, &ds_ops_cpu, ids) == 0);
    CHECK(ds_model_forward(&m, &b, &ds_ops_ref, ids) == 0);
    double e = ds_test_max_rel(a.logits, b.logits, (size_t)(B * T * c.vocab_size), 1e-30);
    double e2 = ds_test_max_rel(a.mtp_logits[0], b.mtp_logits[0], (size_t)(B * (T - 1) * c.vocab_size), 1e-30);
    CHECK_MSG(e < 1e-5 && e2 < 1e-5, "logits %.3g mtp %.3g", e, e2);
    /* per-expert load is recorded and sums to B·T·K */
    int64_t tot = 0;
    for (int64_t x = 0; x < c.n_routed_experts; x++) tot += a.blk[1].counts[x];
    CHECK(tot == B * T * c.num_experts_per_tok);
    /* out-of-vocabulary id: an error, not a crash */
    ids[7] = (int32_t)c.vocab_size;
    CHECK(ds_model_forward(&m, &a, &ds_ops_cpu, ids) != 0 && strstr(ds_errmsg(), "outside the vocabulary"));
    ds_acts_free(&a);
    ds_acts_free(&b);
    ds_model_free(&m);
}

/* ---- CLI --------------------------------------------------------------------- */

static const char *bin(void) {
    const char *b = getenv("DSV3");
    return b ? b : "./dsv3";
}

TEST(cli_init_inspect_forward) {
    const char *tmp = ds_test_tmpdir();
    char out[16384];
    int rc = ds_test_sh(out, sizeof out, "%s init --config tiny --out %s/m --seed 3", bin(), tmp);
    CHECK_MSG(rc == 0, "%s", out);
    rc = ds_test_sh(out, sizeof out, "%s inspect %s/m --tensors", bin(), tmp);
    CHECK_MSG(rc == 0, "%s", out);
    ds_config c;
    ds_preset(&c, "tiny");
    ds_layout lo;
    ds_layout_build(&lo, &c);
    ds_param_counts pc;
    ds_layout_count(&pc, &lo, &c);
    char want[128];
    snprintf(want, sizeof want, "total %lld", (long long)pc.total);
    CHECK_MSG(strstr(out, want), "inspect output lacks '%s':\n%s", want, out);
    snprintf(want, sizeof want, "activated per token %lld", (long long)pc.activated);
    CHECK(strstr(out, want));
    snprintf(want, sizeof want, "MTP %lld", (long long)pc.mtp);
    CHECK(strstr(out, want));
    CHECK(strstr(out, "model.layers.3.eh_proj.weight") && strstr(out, "F32"));
    ds_layout_free(&lo);
    /* forward on an ids file; logits shape and MTP logits */
    char ids[700];
    snprintf(ids, sizeof ids, "%s/ids.txt", tmp);
    FILE *f = fopen(ids, "w");
    fprintf(f, "1 2 3 4 5\n\n6 7 8 9 8191\n");
    fclose(f);
    rc = ds_test_sh(out, sizeof out, "%s forward --model %s/m --ids %s --out %s/o.safetensors --hidden", bin(), tmp,
                    ids, tmp);
    CHECK_MSG(rc == 0, "%s", out);
    char path[700];
    snprintf(path, sizeof path, "%s/o.safetensors", tmp);
    ds_st_file o;
    CHECK(ds_st_open(&o, path) == 0);
    const ds_st_tensor *t = ds_st_find(&o, "logits");
    CHECK(t && t->ndim == 3 && t->shape[0] == 2 && t->shape[1] == 5 && t->shape[2] == 8192);
    t = ds_st_find(&o, "mtp_logits.1");
    CHECK(t && t->shape[1] == 4);
    CHECK(ds_st_find(&o, "hidden_states.0") && ds_st_find(&o, "hidden_states.3") && !ds_st_find(&o, "hidden_states.4"));
    ds_st_close(&o);
}

TEST(cli_forward_matches_fixture) {
    const char *fx = "tests/fixtures/model/v3";
    if (!ds_file_exists("tests/fixtures/model/v3/reference.safetensors")) SKIP("fixture v3 absent");
    char out[4096], path[700];
    snprintf(path, sizeof path, "%s/v3.safetensors", ds_test_tmpdir());
    int rc = ds_test_sh(out, sizeof out, "%s forward --model %s --ids %s/ids.txt --out %s", bin(), fx, fx, path);
    CHECK_MSG(rc == 0, "%s", out);
    ds_st_file a, r;
    CHECK(ds_st_open(&a, path) == 0 && ds_st_open(&r, "tests/fixtures/model/v3/reference.safetensors") == 0);
    const char *names[] = {"logits", "mtp_logits.1"};
    for (int i = 0; i < 2; i++) {
        const ds_st_tensor *x = ds_st_find(&a, names[i]), *y = ds_st_find(&r, names[i]);
        CHECK(x && y && x->numel == y->numel);
        if (x && y && x->numel == y->numel)
            CHECK(ds_test_max_rel(x->data, y->data, (size_t)x->numel, 1e-30) < 1e-5); /* see test_model_parity.c */
    }
    ds_st_close(&a);
    ds_st_close(&r);
}

/* Runs a command that must fail with exit 1 and a one-line message containing `want`. */
static void expect_fail(const char *want, const char *fmt, const char *a1, const char *a2, const char *a3) {
    char cmd[2048], out[4096];
    snprintf(cmd, sizeof cmd, fmt, a1, a2, a3);
    int rc = ds_test_sh(out, sizeof out, "%s %s", bin(), cmd);
    CHECK_MSG(rc == 1, "exit %d for: %s\n%s", rc, cmd, out);
    CHECK_MSG(strstr(out, want) != NULL, "'%s' not in output of: %s\n%s", want, cmd, out);
    int lines = 0;
    for (const char *p = out; *p; p++) lines += *p == '\n';
    CHECK_MSG(lines == 1, "%d lines for: %s\n%s", lines, cmd, out);
}

static void write_text(const char *path, const char *txt) {
    FILE *f = fopen(path, "w");
    fputs(txt, f);
    fclose(f);
}

/* Copy model dir/model.safetensors to dst/ leaving out `drop` and turning
 * `as_i32` into an I32 tensor. */
static int rewrite_model(const char *src, const char *dst, const char *drop, const char *as_i32) {
    char p[700];
    snprintf(p, sizeof p, "%s/model.safetensors", src);
    ds_st_file f;
    if (ds_st_open(&f, p)) return -1;
    ds_st_entry *e = ds_calloc((size_t)f.n, sizeof *e);
    int64_t n = 0;
    for (int64_t i = 0; i < f.n; i++) {
        const ds_st_tensor *t = &f.tensors[i];
        if (drop && !strcmp(t->name, drop)) continue;
        e[n] = (ds_st_entry){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(e[n].shape, t->shape, sizeof t->shape);
        if (as_i32 && !strcmp(t->name, as_i32)) e[n].dtype = DS_I32;
        n++;
    }
    ds_mkdir_p(dst);
    snprintf(p, sizeof p, "%s/model.safetensors", dst);
    int rc = ds_st_write(p, e, n, NULL);
    free(e);
    ds_st_close(&f);
    char q[700];
    snprintf(p, sizeof p, "%s/config.json", src);
    snprintf(q, sizeof q, "%s/config.json", dst);
    size_t len;
    char *cfg = ds_read_file(p, &len);
    write_text(q, cfg);
    free(cfg);
    return rc;
}

TEST(cli_forward_errors) {
    const char *tmp = ds_test_tmpdir();
    char m[600], d[600], ids[600], o[600], cmd[2048], out[4096];
    snprintf(m, sizeof m, "%s/m", tmp);
    snprintf(o, sizeof o, "%s/o.safetensors", tmp);
    snprintf(ids, sizeof ids, "%s/ids.txt", tmp);
    CHECK(ds_test_sh(out, sizeof out, "%s init --config tiny --out %s", bin(), m) == 0);
    write_text(ids, "1 2 3\n");
    /* ids problems */
    write_text(ids, "1 2 3\n4 5 99999\n");
    expect_fail("ids.txt:2: token id 99999 is outside the vocabulary [0, 8192)", "forward --model %s --ids %s --out %s",
                m, ids, o);
    write_text(ids, "1 2 3\n4 -5 6\n");
    expect_fail("outside the vocabulary", "forward --model %s --ids %s --out %s", m, ids, o);
    write_text(ids, "1 2 x3\n");
    expect_fail("ids.txt:1: 'x3' is not a token id", "forward --model %s --ids %s --out %s", m, ids, o);
    write_text(ids, "1 2 3\n4 5\n");
    expect_fail("ids.txt:2: 2 tokens, but the first sequence has 3", "forward --model %s --ids %s --out %s", m, ids, o);
    write_text(ids, "\n  \n");
    expect_fail("no token ids", "forward --model %s --ids %s --out %s", m, ids, o);
    expect_fail("nope.txt", "forward --model %s --ids %s/nope.txt --out %s", m, tmp, o);
    write_text(ids, "1 2 3\n");
    /* model problems */
    expect_fail("config.json", "forward --model %s/absent --ids %s --out %s", tmp, ids, o);
    snprintf(d, sizeof d, "%s/missing", tmp);
    CHECK(rewrite_model(m, d, "model.layers.1.mlp.experts.5.up_proj.weight", NULL) == 0);
    expect_fail("tensor model.layers.1.mlp.experts.5.up_proj.weight: missing", "forward --model %s --ids %s --out %s",
                d, ids, o);
    snprintf(d, sizeof d, "%s/dtype", tmp);
    CHECK(rewrite_model(m, d, NULL, "model.norm.weight") == 0);
    expect_fail("model.norm.weight: dtype I32", "forward --model %s --ids %s --out %s", d, ids, o);
    /* a config that disagrees with the tensors: intermediate_size 384 -> 320 */
    snprintf(d, sizeof d, "%s/shape", tmp);
    CHECK(rewrite_model(m, d, NULL, NULL) == 0);
    snprintf(cmd, sizeof cmd, "sed -i 's/\"intermediate_size\": *384/\"intermediate_size\": 320/' %s/config.json", d);
    CHECK(ds_test_sh(out, sizeof out, "%s", cmd) == 0);
    expect_fail("model.layers.0.mlp.gate_proj.weight: shape [384, 128], config.json implies [320, 128]",
                "forward --model %s --ids %s --out %s", d, ids, o);
    /* nothing was written by any failed run */
    struct stat st;
    CHECK(stat(o, &st) != 0);
    /* init errors */
    /* an unknown preset is a usage error (exit 2) */
    CHECK(ds_test_sh(out, sizeof out, "%s init --config huge --out %s/x", bin(), tmp) == 2 &&
          strstr(out, "unknown preset 'huge'"));
    expect_fail("nofile.json", "init --config %s/nofile.json --out %s/x%s", tmp, tmp, "");
    /* usage errors exit 2 */
    CHECK(ds_test_sh(out, sizeof out, "%s forward --model %s", bin(), m) == 2);
    CHECK(ds_test_sh(out, sizeof out, "%s forward --bogus", bin()) == 2);
}

/* FP8 checkpoint (doc §8.2): every 2-D weight stored as F8_E4M3 with a
 * `_scale_inv` per 128x128 block (ragged edges included) loads as
 * W = fp8(W8) · S[i/128, j/128].  The expected values are decoded here with
 * the scalar ds_e4m3_to_f32, independently of the loader. */
TEST(load_fp8_block_scaled_checkpoint) {
    ds_config c;
    ds_preset(&c, "tiny");
    c.hidden_size = 160; /* 160 = 128 + 32: ragged blocks on both axes */
    c.quant_fp8 = 1;
    CHECK(ds_config_validate(&c, "test") == 0);
    ds_model m;
    CHECK(ds_model_create(&m, &c) == 0);
    ds_model_init_random(&m, 3);
    float table[256];
    for (int b = 0; b < 256; b++) table[b] = ds_e4m3_to_f32((uint8_t)b);
    int64_t n = m.layout.n, cap = 0;
    for (int64_t i = 0; i < n; i++) cap += m.layout.p[i].numel;
    uint8_t *q8 = ds_malloc((size_t)cap);
    float *scales = ds_malloc((size_t)cap * sizeof(float)), *want = ds_malloc((size_t)m.layout.total * sizeof(float));
    memcpy(want, m.params, (size_t)m.layout.total * sizeof(float));
    ds_st_entry *e = ds_calloc((size_t)(2 * n), sizeof *e);
    char (*names)[128] = ds_calloc((size_t)n, 128);
    int64_t ne = 0, qoff = 0, soff = 0, nfp8 = 0;
    ds_rng r;
    ds_rng_seed(&r, 9);
    for (int64_t i = 0; i < n; i++) {
        const ds_param *p = &m.layout.p[i];
        if (p->flags & DS_PARAM_ALIAS) continue;
        const float *w = m.params + p->offset;
        if (p->ndim != 2 || !strstr(p->name, "proj")) {
            e[ne++] = (ds_st_entry){p->name, DS_F32, p->ndim, {p->shape[0], p->shape[1]}, w};
            continue;
        }
        int64_t R = p->shape[0], C = p->shape[1], br = ds_ceil_div(R, 128), bc = ds_ceil_div(C, 128);
        float *S = scales + soff;
        uint8_t *Q = q8 + qoff;
        for (int64_t k = 0; k < br * bc; k++) S[k] = (float)(0.0002 * (1 + ds_rng_uniform(&r)));
        for (int64_t a = 0; a < R; a++)
            for (int64_t b = 0; b < C; b++) {
                float s = S[(a / 128) * bc + b / 128], x = w[a * C + b] / s;
                int best = 0;
                for (int v = 0; v < 256; v++)
                    if (table[v] == table[v] && fabsf(table[v] - x) < fabsf(table[best] - x)) best = v;
                Q[a * C + b] = (uint8_t)best;
                want[p->offset + a * C + b] = table[best] * s;
            }
        e[ne++] = (ds_st_entry){p->name, DS_F8_E4M3, 2, {R, C}, Q};
        snprintf(names[i], 128, "%s_scale_inv", p->name);
        e[ne++] = (ds_st_entry){names[i], DS_F32, 2, {br, bc}, S};
        qoff += R * C;
        soff += br * bc;
        nfp8++;
    }
    char dir[600], path[700];
    snprintf(dir, sizeof dir, "%s/fp8", ds_test_tmpdir());
    ds_mkdir_p(dir);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK(ds_st_write(path, e, ne, NULL) == 0);
    snprintf(path, sizeof path, "%s/config.json", dir);
    CHECK(ds_config_save(&c, path) == 0);
    ds_model m2;
    CHECK_MSG(ds_model_load(&m2, dir) == 0, "%s", ds_errmsg());
    CHECK(nfp8 > 20);
    if (m2.params) {
        int64_t bad = 0;
        for (int64_t i = 0; i < m.layout.n; i++) {
            const ds_param *p = &m.layout.p[i];
            for (int64_t j = 0; j < p->numel; j++) bad += m2.params[p->offset + j] != want[p->offset + j];
        }
        CHECK_MSG(bad == 0, "%lld values differ", (long long)bad);
        ds_model_free(&m2);
    }
    /* a missing scale is an error naming it */
    for (int64_t i = 0; i < ne; i++)
        if (strstr(e[i].name, "_scale_inv")) { e[i] = e[--ne]; break; }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK(ds_st_write(path, e, ne, NULL) == 0);
    CHECK(ds_model_load(&m2, dir) != 0 && strstr(ds_errmsg(), "_scale_inv is missing"));
    free(q8), free(scales), free(want), free(e), free(names);
    ds_model_free(&m);
}

/* A transformers-style sharded folder (model-0000i-of-0000N.safetensors +
 * model.safetensors.index.json) loads like a single file. */
TEST(load_sharded_folder) {
    ds_config c;
    ds_preset(&c, "tiny");
    ds_model m, m2;
    CHECK(ds_model_create(&m, &c) == 0);
    ds_model_init_random(&m, 21);
    ds_st_entry *e = ds_calloc((size_t)m.layout.n, sizeof *e);
    for (int64_t i = 0; i < m.layout.n; i++) {
        const ds_param *p = &m.layout.p[i];
        e[i] = (ds_st_entry){p->name, DS_F32, p->ndim, {p->shape[0], p->shape[1]}, m.params + p->offset};
    }
    char dir[600], path[700];
    snprintf(dir, sizeof dir, "%s/sharded", ds_test_tmpdir());
    ds_mkdir_p(dir);
    CHECK(ds_st_write_model(dir, e, m.layout.n, NULL, 1 << 20) == 0); /* 1 MiB shards */
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    CHECK(ds_file_exists(path));
    snprintf(path, sizeof path, "%s/config.json", dir);
    CHECK(ds_config_save(&c, path) == 0);
    CHECK_MSG(ds_model_load(&m2, dir) == 0, "%s", ds_errmsg());
    if (m2.params) {
        CHECK(memcmp(m.params, m2.params, (size_t)m.layout.total * sizeof(float)) == 0);
        ds_model_free(&m2);
    }
    free(e);
    ds_model_free(&m);
}

TEST(cli_inspect_errors) {
    char out[4096];
    int rc = ds_test_sh(out, sizeof out, "%s inspect %s/none", bin(), ds_test_tmpdir());
    CHECK_MSG(rc == 1 && strstr(out, "config.json"), "%s", out);
    CHECK(ds_test_sh(out, sizeof out, "%s inspect", bin()) == 2);
}
