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
#   C. DROP INDEX, DROP TABLE, REINDEX, TRUNCATE, VACUUM FULL and DROP DATABASE
#      leave no sidecar file behind; a rolled-back DROP INDEX keeps it.
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
exists() { [ -e "$1" ]; }
f=$(sidecar_of $P ct_a c1)
check "the index has a sidecar ($f)" exists "$f"
psql -X -q -h $SOCKDIR -p $P -U postgres -d c1 -c "LOAD 'vidx'" -c "BEGIN" -c "DROP INDEX ct_a" -c "ROLLBACK"
check "a rolled-back DROP INDEX keeps the sidecar" exists "$f"
psql -X -q -h $SOCKDIR -p $P -U postgres -d c1 -c "LOAD 'vidx'" -c "DROP INDEX ct_a"
check "DROP INDEX (in a session that has loaded vidx) removes the sidecar" bash -c "! test -e $f"
q $P c1 "CREATE INDEX ct_d ON ct USING vidx (v)"
f=$(sidecar_of $P ct_d c1)
q $P c1 "DROP INDEX ct_d"
todo "DROP INDEX in a new session (vidx not loaded yet) removes the sidecar at once" bash -c "! test -e $f"
q $P c1 "CREATE INDEX ct_e ON ct USING vidx (v)"
check "... the next vidx build in the database sweeps it away" bash -c "! test -e $f"
q $P c1 "DROP INDEX ct_e"
f=$(sidecar_of $P ct_b c1)
q $P c1 "REINDEX INDEX ct_b"
check "REINDEX removes the old sidecar" bash -c "! test -e $f"
check "REINDEX made a new sidecar" exists "$(sidecar_of $P ct_b c1)"
f=$(sidecar_of $P ct_b c1)
q $P c1 "VACUUM FULL ct"
check "VACUUM FULL removes the old sidecar" bash -c "! test -e $f"
f=$(sidecar_of $P ct_b c1)
q $P c1 "TRUNCATE ct"
check "TRUNCATE removes the old sidecar" bash -c "! test -e $f"
q $P c1 "INSERT INTO ct VALUES (1, '{1,2,3}')"
f=$(sidecar_of $P ct_c c1)
psql -X -q -h $SOCKDIR -p $P -U postgres -d c1 -c "LOAD 'vidx'" -c "DROP TABLE ct"
check "DROP TABLE removes the sidecars of its indexes" bash -c "! test -e $f"
q $P c1 "CREATE TABLE sweep (v real[]); INSERT INTO sweep VALUES ('{1,2}'); CREATE INDEX sweep_v ON sweep USING vidx (v); DROP TABLE sweep" # the build sweeps ct_e's file

check_eq "database c1 has no sidecar file left" "$(ls "$PD/vidx" | grep -c "^[0-9]*_$(q $P "SELECT oid FROM pg_database WHERE datname = 'c1'")_")" 0

q $P "CREATE DATABASE c2"
q $P c2 "CREATE EXTENSION vidx; CREATE TABLE ct (id int, v real[]);
INSERT INTO ct SELECT i, ARRAY[sin(i), cos(i), sin(2 * i)]::real[] FROM generate_series(1, 500) i;
CREATE INDEX ct_a ON ct USING vidx (v); CREATE INDEX ct_b ON ct USING vidx (v)"
db=$(q $P "SELECT oid FROM pg_database WHERE datname = 'c2'")
check_eq "database c2 has 2 sidecar files" "$(ls "$PD/vidx" | grep -c "^[0-9]*_${db}_")" 2
q $P "DROP DATABASE c2"
n=$(ls "$PD/vidx" | grep -c "^[0-9]*_${db}_")
todo "DROP DATABASE removes the sidecar files of the database at once ($n left)" test "$n" = 0
q $P "CREATE TABLE sweep_trigger (v real[]); INSERT INTO sweep_trigger VALUES ('{1,2}'); CREATE INDEX ON sweep_trigger USING vidx (v)"
n=$(ls "$PD/vidx" | grep -c "^[0-9]*_${db}_")
todo "DROP DATABASE: the next vidx build in another database sweeps the dropped database's files ($n left)" test "$n" = 0
check "no backend died (primary)" log_clean $PN
check "no backend died (restored)" log_clean $RN
finish
