#!/usr/bin/env bash
# 50_sidecar: the sidecar faults that test/t/03_sidecar.sql (deleted,
# truncated, one record corrupted) does not cover, and file cleanup.
#   A. stale after a restore: a base backup (which copies the sidecar) is
#      restored and the archived WAL of later inserts, updates, deletes and a
#      VACUUM is replayed (point-in-time recovery to the end of the archive);
#   B. stale after an old copy of the file is put back under a running index
#      (restart), then more inserts land beyond its end;
#   then results equal the healthy server's, one WARNING per session names the
#   index, and REINDEX repairs it (sidecar state ok, no WARNING, verify true).
#   C. DROP INDEX (also CONCURRENTLY), DROP TABLE, SCHEMA, MATERIALIZED VIEW,
#      OWNED, ALTER TABLE DROP COLUMN, DROP EXTENSION, REINDEX, TRUNCATE, VACUUM
#      FULL and DROP DATABASE leave no sidecar file behind, each run in a new
#      session that has not loaded vidx; rolled-back DROPs keep the file and
#      rolled-back builds leave none; with the event trigger disabled, the
#      sweep (first use in a backend, a build, vidx_sweep_sidecars()) removes
#      the file of an index dropped unseen.
source "$(dirname "$(readlink -f "$0")")/lib.sh"

PN=rbst_side
P=5445
RN=rbst_restore
R=5446
DIMS=24
W=$(mktempdir)
ARCH=$W/archive
install -d -o postgres -g postgres -m 700 "$ARCH"
JOURNAL=$W/journal
: >"$JOURNAL"

cluster_create $PN $P wal_level=replica archive_mode=on \
	"archive_command = 'test ! -f $ARCH/%f && cp %p $ARCH/%f'" autovacuum=off || exit 1
PD=$(pgdata $PN)
q $P "CREATE EXTENSION vidx; CREATE TABLE t (id bigint PRIMARY KEY, v real[])"
robust_py writer --port $P --dims $DIMS --journal "$JOURNAL" --clients 2 --id-base 1000000 --max-ops 4000 --batch 100 >/dev/null
q $P "CREATE INDEX t_v ON t USING vidx (v) WITH (lists = 40)"
sidecar_of() { # sidecar_of PORT INDEX [DB]
	q "$1" "${3:-postgres}" "SELECT current_setting('data_directory') || '/vidx/' || CASE WHEN c.reltablespace = 0 THEN d.dattablespace ELSE c.reltablespace END || '_' || d.oid || '_' || pg_relation_filenode(c.oid) || '.vsc' FROM pg_class c, pg_database d WHERE c.oid = '$2'::regclass AND d.datname = current_database()"
}
state() { q "$1" "SELECT vidx_stats('t_v')->'sidecar'->>'state'"; }
compare_to() { # compare_to LABEL PORT1 PORT2: same rows (default settings, then exact); one WARNING naming t_v on PORT2
	local out n
	out=$(robust_py compare --port1 "$2" --port2 "$3" --dims $DIMS --queries 30 --k 10 --probes 10 2>&1)
	if [ $? = 0 ]; then ok "$1: default settings: identical rows ($(echo "$out" | cut -c1-45))"; else not_ok "$1: default settings: rows differ: $out"; fi
	n=$(echo "$out" | grep -o 'WARNING' | wc -l)
	check_eq "$1: one WARNING in the session" "$n" 1
	if echo "$out" | grep -q 'WARNING:[^]]*t_v[^]]*REINDEX'; then ok "$1: the WARNING names the index and the repair"; else not_ok "$1: WARNING: $out"; fi
	echo "# [$1] $out"
	out=$(robust_py compare --port1 "$2" --port2 "$3" --dims $DIMS --queries 10 --k 200 --probes 1000000 --exact 2>&1)
	if [ $? = 0 ]; then ok "$1: exact settings, k 200: identical rows"; else not_ok "$1: exact settings: rows differ: $out"; fi
}
exact_check() { # exact_check LABEL PORT [--no-sidecar]
	local out
	out=$(robust_py check --port "$2" --index t_v --dims $DIMS --journal "$JOURNAL" --queries 2 --sample 100 ${3:-} 2>&1)
	if echo "$out" | grep -q "^not ok"; then echo "$out" | sed "s/^/# [$1] /"; not_ok "$1: exact-recall check"; else ok "$1: exact-recall check: $(echo "$out" | sed -n 's/^COUNTS //p')"; fi
}

