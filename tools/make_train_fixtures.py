#!/usr/bin/env python3
"""Oracle data for src/train/adamw.c, made with torch.

Writes tests/fixtures/train/adamw_unit.txt: hex floats (float.hex), one value a
line, in blocks:
  header line: n steps lr beta1 beta2 eps wd max_norm
  p0 (n values)
  for each step: g (n values), then p after clip_grad_norm_(max_norm) + AdamW step
    with decay, then p after the same without decay (a second parameter set that
    starts from p0 and sees the same grads), then p for BF16 moments (decay on).
The BF16-moment reference keeps m and v in torch.bfloat16 between steps and
computes each step in float32 with torch's formula.

Run: python3 tools/make_train_fixtures.py
"""
import math, os, torch

torch.manual_seed(1234)
n, steps = 257, 3
lr, b1, b2, eps, wd, max_norm = 1e-2, 0.9, 0.95, 1e-8, 0.1, 1.0
p0 = torch.randn(n)
grads = [torch.randn(n) * s for s in (0.02, 0.5, 0.03)]  # step 2 gets clipped (norm ~8)

def run(decay):
    p = torch.nn.Parameter(p0.clone())
    opt = torch.optim.AdamW([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd if decay else 0.0,
                            foreach=False)
    out = []
    for g in grads:
        p.grad = g.clone()
        torch.nn.utils.clip_grad_norm_([p], max_norm)
        opt.step()
        out.append(p.detach().clone())
    return out

def run_bf16_moments():
    p = p0.clone()
    m = torch.zeros(n, dtype=torch.bfloat16)
    v = torch.zeros(n, dtype=torch.bfloat16)
    out = []
    for t, g in enumerate(grads, 1):
        g = g.clone()
        norm = torch.linalg.vector_norm(g)
        g = g * torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        mf, vf = m.float(), v.float()
        p = p * (1 - lr * wd)
        mf = mf.lerp(g, 1 - b1)
        vf = vf * b2 + (1 - b2) * g * g
        denom = vf.sqrt() / math.sqrt(1 - b2 ** t) + eps
        p = p - (lr / (1 - b1 ** t)) * (mf / denom)
        m, v = mf.to(torch.bfloat16), vf.to(torch.bfloat16)
        out.append(p.clone())
    return out

with_decay, no_decay, bf16m = run(True), run(False), run_bf16_moments()
path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "train", "adamw_unit.txt")
with open(path, "w") as f:
    f.write(f"{n} {steps} {lr!r} {b1!r} {b2!r} {eps!r} {wd!r} {max_norm!r}\n")
    for x in p0.tolist(): f.write(float(x).hex() + "\n")
    for s in range(steps):
        for arr in (grads[s], with_decay[s], no_decay[s], bf16m[s]):
            for x in arr.tolist(): f.write(float(x).hex() + "\n")
print("wrote", os.path.normpath(path))
