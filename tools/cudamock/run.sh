#!/usr/bin/env bash
# tools/cudamock/run.sh [TEST FILTER...] — run the CUDA backend's kernels on
# the CPU: the .cu files are rewritten as C++ (transform.py) and built with
# g++ against mock CUDA runtime / cuBLASLt headers (include/, mock.cpp), then
# linked with a CUDA=0 build of the rest of dsv3 and its tests, and into a
# dsv3 binary ($B/dsv3, which the tests' CLI runs use: generate, bench-decode,
# bench-train, eval, train, serve with --device cuda); the test runner then
# runs tests/test_backend_cuda.c (default filter "cuda_") as if a GPU were
# there.  Slow (every CUDA thread is an OS thread), for small shapes.
#   CUDAMOCK_LT_FP8=0  cuBLASLt mock refuses FP8 (dsv3's own FP8 kernel runs)
set -eu
cd "$(dirname "$0")/../.."
B=${CUDAMOCK_BUILD:-build-cudamock}
mkdir -p $B/mock
make -s CUDA=0 BUILD=$B $B/libdsv3.a $(for f in tests/*.c src/cli/*.c; do echo "$B/${f%.c}.o"; done) >/dev/null
objs=""
for f in src/backend/cuda/*.cu; do
  n=$(basename "$f" .cu)
  python3 tools/cudamock/transform.py "$f" $B/mock/$n.cpp
  g++ -std=c++20 -O1 -g -w -Isrc -Itools/cudamock/include -c $B/mock/$n.cpp -o $B/mock/$n.o
  objs="$objs $B/mock/$n.o"
done
g++ -std=c++20 -O1 -g -Isrc -Itools/cudamock/include -c tools/cudamock/mock.cpp -o $B/mock/mock.o
LIBS="-lm -lpthread $(pkg-config --libs libcjson libpcre2-8 openblas 2>/dev/null) $(pkg-config --libs libmicrohttpd 2>/dev/null) $(mpicc --showme:link 2>/dev/null)"
g++ -fopenmp -o $B/test_cudamock $objs $B/mock/mock.o $B/tests/*.o $B/libdsv3.a $LIBS
g++ -fopenmp -o $B/dsv3 $objs $B/mock/mock.o $B/src/cli/*.o $B/libdsv3.a $LIBS
# the stand-ins take seconds a token: the serve tests' HTTP reads wait up to 300 s here (20 s otherwise)
DSV3="$PWD/$B/dsv3" DSV3_TEST_HTTP_TIMEOUT=${DSV3_TEST_HTTP_TIMEOUT:-300} OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} \
  ./$B/test_cudamock "${@:-cuda_}"
