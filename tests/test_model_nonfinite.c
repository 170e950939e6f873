/*
 * test_model_nonfinite.c — a weight holding NaN or infinity is refused on
 * load (one line naming the file, the tensor and the first bad element), in
 * every storage the loader keeps (FP32, BF16-resident, FP8-resident codes and
 * scales), and so by forward, generate and eval; DSV3_ALLOW_NONFINITE=1 (or
 * ds_load_opts.allow_nonfinite) loads it anyway.  The bad positions are
 * planted by the test, so the expected message is known independently.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/presets.h"
#include "test.h"

static const char *bin(void) {
    const char *b = getenv("DSV3");
    return b ? b : "./dsv3";
}

#define TARGET "model.layers.1.self_attn.o_proj.weight"

/* Save the tiny preset (seed 1) to dir with target stored as dtype (F32,
 * BF16 or F8_E4M3 with a _scale_inv of ones) and element (r, c) set to bad:
 * a float for F32 / BF16, an E4M3 code for F8 (bad_scale: the scale instead). */
static int save_with(const char *dir, ds_dtype dtype, int64_t r, int64_t c, float bad, int bad_scale) {
    ds_config cfg;
    ds_model m;
    if (ds_preset(&cfg, "tiny") || ds_model_create(&m, &cfg)) return -1;
    ds_model_init_random(&m, 1);
    ds_st_entry *e = ds_calloc((size_t)m.layout.n + 1, sizeof *e);
    int64_t n = 0;
    uint16_t *b16 = NULL;
    uint8_t *q = NULL;
    float *sc = NULL;
    for (int64_t i = 0; i < m.layout.n; i++) {
        const ds_param *p = &m.layout.p[i];
        if (p->flags & DS_PARAM_ALIAS) continue;
        float *x = m.params + p->offset;
        e[n] = (ds_st_entry){p->name, DS_F32, p->ndim, {p->shape[0], p->shape[1]}, x};
        if (!strcmp(p->name, TARGET)) {
            int64_t cols = p->shape[1], k = r * cols + c;
            if (dtype == DS_F32) x[k] = bad;
            if (dtype == DS_BF16) {
                x[k] = bad;
                b16 = ds_malloc((size_t)p->numel * 2);
                for (int64_t j = 0; j < p->numel; j++) {
                    uint32_t u;
                    memcpy(&u, &x[j], 4);
                    b16[j] = (uint16_t)(u >> 16); /* truncation keeps NaN and inf */
                }
                e[n].dtype = DS_BF16;
                e[n].data = b16;
            }
            if (dtype == DS_F8_E4M3) {
                q = ds_malloc((size_t)p->numel);
                for (int64_t j = 0; j < p->numel; j++) q[j] = 0x38; /* 1.0 */
                if (!bad_scale) q[k] = 0x7f;                          /* NaN */
                int64_t sr = (p->shape[0] + 127) / 128, scn = (p->shape[1] + 127) / 128;
                sc = ds_malloc((size_t)(sr * scn) * sizeof(float));
                for (int64_t j = 0; j < sr * scn; j++) sc[j] = 1.0f;
                if (bad_scale) sc[sr * scn - 1] = bad;
                e[n].dtype = DS_F8_E4M3;
                e[n].data = q;
                static char sname[128];
                snprintf(sname, sizeof sname, "%s_scale_inv", p->name);
                n++;
                e[n] = (ds_st_entry){sname, DS_F32, 2, {sr, scn}, sc};
            }
        }
        n++;
    }
    ds_mkdir_p(dir);
    char *path = ds_path_join(dir, "model.safetensors");
    int rc = ds_st_write(path, e, n, NULL);
    free(path);
    path = ds_path_join(dir, "config.json");
    if (!rc) rc = ds_config_save(&cfg, path);
    free(path);
    free(e);
    free(b16);
    free(q);
    free(sc);
    ds_model_free(&m);
    return rc;
}

static void expect_load_error(const char *dir, int resident, const char *want) {
    ds_model m;
    ds_load_opts o = {.fp8_resident = resident};
    CHECK_MSG(ds_model_load_ex(&m, dir, &o) != 0, "%s loaded", dir);
    CHECK_MSG(strstr(ds_errmsg(), want) && !strchr(ds_errmsg(), '\n'), "'%s' lacks '%s'", ds_errmsg(), want);
    /* loads when allowed */
    o.allow_nonfinite = 1;
    CHECK_MSG(ds_model_load_ex(&m, dir, &o) == 0, "%s", ds_errmsg());
    ds_model_free(&m);
}

