#!/usr/bin/env python3
"""check_convert_hf.py — a folder written by `dsv3 convert` loads in transformers.

    python3 tools/check_convert_hf.py [DSV3_BINARY]

Converts tests/fixtures/convert/model (FP32) with dsv3 to bf16, to fp8 and
back to bf16, and to fp8, loads each folder with
DeepseekV3ForCausalLM.from_pretrained (the FP8 folder: transformers' fine-grained
FP8 loader, which without a GPU dequantizes to BF16; needs `accelerate`), and
checks (1) every parameter equals torch's .to(bfloat16) of the FP32 model (bf16
route) or of weight_dequant(per_block_cast(W)) (fp8 routes; transformers 5.24
dequantizes FP8 on CPU with the block size taken as dim // scale_dim, wrong for
ragged edge blocks, so those weights are reported, not compared), (2) a forward runs, with logits
close to the FP32 model's (relative RMS error printed, < 0.1 required).  Exit 1 on a mismatch.
"""
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file
from transformers import DeepseekV3ForCausalLM

dsv3 = sys.argv[1] if len(sys.argv) > 1 else "./dsv3"
fix = "tests/fixtures/convert"
ok = True
with tempfile.TemporaryDirectory() as tmp:
    for route, steps, ref_file in (("bf16", [("bf16", f"{fix}/model", "b")], "expected_bf16"),
                                   ("fp8->bf16", [("fp8", f"{fix}/model", "f8"), ("bf16", "f8", "f8b")], "expected_fp32"),
                                   ("fp8", [("fp8", f"{fix}/model", "f8")], "expected_fp32")):
        for to, src, dst in steps:
            src = src if src.startswith(fix) else os.path.join(tmp, src)
            subprocess.run([dsv3, "convert", "--to", to, src, os.path.join(tmp, dst)], check=True, stdout=subprocess.DEVNULL)
        out = os.path.join(tmp, steps[-1][2])
        m = DeepseekV3ForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
        ref = {k: v.to(torch.bfloat16) if not k.endswith("e_score_correction_bias") else v
               for k, v in load_file(f"{fix}/{ref_file}.safetensors").items()}
        sd = m.state_dict()
        # transformers holds the routed experts fused: gate_up_proj (E, 2I, H), down_proj (E, H, I)
        for k in [k for k in sd if k.endswith("mlp.experts.gate_up_proj")]:
            pre = k[: -len("gate_up_proj")]
            n = sd[k].shape[0]
            ref[k] = torch.stack([torch.cat([ref[f"{pre}{e}.gate_proj.weight"], ref[f"{pre}{e}.up_proj.weight"]])
                                  for e in range(n)])
            ref[pre + "down_proj"] = torch.stack([ref[f"{pre}{e}.down_proj.weight"] for e in range(n)])
        bad = [k for k, v in sd.items() if not torch.equal(v.float(), ref[k].float())]
        print(f"{route}: {len(sd)} tensors loaded by transformers, {len(bad)} differ from torch's cast", bad[:3])
        if route == "fp8":
            # transformers 5.24 dequantizes FP8 without a GPU in Fp8Dequantize._dequantize_one, which
            # takes the block size as dim // scale_dim: wrong for ragged edge blocks (136 columns in 2
            # blocks become two blocks of 68).  Only weights with several blocks along a dimension
            # that is not a multiple of 128 are affected; those are expected to differ.
            f8 = load_file(os.path.join(out, "model.safetensors"))
            ragged = {k for k in f8 if k + "_scale_inv" in f8 and any(
                d > 128 and d % 128 for d in f8[k].shape)}
            ragged_fused = {k for k in sd if k.endswith("mlp.experts.gate_up_proj") or k.endswith("mlp.experts.down_proj")}
            unexpected = [k for k in bad if k not in ragged and k not in ragged_fused]
            print(f"fp8: {len(ragged)} weights have ragged multi-block edges (transformers' CPU dequantization "
                  f"mis-sizes their blocks); differences elsewhere: {unexpected}")
            ok &= not unexpected
            continue
        ok &= not bad
        # a forward runs; its logits against the FP32 original (information: BF16/FP8 rounding)
        m0 = DeepseekV3ForCausalLM.from_pretrained(f"{fix}/model", dtype=torch.float32)
        ids = torch.arange(12).view(1, 12) % m.config.vocab_size
        with torch.no_grad():
            a, b = m(ids).logits.float(), m0(ids).logits
        rel = ((a - b).norm() / b.norm()).item()
        print(f"{route}: logits relative RMS error vs the FP32 model = {rel:.3g} (finite: {bool(torch.isfinite(a).all())})")
        ok &= bool(torch.isfinite(a).all()) and rel < 0.1
print("OK" if ok else "FAILED")
sys.exit(0 if ok else 1)
