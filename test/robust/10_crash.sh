#!/usr/bin/env bash
# 10_crash: kill -9 of the whole server (postmaster and every backend)
#   A. during CREATE INDEX (once in k-means, once later in the build: a
#      server-side 5 ms poll of pg_stat_progress_create_index; the build's
#      transaction waits for an advisory lock before it commits, so the kill
#      lands before the commit even if the poll misses a short phase),
#   B. during concurrent inserts and updates (4 clients),
#   C. during deletes with VACUUM running (VACUUM slowed by cost delay so the
#      kill lands inside it),
#   D. right after a CHECKPOINT with writes in flight.
# After each restart: every committed row (client-side journal) is in the table
# with its committed vector and found by an exact-recall index scan, no row is
# returned twice, every committed delete stays deleted, vidx_verify is true, and
# new inserts work. 64 dimensions.
source "$(dirname "$(readlink -f "$0")")/lib.sh"

NAME=rbst_crash
PORT=5440
DIMS=64
W=$(mktempdir)
JOURNAL=$W/journal
: >"$JOURNAL"
chmod 666 "$JOURNAL"

cluster_create $NAME $PORT shared_buffers=256MB maintenance_work_mem=512MB max_wal_size=2GB || exit 1
q $PORT "CREATE EXTENSION vidx"

restart_after_crash() { # restart_after_crash LABEL
	check "$1: server restarts after kill -9 (crash recovery)" cluster_start $NAME
	check "$1: recovery log shows crash recovery" grep -q "database system was interrupted\|not properly shut down" "$(pglog $NAME)"
}

checkall() { # checkall LABEL: exact-recall check of t against the journal
	local out
	out=$(robust_py check --port $PORT --table t --index t_v --dims $DIMS --journal "$JOURNAL" --queries 3 --sample 200 2>&1)
	echo "$out" | sed "s/^/# [$1] /"
	if echo "$out" | grep -q "^not ok"; then
		not_ok "$1: exact-recall check ($(echo "$out" | grep -c '^not ok') sub-checks failed)"
	else
		ok "$1: exact-recall check: $(echo "$out" | sed -n 's/^COUNTS //p')"
	fi
}

# wait_build(pattern, seconds): polls every 5 ms, in the server, until the build
# is in a phase matching pattern (returns it) or done and waiting for the
# advisory lock to commit (returns 'built, waiting to commit'); NULL on timeout.
q $PORT "CREATE FUNCTION wait_build(pattern text, seconds float8) RETURNS text LANGUAGE plpgsql AS \$\$
DECLARE
	t0 timestamptz := clock_timestamp();
	ph text;
BEGIN
	LOOP
		PERFORM pg_stat_clear_snapshot();
		SELECT phase INTO ph FROM pg_stat_progress_create_index WHERE phase ~ pattern;
		IF ph IS NOT NULL THEN
			RETURN ph;
		END IF;
		IF EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event = 'advisory'
				AND query ~ 'pg_advisory_xact_lock[(]4242[)]') THEN
			RETURN 'built, waiting to commit';
		END IF;
		IF clock_timestamp() - t0 > seconds * interval '1 second' THEN
			RETURN NULL;
		END IF;
		PERFORM pg_sleep(0.005);
	END LOOP;
END \$\$"
in_vacuum_phase() { [ "$(q $PORT "SELECT count(*) FROM pg_stat_progress_vacuum WHERE phase IN ('vacuuming indexes', 'vacuuming heap', 'cleaning up indexes')")" = 1 ]; }
journal_has() { [ "$(grep -c '^C' "$JOURNAL")" -ge "$1" ]; }

