#!/usr/bin/env bash
# 85_slots: an index whose sidecar slots run out (2^32 - 1 records) goes on
# taking inserts and updates. The metapage's next slot is set on disk, in a
# stopped cluster with data checksums, to one below the last (patch_index.py
# recomputes the page checksum); then: the next insert takes the last slot
# (with its record); later inserts and updates succeed with one WARNING per
# session that names the index and says REINDEX compacts the sidecar; their
# postings have no record, which vidx_stats counts and vidx_verify accepts;
# k-NN queries through the index give the exact rows; VACUUM frees the slots
# of the postings it removes, and the next insert takes one (with its record,
# no WARNING); REINDEX gives every posting a record again.
source "$(dirname "$(readlink -f "$0")")/lib.sh"

NAME=rbst_slots
PORT=5457
DIMS=4
LAST=4294967294 # the last slot with a record (4294967295 means none)
W=$(mktempdir)

INITDB_OPTS=--data-checksums cluster_create $NAME $PORT shared_buffers=128MB autovacuum=off || exit 1
check_eq "the cluster has data checksums" "$(q $PORT "SHOW data_checksums")" on
q $PORT "CREATE EXTENSION vidx; CREATE TABLE s (id int PRIMARY KEY, v real[])"

fill() { # fill FIRST LAST SEED: rows FIRST..LAST with seeded random vectors
	q $PORT "SELECT setseed($3); INSERT INTO s SELECT i, ARRAY(SELECT (random() * 6 - 3 + 0 * i)::real FROM generate_series(1, $DIMS)) FROM generate_series($1, $2) i" >/dev/null
}
stat() { q $PORT "SELECT vidx_stats('s_v')->'sidecar'->>'$1'"; }
# k-NN queries (k 10) through the index, probing every leaf, that return the
# rows of an exact search, out of those asked (every 50th row's vector).
exact_queries() {
	q $PORT "SET enable_seqscan = off; SET vidx.probes = 1000000; SET vidx.rerank = 1000000;
		SELECT count(*) FILTER (WHERE got = want) || ' of ' || count(*) FROM (
			SELECT (SELECT array_agg(id) FROM (SELECT id FROM s ORDER BY v <-> q LIMIT 10) a) AS got,
			       (SELECT array_agg(id ORDER BY d, id) FROM (
			           SELECT id, v <-> q AS d FROM s ORDER BY (v <-> q) + 0, id LIMIT 10) b) AS want
			FROM (SELECT v AS q FROM s WHERE id % 50 = 0) qs) t"
}
warnings() { grep -c "WARNING" "$1"; }

fill 1 1000 0.2
q $PORT "CREATE INDEX s_v ON s USING vidx (v) WITH (lists = 4)"
file=$(pgdata $NAME)/$(q $PORT "SELECT pg_relation_filepath('s_v')")
q $PORT "CHECKPOINT"
cluster_stop $NAME
check_eq "patch_index.py: next slot before" "$("$PY" "$ROBUST_DIR/patch_index.py" next-slot "$file" $LAST --checksums)" 1000
check "the server starts with the patched metapage" cluster_start $NAME
check_eq "vidx_stats reads the patched next slot (no checksum failure)" "$(stat next_slot 2>&1)" $LAST

log "one insert: the last slot"
q $PORT "INSERT INTO s VALUES (1001, '{0.5,0.5,0.5,0.5}')" 2>"$W/insert1"
check_eq "insert into the last slot: WARNINGs" "$(warnings "$W/insert1")" 0
check_eq "next slot after it: none left" "$(stat next_slot)" 4294967295
check_eq "postings without a slot" "$(stat postings_without_slot)" 0
check_eq "vidx_verify(s_v, true): the last slot's record is valid" "$(q $PORT "SELECT vidx_verify('s_v', true)" 2>&1)" t

