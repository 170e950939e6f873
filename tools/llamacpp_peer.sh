#!/usr/bin/env bash
# llamacpp_peer.sh — llama.cpp as a speed peer for `make bench` (never needed by `make test`).
#
#   tools/llamacpp_peer.sh find                 print the folder holding llama-bench and llama-server
#   tools/llamacpp_peer.sh build [SECONDS]      find it, else build it from the llama-cpp-python sdist
#                                               (PyPI; it vendors llama.cpp's source) within SECONDS
#   tools/llamacpp_peer.sh convert DIR OUT.gguf a dsv3 model folder to GGUF (F32) with llama.cpp's converter
#   tools/llamacpp_peer.sh bench GGUF THREADS PROMPT NEW
#                                               one JSON line: prefill of PROMPT tokens and decode of NEW
#                                               tokens after PROMPT (llama-bench pp and tg at depth PROMPT;
#                                               llama.cpp's defaults, BENCH_LLAMACPP_ARGS adds options)
#   tools/llamacpp_peer.sh serve GGUF PORT [THREADS] [PARALLEL] [CTX]
#                                               start llama-server on 127.0.0.1:PORT in the background,
#                                               wait for /health, print its PID (the caller kills it);
#                                               LLAMACPP_SERVER_ARGS adds options (e.g. "-ctk f32 -ctv f32")
#
# Exit status 3 means "skip": the peer is not available, with the reason on one stderr line
# ("llama.cpp peer: skipped: ...").  Where it looks and builds:
#   LLAMACPP_BIN       a folder with llama-bench and llama-server (e.g. Debian's llama.cpp binaries)
#   LLAMACPP_SRC       llama.cpp's source tree (for convert_hf_to_gguf.py)
#   DSV3_LLAMACPP_DIR  build folder (default ../peer-llamacpp beside the project, outside its git tree):
#                      src -> the unpacked vendor/llama.cpp, build/bin/llama-{bench,server,completion}
#   LLAMACPP_PY_VERSION  the llama-cpp-python sdist version (default 0.3.36)
# PATH is searched too.  The build is CPU only, Release, -march=native (GGML_NATIVE), static; a build cut
# by the time limit resumes where it stopped on the next call.
set -u
# llama.cpp's CPU backend runs OpenMP threads: spinning workers are many times slower on a shared
# machine, so passive waiting unless the caller chose a policy or a spin count (the benches give
# both sides dsv3's idle-machine choice, GOMP_SPINCOUNT=10000)
[ -n "${OMP_WAIT_POLICY:-}${GOMP_SPINCOUNT:-}" ] || export OMP_WAIT_POLICY=passive
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${DSV3_LLAMACPP_DIR:-$ROOT/../peer-llamacpp}
PYVER=${LLAMACPP_PY_VERSION:-0.3.36}

skip() { echo "llama.cpp peer: skipped: $*" >&2; exit 3; }
die() { echo "llamacpp_peer: $*" >&2; exit 2; }

find_bin() {
  local d
  for d in "${LLAMACPP_BIN:-}" "$DIR/build/bin" "$(dirname "$(command -v llama-bench 2>/dev/null || echo /nonexistent/x)")"; do
    [ -n "$d" ] && [ -x "$d/llama-bench" ] && [ -x "$d/llama-server" ] && { (cd "$d" && pwd); return 0; }
  done
  return 1
}

find_src() {
  local d
  for d in "${LLAMACPP_SRC:-}" "$DIR/src" /usr/share/llama.cpp; do
    [ -n "$d" ] && [ -f "$d/convert_hf_to_gguf.py" ] && { (cd "$d" && pwd); return 0; }
  done
  return 1
}

