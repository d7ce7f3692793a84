#!/usr/bin/env bash
# 20_replica: a streaming hot standby made with pg_basebackup -R answers the
# same k-NN queries with the same rows as the primary, while and after the
# primary takes a stream of inserts, updates, deletes and a VACUUM; after
# pg_promote() it accepts writes, its index stays exact, and REINDEX gives it a
# full sidecar again. An index created empty on the primary and grown by leaf
# splits (with VACUUMs freeing the replaced chains) is the same on the
# standby: the same tree version and splits, the same rows at default and
# full probes, vidx_verify true.
#
# The standby's sidecar is whatever pg_basebackup copied (the sidecar is not
# WAL-logged): rows written later have no valid record there, so the standby
# reads their vectors from the table and says so once per session (WARNING
# naming the index). 32 dimensions.
source "$(dirname "$(readlink -f "$0")")/lib.sh"

P=5441
S=5442
PN=rbst_primary
SN=rbst_standby
DIMS=32
W=$(mktempdir)
JOURNAL=$W/journal
: >"$JOURNAL"

cluster_create $PN $P wal_level=replica max_wal_senders=5 hot_standby=on || exit 1
q $P "CREATE EXTENSION vidx; CREATE TABLE t (id bigint PRIMARY KEY, v real[])"
robust_py writer --port $P --dims $DIMS --journal "$JOURNAL" --clients 2 --id-base 1000000 --max-ops 4000 --batch 100 >/dev/null
q $P "CREATE INDEX t_v ON t USING vidx (v) WITH (lists = 40)"
log "primary: $(q $P "SELECT count(*) FROM t") rows, index built"

# ---------------------------------------------------------------- the standby
log "standby: pg_basebackup -R into a new cluster"
standby_create "" $P $SN $S
check_eq "the standby is in recovery" "$(q $S "SELECT pg_is_in_recovery()")" t
check "the primary streams to the standby" wait_until 60 bash -c "[ \"\$(psql -X -At -h $SOCKDIR -p $P -U postgres -c 'SELECT count(*) FROM pg_stat_replication WHERE state = \$\$streaming\$\$')\" = 1 ]"

compare() { # compare LABEL [default]: same rows on both servers
	local out
	if ! robust_py sync --primary $P --standby $S --timeout 300; then
		not_ok "$1: the standby did not catch up"
		return
	fi
	# With the default re-scoring budget (vidx.rerank) the rows can differ
	# while unvacuumed dead rows exist (see the report of issue 5); with an
	# unlimited budget and the default vidx.probes they must not.
	if [ "${2:-}" = default ]; then
		out=$(robust_py compare --port1 $P --port2 $S --dims $DIMS --queries 20 --k 10 --probes 10 2>&1)
		if [ $? = 0 ]; then ok "$1: default settings (probes 10, default rerank, k 10): identical rows $(echo "$out" | cut -c1-60)"; else not_ok "$1: default settings differ: $out"; fi
	fi
	out=$(robust_py compare --port1 $P --port2 $S --dims $DIMS --queries 20 --k 10 --probes 10 --rerank 1000000 2>&1)
	if [ $? = 0 ]; then ok "$1: probes 10, rerank unlimited, k 10: identical rows $(echo "$out" | cut -c1-60)"; else not_ok "$1: probes 10, rerank unlimited: rows differ: $out"; fi
	out=$(robust_py compare --port1 $P --port2 $S --dims $DIMS --queries 10 --k 100 --probes 1000000 --exact 2>&1)
	if [ $? = 0 ]; then ok "$1: exact settings (all leaves, k 100): identical rows $(echo "$out" | cut -c1-60)"; else not_ok "$1: exact settings differ: $out"; fi
	echo "# [$1] $out"
	local warnings
	warnings=$(echo "$out" | grep -o '"notices2": \[.*\]' | grep -o 'WARNING' | wc -l)
	if [ "$warnings" -le 1 ]; then ok "$1: at most one WARNING in the standby session ($warnings)"; else not_ok "$1: $warnings WARNINGs in one standby session"; fi
	if [ "$warnings" = 1 ]; then
		if echo "$out" | grep -q 'WARNING:[^]]*t_v'; then ok "$1: the standby's WARNING names the index"; else not_ok "$1: the standby's WARNING does not name the index"; fi
	fi
	out=$(robust_py check --port $S --index t_v --dims $DIMS --journal "$JOURNAL" --queries 2 --sample 100 --no-sidecar 2>&1)
	if echo "$out" | grep -q "^not ok"; then
		echo "$out" | sed "s/^/# [$1 standby] /"
		not_ok "$1: exact-recall check on the standby"
	else
		ok "$1: exact-recall check on the standby: $(echo "$out" | sed -n 's/^COUNTS //p')"
	fi
}

