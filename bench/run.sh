#!/usr/bin/env bash
# Runs every bench/bench_*.sh; each writes bench/results/<name>.json and prints
# a side-by-side table with its peer (when the peer is installed); at the end the
# Markdown table of the README's "Measured" section is printed from bench/results/.
set -u
cd "$(dirname "$0")/.."
mkdir -p bench/results
rc=0
for b in bench/bench_*.sh; do
  [ -e "$b" ] || continue
  echo "== $b"
  bash "$b" || { echo "bench $b failed"; rc=1; }
done
# the README's "Measured" table from these results (tools/bench_table.py --write README.md updates it)
python3 tools/bench_table.py --results bench/results || true
exit $rc