cmd_build() {
  local limit=${1:-900} t0 left
  find_bin && return 0
  command -v cmake >/dev/null || skip "cmake not installed"
  command -v c++ >/dev/null || skip "no C++ compiler"
  mkdir -p "$DIR" || skip "cannot create $DIR"
  exec 9>"$DIR/.lock"
  flock -w "$limit" 9 || skip "another build holds $DIR/.lock"
  find_bin && return 0
  t0=$(date +%s)
  if ! find_src >/dev/null; then
    local tgz="$DIR/llama_cpp_python-$PYVER.tar.gz"
    if [ ! -f "$tgz" ]; then
      timeout "$limit" python3 -m pip download --quiet --no-binary :all: --no-deps -d "$DIR" \
        "llama-cpp-python==$PYVER" >"$DIR/download.log" 2>&1
      case $? in
        0) ;;
        124) skip "pip download llama-cpp-python==$PYVER not finished within ${limit}s" ;;
        *) skip "pip download llama-cpp-python==$PYVER failed (no PyPI?), see $DIR/download.log" ;;
      esac
    fi
    tar -xzf "$tgz" -C "$DIR" || skip "cannot unpack $tgz"
    [ -f "$DIR/llama_cpp_python-$PYVER/vendor/llama.cpp/CMakeLists.txt" ] || skip "$tgz has no vendor/llama.cpp"
    ln -sfn "llama_cpp_python-$PYVER/vendor/llama.cpp" "$DIR/src"
  fi
  left=$((limit - ($(date +%s) - t0)))
  [ "$left" -gt 10 ] || skip "no time left to build (limit ${limit}s)"
  echo "llama.cpp peer: building in $DIR/build (log $DIR/build.log, at most ${left}s)" >&2
  if [ ! -f "$DIR/build/CMakeCache.txt" ]; then
    cmake -S "$DIR/src" -B "$DIR/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF \
      -DGGML_CUDA=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
      -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_APP=OFF >"$DIR/build.log" 2>&1 ||
      { rm -f "$DIR/build/CMakeCache.txt"; skip "cmake configure failed, see $DIR/build.log"; }
  fi
  left=$((limit - ($(date +%s) - t0)))
  timeout "$left" cmake --build "$DIR/build" -j"$(nproc)" \
    --target llama-bench llama-server llama-completion >>"$DIR/build.log" 2>&1
  case $? in
    0) ;;
    124) skip "build not finished within ${limit}s (it resumes on the next run), see $DIR/build.log" ;;
    *) skip "build failed, see $DIR/build.log" ;;
  esac
  find_bin || skip "build finished but llama-bench/llama-server are missing in $DIR/build/bin"
}

