#!/usr/bin/env bash
# check_engine.sh — the engine rule of docs/engine.md §2.6: code above the
# backend holds shapes, pointers and calls; loops over tensor data, OpenMP and
# kernels live behind struct ds_ops.  Prints `file:line: Rn: text` for each
# violation and exits 1 when there is one (0 when clean, 2 on usage errors).
#
#   tools/check_engine.sh                 the whole tree (scope S, CLI, R6 on src/)
#   tools/check_engine.sh src/model ...   only those folders/files (each rule that
#                                         applies to them; R6 on them too)
#   tools/check_engine.sh --report [...]  the same, then one count per rule; exit 0
#   --root DIR                            the tree to check (default: the project
#                                         root); paths are relative to it
#
# Scope S: every .c/.h in src/model, src/train, src/infer, src/dist, and
# src/eval/lm_model.c, src/eval/lm_logits.c.  CLI: src/cli/*.c but cmd_fp8.c
# (the FP8 lab measures CPU kernels by name).
#   R1  `#pragma omp` in S.
#   R2  in S or CLI, #include of kernels/, backend/cpu/, backend/ref/,
#       backend/cuda/, <omp.h>, <immintrin.h>, <cuda*>, <cublas*>.
#   R3  in S or CLI, ds_ops_cpu, ds_ops_ref, ds_ops_cuda, ds_quantize,
#       ds_dequantize, or a function declared or defined in a header under
#       src/backend/cpu/ or src/backend/ref/ (extracted from those headers at
#       file scope: a name only called inside an inline body is not one).
#   R4  in S, a for/while whose controlling expression holds a tensor-extent
#       token (list below), unless the line carries /* host: ids */ (token ids
#       the caller holds on the host), /* host: meta */ (sizes only) or
#       /* host: io */ (the loader writing a tensor from the mapped file into
#       host-visible weights, until load goes through copy_h2d).
#   R5  in S, memcpy/memset/memmove whose arguments hold such a token, with
#       the same escapes (the table's ops->memset and copies are not these).
#   R6  #include "X/..." in src/Y/ with X != Y and rank(X) >= rank(Y):
#       base 0, num 1, io 2, tokenizer 3, backend 3, dist 4, model 5, infer 6,
#       train 7, eval 7, serve 8, cli 9 (tokenizer above io: it reads
#       tokenizer.json through io/json.h).
# Tagged lines are listed (`file:line: tagged: text`, not violations); more
# than MAX_TAGGED (12) host loops (ids, meta tags; io tags are not loops) is
# a violation (`R4: N tagged host loops > 12`).
# Exempt: src/model/model_convert.c from R1, R4, R5 — checkpoint conversion
# reads safetensors files and writes others on the host; no table is involved,
# nothing it touches is device memory.  Comments and string literals are not
# code: rules R1, R3, R4, R5 look at code only.
set -u
MAX_TAGGED=12
root=""
report=0
paths=()
while [ $# -gt 0 ]; do
    case "$1" in
        --root) [ $# -ge 2 ] || { echo "check_engine.sh: --root needs a folder" >&2; exit 2; }; root="$2"; shift 2 ;;
        --report) report=1; shift ;;
        -h|--help) sed -n '2,41p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "check_engine.sh: unknown option $1 (--root DIR, --report)" >&2; exit 2 ;;
        *) paths+=("${1%/}"); shift ;;
    esac
done
[ -n "$root" ] || root="$(cd "$(dirname "$0")/.." && pwd)"
[ -d "$root/src" ] || { echo "check_engine.sh: $root has no src/ folder" >&2; exit 2; }
cd "$root" || exit 2

