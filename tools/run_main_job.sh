#!/usr/bin/env bash
# The main job behind `make run`: from raw text to a trained DeepSeek-V3-style
# MoE.  Corpus: the King James Bible (Debian's bible-kjv, one verse a line) or
# DATA=path.  Stages: tokenizer (byte-level BPE, vocab 4096) -> token shards
# (one document per line, 1% validation) -> `dsv3 train` of the `tiny` preset
# for MINUTES (default 6) with auxiliary-loss-free balancing (γ 0.005: DeepSeek-V3's
# 0.001 is for ~10^5 steps; a run of a few hundred steps needs a faster bias) and MTP ->
# validation bits per byte and routing balance -> samples.
#   RUN (runs/main)  DATA (built-in corpus)  MINUTES (6)  THREADS (nproc)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/main}
MINUTES=${MINUTES:-6}
THREADS=${THREADS:-$(nproc)}
mkdir -p "$RUN"
corpus="$RUN/corpus.txt"
if [ -n "${DATA:-}" ]; then
  cp "$DATA" "$corpus"
elif [ ! -s "$corpus" ]; then
  echo "== corpus: King James Bible (bible-kjv)"
  # one verse a line; drop the "Ge1:1 " references
  bible -f gen1:1-rev22:21 | sed -E "s/^[1-3]?[A-Za-z]+[0-9]+:[0-9]+ //" > "$corpus"
fi
echo "== corpus: $(wc -c < "$corpus") bytes, $(wc -l < "$corpus") lines in $corpus"
./dsv3 --version

echo "== tokenizer: byte-level BPE, vocab 4096"
./dsv3 --threads "$THREADS" tokenizer train --input "$corpus" --vocab-size 4096 \
  --bos '<|begin_of_text|>' --eos '<|end_of_text|>' --out "$RUN/tokenizer.json"

echo "== data: one document per line, 1% validation"
rm -rf "$RUN/data"
./dsv3 --threads "$THREADS" data prepare --tokenizer "$RUN/tokenizer.json" --input "$corpus" --out "$RUN/data" \
  --docs line --val-fraction 0.01

echo "== train: preset tiny, $MINUTES minutes on $THREADS threads, aux-free balancing, MTP depth 1"
rm -rf "$RUN/train"
# passive OpenMP waiting: spinning threads hurt when the cores are shared
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} ./dsv3 --threads "$THREADS" train --config tiny --data "$RUN/data" \
  --out "$RUN/train" --minutes "$MINUTES" --batch 8 --seq 128 --lr 4e-3 --min-lr 4e-4 --warmup 30 \
  --mtp-lambda 0.3 --bias-gamma 0.005 --eval-every 100 --eval-batches 8 --log-every 10 \
  --sample "In the beginning|And Jesus said unto them|The LORD is my shepherd" --max-new-tokens 60 --temperature 0.7 \
  | tee "$RUN/train.out"

echo "== result"
python3 - "$RUN/train/train_log.jsonl" <<'PY' || true
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steps = [r for r in rows if "loss" in r]
evals = [r for r in rows if "val_loss" in r]
if steps:
    print(f"steps {steps[-1]['step']}, tokens {steps[-1]['tokens']:.0f}, first loss {steps[0]['loss']:.3f}, "
          f"last loss {steps[-1]['loss']:.3f}")
if evals:
    e = evals[-1]
    print(f"validation: loss {e['val_loss']:.4f}, bits per byte {e['val_bpb']:.4f}, "
          f"MaxVio over the validation set {e['val_maxvio']:.3f}")
if steps and steps[-1].get("load"):
    for i, l in enumerate(steps[-1]["load"]):
        tot = sum(l)
        print(f"routing, MoE layer {i + 1}, last step: load {l}, busiest expert {max(l) / tot:.1%} of the slots, "
              f"MaxVio {max(l) / (tot / len(l)) - 1:.3f}")
PY
echo "model folder: $RUN/train/latest (config.json, model.safetensors, tokenizer.json; loads in transformers)"