# ---------------------------------------------------------------- A. restore
log "A: base backup, then writes on the primary, then point-in-time restore to the end of the archive"
BK=$W/backup
install -d -o postgres -g postgres -m 700 "$BK"
check "pg_basebackup (the sidecar is copied with it)" runuser -u postgres -- pg_basebackup -h $SOCKDIR -p $P -U postgres -D "$BK" -X stream -c fast
check "the backup holds a sidecar file" bash -c "ls $BK/vidx/*.vsc"
robust_py writer --port $P --dims $DIMS --journal "$JOURNAL" --clients 2 --id-base 100000000 \
	--insert-weight 3 --update-weight 1 --delete-weight 1 --batch 5 --max-ops 1500 >"$W/writer.A" 2>&1
check "writes after the backup: no SQL error" grep -q '"sql_errors": 0' "$W/writer.A"
q $P "VACUUM t"
check_eq "primary: sidecar state ok" "$(state $P)" ok
walfile=$(q $P "SELECT pg_walfile_name(pg_switch_wal())")
archived() { [ "$(q $P "SELECT last_archived_wal >= '$walfile' FROM pg_stat_archiver")" = t ]; }
check "the WAL up to $walfile is archived" wait_until 120 archived

CLUSTERS+=($RN)
cluster_remove $RN
pg_createcluster $PGVER $RN -p $R --start-conf=manual -- -A trust >/dev/null
RD=$(pgdata $RN)
rm -rf "$RD"
cp -a "$BK" "$RD"
touch "$RD/recovery.signal"
chown postgres:postgres "$RD/recovery.signal"
{
	echo "restore_command = 'cp $ARCH/%f %p'"
	echo "archive_mode = off"
	echo "listen_addresses = '127.0.0.1'"
} >"/etc/postgresql/$PGVER/$RN/conf.d/robust.conf"
check "the restored server starts and replays the archive" cluster_start $RN
out_of_recovery() { [ "$(q $R "SELECT pg_is_in_recovery()")" = f ]; }
check "the restored server finishes recovery" wait_until 300 out_of_recovery
check_eq "restored: the same rows as the primary" \
	"$(q $R "SELECT md5(string_agg(id || ':' || v::text, ',' ORDER BY id)) FROM t")" \
	"$(q $P "SELECT md5(string_agg(id || ':' || v::text, ',' ORDER BY id)) FROM t")"
log "restored: vidx_stats sidecar: $(q $R "SELECT vidx_stats('t_v')->'sidecar'")"
compare_to "A restored" $P $R
exact_check "A restored" $R --no-sidecar
check "A: REINDEX on the restored server" q $R "REINDEX INDEX t_v"
check_eq "A repaired: sidecar state ok" "$(state $R)" ok
check "A: REINDEX on the primary too (same rows, deterministic build)" q $P "REINDEX INDEX t_v"
out=$(robust_py compare --port1 $P --port2 $R --dims $DIMS --queries 30 --k 10 --probes 10 2>&1)
if [ $? = 0 ] && ! echo "$out" | grep -q WARNING; then ok "A repaired: identical rows, no WARNING"; else not_ok "A repaired: $out"; fi
exact_check "A repaired" $R
cluster_stop $RN

# ---------------------------------------------------------------- B. old copy put back
log "B: copy the sidecar aside, insert, put the old copy back, restart"
F=$(sidecar_of $P t_v)
cp -p "$F" "$W/old.vsc"
robust_py writer --port $P --dims $DIMS --journal "$JOURNAL" --clients 2 --id-base 200000000 --max-ops 600 --batch 5 >"$W/writer.B" 2>&1
check_eq "B: healthy before the copy is put back" "$(state $P)" ok
cluster_stop $PN
cp -p "$W/old.vsc" "$F"
check_eq "B: the old copy keeps mode 600" "$(stat -c %a "$F")" 600
cluster_start $PN
log "B: sidecar state after the copy is put back: $(state $P)"
exact_check "B stale" $P --no-sidecar
out=$(psql -X -q -At -h $SOCKDIR -p $P -U postgres -c "SET enable_seqscan = off" -c "SET vidx.probes = 1000000" \
	-c "SELECT count(*) FROM (SELECT id FROM t ORDER BY v <-> (SELECT v FROM t ORDER BY id DESC LIMIT 1) LIMIT 100000) s" \
	-c "SELECT count(*) FROM (SELECT id FROM t ORDER BY v <-> (SELECT v FROM t ORDER BY id LIMIT 1) LIMIT 100000) s" 2>&1)
