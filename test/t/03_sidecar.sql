-- 03_sidecar: query results never depend on the sidecar's health.
--
-- The sidecar ($PGDATA/vidx/<spcoid>_<dboid>_<relfilenode>.vsc) is deleted,
-- truncated and has one record corrupted; each time, queries in a NEW session
-- (a psql started through COPY FROM PROGRAM, as the server's OS user over the
-- Unix socket) return exactly the rows they returned with a healthy sidecar,
-- with one WARNING per backend that names the index. REINDEX brings the sidecar
-- back (no warning afterwards) and removes the old file.
--
-- Needs a superuser (COPY ... PROGRAM) and peer authentication for the local
-- socket, as in pg_virtualenv clusters.
\set schema vidx_t03
\ir ../pgtap_setup.sql
SET check_function_bodies = off;

SELECT * FROM no_plan();

-- ---------------------------------------------------------------- helpers

-- Runs a shell command as the server's OS user; returns its output lines.
CREATE FUNCTION sh(cmd text) RETURNS SETOF text LANGUAGE plpgsql AS $$
BEGIN
	CREATE TEMP TABLE IF NOT EXISTS sh_out (n bigserial, line text);
	TRUNCATE sh_out;
	EXECUTE format('COPY sh_out (line) FROM PROGRAM %L WITH (FORMAT csv, DELIMITER %L, QUOTE %L)',
		cmd, E'\x01', E'\x02');
	RETURN QUERY SELECT coalesce(line, '') FROM sh_out ORDER BY n;
END $$;

