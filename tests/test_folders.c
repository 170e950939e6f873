/*
 * test_folders.c — tokenizer training, model folders and generation working
 * together: `tokenizer train --bos/--eos` writes tokenizer_config.json (with
 * DeepSeek-V3's published chat template), every folder dsv3 writes carries
 * generation_config.json and its tokenizer files, a folder saved by
 * transformers with num_nextn_predict_layers 1 but no MTP weights loads and
 * generation stops at its EOS as transformers' does
 * (tests/fixtures/model/nomtp, tools/make_folder_fixtures.py: its logits and
 * greedy ids are transformers'), generate's
 * option names and checks, and the README's example run verbatim.  The
 * transformers cross-checks (tools/check_folder_hf.py, check_hf_load.py) run
 * when python3 imports torch and transformers, and are skipped otherwise.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "base/base.h"
#include "io/safetensors.h"
#include "test.h"

#define NOMTP "tests/fixtures/model/nomtp"

static int have_torch(void) {
    return ds_test_sh(NULL, 0, "python3 -c 'import torch, transformers' >/dev/null 2>&1") == 0;
}

static cJSON *read_json(const char *dir, const char *name) {
    char *p = ds_path_join(dir, name);
    size_t n;
    char *t = ds_read_file(p, &n);
    free(p);
    cJSON *j = t ? cJSON_ParseWithLength(t, n) : NULL;
    free(t);
    return j;
}

static const char *jstr(const cJSON *j, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double jnum(const cJSON *j, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    return cJSON_IsNumber(v) ? v->valuedouble : -999;
}

/* a small corpus in dir/corpus.txt (first 100 KB of TinyShakespeare); 0 or -1 */
static int corpus(const char *dir) {
    const char *src = ds_test_shared("data/tinyshakespeare/input.txt");
    if (!src) return -1;
    return ds_test_sh(NULL, 0, "head -c 100000 %s > %s/corpus.txt", src, dir) == 0 ? 0 : -1;
}

/* "1 2 3 \n" -> ids; the count */
static int parse_ids(const char *s, long long *ids, int cap) {
    int n = 0;
    char *end;
    for (;;) {
        while (*s == ' ' || *s == '\n') s++;
        if (!*s || n == cap) break;
        long long v = strtoll(s, &end, 10);
        if (end == s) break;
        ids[n++] = v;
        s = end;
    }
    return n;
}

static int st_ids(const ds_st_file *f, const char *name, long long *ids, int cap) {
    const ds_st_tensor *t = ds_st_find(f, name);
    if (!t || t->numel > cap) return -1;
    const int64_t *v = t->data;
    for (int64_t i = 0; i < t->numel; i++) ids[i] = v[i];
    return (int)t->numel;
}

static void ids_str(char *buf, size_t cap, const long long *ids, int n) {
    buf[0] = 0;
    for (int i = 0; i < n; i++) snprintf(buf + strlen(buf), cap - strlen(buf), "%lld ", ids[i]);
}

