#!/usr/bin/env bash
# vidx sharded over postgres_fdw: one command, as root, from anywhere.
#
#   test/shard/run.sh
#
# Starts 3 shard clusters and a coordinator on 127.0.0.1 (pg_createcluster,
# ports VIDX_SHARD_PORT .. +3, default 5460-5463), builds the layout of
# docs/sharding.md, loads seeded data through the coordinator and runs the
# checks of test/shard/check.py (EXPLAIN pushdown, sharded == exact top-k for
# L2 / inner product / cosine with and without filters, inserts, a stopped
# shard, how vidx.probes/vidx.rerank reach the shards). Drops every cluster it
# made on every exit path. Last line: "N passed, M failed"; exit 1 on failure.
#
# Needs vidx installed in the PostgreSQL 15 of pg_config (make install), the
# postgresql-15 contrib (postgres_fdw) and python3-numpy, python3-psycopg.
# Knobs: VIDX_SHARD_PORT=5460 VIDX_SHARD_ROWS=12000 VIDX_SHARD_DIMS=64
#        VIDX_SHARD_QUERIES=40 VIDX_SHARD_SEED=42 VIDX_SHARD_INSTALL=1 (make install first)
set -uo pipefail

cd "$(dirname "$(readlink -f "$0")")/../.."
PREFIX=vidx_shardtest
PORT=${VIDX_SHARD_PORT:-5460}
PY=/usr/bin/python3
STATUS=$(mktemp)

cleanup() {
	for n in coord s1 s2 s3; do
		if [ -d "/etc/postgresql/15/${PREFIX}_$n" ]; then
			pg_dropcluster --stop 15 "${PREFIX}_$n" >/dev/null 2>&1 || true
		fi
	done
}
trap 'cleanup; rm -f "$STATUS"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

if [ "$(id -u)" != 0 ]; then
	echo "test/shard/run.sh: run as root (it creates clusters with pg_createcluster)" >&2
	echo "0 passed, 1 failed"
	exit 1
fi
if [ "${VIDX_SHARD_INSTALL:-0}" = 1 ]; then
	make -s -j2 >/dev/null && make -s install >/dev/null || { echo "make install failed"; echo "0 passed, 1 failed"; exit 1; }
fi
if [ ! -f "$(pg_config --pkglibdir)/vidx.so" ] || [ ! -f "$(pg_config --pkglibdir)/postgres_fdw.so" ]; then
	echo "vidx or postgres_fdw is not installed in $(pg_config --pkglibdir) (make install; postgresql-15 contrib)" >&2
	echo "0 passed, 1 failed"
	exit 1
fi

echo "==== vidx sharding test: $(pg_config --version), ports $PORT-$((PORT + 3)) ===="
timeout --signal=TERM 540 "$PY" test/shard/check.py --prefix "$PREFIX" --port "$PORT" --status "$STATUS" \
	--rows "${VIDX_SHARD_ROWS:-12000}" --dims "${VIDX_SHARD_DIMS:-64}" \
	--queries "${VIDX_SHARD_QUERIES:-40}" --seed "${VIDX_SHARD_SEED:-42}"
rc=$?
cleanup
read -r passed failed <"$STATUS" 2>/dev/null || { passed=0; failed=0; }
if [ "$rc" != 0 ] && [ "$failed" = 0 ]; then
	echo "check.py exited with status $rc"
	failed=1
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$rc" = 0 ]