CREATE FUNCTION shell_quote(s text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
	SELECT '''' || replace(s, '''', '''"''"''') || ''''
$$;

-- Runs SQL statements in a new session (a new backend); returns stdout and
-- stderr lines (results, WARNING/ERROR lines).
CREATE FUNCTION fresh(VARIADIC stmts text[]) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
	psql text := '/usr/lib/postgresql/' || (current_setting('server_version_num')::int / 10000) || '/bin/psql';
	cmd text;
BEGIN
	IF (pg_stat_file(psql, true)).size IS NULL THEN
		psql := 'psql';
	END IF;
	cmd := format('%s -X -q -A -t -h %s -p %s -U %s -d %s', psql,
		shell_quote(split_part(current_setting('unix_socket_directories'), ',', 1)),
		current_setting('port'), shell_quote(current_user), shell_quote(current_database()));
	FOR i IN 1 .. cardinality(stmts) LOOP
		cmd := cmd || ' -c ' || shell_quote(stmts[i]);
	END LOOP;
	RETURN QUERY SELECT sh(cmd || ' 2>&1 || true');
END $$;

-- Path of an index's sidecar file.
CREATE FUNCTION sidecar_path(idx regclass) RETURNS text LANGUAGE sql AS $$
	SELECT current_setting('data_directory') || '/vidx/' ||
		CASE WHEN c.reltablespace = 0 THEN d.dattablespace ELSE c.reltablespace END
		|| '_' || d.oid || '_' || pg_relation_filenode(idx) || '.vsc'
	FROM pg_class c, pg_database d
	WHERE c.oid = idx AND d.datname = current_database()
$$;

CREATE FUNCTION sidecar_exists(path text) RETURNS boolean LANGUAGE sql AS $$
	SELECT (pg_stat_file(path, true)).size IS NOT NULL
$$;

-- The query every check runs: top 10 of each query vector by the index.
CREATE FUNCTION query_sql() RETURNS text LANGUAGE sql IMMUTABLE AS $$
	SELECT 'SELECT q.id || ''|'' || array(SELECT t.id FROM vidx_t03.items t '
		'ORDER BY t.embedding <-> q.embedding LIMIT 10)::text '
		'FROM vidx_t03.queries q ORDER BY q.id'
$$;

-- Runs query_sql() n times in one new session; returns its output.
CREATE FUNCTION fresh_results(n int DEFAULT 1) RETURNS SETOF text LANGUAGE sql AS $$
	SELECT fresh(VARIADIC ARRAY['SET enable_seqscan = off', 'SET vidx.probes = 4']
		|| array_fill(query_sql(), ARRAY[n]))
$$;

CREATE TABLE checks (name text PRIMARY KEY, lines text[]);
CREATE FUNCTION run_check(name text, n int DEFAULT 1) RETURNS void LANGUAGE sql AS $$
	INSERT INTO vidx_t03.checks VALUES (name, ARRAY(SELECT vidx_t03.fresh_results(n)));
$$;
CREATE FUNCTION result_lines(name text) RETURNS text[] LANGUAGE sql AS $$
	SELECT ARRAY(SELECT l FROM vidx_t03.checks c, unnest(c.lines) WITH ORDINALITY u(l, o)
		WHERE c.name = result_lines.name AND l ~ '^[0-9]+\|' ORDER BY o)
$$;
CREATE FUNCTION warning_count(name text) RETURNS bigint LANGUAGE sql AS $$
	SELECT count(*) FROM vidx_t03.checks c, unnest(c.lines) l
	WHERE c.name = warning_count.name AND l LIKE 'WARNING:%'
$$;
-- Compares the result lines of a check with those of 'healthy' (repeated n
-- times): '' when identical, else a short description of the first difference.
CREATE FUNCTION diff_results(name text, n int DEFAULT 1) RETURNS text LANGUAGE sql AS $$
	WITH got AS (SELECT l, o FROM unnest(vidx_t03.result_lines(name)) WITH ORDINALITY u(l, o)),
	want_n AS (SELECT l, row_number() OVER (ORDER BY rep, u.o) AS o
		FROM unnest(vidx_t03.result_lines('healthy')) WITH ORDINALITY u(l, o),
			generate_series(0, n - 1) AS r(rep)),
	d AS (SELECT coalesce(g.o, w.o) AS o, g.l AS got, w.l AS want
		FROM got g FULL JOIN want_n w ON g.o = w.o
		WHERE g.l IS DISTINCT FROM w.l)
	SELECT CASE WHEN count(*) = 0 THEN ''
		ELSE format('%s of %s result lines differ (got %s lines); first: line %s got %s, want %s; other output: %s',
			count(*), (SELECT count(*) FROM want_n), (SELECT count(*) FROM got),
			min(o), (array_agg(coalesce(got, '(none)') ORDER BY o))[1],
			(array_agg(coalesce(want, '(none)') ORDER BY o))[1],
			left(vidx_t03.other_lines(name), 400))
		END
	FROM d
$$;

CREATE FUNCTION other_lines(name text) RETURNS text LANGUAGE sql AS $$
	SELECT coalesce(string_agg(l, E'\n'), '') FROM vidx_t03.checks c, unnest(c.lines) l
	WHERE c.name = other_lines.name AND l !~ '^[0-9]+\|'
$$;

-- ---------------------------------------------------------------- data
-- 4000 vectors of 48 dims around 40 centres; deterministic (no random()).
CREATE TABLE items (id bigint PRIMARY KEY, embedding real[]);
INSERT INTO items
SELECT i, ARRAY(SELECT (sin((i % 40) * 1.7 + j * 0.31) * 3 + sin(i * 0.013 * j + j) * 0.6)::real
		FROM generate_series(1, 48) AS j)
FROM generate_series(1, 4000) AS i;
CREATE TABLE queries (id bigint PRIMARY KEY, embedding real[]);
INSERT INTO queries SELECT id, embedding FROM items WHERE id % 200 = 1;           -- 20 stored vectors
INSERT INTO queries
SELECT 100000 + i, ARRAY(SELECT (sin((i % 40) * 1.7 + j * 0.31) * 3 + cos(i * 0.7 + j) * 0.5)::real
		FROM generate_series(1, 48) AS j)
FROM generate_series(1, 20) AS i;                                                 -- 20 new ones
VACUUM ANALYZE items;

CREATE INDEX items_vidx ON items USING vidx (embedding vidx_l2_ops) WITH (lists = 32);
SELECT ok(sidecar_exists(sidecar_path('items_vidx')), 'the build wrote the sidecar file');
SELECT diag('sidecar: ' || sidecar_path('items_vidx') || ' stats: ' ||
	(vidx_stats('items_vidx')->'sidecar')::text);
SELECT is((SELECT s FROM sh('stat -c %a ' || shell_quote(sidecar_path('items_vidx'))) s),
	'600', 'the sidecar file has mode 0600');
SELECT is(vidx_stats('items_vidx')->'sidecar'->>'state', 'ok', 'vidx_stats: sidecar state ok');
SELECT is(vidx_stats('items_vidx')->'sidecar'->>'postings_without_record', '0',
	'vidx_stats: every posting has a record');

-- The sidecar part of vidx_stats of the index, from a new session.
CREATE FUNCTION fresh_stats() RETURNS jsonb LANGUAGE sql AS $$
	SELECT x::jsonb FROM vidx_t03.fresh('SELECT vidx_stats(''vidx_t03.items_vidx'')->''sidecar''') x
	WHERE x LIKE '{%' LIMIT 1
$$;

-- The fresh-session machinery works.
SELECT is((SELECT array_agg(x) FROM fresh('SELECT 40 + 2') x), ARRAY['42'],
	'a new session can be started with psql from COPY FROM PROGRAM');

-- ---------------------------------------------------------------- baseline
SELECT run_check('healthy');
SELECT is(cardinality(result_lines('healthy')), 40, 'healthy: 40 queries answered');
SELECT is(other_lines('healthy'), '', 'healthy: no WARNING or other message');
SELECT is((SELECT count(*) FROM unnest(result_lines('healthy')) l
		WHERE cardinality(split_part(l, '|', 2)::bigint[]) = 10), 40::bigint,
	'healthy: every query returned 10 rows');
-- the index agrees with exact search for stored vectors (each finds itself first)
SELECT is((SELECT count(*) FROM unnest(result_lines('healthy')) l
		WHERE split_part(l, '|', 1)::int < 100000
		  AND (split_part(l, '|', 2)::bigint[])[1] <> split_part(l, '|', 1)::bigint), 0::bigint,
	'healthy: each stored vector is its own nearest neighbour');
SELECT ok(EXISTS (SELECT 1 FROM fresh('SELECT vidx_verify(''vidx_t03.items_vidx'')') x WHERE x = 't'),
	'healthy: vidx_verify is true');

-- ---------------------------------------------------------------- deleted
CREATE TABLE paths AS SELECT sidecar_path('items_vidx') AS original;
SELECT is((SELECT count(*) FROM sh('rm -f ' || shell_quote(sidecar_path('items_vidx')))), 0::bigint,
	'deleted: rm -f the sidecar');
SELECT ok(NOT sidecar_exists(sidecar_path('items_vidx')), 'deleted: the file is gone');
SELECT run_check('deleted', 3);
SELECT is(diff_results('deleted', 3), '', 'deleted: results are identical to the healthy ones (3 runs in one session)');
SELECT is(warning_count('deleted'), 1::bigint, 'deleted: exactly one WARNING in the session');
SELECT matches(other_lines('deleted'), 'WARNING:.*"items_vidx"', 'deleted: the WARNING names the index');
SELECT matches(other_lines('deleted'), 'REINDEX', 'deleted: the message says how to repair (REINDEX)');
SELECT diag('deleted: ' || other_lines('deleted'));
SELECT ok(EXISTS (SELECT 1 FROM fresh('SELECT vidx_verify(''vidx_t03.items_vidx'')') x WHERE x LIKE 'ERROR:%'),
	'deleted: vidx_verify(check_sidecar => true) raises an error');
SELECT ok(EXISTS (SELECT 1 FROM fresh('SELECT vidx_verify(''vidx_t03.items_vidx'', false)') x WHERE x = 't'),
	'deleted: vidx_verify(check_sidecar => false) is true');
SELECT is(fresh_stats()->>'state', 'the sidecar file is missing',
	'deleted: vidx_stats says the sidecar file is missing');
SELECT is(fresh_stats()->>'postings_without_record', '4000',
	'deleted: vidx_stats: no posting has a record');

-- ---------------------------------------------------------------- REINDEX repairs
SELECT lives_ok('REINDEX INDEX vidx_t03.items_vidx', 'REINDEX after deletion');
SELECT ok(sidecar_exists(sidecar_path('items_vidx')), 'REINDEX: the sidecar is back');
SELECT run_check('reindexed');
SELECT is(diff_results('reindexed'), '', 'REINDEX: results identical');
SELECT is(other_lines('reindexed'), '', 'REINDEX: no WARNING in a new session');
SELECT ok(EXISTS (SELECT 1 FROM fresh('SELECT vidx_verify(''vidx_t03.items_vidx'')') x WHERE x = 't'),
	'REINDEX: vidx_verify is true');

-- ---------------------------------------------------------------- truncated
UPDATE paths SET original = sidecar_path('items_vidx');
SELECT is((SELECT count(*) FROM sh(format('truncate -s $(( $(stat -c %%s %1$s) / 2 )) %1$s',
		shell_quote(sidecar_path('items_vidx'))))), 0::bigint, 'truncated: the sidecar cut to half its size');
SELECT run_check('truncated', 2);
SELECT is(fresh_stats()->>'state', 'the sidecar file is shorter than the index',
	'truncated: vidx_stats says the sidecar is shorter than the index (not ok)');
SELECT ok((fresh_stats()->>'records')::int BETWEEN 1 AND 3999,
	'truncated: vidx_stats counts the records left: ' || (fresh_stats()->>'records'));
SELECT is((fresh_stats()->>'postings_without_record')::int + (fresh_stats()->>'records')::int, 4000,
	'truncated: postings without a record = 4000 - records left');
SELECT is(diff_results('truncated', 2), '', 'truncated: results are identical');
SELECT is(warning_count('truncated'), 1::bigint, 'truncated: exactly one WARNING in the session');
SELECT matches(other_lines('truncated'), 'WARNING:.*"items_vidx"', 'truncated: the WARNING names the index');
SELECT ok(EXISTS (SELECT 1 FROM fresh('SELECT vidx_verify(''vidx_t03.items_vidx'')') x WHERE x LIKE 'ERROR:%'),
	'truncated: vidx_verify raises an error');

-- into the header: 100 bytes
SELECT is((SELECT count(*) FROM sh('truncate -s 100 ' || shell_quote(sidecar_path('items_vidx')))), 0::bigint,
	'truncated: the sidecar cut to 100 bytes (inside the header)');
SELECT run_check('truncated_header');
SELECT is(fresh_stats()->>'state', 'the sidecar file is truncated',
	'header truncated: vidx_stats says the sidecar file is truncated');
SELECT is(diff_results('truncated_header'), '', 'header truncated: results are identical');
SELECT is(warning_count('truncated_header'), 1::bigint, 'header truncated: one WARNING');

SELECT lives_ok('REINDEX INDEX vidx_t03.items_vidx', 'REINDEX after truncation');
SELECT ok(NOT sidecar_exists((SELECT original FROM paths)), 'REINDEX removed the old sidecar file');
SELECT run_check('reindexed2');
SELECT is(other_lines('reindexed2'), '', 'REINDEX: no WARNING in a new session');
SELECT is(diff_results('reindexed2'), '', 'REINDEX: results identical');

-- ---------------------------------------------------------------- one record corrupted
-- The record of the row with id 1 (query 1 is that very vector, so its rerank
-- needs the record), found by its vector (a record holds only the vector):
-- overwrite its first float.
CREATE FUNCTION corrupt_record(path text, vec real[]) RETURNS SETOF text LANGUAGE sql AS $$
	SELECT vidx_t03.sh(format('/usr/bin/python3 -c %s %s %s',
		vidx_t03.shell_quote(
'import os, struct, sys
path, vec = sys.argv[1], [float(x) for x in sys.argv[2].strip("{}").split(",")]
want = struct.pack("<%df" % len(vec), *vec)
with open(path, "r+b") as f:
    head = f.read(4096)
    rs = struct.unpack_from("<I", head, 16)[0]
    n = (os.path.getsize(path) - 4096) // rs
    for s in range(n):
        f.seek(4096 + s * rs)
        if f.read(len(want)) == want:
            f.seek(4096 + s * rs)
            f.write(struct.pack("<f", vec[0] + 1000.0))
            print("corrupted slot %d of %d" % (s, n))
            break
    else:
        print("record not found")'),
		vidx_t03.shell_quote(path), vidx_t03.shell_quote(vec::text)))
$$;
SELECT matches((SELECT string_agg(x, ' ') FROM corrupt_record(sidecar_path('items_vidx'),
		(SELECT embedding FROM items WHERE id = 1)) x), '^corrupted slot',
	'corrupted: one record overwritten (the vector of row 1)');
SELECT run_check('corrupted', 2);
SELECT is(diff_results('corrupted', 2), '', 'corrupted: results are identical');
SELECT is(warning_count('corrupted'), 1::bigint, 'corrupted: exactly one WARNING in the session');
SELECT matches(other_lines('corrupted'), 'WARNING:.*"items_vidx"', 'corrupted: the WARNING names the index');
SELECT ok(EXISTS (SELECT 1 FROM fresh('SELECT vidx_verify(''vidx_t03.items_vidx'')') x WHERE x LIKE 'ERROR:%'),
	'corrupted: vidx_verify raises an error');

SELECT lives_ok('REINDEX INDEX vidx_t03.items_vidx', 'REINDEX after corruption');
SELECT run_check('reindexed3');
SELECT is(other_lines('reindexed3'), '', 'REINDEX: no WARNING in a new session');
SELECT is(diff_results('reindexed3'), '', 'REINDEX: results identical');

-- ---------------------------------------------------------------- damaged under a live session
-- A session maps the sidecar with a first query; the file is then cut to half
-- its size (a mapped page beyond the end of a file raises SIGBUS if touched)
-- and the same session queries again: same rows, no crash.
CREATE FUNCTION knn_line(tag text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
	SELECT format('SELECT %L || array(SELECT id FROM vidx_t03.items ORDER BY embedding <-> '
		'(SELECT embedding FROM vidx_t03.items WHERE id = 1) LIMIT 10)::text', tag || '|')
$$;
INSERT INTO checks
SELECT 'live', ARRAY(SELECT fresh('SET enable_seqscan = off', knn_line('A'),
	format('COPY (SELECT 1) TO PROGRAM %L',
		format('truncate -s $(( $(stat -c %%s %1$s) / 2 )) %1$s', shell_quote(sidecar_path('items_vidx')))),
	knn_line('B'), 'SELECT ''alive'''));
SELECT diag('live: ' || array_to_string(lines, E'\n')) FROM checks WHERE name = 'live';
SELECT ok((SELECT 'alive' = ANY (lines) FROM checks WHERE name = 'live'),
	'live: the session survived its sidecar being truncated under it');
SELECT is((SELECT substr(l, 3) FROM checks, unnest(lines) l WHERE name = 'live' AND l LIKE 'B|%'),
	(SELECT substr(l, 3) FROM checks, unnest(lines) l WHERE name = 'live' AND l LIKE 'A|%'),
	'live: same rows before and after the truncation');
SELECT lives_ok('REINDEX INDEX vidx_t03.items_vidx', 'REINDEX after the live truncation');

-- ---------------------------------------------------------------- inserts after the build
INSERT INTO items
SELECT i, ARRAY(SELECT (sin((i % 40) * 1.7 + j * 0.31) * 3 + sin(i * 0.017 * j) * 0.6)::real
		FROM generate_series(1, 48) AS j)
FROM generate_series(4001, 4200) AS i;
SELECT run_check('inserted');
SELECT is(other_lines('inserted'), '', 'inserts: no WARNING (the sidecar grew with them)');
SELECT ok(EXISTS (SELECT 1 FROM fresh('SELECT vidx_verify(''vidx_t03.items_vidx'')') x WHERE x = 't'),
	'inserts: vidx_verify is true');
SELECT lives_ok(format('COPY (SELECT 1) TO PROGRAM %L', 'rm -f ' || shell_quote(sidecar_path('items_vidx'))),
	'inserts: sidecar deleted again');
SELECT is((SELECT count(*) FROM fresh('SET enable_seqscan = off',
		'SELECT id FROM vidx_t03.items ORDER BY embedding <-> (SELECT embedding FROM vidx_t03.items WHERE id = 4100) LIMIT 1') x
		WHERE x = '4100'), 1::bigint, 'inserts: a row inserted after the build is found without the sidecar');

-- ---------------------------------------------------------------- cleanup
UPDATE paths SET original = sidecar_path('items_vidx');
SELECT lives_ok('REINDEX INDEX vidx_t03.items_vidx', 'REINDEX once more');
UPDATE paths SET original = sidecar_path('items_vidx');
DROP INDEX items_vidx;
SELECT ok(NOT sidecar_exists((SELECT original FROM paths)), 'DROP INDEX removes the sidecar file');

SELECT * FROM finish();
RESET search_path;
DROP SCHEMA vidx_t03 CASCADE;