compare "after the base backup" default

# ---------------------------------------------------------------- writes
standby_reader() { # queries the standby in a loop while the writers run; counts errors
	local n=0 e=0 i
	for i in $(seq 1 200); do
		[ -f "$W/stop_reader" ] && break
		if psql -X -q -At -h $SOCKDIR -p $S -U postgres -c "SET enable_seqscan = off" \
			-c "SELECT count(*) FROM (SELECT id FROM t ORDER BY v <-> (SELECT array_agg(random()::real) FROM generate_series(1, $DIMS)) LIMIT 10) s" >/dev/null 2>"$W/reader.err"; then
			n=$((n + 1))
		else
			e=$((e + 1))
			cat "$W/reader.err" >>"$W/reader.errors"
		fi
	done
	echo "$n $e" >"$W/reader.result"
}

for round in 1 2 3 4; do
	log "round $round: 4 writers (insert/update/delete) on the primary, standby queried meanwhile"
	rm -f "$W/stop_reader" "$W/reader.result"
	standby_reader &
	rpid=$!
	BGPIDS+=($rpid)
	robust_py writer --port $P --dims $DIMS --journal "$JOURNAL" --clients 4 --id-base $((round * 100000000)) \
		--seed $round --insert-weight 3 --update-weight 2 --delete-weight 1 --batch 5 --max-ops 400 >"$W/writer.$round" 2>&1
	touch "$W/stop_reader"
	wait $rpid
	check "round $round: the writers saw no SQL error" grep -q '"sql_errors": 0' "$W/writer.$round"
	read -r nq ne <"$W/reader.result"
	check_eq "round $round: standby queries during the writes failed ($nq succeeded)" "$ne" 0
	[ "$round" = 3 ] && check "round $round: VACUUM on the primary" q $P "VACUUM t"
	compare "round $round"
done

check "final VACUUM on the primary" q $P "VACUUM t"
compare "after the final VACUUM" default

# ---------------------------------------------------------------- splits
# An index created empty on the primary grows by leaf splits (many tree
# versions, new chains, graveyard); VACUUMs free the replaced chains. The
# standby replays all of it: the same tree, so the same rows at full and at
# default probes, and vidx_verify passes there.
log "splits: gr built empty on the primary; 4 writers grow it, with VACUUMs between rounds"
GJ=$W/journal.gr
: >"$GJ"
q $P "CREATE TABLE gr (id bigint PRIMARY KEY, v real[]); CREATE INDEX gr_v ON gr USING vidx (v)"
for round in 1 2 3; do
	robust_py writer --port $P --table gr --dims $DIMS --journal "$GJ" --clients 4 --id-base $((round * 100000000)) \
		--seed $((20 + round)) --insert-weight 8 --update-weight 1 --delete-weight 1 --batch 10 --max-ops 600 >"$W/gwriter.$round" 2>&1
	check "splits round $round: the writers saw no SQL error" grep -q '"sql_errors": 0' "$W/gwriter.$round"
	check "splits round $round: VACUUM on the primary" q $P "VACUUM gr"
