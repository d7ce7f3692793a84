#!/usr/bin/env bash
# 80_format: the on-disk format carries a version that the code checks.
#   - the metapage's format version is changed on disk: index scans and
#     vidx_verify fail with a clear error naming the index and both versions
#     (XX002 index_corrupted or 0A000); planning does not fail (the cost
#     estimate then assumes every page is read), so the table still answers
#     by seq scan; REINDEX repairs;
#   - the sidecar header's version is changed: same rows, one WARNING, REINDEX
#     repairs;
#   - ALTER EXTENSION vidx UPDATE: there is no earlier released version yet, so
#     only "already installed" is checked (upgrade scripts are tested once one exists).
source "$(dirname "$(readlink -f "$0")")/lib.sh"
NAME=rbst_format
PORT=5448
cluster_create $NAME $PORT || exit 1
D=$(pgdata $NAME)
check_eq "data checksums are off (so a page can be edited in place)" "$(q $PORT "SHOW data_checksums")" off
q $PORT "CREATE EXTENSION vidx; CREATE TABLE t (id int PRIMARY KEY, v real[]);
INSERT INTO t SELECT i, ARRAY(SELECT (sin(i * 0.7 + j) * 3)::real FROM generate_series(1, 40) j) FROM generate_series(1, 3000) i;
CREATE INDEX t_v ON t USING vidx (v) WITH (lists = 30)"
QUERY="SET enable_seqscan = off; SELECT string_agg(id::text, ',') FROM (SELECT id FROM t ORDER BY v <-> (SELECT v FROM t WHERE id = 17) LIMIT 10) s"
want=$(q $PORT "$QUERY")
idxfile=$D/$(q $PORT "SELECT pg_relation_filepath('t_v')")
cluster_stop $NAME # (a clean shutdown writes the pages; nothing to replay afterwards)
version=$("$PY" -c "import struct,sys; d=open(sys.argv[1],'rb').read(32); print(struct.unpack_from('<I', d, 28)[0])" "$idxfile")
log "metapage format version on disk: $version"
check "the metapage holds a format version (> 0)" test "${version:-0}" -gt 0

poke() { # poke FILE OFFSET UINT32
	"$PY" -c "import struct,sys; f=open(sys.argv[1],'r+b'); f.seek(int(sys.argv[2])); f.write(struct.pack('<I', int(sys.argv[3])))" "$@"
}
poke "$idxfile" 28 $((version + 1))
cluster_start $NAME
err=$(psql -X -q -At -h $SOCKDIR -p $PORT -U postgres -v VERBOSITY=verbose -c "SET enable_seqscan = off" \
	-c "SELECT id FROM t ORDER BY v <-> (SELECT v FROM t WHERE id = 17) LIMIT 10" 2>&1 | grep '^ERROR' | head -1)
echo "# scan: $err"
check "a scan of an index of another format version fails naming the index and both versions" \
	bash -c "echo '$err' | grep -q 't_v' && echo '$err' | grep -q 'version $((version + 1))' && echo '$err' | grep -q 'version $version'"
err=$(psql -X -q -At -h $SOCKDIR -p $PORT -U postgres -c "SELECT vidx_verify('t_v')" 2>&1 | grep '^ERROR' | head -1)
check "vidx_verify fails on it ($err)" test -n "$err"
err=$(psql -X -q -At -h $SOCKDIR -p $PORT -U postgres -c "INSERT INTO t VALUES (5000, (SELECT v FROM t WHERE id = 1))" 2>&1 | grep '^ERROR' | head -1)
check "an insert into it fails rather than writing a format it does not know ($err)" test -n "$err"
check_eq "the table still answers plain queries" "$(q $PORT "SELECT count(*) FROM t")" 3000
got=$(q $PORT "SET enable_indexscan = off; SELECT string_agg(id::text, ',') FROM (SELECT id FROM t ORDER BY v <-> (SELECT v FROM t WHERE id = 17) LIMIT 10) s" 2>&1)
check_eq "the table still answers k-NN by sequential scan (enable_indexscan off: planning does not read the bad metapage as an error)" "$got" "$want"
plan=$(q $PORT "EXPLAIN (COSTS OFF) SELECT id FROM t ORDER BY v <-> (SELECT v FROM t WHERE id = 17) LIMIT 10" 2>&1 | tr '\n' ' ')
check "EXPLAIN with default settings plans without an error ($plan)" bash -c "echo '$plan' | grep -q 'Limit' && ! echo '$plan' | grep -q ERROR"
err=$(psql -X -q -At -h $SOCKDIR -p $PORT -U postgres -c "SELECT vidx_stats('t_v')" 2>&1 | grep '^ERROR' | head -1)
check "vidx_stats fails on it with the version error ($err)" bash -c "echo '$err' | grep -q 'version $((version + 1))'"
check "REINDEX repairs it" q $PORT "REINDEX INDEX t_v"
check_eq "after REINDEX: the same rows" "$(q $PORT "$QUERY")" "$want"
check_eq "after REINDEX: vidx_verify" "$(q $PORT "SELECT vidx_verify('t_v')")" t

# sidecar header version (offset 8: after the 8-byte magic)
sc=$D/vidx/$(ls -t "$D/vidx" | head -1)
sv=$("$PY" -c "import struct,sys; d=open(sys.argv[1],'rb').read(16); print(struct.unpack_from('<I', d, 8)[0])" "$sc")
log "sidecar format version on disk: $sv ($sc)"
poke "$sc" 8 $((sv + 1))
out=$(psql -X -q -At -h $SOCKDIR -p $PORT -U postgres -c "SET enable_seqscan = off" \
	-c "SELECT string_agg(id::text, ',') FROM (SELECT id FROM t ORDER BY v <-> (SELECT v FROM t WHERE id = 17) LIMIT 10) s" \
	-c "SELECT string_agg(id::text, ',') FROM (SELECT id FROM t ORDER BY v <-> (SELECT v FROM t WHERE id = 17) LIMIT 10) s" 2>&1)
echo "$out" | sed 's/^/# sidecar version changed: /'
check_eq "sidecar of another version: the same rows (twice)" "$(echo "$out" | grep -v '^WARNING\|^HINT\|^DETAIL' | sort -u)" "$want"
check_eq "sidecar of another version: one WARNING in the session" "$(echo "$out" | grep -c '^WARNING')" 1
check "sidecar of another version: vidx_verify(check_sidecar) fails" bash -c "psql -X -q -At -h $SOCKDIR -p $PORT -U postgres -c \"SELECT vidx_verify('t_v')\" 2>&1 | grep -q ERROR"
check "REINDEX repairs it" q $PORT "REINDEX INDEX t_v"
check_eq "after REINDEX: vidx_verify" "$(q $PORT "SELECT vidx_verify('t_v')")" t

# upgrade path
upgrades=$(ls "$ROOT"/sql/vidx--*--*.sql 2>/dev/null | wc -l)
log "upgrade scripts in sql/: $upgrades; default_version $(sed -n "s/^default_version = '\(.*\)'/\1/p" "$ROOT/vidx.control")"
out=$(psql -X -q -At -h $SOCKDIR -p $PORT -U postgres -c "ALTER EXTENSION vidx UPDATE" 2>&1)
check "ALTER EXTENSION vidx UPDATE: already at the default version ($out)" bash -c "echo '$out' | grep -q 'already installed'"
if [ "$upgrades" = 0 ]; then
	echo "# SKIP: no earlier released version, no upgrade script to test yet"
fi
check "no backend died" log_clean $NAME
finish
