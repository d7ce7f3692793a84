#!/usr/bin/env bash
# vidx: the whole test suite. Run from anywhere (it changes to the repo root):
#
#   test/run_all.sh
#
# 1. core unit tests:   cmake + ctest (build/)
# 2. extension:         make && make install (PGXS, into the pg_config on PATH): vidx and
#                       its companion vidx_pgvector; then pgvector 0.8.6, which only
#                       vidx_pgvector's tests need, from third_party/
#                       (test/pgvector.sh; skipped if installed)
# 3. test data:         Fashion-MNIST subset exported by bench/fmnist.py, clustered
#                       sets of 64 and 1,536 dims by bench/datagen.py (build/testdata/)
# 4. SQL tests, inside ONE throw-away cluster made by pg_virtualenv:
#      make installcheck     (pg_regress: sql/ + expected/; isolation tester: specs/ + expected/)
#      make -C vidx_pgvector installcheck (pg_regress of the pgvector operator classes)
#      pg_prove test/t/*.sql (pgTAP)
#      test/node/run.sh      (Node.js client: npm pg + pgvector on a vidx-indexed vector column)
# 5. sharding:          test/shard/run.sh (3 shards + coordinator, ports 5460-5463)
# 6. robustness:        test/run_robust.sh (crash, replica, restore, concurrency,
#                       bad input, fuzzing, security, format version; own clusters on
#                       ports 5440-5459; about 13 minutes on 2 cores)
#
# Needs root (make install; pg_virtualenv starts the server as postgres). As
# root it first installs, with apt, the packages of test/packages.sh that are
# missing (the list .ci/run and bench/demo.sh use too); run as another user with
# packages missing, it names them and stops. Exits non-zero if any step fails.
#
# Environment knobs:
#   VIDX_TEST_ROWS=20000    Fashion-MNIST train rows for test/t/01 and 02
#   VIDX_TEST_QUERIES=100   query vectors for test/t/01
#   VIDX_SKIP_UNIT=1        skip the CMake/ctest step
#   VIDX_SKIP_SHARD=1       skip the sharding test (test/shard/run.sh)
#   VIDX_ROBUST=0           skip the robustness suite (test/run_robust.sh), for quick local runs
#   VIDX_PROVE_TIMEOUT=1200 seconds before pg_prove is stopped
#   VIDX_TESTS="test/t/01_recall_fmnist.sql ..."  run only these pgTAP files
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")/.."
ROOT=$PWD
PY=/usr/bin/python3
export VIDX_TESTDATA="$ROOT/build/testdata"

# ---------------------------------------------------------------------------
# Inside the throw-away cluster (pg_virtualenv runs this script again with
# --in-cluster; PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE are set).
# ---------------------------------------------------------------------------
if [ "${1:-}" = "--in-cluster" ]; then
	status_file=$2
	rc=0
	echo "==== [cluster] PostgreSQL $(psql -XAtc 'SHOW server_version') on port $PGPORT ===="

	echo
	echo "==== [cluster] make installcheck (pg_regress, isolation tester) ===="
	rm -rf regression.diffs regression.out output_iso
	t=$(date +%s)
	if make installcheck; then
		echo "installcheck=PASS $(($(date +%s) - t))" >>"$status_file"
	else
		rc=1
		echo "installcheck=FAIL $(($(date +%s) - t))" >>"$status_file"
		for f in regression.diffs output_iso/regression.diffs; do
			if [ -f $f ]; then
				echo "---- $f ----"
				cat $f
				echo "---- end of $f ----"
			fi
		done
	fi

	echo
	echo "==== [cluster] make -C vidx_pgvector installcheck (pg_regress) ===="
	rm -rf vidx_pgvector/regression.diffs vidx_pgvector/regression.out vidx_pgvector/results
	t=$(date +%s)
	if make -C vidx_pgvector installcheck; then
		echo "installcheck_pgvector=PASS $(($(date +%s) - t))" >>"$status_file"
	else
		rc=1
		echo "installcheck_pgvector=FAIL $(($(date +%s) - t))" >>"$status_file"
		if [ -f vidx_pgvector/regression.diffs ]; then
			echo "---- vidx_pgvector/regression.diffs ----"
			cat vidx_pgvector/regression.diffs
			echo "---- end of vidx_pgvector/regression.diffs ----"
		fi
	fi

	echo
	echo "==== [cluster] pg_prove (pgTAP: test/t/*.sql) ===="
	# pg_prove runs each file with psql -X --set ON_ERROR_STOP=1 from this directory.
	t=$(date +%s)
	# shellcheck disable=SC2086
	if timeout "${VIDX_PROVE_TIMEOUT:-1200}" pg_prove --ext .sql --timer --failures \
		${VIDX_TESTS:-test/t/}; then
		echo "pg_prove=PASS $(($(date +%s) - t))" >>"$status_file"
	else
		rc=1
		echo "pg_prove=FAIL $(($(date +%s) - t))" >>"$status_file"
	fi

	echo
	echo "==== [cluster] Node.js client test (test/node/run.sh) ===="
	t=$(date +%s)
	if bash test/node/run.sh; then
		echo "node=PASS $(($(date +%s) - t))" >>"$status_file"
	else
		rc=1
		echo "node=FAIL $(($(date +%s) - t))" >>"$status_file"
	fi
	exit $rc
fi

# ---------------------------------------------------------------------------
# Outside: build, unit tests, data, then one cluster for the SQL tests.
# ---------------------------------------------------------------------------
T0=$(date +%s)
declare -a SUMMARY=()
FAILED=0

section() {
	echo
	echo "======================================================================"
	echo "== $*"
	echo "======================================================================"
}

