#!/usr/bin/env python3
"""bench_gemm_torch.py — the peer for bench/bench_gemm.sh: torch CPU matmul
GFLOP/s (FP32 and BF16) for C = A @ B.T on the shapes of `dsv3 fp8 bench`.

    python3 tools/bench_gemm_torch.py OUT.json [THREADS] [REPS] "M,N,K;M,N,K;..."

torch's BF16 matmul on a CPU without AVX512_BF16 runs at a few GFLOP/s, so
to keep `make bench` near a minute the BF16 peer skips shapes above 1e10 MNK
(reported as 0) and large shapes get no warm-up run.
"""
import json
import sys
import time

import torch

out = sys.argv[1]
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
reps = int(sys.argv[3]) if len(sys.argv) > 3 else 2
shapes = [tuple(int(v) for v in s.split(",")) for s in sys.argv[4].split(";")]
torch.set_num_threads(threads)
res = []
for M, N, K in shapes:
    row = {"M": M, "N": N, "K": K}
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = (torch.rand(M, K) * 2 - 1).to(dt)
        b = (torch.rand(N, K) * 2 - 1).to(dt)
        best = 0.0
        if name == "bf16" and M * N * K > 1e10:
            row["torch_" + name] = 0.0
            continue
        warm = 1 if M * N * K < 1e9 else 0
        for r in range(reps + warm):
            t = time.perf_counter()
            c = a @ b.t()
            t = time.perf_counter() - t
            if r >= warm:
                best = max(best, 2.0 * M * N * K / t / 1e9)
        row["torch_" + name] = round(best, 2)
    res.append(row)
json.dump({"peer": f"torch {torch.__version__} CPU matmul", "threads": threads, "results": res}, open(out, "w"), indent=1)
