# dsv3 — build, test, bench.  `make` builds ./dsv3 and libdsv3.a.
#   make test          the whole suite; last line "N passed, N failed, N skipped"
#   make SAN=1 test    the suite under ASan + UBSan (separate build folder)
#   make bench         benchmarks (JSON in bench/results/)
#   make fuzz          libFuzzer targets for the parsers (clang)
#   make check-engine  the engine rule of docs/engine.md §2.6 (tools/check_engine.sh)
#   make run           the main job (see README)
# Every source file under src/<layer>/ is picked up by wildcard; tests/test_*.c
# register themselves, so adding a file needs no edit here.

CC      ?= cc
BUILD   ?= build
SAN     ?= 0
OPT     ?= -O2
ARCH    ?= -march=native
# message buffers truncate long paths on purpose, hence -Wno-format-truncation
WARN    := -Wall -Wextra -Wno-unused-parameter -Wno-format-truncation
CFLAGS  := -std=gnu11 $(OPT) -g $(ARCH) $(WARN) -fopenmp -Isrc -MMD -MP $(EXTRA_CFLAGS)
LDLIBS  := -lm -lpthread

ifeq ($(SAN),1)
  BUILD   := build-san
  CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDFLAGS += -fsanitize=address,undefined
endif

# ---- dependencies: found or not, said once ---------------------------------
PKG := $(shell command -v pkg-config 2>/dev/null)
have = $(shell $(PKG) --exists $(1) 2>/dev/null && echo yes)

ifeq ($(call have,libcjson),yes)
  CFLAGS += $(shell $(PKG) --cflags libcjson) -DDS_HAVE_CJSON
  LDLIBS += $(shell $(PKG) --libs libcjson)
  FOUND += cJSON
else
  REQUIRED_MISSING += libcjson-dev
endif
ifeq ($(call have,libpcre2-8),yes)
  CFLAGS += $(shell $(PKG) --cflags libpcre2-8) -DDS_HAVE_PCRE2
  LDLIBS += $(shell $(PKG) --libs libpcre2-8)
  FOUND += PCRE2
else
  REQUIRED_MISSING += libpcre2-dev
endif
# optional: `dsv3 serve` (the OpenAI-compatible server) needs libmicrohttpd
# (NO_HTTPD=1: a build without it, as for a portable GPU bundle)
ifneq ($(NO_HTTPD),1)
ifeq ($(call have,libmicrohttpd),yes)
  CFLAGS += $(shell $(PKG) --cflags libmicrohttpd) -DDS_HAVE_MICROHTTPD
  LDLIBS += $(shell $(PKG) --libs libmicrohttpd)
  FOUND += libmicrohttpd(serve)
else
  MISSING += libmicrohttpd(no-serve)
endif
else
  MISSING += libmicrohttpd(NO_HTTPD=1)
endif
ifneq ($(NO_BLAS),1)
ifeq ($(call have,openblas),yes)
  CFLAGS += $(shell $(PKG) --cflags openblas) -DDS_HAVE_OPENBLAS
  LDLIBS += $(shell $(PKG) --libs openblas)
  FOUND += OpenBLAS
else
  MISSING += OpenBLAS
endif
else
  MISSING += OpenBLAS
endif
# MPI: the flags of the mpicc wrapper, so one compiler builds everything
# (NO_MPI=1: a one-rank build without it)
MPICC := $(if $(filter 1,$(NO_MPI)),,$(shell command -v mpicc 2>/dev/null))
ifneq ($(MPICC),)
  CFLAGS += $(shell $(MPICC) --showme:compile 2>/dev/null) -DDS_HAVE_MPI
  LDLIBS += $(shell $(MPICC) --showme:link 2>/dev/null)
  FOUND += OpenMPI
else
  MISSING += OpenMPI(one-rank-build)
