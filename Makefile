# vidx: PGXS build of the extension (C glue + C++ core).
#   make && make install        build and install into the PostgreSQL that pg_config names
#   make format                 clang-format the C/C++ sources (.clang-format)
#   make installcheck           pg_regress tests (sql/ + expected/) and isolation tests (specs/ +
#                               expected/) against a running server
# The core's unit tests and micro-benchmarks are built by CMake (see CMakeLists.txt).

EXTENSION = vidx
MODULE_big = vidx
DATA = sql/vidx--0.1.0.sql

GLUE_OBJS = src/vidx.o src/vector.o src/pages.o src/tree_cache.o src/sidecar.o src/sidecar_gc.o src/build.o \
	src/insert.o src/scan.o src/scan_pool.o src/scan_leaf.o src/scan_cost.o src/vacuum.o src/functions.o src/batch.o src/recall.o src/calibrate.o src/table.o src/split.o src/freeslots.o
CORE_OBJS = src/core/distance.o src/core/rotation.o src/core/rabitq.o \
	src/core/kmeans.o src/core/tree.o src/core/tree_edit.o src/core/sidecar_format.o \
	src/core/build.o src/core/threads.o src/core/recall.o
OBJS = $(GLUE_OBJS) $(CORE_OBJS)

REGRESS = vector_ops index_basic index_options index_vacuum index_batch index_costs index_numeric
REGRESS_OPTS = --load-extension=vidx
# isolation tester (specs/ + expected/): splits against concurrent sessions
ISOLATION = split
ISOLATION_OPTS = --load-extension=vidx

PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS = -Wno-declaration-after-statement
PG_CXXFLAGS = -std=c++17 -pthread -Wall -Wextra
SHLIB_LINK = -lstdc++ -pthread

# No LLVM bitcode: the core is C++, and JIT inlining of the glue buys nothing.
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# The companion extension vidx_pgvector (operator classes for pgvector's vector
# and halfvec; vidx_pgvector/) is built, installed and cleaned with vidx. It
# needs no pgvector header to build; its tests need pgvector installed
# (make -C vidx_pgvector installcheck; test/pgvector.sh installs 0.8.6).
all: vidx-pgvector
vidx-pgvector:
	$(MAKE) -C vidx_pgvector
install: vidx-pgvector-install
vidx-pgvector-install: vidx-pgvector
	$(MAKE) -C vidx_pgvector install
clean: vidx-pgvector-clean
vidx-pgvector-clean:
	$(MAKE) -C vidx_pgvector clean
.PHONY: vidx-pgvector vidx-pgvector-install vidx-pgvector-clean

# The core's hot loops are worth more than PostgreSQL's default -O2.
$(CORE_OBJS): CXXFLAGS += -O3

# Formatting (.clang-format at the root; clang-format 14, Debian package clang-format):
#   make format          rewrites the C and C++ sources in place
#   make format-check    lists what is not formatted, fails if anything is
CLANG_FORMAT ?= clang-format
FORMAT_FILES = $(wildcard src/*.c src/*.h vidx_pgvector/*.c src/core/*.cpp src/core/*.hpp src/core/*.h \
	test/unit/*.cpp test/unit/*.hpp test/fuzz/*.cpp bench/micro/*.cpp)

format:
	$(CLANG_FORMAT) -i $(FORMAT_FILES)

format-check:
	$(CLANG_FORMAT) --dry-run -Werror $(FORMAT_FILES)

.PHONY: format format-check