TEST(tokenizer_train_bos_eos_config) {
    const char *dir = ds_test_tmpdir();
    if (corpus(dir)) SKIP("no TinyShakespeare under ../shared/data");
    char out[8192];
    /* --bos/--eos: ids 0 and 1, tokenizer_config.json beside --out */
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 --quiet tokenizer train --input %s/corpus.txt --vocab-size 400 --bos '<|bos|>' "
                     "--eos '<|eos|>' --special-tokens '<|pad|>' '<|eos|>' --out %s/a/tok.json", dir, dir) == 0);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 tokenizer info --tokenizer %s/a/tok.json", dir) == 0);
    CHECK_MSG(strstr(out, "bos: 0 <|bos|>\neos: 1 <|eos|>\nadd_bos: 1") != NULL, "%s", out);
    CHECK_MSG(strstr(out, "special_tokens: 3 (0=<|bos|>, 1=<|eos|>, 2=<|pad|>)") != NULL, "%s", out);
    char sub[600];
    snprintf(sub, sizeof sub, "%s/a", dir);
    cJSON *c = read_json(sub, "tokenizer_config.json");
    CHECK(c != NULL);
    if (c) {
        CHECK(jstr(c, "bos_token") && !strcmp(jstr(c, "bos_token"), "<|bos|>"));
        CHECK(jstr(c, "eos_token") && !strcmp(jstr(c, "eos_token"), "<|eos|>"));
        CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "add_bos_token")));
        CHECK(jnum(c, "model_max_length") > 0);
        /* the chat template is DeepSeek-V3's published one, byte for byte */
        const char *ref = ds_test_shared("data/deepseek_v3_tokenizer/tokenizer_config.json");
        if (ref) {
            size_t n;
            char *t = ds_read_file(ref, &n);
            cJSON *r = t ? cJSON_ParseWithLength(t, n) : NULL;
            CHECK(r && jstr(r, "chat_template") && jstr(c, "chat_template") &&
                  !strcmp(jstr(r, "chat_template"), jstr(c, "chat_template")));
            cJSON_Delete(r);
            free(t);
        }
        cJSON_Delete(c);
    }
    /* encode --add-special puts BOS first (the post-processor and the config agree) */
    CHECK(ds_test_sh(out, sizeof out, "printf 'Hello' | $DSV3 tokenizer encode --tokenizer %s/a/tok.json --add-special", dir) == 0);
    CHECK_MSG(!strncmp(out, "0 ", 2), "%s", out);
    /* default: DeepSeek-V3's BOS and EOS; a folder form that transformers reads */
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 --quiet tokenizer train --input %s/corpus.txt --vocab-size 400 "
                     "--out %s/b/tokenizer.json && $DSV3 tokenizer info --tokenizer %s/b", dir, dir, dir) == 0);
    CHECK_MSG(strstr(out, "bos: 0 <｜begin▁of▁sentence｜>\neos: 1 <｜end▁of▁sentence｜>") != NULL, "%s", out);
    /* --no-special-tokens: none */
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 --quiet tokenizer train --input %s/corpus.txt --vocab-size 400 "
                     "--no-special-tokens --out %s/c/tokenizer.json && $DSV3 tokenizer info --tokenizer %s/c", dir, dir, dir) == 0);
    CHECK_MSG(strstr(out, "bos: -1") && strstr(out, "special_tokens: 0"), "%s", out);
    /* transformers reads the folder with the same BOS/EOS and the same ids (BOS added) */
    if (have_torch()) {
        char ids[256];
        CHECK(ds_test_sh(ids, sizeof ids, "printf 'To be, or not' | $DSV3 tokenizer encode --tokenizer %s/b --add-special", dir) == 0);
        ids[strcspn(ids, "\n")] = 0;
        CHECK(ds_test_sh(out, sizeof out, "python3 tools/check_folder_hf.py %s/b --text 'To be, or not' --text-ids '%s'", dir,
                         ids) == 0);
        CHECK_MSG(strstr(out, "ok") && strstr(out, "bos 0 eos 1"), "%s", out);
    } else {
        fprintf(stderr, "  transformers check skipped: python3 cannot import torch, transformers\n");
    }
}

TEST(tokenizer_train_bad_input) {
    const char *dir = ds_test_tmpdir();
    char out[4096];
    CHECK(ds_test_sh(out, sizeof out, ": > %s/empty.txt && $DSV3 tokenizer train --input %s/empty.txt --vocab-size 400 "
                     "--out %s/t.json", dir, dir, dir) == 1);
    CHECK_MSG(strstr(out, "empty.txt: empty") && !strchr(strchr(out, '\n') + 1, '\n'), "%s", out);
    CHECK(ds_test_sh(NULL, 0, "test -e %s/t.json", dir) != 0);
    CHECK(ds_test_sh(out, sizeof out, "printf 'abc' > %s/x.txt && $DSV3 tokenizer train --input %s/x.txt --vocab-size 400 "
                     "--no-special-tokens --bos '<s>' --out %s/t.json", dir, dir, dir) == 2);
    CHECK(strstr(out, "--no-special-tokens") != NULL);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 tokenizer train --input %s/x.txt --vocab-size 400 --bos '<s>' --eos '<s>' "
                     "--out %s/t.json", dir, dir) == 2);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 tokenizer train --help") == 0);
    const char *ex = strstr(out, "examples:\n  dsv3 tokenizer train --input");
    CHECK_MSG(ex && !strstr(ex, "--help"), "%s", out); /* the examples end the text */
}

/* init --tokenizer: the folder carries tokenizer.json, tokenizer_config.json and
 * generation_config.json with the tokenizer's ids; generate reads them; a folder
 * without a tokenizer takes one with --tokenizer. */
