#!/usr/bin/env bash
# Runs every bench/bench_*.sh; each writes bench/results/<name>.json and prints
# a side-by-side table with its peer (when the peer is installed).
set -u
cd "$(dirname "$0")/.."
mkdir -p bench/results
rc=0
for b in bench/bench_*.sh; do
  [ -e "$b" ] || continue
  echo "== $b"
  bash "$b" || { echo "bench $b failed"; rc=1; }
done
exit $rc
