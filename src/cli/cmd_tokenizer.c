/*
 * cmd_tokenizer.c — `dsv3 tokenizer encode|decode|info|train`.
 *   encode: text from files (one output line per file) or stdin -> ids (or --tokens)
 *   decode: ids (whitespace separated) from files or stdin -> bytes on stdout
 *   info:   vocab size, merges, special tokens, pre-tokenizer chain
 *   train:  byte-level BPE from text files -> tokenizer.json + tokenizer_config.json
 *           (BOS and EOS are special tokens 0 and 1 unless --no-special-tokens)
 *   convert: load and save again; bench: encode MB/s (for bench/bench_tokenizer.sh)
 */
#include "cli/cli.h"
#include "tokenizer/tok_config.h"
#include "tokenizer/tokenizer.h"

#include <errno.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>


static int write_all(const void *p, size_t n) {
    if (n && fwrite(p, 1, n, stdout) != n) return ds_err("stdout: write failed");
    return 0;
}

static int print_ids(const ds_tokenizer *t, const ds_ids *v, int tokens) {
    for (int64_t i = 0; i < v->n; i++) {
        if (i) putchar(' ');
        if (tokens) {
            const char *s = ds_tokenizer_id_to_token(t, v->ids[i]);
            fputs(s ? s : "?", stdout);
        } else {
            printf("%d", v->ids[i]);
        }
    }
    putchar('\n');
    return ferror(stdout) ? ds_err("stdout: write failed") : 0;
}

static int cmd_encode(int argc, char **argv) {
    const char *tokp = NULL;
    int tokens = 0, no_special = 0, bos = 0;
    double split_p = 0;
    long long seed = 1234;
    ds_opt opts[] = {
        {"--tokenizer", DS_OPT_STR, &tokp, "PATH  tokenizer.json or a folder holding it (required)"},
        {"--tokens", DS_OPT_FLAG, &tokens, "print token strings instead of ids"},
        {"--no-special", DS_OPT_FLAG, &no_special, "treat special tokens in the text as plain text"},
        {"--add-special", DS_OPT_FLAG, &bos, "add BOS/EOS as the post-processor / tokenizer_config says"},
        {"--split-punct-nl", DS_OPT_FLOAT, &split_p, "P  token-boundary bias: split punctuation+newline tokens with probability P"},
        {"--seed", DS_OPT_INT, &seed, "N  seed for --split-punct-nl (default 1234)"},
    };
    const char *pos[256];
    int npos = 0;
    ds_cli_parse("tokenizer encode", "--tokenizer PATH [options] [FILE...]", argc, argv, opts,
                 (int)(sizeof opts / sizeof *opts), pos, 256, &npos);
    if (!tokp) ds_cli_usage_error("tokenizer encode", "--tokenizer is required");
    if (split_p < 0 || split_p > 1) ds_cli_usage_error("tokenizer encode", "--split-punct-nl needs a probability in [0, 1]");
    ds_tokenizer *t = ds_tokenizer_load(tokp);
    if (!t) return ds_cli_fail("tokenizer encode");
    ds_encode_opts o = {.allow_special = !no_special, .add_special = bos, .split_punct_nl_p = split_p,
                        .seed = (uint64_t)seed};
    int rc = 0;
    for (int i = 0; i < (npos ? npos : 1) && !rc; i++) {
        size_t n;
        char *text = npos ? ds_read_file(pos[i], &n) : ds_read_stream(stdin, "stdin", &n);
        if (!text) { rc = -1; break; }
        ds_ids v = {0};
        if (ds_tokenizer_encode_parallel(t, text, n, &o, &v) < 0 || print_ids(t, &v, tokens)) rc = -1;
        ds_ids_free(&v);
        free(text);
    }
    if (rc) { ds_cli_fail("tokenizer encode"); ds_tokenizer_free(t); return 1; }
    ds_tokenizer_free(t);
    return 0;
}

