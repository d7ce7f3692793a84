#!/usr/bin/env bash
# 87_slot_reuse: kill -9 of the whole server while sidecar slots are freed by
# VACUUM and taken again by inserts. 20,000 x 64 rows with a vidx index
# (next slot 20,000); half of them deleted (journaled), then
#   A. kill -9 while a cost-delayed VACUUM removes their postings and frees
#      their slots, once it has freed its first batch (of 4,096),
#   B. after a VACUUM, kill -9 while 2 writers insert (at most 2,000 rows,
#      fewer than the free slots, so every one takes a freed slot),
#   C. kill -9 while 2 writers insert and delete (at most 3,000 operations)
#      and a loop runs VACUUM every half second.
# After each restart: robust.py check (an all-leaves scan returns every row
# exactly once, every committed row of the journal holds its vector, every
# committed delete stays deleted, sampled rows find themselves, vidx_verify
# with the sidecar: every posting's record valid, no free slot listed twice,
# none held by a posting); free slots plus postings never exceed the next
# slot. No insert after the bulk delete needs a new slot: the next slot stays
# 20,000 (it would pass 20,000 + the rows inserted without reuse).
source "$(dirname "$(readlink -f "$0")")/lib.sh"

NAME=rbst_slotreuse
PORT=5458
DIMS=64
W=$(mktempdir)
JOURNAL=$W/journal
: >"$JOURNAL"
chmod 666 "$JOURNAL"

cluster_create $NAME $PORT shared_buffers=256MB autovacuum=off max_wal_size=2GB || exit 1
q $PORT "CREATE EXTENSION vidx"

restart_after_crash() { # restart_after_crash LABEL
	check "$1: server restarts after kill -9 (crash recovery)" cluster_start $NAME
	check "$1: recovery log shows crash recovery" grep -q "database system was interrupted\|not properly shut down" "$(pglog $NAME)"
}
checkall() { # checkall LABEL: exact-recall and journal check, verify with the sidecar; slot accounting
	local out
	out=$(robust_py check --port $PORT --table t --index t_v --dims $DIMS --journal "$JOURNAL" --queries 3 --sample 200 2>&1)
	echo "$out" | sed "s/^/# [$1] /"
	if echo "$out" | grep -q "^not ok"; then
		not_ok "$1: exact-recall check ($(echo "$out" | grep -c '^not ok') sub-checks failed)"
	else
		ok "$1: exact-recall check: $(echo "$out" | sed -n 's/^COUNTS //p')"
	fi
	check_eq "$1: free slots + postings <= next slot (no slot counted twice)" \
		"$(q $PORT "SELECT (s->'sidecar'->>'free_slots')::bigint + (s->>'postings')::bigint <= (s->'sidecar'->>'next_slot')::bigint FROM vidx_stats('t_v') s")" t
}
stat() { q $PORT "SELECT vidx_stats('t_v')->'sidecar'->>'$1'"; }
first_batch_freed() { [ "$(stat free_slots)" -gt 0 ]; }
journal_has() { [ "$(grep -c '^C' "$JOURNAL")" -ge "$1" ]; }

log "20000 x $DIMS rows, a vidx index, half of the rows deleted"
q $PORT "CREATE TABLE t (id bigint PRIMARY KEY, v real[])"
q $PORT "SELECT setseed(0.87); INSERT INTO t SELECT i, ARRAY(SELECT (random() * 6 - 3 + 0 * i)::real FROM generate_series(1, $DIMS)) FROM generate_series(1, 20000) i" >/dev/null
q $PORT "CREATE INDEX t_v ON t USING vidx (v) WITH (lists = 100)"
check_eq "next slot after the build" "$(stat next_slot)" 20000
q $PORT "DELETE FROM t WHERE id % 2 = 0 RETURNING 'C D ' || id || ' 0'" >>"$JOURNAL"
q $PORT "CHECKPOINT"

