# test/robust/lib.sh: helpers shared by the robustness tests (sourced, bash).
#
# Each test makes its own clusters (pg_createcluster, ports 5440-5459 and 5464-5469 only),
# registers them for removal on every exit path (trap), prints one line per
# check ("ok - ..." / "not ok - ...") and exits non-zero if any check failed.
# Servers run as the postgres OS user; this script runs as root.

set -uo pipefail

PGVER=15
PGBIN=/usr/lib/postgresql/$PGVER/bin
PY=/usr/bin/python3
ROBUST_DIR=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
ROOT=$(readlink -f "$ROBUST_DIR/../..")
SOCKDIR=/var/run/postgresql
export PYTHONPATH="$ROBUST_DIR${PYTHONPATH:+:$PYTHONPATH}"
export PGCONNECT_TIMEOUT=30

CHECKS_OK=0
CHECKS_FAILED=0
CLUSTERS=()
BGPIDS=()
TMPDIRS=()

log() { echo "# $(date +%H:%M:%S) $*"; }

ok() { # ok DESCRIPTION  (a passed check)
	CHECKS_OK=$((CHECKS_OK + 1))
	echo "ok - $*"
}

not_ok() { # not_ok DESCRIPTION
	CHECKS_FAILED=$((CHECKS_FAILED + 1))
	echo "not ok - $*"
}

