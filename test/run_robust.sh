#!/usr/bin/env bash
# vidx robustness suite (issue 5): crashes, replicas, restores, concurrency,
# bad input, fuzzing, security, format version. Run as root from anywhere:
#
#   test/run_robust.sh                 # all tests in test/robust/
#   test/run_robust.sh 10_crash 20_replica   # only these
#
# Each test/robust/NN_*.sh starts and removes its own PostgreSQL clusters
# (pg_createcluster, ports 5440-5459 and 5464-5469) and exits non-zero if a check failed.
# Expects the extension to be built and installed (test/run_all.sh does it);
# VIDX_ROBUST_BUILD=1 runs `make -j2 && make install` first. Logs go to
# build/robust/<test>.log (server logs of failed tests beside them).
#
# Prints one PASS/FAIL line per test, then "N passed, M failed"; exits non-zero
# if any test failed.
#
# Environment: VIDX_ROBUST_TIMEOUT=900 seconds per test;
#   VIDX_CONCURRENCY_SECONDS=180 pgbench duration of 30_concurrency;
#   VIDX_FUZZ_SECONDS=45 seconds per fuzz target of 70_fuzz.
set -uo pipefail

cd "$(dirname "$(readlink -f "$0")")/.."
ROOT=$PWD
LOGDIR=$ROOT/build/robust
mkdir -p "$LOGDIR"

if [ "$(id -u)" != 0 ]; then
	echo "run_robust.sh: must run as root (clusters are made with pg_createcluster)" >&2
	exit 2
fi
for tool in pg_createcluster pg_ctlcluster pg_dropcluster pg_basebackup pgbench psql; do
	command -v "$tool" >/dev/null || { echo "run_robust.sh: '$tool' not found" >&2; exit 2; }
done

if [ "${VIDX_ROBUST_BUILD:-0}" = 1 ]; then
	make -j2 >"$LOGDIR/build.log" 2>&1 && make install >>"$LOGDIR/build.log" 2>&1 ||
		{ echo "run_robust.sh: build failed, see $LOGDIR/build.log" >&2; exit 2; }
fi

if [ $# -gt 0 ]; then
	tests=()
	for t in "$@"; do tests+=("test/robust/${t%.sh}.sh"); done
else
	tests=(test/robust/[0-9][0-9]_*.sh)
fi

T0=$(date +%s)
passed=0
failed=0
for t in "${tests[@]}"; do
	name=$(basename "$t" .sh)
	log=$LOGDIR/$name.log
	keep=$LOGDIR/$name.serverlogs
	rm -rf "$keep"
	mkdir -p "$keep"
	chmod 777 "$keep"
	t1=$(date +%s)
	# timeout signals its whole process group (the test and what it started);
	# the test's EXIT trap then drops its clusters
	ROBUST_KEEP_LOGS=$keep timeout -k 60 "${VIDX_ROBUST_TIMEOUT:-900}" bash "$t" >"$log" 2>&1 </dev/null
	rc=$?
	secs=$(($(date +%s) - t1))
	nok=$(grep -c '^ok - ' "$log")
	nbad=$(grep '^not ok - ' "$log" | grep -vc '# TODO')
	ntodo=$(grep -c '# TODO' "$log")
	summary="$nok/$((nok + nbad))"
	[ "$ntodo" != 0 ] && summary="$summary, $ntodo known bugs TODO"
	if [ $rc = 0 ]; then
		passed=$((passed + 1))
		printf 'PASS %-20s %4ss  (%s checks)\n' "$name" "$secs" "$summary"
		rm -rf "$keep"
	else
		failed=$((failed + 1))
		[ $rc = 124 ] && echo "# $name: timed out after ${VIDX_ROBUST_TIMEOUT:-900}s" >>"$log"
		printf 'FAIL %-20s %4ss  (%s checks, exit %s; log %s)\n' "$name" "$secs" "$summary" "$rc" "$log"
		grep -E '^not ok|timed out' "$log" | head -20 | sed 's/^/     /'
	fi
done
echo "total $(($(date +%s) - T0))s"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
