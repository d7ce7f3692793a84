#!/usr/bin/env bash
# vidx: build and install pgvector 0.8.6 (the reference for vidx_pgvector's tests
# and bench/'s pgvector mode) from the unmodified source tarball in
# third_party/ (else ../shared/third_party/, or $VIDX_PGVECTOR_TARBALL), after
# checking its sha256.
# Not part of vidx: vidx never depends on it; only the companion extension
# vidx_pgvector (vidx_pgvector/) and the tests and benchmarks of it do.
#
#   test/pgvector.sh          installs it into the PostgreSQL that pg_config
#                             names, unless version 0.8.6 is installed already
#   . test/pgvector.sh        (sourced) defines vidx_install_pgvector only
#
# Builds in build/pgvector-0.8.6 (PGXS, with pgvector's own flags). Needs
# build-essential and postgresql-server-dev-15 (test/packages.sh).

VIDX_PGVECTOR_VERSION=0.8.6
VIDX_PGVECTOR_SHA256=5743dac39fdfa740533cf95e71b033bd5513b71dda194b3cf19464ccbf76f3fb

vidx_install_pgvector() {
	local root tarball sharedir have
	root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
	tarball=${VIDX_PGVECTOR_TARBALL:-$root/third_party/pgvector-$VIDX_PGVECTOR_VERSION.tar.gz}
	[ -f "$tarball" ] || tarball=$root/../shared/third_party/pgvector-$VIDX_PGVECTOR_VERSION.tar.gz
	sharedir=$(pg_config --sharedir)
	have=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$sharedir/extension/vector.control" 2>/dev/null || true)
	if [ "$have" = "$VIDX_PGVECTOR_VERSION" ] && [ -f "$(pg_config --pkglibdir)/vector.so" ]; then
		echo "pgvector $have is installed"
		return 0
	fi
	if [ ! -f "$tarball" ]; then
		echo "pgvector.sh: $tarball not found (set VIDX_PGVECTOR_TARBALL)" >&2
		return 1
	fi
	if ! echo "$VIDX_PGVECTOR_SHA256  $tarball" | sha256sum -c --quiet -; then
		echo "pgvector.sh: $tarball does not have the sha256 of pgvector $VIDX_PGVECTOR_VERSION" >&2
		return 1
	fi
	echo "building pgvector $VIDX_PGVECTOR_VERSION from $tarball"
	mkdir -p "$root/build"
	rm -rf "$root/build/pgvector-$VIDX_PGVECTOR_VERSION"
	tar -xzf "$tarball" -C "$root/build" &&
		make -C "$root/build/pgvector-$VIDX_PGVECTOR_VERSION" -j2 >/dev/null &&
		make -C "$root/build/pgvector-$VIDX_PGVECTOR_VERSION" install >/dev/null &&
		echo "pgvector $VIDX_PGVECTOR_VERSION installed"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	set -euo pipefail
	vidx_install_pgvector
fi
