#!/usr/bin/env bash
# 30_concurrency: pgbench with 8 clients mixing inserts, updates, deletes and
# k-NN queries (plain and filtered) for VIDX_CONCURRENCY_SECONDS (default 180),
# plus 2 journaled writers (robust.py writer), while VACUUM runs in a loop and
# autovacuum is on. Checked: pgbench finishes in time (no deadlock or hang)
# with no failed transaction, the writers see no SQL error, the server log has
# no ERROR, and at the end every row of the table (and every committed row of
# the journal) is returned by exact-recall index scans; vidx_verify is true.
source "$(dirname "$(readlink -f "$0")")/lib.sh"

NAME=rbst_conc
PORT=5443
DIMS=48
SECS=${VIDX_CONCURRENCY_SECONDS:-180}
W=$(mktempdir)
JOURNAL=$W/journal
: >"$JOURNAL"

cluster_create $NAME $PORT shared_buffers=128MB autovacuum_naptime=5s \
	log_lock_waits=on deadlock_timeout=1s || exit 1
q $PORT "CREATE EXTENSION vidx; CREATE TABLE t (id bigserial PRIMARY KEY, v real[])"
q $PORT "INSERT INTO t (v) SELECT ARRAY(SELECT (random() * 6 - 3 + 0 * i)::real FROM generate_series(1, $DIMS)) FROM generate_series(1, 20000) i"
q $PORT "CREATE INDEX t_v ON t USING vidx (v) WITH (lists = 100)"
log "t: $(q $PORT "SELECT count(*) FROM t") rows, index built; pgbench 8 clients for ${SECS}s"

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
	--insert-weight 3 --update-weight 2 --delete-weight 1 --batch 3 --seconds "$SECS" >"$W/writer" 2>&1 &
wpid=$!
BGPIDS+=($wpid)

B=$ROBUST_DIR/pgbench
PGOPTIONS="-c enable_seqscan=off -c statement_timeout=120s" timeout $((SECS + 180)) \
	pgbench -n -h $SOCKDIR -p $PORT -U postgres -c 8 -j 2 -T "$SECS" \
	-f "$B/insert.sql@4" -f "$B/update.sql@2" -f "$B/delete.sql@1" \
	-f "$B/knn.sql@3" -f "$B/knn_filtered.sql@1" postgres >"$W/pgbench.out" 2>&1
rc=$?
sed 's/^/# [pgbench] /' "$W/pgbench.out" | grep -v "^# \[pgbench\]  *[0-9.]* *[0-9]*  *[0-9]* *$" | head -40
if [ $rc = 124 ]; then
	not_ok "pgbench did not finish within ${SECS}+180 s (deadlock or hang?)"
	q $PORT "SELECT pid, state, wait_event_type, wait_event, left(query, 80) FROM pg_stat_activity WHERE backend_type = 'client backend'" | sed 's/^/# /'
else
	check_eq "pgbench exits 0" "$rc" 0
fi
wait $wpid
wait $vpid
check_eq "pgbench: failed transactions" "$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$W/pgbench.out")" 0
check "pgbench: no client aborted" bash -c "! grep -q 'aborted' $W/pgbench.out"
echo "# [writer] $(cat "$W/writer")"
check "journaled writers: no SQL error" grep -q '"sql_errors": 0' "$W/writer"
read -r vn ve <"$W/vacuum.result"
check_eq "VACUUM loop: $vn VACUUMs, errors" "$ve" 0
# (a manual VACUUM cancels a running autovacuum of the table: expected)
errs=$(grep "ERROR\|deadlock detected" "$(pglog $NAME)" | grep -vc "canceling autovacuum task")
check_eq "server log: ERROR lines (other than canceled autovacuums)" "$errs" 0
[ "$errs" != 0 ] && grep "ERROR" "$(pglog $NAME)" | grep -v "canceling autovacuum task" | head -5 | sed 's/^/# /'
check "server log: no backend died" log_clean $NAME
log "autovacuum runs on t: $(q $PORT "SELECT autovacuum_count FROM pg_stat_user_tables WHERE relname = 't'")"

out=$(robust_py check --port $PORT --index t_v --dims $DIMS --journal "$JOURNAL" --queries 3 --sample 300 2>&1)
echo "$out" | sed 's/^/# [end] /'
if echo "$out" | grep -q "^not ok"; then not_ok "end: exact-recall check"; else ok "end: exact-recall check: $(echo "$out" | sed -n 's/^COUNTS //p')"; fi
check "end: VACUUM" q $PORT "VACUUM t"
out=$(robust_py check --port $PORT --index t_v --dims $DIMS --journal "$JOURNAL" --queries 2 --sample 100 2>&1)
if echo "$out" | grep -q "^not ok"; then echo "$out" | sed 's/^/# [vacuumed] /'; not_ok "end+VACUUM: exact-recall check"; else ok "end+VACUUM: exact-recall check: $(echo "$out" | sed -n 's/^COUNTS //p')"; fi
finish