# ------------------------------------------------------------------ A. CREATE INDEX
log "A: loading 200000 x $DIMS rows into t_big"
q $PORT "CREATE TABLE t_big (id bigint PRIMARY KEY, v real[])"
q $PORT "SELECT setseed(0.25); INSERT INTO t_big SELECT i, ARRAY(SELECT (random() * 6 - 3 + 0 * i)::real FROM generate_series(1, $DIMS)) FROM generate_series(1, 200000) i" >/dev/null
q $PORT "CHECKPOINT"
for phase in "performing k-means" "assigning and encoding tuples|writing index pages"; do
	label="A[$phase]"
	log "$label: CREATE INDEX in the background, kill -9 in phase '$phase'"
	# a session holds advisory lock 4242 until the crash; the build's
	# transaction needs it to commit
	psql -X -q -h $SOCKDIR -p $PORT -U postgres -c "SELECT pg_advisory_lock(4242)" -c "SELECT pg_sleep(3600)" >/dev/null 2>&1 &
	BGPIDS+=($!)
	lock_held() { [ "$(q $PORT "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND granted")" = 1 ]; }
	wait_until 60 lock_held || echo "# the advisory lock was not taken"
	psql -X -q -h $SOCKDIR -p $PORT -U postgres -c "BEGIN" -c \
		"CREATE INDEX t_big_v ON t_big USING vidx (v) WITH (lists = 400, kmeans_iterations = 40)" \
		-c "SELECT pg_advisory_xact_lock(4242)" -c "COMMIT" >"$W/build.out" 2>&1 &
	BGPIDS+=($!)
	bpid=$!
	reached=$(q $PORT "SELECT wait_build('($phase)', 120)")
	if [ -n "$reached" ]; then
		ok "$label: the build reached the phase or finished without committing (kill -9 in: $reached)"
	else
		not_ok "$label: the build did not reach the phase within 120 s"
	fi
	cluster_crash $NAME
	wait $bpid 2>/dev/null
	restart_after_crash "$label"
	check_eq "$label: all 200000 committed rows of t_big are there" "$(q $PORT "SELECT count(*) FROM t_big")" 200000
	check_eq "$label: the interrupted index does not exist" "$(q $PORT "SELECT count(*) FROM pg_class WHERE relname = 't_big_v'")" 0
done
log "A: CREATE INDEX after the crashes"
check "A: CREATE INDEX succeeds after the crashes" q $PORT "CREATE INDEX t_big_v ON t_big USING vidx (v) WITH (lists = 200, kmeans_iterations = 5)"
out=$(robust_py check --port $PORT --table t_big --index t_big_v --dims $DIMS --queries 2 --sample 100 2>&1)
echo "$out" | sed 's/^/# [A] /'
if echo "$out" | grep -q "^not ok"; then not_ok "A: exact-recall check of t_big"; else ok "A: exact-recall check of t_big: $(echo "$out" | sed -n 's/^COUNTS //p')"; fi
# the sidecars of the killed builds are swept by the next build
orphans=$(q $PORT "SELECT count(*) FROM pg_ls_dir('vidx') f WHERE split_part(f, '_', 3) NOT IN (
	SELECT pg_relation_filenode(c.oid) || '.vsc' FROM pg_class c JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'vidx')")
check_eq "A: no sidecar of a killed build is left after the next build (orphan files)" "$orphans" 0
check "A: inserts into t_big work after the crashes" q $PORT "INSERT INTO t_big SELECT i, ARRAY(SELECT (random() * 6 - 3 + 0 * i)::real FROM generate_series(1, $DIMS)) FROM generate_series(200001, 200100) i"
check_eq "A: the new rows are found through the index" "$(q $PORT "SET enable_seqscan = off; SET vidx.probes = 1000000; SELECT count(*) FROM (SELECT id FROM t_big ORDER BY v <-> (SELECT v FROM t_big WHERE id = 200050) LIMIT 1) s WHERE id = 200050")" 1
q $PORT "DROP TABLE t_big"

# ------------------------------------------------------------------ B. inserts
log "B: t with 5000 rows and a vidx index; 4 writers insert and update"
q $PORT "CREATE TABLE t (id bigint PRIMARY KEY, v real[])"
robust_py writer --port $PORT --dims $DIMS --journal "$JOURNAL" --clients 4 --id-base 1000000 --max-ops 1250 --batch 50 >/dev/null
q $PORT "CREATE INDEX t_v ON t USING vidx (v) WITH (lists = 60)"
checkall "B-before"
robust_py writer --port $PORT --dims $DIMS --journal "$JOURNAL" --clients 4 --id-base 100000000 \
	--insert-weight 4 --update-weight 1 --batch 5 --seconds 300 --stop-on-loss >"$W/writer.B" 2>&1 &
wpid=$!
BGPIDS+=($wpid)
n0=$(grep -c '^C' "$JOURNAL")
if wait_until 120 journal_has $((n0 + 3000)); then
	ok "B: writers committed 3000 more operations before the kill"
else
	not_ok "B: writers too slow ($(($(grep -c '^C' "$JOURNAL") - n0)) operations in 120 s)"
fi
cluster_crash $NAME
wait $wpid
echo "# [B] writer: $(cat "$W/writer.B")"
check "B: the writers saw no SQL error (only the lost connection)" grep -q '"sql_errors": 0' "$W/writer.B"
restart_after_crash B
checkall B