static int decode_text(const ds_tokenizer *t, ds_decode_stream *ds, const char *text, const char *name) {
    const char *p = text;
    for (;;) {
        while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r' || *p == ',') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX)
            return ds_err("%s: byte %lld: not a token id", name, (long long)(p - text));
        size_t n;
        const char *s = ds_decode_stream_next(ds, (int32_t)v, &n);
        if (!s) return ds_err_prefix("%s", name);
        if (write_all(s, n)) return -1;
        p = end;
    }
    return 0;
}

static int cmd_decode(int argc, char **argv) {
    const char *tokp = NULL;
    int skip = 0;
    ds_opt opts[] = {
        {"--tokenizer", DS_OPT_STR, &tokp, "PATH  tokenizer.json or a folder holding it (required)"},
        {"--skip-special", DS_OPT_FLAG, &skip, "leave out special tokens"},
    };
    const char *pos[256];
    int npos = 0;
    ds_cli_parse("tokenizer decode", "--tokenizer PATH [FILE...]", argc, argv, opts,
                 (int)(sizeof opts / sizeof *opts), pos, 256, &npos);
    if (!tokp) ds_cli_usage_error("tokenizer decode", "--tokenizer is required");
    ds_tokenizer *t = ds_tokenizer_load(tokp);
    if (!t) return ds_cli_fail("tokenizer decode");
    int rc = 0;
    for (int i = 0; i < (npos ? npos : 1) && !rc; i++) {
        size_t n;
        char *text = npos ? ds_read_file(pos[i], &n) : ds_read_stream(stdin, "stdin", &n);
        if (!text) { rc = -1; break; }
        ds_decode_stream ds;
        ds_decode_stream_init(&ds, t, skip);
        rc = decode_text(t, &ds, text, npos ? pos[i] : "stdin");
        const char *s = ds_decode_stream_flush(&ds, &n);
        if (!rc) rc = write_all(s, n);
        free(text);
    }
    fflush(stdout);
    ds_tokenizer_free(t);
    return rc ? ds_cli_fail("tokenizer decode") : 0;
}

static int cmd_info(int argc, char **argv) {
    const char *tokp = NULL;
    ds_opt opts[] = {{"--tokenizer", DS_OPT_STR, &tokp, "PATH  tokenizer.json or a folder holding it (required)"}};
    const char *pos[4];
    int npos = 0;
    ds_cli_parse("tokenizer info", "--tokenizer PATH", argc, argv, opts, 1, pos, 1, &npos);
    if (!tokp && npos) tokp = pos[0];
    if (!tokp) ds_cli_usage_error("tokenizer info", "--tokenizer is required");
    ds_tokenizer *t = ds_tokenizer_load(tokp);
    if (!t) return ds_cli_fail("tokenizer info");
    char chain[2048];
    ds_tokenizer_describe(t, chain, sizeof chain);
    printf("vocab_size: %lld\nmerges: %lld\nadded_tokens: %lld\n", (long long)ds_tokenizer_vocab_size(t),
           (long long)ds_tokenizer_num_merges(t), (long long)ds_tokenizer_num_added(t));
    int32_t b = ds_tokenizer_bos_id(t), e = ds_tokenizer_eos_id(t);
    printf("bos: %d %s\neos: %d %s\nadd_bos: %d\n", b, b >= 0 ? ds_tokenizer_id_to_token(t, b) : "", e,
           e >= 0 ? ds_tokenizer_id_to_token(t, e) : "", ds_tokenizer_add_bos(t));
    printf("pre_tokenizer: %s\n", chain[0] ? chain : "(none)");
    int64_t nspec = 0;
    for (int32_t i = 0; i < ds_tokenizer_vocab_size(t); i++) nspec += ds_tokenizer_is_special(t, i);
    printf("special_tokens: %lld", (long long)nspec);
    int shown = 0;
    for (int32_t i = 0; i < ds_tokenizer_vocab_size(t) && shown < 12; i++)
        if (ds_tokenizer_is_special(t, i)) { printf("%s%d=%s", shown ? ", " : " (", i, ds_tokenizer_id_to_token(t, i)); shown++; }
    printf("%s\n", shown ? (nspec > shown ? ", ...)" : ")") : "");
    ds_tokenizer_free(t);
    return 0;
}

