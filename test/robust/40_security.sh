#!/usr/bin/env bash
# 40_security: ownership checks of the maintenance functions, sidecar file
# modes and names, search_path safety of the extension script and of the
# operators/operator classes, and that nothing takes a file path from a user.
source "$(dirname "$(readlink -f "$0")")/lib.sh"

NAME=rbst_sec
PORT=5444
cluster_create $NAME $PORT || exit 1
D=$(pgdata $NAME)

qa() { # qa ROLE SQL: run SQL as ROLE (SET ROLE from a superuser session); prints output or the SQLSTATE
	psql -X -q -At -h $SOCKDIR -p $PORT -U postgres -v ON_ERROR_STOP=1 -v VERBOSITY=verbose \
		-c "SET ROLE $1" -c "$2" 2>&1 | sed 's/^ERROR:  \([0-9A-Z]\{5\}\):.*/SQLSTATE \1/' | grep -vE '^(LOCATION|DETAIL|HINT|CONTEXT)' | head -3
}

# ---------------------------------------------------------------- search_path
log "search_path: an 'evil' schema with same-named functions and operators exists before CREATE EXTENSION"
q $PORT "CREATE SCHEMA evil;
CREATE FUNCTION evil.vidx_l2_distance(real[], real[]) RETURNS float8 LANGUAGE plpgsql IMMUTABLE AS
  \$\$BEGIN RAISE EXCEPTION 'evil function called'; END\$\$;
CREATE FUNCTION evil.vidx_l2_distance(real[], double precision[]) RETURNS float8 LANGUAGE plpgsql IMMUTABLE AS
  \$\$BEGIN RAISE EXCEPTION 'evil function called'; END\$\$;
CREATE FUNCTION evil.vidx_l2_support(internal) RETURNS internal LANGUAGE internal AS 'int4in';
CREATE OPERATOR evil.<-> (LEFTARG = real[], RIGHTARG = real[], FUNCTION = evil.vidx_l2_distance);
CREATE OPERATOR evil.<-> (LEFTARG = real[], RIGHTARG = double precision[], FUNCTION = evil.vidx_l2_distance);
GRANT USAGE ON SCHEMA evil TO PUBLIC"
check "CREATE EXTENSION vidx SCHEMA public with search_path = evil, public" \
	psql -X -q -h $SOCKDIR -p $PORT -U postgres -v ON_ERROR_STOP=1 -c "SET search_path = evil, public" -c "CREATE EXTENSION vidx SCHEMA public"
bad=$(q $PORT "SELECT count(*) FROM pg_depend d JOIN pg_operator o ON d.classid = 'pg_operator'::regclass AND d.objid = o.oid
	JOIN pg_proc p ON p.oid = o.oprcode
	WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'vidx')
	  AND p.pronamespace <> 'public'::regnamespace")
