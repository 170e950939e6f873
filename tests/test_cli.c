/*
 * test_cli.c — the CLI framework through the dsv3 binary (src/cli/args.c,
 * main.c, examples.c) and src/base/suggest.c: unknown commands, options,
 * presets and choices exit 2 with the nearest valid names; out-of-range,
 * NaN and infinite values exit 2 with the allowed range; hidden aliases parse
 * but are neither listed nor suggested; every --help ends with examples, and
 * every example parses (run with --help appended).
 * Oracles: textbook edit distances (Levenshtein's kitten/sitting = 3; the
 * optimal-string-alignment distance of a swap = 1), and the option tables'
 * documented ranges.
 */
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "base/suggest.h"
#include "test.h"

TEST(suggest_edit_distance_and_nearest) {
    CHECK(ds_edit_distance("kitten", "sitting") == 3);
    CHECK(ds_edit_distance("flaw", "lawn") == 2);
    CHECK(ds_edit_distance("trian", "train") == 1); /* one swap */
    CHECK(ds_edit_distance("", "abc") == 3);
    CHECK(ds_edit_distance("Train", "train") == 0);
    static const char *const c[] = {"--temperature", "--top-p", "--top-k", NULL, "--seed"};
    const char *out[3];
    CHECK(ds_suggest("--tempreature", c, 5, out, 3) == 1 && !strcmp(out[0], "--temperature"));
    CHECK(ds_suggest("--temp", c, 5, out, 3) >= 1 && !strcmp(out[0], "--temperature")); /* a prefix */
    int n = ds_suggest("--top_p", c, 5, out, 3);
    CHECK(n == 2 && !strcmp(out[0], "--top-p") && !strcmp(out[1], "--top-k"));
    CHECK(ds_suggest("--xyzzy-plugh", c, 5, out, 3) == 0);
    char buf[128];
    CHECK(!strcmp(ds_suggest_text(buf, sizeof buf, "--sede", c, 5), "did you mean '--seed'?"));
}

/* rc and output of a dsv3 command line */
static int sh(char *out, size_t cap, const char *args) { return ds_test_sh(out, cap, "$DSV3 %s", args); }

TEST(cli_unknown_names_suggest_nearest) {
    char out[8192];
    int rc = sh(out, sizeof out, "trian --steps 3");
    CHECK_MSG(rc == 2 && strstr(out, "unknown command 'trian'; did you mean 'train'?"), "rc %d: %s", rc, out);
    rc = sh(out, sizeof out, "train --lrr 1e-3");
    CHECK_MSG(rc == 2 && strstr(out, "unknown option '--lrr'; did you mean '--lr'"), "rc %d: %s", rc, out);
    CHECK(strlen(out) < 300); /* one line (and a hint), not the whole usage */
    rc = sh(out, sizeof out, "train --mtp-lamda 0.3");
    CHECK_MSG(rc == 2 && strstr(out, "'--mtp-lambda'"), "rc %d: %s", rc, out);
    /* a hidden alias is never suggested: --sample-tokens is one edit away, but the listed names are offered */
    rc = sh(out, sizeof out, "train --sample-token 5");
    CHECK_MSG(rc == 2 && !strstr(out, "'--sample-tokens'") && strstr(out, "did you mean '--sample'"), "rc %d: %s", rc, out);
    rc = sh(out, sizeof out, "init --config tinny --out /nonexistent/x");
    CHECK_MSG(rc == 2 && strstr(out, "unknown preset 'tinny'; did you mean 'tiny'?"), "rc %d: %s", rc, out);
    rc = sh(out, sizeof out, "train --config smal --data d --out r --steps 1");
    CHECK_MSG(rc == 2 && strstr(out, "did you mean 'small'?"), "rc %d: %s", rc, out);
    rc = sh(out, sizeof out, "train --config tiny --data d --out r --steps 1 --precision bf61");
    CHECK_MSG(rc == 2 && strstr(out, "did you mean 'bf16'") && strstr(out, "known: fp32, bf16, fp8"), "rc %d: %s", rc, out);
    rc = sh(out, sizeof out, "fp8 stdy");
    CHECK_MSG(rc == 2 && strstr(out, "did you mean 'study'"), "rc %d: %s", rc, out);
    rc = sh(out, sizeof out, "--thread 2 train");
    CHECK_MSG(rc == 2 && strstr(out, "did you mean '--threads'"), "rc %d: %s", rc, out);
}

