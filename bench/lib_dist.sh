# lib_dist.sh — sourced by the benchmarks that train over several processes
# on this machine (bench_dist.sh, bench_pp.sh); not a benchmark itself.
#   dist_env         OpenMPI settings for a container (root, no CMA)
#   dist_data DIR    a word-salad corpus, a 300-token BPE tokenizer and the
#                    prepared data in DIR/c.txt, DIR/tok.json, DIR/data
# The Python side (tokens/s and counters from a run's output) is
# bench/lib_dist.py.

dist_env() {
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
}

dist_data() {
  python3 - "$1/c.txt" <<'PY'
import random, sys
random.seed(5)
w = "the king and queen of a land where rivers run to sea with light upon hills shall come unto them".split()
open(sys.argv[1], "w").write("".join(" ".join(random.choice(w) for _ in range(random.randint(4, 11))) + ".\n" for _ in range(20000)))
PY
  "$BIN" tokenizer train --input "$1/c.txt" --vocab-size 300 --special-tokens '<|bos|>' '<|eos|>' --out "$1/tok.json" >/dev/null 2>&1
  "$BIN" data prepare --tokenizer "$1/tok.json" --input "$1/c.txt" --out "$1/data" --docs line >/dev/null 2>&1
}