# ------------------------------------------------------------------ C. deletes + VACUUM
log "C: delete a third of the rows, then VACUUM (slowed) while 2 writers delete and insert"
robust_py writer --port $PORT --dims $DIMS --journal "$JOURNAL" --clients 2 --id-base 200000000 \
	--insert-weight 1 --delete-weight 3 --batch 20 --max-ops 3000 >/dev/null
q $PORT "SELECT count(*) FROM t" >/dev/null
# a committed bulk DELETE, recorded in the journal once it returned
q $PORT "DELETE FROM t WHERE id % 3 = 0 AND id < 100000000 RETURNING 'C D ' || id || ' 0'" >"$W/bulkdelete"
cat "$W/bulkdelete" >>"$JOURNAL"
log "C: bulk DELETE of $(wc -l <"$W/bulkdelete") rows"
psql -X -q -h $SOCKDIR -p $PORT -U postgres -c "SET vacuum_cost_delay = 20" -c "SET vacuum_cost_limit = 1" -c "VACUUM (VERBOSE) t" >"$W/vacuum.out" 2>&1 &
vpid=$!
BGPIDS+=($vpid)
robust_py writer --port $PORT --dims $DIMS --journal "$JOURNAL" --clients 2 --id-base 300000000 \
	--insert-weight 1 --delete-weight 2 --batch 5 --seconds 300 --stop-on-loss >"$W/writer.C" 2>&1 &
wpid=$!
BGPIDS+=($wpid)
if wait_until 120 in_vacuum_phase; then
	ok "C: VACUUM is past the heap scan at the kill ($(q $PORT "SELECT phase FROM pg_stat_progress_vacuum"))"
else
	not_ok "C: VACUUM did not reach the index phase in 120 s ($(q $PORT "SELECT phase FROM pg_stat_progress_vacuum"))"
fi
cluster_crash $NAME
echo "# [C] VACUUM output: $(tr '\n' ' ' <"$W/vacuum.out" | cut -c1-300)"
wait $vpid $wpid 2>/dev/null
echo "# [C] writer: $(cat "$W/writer.C")"
check "C: the writers saw no SQL error" grep -q '"sql_errors": 0' "$W/writer.C"
restart_after_crash C
check_eq "C: the bulk DELETE (committed) stays done" "$(q $PORT "SELECT count(*) FROM t WHERE id % 3 = 0 AND id < 100000000")" 0
checkall C
check "C: VACUUM completes after the crash" q $PORT "VACUUM t"
checkall C-vacuumed

# ------------------------------------------------------------------ D. checkpoint
log "D: writers running; CHECKPOINT; kill -9 right after it returns"
robust_py writer --port $PORT --dims $DIMS --journal "$JOURNAL" --clients 4 --id-base 400000000 \
	--insert-weight 3 --update-weight 1 --delete-weight 1 --batch 5 --seconds 300 --stop-on-loss >"$W/writer.D" 2>&1 &
wpid=$!
BGPIDS+=($wpid)
n0=$(grep -c '^C' "$JOURNAL")
wait_until 120 journal_has $((n0 + 1000))
check "D: CHECKPOINT" q $PORT "CHECKPOINT"
cluster_crash $NAME
wait $wpid
echo "# [D] writer: $(cat "$W/writer.D")"
check "D: the writers saw no SQL error" grep -q '"sql_errors": 0' "$W/writer.D"
restart_after_crash D
checkall D

log "D2: kill -9 right after a CHECKPOINT with nothing in flight"
q $PORT "CHECKPOINT"
cluster_crash $NAME
restart_after_crash D2
checkall D2

# ------------------------------------------------------------------ after all
log "E: new writes after all the crashes"
robust_py writer --port $PORT --dims $DIMS --journal "$JOURNAL" --clients 2 --id-base 500000000 \
	--insert-weight 3 --update-weight 1 --delete-weight 1 --batch 5 --max-ops 1000 >"$W/writer.E" 2>&1
check "E: inserts, updates and deletes work (no SQL error)" grep -q '"sql_errors": 0' "$W/writer.E"
checkall E
check "E: REINDEX works" q $PORT "REINDEX INDEX t_v"
checkall E-reindexed
echo "# journal: $(grep -c '^C I' "$JOURNAL") inserts, $(grep -c '^C U' "$JOURNAL") updates, $(grep -c '^C D' "$JOURNAL") deletes committed; $(grep -c '^P' "$JOURNAL") sent"
# The kills take the postmaster first (cluster_crash), so they leave no
# "terminated by signal" line: any such line is a backend that crashed.
check "no backend died of a signal, no PANIC (log)" log_clean $NAME
finish
