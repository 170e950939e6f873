#!/usr/bin/env bash
# bench_kernels.sh — in-process before/after ratios of CPU kernels
# (bench/kernels.c): attention forward/backward (the old per-row kernels vs
# the GEMM form, on the AVX-512 and AVX2 paths), cross-entropy (libm vs the
# vector exp), plus the measured FMA peak and streaming bandwidth.
# Writes bench/results/kernels.json.   BENCH_THREADS (2) BENCH_REPS (5)
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
T=${BENCH_THREADS:-2}
REPS=${BENCH_REPS:-5}
[ -f "$BUILD/libdsv3.a" ] || make -j2 all >/dev/null
PKG=openblas
BLASDEF=""; pkg-config --exists $PKG 2>/dev/null && BLASDEF=-DDS_HAVE_OPENBLAS
cc -std=gnu11 -O2 -march=native -fopenmp -Isrc $BLASDEF $(pkg-config --cflags $PKG 2>/dev/null) bench/kernels.c bench/attn_old.c \
   "$BUILD/libdsv3.a" -o "$BUILD/bench_kernels" $(make -s --no-print-directory print-ldlibs)
mkdir -p bench/results
OMP_NUM_THREADS=$T "$BUILD/bench_kernels" "$REPS" > bench/results/kernels.json
python3 - <<'PY'
import json
d = json.load(open("bench/results/kernels.json"))
print(f"threads {d['threads']}, ISA {d['isa']}: FMA peak {d['fma_peak_gflops']} GFLOP/s"
      + (f" (AVX2 path {d['fma_peak_avx2_gflops']})" if 'fma_peak_avx2_gflops' in d else "")
      + f", stream triad {d['stream_gbps']} GB/s")
print(f"{'attention':>10} {'B':>2} {'T':>4} {'isa':>8} | {'fwd old ms':>10} {'new ms':>7} {'x':>5} {'GF/s':>6} | {'bwd old ms':>10} {'new ms':>7} {'x':>5} {'GF/s':>6}")
for a in d["attention"]:
    print(f"{'':>10} {a['B']:>2} {a['T']:>4} {a['isa']:>8} | {a['fwd_old_s']*1e3:>10.2f} {a['fwd_new_s']*1e3:>7.2f} {a['fwd_speedup']:>5.2f} {a['fwd_new_gflops']:>6.1f} | "
          f"{a['bwd_old_s']*1e3:>10.2f} {a['bwd_new_s']*1e3:>7.2f} {a['bwd_speedup']:>5.2f} {a['bwd_new_gflops']:>6.1f}")
c = d["cross_entropy"]
print(f"cross-entropy {c['N']}x{c['V']} (1 thread): libm {c['libm_s']*1e3:.2f} ms, vector exp {c['vmath_s']*1e3:.2f} ms, {c['speedup']:.2f}x")
PY
