#!/usr/bin/env bash
# 55_build_sync: CREATE INDEX makes its sidecar durable before it commits: the
# building backend, watched with strace, fsyncs the new sidecar file and the
# vidx/ directory that holds its name (otherwise a power loss after the commit
# could lose records the index's postings point to; the index is WAL-logged,
# the sidecar is not). The build waits on an advisory lock until strace is
# attached, so nothing depends on timing.
source "$(dirname "$(readlink -f "$0")")/lib.sh"

NAME=rbst_sync
PORT=5459
W=$(mktempdir)

# strace needs ptrace; where the machine forbids it, say so and stop.
if ! strace -f -e trace=none -o /dev/null true 2>/dev/null; then
	not_ok "strace cannot trace here (ptrace not permitted): the build's fsync calls cannot be watched"
	finish
	exit $?
fi

cluster_create $NAME $PORT fsync=on || exit 1
q $PORT "CREATE EXTENSION vidx; CREATE TABLE t (id int, v real[]);
	SELECT setseed(0.55);
	INSERT INTO t SELECT i, ARRAY(SELECT random()::real FROM generate_series(1, 32) WHERE i > 0) FROM generate_series(1, 5000) i" || exit 1

advisory_locks() { # advisory_locks GRANTED(true|false) WANT: that many such locks
	test "$(q $PORT "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted = $1")" = "$2"
}

# Holder: takes the lock, keeps it until $W/go exists.
psql -X -q -At -h "$SOCKDIR" -p $PORT -U postgres -c "SELECT pg_advisory_lock(55)" \
	-c "\\! while [ ! -e $W/go ]; do sleep 0.1; done" >/dev/null 2>&1 &
BGPIDS+=($!)
wait_until 60 advisory_locks true 1 ||
	not_ok "the holder took the lock"
# Builder: waits for the lock, then builds.
psql -X -q -At -h "$SOCKDIR" -p $PORT -U postgres -c "SELECT pg_advisory_lock(55)" \
	-c "CREATE INDEX t_v ON t USING vidx (v)" >"$W/build.out" 2>&1 &
builder=$!
BGPIDS+=($builder)
wait_until 60 advisory_locks false 1 ||
	not_ok "the builder waits for the lock"
pid=$(q $PORT "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
strace -f -y -e trace=fsync,fdatasync -o "$W/strace.out" -p "$pid" 2>"$W/strace.err" &
BGPIDS+=($!)
tracer=$!
wait_until 60 grep -q "attached" "$W/strace.err" || not_ok "strace attached to the builder ($pid)"
touch "$W/go"
wait $builder
rc=$?
check_eq "CREATE INDEX succeeded (psql exit status; output: $(tr '\n' ' ' <"$W/build.out"))" $rc 0
check_eq "the index is ok" "$(q $PORT "SELECT vidx_verify('t_v')")" t
sidecar=$(q $PORT "SELECT current_setting('data_directory') || '/' || (vidx_stats('t_v')->'sidecar'->>'file')")
kill "$tracer" 2>/dev/null
wait "$tracer" 2>/dev/null
echo "# fsync calls of the builder ($pid):"
sed 's/^/#   /' "$W/strace.out"
if grep -qE "^$pid +f(data)?sync\([0-9]+<$sidecar>\) += 0" "$W/strace.out"; then
	ok "the build fsynced its sidecar ($sidecar)"
else
	not_ok "the build fsynced its sidecar ($sidecar)"
fi
if grep -qE "^$pid +f(data)?sync\([0-9]+<$(dirname "$sidecar")>\) += 0" "$W/strace.out"; then
	ok "the build fsynced the sidecar's directory"
else
	not_ok "the build fsynced the sidecar's directory"
fi
check "server log clean" log_clean $NAME
finish