record() { # record NAME STATUS SECONDS
	SUMMARY+=("$(printf '%-32s %-5s %5ss' "$1" "$2" "$3")")
	case $2 in PASS | SKIP) ;; *) FAILED=1 ;; esac
}

finish() {
	local total=$(($(date +%s) - T0))
	section "Summary"
	printf '%s\n' "${SUMMARY[@]}"
	if [ "$FAILED" = 0 ]; then
		echo "vidx tests: ALL PASSED in ${total}s"
	else
		echo "vidx tests: FAILED (see above) after ${total}s"
	fi
	exit "$FAILED"
}

# shellcheck source=test/packages.sh
. "$ROOT/test/packages.sh"
vidx_need_packages run_all.sh "${VIDX_TEST_PACKAGES[@]}"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	vidx_need_packages run_all.sh "${VIDX_NODE_PACKAGES[@]}"
fi
for tool in pg_config pg_virtualenv pg_prove cmake make; do
	if ! command -v "$tool" >/dev/null; then
		echo "run_all.sh: '$tool' not found although the packages of test/packages.sh are installed" >&2
		exit 2
	fi
done
if [ "$(id -u)" != 0 ]; then
	echo "run_all.sh: warning: not root; 'make install' may fail" >&2
fi
echo "vidx test suite: $(pg_config --version), $(nproc) cores, repo $ROOT"

# 1. Core unit tests ----------------------------------------------------------
if [ "${VIDX_SKIP_UNIT:-0}" != 1 ]; then
	section "1/6 core unit tests (cmake + ctest)"
	t=$(date +%s)
	if cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
		cmake --build build -j2 &&
		ctest --test-dir build --output-on-failure; then
		record "core unit tests (ctest)" PASS $(($(date +%s) - t))
	else
		record "core unit tests (ctest)" FAIL $(($(date +%s) - t))
	fi
else
	record "core unit tests (ctest)" SKIP 0
fi

# 2. Build and install the extension --------------------------------------------
section "2/6 extension build and install (PGXS)"
t=$(date +%s)
if make -j2 && make install; then
	record "make && make install" PASS $(($(date +%s) - t))
else
	record "make && make install" FAIL $(($(date +%s) - t))
	echo "extension did not build: skipping the SQL tests"
	finish
fi
t=$(date +%s)
if bash test/pgvector.sh; then
	record "pgvector 0.8.6 (for vidx_pgvector)" PASS $(($(date +%s) - t))
else
	record "pgvector 0.8.6 (for vidx_pgvector)" FAIL $(($(date +%s) - t))
fi

# 3. Test data -------------------------------------------------------------------
section "3/6 test data (Fashion-MNIST subset, clustered sets -> $VIDX_TESTDATA)"
t=$(date +%s)
if "$PY" bench/fmnist.py export --rows "${VIDX_TEST_ROWS:-20000}" \
	--queries "${VIDX_TEST_QUERIES:-100}" --out "$VIDX_TESTDATA" &&
	"$PY" bench/datagen.py export --dim 64 --rows 20000 --spread 1.0 --out "$VIDX_TESTDATA" &&
	"$PY" bench/datagen.py export --dim 1536 --rows 10000 --spread 1.0 --out "$VIDX_TESTDATA"; then
	record "test data export" PASS $(($(date +%s) - t))
else
	record "test data export" FAIL $(($(date +%s) - t))
fi

# 4. SQL tests in one throw-away cluster -------------------------------------------
section "4/6 SQL tests in a throw-away cluster (pg_virtualenv)"
t=$(date +%s)
status_file=$(mktemp)
chmod 644 "$status_file"
if pg_virtualenv -t \
	-o shared_buffers=256MB \
	-o maintenance_work_mem=512MB \
	-o max_wal_size=4GB \
	-o log_min_messages=warning \
	bash "$ROOT/test/run_all.sh" --in-cluster "$status_file"; then
	:
fi
elapsed=$(($(date +%s) - t))
for step in installcheck installcheck_pgvector pg_prove node; do
	st=$(sed -n "s/^$step=//p" "$status_file" | tail -1)
	case $step in
	installcheck) label="make installcheck (regress+iso)" ;;
	installcheck_pgvector) label="vidx_pgvector installcheck" ;;
	pg_prove) label="pg_prove test/t (pgTAP)" ;;
	node) label="Node.js client (test/node)" ;;
	esac
	# a step that left no status line did not run (cluster failed to start?)
	if [ -n "$st" ]; then
		record "$label" "${st% *}" "${st#* }"
	else
		record "$label" FAIL "$elapsed"
	fi
done
rm -f "$status_file"

# 5. Sharding over postgres_fdw: 3 shard clusters + a coordinator on loopback ---------
if [ "${VIDX_SKIP_SHARD:-0}" != 1 ]; then
	section "5/6 sharding across servers (test/shard/run.sh)"
	t=$(date +%s)
	if bash test/shard/run.sh; then
		record "sharding (test/shard)" PASS $(($(date +%s) - t))
	else
		record "sharding (test/shard)" FAIL $(($(date +%s) - t))
	fi
else
	record "sharding (test/shard)" SKIP 0
fi

# 6. Robustness: crashes, replicas, restores, concurrency, bad input, fuzzing, security -----
if [ "${VIDX_ROBUST:-1}" != 0 ]; then
	section "6/6 robustness (test/run_robust.sh)"
	t=$(date +%s)
	if bash test/run_robust.sh; then
		record "robustness (test/robust)" PASS $(($(date +%s) - t))
	else
		record "robustness (test/robust)" FAIL $(($(date +%s) - t))
	fi
else
	record "robustness (test/robust)" SKIP 0
fi
finish
