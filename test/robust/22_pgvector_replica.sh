#!/usr/bin/env bash
# 22_pgvector_replica: vidx indexes on pgvector's vector and halfvec columns
# (vidx_pgvector) on a streaming hot standby made with pg_basebackup -R: after
# inserts, updates, deletes and a VACUUM on the primary, the standby answers
# the same k-NN queries with the same rows (default and full probes), reading
# the vectors its copied sidecar cannot vouch for from the table through the
# operator class's reader; vidx_verify holds on both; a crash of the primary
# (kill -9) and its recovery keep the index exact. 48 dimensions.
# Needs pgvector installed (test/pgvector.sh, which this test runs).
source "$(dirname "$(readlink -f "$0")")/lib.sh"

P=5453
S=5454
PN=rbst_pgv_primary
SN=rbst_pgv_standby
DIMS=48

if ! bash "$ROOT/test/pgvector.sh" >/dev/null; then
	not_ok "pgvector 0.8.6 could not be installed (test/pgvector.sh)"
	finish
	exit 1
fi

cluster_create $PN $P wal_level=replica max_wal_senders=5 hot_standby=on || exit 1
q $P "CREATE EXTENSION vector; CREATE EXTENSION vidx; CREATE EXTENSION vidx_pgvector"
q $P "CREATE TABLE t (id bigint PRIMARY KEY, v vector($DIMS), h halfvec($DIMS))"
# deterministic rows around 30 centres
ROWS="SELECT i, a::vector, a::halfvec FROM (SELECT i, (SELECT array_agg((sin((i % 30) * 1.3 + j * 0.7) * 3 + sin(i * 0.37 + j * 1.1))::real ORDER BY j) FROM generate_series(1, $DIMS) j) AS a FROM generate_series"
q $P "INSERT INTO t $ROWS(1, 4000) i) s"
q $P "CREATE INDEX t_v ON t USING vidx (v) WITH (lists = 30); CREATE INDEX t_h ON t USING vidx (h halfvec_cosine_ops) WITH (lists = 30)"
log "primary: $(q $P "SELECT count(*) FROM t") rows, indexes built"

log "standby: pg_basebackup -R into a new cluster"
standby_create "" $P $SN $S
check_eq "the standby is in recovery" "$(q $S "SELECT pg_is_in_recovery()")" t

# writes after the base backup: their sidecar records are not on the standby
q $P "INSERT INTO t $ROWS(4001, 5500) i) s"
q $P "UPDATE t SET v = (SELECT array_agg(x * 1.5)::vector FROM unnest(v::real[]) x), h = (SELECT array_agg(x * 0.5)::halfvec FROM unnest(h::real[]) x) WHERE id % 7 = 0"
q $P "DELETE FROM t WHERE id % 11 = 0"
q $P "VACUUM t"

caught_up() {
	[ "$(q $S "SELECT pg_last_wal_replay_lsn() >= '$(q $P "SELECT pg_current_wal_lsn()")'::pg_lsn")" = t ]
}

# top-10 of 20 queries (stored rows' vectors), one line per query; COL and OPX are replaced
QUERIES="SELECT string_agg(r, E'\n' ORDER BY q) FROM (SELECT q.id AS q, q.id || ':' || array(
	SELECT t.id FROM t ORDER BY t.COL OPX (SELECT COL FROM t WHERE id = q.id) LIMIT 10)::text AS r
	FROM generate_series(3, 5500, 277) AS q(id) WHERE q.id % 11 <> 0) s"
answers() { # answers PORT COL OP PROBES
	local sql=${QUERIES//COL/$2}
	sql=${sql//OPX/$3}
	psql -X -q -At -h $SOCKDIR -p "$1" -U postgres -c "SET enable_seqscan = off" -c "SET vidx.probes = $4" \
		-c "$sql" 2>&1
}
compare() { # compare LABEL
	local col op probes a b
	check "$1: the standby caught up" wait_until 120 caught_up
	for col in v h; do
		op='<->'
		[ $col = h ] && op='<=>'
		for probes in 10 1000000; do
			a=$(answers $P $col "$op" $probes | grep -v WARNING)
			b=$(answers $S $col "$op" $probes | grep -v -e WARNING -e DETAIL -e HINT)
			if [ -n "$a" ] && [ "$a" = "$b" ]; then
				ok "$1: $col $op probes $probes: the standby returns the primary's rows ($(echo "$a" | wc -l) queries)"
			else
				not_ok "$1: $col $op probes $probes: rows differ"
				diff <(echo "$a") <(echo "$b") | head -5 | sed 's/^/#   /'
			fi
		done
	done
	check_eq "$1: vidx_verify on the standby" "$(q $S "SELECT vidx_verify('t_v', false) AND vidx_verify('t_h', false)")" t
}
compare "after writes and VACUUM"
check_eq "the primary's indexes verify" "$(q $P "SELECT vidx_verify('t_v') AND vidx_verify('t_h')")" t

# A crash of the primary in the middle of nothing in particular, then more writes.
check "kill -9 of the primary" cluster_crash $PN
check "the primary recovers" cluster_start $PN
q $P "INSERT INTO t $ROWS(5501, 6000) i) s"
compare "after the primary's crash recovery and more inserts"
check_eq "the primary's indexes verify after recovery" "$(q $P "SELECT vidx_verify('t_v') AND vidx_verify('t_h')")" t
check "no crash or PANIC in the primary's log" log_clean $PN
check "no crash or PANIC in the standby's log" log_clean $SN
finish