log "inserts and updates without slots"
psql -X -q -At -v ON_ERROR_STOP=1 -h $SOCKDIR -p $PORT -U postgres -d postgres \
	-c "SELECT setseed(0.3); INSERT INTO s SELECT i, ARRAY(SELECT (random() * 6 - 3 + 0 * i)::real FROM generate_series(1, $DIMS)) FROM generate_series(1002, 1050) i" \
	-c "SELECT setseed(0.4); INSERT INTO s SELECT i, ARRAY(SELECT (random() * 6 - 3 + 0 * i)::real FROM generate_series(1, $DIMS)) FROM generate_series(1051, 1100) i" \
	>/dev/null 2>"$W/insert2"
check_eq "inserts after the slots ran out succeed (rows)" "$(q $PORT "SELECT count(*) FROM s")" 1100
check_eq "one session, two INSERTs: WARNINGs" "$(warnings "$W/insert2")" 1
sed 's/^/#   /' "$W/insert2"
check "the WARNING names the index and says REINDEX compacts the sidecar" \
	grep -q 'vidx index "s_v" has used all 4294967295 sidecar slots' "$W/insert2"
check "... and its hint is the REINDEX command" grep -q 'HINT:  REINDEX INDEX public.s_v; compacts the sidecar' "$W/insert2"
q $PORT "SELECT setseed(0.5); UPDATE s SET v = ARRAY(SELECT (random() * 6 - 3 + 0 * id)::real FROM generate_series(1, $DIMS)) WHERE id % 10 = 0" >/dev/null 2>"$W/update"
check_eq "an UPDATE in a new session: one WARNING" "$(warnings "$W/update")" 1
check_eq "postings without a slot (99 inserts, 110 updates)" "$(stat postings_without_slot)" 209
check_eq "postings without a record: the same" "$(stat postings_without_record)" 209
check_eq "vidx_stats sidecar state" "$(stat state)" ok
check_eq "k-NN queries through the index with the exact rows" "$(exact_queries 2>&1)" "22 of 22"
check_eq "vidx_verify(s_v, true)" "$(q $PORT "SELECT vidx_verify('s_v', true)" 2>&1)" t

log "DELETE and VACUUM"
q $PORT "DELETE FROM s WHERE id % 10 = 5"
check "VACUUM" q $PORT "VACUUM s"
check_eq "after VACUUM: postings" "$(q $PORT "SELECT vidx_stats('s_v')->>'postings'")" 990
check_eq "after VACUUM: k-NN queries with the exact rows" "$(exact_queries 2>&1)" "22 of 22"
check_eq "after VACUUM: vidx_verify(s_v, true)" "$(q $PORT "SELECT vidx_verify('s_v', true)" 2>&1)" t
check_eq "after VACUUM: the slots of the 200 removed postings that had one are free" "$(stat free_slots)" 200
check_eq "after VACUUM: postings without a slot (20 of the 209 removed)" "$(stat postings_without_slot)" 189
q $PORT "INSERT INTO s VALUES (1101, '{0.25,0.5,0.75,1}')" 2>"$W/insert4"
check_eq "an insert takes a freed slot: no WARNING" "$(warnings "$W/insert4")" 0
check_eq "... free slots left" "$(stat free_slots)" 199
check_eq "... postings without a slot unchanged" "$(stat postings_without_slot)" 189
check_eq "... vidx_verify(s_v, true): its record is valid" "$(q $PORT "SELECT vidx_verify('s_v', true)" 2>&1)" t

log "REINDEX"
check "REINDEX" q $PORT "REINDEX INDEX s_v"
check_eq "after REINDEX: next slot" "$(stat next_slot)" 991
check_eq "after REINDEX: postings without a record" "$(stat postings_without_record)" 0
q $PORT "INSERT INTO s VALUES (2000, '{1,2,3,4}')" 2>"$W/insert3"
check_eq "after REINDEX: an insert gives no WARNING" "$(warnings "$W/insert3")" 0
check_eq "after REINDEX: vidx_verify(s_v, true)" "$(q $PORT "SELECT vidx_verify('s_v', true)" 2>&1)" t
check "after REINDEX: the sidecar files are small again (the sparse 128 GiB one is gone)" \
	test "$(du -s --apparent-size --block-size=1M "$(pgdata $NAME)/vidx" | cut -f1)" -lt 10
check "server log: no backend died of a signal, no PANIC" log_clean $NAME
finish
