#!/usr/bin/env bash
# 25_calibration: the recall curve behind vidx.target_recall lives in the
# index's metapage and is WAL-logged (one GenericXLog record), so it survives
# what the index survives:
#   A. kill -9 of the server right after CREATE INDEX (no checkpoint since):
#      recovery gives the same curve;
#   B. kill -9 right after vidx_calibrate() on an index that grew: the new curve;
#   C. a clean restart: the same curve;
#   D. a streaming standby (pg_basebackup -R) has the primary's curve, and the
#      curve VACUUM measures again once the index doubled reaches it through
#      WAL; a scan under vidx.target_recall reads the same probes on both (the
#      DEBUG1 line of the scan says how many); vidx_calibrate() is refused there;
#      a crash of the standby keeps it;
#   E. an index written before the calibration existed (its fields zero, past
#      the metapage's pd_lower, as the format allows): readable, verified,
#      target_recall falls back to vidx.probes, and vidx_calibrate() fills it in.
# 16 dimensions.
source "$(dirname "$(readlink -f "$0")")/lib.sh"

P=5464
S=5465
PN=rbst_calib_p
SN=rbst_calib_s
DIMS=16

cluster_create $PN $P wal_level=replica max_wal_senders=5 hot_standby=on || exit 1
D=$(pgdata $PN)
check_eq "data checksums are off (so the metapage can be edited in place)" "$(q $P "SHOW data_checksums")" off
# (no autovacuum: its VACUUMs would measure the curve again at their own time)
q $P "CREATE EXTENSION vidx; CREATE TABLE t (id int PRIMARY KEY, v real[]) WITH (autovacuum_enabled = false)"
rows() { # rows FROM TO
	q $P "INSERT INTO t SELECT i, ARRAY(SELECT (random() * 2 - 1 + 0 * i)::real FROM generate_series(1, $DIMS)) FROM generate_series($1, $2) i"
}
rows 1 5000
curve() { q $1 "SELECT (vidx_stats('t_v')->'calibration') - 'target_probes'"; }
target_probes() { q $1 "SET vidx.target_recall = 0.95; SELECT vidx_stats('t_v')->'calibration'->>'target_probes'"; }
restart_after_crash() {
	check "$1: server restarts after kill -9 (crash recovery)" cluster_start $PN
	check "$1: recovery log shows crash recovery" grep -q "database system was interrupted\|not properly shut down" "$(pglog $PN)"
}

# ------------------------------------------------------------------ A. build, crash
q $P "CHECKPOINT"
q $P "CREATE INDEX t_v ON t USING vidx (v) WITH (lists = 70)"
built=$(curve $P)
echo "# built: $built"
check_eq "A: the build measured the curve (rows)" "$(q $P "SELECT vidx_stats('t_v')->'calibration'->>'rows'")" 5000
cluster_crash $PN
restart_after_crash A
check_eq "A: after crash recovery, the same curve" "$(curve $P)" "$built"
check_eq "A: vidx_verify" "$(q $P "SELECT vidx_verify('t_v')")" t

# ------------------------------------------------------------------ B. grown, vidx_calibrate, crash
rows 5001 12000
check_eq "B: the curve is stale once the index doubled" "$(q $P "SELECT vidx_stats('t_v')->'calibration'->>'stale'")" true
check "B: vidx_calibrate()" q $P "SELECT vidx_calibrate('t_v')"
grown=$(curve $P)
check_eq "B: vidx_calibrate measured the grown index" "$(q $P "SELECT vidx_stats('t_v')->'calibration'->>'rows'")" 12000
cluster_crash $PN
restart_after_crash B
check_eq "B: after crash recovery, the curve vidx_calibrate measured" "$(curve $P)" "$grown"

# ------------------------------------------------------------------ C. clean restart
cluster_stop $PN
check "C: the server starts again" cluster_start $PN
check_eq "C: after a clean restart, the same curve" "$(curve $P)" "$grown"

