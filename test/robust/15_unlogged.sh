#!/usr/bin/env bash
# 15_unlogged: an UNLOGGED table with a vidx index through crashes. Crash
# recovery resets the index to its init fork (empty, another build id) while
# the sidecar file of the old build stays. After each reset (kill -9 of the
# server, then pg_ctl stop -m immediate): the table and index are empty; new
# inserts and an update work without any WARNING; k-NN queries through the
# index give the exact rows; vidx_stats says the sidecar is "ok" with a record
# for every posting; vidx_verify(index, true) is true; no temporary file is
# left in vidx/.
source "$(dirname "$(readlink -f "$0")")/lib.sh"

NAME=rbst_unlogged
PORT=5456
DIMS=16
W=$(mktempdir)

cluster_create $NAME $PORT shared_buffers=128MB || exit 1
q $PORT "CREATE EXTENSION vidx; CREATE UNLOGGED TABLE u (id int PRIMARY KEY, v real[])"

fill() { # fill FIRST LAST SEED: rows FIRST..LAST with seeded random vectors
	q $PORT "SELECT setseed($3); INSERT INTO u SELECT i, ARRAY(SELECT (random() * 6 - 3 + 0 * i)::real FROM generate_series(1, $DIMS)) FROM generate_series($1, $2) i" >/dev/null
}

# k-NN queries (k 10) through the index, probing every leaf, that return the
# rows of an exact search, out of those asked (every 100th row's vector).
exact_queries() {
	q $PORT "SET enable_seqscan = off; SET vidx.probes = 1000000; SET vidx.rerank = 1000000;
		SELECT count(*) FILTER (WHERE got = want) || ' of ' || count(*) FROM (
			SELECT (SELECT array_agg(id) FROM (SELECT id FROM u ORDER BY v <-> q LIMIT 10) a) AS got,
			       (SELECT array_agg(id ORDER BY d, id) FROM (
			           SELECT id, v <-> q AS d FROM u ORDER BY (v <-> q) + 0, id LIMIT 10) b) AS want
			FROM (SELECT v AS q FROM u WHERE id % 100 = 0) qs) s"
}

healthy() { # healthy LABEL ROWS: the checks after writes
	local label=$1 rows=$2 n
	check_eq "$label: rows in the table" "$(q $PORT "SELECT count(*) FROM u")" "$rows"
	n=$((rows / 100))
	check_eq "$label: k-NN queries through the index with the exact rows" "$(exact_queries 2>>"$W/stderr")" "$n of $n"
	check_eq "$label: vidx_stats sidecar state" \
		"$(q $PORT "SELECT vidx_stats('u_v')->'sidecar'->>'state'")" ok
	check_eq "$label: vidx_stats postings without a sidecar record" \
		"$(q $PORT "SELECT vidx_stats('u_v')->'sidecar'->>'postings_without_record'")" 0
	check_eq "$label: vidx_verify(u_v, true)" "$(q $PORT "SELECT vidx_verify('u_v', true)" 2>&1)" t
	check_eq "$label: WARNINGs from the inserts and queries" "$(grep -c WARNING "$W/stderr")" 0
	grep WARNING "$W/stderr" | head -3 | sed 's/^/#   /'
	check_eq "$label: temporary files left in vidx/" "$(find "$(pgdata $NAME)/vidx" -name '*.tmp' | wc -l)" 0
	: >"$W/stderr"
}

fill 1 3000 0.1
q $PORT "CREATE INDEX u_v ON u USING vidx (v) WITH (lists = 10)"
: >"$W/stderr"
healthy "built" 3000

round=0
for how in "kill -9" "stop -m immediate"; do
	round=$((round + 1))
	label="reset $round ($how)"
	log "$label"
	if [ "$how" = "kill -9" ]; then
		cluster_crash $NAME
	else
		pg_ctlcluster $PGVER $NAME stop -m immediate >/dev/null
	fi
	check "$label: server restarts" cluster_start $NAME
	check_eq "$label: the unlogged table is empty" "$(q $PORT "SELECT count(*) FROM u")" 0
	check_eq "$label: the index is reset (no dimensions yet)" "$(q $PORT "SELECT vidx_stats('u_v')->>'dims'")" 0
	check "$label: the old sidecar file is still there" bash -c "ls $(pgdata $NAME)/vidx/*.vsc >/dev/null"
	# one row first (slot 0), then many rows in one statement, then an update
	q $PORT "INSERT INTO u VALUES (1, ARRAY(SELECT 0.5::real FROM generate_series(1, $DIMS)))" 2>>"$W/stderr"
	fill 2 2000 0.$((round + 1)) 2>>"$W/stderr"
	q $PORT "SELECT setseed(0.9); UPDATE u SET v = ARRAY(SELECT (random() * 6 - 3 + 0 * id)::real FROM generate_series(1, $DIMS)) WHERE id % 7 = 0" 2>>"$W/stderr" >/dev/null
	healthy "$label" 2000
done
check "server log: no backend died of a signal, no PANIC" log_clean $NAME
finish
