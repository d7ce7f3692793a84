#!/usr/bin/env bash
# 12_split_crash: crashes during leaf splits (docs/growth.md), on an index
# created on an empty table that grows by splits. 32 dimensions.
#   A. For each point between a split's WAL records (vidx.debug_split:
#      crash_after_chains, crash_after_tree, crash_after_publish), with 2
#      journaled writers inserting, updating and deleting: a session with the
#      setting inserts rows into one leaf until its split kills its backend
#      (SIGKILL after flushing the WAL) and the postmaster restarts the server
#      through crash recovery. Then: the index's pages show the split cut
#      short at that point (new chains, new tree, or the old tree not freed);
#      exact-recall + journal check, vidx_verify; another split before VACUUM
#      (it hands the same leaf ids and tree version out again), checked the
#      same way; VACUUM frees those pages,
#      and the check passes again; inserts split that leaf again.
#   B. kill -9 of the whole server 3 times while 4 writers insert into a table
#      whose index was created empty (splits all the time); after each
#      restart the exact-recall + journal check and vidx_verify.
source "$(dirname "$(readlink -f "$0")")/lib.sh"

NAME=rbst_splitcrash
PORT=5449
DIMS=32
W=$(mktempdir)
JOURNAL=$W/journal
: >"$JOURNAL"

# autovacuum off: the pages a crash leaves must still be there when checked
cluster_create $NAME $PORT shared_buffers=128MB autovacuum=off || exit 1
q $PORT "CREATE EXTENSION vidx"

journal_has() { [ "$(grep -c '^C' "$1")" -ge "$2" ]; }
splits_above() { [ "$(q $PORT "SELECT (vidx_stats('$1')->>'splits')::int")" -gt "$2" ]; }
accepting() { q $PORT "SELECT 1" >/dev/null 2>&1; }

checkall() { # checkall LABEL TABLE JOURNAL: exact-recall check of TABLE against the journal
	local out
	out=$(robust_py check --port $PORT --table "$2" --index "$2_v" --dims $DIMS --journal "$3" --queries 2 --sample 100 2>&1)
	echo "$out" | sed "s/^/# [$1] /"
	if echo "$out" | grep -q "^not ok"; then
		not_ok "$1: exact-recall check ($(echo "$out" | grep -c '^not ok') sub-checks failed)"
	else
		ok "$1: exact-recall check, vidx_verify: $(echo "$out" | sed -n 's/^COUNTS //p')"
	fi
}

pages() { robust_py pages --port $PORT --index "$1"; }
fields() { # fields JSON KEY...: the values, space-separated
	local j=$1
	shift
	echo "$j" | /usr/bin/python3 -c "import json, sys; d = json.load(sys.stdin); print(*(d[k] for k in sys.argv[1:]))" "$@"
}

# insert_until_split ID_BASE: commits trigger rows (ids -ID_BASE-1 and down) in
# batches of 100 until the index's split count grows, at most 5000 rows; prints
# what it did and fails if no split came. A fixed row count is not enough: the
# trigger spot's rows spread over more leaves each round, and the leaf limit
# follows the row count the writers grow.
insert_until_split() {
	local base=$1 s0 s1 b
	s0=$(q $PORT "SELECT (vidx_stats('t_v')->>'splits')::int")
	for b in $(seq 0 49); do
		q $PORT "INSERT INTO t SELECT -i - $base - $b * 100, $TRIGGER_ROW FROM generate_series(1, 100) i" || {
			echo "INSERT failed"
			return 1
		}
		s1=$(q $PORT "SELECT (vidx_stats('t_v')->>'splits')::int")
		if [ "$s1" -gt "$s0" ]; then
			echo "$((b * 100 + 100)) rows: $s0 -> $s1 splits"
			return 0
		fi
	done
	echo "5000 rows and no split: $s0 splits"
	return 1
}

# ------------------------------------------------------------------ A. a crash at each point
log "A: t built empty, 2 writers insert 3000 rows (the index grows by splits)"
q $PORT "CREATE TABLE t (id bigint PRIMARY KEY, v real[]); CREATE INDEX t_v ON t USING vidx (v)"
robust_py writer --port $PORT --dims $DIMS --journal "$JOURNAL" --clients 2 --id-base 1000000 --max-ops 1500 --batch 20 >/dev/null
check "A: the index grew by splits ($(q $PORT "SELECT vidx_stats('t_v')->>'splits'") splits)" \
	test "$(q $PORT "SELECT (vidx_stats('t_v')->>'splits')::int")" -gt 10