check_eq "B stale: one WARNING in a session of two full scans" "$(echo "$out" | grep -c WARNING)" 1
robust_py writer --port $P --dims $DIMS --journal "$JOURNAL" --clients 2 --id-base 300000000 \
	--insert-weight 3 --update-weight 1 --delete-weight 1 --batch 5 --max-ops 600 >"$W/writer.B2" 2>&1
check "B stale: inserts, updates, deletes on top of the stale file work" grep -q '"sql_errors": 0' "$W/writer.B2"
exact_check "B stale + writes" $P --no-sidecar
check "B: REINDEX" q $P "REINDEX INDEX t_v"
check_eq "B repaired: sidecar state ok" "$(state $P)" ok
exact_check "B repaired" $P
out=$(psql -X -q -At -h $SOCKDIR -p $P -U postgres -c "SET enable_seqscan = off" -c "SET vidx.probes = 1000000" \
	-c "SELECT count(*) FROM (SELECT id FROM t ORDER BY v <-> (SELECT v FROM t ORDER BY id DESC LIMIT 1) LIMIT 100000) s" 2>&1)
check_eq "B repaired: no WARNING" "$(echo "$out" | grep -c WARNING)" 0

# ---------------------------------------------------------------- C. cleanup
log "C: files left behind"
q $P "CREATE DATABASE c1"
q $P c1 "CREATE EXTENSION vidx; CREATE TABLE ct (id int, v real[]);
INSERT INTO ct SELECT i, ARRAY[sin(i), cos(i), sin(2 * i)]::real[] FROM generate_series(1, 500) i;
CREATE INDEX ct_a ON ct USING vidx (v); CREATE INDEX ct_b ON ct USING vidx (v); CREATE INDEX ct_c ON ct USING vidx (v)"
c1=$(q $P "SELECT oid FROM pg_database WHERE datname = 'c1'")
exists() { [ -e "$1" ]; }
gone() { [ ! -e "$1" ]; }
nfiles() { ls "$PD/vidx" | grep -c "^[0-9]*_$1_"; } # sidecar files of a database OID
new_index() { # new_index NAME [TABLE]: a vidx index on ct (or TABLE) of c1; prints its sidecar path
	q $P c1 "CREATE INDEX $1 ON ${2:-ct} USING vidx (v)"
	sidecar_of $P "$1" c1
}
# Every q/psql below is a new session: vidx is not loaded in it unless said so.
f=$(sidecar_of $P ct_a c1)
check "the index has a sidecar ($f)" exists "$f"
psql -X -q -h $SOCKDIR -p $P -U postgres -d c1 -c "BEGIN" -c "DROP INDEX ct_a" -c "ROLLBACK"
check "a rolled-back DROP INDEX keeps the sidecar" exists "$f"
psql -X -q -h $SOCKDIR -p $P -U postgres -d c1 -c "BEGIN" -c "SAVEPOINT s" -c "DROP INDEX ct_a" -c "ROLLBACK TO s" -c "COMMIT"
check "a DROP INDEX rolled back to a savepoint keeps the sidecar" exists "$f"
q $P c1 "DROP INDEX ct_a"
check "DROP INDEX in a new session (vidx not loaded before) removes the sidecar at commit" gone "$f"
f=$(new_index ct_d)
q $P c1 "DROP INDEX CONCURRENTLY ct_d"
check "DROP INDEX CONCURRENTLY removes the sidecar" gone "$f"
f=$(new_index ct_d)
q $P c1 "ALTER TABLE ct ADD COLUMN w real[]; CREATE INDEX ct_w ON ct USING vidx (w)"
fw=$(sidecar_of $P ct_w c1)
q $P c1 "ALTER TABLE ct DROP COLUMN w"
check "ALTER TABLE DROP COLUMN removes the sidecar of the column's index" gone "$fw"
q $P c1 "DROP INDEX ct_d"

