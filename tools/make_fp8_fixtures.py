#!/usr/bin/env python3
"""make_fp8_fixtures.py — torch oracles for dsv3's FP8 codecs, quantizers and
block-scaled GEMM (tests/test_fp8*.c).

    python3 tools/make_fp8_fixtures.py tests/fixtures/fp8

Writes little-endian raw arrays (sizes follow from the file lengths; shapes are
in manifest.txt):
  decode_e4m3.f32, decode_e5m2.f32   all 256 codes, torch .to(float32)
  enc_in.f32                         FP32 inputs: boundaries, ties, subnormals,
                                     NaN, +-inf, out of range, random exponents
  enc_e4m3_torch.u8                  torch .to(float8_e4m3fn) (saturates in torch 2.15)
  enc_e4m3_nonsat.u8                 the same, except OCP non-saturating: |x| > 464
                                     or inf -> NaN (S.1111.111)
  enc_e5m2_torch.u8                  torch .to(float8_e5m2) (overflow -> inf)
  enc_e5m2_sat.u8                    x.clamp(-57344, 57344).to(float8_e5m2)
  enc_bf16.u16, enc_f16.u16          torch .to(bfloat16 / float16)
  quant_x.f32                        (QR, QC) input with outliers, a zero row and a zero block
  quant_<name>.u8 / .f32             codes and scales of DeepSeek's casts (act_quant:
                                     amax clamp 1e-4, s = amax/fmax, y = x / s, cast)
  gemm_a.u8, gemm_as.f32, gemm_b.u8, gemm_bs.f32, gemm_c.f32
                                     A (GM, GK) 1x128, B (GN, GK) 128x128, and
                                     C = sum_kb (A_kb B_kb^T) sA sB in float64
"""
import math
import os
import struct
import sys

import numpy as np
import torch

out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/fp8"
os.makedirs(out, exist_ok=True)
manifest = [f"torch {torch.__version__}; made by: python3 tools/make_fp8_fixtures.py tests/fixtures/fp8"]


def save(name, t, note=""):
    a = t.detach().cpu().contiguous().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    a.tofile(os.path.join(out, name))
    manifest.append(f"{name} {a.dtype} {list(a.shape)} {note}".rstrip())


def u8(t):
    return t.view(torch.uint8)


# ---- codecs -------------------------------------------------------------------
codes = torch.arange(256, dtype=torch.uint8)
save("decode_e4m3.f32", codes.view(torch.float8_e4m3fn).float())
save("decode_e5m2.f32", codes.view(torch.float8_e5m2).float())

vals = []
# every E4M3 and E5M2 value, the midpoints between neighbours (ties) and a hair
# either side of each midpoint
for dt in (torch.float8_e4m3fn, torch.float8_e5m2):
    v = codes.view(dt).double()
    v = v[torch.isfinite(v)]
    v = torch.unique(v[v >= 0])
    mids = (v[1:] + v[:-1]) / 2
    for x in torch.cat([v, mids]).tolist():
        vals += [x, -x]
    for m in mids.tolist():
        f = np.float32(m)
        vals += [float(np.nextafter(f, np.float32(np.inf))), float(np.nextafter(f, np.float32(0)))]
# around the overflow thresholds and specials
for x in [448, 464, 480, 496, 512, 57344, 61440, 65536, 1e6, 3.4e38]:
    f = np.float32(x)
    vals += [float(np.nextafter(f, np.float32(0))), x, float(np.nextafter(f, np.float32(np.inf)))]
vals += [float("inf"), float("-inf"), 2.0**-10, 2.0**-11, 2.0**-17, 2.0**-18, 1e-30, 1.4e-45, 0.0, -0.0]
rng = np.random.default_rng(1234)
vals += list((rng.standard_normal(3000) * np.exp2(rng.uniform(-22, 18, 3000))).astype(np.float32))
x = torch.tensor(np.array(vals, dtype=np.float32))
nanbits = torch.tensor([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFFFFFFF - 2**32], dtype=torch.int64)
x = torch.cat([x, nanbits.to(torch.int32).view(torch.float32)])
save("enc_in.f32", x)
e4 = u8(x.to(torch.float8_e4m3fn))
save("enc_e4m3_torch.u8", e4)
ns = e4.clone()
over = (x.abs() > 464) & ~torch.isnan(x)
ns[over] = torch.where(x[over] < 0, 0xFF, 0x7F).to(torch.uint8)
save("enc_e4m3_nonsat.u8", ns)
save("enc_e5m2_torch.u8", u8(x.to(torch.float8_e5m2)))
save("enc_e5m2_sat.u8", u8(x.clamp(-57344, 57344).to(torch.float8_e5m2)))
save("enc_bf16.u16", x.to(torch.bfloat16).view(torch.int16))
save("enc_f16.u16", x.to(torch.float16).view(torch.int16))