TEST(model_load_refuses_nonfinite_weights) {
    const char *tmp = ds_test_tmpdir();
    char d[600];
    snprintf(d, sizeof d, "%s/f32nan", tmp);
    CHECK(save_with(d, DS_F32, 5, 17, NAN, 0) == 0);
    expect_load_error(d, 0, "model.safetensors: tensor " TARGET ": non-finite value nan at [5, 17]");
    snprintf(d, sizeof d, "%s/f32inf", tmp);
    CHECK(save_with(d, DS_F32, 0, 0, -INFINITY, 0) == 0);
    expect_load_error(d, 1, "tensor " TARGET ": non-finite value -inf at [0, 0] (flat index 0)");
    /* BF16: widened to FP32 (--dequant) or kept BF16-resident */
    snprintf(d, sizeof d, "%s/bf16", tmp);
    CHECK(save_with(d, DS_BF16, 7, 3, INFINITY, 0) == 0);
    expect_load_error(d, 0, "tensor " TARGET ": non-finite value inf at [7, 3]");
    expect_load_error(d, 1, "tensor " TARGET ": non-finite BF16 value at [7, 3]");
    /* FP8: a NaN code, dequantized or resident; a non-finite block scale */
    snprintf(d, sizeof d, "%s/fp8", tmp);
    CHECK(save_with(d, DS_F8_E4M3, 2, 9, 0, 0) == 0);
    expect_load_error(d, 0, "tensor " TARGET ": non-finite value nan at [2, 9]");
    expect_load_error(d, 1, "tensor " TARGET ": non-finite FP8 code (NaN) at [2, 9]");
    snprintf(d, sizeof d, "%s/fp8scale", tmp);
    CHECK(save_with(d, DS_F8_E4M3, 0, 0, NAN, 1) == 0);
    expect_load_error(d, 1, "tensor " TARGET "_scale_inv: non-finite scale at flat index 0");
    /* a clean model loads (and that is what the check costs nothing on) */
    snprintf(d, sizeof d, "%s/ok", tmp);
    CHECK(save_with(d, DS_F8_E4M3, 0, 0, 1.0f, 1) == 0);
    ds_model m;
    ds_load_opts o = {.fp8_resident = 1};
    CHECK_MSG(ds_model_load_ex(&m, d, &o) == 0, "%s", ds_errmsg());
    ds_model_free(&m);
}

TEST(model_nonfinite_cli_forward_generate_eval_refuse) {
    const char *tmp = ds_test_tmpdir();
    char d[600], ids[700], task[700], out[4096];
    snprintf(d, sizeof d, "%s/nan", tmp);
    CHECK(save_with(d, DS_F32, 5, 17, NAN, 0) == 0);
    snprintf(ids, sizeof ids, "%s/ids.txt", tmp);
    CHECK(ds_write_file_atomic(ids, "1 2 3\n", 6) == 0);
    snprintf(task, sizeof task, "%s/mc.jsonl", tmp);
    const char *mc = "{\"query\": \"a b\", \"choices\": [\"c\", \"d\"], \"gold\": 0}\n";
    CHECK(ds_write_file_atomic(task, mc, strlen(mc)) == 0);
    const char *want = "tensor " TARGET ": non-finite value nan at [5, 17]";
    char cmds[3][1024];
    snprintf(cmds[0], sizeof cmds[0], "forward --model %s --ids %s --out %s/o.safetensors", d, ids, tmp);
    snprintf(cmds[1], sizeof cmds[1], "generate --model %s --ids --prompt '1 2 3' --max-tokens 2", d);
    /* the folder has no tokenizer (as dsv3 init makes it): eval takes one */
    snprintf(cmds[2], sizeof cmds[2], "eval --model %s --tokenizer tests/fixtures/eval/model/tokenizer.json --task mc:%s", d, task);
    for (int i = 0; i < 3; i++) {
        int rc = ds_test_sh(out, sizeof out, "%s %s", bin(), cmds[i]);
        CHECK_MSG(rc == 1 && strstr(out, want), "exit %d for %s: %s", rc, cmds[i], out);
        int lines = 0;
        for (const char *p = out; *p; p++) lines += *p == '\n';
        CHECK_MSG(lines == 1, "%d lines: %s", lines, out);
    }
    int rc = ds_test_sh(out, sizeof out, "DSV3_ALLOW_NONFINITE=1 %s %s", bin(), cmds[0]);
    CHECK_MSG(rc == 0, "%s", out);
}
