#!/usr/bin/env bash
# 35_verify_load: vidx_verify and vidx_stats on a healthy index while it is
# written to. pgbench with 8 clients inserts, updates, deletes and queries for
# VIDX_VERIFY_LOAD_SECONDS (default 45) while VACUUM runs in a loop and one
# session calls vidx_verify(index, true) and vidx_stats(index) in turn.
# Checked: no call fails, vidx_stats always says the sidecar is "ok" with a
# record for every posting, and calls did overlap inserts (the sidecar grew
# during them); afterwards the exact-recall check and vidx_verify. Then, on
# a small index damaged on disk in five ways (a link past the end, a cycle, a
# wrong "last", an insert hint into another chain, a page no chain reaches),
# vidx_verify reports each.
source "$(dirname "$(readlink -f "$0")")/lib.sh"

NAME=rbst_verify
PORT=5455
DIMS=48
SECS=${VIDX_VERIFY_LOAD_SECONDS:-45}
W=$(mktempdir)

cluster_create $NAME $PORT shared_buffers=128MB autovacuum=off || exit 1
q $PORT "CREATE EXTENSION vidx; CREATE TABLE t (id bigserial PRIMARY KEY, v real[])"
q $PORT "SELECT setseed(0.35); INSERT INTO t (v) SELECT ARRAY(SELECT (random() * 6 - 3 + 0 * i)::real FROM generate_series(1, $DIMS)) FROM generate_series(1, 20000) i"
# few leaves: long chains, which inserts extend with new pages all the time
q $PORT "CREATE INDEX t_v ON t USING vidx (v) WITH (lists = 40)"
log "t: $(q $PORT "SELECT count(*) FROM t") rows; pgbench 8 clients, VACUUM loop and verify/stats loop for ${SECS}s"

vacuum_loop() {
	local n=0 e=0 end=$(($(date +%s) + SECS))
	while [ "$(date +%s)" -lt "$end" ]; do
		if q $PORT "VACUUM t" >/dev/null 2>>"$W/vacuum.err"; then n=$((n + 1)); else e=$((e + 1)); fi
		sleep 2
	done
	echo "$n $e" >"$W/vacuum.result"
}
vacuum_loop &
vpid=$!
BGPIDS+=($vpid)
robust_py verify-loop --port $PORT --index t_v --seconds "$SECS" >"$W/verify" 2>&1 &
lpid=$!
BGPIDS+=($lpid)

B=$ROBUST_DIR/pgbench
PGOPTIONS="-c enable_seqscan=off -c statement_timeout=120s" timeout $((SECS + 120)) \
	pgbench -n -h $SOCKDIR -p $PORT -U postgres -c 8 -j 2 -T "$SECS" \
	-f "$B/insert.sql@4" -f "$B/update.sql@2" -f "$B/delete.sql@1" -f "$B/knn.sql@1" \
	postgres >"$W/pgbench.out" 2>&1
check_eq "pgbench exits 0" "$?" 0
wait $lpid
wait $vpid
grep -E "^(number of (transactions|failed)|tps)" "$W/pgbench.out" | sed 's/^/# [pgbench] /'
echo "# [verify-loop] $(cat "$W/verify")"
read -r vn ve <"$W/vacuum.result"
check_eq "VACUUM loop: $vn VACUUMs, errors" "$ve" 0

field() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$W/verify" "$1" 2>/dev/null; }
check_eq "vidx_verify under load: $(field verify_calls) calls, errors" "$(field verify_errors)" 0
check_eq "vidx_stats under load: $(field stats_calls) calls, errors" "$(field stats_errors)" 0
check_eq "vidx_stats under load: calls that did not say sidecar \"ok\" with every record" "$(field stats_not_ok)" 0
check "vidx_verify calls during inserts (sidecar grew meanwhile): $(field verify_during_inserts), at least 5" \
	test "$(field verify_during_inserts)" -ge 5
check "vidx_stats calls during inserts (sidecar grew meanwhile): $(field stats_during_inserts), at least 5" \
	test "$(field stats_during_inserts)" -ge 5

out=$(robust_py check --port $PORT --index t_v --dims $DIMS --queries 2 --sample 100 2>&1)
echo "$out" | sed 's/^/# [end] /'
if echo "$out" | grep -q "^not ok"; then not_ok "end: exact-recall check"; else ok "end: exact-recall check: $(echo "$out" | sed -n 's/^COUNTS //p')"; fi
# The checks still catch real damage: each case is made on disk in a copy of a
# small index (patch_index.py), then vidx_verify must report it.
log "corrupted chains"
q $PORT "CREATE TABLE c (id int PRIMARY KEY, v real[])"
q $PORT "SELECT setseed(0.45); INSERT INTO c SELECT i, ARRAY(SELECT (random() * 6 - 3 + 0 * i)::real FROM generate_series(1, $DIMS)) FROM generate_series(1, 2000) i" >/dev/null
q $PORT "CREATE INDEX c_v ON c USING vidx (v) WITH (lists = 2)"
cfile=$(pgdata $NAME)/$(q $PORT "SELECT pg_relation_filepath('c_v')")
q $PORT "CHECKPOINT"
cluster_stop $NAME
cp "$cfile" "$W/c_v.orig"
reports() { case "$1" in *"ERROR:  index \"c_v\": $2"*) return 0 ;; esac; return 1; }
for case in link-past-end cycle last hint orphan; do
	want=$("$PY" "$ROBUST_DIR/patch_index.py" corrupt "$cfile" $case)
	cluster_start $NAME
	got=$(q $PORT "SELECT vidx_verify('c_v', false)" 2>&1)
	check "corrupt ($case): vidx_verify reports '$want' (got: $got)" reports "$got" "$want"
	cluster_stop $NAME
	cp "$W/c_v.orig" "$cfile"
done
# An insert routed to a leaf whose head is damaged fails (it used to route
# again, forever, as if a split had replaced the leaf); every row of c is
# inserted again, so some route to that leaf.
want=$("$PY" "$ROBUST_DIR/patch_index.py" corrupt "$cfile" head-free)
cluster_start $NAME
got=$(timeout 60 psql -X -q -At -h $SOCKDIR -p $PORT -U postgres -v VERBOSITY=verbose -c "INSERT INTO c SELECT id + 10000, v FROM c" 2>&1 | head -1)
check "corrupt (head-free): an insert into the leaf fails, XX002 '$want' (got: $got)" reports "${got/XX002: /}" "$want"
check "corrupt (head-free): with SQLSTATE XX002" bash -c "echo '$got' | grep -q XX002"
cluster_stop $NAME
cp "$W/c_v.orig" "$cfile"
cluster_start $NAME
check_eq "the undamaged copy verifies" "$(q $PORT "SELECT vidx_verify('c_v', true)" 2>&1)" t
check "server log: no backend died" log_clean $NAME
finish