# Rebuilds: the old file goes at commit, the new one at abort.
f=$(sidecar_of $P ct_b c1)
n=$(nfiles $c1)
q $P c1 "BEGIN; REINDEX INDEX ct_b; ROLLBACK"
check_eq "a rolled-back REINDEX leaves no file (its new sidecar goes at abort)" "$(nfiles $c1)" "$n"
check "... and keeps the old sidecar" exists "$f"
q $P c1 "BEGIN; CREATE INDEX ct_x ON ct USING vidx (v); SAVEPOINT s; CREATE INDEX ct_y ON ct USING vidx (v); ROLLBACK TO s; REINDEX INDEX ct_x; ROLLBACK"
check_eq "rolled-back CREATE INDEX, REINDEX and savepoints leave no file" "$(nfiles $c1)" "$n"
q $P c1 "REINDEX INDEX ct_b"
check "REINDEX removes the old sidecar" gone "$f"
check "REINDEX made a new sidecar" exists "$(sidecar_of $P ct_b c1)"
f=$(sidecar_of $P ct_b c1)
q $P c1 "VACUUM FULL ct"
check "VACUUM FULL removes the old sidecar" gone "$f"
f=$(sidecar_of $P ct_b c1)
q $P c1 "TRUNCATE ct"
check "TRUNCATE removes the old sidecar" gone "$f"
q $P c1 "INSERT INTO ct SELECT i, ARRAY[sin(i), cos(i), sin(2 * i)]::real[] FROM generate_series(1, 500) i"

# Other commands that drop indexes, each in a new session.
f=$(sidecar_of $P ct_c c1)
q $P c1 "DROP TABLE ct"
check "DROP TABLE removes the sidecars of its indexes" gone "$f"
q $P c1 "CREATE SCHEMA s1; CREATE TABLE s1.st (v real[]); INSERT INTO s1.st VALUES ('{1,2}'), ('{2,1}'); CREATE INDEX st_v ON s1.st USING vidx (v)"
f=$(sidecar_of $P s1.st_v c1)
q $P c1 "DROP SCHEMA s1 CASCADE"
check "DROP SCHEMA ... CASCADE removes the sidecar" gone "$f"
q $P c1 "CREATE MATERIALIZED VIEW mv AS SELECT i AS id, ARRAY[i, -i]::real[] AS v FROM generate_series(1, 100) i; CREATE INDEX mv_v ON mv USING vidx (v)"
f=$(sidecar_of $P mv_v c1)
q $P c1 "DROP MATERIALIZED VIEW mv"
check "DROP MATERIALIZED VIEW removes the sidecar of its index" gone "$f"
q $P c1 "CREATE ROLE carol; GRANT CREATE ON SCHEMA public TO carol; SET ROLE carol; CREATE TABLE ot (v real[]); INSERT INTO ot VALUES ('{1,2}'); CREATE INDEX ot_v ON ot USING vidx (v)"
f=$(sidecar_of $P ot_v c1)
q $P c1 "DROP OWNED BY carol"
check "DROP OWNED removes the sidecar of the role's index" gone "$f"
q $P c1 "REVOKE CREATE ON SCHEMA public FROM carol"
q $P "DROP ROLE carol"
q $P c1 "CREATE TABLE ct (id int, v real[]); INSERT INTO ct SELECT i, ARRAY[sin(i), cos(i), sin(2 * i)]::real[] FROM generate_series(1, 500) i"
check_eq "a temporary index has a sidecar while its session lasts" \
	"$(q $P c1 "CREATE TEMP TABLE tt (v real[]); INSERT INTO tt VALUES ('{1,2}'), ('{2,1}'); CREATE INDEX tt_v ON tt USING vidx (v);
	SELECT count(*) FROM pg_ls_dir('vidx') f WHERE f ~ '^[0-9]+_${c1}_[0-9]+_t[0-9]+[.]vsc$'")" 1
no_temp_files() { ! ls "$PD/vidx" | grep -q "^[0-9]*_${c1}_[0-9]*_t[0-9]*\.vsc$"; }
check "a temporary index's sidecar goes with its session (removed by the backend's exit, polled up to 30 s)" wait_until 30 no_temp_files

# The sweep, the backstop for drops the hook did not see (here: the event
# trigger disabled): at the first use of vidx in a backend, at every build,
# and on demand.
q $P c1 "ALTER EVENT TRIGGER vidx_drop_cleanup DISABLE"
f=$(new_index ct_e)
q $P c1 "DROP INDEX ct_e"
check "(set-up) with the event trigger disabled, DROP INDEX in a new session leaves the file" exists "$f"
q $P c1 "SELECT count(*) FROM ct WHERE id = 1" >/dev/null
check "... a session that does not use vidx leaves it" exists "$f"
q $P c1 "CREATE INDEX ct_f ON ct USING vidx (v)"
check "... the next vidx build in the database sweeps it" gone "$f"
f=$(new_index ct_e)
q $P c1 "DROP INDEX ct_e"
check "(set-up) another file left by DROP INDEX" exists "$f"
check_eq "... the first k-NN query of a new session finds its rows" \
	"$(q $P c1 "SET enable_seqscan = off; SELECT count(*) FROM (SELECT id FROM ct ORDER BY v <-> '{1,2,3}' LIMIT 5) s")" 5