TEST(init_folder_carries_tokenizer_and_generation_config) {
    const char *dir = ds_test_tmpdir();
    if (corpus(dir)) SKIP("no TinyShakespeare under ../shared/data");
    char out[16384], sub[600];
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 --quiet tokenizer train --input %s/corpus.txt --vocab-size 320 --bos '<|b|>' "
                     "--eos '<|e|>' --special-tokens '<|x|>' --out %s/tok/tokenizer.json", dir, dir) == 0);
    /* <|x|> first: the ids of BOS/EOS must come from the tokenizer, not from a name */
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 --quiet init --config tiny --tokenizer %s/tok --out %s/m", dir, dir) == 0);
    snprintf(sub, sizeof sub, "%s/m", dir);
    const char *files[] = {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                           "model.safetensors"};
    for (int i = 0; i < 5; i++) {
        char *p = ds_path_join(sub, files[i]);
        CHECK_MSG(ds_file_exists(p), "%s missing", p);
        free(p);
    }
    cJSON *g = read_json(sub, "generation_config.json"), *c = read_json(sub, "config.json"),
          *t = read_json(sub, "tokenizer_config.json");
    CHECK(g && c && t);
    if (g && c && t) {
        CHECK(jnum(g, "bos_token_id") == 0 && jnum(g, "eos_token_id") == 1);
        CHECK(jnum(c, "bos_token_id") == 0 && jnum(c, "eos_token_id") == 1 && jnum(c, "vocab_size") == 320);
        CHECK(jnum(t, "model_max_length") == jnum(c, "max_position_embeddings"));
        CHECK(jstr(t, "eos_token") && !strcmp(jstr(t, "eos_token"), "<|e|>"));
    }
    cJSON_Delete(g), cJSON_Delete(c), cJSON_Delete(t);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 generate --model %s/m --prompt 'ROMEO:' --max-new-tokens 4 2>/dev/null", dir) == 0);
    CHECK_MSG(!strncmp(out, "ROMEO:", 6), "%s", out);
    /* a folder init made without a tokenizer: --tokenizer supplies one */
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 --quiet init --config %s/m/config.json --out %s/bare && "
                     "test -e %s/bare/generation_config.json && ! test -e %s/bare/tokenizer.json", dir, dir, dir, dir) == 0);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 generate --model %s/bare --prompt 'ROMEO:' --max-new-tokens 2", dir) == 1);
    CHECK(strstr(out, "--tokenizer") != NULL);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 generate --model %s/bare --tokenizer %s/tok --prompt 'ROMEO:' "
                     "--max-new-tokens 3 2>/dev/null", dir, dir) == 0);
    CHECK_MSG(!strncmp(out, "ROMEO:", 6), "%s", out);
}

/* A folder saved by transformers (num_nextn_predict_layers 1, no MTP weights):
 * it loads without MTP, said once, and greedy generation stops at the EOS of
 * its generation_config.json exactly where transformers' generate stops. */
TEST(folder_without_mtp_weights_loads_and_stops_at_eos) {
    ds_st_file f;
    if (ds_st_open(&f, NOMTP "/reference.safetensors")) SKIP("no " NOMTP " fixture");
    long long prompt[16], freeids[32], eosids[32];
    int np = st_ids(&f, "prompt_ids", prompt, 16), nf = st_ids(&f, "free_ids", freeids, 32),
        ne = st_ids(&f, "eos_ids", eosids, 32);
    ds_st_close(&f);
    CHECK(np > 0 && nf > ne && ne > 1);
    if (np <= 0 || nf <= ne || ne <= 1) return;
    char p[256], want[512], out[8192];
    ids_str(p, sizeof p, prompt, np);
    /* stops at the EOS, as transformers' generate does */
    const char *dir = ds_test_tmpdir();
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 generate --model " NOMTP " --ids --prompt '%s' --max-new-tokens %d "
                     "2>%s/err.txt", p, nf, dir) == 0);
    ids_str(want, sizeof want, eosids, ne);
    CHECK_MSG(!strncmp(out, want, strlen(want)) && out[strlen(want)] == '\n', "got '%s', want '%s'", out, want);
    CHECK(ds_test_sh(out, sizeof out, "cat %s/err.txt", dir) == 0);
    CHECK(strstr(out, "(stopped at EOS)") != NULL);
    const char *m = strstr(out, "no MTP weights");
    CHECK_MSG(m && !strstr(m + 1, "no MTP weights"), "%s", out); /* said once */
    /* without the EOS: transformers' free-running greedy ids */
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 generate --model " NOMTP " --ids --prompt '%s' --max-new-tokens %d "
                     "--ignore-eos 2>/dev/null", p, nf) == 0);
    ids_str(want, sizeof want, freeids, nf);
    CHECK_MSG(!strncmp(out, want, strlen(want)), "got '%s', want '%s'", out, want);
    /* forward loads it too, with and without --no-mtp; MTP speculation says it has none */
    CHECK(ds_test_sh(out, sizeof out, "echo '%s' > %s/ids.txt && $DSV3 forward --model " NOMTP " --ids %s/ids.txt --out "
                     "%s/o.safetensors --no-mtp && $DSV3 forward --model " NOMTP " --ids %s/ids.txt --out %s/o.safetensors",
                     p, dir, dir, dir, dir, dir) == 0);
    /* its logits are transformers' */
    char op[700];
    snprintf(op, sizeof op, "%s/o.safetensors", dir);
    ds_st_file ref, got;
    if (ds_st_open(&ref, NOMTP "/reference.safetensors") == 0) {
        if (ds_st_open(&got, op) == 0) {
            const ds_st_tensor *r = ds_st_find(&ref, "logits"), *g = ds_st_find(&got, "logits");
            CHECK(r && g && r->numel == g->numel);
            if (r && g && r->numel == g->numel) {
                float *a = ds_malloc((size_t)r->numel * sizeof(float)), *b = ds_malloc((size_t)r->numel * sizeof(float));
                ds_st_to_f32(r, a);
                ds_st_to_f32(g, b);
                double e = ds_test_max_rel(b, a, (size_t)r->numel, 1e-6);
                CHECK_MSG(e < 1e-5, "logits max rel err %.3g", e);
                free(a), free(b);
            }
            ds_st_close(&got);
        } else {
            CHECK_MSG(0, "%s", ds_errmsg());
        }
        ds_st_close(&ref);
    }
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 generate --model " NOMTP " --ids --prompt '%s' --speculative mtp", p) == 1);
    CHECK(strstr(out, "MTP module") != NULL);
}