static int cmd_train(int argc, char **argv) {
    ds_strlist input = {0}, special = {0};
    long long vocab = 0, minf = 0;
    const char *pre = "deepseek-v3", *tie = "hf", *out = NULL, *bos = NULL, *eos = NULL;
    int lines = 0, nolines = 0, nospecial = 0;
    ds_opt opts[] = {
        {"--input", DS_OPT_MULTI, &input, "FILE...  training text files (required)"},
        {"--vocab-size", DS_OPT_INT, &vocab, "N  final vocabulary size, special tokens included (required)"},
        {"--bos", DS_OPT_STR, &bos, "TOK  beginning-of-sequence token, id 0 (default " DS_DEEPSEEK_BOS ")"},
        {"--eos", DS_OPT_STR, &eos, "TOK  end-of-sequence token, id 1 (default " DS_DEEPSEEK_EOS ")"},
        {"--special-tokens", DS_OPT_MULTI, &special, "TOK...  more special tokens (ids after BOS and EOS)"},
        {"--no-special-tokens", DS_OPT_FLAG, &nospecial, "no BOS and EOS (only the --special-tokens given, if any)"},
        {"--pretokenizer", DS_OPT_STR, &pre, "deepseek-v3|gpt2|llama3 (default deepseek-v3)"},
        {"--tie-break", DS_OPT_STR, &tie, "hf|lex: equal counts -> smaller id pair (tokenizers) or greater byte pair (CS336)"},
        {"--split-lines", DS_OPT_FLAG, &lines, "each line is a sequence (default with --tie-break hf)"},
        {"--no-split-lines", DS_OPT_FLAG, &nolines, "each file is a sequence, split at special tokens (default with lex)"},
        {"--min-frequency", DS_OPT_INT, &minf, "N  stop when the best pair is rarer"},
        {"--out", DS_OPT_STR, &out, "FILE  tokenizer.json to write (required); tokenizer_config.json goes beside it"},
    };
    const char *usage = "--input FILE... --vocab-size N --out FILE [options]";
    const int nopts = (int)(sizeof opts / sizeof *opts);
    ds_cli_parse("tokenizer train", usage, argc, argv, opts, nopts, NULL, 0, NULL);
    if (!input.n) ds_cli_usage_error("tokenizer train", "--input is required");
    if (!out) ds_cli_usage_error("tokenizer train", "--out is required");
    if (vocab < 257 || vocab > 16000000) ds_cli_usage_error("tokenizer train", "--vocab-size must be in [257, 16000000]");
    if (nospecial && (bos || eos))
        ds_cli_usage_error("tokenizer train", "--no-special-tokens cannot be combined with --bos or --eos");
    if ((bos && !*bos) || (eos && !*eos)) ds_cli_usage_error("tokenizer train", "--bos and --eos need a non-empty token");
    if (!nospecial) {
        if (!bos) bos = DS_DEEPSEEK_BOS;
        if (!eos) eos = DS_DEEPSEEK_EOS;
        if (!strcmp(bos, eos)) ds_cli_usage_error("tokenizer train", "--bos and --eos must differ (both %s)", ds_quote(bos));
    }
    /* BOS, EOS, then the other special tokens (a repeat of BOS or EOS is dropped) */
    const char **sp = ds_malloc(((size_t)special.n + 2) * sizeof *sp);
    int nsp = 0;
    if (bos) sp[nsp++] = bos;
    if (eos) sp[nsp++] = eos;
    for (int i = 0; i < special.n; i++) {
        int dup = 0;
        for (int k = 0; k < nsp; k++) dup |= !strcmp(sp[k], special.v[i]);
        if (!dup) sp[nsp++] = special.v[i];
    }
    ds_bpe_train_opts o = {.vocab_size = vocab, .special = sp, .nspecial = nsp, .min_frequency = minf,
                           .verbose = ds_log_level >= DS_LOG_INFO, .bos = bos};
    if (!strcmp(pre, "deepseek-v3")) o.pretok = DS_PRETOK_DEEPSEEK_V3;
    else if (!strcmp(pre, "gpt2")) o.pretok = DS_PRETOK_GPT2;
    else if (!strcmp(pre, "llama3")) o.pretok = DS_PRETOK_LLAMA3;
    else ds_cli_usage_error("tokenizer train", "--pretokenizer must be deepseek-v3, gpt2 or llama3, not %s", ds_quote(pre));
    if (!strcmp(tie, "hf")) o.tie = DS_TIE_HF;
    else if (!strcmp(tie, "lex")) o.tie = DS_TIE_LEX;
    else ds_cli_usage_error("tokenizer train", "--tie-break must be hf or lex, not %s", ds_quote(tie));
    o.split_lines = o.tie == DS_TIE_HF;
    if (lines) o.split_lines = 1;
    if (nolines) o.split_lines = 0;
    double t0 = ds_now();
    ds_tokenizer *t = ds_bpe_train(input.v, input.n, &o);
    free(input.v);
    free(special.v);
    free(sp);
    if (!t) return ds_cli_fail("tokenizer train");
    /* tokenizer_config.json first: a tokenizer.json is never left without the config it was trained with */
    char *cfgp = ds_tokenizer_config_path_of(out), *dir = ds_strdup(cfgp);
    dir[strlen(dir) - strlen("tokenizer_config.json")] = 0;
    int rc = *dir ? ds_mkdir_p(dir) : 0;
    free(dir);
    if (!rc) rc = ds_tokenizer_config_write(cfgp, bos, eos, bos != NULL, 0);
    if (!rc) rc = ds_tokenizer_save(t, out);
    if (!rc)
        ds_log(DS_LOG_INFO, "tokenizer train: %lld tokens, %lld merges in %.2f s -> %s (and %s)",
               (long long)ds_tokenizer_vocab_size(t), (long long)ds_tokenizer_num_merges(t), ds_now() - t0, out, cfgp);
    free(cfgp);
    ds_tokenizer_free(t);
    return rc ? ds_cli_fail("tokenizer train") : 0;
}