TEST(cli_values_out_of_range_exit_2_with_the_range) {
    static const struct { const char *args, *needle; } bad[] = {
        {"--lr nan", "--lr: got 'nan'; allowed: (0, inf)"},
        {"--lr inf", "--lr: got 'inf'; allowed: (0, inf)"},
        {"--lr 0", "allowed: (0, inf)"},
        {"--mtp-lambda nan", "--mtp-lambda: got 'nan'; allowed: [0, inf)"},
        {"--mtp-lambda -0.1", "allowed: [0, inf)"},
        {"--clip -1", "--clip: got '-1'; allowed: [0, inf)"},
        {"--warmup -5", "--warmup: got '-5'; allowed: [0, inf) (an integer)"},
        {"--save-every -1", "--save-every: got '-1'"},
        {"--eval-every -2", "--eval-every: got '-2'"},
        {"--gamma-until 1.5", "--gamma-until: got '1.5'; allowed: [0, 1]"},
        {"--decay-start -inf", "allowed: [0, 1]"},
        {"--minutes nan", "--minutes: got 'nan'"},
        {"--batch 0", "--batch: got '0'; allowed: [1, 1048576]"},
        {"--seq 1", "--seq: got '1'; allowed: [2,"},
        {"--temperature -1", "--temperature: got '-1'"},
        {"--sample-tokens -3", "--sample-tokens: got '-3'"}, /* the hidden alias keeps the range */
    };
    char out[4096], args[512];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(args, sizeof args, "train --config tiny --data d --out r --steps 1 %s", bad[i].args);
        int rc = sh(out, sizeof out, args);
        CHECK_MSG(rc == 2 && strstr(out, bad[i].needle), "%s: rc %d: %s", bad[i].args, rc, out);
    }
    int rc = sh(out, sizeof out, "fp8 study --bits 99");
    CHECK_MSG(rc == 2 && strstr(out, "--bits: got '99'; allowed: [1, 40]"), "rc %d: %s", rc, out);
    rc = sh(out, sizeof out, "--threads 0 train");
    CHECK_MSG(rc == 2 && strstr(out, "allowed: [1, 4096]"), "rc %d: %s", rc, out);
}

TEST(cli_hidden_alias_parses_but_is_not_listed) {
    char out[16384];
    int rc = sh(out, sizeof out, "train --help");
    CHECK_MSG(rc == 0 && strstr(out, "--max-new-tokens") && !strstr(out, "--sample-tokens"), "%s", out);
    /* parsed (a value in range), then --help */
    rc = sh(out, sizeof out, "train --sample-tokens 5 --help");
    CHECK_MSG(rc == 0, "rc %d: %s", rc, out);
}

/* Every command's and subcommand's --help ends with examples, and each
 * example's options exist: the example with --help appended exits 0. */
