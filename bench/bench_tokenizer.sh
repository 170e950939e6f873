#!/usr/bin/env bash
# bench_tokenizer.sh — tokenizer encode MB/s (1 and 2 threads) and BPE training
# time to vocab 32000, dsv3 side by side with tokenizers and tiktoken (see
# tools/bench_tokenizer.py).  Writes bench/results/tokenizer.json.
set -eu
cd "$(dirname "$0")/.."
if ! python3 -c "import tokenizers, tiktoken" 2>/dev/null; then
  echo "bench_tokenizer: python tokenizers/tiktoken not installed; dsv3 only"
  D=../shared/data
  for th in 1 2; do
    ./dsv3 --threads $th tokenizer bench --tokenizer $D/deepseek_v3_tokenizer $D/wikitext2/wiki.test.raw $D/tinyshakespeare/input.txt
  done
  exit 0
fi
python3 tools/bench_tokenizer.py --dsv3 ./dsv3 --out bench/results/tokenizer.json "$@"