# ---- quantizers: DeepSeek's casts written plainly in torch ----------------------
QR, QC = 200, 300
g = torch.Generator().manual_seed(7)
qx = torch.randn(QR, QC, generator=g) * torch.exp2(torch.randint(-12, 6, (QR, 1), generator=g).float())
qx[3, 17] = 3000.0            # outliers
qx[150, 299] = -7e4
qx[40, :] = 0.0               # an all-zero row -> zero 1x128 tiles
qx[128:200, 256:300] = 0.0    # an all-zero (partial) 128x128 block
qx[60, 0:128] = 3e-6          # a tile below the 1e-4 amax floor
save("quant_x.f32", qx)


def ue8m0(s):
    # round up to a power of two, exactly (frexp in float64)
    def one(v):
        m, e = math.frexp(v)  # v = m * 2^e, m in [0.5, 1)
        return 2.0 ** (e - 1) if m == 0.5 else 2.0 ** e
    return torch.tensor([one(v) for v in s.double().flatten().tolist()], dtype=torch.float32).view(s.shape)


def cast(y, dt, fmax):
    return u8(y.clamp(-fmax, fmax).to(dt))


def pad(x, r, c):
    R, C = x.shape
    return torch.nn.functional.pad(x, (0, (-C) % c, 0, (-R) % r))


def quant(x, gran, dt, fmax, pow2):
    R, C = x.shape
    if gran == "128x1":
        q, s = quant(x.t().contiguous(), "1x128", dt, fmax, pow2)
        return q.t().contiguous(), s.t().contiguous()
    if gran == "1x128":
        xp = pad(x, 1, 128).view(R, -1, 128)
        amax = xp.abs().amax(-1).clamp(min=1e-4)
    elif gran == "128x128":
        xp = pad(x, 128, 128)
        RB, CB = xp.shape[0] // 128, xp.shape[1] // 128
        amax = xp.view(RB, 128, CB, 128).abs().amax((1, 3)).clamp(min=1e-4)
    elif gran == "row":
        amax = x.abs().amax(1).clamp(min=1e-4)
    else:
        amax = x.abs().amax().clamp(min=1e-4).view(1)
    s = amax / fmax
    if pow2:
        s = ue8m0(s)
    if gran == "1x128":
        y = xp / s[:, :, None]
        q = cast(y, dt, fmax).view(R, -1)[:, :C]
    elif gran == "128x128":
        sf = s.repeat_interleave(128, 0).repeat_interleave(128, 1)
        q = cast(xp / sf, dt, fmax)[:R, :C]
    elif gran == "row":
        q = cast(x / s[:, None], dt, fmax)
    else:
        q = cast(x / s, dt, fmax)
    return q.contiguous(), s.contiguous()


cases = [("1x128", "e4m3", 0), ("128x128", "e4m3", 0), ("128x1", "e4m3", 0), ("row", "e4m3", 0),
         ("tensor", "e4m3", 0), ("1x128", "e4m3", 1), ("128x128", "e4m3", 1), ("1x128", "e5m2", 0)]
for gran, fmt, pow2 in cases:
    dt, fmax = (torch.float8_e4m3fn, 448.0) if fmt == "e4m3" else (torch.float8_e5m2, 57344.0)
    q, s = quant(qx, gran, dt, fmax, pow2)
    name = f"quant_{gran}_{fmt}{'_ue8m0' if pow2 else ''}"
    save(name + ".u8", q)
    save(name + ".f32", s)

# ---- block-scaled GEMM oracle ------------------------------------------------------
GM, GN, GK = 37, 150, 300
a = torch.randn(GM, GK, generator=g) * torch.exp2(torch.randint(-3, 3, (GM, 1), generator=g).float())
b = torch.randn(GN, GK, generator=g) * 0.05
aq, as_ = quant(a, "1x128", torch.float8_e4m3fn, 448.0, 0)
bq, bs = quant(b, "128x128", torch.float8_e4m3fn, 448.0, 0)
A = aq.view(torch.float8_e4m3fn).double()
B = bq.view(torch.float8_e4m3fn).double()
C = torch.zeros(GM, GN, dtype=torch.float64)
for kb in range((GK + 127) // 128):
    k0, k1 = kb * 128, min(GK, kb * 128 + 128)
    part = A[:, k0:k1] @ B[:, k0:k1].t()
    sb = bs[:, kb].double().repeat_interleave(128)[:GN]
    C += part * as_[:, kb].double()[:, None] * sb[None, :]
save("gemm_a.u8", aq)
save("gemm_as.f32", as_)
save("gemm_b.u8", bq)
save("gemm_bs.f32", bs)
save("gemm_c.f32", C.float())

with open(os.path.join(out, "manifest.txt"), "w") as f:
    f.write("\n".join(manifest) + "\n")
print("\n".join(manifest))
