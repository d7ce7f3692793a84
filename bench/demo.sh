#!/usr/bin/env bash
# vidx demo on Fashion-MNIST (60,000 x 784, L2): run from the repo root as root:
#
#   bench/demo.sh [--queries N] [--seed S] [--rows N] [--exact-queries N]
#                 [--probes-list 1,5,10,20] [--with lists=300 ...]
#
# Installs what it needs with apt (skipped when present), builds and installs
# vidx, starts a throw-away cluster (pg_virtualenv, shared_buffers=1GB), loads
# the 60,000 train vectors, builds a vidx index showing its progress (from
# pg_stat_progress_create_index), runs the test queries one at a time and
# prints recall@10 against exact ground truth (numpy), p50/p99 latency, QPS,
# build time and index size, and the same for an exact scan, with the speedup.
# The cluster is dropped at the end. Default: 1000 seeded test queries; all
# 10,000 with --queries 10000. Arguments go to `bench/fmnist.py demo`.
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")/.."
PY=/usr/bin/python3

section() {
	echo
	echo "======================================================================"
	echo "== $*"
	echo "======================================================================"
}

# shellcheck source=test/packages.sh
. test/packages.sh
vidx_need_packages demo.sh "${VIDX_DEMO_PACKAGES[@]}"

section "building and installing vidx"
mkdir -p build
if ! { make -j"$(nproc)" && make install; } >build/demo-make.log 2>&1; then
	tail -50 build/demo-make.log
	echo "demo.sh: the build failed (full log: build/demo-make.log)" >&2
	exit 1
fi
echo "installed vidx into $(pg_config --pkglibdir) (build log: build/demo-make.log)"

# default demo arguments unless the caller gives their own
args=("$@")
has() { local a; for a in "${args[@]}"; do [ "$a" = "$1" ] && return 0; done; return 1; }
has --queries || args+=(--queries "${DEMO_QUERIES:-1000}")
has --seed || args+=(--seed "${DEMO_SEED:-42}")

section "throw-away cluster (pg_virtualenv, shared_buffers=1GB)"
pg_virtualenv -t \
	-o shared_buffers=1GB \
	-o maintenance_work_mem=2GB \
	-o max_wal_size=4GB \
	-o work_mem=64MB \
	-o effective_cache_size=4GB \
	"$PY" bench/fmnist.py demo "${args[@]}"
echo
echo "demo finished; the throw-away cluster was dropped."