# rows of the crashing session: all near one point, so that its own insert
# passes its leaf's limit; negative ids, never committed
TRIGGER_ROW="ARRAY(SELECT (1.5 + 0.3 * random() + 0 * i)::real FROM generate_series(1, $DIMS))"
round=0
for point in crash_after_chains crash_after_tree crash_after_publish; do
	round=$((round + 1))
	label="A[$point]"
	log "$label: writers running; a session with vidx.debug_split = $point inserts until its split kills it"
	robust_py writer --port $PORT --dims $DIMS --journal "$JOURNAL" --clients 2 --id-base $((round * 100000000)) \
		--seed $round --insert-weight 3 --update-weight 1 --delete-weight 1 --batch 5 --seconds 120 \
		--stop-on-loss >"$W/writer.$round" 2>&1 &
	wpid=$!
	BGPIDS+=($wpid)
	n0=$(grep -c '^C' "$JOURNAL")
	wait_until 60 journal_has "$JOURNAL" $((n0 + 200)) || echo "# writers slow"
	kills0=$(grep -c "vidx.debug_split = $point: killing this backend" "$(pglog $NAME)")
	recoveries0=$(grep -c 'automatic recovery in progress' "$(pglog $NAME)")
	psql -X -q -h $SOCKDIR -p $PORT -U postgres -c "SET vidx.debug_split = $point" -c "DO \$\$ BEGIN
		FOR i IN 1 .. 20000 LOOP
			INSERT INTO t VALUES (-i - $round * 100000, $TRIGGER_ROW);
		END LOOP; END \$\$" >"$W/trigger.$round" 2>&1
	check "$label: the session's split killed its backend (its connection was lost)" grep -q "server closed the connection\|terminating connection" "$W/trigger.$round"
	check_eq "$label: the server log shows the kill at $point" \
		"$(($(grep -c "vidx.debug_split = $point: killing this backend" "$(pglog $NAME)") - kills0))" 1
	wait $wpid
	echo "# [$label] writer: $(cat "$W/writer.$round")"
	check "$label: the writers saw no SQL error (only the lost connection)" grep -q '"sql_errors": 0' "$W/writer.$round"
	check "$label: the server is back after crash recovery" wait_until 120 accepting
	check_eq "$label: the log shows crash recovery" "$(($(grep -c 'automatic recovery in progress' "$(pglog $NAME)") - recoveries0))" 1

	# the pages of the split cut short: the crash came at the point asked for
	p=$(pages t_v)
	echo "# [$label] pages after recovery: $p"
	case $point in
	crash_after_chains)
		check "$label: the new chains are on disk, unreachable" test "$(fields "$p" new_chain_pages)" -ge 2
		check_eq "$label: no new tree" "$(fields "$p" new_tree_pages)" 0 ;;
	crash_after_tree)
		check "$label: the new chains are on disk, unreachable" test "$(fields "$p" new_chain_pages)" -ge 2
		check "$label: the new tree is on disk, unpublished" test "$(fields "$p" new_tree_pages)" -ge 1 ;;
	crash_after_publish)
		check_eq "$label: the new chains are published" "$(fields "$p" new_chain_pages)" 0
		check "$label: the old tree is not freed yet" test "$(fields "$p" old_tree_pages)" -ge 1 ;;
	esac
	checkall "$label" t "$JOURNAL"
	# a split before VACUUM hands the cut-short split's leaf ids and tree version out again
	msg=$(insert_until_split $((round * 100000 + 50000)))
	check "$label: a split before VACUUM ($msg)" test $? -eq 0
	checkall "$label-resplit" t "$JOURNAL"
	check "$label: VACUUM" q $PORT "VACUUM t"
	p=$(pages t_v)
	echo "# [$label] pages after VACUUM: $p"
	check_eq "$label: VACUUM freed the pages no version reaches (new chains, new tree, old tree)" \
		"$(fields "$p" new_chain_pages new_tree_pages old_tree_pages)" "0 0 0"
	checkall "$label-vacuumed" t "$JOURNAL"
	msg=$(insert_until_split $((round * 100000)))
	check "$label: inserts into the leaf work after the crash, and split it again ($msg)" test $? -eq 0
	checkall "$label-after" t "$JOURNAL"
done
# (VACUUMs until one merges nothing; see vacuum_settled in lib.sh)
check_eq "A: vidx_stats: no chain awaits freeing after a last VACUUM" "$(vacuum_settled $PORT t t_v)" 0

# ------------------------------------------------------------------ B. kill -9 under growth
log "B: g built empty; 4 writers insert; kill -9 of the server 3 times"
GJ=$W/journal.g
: >"$GJ"
q $PORT "CREATE TABLE g (id bigint PRIMARY KEY, v real[]); CREATE INDEX g_v ON g USING vidx (v)"
for k in 1 2 3; do
	label="B$k"
	robust_py writer --port $PORT --table g --dims $DIMS --journal "$GJ" --clients 4 --id-base $((k * 100000000)) \
		--seed $((10 + k)) --insert-weight 9 --delete-weight 1 --batch 10 --seconds 180 --stop-on-loss >"$W/gwriter.$k" 2>&1 &
	wpid=$!
	BGPIDS+=($wpid)
	s0=$(q $PORT "SELECT (vidx_stats('g_v')->>'splits')::int")
	n0=$(grep -c '^C' "$GJ")
	if wait_until 90 journal_has "$GJ" $((n0 + 3000)); then
		ok "$label: writers committed 3000 more rows before the kill"
	else
		not_ok "$label: writers too slow ($(($(grep -c '^C' "$GJ") - n0)) rows in 90 s)"
	fi
	# The kill must come after splits under the load. Whether 3,000 rows make
	# a leaf pass twice its target depends on where they land (the target grows
	# with the table: in the third round the leaves may all stay under it), so
	# the writers go on until one more split is published (at most 60 s).
	wait_until 60 splits_above g_v "$s0"
	s1=$(q $PORT "SELECT (vidx_stats('g_v')->>'splits')::int")
	check "$label: leaves split under the load ($s0 -> $s1 splits)" test "$s1" -gt "$s0"
	cluster_crash $NAME
	wait $wpid
	echo "# [$label] writer: $(cat "$W/gwriter.$k")"
	check "$label: the writers saw no SQL error (only the lost connection)" grep -q '"sql_errors": 0' "$W/gwriter.$k"
	check "$label: server restarts after kill -9 (crash recovery)" cluster_start $NAME
	checkall "$label" g "$GJ"
done
check "B: VACUUM" q $PORT "VACUUM g"
checkall "B-vacuumed" g "$GJ"

# The three kills of A are backends the test killed (each logged just before);
# B's kills take the postmaster first, so they leave no such line.
check_eq "server log: backends killed by a signal (the three kills of A)" "$(grep -c 'terminated by signal' "$(pglog $NAME)")" 3
check "server log: no PANIC or TRAP" bash -c "! grep -E 'PANIC|TRAP:|was terminated by exception' '$(pglog $NAME)'"
finish
