# config.mk: compilers, flags and install paths. Override on the command line:
#   make CC=clang GPU_ARCH=80 PREFIX=$HOME/.local
CC       ?= cc
NVCC     ?= $(shell command -v nvcc 2>/dev/null)
GPU_ARCH ?= 90a
PREFIX   ?= /usr/local
MANPREFIX ?= $(PREFIX)/share/man

OPT      ?= -O2
CFLAGS   ?= $(OPT) -g
CFLAGS   += -std=c11 -D_GNU_SOURCE -Wall -Wextra
NVFLAGS  ?= -O2 -std=c++17 -arch=sm_$(GPU_ARCH) -Xcompiler -Wall,-Wextra
PKGS     := hdf5 libzstd libcjson libpcre2-8 libutf8proc
DEPS_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
DEPS_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
LDLIBS   += $(DEPS_LIBS) -lm