/* A folder dsv3 writes names its EOS in generation_config.json: dsv3 and
 * transformers' generate both stop there.  The EOS is chosen as a token the
 * random model emits (free run), then the same model is written again with that
 * eos_token_id. */
TEST(generate_stops_at_eos_of_written_folder) {
    const char *dir = ds_test_tmpdir();
    char out[16384], p[64] = "5 6 7 8 ";
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 --quiet init --config tiny --config-only --out %s/c", dir) == 0);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 --quiet init --config %s/c/config.json --seed 3 --out %s/a && "
                     "$DSV3 generate --model %s/a --ids --prompt '%s' --max-new-tokens 12 --ignore-eos 2>/dev/null",
                     dir, dir, dir, p) == 0);
    long long ids[16];
    int n = parse_ids(out, ids, 16), k = -1;
    CHECK(n == 12);
    for (int i = 3; i < n && k < 0; i++) {
        int seen = 0;
        for (int j = 0; j < i; j++) seen |= ids[j] == ids[i];
        if (!seen) k = i;
    }
    if (k < 0) SKIP("the free run repeats one token");
    CHECK(ds_test_sh(out, sizeof out, "sed -i 's/\"eos_token_id\": *[0-9]*/\"eos_token_id\": %lld/' %s/c/config.json && "
                     "$DSV3 --quiet init --config %s/c/config.json --seed 3 --out %s/b && "
                     "grep -q '\"eos_token_id\":.*%lld' %s/b/generation_config.json", ids[k], dir, dir, dir, ids[k], dir) == 0);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 generate --model %s/b --ids --prompt '%s' --max-new-tokens 12 2>/dev/null",
                     dir, p) == 0);
    char want[256];
    ids_str(want, sizeof want, ids, k + 1);
    CHECK_MSG(!strcmp(out, want) || (!strncmp(out, want, strlen(want)) && out[strlen(want)] == '\n'),
              "got '%s', want '%s'", out, want);
    if (have_torch()) {
        CHECK(ds_test_sh(out, sizeof out, "python3 tools/check_folder_hf.py %s/b --prompt-ids '%s' --expect-ids '%s'",
                         dir, p, want) == 0);
        CHECK_MSG(strstr(out, "ok") != NULL, "%s", out);
    } else {
        fprintf(stderr, "  transformers check skipped: python3 cannot import torch, transformers\n");
    }
}