done
gstats() { q "$1" "SELECT format('tree_version %s, splits %s, leaves %s, replaced_awaiting_free %s', s->>'tree_version', s->>'splits', s->>'leaves', s->>'replaced_awaiting_free') FROM vidx_stats('gr_v') s"; }
log "splits: primary $(gstats $P)"
check "splits: leaves split on the primary" test "$(q $P "SELECT (vidx_stats('gr_v')->>'splits')::int")" -gt 30
check "splits: the standby caught up" robust_py sync --primary $P --standby $S --timeout 300
check_eq "splits: the standby's tree is the primary's (vidx_stats)" "$(gstats $S)" "$(gstats $P)"
check_eq "splits: vidx_verify on the standby" "$(q $S "SELECT vidx_verify('gr_v', false)")" t
out=$(robust_py compare --port1 $P --port2 $S --table gr --dims $DIMS --queries 20 --k 10 --probes 10 2>&1)
if [ $? = 0 ]; then ok "splits: default settings (probes 10, k 10): identical rows $(echo "$out" | cut -c1-60)"; else not_ok "splits: default settings: rows differ: $out"; fi
out=$(robust_py compare --port1 $P --port2 $S --table gr --dims $DIMS --queries 10 --k 100 --probes 1000000 --exact 2>&1)
if [ $? = 0 ]; then ok "splits: exact settings (all leaves, k 100): identical rows $(echo "$out" | cut -c1-60)"; else not_ok "splits: exact settings: rows differ: $out"; fi
out=$(robust_py check --port $S --table gr --index gr_v --dims $DIMS --journal "$GJ" --queries 2 --sample 100 --no-sidecar 2>&1)
if echo "$out" | grep -q "^not ok"; then
	echo "$out" | sed "s/^/# [splits standby] /"
	not_ok "splits: exact-recall check on the standby"
else
	ok "splits: exact-recall check on the standby: $(echo "$out" | sed -n 's/^COUNTS //p')"
fi

# ---------------------------------------------------------------- promotion
log "promotion"
check_eq "pg_promote()" "$(q $S "SELECT pg_promote(true, 120)")" t
check_eq "the promoted standby is out of recovery" "$(q $S "SELECT pg_is_in_recovery()")" f
robust_py writer --port $S --dims $DIMS --journal "$JOURNAL" --clients 4 --id-base 900000000 \
	--insert-weight 3 --update-weight 1 --delete-weight 1 --batch 5 --max-ops 800 >"$W/writer.promoted" 2>&1
check "promoted: inserts, updates and deletes work (no SQL error)" grep -q '"sql_errors": 0' "$W/writer.promoted"
out=$(robust_py check --port $S --index t_v --dims $DIMS --journal "$JOURNAL" --queries 3 --sample 200 --no-sidecar 2>&1)
if echo "$out" | grep -q "^not ok"; then echo "$out" | sed 's/^/# [promoted] /'; not_ok "promoted: exact-recall check"; else ok "promoted: exact-recall check: $(echo "$out" | sed -n 's/^COUNTS //p')"; fi
check "promoted: REINDEX" q $S "REINDEX INDEX t_v"
out=$(robust_py check --port $S --index t_v --dims $DIMS --journal "$JOURNAL" --queries 3 --sample 200 2>&1)
if echo "$out" | grep -q "^not ok"; then echo "$out" | sed 's/^/# [reindexed] /'; not_ok "promoted+REINDEX: exact-recall check with sidecar"; else ok "promoted+REINDEX: exact-recall check, vidx_verify with the sidecar: $(echo "$out" | sed -n 's/^COUNTS //p')"; fi
check_eq "promoted+REINDEX: sidecar state ok" "$(q $S "SELECT vidx_stats('t_v')->'sidecar'->>'state'")" ok
w=$(psql -X -q -At -h $SOCKDIR -p $S -U postgres -c "SET enable_seqscan = off" -c "SET vidx.probes = 1000000" \
	-c "SELECT count(*) FROM (SELECT id FROM t ORDER BY v <-> (SELECT v FROM t LIMIT 1) LIMIT 1000) s" 2>&1 | grep -c WARNING)
check_eq "promoted+REINDEX: no WARNING in a new session" "$w" 0
check "no backend died (primary log)" log_clean $PN
check "no backend died (standby log)" log_clean $SN
finish