check() { # check DESCRIPTION COMMAND...: passes if COMMAND succeeds
	local desc=${1//$'\n'/ }
	shift
	if "$@"; then ok "$desc"; else not_ok "$desc"; fi
}

check_eq() { # check_eq DESCRIPTION GOT WANT
	if [ "$2" = "$3" ]; then
		ok "$1 ($2)"
	else
		not_ok "$1: got '$2', want '$3'"
	fi
}

CHECKS_TODO=0
todo() { # todo DESCRIPTION COMMAND...: a check of a known, reported bug: printed, not counted as a failure
	local desc=${1//$'\n'/ }
	shift
	CHECKS_TODO=$((CHECKS_TODO + 1))
	if "$@"; then echo "ok - $desc # TODO known bug now passes: make it a check"; else echo "not ok - $desc # TODO known bug"; fi
}

finish() {
	echo "# checks: $CHECKS_OK passed, $CHECKS_FAILED failed, $CHECKS_TODO known bugs (TODO)"
	[ "$CHECKS_FAILED" = 0 ] && [ "$CHECKS_OK" -gt 0 ]
}

pgdata() { echo "/var/lib/postgresql/$PGVER/$1"; }
pglog() { echo "/var/log/postgresql/postgresql-$PGVER-$1.log"; }

# All processes of a cluster: the postmaster and its children (by PID).
cluster_pids() {
	local pidfile pm
	pidfile="$(pgdata "$1")/postmaster.pid"
	[ -f "$pidfile" ] || return 0
	pm=$(head -1 "$pidfile" 2>/dev/null)
	[ -n "$pm" ] && kill -0 "$pm" 2>/dev/null || return 0
	echo "$pm"
	pgrep -P "$pm" || true
}

# Removes a cluster whatever its state (processes killed by PID first).
cluster_remove() {
	local name=$1 pids
	[ -d "/etc/postgresql/$PGVER/$name" ] || [ -d "$(pgdata "$name")" ] || return 0
	pg_ctlcluster "$PGVER" "$name" stop -m immediate >/dev/null 2>&1 || true
	pids=$(cluster_pids "$name")
	# shellcheck disable=SC2086
	[ -n "$pids" ] && kill -9 $pids 2>/dev/null
	pg_dropcluster --stop "$PGVER" "$name" >/dev/null 2>&1 || true
	rm -rf "$(pgdata "$name")" "/etc/postgresql/$PGVER/$name"
	rm -f "$(pglog "$name")"
}

cleanup() {
	local rc=$? p c d
	for p in "${BGPIDS[@]}"; do
		kill -9 "$p" 2>/dev/null || true
	done
	for c in "${CLUSTERS[@]}"; do
		if [ "${ROBUST_KEEP_LOGS:-}" != "" ] && [ -f "$(pglog "$c")" ]; then
			cp "$(pglog "$c")" "$ROBUST_KEEP_LOGS/$c.log" 2>/dev/null || true
		fi
		cluster_remove "$c"
	done
	for d in "${TMPDIRS[@]}"; do
		rm -rf "$d"
	done
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mktempdir() { # a temporary directory readable by postgres, removed at exit
	local d
	d=$(mktemp -d /tmp/vidx_robust.XXXXXX)
	chmod 755 "$d"
	TMPDIRS+=("$d")
	echo "$d"
}

# cluster_create NAME PORT [guc=value ...]: creates and starts a cluster; the
# settings are written verbatim (quote strings yourself) to conf.d/robust.conf.
# INITDB_OPTS (e.g. --data-checksums) go to initdb.
cluster_create() {
	local name=$1 port=$2 conf
	shift 2
	cluster_remove "$name" # leftover of an interrupted run
	CLUSTERS+=("$name")
	pg_createcluster "$PGVER" "$name" -p "$port" --start-conf=manual -- -A trust ${INITDB_OPTS:-} >/dev/null || return 1
	conf="/etc/postgresql/$PGVER/$name/conf.d/robust.conf"
	{
		echo "listen_addresses = '127.0.0.1'"
		echo "max_connections = 40"
		echo "log_line_prefix = '%m [%p] %q%u@%d '"
		printf '%s\n' "$@"
	} >"$conf"
	cluster_start "$name"
}

# standby_create LABEL PRIMARY_PORT NAME PORT: a hot standby of the primary by
# pg_basebackup -R (streaming), registered for removal and started; two checks,
# their descriptions prefixed by LABEL.
standby_create() {
	local label=$1 primary=$2 name=$3 port=$4 dir
	CLUSTERS+=("$name")
	cluster_remove "$name"
	pg_createcluster "$PGVER" "$name" -p "$port" --start-conf=manual -- -A trust >/dev/null
	dir=$(pgdata "$name")
	rm -rf "$dir"
	install -d -o postgres -g postgres -m 700 "$dir"
	check "${label}pg_basebackup -R -X stream from the primary" \
		runuser -u postgres -- pg_basebackup -h "$SOCKDIR" -p "$primary" -U postgres -D "$dir" -R -X stream -c fast
	echo "hot_standby = on" >"/etc/postgresql/$PGVER/$name/conf.d/robust.conf"
	echo "listen_addresses = '127.0.0.1'" >>"/etc/postgresql/$PGVER/$name/conf.d/robust.conf"
	check "${label}the standby starts" cluster_start "$name"
}

cluster_start() {
	pg_ctlcluster "$PGVER" "$1" start -- -t 300 >/dev/null || {
		echo "# could not start cluster $1; log tail:"
		tail -20 "$(pglog "$1")" | sed 's/^/#   /'
		return 1
	}
}

cluster_stop() { pg_ctlcluster "$PGVER" "$1" stop -m fast -- -t 300 >/dev/null; }

# kill -9 of the postmaster and of every child process (a crash of the whole
# server); waits until all are gone.
cluster_crash() {
	local name=$1 pids p i
	pids=$(cluster_pids "$name")
	[ -n "$pids" ] || { echo "# cluster $name has no running postmaster"; return 1; }
	# shellcheck disable=SC2086
	kill -9 $pids 2>/dev/null
	for i in $(seq 1 300); do
		local alive=0
		for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
		[ $alive = 0 ] && return 0
		sleep 0.1
	done
	echo "# processes of $name still alive after kill -9: $pids"
	return 1
}

# psql as postgres over the Unix socket; -At, stop on error. q PORT [DB] SQL
q() {
	local port=$1 db=postgres
	if [ $# -ge 3 ]; then db=$2; shift; fi
	psql -X -q -At -v ON_ERROR_STOP=1 -h "$SOCKDIR" -p "$port" -U postgres -d "$db" -c "$2"
}

# wait_until TIMEOUT_SECONDS COMMAND...: polls every 0.2 s; false on timeout.
wait_until() {
	local deadline=$(($(date +%s) + $1))
	shift
	while ! "$@" >/dev/null 2>&1; do
		[ "$(date +%s)" -ge "$deadline" ] && return 1
		sleep 0.2
	done
}

# vacuum_settled PORT TABLE INDEX: VACUUMs TABLE until one VACUUM merges no
# leaves (at most 4 times), then prints the chains still awaiting freeing
# ("still-merging" if all 4 merged). A chain is freed by a VACUUM once an xid
# later than the split or merge that replaced it has completed: one is taken
# before each VACUUM. The chains a VACUUM's own merges replace can only be
# freed by a later VACUUM, so the count is read after one that merged nothing.
# Autovacuum of TABLE is switched off first, so that no other VACUUM merges
# in between.
vacuum_settled() {
	local port=$1 table=$2 index=$3 i m0 m1
	q "$port" "ALTER TABLE $table SET (autovacuum_enabled = off)" || return 1
	for i in 1 2 3 4; do
		m0=$(q "$port" "SELECT (vidx_stats('$index')->>'merges')::int") || return 1
		q "$port" "SELECT txid_current()" >/dev/null || return 1
		q "$port" "VACUUM $table" || return 1
		m1=$(q "$port" "SELECT (vidx_stats('$index')->>'merges')::int") || return 1
		if [ "$m1" = "$m0" ]; then
			q "$port" "SELECT vidx_stats('$index')->>'replaced_awaiting_free'"
			return 0
		fi
	done
	echo "still-merging"
}

# No backend died of a signal and no PANIC in a cluster's log.
log_clean() {
	local f
	f=$(pglog "$1")
	! grep -E "terminated by signal|PANIC|TRAP:|was terminated by exception" "$f"
}

robust_py() { "$PY" "$ROBUST_DIR/robust.py" "$@"; }
