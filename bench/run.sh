#!/usr/bin/env bash
# Runs every bench/bench_*.sh; each writes bench/results/<name>.json and prints
# a side-by-side table with its peer (when the peer is installed); at the end the
# Markdown table of the README's "Measured" section is printed from bench/results/.
set -u
cd "$(dirname "$0")/.."
# OpenBLAS's kernel family by this CPU's vectors, as dsv3 itself picks it
# (src/cli/main.c): an inherited OPENBLAS_CORETYPE (some images set Haswell)
# would pin the AVX2 kernels on an AVX-512 CPU, and the benches that link
# OpenBLAS directly would otherwise get its own detection, which does not know
# every recent CPU.  BENCH_KEEP_BLAS_CORE=1 keeps the inherited value.
if [ "${BENCH_KEEP_BLAS_CORE:-0}" != 1 ]; then
  has() { grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | grep -qw "$1"; }
  if has avx512f && has avx512bw && has avx512vl; then export OPENBLAS_CORETYPE=SkylakeX
  elif has avx2 && has fma; then export OPENBLAS_CORETYPE=Haswell
  else unset OPENBLAS_CORETYPE; fi
  export BENCH_KEEP_BLAS_CORE=1 # bench_train.sh: keep this choice
fi
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
