#!/usr/bin/env bash
# 32_split_load: leaf splits under load. An index created on an empty table
# grows by splits while pgbench (6 clients: inserts, deletes, k-NN, filtered
# k-NN), 2 journaled writers, VACUUM every 3 s and a scan checker run for
# VIDX_SPLIT_LOAD_SECONDS (90). The scan checker's scans (robust.py
# scan-check: all leaves; probes 1 in relaxed order; probes 1-10 with a LIMIT;
# the last two paused 0.3 s after their first rows, so that their later rounds
# read leaves split and chains freed meanwhile) must each return a row at most
# once, in non-decreasing distance (strict order is a guarantee of the scan),
# and those without a LIMIT exactly the rows a sequential scan of the same
# snapshot sees.
# Afterwards: no failed transaction, no ERROR in the server log, exact recall
# against the journal (every committed row found exactly once), vidx_verify,
# before and after a final VACUUM. 48 dimensions.
source "$(dirname "$(readlink -f "$0")")/lib.sh"

NAME=rbst_splitload
PORT=5450
DIMS=48
SECS=${VIDX_SPLIT_LOAD_SECONDS:-90}
W=$(mktempdir)
JOURNAL=$W/journal
: >"$JOURNAL"

cluster_create $NAME $PORT shared_buffers=128MB autovacuum_naptime=5s log_lock_waits=on deadlock_timeout=1s || exit 1
q $PORT "CREATE EXTENSION vidx; CREATE TABLE t (id bigserial PRIMARY KEY, v real[]); CREATE INDEX t_v ON t USING vidx (v)"
q $PORT "INSERT INTO t (v) SELECT ARRAY(SELECT (random() * 6 - 3 + 0 * i)::real FROM generate_series(1, $DIMS)) FROM generate_series(1, 2000) i"
s0=$(q $PORT "SELECT (vidx_stats('t_v')->>'splits')::int")
log "t: 2000 rows, index built empty ($s0 splits so far); load for ${SECS}s"

vacuum_loop() {
	local n=0 e=0 end=$(($(date +%s) + SECS))
	while [ "$(date +%s)" -lt "$end" ]; do
		if q $PORT "VACUUM t" >/dev/null 2>>"$W/vacuum.err"; then n=$((n + 1)); else e=$((e + 1)); fi
		sleep 3
	done
	echo "$n $e" >"$W/vacuum.result"
}
vacuum_loop &
vpid=$!
BGPIDS+=($vpid)
robust_py writer --port $PORT --dims $DIMS --journal "$JOURNAL" --clients 2 --id-base 100000000 \
	--insert-weight 3 --update-weight 1 --delete-weight 1 --batch 3 --seconds "$SECS" >"$W/writer" 2>&1 &
wpid=$!
BGPIDS+=($wpid)
robust_py scan-check --port $PORT --dims $DIMS --seconds "$SECS" >"$W/scans" 2>&1 &
spid=$!
BGPIDS+=($spid)

B=$ROBUST_DIR/pgbench
PGOPTIONS="-c enable_seqscan=off -c statement_timeout=120s" timeout $((SECS + 180)) \
	pgbench -n -h $SOCKDIR -p $PORT -U postgres -c 6 -j 2 -T "$SECS" \
	-f "$B/insert.sql@6" -f "$B/delete.sql@1" -f "$B/knn.sql@2" -f "$B/knn_filtered.sql@1" postgres >"$W/pgbench.out" 2>&1
rc=$?
sed 's/^/# [pgbench] /' "$W/pgbench.out" | grep -v "^# \[pgbench\]  *[0-9.]* *[0-9]*  *[0-9]* *$" | head -30
if [ $rc = 124 ]; then
	not_ok "pgbench did not finish within ${SECS}+180 s (deadlock or hang?)"
	q $PORT "SELECT pid, state, wait_event_type, wait_event, left(query, 80) FROM pg_stat_activity WHERE backend_type = 'client backend'" | sed 's/^/# /'
else
	check_eq "pgbench exits 0" "$rc" 0
fi
wait $wpid
wait $vpid
wait $spid
src=$?
check_eq "pgbench: failed transactions" "$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$W/pgbench.out")" 0
check "pgbench: no client aborted" bash -c "! grep -q 'aborted' $W/pgbench.out"
echo "# [writer] $(cat "$W/writer")"
check "journaled writers: no SQL error" grep -q '"sql_errors": 0' "$W/writer"
read -r vn ve <"$W/vacuum.result"
check_eq "VACUUM loop: $vn VACUUMs, errors" "$ve" 0
s1=$(q $PORT "SELECT (vidx_stats('t_v')->>'splits')::int")
check "leaves split during the load ($s0 -> $s1 splits)" test "$s1" -ge $((s0 + 20))
echo "# [scans] $(cat "$W/scans")"
check_eq "scans during the splits: each row at most once, in order, full probes exact (scan-check exit)" "$src" 0
check "scans during the splits: some returned every row" grep -q '"complete_scans": [1-9]' "$W/scans"
# (a manual VACUUM cancels a running autovacuum of the table: expected)
errs=$(grep "ERROR\|deadlock detected" "$(pglog $NAME)" | grep -vc "canceling autovacuum task")
check_eq "server log: ERROR lines (other than canceled autovacuums)" "$errs" 0
[ "$errs" != 0 ] && grep "ERROR" "$(pglog $NAME)" | grep -v "canceling autovacuum task" | head -5 | sed 's/^/# /'
check "server log: no backend died" log_clean $NAME

out=$(robust_py check --port $PORT --index t_v --dims $DIMS --journal "$JOURNAL" --queries 3 --sample 200 2>&1)
echo "$out" | sed 's/^/# [end] /'
if echo "$out" | grep -q "^not ok"; then not_ok "end: exact-recall check"; else ok "end: exact-recall check, vidx_verify: $(echo "$out" | sed -n 's/^COUNTS //p')"; fi
# (VACUUMs until one merges nothing: the chains a VACUUM's own merges replace
# are freed by the next one; see vacuum_settled in lib.sh)
check_eq "end: VACUUM freed every replaced chain" "$(vacuum_settled $PORT t t_v)" 0
out=$(robust_py check --port $PORT --index t_v --dims $DIMS --journal "$JOURNAL" --queries 2 --sample 100 2>&1)
if echo "$out" | grep -q "^not ok"; then echo "$out" | sed 's/^/# [vacuumed] /'; not_ok "end+VACUUM: exact-recall check"; else ok "end+VACUUM: exact-recall check, vidx_verify: $(echo "$out" | sed -n 's/^COUNTS //p')"; fi
finish
