#!/usr/bin/env bash
# bench_convert.sh — checkpoint conversion throughput, file to file, on a
# ~100M-parameter DeepSeek-V3-architecture model (FP32, random weights, made
# once under build/bench-data): `dsv3 convert --to fp8` (128x128 block cast of
# the linear weights, the rest to BF16) and `--to bf16` of that FP8 folder
# (DeepSeek's weight_dequant), against a Python/torch script doing the same
# (safetensors load_file, DeepGEMM-style per_block_cast / weight_dequant,
# save_file, then fsync like dsv3's atomic writer).  Same thread count, warm
# page cache, best of CONV_BENCH_REPS (default 1: the peer takes ~20 s a run here).  MB/s = input bytes / s.
# Writes bench/results/convert.json.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
THREADS=${OMP_NUM_THREADS:-2}
REPS=${CONV_BENCH_REPS:-1}
DIR=$BUILD/bench-data/convert
BIN=./dsv3
[ -x "$BIN" ] || { echo "build dsv3 first (make)"; exit 1; }
if ! python3 -c 'import torch, safetensors, transformers' 2>/dev/null; then
  echo "torch/safetensors/transformers not installed: no model generator and no peer; skipped"
  exit 0
fi
mkdir -p "$DIR" bench/results
if [ ! -f "$DIR/fp32/model.safetensors" ]; then
  python3 - "$DIR/fp32" <<'PY'
import sys, torch
from safetensors.torch import save_file
from transformers import DeepseekV3Config
out = sys.argv[1]
cfg = DeepseekV3Config(vocab_size=32000, hidden_size=768, intermediate_size=2048, moe_intermediate_size=512,
    num_hidden_layers=5, first_k_dense_replace=1, num_attention_heads=8, num_key_value_heads=8,
    n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, n_group=1, topk_group=1,
    q_lora_rank=384, kv_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64,
    num_nextn_predict_layers=0, tie_word_embeddings=False)
cfg.save_pretrained(out)
H, V, I, Im, nh = 768, 32000, 2048, 512, 8
shapes = {"model.embed_tokens.weight": (V, H), "lm_head.weight": (V, H), "model.norm.weight": (H,)}
for l in range(5):
    p = f"model.layers.{l}."
    shapes.update({p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,),
        p + "self_attn.q_a_proj.weight": (384, H), p + "self_attn.q_a_layernorm.weight": (384,),
        p + "self_attn.q_b_proj.weight": (nh * 96, 384), p + "self_attn.kv_a_proj_with_mqa.weight": (256 + 32, H),
        p + "self_attn.kv_a_layernorm.weight": (256,), p + "self_attn.kv_b_proj.weight": (nh * 128, 256),
        p + "self_attn.o_proj.weight": (H, nh * 64)})
    mlps = [p + "mlp."] if l == 0 else [p + f"mlp.experts.{e}." for e in range(8)] + [p + "mlp.shared_experts."]
    for m in mlps:
        n = I if l == 0 else Im
        shapes.update({m + "gate_proj.weight": (n, H), m + "up_proj.weight": (n, H), m + "down_proj.weight": (H, n)})
    if l:
        shapes.update({p + "mlp.gate.weight": (8, H), p + "mlp.gate.e_score_correction_bias": (8,)})