endif
# CUDA: the .cu files of src/backend/cuda/ are built with nvcc when it is
# found (CUDA=0 leaves them out; `make clean` when switching); they go into
# libdsv3.a beside the C objects, and src/backend/cuda/stub.c stands in for
# them otherwise (the fuzz targets always take the stub).  sm_90a (Hopper:
# FP8 tensor cores, cuBLASLt block scaling) plus PTX for compute_80, which the
# driver compiles for any later GPU.
CUDA    ?= 1
NVCC    ?= $(shell command -v nvcc 2>/dev/null || (test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc))
CU_SRC  :=
ifneq ($(CUDA),0)
ifneq ($(NVCC),)
  CUDA_HOME := $(patsubst %/bin/,%,$(dir $(NVCC)))
  CU_ARCH   ?= -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_80,code=compute_80
  NVFLAGS   := -std=c++17 -O2 -g $(CU_ARCH) -Isrc -Xcompiler -Wall,-Wno-unused-parameter,-fno-strict-aliasing \
               -MMD -MP $(EXTRA_NVFLAGS)
  CU_SRC    := $(wildcard src/backend/cuda/*.cu)
  LDLIBS    += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcublasLt -lcudart -lstdc++
  FOUND     += CUDA($(shell $(NVCC) --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), sm_90a+compute_80)
else
  MISSING += CUDA
endif
else
  MISSING += CUDA(CUDA=0)
endif

# src/backend/cuda/stub.c stands in for the CUDA objects in a build without them
ALL_LIB_SRC := $(filter-out src/cli/%,$(wildcard src/*/*.c src/backend/*/*.c))
LIB_SRC  := $(if $(CU_SRC),$(filter-out src/backend/cuda/stub.c,$(ALL_LIB_SRC)),$(ALL_LIB_SRC))
CLI_SRC  := $(wildcard src/cli/*.c)
TEST_SRC := $(wildcard tests/*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CU_OBJ   := $(CU_SRC:%.cu=$(BUILD)/%.cu.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)

ifeq ($(SAN),1)
  BIN := $(BUILD)/dsv3
else
  BIN := dsv3
endif

.PHONY: all test bench fuzz run clean deps info fixtures check-deps build-tests print-ldlibs check-engine cuda-bench gpu-check cuda-mock
all: info $(BIN) libdsv3.a

info:
	@echo "dsv3 build: found: $(FOUND); not found: $(if $(MISSING),$(MISSING),none)"

check-deps:
	@if [ -n "$(REQUIRED_MISSING)" ]; then echo "dsv3: missing required packages: $(REQUIRED_MISSING) (run 'make deps')" >&2; exit 1; fi

$(BUILD)/%.o: %.c | check-deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# the CPU kernels at -O3: GCC's -O2 vectorizes only loops that need no alias
# check, which left element loops scalar (rmsnorm backward, SwiGLU, the MoE
# combine, parts of attention; docs/cpu.md has the measurements); same
# arithmetic, no reassociation without -ffast-math.  The optimizer's:
# -fno-math-errno too, for a vector sqrt.
$(BUILD)/src/backend/cpu/%.o: CFLAGS += -O3
$(BUILD)/src/backend/cpu/optim.o: CFLAGS += -fno-math-errno

$(BUILD)/%.cu.o: %.cu | check-deps
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c $< -o $@

$(BUILD)/libdsv3.a: $(LIB_OBJ) $(CU_OBJ)
	@rm -f $@
	ar rcs $@ $^

libdsv3.a: $(BUILD)/libdsv3.a
	@cp $< $@

$(BIN): $(CLI_OBJ) $(BUILD)/libdsv3.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libdsv3.a $(LDLIBS)

$(BUILD)/test_dsv3: $(TEST_OBJ) $(BUILD)/libdsv3.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(TEST_OBJ) $(BUILD)/libdsv3.a $(LDLIBS)

# `make test` and `make run` first install missing Debian packages (a no-op
# when present), then build in a sub-make that sees them.
# Tests run from the project root; CLI tests call $$DSV3 (the binary of this build).
test: deps
	@$(MAKE) --no-print-directory build-tests
	@DSV3=./$(BIN) OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} ./$(BUILD)/test_dsv3 $(T)

build-tests: info $(BIN) $(BUILD)/test_dsv3

# the link line of programs built against libdsv3.a outside this Makefile (bench/*.sh)
print-ldlibs:
	@echo $(LDLIBS)

check-engine:
	@bash tools/check_engine.sh

# the GPU GEMM benchmark (tools/gpu_check.sh runs it); builds without CUDA too
cuda-bench: $(BUILD)/gemm_cuda
$(BUILD)/gemm_cuda: bench/gemm_cuda.c $(BUILD)/libdsv3.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libdsv3.a $(LDLIBS)

# build with CUDA, run the CUDA tests and GPU benchmarks; JSON in $$OUT or gpu_check/
gpu-check:
	@bash tools/gpu_check.sh

# the CUDA tests without a GPU: the kernels on the CPU (tools/cudamock; slow)
cuda-mock:
	@bash tools/cudamock/run.sh $(T)

bench: all
	@mkdir -p bench/results
	@BUILD=$(BUILD) bash bench/run.sh

# FUZZ_TARGETS="fuzz_tokenizer_load ..." runs only those; FUZZ_SECONDS per target
FUZZ_SRC := $(if $(FUZZ_TARGETS),$(addprefix fuzz/,$(addsuffix .c,$(FUZZ_TARGETS))),$(wildcard fuzz/fuzz_*.c))
FUZZ_SECONDS ?= 30
fuzz:
	@mkdir -p build-fuzz
	@for f in $(FUZZ_SRC); do \
	  n=$$(basename $$f .c); \
	  clang -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -Wno-pass-failed -Isrc -DDS_FUZZ \
	    $(filter -D% -I%,$(CFLAGS)) $$f $(ALL_LIB_SRC) -o build-fuzz/$$n -lm -fopenmp $(LDLIBS) || exit 1; \
	  mkdir -p fuzz/corpus-$$n; \
	  echo "fuzzing $$n for $(FUZZ_SECONDS)s"; \
	  ./build-fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 -artifact_prefix=build-fuzz/$$n- \
	    fuzz/corpus-$$n fuzz/seeds/$$n > build-fuzz/$$n.log 2>&1; st=$$?; tail -3 build-fuzz/$$n.log; \
	  if [ $$st -ne 0 ]; then echo "fuzz: $$n failed (log: build-fuzz/$$n.log)"; exit 1; fi; \
	done

run: deps
	@$(MAKE) --no-print-directory all
	@bash tools/run_main_job.sh

deps:
	@bash .ci/install-deps.sh

clean:
	rm -rf build build-san build-fuzz dsv3 libdsv3.a

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(CU_OBJ:.o=.d)

# Regenerate every oracle fixture (needs python3 with torch, transformers,
# tokenizers, tiktoken, safetensors).  The eval fixtures also need lm-eval: see
# the docstring of tools/make_eval_fixtures.py (a venv is enough).
fixtures:
	@python3 -c "import torch, transformers, safetensors, tokenizers, tiktoken" 2>/dev/null || \
	  { echo "make fixtures: needs python3 with torch, transformers, safetensors, tokenizers, tiktoken"; exit 1; }
	python3 tools/make_fixtures.py --out tests/fixtures/model
	python3 tools/make_folder_fixtures.py --out tests/fixtures/model/nomtp
	python3 tools/make_train_fixtures.py
	python3 tools/make_io_fixtures.py
	python3 tools/make_fp8_fixtures.py tests/fixtures/fp8
	python3 tools/make_convert_fixtures.py tests/fixtures/convert
	python3 tools/make_fp8_infer_fixtures.py tests/fixtures/fp8infer
	python3 tools/make_tokenizer_fixtures.py
	python3 tools/make_chat_template_fixtures.py
	python3 tools/make_regex_fixtures.py
	@python3 -c "import tensorboard" 2>/dev/null && python3 tools/make_tfevents_fixture.py || \
	  echo "make fixtures: tensorboard not installed; tests/fixtures/tfevents left as it is (pip install tensorboard)"
	@python3 -c "import lm_eval.models.huggingface" 2>/dev/null && python3 tools/make_eval_fixtures.py || \
	  echo "make fixtures: lm-eval not installed; eval fixtures left as they are (tools/make_eval_fixtures.py)"