in_scope() { # S membership of a path relative to root
    case "$1" in
        src/model/*|src/train/*|src/infer/*|src/dist/*|src/eval/lm_model.c|src/eval/lm_logits.c) return 0 ;;
    esac
    return 1
}
in_cli() { case "$1" in src/cli/cmd_fp8.c) return 1 ;; src/cli/*.c) return 0 ;; esac; return 1; }

# the files to look at
files=()
if [ ${#paths[@]} -eq 0 ]; then
    while IFS= read -r f; do files+=("$f"); done < <(find src -type f \( -name '*.c' -o -name '*.h' \) | LC_ALL=C sort)
else
    for p in "${paths[@]}"; do
        p="${p#./}"
        if [ -d "$p" ]; then
            while IFS= read -r f; do files+=("$f"); done < <(find "$p" -type f \( -name '*.c' -o -name '*.h' \) | LC_ALL=C sort)
        elif [ -f "$p" ]; then files+=("$p")
        else echo "check_engine.sh: $p: no such file or folder under $root" >&2; exit 2
        fi
    done
fi

# R3's names: functions declared or defined in the CPU/ref backend headers —
# an identifier ds_... followed by "(" at file scope (outside every brace and
# parenthesis), so a name merely called inside an inline body (ds_threads in
# par.h) is not one; comments, literals and preprocessor lines (with their
# continuations) are skipped
banned="ds_ops_cpu ds_ops_ref ds_ops_cuda ds_quantize ds_dequantize"
hdrs=$(find src/backend/cpu src/backend/ref -name '*.h' 2>/dev/null | LC_ALL=C sort)
if [ -n "$hdrs" ]; then
    banned="$banned $(awk '
        FNR == 1 { bd = 0; pd = 0; inc = 0; pp = 0 }
        { line = $0
          if (pp) { pp = (line ~ /\\[ \t]*$/); next }
          if (!inc && line ~ /^[ \t]*#/) { pp = (line ~ /\\[ \t]*$/); next }
          r = ""
          for (i = 1; i <= length(line); i++) {
              ch = substr(line, i, 1); nx = substr(line, i + 1, 1)
              if (inc) { if (ch == "*" && nx == "/") { inc = 0; i++ }; continue }
              if (ch == "/" && nx == "*") { inc = 1; i++; r = r " "; continue }
              if (ch == "/" && nx == "/") break
              if (ch == "\"" || ch == "\x27") {
                  q = ch
                  for (i++; i <= length(line); i++) {
                      ch = substr(line, i, 1)
                      if (ch == "\\") { i++; continue }
                      if (ch == q) break
                  }
                  r = r " "; continue
              }
              r = r ch
          }
          while (r != "") {
              if (bd == 0 && pd == 0 && match(r, /^ds_[A-Za-z0-9_]+[ \t]*\(/)) {
                  name = substr(r, 1, RLENGTH); sub(/[ \t]*\($/, "", name); print name
                  r = substr(r, RLENGTH + 1); pd = 1; continue
              }
              if (match(r, /^[A-Za-z0-9_]+/)) { r = substr(r, RLENGTH + 1); continue }
              ch = substr(r, 1, 1); r = substr(r, 2)
              if (ch == "{") bd++; else if (ch == "}") bd--; else if (ch == "(") pd++; else if (ch == ")") pd--
          }
        }' $hdrs | LC_ALL=C sort -u | tr '\n' ' ')"
fi

out=$(for f in "${files[@]}"; do
    s=0; c=0; ex=0
    in_scope "$f" && s=1
    in_cli "$f" && c=1
    [ "$f" = src/model/model_convert.c ] && ex=1
    awk -v S="$s" -v CLI="$c" -v EX="$ex" -v F="$f" -v BANNED="$banned" '
    BEGIN {
        n = split("N Nk H V Vt T Tk Tp C OC I Im Is inter rkv rq dr dq dn dv nh h2 Lmax max_len work numel vocab " \
                  "hidden_size vocab_size intermediate_size moe_intermediate_size kv_lora_rank q_lora_rank " \
                  "qk_nope_head_dim qk_rope_head_dim v_head_dim num_attention_heads", t, " ")
        for (i = 1; i <= n; i++) ext[t[i]] = 1
        n = split(BANNED, t, " ")
        for (i = 1; i <= n; i++) ban[t[i]] = 1
        rank["base"] = 0; rank["num"] = 1; rank["io"] = 2; rank["tokenizer"] = 3; rank["backend"] = 3
        rank["dist"] = 4; rank["model"] = 5; rank["infer"] = 6; rank["train"] = 7; rank["eval"] = 7
        rank["serve"] = 8; rank["cli"] = 9
        split(F, parts, "/"); me = parts[2]
    }
    # the code of a line: comments and string/char literals blanked
    function code_of(line,   r, i, ch, nx, q) {
        r = ""
        for (i = 1; i <= length(line); i++) {
            ch = substr(line, i, 1); nx = substr(line, i + 1, 1)
            if (incom) { if (ch == "*" && nx == "/") { incom = 0; i++ } ; continue }
            if (ch == "/" && nx == "*") { incom = 1; i++; r = r " "; continue }
            if (ch == "/" && nx == "/") break
            if (ch == "\"" || ch == "\x27") {
                q = ch; r = r q
                for (i++; i <= length(line); i++) {
                    ch = substr(line, i, 1)
                    if (ch == "\\") { i++; continue }
                    if (ch == q) break
                }
                r = r q; continue
            }
            r = r ch
        }
        return r
    }
    # the text inside the parentheses that open at or after position p
    function paren_arg(s, p,   i, d, ch, st) {
        st = 0; d = 0
        for (i = p; i <= length(s); i++) {
            ch = substr(s, i, 1)
            if (ch == "(") { if (d == 0) st = i + 1; d++ }
            else if (ch == ")") { d--; if (d == 0) return substr(s, st, i - st) }
        }
        return st ? substr(s, st) : ""
    }
    function has_extent(s,   n, w, i) {
        n = split(s, w, /[^A-Za-z0-9_]+/)
        for (i = 1; i <= n; i++) if (w[i] in ext) return 1
        return 0
    }
    function say(rule) { printf "%s:%d: %s: %s\n", F, FNR, rule, raw }
    {
        raw = $0; sub(/^[ \t]+/, "", raw)
        code = code_of($0)
        tagged = ($0 ~ /\/\* host: (ids|meta|io) \*\//)
        if (match($0, /^[ \t]*#[ \t]*include[ \t]*[<"][^>"]*[>"]/)) {
            inc = $0; sub(/^[ \t]*#[ \t]*include[ \t]*/, "", inc)
            q = substr(inc, 1, 1); inc = substr(inc, 2); sub(/[>"].*$/, "", inc)
            if ((S || CLI) && ((q == "\"" && inc ~ /^(kernels|backend\/cpu|backend\/ref|backend\/cuda)\//) ||
                               (q == "<" && inc ~ /^(omp\.h|immintrin\.h|cuda|cublas)/))) say("R2")
            if (q == "\"" && index(inc, "/") > 0) {
                split(inc, ip, "/"); x = ip[1]
                if (x != me && (x in rank) && (me in rank) && rank[x] >= rank[me]) say("R6")
            }
            next
        }
        if (S && !EX && code ~ /^[ \t]*#[ \t]*pragma[ \t]+omp/) say("R1")
        if (S || CLI) {
            n = split(code, w, /[^A-Za-z0-9_]+/)
            for (i = 1; i <= n; i++) if (w[i] in ban) { say("R3"); break }
        }
        if (S && !EX) {
            s = code; hit4 = 0
            while (match(s, /(^|[^A-Za-z0-9_])(for|while)[ \t]*\(/)) {
                if (has_extent(paren_arg(s, RSTART))) hit4 = 1
                s = substr(s, RSTART + RLENGTH)
            }
            s = code; hit5 = 0
            while (match(s, /(^|[^A-Za-z0-9_>.])(memcpy|memset|memmove)[ \t]*\(/)) {
                if (has_extent(paren_arg(s, RSTART))) hit5 = 1
                s = substr(s, RSTART + RLENGTH)
            }
            if ((hit4 || hit5) && tagged) printf "%s:%d: tagged: %s\n", F, FNR, raw
            else { if (hit4) say("R4"); if (hit5) say("R5") }
        }
    }' "$f"
done)

viol=$(printf '%s\n' "$out" | grep -E '^[^:]+:[0-9]+: R[1-6]:' || true)
tagged=$(printf '%s\n' "$out" | grep -E '^[^:]+:[0-9]+: tagged:' || true)
# the cap counts host loops (ids, meta); io tags mark the loader's copies
ntag=0; [ -n "$tagged" ] && ntag=$(printf '%s\n' "$tagged" | grep -vc '/\* host: io \*/')
[ -n "$tagged" ] && printf '%s\n' "$tagged"
[ -n "$viol" ] && printf '%s\n' "$viol"
over=0
if [ "$ntag" -gt "$MAX_TAGGED" ]; then echo "R4: $ntag tagged host loops > $MAX_TAGGED"; over=1; fi
if [ $report = 1 ]; then
    for r in R1 R2 R3 R4 R5 R6; do
        printf '%s %d\n' "$r" "$(printf '%s\n' "$viol" | grep -c ": $r:")"
    done
    echo "tagged $ntag"
    exit 0
fi
[ -z "$viol" ] && [ $over = 0 ] && exit 0
exit 1