/* convert: load and save again (merges in the ["a","b"] form) */
static int cmd_convert(int argc, char **argv) {
    const char *tokp = NULL, *out = NULL;
    ds_opt opts[] = {
        {"--tokenizer", DS_OPT_STR, &tokp, "PATH  tokenizer.json or a folder holding it (required)"},
        {"--out", DS_OPT_STR, &out, "FILE  tokenizer.json to write (required)"},
    };
    ds_cli_parse("tokenizer convert", "--tokenizer PATH --out FILE", argc, argv, opts, 2, NULL, 0, NULL);
    if (!tokp || !out) ds_cli_usage_error("tokenizer convert", "--tokenizer and --out are required");
    ds_tokenizer *t = ds_tokenizer_load(tokp);
    if (!t) return ds_cli_fail("tokenizer convert");
    int rc = ds_tokenizer_save(t, out);
    ds_tokenizer_free(t);
    return rc ? ds_cli_fail("tokenizer convert") : 0;
}

/* bench: encode MB/s of the given files (concatenated), best of --repeat runs,
 * load time excluded; also MB per CPU-second of the process (robust when the
 * machine is shared); one JSON line on stdout (used by bench/bench_tokenizer.sh). */
static int cmd_bench(int argc, char **argv) {
    const char *tokp = NULL;
    long long repeat = 3;
    ds_opt opts[] = {
        {"--tokenizer", DS_OPT_STR, &tokp, "PATH  tokenizer.json or a folder holding it (required)"},
        {"--repeat", DS_OPT_INT, &repeat, "N  runs, the best is reported (default 3)"},
    };
    const char *pos[64];
    int npos = 0;
    ds_cli_parse("tokenizer bench", "--tokenizer PATH FILE...", argc, argv, opts, 2, pos, 64, &npos);
    if (!tokp || !npos) ds_cli_usage_error("tokenizer bench", "--tokenizer and at least one FILE are required");
    double t0 = ds_now();
    ds_tokenizer *t = ds_tokenizer_load(tokp);
    if (!t) return ds_cli_fail("tokenizer bench");
    double tload = ds_now() - t0;
    char *all = NULL;
    size_t n = 0;
    for (int i = 0; i < npos; i++) {
        size_t l;
        char *d = ds_read_file(pos[i], &l);
        if (!d) { free(all); ds_tokenizer_free(t); return ds_cli_fail("tokenizer bench"); }
        all = ds_realloc(all, n + l + 1);
        memcpy(all + n, d, l);
        n += l;
        free(d);
    }
    double best = 1e30, first = 0, bestcpu = 1e30;
    int64_t ntok = 0;
    for (long long r = 0; r < (repeat < 1 ? 1 : repeat); r++) {
        ds_ids v = {0};
        ds_encode_opts o = {.allow_special = 1};
        struct timespec c0, c1;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
        double s = ds_now();
        int64_t k = ds_tokenizer_encode_parallel(t, all, n, &o, &v);
        double e = ds_now() - s;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
        double cpu = (double)(c1.tv_sec - c0.tv_sec) + 1e-9 * (double)(c1.tv_nsec - c0.tv_nsec);
        if (cpu < bestcpu) bestcpu = cpu;
        ds_ids_free(&v);
        if (k < 0) { free(all); ds_tokenizer_free(t); return ds_cli_fail("tokenizer bench"); }
        ntok = k;
        if (e < best) best = e;
        if (r == 0) first = e;
    }
    printf("{\"bytes\": %zu, \"tokens\": %lld, \"threads\": %d, \"seconds\": %.6f, \"mb_s\": %.3f, "
           "\"first_mb_s\": %.3f, \"cpu_mb_s\": %.3f, \"load_s\": %.3f}\n",
           n, (long long)ntok, ds_threads(), best, n / 1e6 / best, n / 1e6 / first, n / 1e6 / bestcpu, tload);
    free(all);
    ds_tokenizer_free(t);
    return 0;
}