TEST(generate_option_names_and_checks) {
    char out[8192], a[4096], b[4096];
    const char *v3 = "tests/fixtures/model/v3";
    /* transformers' names; the old spellings still work */
    CHECK(ds_test_sh(a, sizeof a, "$DSV3 generate --model %s --ids --prompt '3 4' --max-new-tokens 5 --ignore-eos 2>/dev/null",
                     v3) == 0);
    CHECK(ds_test_sh(b, sizeof b, "$DSV3 generate --model %s --ids --prompt '3 4' --max-tokens 5 --ignore-eos 2>/dev/null",
                     v3) == 0);
    CHECK(parse_ids(a, (long long[8]){0}, 8) == 5 && !strcmp(a, b));
    /* the sampler's options are checked before the model loads (the model does not exist): exit 2 with the range */
    static const char *bad[][2] = {{"--temperature -1", ">= 0"}, {"--temperature nan", "nan"},
                                   {"--top-p 0", "(0, 1]"},       {"--top-p 1.5", "(0, 1]"},
                                   {"--top-p nan", "nan"},        {"--top-k -2", ">= 0"},
                                   {"--max-new-tokens -1", ">= 0"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_MSG(ds_test_sh(out, sizeof out, "$DSV3 generate --model /nonexistent --ids --prompt 1 %s", bad[i][0]) == 2,
                  "%s: %s", bad[i][0], out);
        CHECK_MSG(strstr(out, bad[i][1]) != NULL && !strstr(out, "nonexistent"), "%s: %s", bad[i][0], out);
    }
    /* far past the context: cut to it with one note, nothing allocated for the rest */
    const char *dir = ds_test_tmpdir();
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 generate --model %s --ids --prompt '3 4' --max-new-tokens 1000000000000000 "
                     "--ignore-eos 2>%s/err.txt", v3, dir) == 0);
    CHECK(parse_ids(out, (long long[80]){0}, 80) == 62);
    CHECK(ds_test_sh(out, sizeof out, "cat %s/err.txt", dir) == 0);
    const char *m = strstr(out, "cut to 62");
    CHECK_MSG(m && !strstr(m + 1, "cut to"), "%s", out);
    /* within the context: no note */
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 generate --model %s --ids --prompt '3 4' --ignore-eos", v3) == 0);
    CHECK(strstr(out, "cut to") == NULL);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 generate --help") == 0);
    const char *ex = strstr(out, "examples:\n  dsv3 generate --model");
    CHECK_MSG(ex && !strstr(ex, "--help") && strstr(out, "--max-new-tokens"), "%s", out);
}

/* The README's "Example, from text to evaluation" block, run as written on a
 * 200 KB corpus: only ./dsv3 and tools/ become paths of this checkout. */
TEST(readme_example_runs_verbatim) {
    const char *rel = ds_test_shared("data/tinyshakespeare/input.txt");
    if (!rel) SKIP("no TinyShakespeare under ../shared/data");
    const char *dir = ds_test_tmpdir();
    char cwd[512], bin[1024], src[1024], out[65536];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    if (rel[0] == '/') snprintf(src, sizeof src, "%s", rel);
    else snprintf(src, sizeof src, "%s/%s", cwd, rel);
    const char *b = getenv("DSV3") ? getenv("DSV3") : "./dsv3";
    if (b[0] == '/') snprintf(bin, sizeof bin, "%s", b);
    else snprintf(bin, sizeof bin, "%s/%s", cwd, b[0] == '.' && b[1] == '/' ? b + 2 : b);
    /* the block after the line "Example, from text to evaluation:" */
    CHECK(ds_test_sh(out, sizeof out,
                     "awk '/^Example, from text to evaluation/{f=1;next} f&&/^```sh/{b=1;next} b&&/^```/{exit} b' "
                     "README.md > %s/example.sh && test -s %s/example.sh", dir, dir) == 0);
    TEST_RETURN_IF_FAILED();
    CHECK(ds_test_sh(out, sizeof out, "grep -c . %s/example.sh | grep -qv '^[0-4]$'", dir) == 0);
    int torch = have_torch();
    if (!torch) fprintf(stderr, "  the check_hf_load.py line is skipped: python3 cannot import torch, transformers\n");
    int rc = ds_test_sh(out, sizeof out,
                        "cd %s && head -c 200000 %s > corpus.txt && tail -c +200001 %s | head -c 20000 > heldout.txt && "
                        "sed -e 's#^\\./dsv3 #%s #' -e 's#\\([ |]\\)\\./dsv3 #\\1%s #g' "
                        "-e 's# tools/# %s/tools/#' %s example.sh > run.sh && cat run.sh && bash -e -o pipefail run.sh",
                        dir, src, src, bin, bin, cwd, torch ? "" : "-e '/^python3 /d'");
    CHECK_MSG(rc == 0, "README example failed (rc %d):\n%s", rc, out);
    if (torch) CHECK_MSG(strstr(out, "check_hf_load: ok") != NULL, "%s", out);
    CHECK_MSG(strstr(out, "bits_per_byte") != NULL || strstr(out, "byte_perplexity") != NULL, "%s", out);
}