check "... and sweeps the file (first use of vidx in the backend)" gone "$f"
f=$(new_index ct_e)
q $P c1 "DROP INDEX ct_e"
q $P c1 "INSERT INTO ct VALUES (501, '{1,2,3}')"
check "... the first insert into a vidx index of a new session sweeps it too" gone "$f"
f=$(new_index ct_e)
q $P c1 "DROP INDEX ct_e"
check_eq "... vidx_sweep_sidecars() removes it and says so" "$(q $P c1 "SELECT vidx_sweep_sidecars()")" 1
check "... (gone)" gone "$f"
f=$(new_index ct_g)
q $P c1 "DROP INDEX ct_g"
check "(set-up) one more file left by DROP INDEX" exists "$f"
q $P c1 "ALTER EVENT TRIGGER vidx_drop_cleanup ENABLE ALWAYS"

# DROP EXTENSION vidx CASCADE drops every vidx index of the database, and
# with them goes every sidecar file of the database (also one no index uses).
check_eq "database c1 has 2 sidecar files (ct_f, and ct_g's left by DROP INDEX)" "$(nfiles $c1)" 2
psql -X -q -h $SOCKDIR -p $P -U postgres -d c1 -c "DROP EXTENSION vidx CASCADE" 2>&1 | grep -v '^NOTICE\|^DETAIL\|^drop cascades' | sed 's/^/# /'
check_eq "DROP EXTENSION vidx CASCADE (new session) removes every sidecar of the database" "$(nfiles $c1)" 0
check_eq "... and the extension is gone" "$(q $P c1 "SELECT count(*) FROM pg_extension WHERE extname = 'vidx'")" 0
check "... DROP TABLE works without the extension" q $P c1 "DROP TABLE ct"

# DROP DATABASE: at commit if the dropping session has vidx loaded; otherwise
# by the first use of vidx in a backend of any database, any build, or
# vidx_sweep_sidecars().
mkdb() {
	q $P "CREATE DATABASE $1"
	q $P "$1" "CREATE EXTENSION vidx; CREATE TABLE ct (id int, v real[]);
INSERT INTO ct SELECT i, ARRAY[sin(i), cos(i), sin(2 * i)]::real[] FROM generate_series(1, 500) i;
CREATE INDEX ct_a ON ct USING vidx (v); CREATE INDEX ct_b ON ct USING vidx (v)"
	q $P "SELECT oid FROM pg_database WHERE datname = '$1'"
}
db=$(mkdb c2)
check_eq "database c2 has 2 sidecar files" "$(nfiles $db)" 2
q $P "DROP DATABASE c2"
log "DROP DATABASE c2 in a session that has not loaded vidx: $(nfiles $db) files left until the sweep"
check_eq "vidx_sweep_sidecars() in another database removes the dropped database's 2 files" "$(q $P "SELECT vidx_sweep_sidecars()")" 2
check_eq "... none left" "$(nfiles $db)" 0
db=$(mkdb c3)
q $P "DROP DATABASE c3"
check_eq "DROP DATABASE c3, then a k-NN query in a new session of another database: right rows" \
	"$(q $P "SET enable_seqscan = off; SELECT count(*) FROM (SELECT id FROM t ORDER BY v <-> (SELECT v FROM t LIMIT 1) LIMIT 5) s")" 5
check_eq "... and the first use of vidx in that session swept the dropped database's files" "$(nfiles $db)" 0
db=$(mkdb c4)
psql -X -q -h $SOCKDIR -p $P -U postgres -c "LOAD 'vidx'" -c "DROP DATABASE c4"
check_eq "DROP DATABASE in a session that has loaded vidx removes the files at commit" "$(nfiles $db)" 0
db=$(mkdb c5)
q $P "DROP DATABASE c5"
q $P "CREATE TABLE sweep_trigger (v real[]); INSERT INTO sweep_trigger VALUES ('{1,2}'); CREATE INDEX ON sweep_trigger USING vidx (v)"
check_eq "DROP DATABASE c5, then a vidx build in another database sweeps its files" "$(nfiles $db)" 0
check_eq "no sidecar file of a database that does not exist" \
	"$(ls "$PD/vidx" | sed 's/^[0-9]*_\([0-9]*\)_.*/\1/' | sort -u | grep -vxF -f <(q $P "SELECT oid FROM pg_database") | wc -l)" 0
check "no backend died (primary)" log_clean $PN
check "no backend died (restored)" log_clean $RN
finish
