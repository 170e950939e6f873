#!/usr/bin/env bash
# gpu_bundle.sh [OUT.tar.xz] — the binaries of tools/gpu_check.sh, built here, for a
# GPU machine that has the CUDA toolkit and driver but neither dsv3's build
# dependencies (cJSON, PCRE2, OpenBLAS) nor a network to install them.
#
# Builds the working tree in build-gpu/ with ARCH=-march=x86-64-v3 (AVX2+FMA;
# the AVX-512 kernels are still picked at run time where the CPU has them),
# NO_MPI=1 and NO_HTTPD=1, and packs
#   bin/dsv3 bin/test_dsv3 bin/gemm_cuda    debug info stripped, symbols kept
#   lib/           the shared libraries they need beyond glibc and CUDA
#   lib/fallback/  the compiler runtimes (libgomp, libstdc++, libgcc_s), used
#                  on the target only where its own are missing
# into OUT (default .gpu/bundle.tar.xz; .gpu/ is git-ignored).  On the GPU
# machine: GPU_CHECK_PREBUILT=.gpu/bundle.tar.xz bash tools/gpu_check.sh.
# Beside the bundle, .gpu/shared/data/tinyshakespeare/input.txt: the one file
# of ../shared the CUDA tests read (the training parity's corpus), since the
# device run takes the checkout alone; gpu_check.sh points DS_SHARED there
# when ../shared is absent.
set -eu
cd "$(dirname "$0")/.."
OUTF=${1:-.gpu/bundle.tar.xz}
B=build-gpu
make -s -j"$(nproc)" BUILD=$B BIN=$B/dsv3 ARCH=-march=x86-64-v3 NO_MPI=1 NO_HTTPD=1 \
  $B/dsv3 $B/test_dsv3 $B/gemm_cuda >/dev/null
make -s BUILD=$B BIN=$B/dsv3 NO_MPI=1 NO_HTTPD=1 info
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib/fallback"
for b in dsv3 test_dsv3 gemm_cuda; do
  cp "$B/$b" "$stage/bin/$b"
  strip --strip-debug "$stage/bin/$b"
done
# every resolved library outside glibc and CUDA, by its soname
ldd "$B/dsv3" "$B/test_dsv3" "$B/gemm_cuda" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u |
while read -r name path; do
  case "$name" in
    libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|ld-linux*|libcudart*|libcublas*|libcuda.so*) ;;
    libgomp.so*|libstdc++.so*|libgcc_s.so*) cp -L "$path" "$stage/lib/fallback/$name" ;;
    *) cp -L "$path" "$stage/lib/$name" ;;
  esac
done
mkdir -p "$(dirname "$OUTF")"
if [ -f ../shared/data/tinyshakespeare/input.txt ]; then
  mkdir -p "$(dirname "$OUTF")/shared/data/tinyshakespeare"
  cp ../shared/data/tinyshakespeare/input.txt "$(dirname "$OUTF")/shared/data/tinyshakespeare/"
fi
git rev-parse HEAD > "$stage/COMMIT"
git diff --quiet HEAD || echo "dirty" >> "$stage/COMMIT"
tar -C "$stage" -cJf "$OUTF" .
echo "gpu_bundle: $OUTF ($(du -h "$OUTF" | cut -f1)): $(cd "$stage" && ls bin lib lib/fallback | tr '\n' ' ')"