# ------------------------------------------------------------------ D. standby
log "D: standby by pg_basebackup -R"
standby_create "D: " $P $SN $S
check_eq "D: the standby has the primary's curve" "$(curve $S)" "$grown"
rows 12001 25000
check "D: VACUUM on the primary" q $P "VACUUM t"
vacuumed=$(curve $P)
check_eq "D: VACUUM measured the doubled index again" "$(q $P "SELECT vidx_stats('t_v')->'calibration'->>'rows'")" 25000
check "D: the standby catches up" robust_py sync --primary $P --standby $S --timeout 300
check_eq "D: the standby has the curve VACUUM measured (WAL)" "$(curve $S)" "$vacuumed"
tp=$(target_probes $P)
check_eq "D: vidx.target_recall 0.95 gives the same probes on the standby ($tp)" "$(target_probes $S)" "$tp"
dbg=$(psql -X -q -At -h $SOCKDIR -p $S -U postgres -c "SET enable_seqscan = off" -c "SET vidx.target_recall = 0.95" \
	-c "SET client_min_messages = debug1" -c "SELECT count(*) FROM (SELECT id FROM t ORDER BY v <-> (SELECT v FROM t WHERE id = 7) LIMIT 10) s" 2>&1 | grep 'vidx scan of' | head -1)
echo "# standby scan: $dbg"
lo=$("$PY" -c "import math; print(math.floor($tp))")
hi=$("$PY" -c "import math; print(math.ceil($tp))")
check "D: the scan's DEBUG1 line on the standby says it read $lo or $hi probes (target_probes $tp) for vidx.target_recall" \
	bash -c "echo '$dbg' | grep -q 'probes \($lo\|$hi\) (vidx.target_recall)'"
err=$(psql -X -q -At -h $SOCKDIR -p $S -U postgres -c "SELECT vidx_calibrate('t_v')" 2>&1 | grep '^ERROR' | head -1)
check "D: vidx_calibrate is refused on the standby ($err)" bash -c "echo '$err' | grep -q 'recovery'"
cluster_crash $SN
check "D: the standby restarts after kill -9" cluster_start $SN
check_eq "D: after its crash, the standby has the same curve" "$(curve $S)" "$vacuumed"
check "no backend died (standby log)" log_clean $SN
cluster_stop $SN

# ------------------------------------------------------------------ E. an index from before the calibration
log "E: the metapage as written before the calibration fields existed"
idxfile=$D/$(q $P "SELECT pg_relation_filepath('t_v')")
vrecall=$(q $P "SELECT vidx_stats('t_v')->'calibration'->'recall'")
cluster_stop $PN
# calib_npoints is at byte 128 of the metapage contents (after the 24-byte
# page header); the old metapage ended there (pd_lower, at byte 12 of the page).
"$PY" - "$idxfile" <<'EOF'
import struct, sys
f = open(sys.argv[1], 'r+b')
page = bytearray(f.read(8192))
start = 24 + 128
lower = struct.unpack_from('<H', page, 12)[0]
page[start:lower] = bytes(lower - start)
struct.pack_into('<H', page, 12, start)
f.seek(0)
f.write(page)
EOF
check "E: the server starts" cluster_start $PN
check_eq "E: no calibration in vidx_stats" "$(q $P "SELECT vidx_stats('t_v')->'calibration'")" null
check_eq "E: vidx_verify" "$(q $P "SELECT vidx_verify('t_v')")" t
dbg=$(psql -X -q -At -h $SOCKDIR -p $P -U postgres -c "SET enable_seqscan = off" -c "SET vidx.target_recall = 0.95" -c "SET vidx.probes = 3" \
	-c "SET client_min_messages = debug1" -c "SELECT count(*) FROM (SELECT id FROM t ORDER BY v <-> (SELECT v FROM t WHERE id = 7) LIMIT 10) s" 2>&1)
echo "# uncalibrated scan: $(echo "$dbg" | grep 'vidx scan of' | head -1)"
check "E: target_recall on it: vidx.probes, and the DEBUG1 line says it is not calibrated" \
	bash -c "echo '$dbg' | grep -q 'probes 3 (not calibrated: vidx.probes)' && echo '$dbg' | grep -qx 10"
check "E: vidx_calibrate fills it in" q $P "SELECT vidx_calibrate('t_v')"
check_eq "E: ... with the index's rows" "$(q $P "SELECT vidx_stats('t_v')->'calibration'->>'rows'")" 25000
check_eq "E: ... the curve VACUUM measured on the same tree" "$(q $P "SELECT vidx_stats('t_v')->'calibration'->'recall'")" "$vrecall"
cluster_crash $PN
restart_after_crash E
check_eq "E: the filled-in curve survives a crash" "$(q $P "SELECT vidx_stats('t_v')->'calibration'->>'rows'")" 25000
check "no backend died (primary log)" log_clean $PN
finish