# ------------------------------------------------------------------ A. VACUUM frees
log "A: VACUUM (cost-delayed) removes 10000 postings; kill -9 once it freed its first batch of slots"
psql -X -q -h $SOCKDIR -p $PORT -U postgres -c "SET vacuum_cost_delay = 20" -c "SET vacuum_cost_limit = 1" -c "VACUUM t" >"$W/vacuum.A" 2>&1 &
vpid=$!
BGPIDS+=($vpid)
if wait_until 180 first_batch_freed; then
	ok "A: VACUUM freed its first batch of slots before the kill ($(stat free_slots) listed; phase at the kill: $(q $PORT "SELECT phase FROM pg_stat_progress_vacuum"))"
else
	not_ok "A: VACUUM freed no slot in 180 s ($(q $PORT "SELECT phase FROM pg_stat_progress_vacuum"))"
fi
cluster_crash $NAME
wait $vpid 2>/dev/null
restart_after_crash A
checkall A
check "A: VACUUM completes after the crash" q $PORT "VACUUM t"
checkall A-vacuumed
free0=$(stat free_slots)
check "A: the slots of the deleted rows are free ($free0 of 10000; a crash leaks at most the batch in progress)" test "$free0" -ge 5000

# ------------------------------------------------------------------ B. inserts take them
log "B: 2 writers insert (at most 2000 rows), kill -9 while they run"
robust_py writer --port $PORT --dims $DIMS --journal "$JOURNAL" --clients 2 --id-base 100000000 \
	--insert-weight 1 --batch 5 --max-ops 1000 --stop-on-loss >"$W/writer.B" 2>&1 &
wpid=$!
BGPIDS+=($wpid)
n0=$(grep -c '^C' "$JOURNAL")
wait_until 120 journal_has $((n0 + 500)) || echo "# B: the writers committed fewer than 500 rows in 120 s"
cluster_crash $NAME
wait $wpid
echo "# [B] writer: $(cat "$W/writer.B")"
check "B: the writers saw no SQL error" grep -q '"sql_errors": 0' "$W/writer.B"
restart_after_crash B
checkall B
check_eq "B: the inserts took freed slots: next slot" "$(stat next_slot)" 20000
check "B: fewer free slots than before ($(stat free_slots) < $free0)" test "$(stat free_slots)" -lt "$free0"

# ------------------------------------------------------------------ C. churn
log "C: 2 writers insert and delete (at most 3000 operations), VACUUM every 0.5 s; kill -9"
(while :; do psql -X -q -h $SOCKDIR -p $PORT -U postgres -c "VACUUM t" >/dev/null 2>&1; sleep 0.5; done) &
lpid=$!
BGPIDS+=($lpid)
robust_py writer --port $PORT --dims $DIMS --journal "$JOURNAL" --clients 2 --id-base 200000000 \
	--insert-weight 1 --delete-weight 1 --batch 5 --max-ops 1500 --stop-on-loss >"$W/writer.C" 2>&1 &
wpid=$!
BGPIDS+=($wpid)
n0=$(grep -c '^C' "$JOURNAL")
wait_until 120 journal_has $((n0 + 1500)) || echo "# C: the writers committed fewer than 1500 operations in 120 s"
cluster_crash $NAME
kill "$lpid" 2>/dev/null
wait "$lpid" 2>/dev/null
wait $wpid
echo "# [C] writer: $(cat "$W/writer.C")"
check "C: the writers saw no SQL error" grep -q '"sql_errors": 0' "$W/writer.C"
restart_after_crash C
checkall C
check "C: VACUUM after the crash" q $PORT "VACUUM t"
checkall C-vacuumed
check_eq "C: no insert since the bulk delete needed a new slot: next slot" "$(stat next_slot)" 20000
check_eq "C: sidecar state" "$(stat state)" ok
check_eq "C: postings without a record" "$(stat postings_without_record)" 0

log "D: REINDEX"
check "D: REINDEX" q $PORT "REINDEX INDEX t_v"
check_eq "D: after REINDEX no free slot" "$(stat free_slots)" 0
checkall D
echo "# journal: $(grep -c '^C I' "$JOURNAL") inserts, $(grep -c '^C D' "$JOURNAL") deletes committed; $(grep -c '^P' "$JOURNAL") sent"
check "no backend died of a signal, no PANIC (log)" log_clean $NAME
finish