g = torch.Generator().manual_seed(0)
t = {k: torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()}
print(f"bench model: {sum(v.numel() for v in t.values()) / 1e6:.1f}M parameters")
save_file(t, out + "/model.safetensors", metadata={"format": "pt"})
PY
fi
best() { # best wall-clock seconds of REPS runs of "$@"
  local b=1e30 t0 t1 s
  for _ in $(seq "$REPS"); do
    t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N)
    b=$(python3 -c "print(min($b, $t1 - $t0))")
  done
  echo "$b"
}
PEER=$(mktemp)
cat > "$PEER" <<'PY'
import os, sys, torch
from safetensors.torch import load_file, save_file
mode, src, dst, th = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
torch.set_num_threads(th)
LIN = ("q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
def lin(k):
    p = k.split(".")
    return k.startswith("model.layers.") and k.endswith(".weight") and p[-2] in LIN and p[3] in ("self_attn", "mlp")
def per_block_cast(x):
    m, n = x.shape
    xp = torch.zeros(-(-m // 128) * 128, -(-n // 128) * 128)
    xp[:m, :n] = x
    v = xp.view(xp.shape[0] // 128, 128, xp.shape[1] // 128, 128)
    s = v.abs().amax(dim=(1, 3), keepdim=True).clamp(min=1e-4) / 448.0
    return (v / s).to(torch.float8_e4m3fn).view_as(xp)[:m, :n].contiguous(), s.view(v.shape[0], v.shape[2])
def weight_dequant(q, s):
    m, n = q.shape
    return (q.float() * s.repeat_interleave(128, 0)[:m].repeat_interleave(128, 1)[:, :n]).to(torch.bfloat16)
d, out = load_file(src), {}
for k, v in d.items():
    if mode == "fp8":
        if lin(k): out[k], out[k + "_scale_inv"] = per_block_cast(v)
        else: out[k] = v if k.endswith("e_score_correction_bias") else v.to(torch.bfloat16)
    elif not k.endswith("_scale_inv"):
        out[k] = weight_dequant(v, d[k + "_scale_inv"]) if v.dtype == torch.float8_e4m3fn else \
                 (v if k.endswith("e_score_correction_bias") else v.to(torch.bfloat16))
os.makedirs(dst, exist_ok=True)
f = os.path.join(dst, "model.safetensors")
save_file(out, f, metadata={"format": "pt"})
fd = os.open(f, os.O_RDONLY); os.fsync(fd); os.close(fd)
PY
B32=$(stat -c %s "$DIR/fp32/model.safetensors")
O8=$(OMP_NUM_THREADS=$THREADS best $BIN convert --to fp8 "$DIR/fp32" "$DIR/fp8")
P8=$(OMP_NUM_THREADS=$THREADS best python3 "$PEER" fp8 "$DIR/fp32/model.safetensors" "$DIR/peer_fp8" "$THREADS")
B8=$(stat -c %s "$DIR/fp8/model.safetensors")
O16=$(OMP_NUM_THREADS=$THREADS best $BIN convert --to bf16 "$DIR/fp8" "$DIR/bf16")
P16=$(OMP_NUM_THREADS=$THREADS best python3 "$PEER" bf16 "$DIR/fp8/model.safetensors" "$DIR/peer_bf16" "$THREADS")
SAME=$(cmp -s "$DIR/fp8/model.safetensors" "$DIR/peer_fp8/model.safetensors" && echo true || echo false)
rm -f "$PEER"
python3 - "$B32" "$B8" "$O8" "$P8" "$O16" "$P16" "$THREADS" "$SAME" <<'PY'
import sys, json
b32, b8 = int(sys.argv[1]), int(sys.argv[2])
o8, p8, o16, p16 = map(float, sys.argv[3:7])
th, same = int(sys.argv[7]), sys.argv[8] == "true"
row = lambda b, o, p: {"input_bytes": b, "dsv3": {"seconds": o, "mb_per_s": b / o / 1e6},
                       "python_torch": {"seconds": p, "mb_per_s": b / p / 1e6}, "speedup_vs_peer": p / o}
res = {"bench": "convert", "threads": th, "params_millions": b32 / 4e6,
       "fp32_to_fp8": dict(row(b32, o8, p8), output_identical_to_peer=same), "fp8_to_bf16": row(b8, o16, p16)}
json.dump(res, open("bench/results/convert.json", "w"), indent=2)
print(f"{'convert (~%.0fM params)' % (b32 / 4e6):28s} {'dsv3 MB/s':>10s} {'torch MB/s':>11s} {'ratio':>7s}")
for name, b, o, p in (("fp32 -> fp8 (128x128)", b32, o8, p8), ("fp8 -> bf16 (dequant)", b8, o16, p16)):
    print(f"{name:28s} {b / o / 1e6:10.1f} {b / p / 1e6:11.1f} {p / o:6.2f}x")
print(f"(input MB/s, file to file, best of runs, {th} threads; fp8 file identical to torch's: {same})")
PY
