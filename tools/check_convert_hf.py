#!/usr/bin/env python3
"""check_convert_hf.py — a folder written by `dsv3 convert` loads in transformers.

    python3 tools/check_convert_hf.py [DSV3_BINARY]

Converts tests/fixtures/convert/model (FP32) with dsv3 to bf16, and to fp8 and
back to bf16, loads each folder with DeepseekV3ForCausalLM.from_pretrained,
and checks (1) every parameter equals torch's .to(bfloat16) of the FP32 model
(bf16 route) or of weight_dequant(per_block_cast(W)) (fp8 route; transformers
dequantizes fine-grained FP8 only on GPU, so the FP8 folder itself is compared
with the torch oracle by tests/test_convert.c), (2) a forward runs, with logits
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
                                   ("fp8->bf16", [("fp8", f"{fix}/model", "f8"), ("bf16", "f8", "f8b")], "expected_fp32")):
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