static int run(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        FILE *f = argc < 2 ? stderr : stdout;
        fprintf(f, "usage: dsv3 tokenizer encode|decode|info|train [options]\n"
                   "  encode  text (files or stdin) -> token ids\n"
                   "  decode  token ids (files or stdin) -> text\n"
                   "  info    vocab size, special tokens, pre-tokenizer chain\n"
                   "  train   byte-level BPE from text files -> tokenizer.json\n"
                   "  convert load and save a tokenizer.json again\n"
                   "  bench   encode speed (MB/s) on files\n"
                   "'dsv3 tokenizer <sub> --help' for options\n");
        ds_cli_print_examples(f, "tokenizer");
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "encode")) return cmd_encode(argc - 1, argv + 1);
    if (!strcmp(sub, "decode")) return cmd_decode(argc - 1, argv + 1);
    if (!strcmp(sub, "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(sub, "train")) return cmd_train(argc - 1, argv + 1);
    if (!strcmp(sub, "bench")) return cmd_bench(argc - 1, argv + 1);
    if (!strcmp(sub, "convert")) return cmd_convert(argc - 1, argv + 1);
    fprintf(stderr, "dsv3 tokenizer: unknown subcommand %s (encode, decode, info, train)\n", ds_quote(sub));
    return 2;
}
DS_COMMAND("tokenizer", "encode, decode, inspect and train byte-level BPE tokenizers", run)