TEST(cli_every_help_ends_with_examples_that_parse) {
    static const char *const cmds[] = {"", "train", "bench-train", "bench-decode", "convert", "data", "data prepare", "eval",
                                       "forward", "fp8", "fp8 study", "fp8 bench", "fp8 analyze", "generate",
                                       "init", "inspect", "serve", "chat", "tokenizer", "tokenizer encode", "tokenizer decode",
                                       "tokenizer info", "tokenizer train", "tokenizer convert", "tokenizer bench",
                                       "comm-check", "ep-check", "plan", "report", "ablate"};
    static char out[32768];
    /* every registered command is in the list above */
    int rc = sh(out, sizeof out, "--help");
    CHECK(rc == 0);
    char *p = strstr(out, "commands:\n");
    CHECK(p != NULL);
    TEST_RETURN_IF_FAILED();
    int ncmd = 0;
    for (p = strchr(p, '\n') + 1; p[0] == ' ' && p[1] == ' '; p = strchr(p, '\n') + 1) {
        char name[64];
        CHECK(sscanf(p, " %63s", name) == 1);
        int found = 0;
        for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) found |= !strcmp(cmds[i], name);
        CHECK_MSG(found, "command '%s' is not covered by this test", name);
        ncmd++;
    }
    CHECK(ncmd >= 11);
    int nex = 0;
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char args[128];
        snprintf(args, sizeof args, "%s --help", cmds[i]);
        rc = sh(out, sizeof out, args);
        char *ex = strstr(out, "\nexamples:\n");
        CHECK_MSG(rc == 0 && ex, "dsv3 %s --help: rc %d, no examples:\n%s", cmds[i], rc, out);
        if (!ex) continue;
        /* the examples are the last lines */
        char *lines = ds_strdup(ex + 11);
        int n = 0;
        for (char *l = strtok(lines, "\n"); l; l = strtok(NULL, "\n"), n++) {
            CHECK_MSG(!strncmp(l, "  dsv3 ", 7), "dsv3 %s --help: '%s' after examples:", cmds[i], l);
            if (strncmp(l, "  dsv3 ", 7)) break;
            char cmd[1024], eo[8192];
            snprintf(cmd, sizeof cmd, "%s --help", l + 7);
            int erc = sh(eo, sizeof eo, cmd);
            CHECK_MSG(erc == 0 && strstr(eo, "usage: dsv3"), "example '%s': rc %d: %s", l + 2, erc, eo);
            nex++;
        }
        CHECK_MSG(n >= 1 && n <= 3, "dsv3 %s --help: %d examples", cmds[i], n);
        free(lines);
    }
    fprintf(stderr, "  %d commands, %d examples parse\n", ncmd, nex);
}

/* How idle OpenMP workers wait (main.c): dsv3 decides only when neither
 * OMP_WAIT_POLICY nor GOMP_SPINCOUNT is set; it sleeps them at once when the
 * run's threads cannot all have a CPU (one thread: no team; 64 local MPI
 * ranks of 2 threads on this machine), whatever the load; --verbose names the
 * choice and its inputs. */
TEST(cli_openmp_wait_policy_choice) {
    char out[4096];
    const char *base = "env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT -u DS_NO_REEXEC";
    int rc = ds_test_sh(out, sizeof out, "%s $DSV3 --verbose --threads 1 inspect --help 2>&1", base);
    CHECK_MSG(rc == 0 && strstr(out, "OpenMP workers wait: sleep (OMP_WAIT_POLICY=PASSIVE)") &&
                  strstr(out, "1 thread(s) x 1 local rank(s)"), "%s", out);
    rc = ds_test_sh(out, sizeof out, "%s OMPI_COMM_WORLD_LOCAL_SIZE=64 $DSV3 --verbose --threads 2 inspect --help 2>&1",
                    base);
    CHECK_MSG(rc == 0 && strstr(out, "sleep (OMP_WAIT_POLICY=PASSIVE)") && strstr(out, "2 thread(s) x 64 local rank(s)"),
              "%s", out);
    /* two threads, one rank: spin exactly when the threads fit beside the
     * running tasks it counted (both numbers are in the line) */
    rc = ds_test_sh(out, sizeof out, "%s $DSV3 --verbose --threads 2 inspect --help 2>&1", base);
    const char *w = strstr(out, "OpenMP workers wait: ");
    int others = -1, th = 0, ranks = 0, cpus = 0;
    const char *colon = w ? strstr(w, "): ") : NULL;
    CHECK_MSG(rc == 0 && colon && sscanf(colon, "): %d other task(s) running, %d thread(s) x %d local rank(s), %d CPUs",
                                         &others, &th, &ranks, &cpus) == 4, "%s", out);
    if (colon && th == 2) {
        int spin = strstr(w, "spin, then sleep") == w + strlen("OpenMP workers wait: ");
        CHECK_MSG(spin == (others >= 0 && others + 2 <= cpus), "%s", out);
    }
    /* the caller's setting wins: no choice made, none logged */
    rc = ds_test_sh(out, sizeof out, "env -u GOMP_SPINCOUNT -u DS_NO_REEXEC OMP_WAIT_POLICY=active $DSV3 --verbose "
                    "--threads 2 inspect --help 2>&1");
    CHECK_MSG(rc == 0 && !strstr(out, "OpenMP workers wait"), "%s", out);
}
