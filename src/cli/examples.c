/*
 * examples.c — the runnable examples every `--help` ends with, for all
 * commands in one table (cli.h ds_cli_examples): "" is `dsv3 --help`, a
 * command group's own help ("tokenizer") is listed beside its subcommands
 * ("tokenizer train").  tests/test_cli.c runs each example with --help
 * appended, so every option in them must exist.  No pipes or redirections:
 * each example is one dsv3 command line.
 */
#include <string.h>

#include "cli/cli.h"

typedef struct {
    const char *cmd;
    const char *ex[4]; /* NULL-terminated */
} examples;

static const examples g_examples[] = {
    {"", {"dsv3 tokenizer train --input corpus.txt --vocab-size 4096 --bos '<|bos|>' --eos '<|eos|>' --out tok/tokenizer.json",
          "dsv3 train --config tiny --data data --out run --minutes 10", NULL}},
    {"plan", {"dsv3 plan --config deepseek-v3 --gpus 2048 --gpus-per-node 8 --ep 64 --pp 16",
              "dsv3 plan --config small --gpus 8 --gpus-per-node 8 --ep 8 --pp 1 --global-batch 64 --seq 1024", NULL}},
    {"train", {"dsv3 train --config tiny --data data --out run --minutes 10 --precision bf16",
               "dsv3 train --data data --resume run --steps 2000", NULL}},
    {"report", {"dsv3 report run --out run/report.html --tensorboard tb",
                "dsv3 report run-bf16 run-fp8 --baseline run-bf16 --out fp8.html --attach fp8.json", NULL}},
    {"ablate", {"dsv3 ablate --data data --preset tiny --minutes 5 --what balance",
                "dsv3 ablate --data data --steps 300 --what precision --out ablate-precision", NULL}},
    {"bench-train", {"dsv3 bench-train --config small --random 8,256 --iters 3 --precision bf16", NULL}},
    {"bench-decode", {"dsv3 bench-decode --config small --batch 32", "dsv3 bench-decode --config small --batch 1 --new 64 --device cuda", NULL}},
    {"comm-check", {"dsv3 comm-check", "dsv3 comm-check --ranks-per-node 2", NULL}},
    {"convert", {"dsv3 convert --to fp8 run/latest run-fp8", "dsv3 convert --to bf16 run-fp8 run-bf16", NULL}},
    {"data", {"dsv3 data prepare --tokenizer tok.json --input corpus.txt --out data --docs line", NULL}},
    {"data prepare", {"dsv3 data prepare --tokenizer tok.json --input corpus.txt --out data --docs line",
                      "dsv3 data prepare --tokenizer tok.json --input docs.jsonl --out data --val-fraction 0.01", NULL}},
    {"ep-check", {"dsv3 ep-check --ep 1", "dsv3 ep-check --ep 1 --dispatch-precision fp8 --tol 0.05", NULL}},
    {"eval", {"dsv3 eval --model run/latest --task lm:heldout.txt",
              "dsv3 eval --model run/latest --task piqa arc_easy --limit 200 --out results.json", NULL}},
    {"forward", {"dsv3 forward --model run/latest --ids ids.txt --out logits.safetensors --hidden",
                 "dsv3 forward --config tiny --random 4,128 --iters 5", NULL}},
    {"fp8", {"dsv3 fp8 study --k 128,4096,16384", "dsv3 fp8 analyze --model run/latest --json fp8.json", NULL}},
    {"fp8 study", {"dsv3 fp8 study --k 128,4096,16384 --json study.json", NULL}},
    {"fp8 bench", {"dsv3 fp8 bench --preset small --json bench.json", NULL}},
    {"fp8 analyze", {"dsv3 fp8 analyze --model run/latest --json fp8.json",
                     "dsv3 fp8 analyze --model run/latest --data data --batches 2", NULL}},
    {"generate", {"dsv3 generate --model run/latest --prompt 'To be, or not' --max-new-tokens 40",
                  "dsv3 generate --model run/latest --prompt 'JULIET:' --temperature 0.8 --top-p 0.95 --stop 'ROMEO:'",
                  "dsv3 generate --model run/latest --prompt 'JULIET:' --temperature 0.8 --min-p 0.05 --speculative ngram", NULL}},
    {"init", {"dsv3 init --config tiny --out tiny-model --seed 1", "dsv3 init --config tiny --tokenizer tok --out model", NULL}},
    {"inspect", {"dsv3 inspect run/latest --memory", NULL}},
    {"serve", {"dsv3 serve --model run/latest --port 8080 --max-batch 16",
               "dsv3 serve --model run/latest --host 0.0.0.0 --api-key secret --ctx 2048",
               "dsv3 serve --model run/latest --speculative ngram", NULL}},
    {"chat", {"dsv3 chat --model run/latest", "dsv3 chat --url http://127.0.0.1:8080 --system 'Answer briefly.'", NULL}},
    {"tokenizer", {"dsv3 tokenizer train --input corpus.txt --vocab-size 4096 --out tok/tokenizer.json",
                   "dsv3 tokenizer encode --tokenizer tok.json --tokens corpus.txt", NULL}},
    {"tokenizer encode", {"dsv3 tokenizer encode --tokenizer tok.json --tokens corpus.txt",
                          "dsv3 tokenizer encode --tokenizer run/latest --add-special corpus.txt", NULL}},
    {"tokenizer decode", {"dsv3 tokenizer decode --tokenizer tok.json ids.txt", NULL}},
    {"tokenizer info", {"dsv3 tokenizer info --tokenizer run/latest", NULL}},
    {"tokenizer train", {"dsv3 tokenizer train --input corpus.txt --vocab-size 4096 --out tok.json",
                         "dsv3 tokenizer train --input a.txt b.txt --vocab-size 32000 --bos '<|bos|>' --eos '<|eos|>' "
                         "--special-tokens '<|pad|>' --out tok/tokenizer.json", NULL}},
    {"tokenizer convert", {"dsv3 tokenizer convert --tokenizer tokenizer.json --out tok.json", NULL}},
    {"tokenizer bench", {"dsv3 tokenizer bench --tokenizer tok.json corpus.txt", NULL}},
};

const char *const *ds_cli_examples(const char *cmd) {
    for (size_t i = 0; i < sizeof g_examples / sizeof g_examples[0]; i++)
        if (!strcmp(g_examples[i].cmd, cmd)) return g_examples[i].ex;
    return NULL;
}
