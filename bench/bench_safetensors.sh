#!/usr/bin/env bash
# bench_safetensors.sh — load a BF16 safetensors file and convert every tensor
# to FP32 into preallocated FP32 parameters: dsv3 (ds_st_set_open (mmap) +
# ds_st_to_f32) vs the Python safetensors library (safetensors.torch.load_file
# + Tensor.copy_ into preallocated float32 tensors), same thread count, warm
# page cache, best of 3.  Writes bench/results/safetensors_load.json.
# Size: ST_BENCH_MELEMS million elements (default 64 => 128 MB file).
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
THREADS=${OMP_NUM_THREADS:-2}
M=${ST_BENCH_MELEMS:-64}
DIR=$BUILD/bench-data
mkdir -p "$DIR" bench/results
FILE=$DIR/bench_bf16_${M}m.safetensors
PKG="libcjson libpcre2-8 openblas"
cc -std=gnu11 -O2 -march=native -fopenmp -Isrc $(pkg-config --cflags $PKG 2>/dev/null) bench/st_load.c \
   "$BUILD/libdsv3.a" -o "$BUILD/st_load" $(make -s --no-print-directory print-ldlibs)
if ! python3 -c 'import torch, safetensors' 2>/dev/null; then
  echo "torch/safetensors not installed: no file generator and no peer; skipped"
  exit 0
fi
if [ ! -f "$FILE" ]; then
  python3 - "$FILE" "$M" <<'PY'
import sys, torch
from safetensors.torch import save_file
m = int(sys.argv[2]) * 2**20
g = torch.Generator().manual_seed(0)
# a few model-like matrices plus small vectors
sizes = [m // 2, m // 4, m // 8, m // 8 - 4096, 4096]
t = {f"model.layers.{i}.w": torch.randn(s, generator=g).to(torch.bfloat16) for i, s in enumerate(sizes)}
save_file(t, sys.argv[1], metadata={"format": "pt"})
PY
fi
OURS=$(OMP_NUM_THREADS=$THREADS "$BUILD/st_load" "$FILE" 3)
PEER=$(python3 - "$FILE" "$THREADS" <<'PY'
import sys, time, json, torch
from safetensors.torch import load_file
torch.set_num_threads(int(sys.argv[2]))
best = 1e30
params = {k: torch.zeros(v.shape, dtype=torch.float32) for k, v in load_file(sys.argv[1]).items()}
n = sum(v.numel() for v in params.values())
for _ in range(3):
    t0 = time.perf_counter()
    d = load_file(sys.argv[1])
    for k, v in d.items():
        params[k].copy_(v)
    del d
    best = min(best, time.perf_counter() - t0)
print(json.dumps({"seconds": best, "elements": n}))
PY
)
python3 - "$OURS" "$PEER" "$THREADS" <<'PY'
import sys, json
o, p, th = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
res = {"bench": "safetensors_load_bf16_to_f32", "threads": th, "elements": o["elements"],
       "file_bytes": o["file_bytes"],
       "dsv3": {"seconds": o["seconds"], "open_seconds": o["open_seconds"],
                "gb_per_s_out": o["elements"] * 4 / o["seconds"] / 1e9},
       "python_safetensors_torch": {"seconds": p["seconds"], "gb_per_s_out": p["elements"] * 4 / p["seconds"] / 1e9},
       "speedup_vs_peer": p["seconds"] / o["seconds"]}
json.dump(res, open("bench/results/safetensors_load.json", "w"), indent=2)
print(f"{'load BF16 -> FP32':28s} {'dsv3':>12s} {'safetensors+torch':>18s} {'ratio':>7s}")
print(f"{'seconds (best of 3)':28s} {o['seconds']:12.4f} {p['seconds']:18.4f} {p['seconds']/o['seconds']:7.2f}x")
print(f"{'GB/s of FP32 out':28s} {res['dsv3']['gb_per_s_out']:12.2f} {res['python_safetensors_torch']['gb_per_s_out']:18.2f}")
print(f"({o['elements']/1e6:.1f}M elements, {th} threads, header+index parse {o['open_seconds']*1e3:.3f} ms)")
PY