cmd_convert() {
  [ $# -eq 2 ] || die "usage: convert MODEL_DIR OUT.gguf"
  local model=$1 out=$2 src tmp f rc v sp
  [ -f "$model/config.json" ] || die "$model: no config.json (not a model folder)"
  src=$(find_src) || skip "no llama.cpp source with convert_hf_to_gguf.py (run: $0 build)"
  tmp=""
  if [ ! -f "$model/tokenizer.json" ]; then
    # the converter needs a tokenizer: a small byte-level BPE with DeepSeek-V3's pre-tokenizer (the ids
    # the benchmark feeds do not depend on it), beside links to the folder's files
    tmp=$(mktemp -d)
    for f in "$model"/*; do ln -s "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")" "$tmp/"; done
    [ -x "$ROOT/dsv3" ] || die "$ROOT/dsv3 not built (make)"
    # no larger than the model's vocabulary (the converter checks it); a byte-level BPE needs 256 ids
    v=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["vocab_size"])' "$model/config.json") ||
      die "$model/config.json: no vocab_size"
    sp=()
    [ "$v" -ge 257 ] || skip "$model: vocab_size $v is below a byte-level tokenizer's 257; add a tokenizer.json"
    if [ "$v" -lt 258 ]; then sp=(--no-special-tokens); elif [ "$v" -gt 512 ]; then v=512; fi
    "$ROOT/dsv3" tokenizer train --input "$ROOT/README.md" "$ROOT"/docs/*.md --vocab-size "$v" "${sp[@]}" \
      --pretokenizer deepseek-v3 --out "$tmp/tokenizer.json" >/dev/null 2>&1 || die "tokenizer train failed"
    model=$tmp
  fi
  python3 "$ROOT/tools/llamacpp_convert.py" "$src" "$model" "$out" >"$out.log" 2>&1
  rc=$?
  [ -n "$tmp" ] && rm -rf "$tmp"
  [ $rc -eq 0 ] && [ -s "$out" ] || skip "convert_hf_to_gguf.py failed: $(grep -v '^INFO' "$out.log" | tail -1)"
  rm -f "$out.log"
}

cmd_bench() {
  [ $# -eq 4 ] || die "usage: bench GGUF THREADS PROMPT NEW"
  local gguf=$1 th=$2 p=$3 n=$4 bin reps=${BENCH_LLAMACPP_REPS:-3} pp tg
  bin=$(find_bin) || skip "llama-bench not found (run: $0 build)"
  pp=$("$bin/llama-bench" -m "$gguf" -t "$th" -p "$p" -n 0 -r "$reps" ${BENCH_LLAMACPP_ARGS:-} -o json 2>/dev/null) ||
    skip "llama-bench failed on $gguf (prefill)"
  tg=$("$bin/llama-bench" -m "$gguf" -t "$th" -p 0 -n "$n" -d "$p" -r "$reps" ${BENCH_LLAMACPP_ARGS:-} -o json 2>/dev/null) ||
    skip "llama-bench failed on $gguf (decode)"
  PP="$pp" TG="$tg" TH="$th" P="$p" N="$n" python3 -c '
import json, os
pp, tg = json.loads(os.environ["PP"])[0], json.loads(os.environ["TG"])[0]
print(json.dumps({"impl": "llama.cpp", "threads": int(os.environ["TH"]), "prompt_tokens": int(os.environ["P"]),
                  "new_tokens": int(os.environ["N"]), "prefill_tokens_per_s": round(pp["avg_ts"], 2),
                  "tokens_per_s": round(tg["avg_ts"], 2), "type": pp.get("model_type", ""),
                  "build": pp.get("build_commit", ""), "reps": len(tg.get("samples_ts", [])),
                  "flash_attn": pp.get("flash_attn"), "type_k": pp.get("type_k"), "type_v": pp.get("type_v")}))' ||
    skip "cannot read llama-bench's JSON"
}

cmd_serve() {
  [ $# -ge 2 ] || die "usage: serve GGUF PORT [THREADS] [PARALLEL] [CTX]"
  local gguf=$1 port=$2 th=${3:-$(nproc)} np=${4:-1} ctx=${5:-} bin pid i
  [ -n "$ctx" ] || ctx=$((np * 512))
  bin=$(find_bin) || skip "llama-server not found (run: $0 build)"
  "$bin/llama-server" -m "$gguf" --host 127.0.0.1 --port "$port" -t "$th" -np "$np" -c "$ctx" \
    --no-webui --metrics ${LLAMACPP_SERVER_ARGS:-} >"${LLAMACPP_SERVER_LOG:-/dev/null}" 2>&1 &
  pid=$!
  for i in $(seq 1 600); do
    if python3 -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:$port/health', timeout=1).status != 200)" 2>/dev/null; then
      echo "$pid"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || skip "llama-server exited at start-up (set LLAMACPP_SERVER_LOG=FILE to see why)"
    sleep 0.2
  done
  kill "$pid" 2>/dev/null
  skip "llama-server not healthy on port $port after 120 s"
}

case "${1:-}" in
  find) find_bin || skip "no llama-bench/llama-server (LLAMACPP_BIN, $DIR/build/bin, PATH)" ;;
  build) shift; cmd_build "$@" ;;
  convert) shift; cmd_convert "$@" ;;
  bench) shift; cmd_bench "$@" ;;
  serve) shift; cmd_serve "$@" ;;
  *) die "usage: $0 find|build [SECONDS]|convert DIR OUT.gguf|bench GGUF THREADS PROMPT NEW|serve GGUF PORT [THREADS] [PARALLEL] [CTX]" ;;
esac
