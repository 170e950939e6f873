# lib_serve.sh — sourced by the serving benchmarks (bench_serve.sh, bench_prefix.sh); not a benchmark itself.
# Needs BIN (./dsv3), TH (threads), tmp (a scratch folder) and pids (the servers started, for the caller's trap).
#   serve_model              the `small` preset (random init, seed 1) in $tmp/small and a 300-token byte-level
#                            BPE tokenizer in $tmp/tok (prompts are token ids below 256)
#   serve_start NAME OPTS... `dsv3 serve` on that model, any free port, with OPTS; waits until it listens and
#                            writes its port to $tmp/NAME.port (the log is $tmp/NAME.log)
serve_model() {
  "$BIN" init --config small --out "$tmp/small" --seed 1 >/dev/null 2>&1
  printf 'the quick brown fox jumps over the lazy dog\n%.0s' $(seq 20) > "$tmp/c.txt"
  "$BIN" --quiet tokenizer train --input "$tmp/c.txt" --vocab-size 300 --no-special-tokens --out "$tmp/tok/tokenizer.json" >/dev/null 2>&1
}
serve_start() {
  local name=$1; shift
  "$BIN" --threads "$TH" serve --model "$tmp/small" --tokenizer "$tmp/tok" --port 0 "$@" 2> "$tmp/$name.log" & pids="$pids $!"
  for _ in $(seq 150); do grep -qs listening "$tmp/$name.log" && break; sleep 0.1; done
  grep -o '127.0.0.1:[0-9]*' "$tmp/$name.log" | cut -d: -f2 > "$tmp/$name.port"
  [ -s "$tmp/$name.port" ] || { cat "$tmp/$name.log"; exit 1; }
}