check_eq "every vidx operator calls a function of the extension's schema (operators bound elsewhere)" "$bad" 0
bad=$(q $PORT "SELECT count(*) FROM pg_amop ao JOIN pg_opfamily f ON f.oid = ao.amopfamily JOIN pg_am a ON a.oid = f.opfmethod
	JOIN pg_operator o ON o.oid = ao.amopopr WHERE a.amname = 'vidx' AND o.oprnamespace <> 'public'::regnamespace")
check_eq "every operator of the vidx operator classes is the extension's own" "$bad" 0
bad=$(q $PORT "SELECT count(*) FROM pg_amproc ap JOIN pg_opfamily f ON f.oid = ap.amprocfamily JOIN pg_am a ON a.oid = f.opfmethod
	JOIN pg_proc p ON p.oid = ap.amproc WHERE a.amname = 'vidx' AND p.pronamespace <> 'public'::regnamespace")
check_eq "every support function of the vidx operator classes is the extension's own" "$bad" 0
members=$(q $PORT "SELECT count(*) FROM pg_depend WHERE refclassid = 'pg_extension'::regclass
	AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'vidx') AND deptype = 'e'")
log "extension members: $members"

q $PORT "CREATE TABLE t (id int PRIMARY KEY, v real[]);
INSERT INTO t SELECT i, ARRAY(SELECT (sin(i * 0.37 + j) * 3)::real FROM generate_series(1, 16) j) FROM generate_series(1, 2000) i;
CREATE INDEX t_v ON t USING vidx (v) WITH (lists = 20)"
want=$(q $PORT "SET enable_indexscan = off; SELECT string_agg(id::text, ',' ORDER BY d, id) FROM (SELECT id, v <-> (SELECT v FROM t WHERE id = 7) d FROM t ORDER BY d, id LIMIT 10) s")
got=$(psql -X -q -At -h $SOCKDIR -p $PORT -U postgres -c "SET search_path = evil, public" -c "SET enable_seqscan = off" \
	-c "SET vidx.probes = 1000" -c "SELECT string_agg(id::text, ',') FROM (SELECT id FROM public.t ORDER BY v OPERATOR(public.<->) (SELECT v FROM public.t WHERE id = 7) LIMIT 10) s" 2>&1)
check_eq "with evil first in search_path, OPERATOR(public.<->) through the index gives the exact top 10" "$got" "$want"
plan=$(psql -X -q -At -h $SOCKDIR -p $PORT -U postgres -c "SET search_path = evil, public" -c "SET enable_seqscan = off" \
	-c "EXPLAIN (COSTS OFF) SELECT id FROM public.t ORDER BY v OPERATOR(public.<->) '{1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16}'::real[] LIMIT 10" | tr '\n' ' ')
check "... and the plan is an index scan on t_v ($plan)" bash -c "echo '$plan' | grep -q 'Index Scan using t_v'"
plan=$(psql -X -q -At -h $SOCKDIR -p $PORT -U postgres -c "SET search_path = evil, public" -c "SET enable_seqscan = off" \
	-c "EXPLAIN (COSTS OFF) SELECT id FROM public.t ORDER BY v <-> '{1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16}'::real[] LIMIT 10" | tr '\n' ' ')
check "an unqualified <-> that resolves to evil.<-> is not served by the vidx index ($plan)" bash -c "! echo '$plan' | grep -q 't_v'"
got=$(psql -X -q -At -h $SOCKDIR -p $PORT -U postgres -c "SET search_path = evil, public" -c "SET enable_seqscan = off" \
	-c "SELECT vidx_verify('public.t_v'), (public.vidx_stats('public.t_v')->>'dims')" 2>&1)
check_eq "vidx_verify/vidx_stats with evil first in search_path" "$got" "t|16"

# The event trigger runs in every session that drops something, as that
# session's user, with its search_path.
q $PORT "CREATE FUNCTION evil.vidx_load() RETURNS boolean LANGUAGE plpgsql AS
  \$\$BEGIN RAISE EXCEPTION 'evil vidx_load called'; END\$\$;
CREATE FUNCTION evil.vidx_drop_cleanup() RETURNS event_trigger LANGUAGE plpgsql AS
  \$\$BEGIN RAISE EXCEPTION 'evil vidx_drop_cleanup called'; END\$\$"
out=$(psql -X -q -At -h $SOCKDIR -p $PORT -U postgres -v ON_ERROR_STOP=1 -c "SET search_path = evil, public" \
	-c "CREATE TABLE public.et (v real[]); INSERT INTO public.et VALUES ('{1,2}'); CREATE INDEX et_v ON public.et USING vidx (v)" \
	-c "DROP INDEX public.et_v" -c "DROP TABLE public.et" -c "SELECT 'dropped'" 2>&1)
check_eq "with evil first in search_path, DROP INDEX/TABLE (the event trigger) call none of evil's functions" "$out" dropped
check_eq "the event trigger's function pins its search_path" \
	"$(q $PORT "SELECT proconfig::text FROM pg_proc WHERE oid = 'public.vidx_drop_cleanup()'::regprocedure")" '{"search_path=pg_catalog, pg_temp"}'
check_eq "the event trigger fires also under session_replication_role = replica (ENABLE ALWAYS)" \
	"$(q $PORT "SELECT evtenabled FROM pg_event_trigger WHERE evtname = 'vidx_drop_cleanup'")" A
# The script names the schema of everything it creates or refers to
# (@extschema@, or pg_catalog for built-in types and operator families).
unqualified=$("$PY" "$ROBUST_DIR/lint_script.py" "$ROOT/sql/vidx--0.1.0.sql" | head -3 | tr '\n' ' ')
check_eq "the extension script qualifies every object it creates or refers to" "$unqualified" ""

# ---------------------------------------------------------------- ownership
log "ownership: alice (no privileges), bob (owns a table and its index)"
q $PORT "CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN; GRANT CREATE ON SCHEMA public TO bob;
GRANT SELECT, INSERT ON t TO alice"
q $PORT "SET ROLE bob; CREATE TABLE bt (id int, v real[]); INSERT INTO bt SELECT id, v FROM (VALUES (1, '{1,2,3}'::real[]), (2, '{3,2,1}')) x(id, v);
CREATE INDEX bt_v ON bt USING vidx (v)" 2>/dev/null || q $PORT "SET ROLE bob; CREATE TABLE bt (id int, v real[]); INSERT INTO bt VALUES (1, '{1,2,3}'), (2, '{3,2,1}'); CREATE INDEX bt_v ON bt USING vidx (v)"
check_eq "alice: vidx_verify on an index she does not own -> 42501" "$(qa alice "SELECT vidx_verify('t_v')")" "SQLSTATE 42501"
check_eq "alice: vidx_verify(check_sidecar => false) -> 42501" "$(qa alice "SELECT vidx_verify('t_v', false)")" "SQLSTATE 42501"
check_eq "alice (SELECT and INSERT on the table): vidx_verify -> 42501" "$(qa alice "SELECT vidx_verify('bt_v')")" "SQLSTATE 42501"
check_eq "alice: REINDEX of an index she does not own -> 42501" "$(qa alice "REINDEX INDEX t_v")" "SQLSTATE 42501"
check_eq "alice: vidx_stats on an index she does not own -> 42501" "$(qa alice "SELECT vidx_stats('t_v')")" "SQLSTATE 42501"
check_eq "alice (SELECT and INSERT on the table): vidx_stats -> 42501" "$(qa alice "SELECT vidx_stats('bt_v')")" "SQLSTATE 42501"
check_eq "bob: vidx_stats on his own index" "$(qa bob "SELECT vidx_stats('bt_v')->>'dims'")" 3
q $PORT "GRANT pg_read_all_stats TO alice"
check_eq "alice, member of pg_read_all_stats: vidx_stats" "$(qa alice "SELECT vidx_stats('t_v')->>'dims'")" 16
check_eq "alice, member of pg_read_all_stats: vidx_verify still -> 42501" "$(qa alice "SELECT vidx_verify('t_v')")" "SQLSTATE 42501"
q $PORT "REVOKE pg_read_all_stats FROM alice; GRANT pg_stat_scan_tables TO alice"
check_eq "alice, member of pg_stat_scan_tables: vidx_stats" "$(qa alice "SELECT vidx_stats('t_v')->>'dims'")" 16
q $PORT "REVOKE pg_stat_scan_tables FROM alice"
check_eq "alice, no longer a member: vidx_stats -> 42501" "$(qa alice "SELECT vidx_stats('t_v')")" "SQLSTATE 42501"
check_eq "alice: vidx_sweep_sidecars() -> 42501" "$(qa alice "SELECT vidx_sweep_sidecars()")" "SQLSTATE 42501"
check_eq "bob (owns an index): vidx_sweep_sidecars() -> 42501" "$(qa bob "SELECT vidx_sweep_sidecars()")" "SQLSTATE 42501"
check_eq "postgres: vidx_sweep_sidecars() runs (nothing to remove)" "$(qa postgres "SELECT vidx_sweep_sidecars()")" 0
check_eq "bob: vidx_verify on his own index" "$(qa bob "SELECT vidx_verify('bt_v')")" t
check_eq "alice: vidx_verify of a table, not a vidx index -> error" "$(qa postgres "SELECT vidx_verify('t')" | cut -c1-14)" "SQLSTATE 42809"
check_eq "alice: the k-NN query works with SELECT privilege" "$(qa alice "SET enable_seqscan = off; SELECT count(*) FROM (SELECT id FROM t ORDER BY v <-> '{1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16}' LIMIT 5) s")" 5
check_eq "alice: the extension's functions are not SECURITY DEFINER" \
	"$(q $PORT "SELECT count(*) FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e' WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'vidx') AND p.prosecdef")" 0

# ---------------------------------------------------------------- files
log "sidecar files: modes, owner, location, names"
check_eq "the vidx directory is mode 700, owned by postgres" "$(stat -c '%a %U' "$D/vidx")" "700 postgres"
modes=$(stat -c '%a %U' "$D"/vidx/* | sort | uniq -c | sed 's/^ *//' | tr '\n' ';')
check "every sidecar file is mode 600, owned by postgres ($modes)" bash -c "! stat -c '%a %U' $D/vidx/* | grep -v '^600 postgres$'"
q $PORT "INSERT INTO t SELECT i, ARRAY(SELECT (cos(i * 0.37 + j) * 3)::real FROM generate_series(1, 16) j) FROM generate_series(2001, 2100) i"
q $PORT "REINDEX INDEX t_v"
q $PORT "CREATE INDEX \"../../../../../tmp/vidx_evil_name\" ON t USING vidx (v)"
q $PORT "CREATE TEMP TABLE tt (v real[]); INSERT INTO tt VALUES ('{1,2}'), ('{2,1}'); CREATE INDEX ON tt USING vidx (v); SELECT 1" >/dev/null
check "after inserts, REINDEX, a path-like index name: every sidecar file is still mode 600" bash -c "! stat -c '%a %U' $D/vidx/* | grep -v '^600 postgres$'"
check "sidecar names are OIDs only (<spc>_<db>_<relfilenode>.vsc)" bash -c "! ls $D/vidx | grep -vE '^[0-9]+_[0-9]+_[0-9]+(_t[0-9]+)?\.vsc$'"
check "no file was made from the index name" bash -c "[ ! -e /tmp/vidx_evil_name ] && ! find $D /tmp -name '*vidx_evil_name*' 2>/dev/null | grep -q ."
filename=$(q $PORT "SELECT pg_relation_filenode('\"../../../../../tmp/vidx_evil_name\"')")
check "the path-like index's sidecar is named by its relfilenode ($filename)" bash -c "ls $D/vidx | grep -q '_${filename}.vsc$'"

# ---------------------------------------------------------------- no path from a user
args=$(q $PORT "SELECT string_agg(DISTINCT format_type(t, NULL), ',') FROM pg_proc p
	JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e', unnest(p.proargtypes) t
	WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'vidx')")
check "no function of the extension takes a text argument ($args)" bash -c "! echo '$args' | grep -qE 'text|character|cstring|name'"
settings=$(psql -X -q -At -h $SOCKDIR -p $PORT -U postgres -c "LOAD 'vidx'" -c "SELECT string_agg(name || ':' || vartype, ' ') FROM pg_settings WHERE name LIKE 'vidx.%'")
strings=$(psql -X -q -At -h $SOCKDIR -p $PORT -U postgres -c "LOAD 'vidx'" -c "SELECT count(*) FROM pg_settings WHERE name LIKE 'vidx.%' AND vartype = 'string'")
# An enum takes only the values it lists: vidx.iterative_scan, vidx.debug_split.
enums=$(psql -X -q -At -h $SOCKDIR -p $PORT -U postgres -c "LOAD 'vidx'" -c "SELECT string_agg(name || '=' || array_to_string(enumvals, '|'), ' ' ORDER BY name) FROM pg_settings WHERE name LIKE 'vidx.%' AND vartype = 'enum'")
log "vidx settings: $settings"
check "the vidx settings are visible once the library is loaded" bash -c "echo '$settings' | grep -q 'vidx.probes'"
check_eq "no vidx setting is a free-form string" "$strings" 0
check_eq "the enum settings take fixed values" "$enums" "vidx.debug_split=off|crash_after_chains|crash_after_tree|crash_after_publish|wait_before_publish|wait_in_vacuum|wait_after_route vidx.iterative_scan=strict_order|relaxed_order"
enum_path=$(psql -X -q -At -h $SOCKDIR -p $PORT -U postgres -v VERBOSITY=verbose -c "LOAD 'vidx'" \
	-c "SET vidx.iterative_scan = '/tmp/x'" 2>&1 | sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\):.*/SQLSTATE \1/p' | head -1)
check_eq "an enum setting refuses a path (22023)" "$enum_path" "SQLSTATE 22023"
# (the operator loads the library, so the setting is defined when SET runs)
check_eq "alice may not set the fault injection vidx.debug_split (42501)" \
	"$(qa alice "SELECT '{1}'::real[] <-> '{2}'::real[]; SET vidx.debug_split = crash_after_tree" | tail -1)" "SQLSTATE 42501"
check_eq "an index option naming a path is rejected (22023)" \
	"$(qa postgres "CREATE INDEX ON t USING vidx (v) WITH (path = '/tmp/x')")" "SQLSTATE 22023"
check_eq "an index option naming a file is rejected (22023)" \
	"$(qa postgres "CREATE INDEX ON t USING vidx (v) WITH (sidecar = '/tmp/x')")" "SQLSTATE 22023"
check "the extension is not trusted (only superusers can create it)" grep -q '^trusted = false' "$ROOT/vidx.control"
q $PORT "CREATE DATABASE alicedb OWNER alice"
got=$(psql -X -q -At -h $SOCKDIR -p $PORT -U alice -d alicedb -v VERBOSITY=verbose -c "CREATE EXTENSION vidx" 2>&1 | sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\):.*/SQLSTATE \1/p')
check_eq "alice cannot CREATE EXTENSION vidx even in her own database (42501)" "$got" "SQLSTATE 42501"
check "no backend died" log_clean $NAME
finish
