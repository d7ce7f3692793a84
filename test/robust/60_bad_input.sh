#!/usr/bin/env bash
# 60_bad_input: seeded random values (real[]/float8[]/numeric[]/text with NULLs,
# NaN, infinities, huge values (also beyond the 1e15 an index accepts), empty,
# nested, wrong and 16001+ dimensions) through INSERT, UPDATE, the operators
# and index scans of L2, inner-product and cosine indexes, plus random index
# options and settings (badinput.py). Checked: every error has an expected
# SQLSTATE, no backend crashes (same postmaster, no "terminated by signal"),
# the tables hold only valid vectors (none beyond 1e15), no index or sidecar
# file is left by failed CREATE INDEX, every index verifies and still returns
# every row.
source "$(dirname "$(readlink -f "$0")")/lib.sh"
NAME=rbst_bad
PORT=5447
cluster_create $NAME $PORT || exit 1
D=$(pgdata $NAME)
q $PORT "CREATE EXTENSION vidx"
for t in l2 ip cos; do
	ops=vidx_${t}_ops
	[ $t = cos ] && ops=vidx_cosine_ops
	q $PORT "CREATE TABLE t_$t (id serial PRIMARY KEY, v real[]);
	INSERT INTO t_$t (v) SELECT ARRAY(SELECT (sin(i * 1.3 + j) * 4 + 0.1)::real FROM generate_series(1, 8) j) FROM generate_series(1, 300) i;
	CREATE INDEX t_${t}_v ON t_$t USING vidx (v $ops) WITH (lists = 10)"
done
pm=$(head -1 "$D/postmaster.pid")
total=0
for seed in 1 2 3 4; do
	out=$("$PY" "$ROBUST_DIR/badinput.py" $PORT $seed 1000 2>&1)
	rc=$?
	echo "# seed $seed: $out"
	n=$(echo "$out" | sed -n 's/.*"statements": \([0-9]*\).*/\1/p')
	total=$((total + ${n:-0}))
	check_eq "seed $seed: every statement succeeded or failed with an expected SQLSTATE (exit)" "$rc" 0
done
log "$total random statements"
check_eq "the postmaster is the same process (no crash and restart)" "$(head -1 "$D/postmaster.pid")" "$pm"
check "the log has no 'terminated by signal', PANIC or TRAP" log_clean $NAME
check_eq "the log has no 'server process ... was terminated'" "$(grep -c 'server process.*terminated\|all server processes terminated' "$(pglog $NAME)")" 0
for t in l2 ip cos; do
	op=$(case $t in l2) echo '<->' ;; ip) echo '<#>' ;; cos) echo '<=>' ;; esac)
	check_eq "t_$t: only valid vectors are stored (8 finite non-NULL elements)" \
		"$(q $PORT "SELECT count(*) FROM t_$t WHERE v IS NOT NULL AND (array_ndims(v) <> 1 OR array_length(v, 1) <> 8 OR array_position(v, NULL) IS NOT NULL OR 'NaN' = ANY (v) OR 'Infinity' = ANY (v) OR '-Infinity' = ANY (v))")" 0
	check_eq "t_$t: no stored element beyond the index's limit of 1e15" \
		"$(q $PORT "SELECT count(*) FROM t_$t, unnest(v) x WHERE abs(x) > 1e15::real")" 0
	check_eq "t_$t: vidx_verify" "$(q $PORT "SELECT vidx_verify('t_${t}_v')")" t
	check_eq "t_$t: an index scan over all leaves returns every non-NULL row" \
		"$(q $PORT "SET enable_seqscan = off; SET vidx.probes = 1000000; SET vidx.rerank = 1000000; SELECT count(*) FROM (SELECT id FROM t_$t ORDER BY v $op '{1,1,1,1,1,1,1,1}'::real[] LIMIT 100000000) s")" \
		"$(q $PORT "SELECT count(*) FROM t_$t WHERE v IS NOT NULL")"
done
check_eq "no index left by random CREATE INDEX statements" "$(q $PORT "SELECT count(*) FROM pg_class c JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'vidx'")" 3
left=$(ls "$D/vidx" | wc -l)
check_eq "no sidecar file left by failed CREATE INDEX (files in vidx/)" "$left" 3
finish
