-- 20_pgvector: vidx on pgvector's vector and halfvec columns (vidx_pgvector).
--
-- With every leaf probed, the index returns exactly the rows of pgvector's own
-- exact scan (a sequential scan ordered by pgvector's operator) for <->, <#>
-- and <=> on vector and halfvec; pgvector's HNSW and vidx on the same column
-- agree at high recall; filtered (iterative) scans, vidx_search, vidx_stats,
-- vidx_verify, vidx_prewarm, inserts, VACUUM and the sidecar fallback to the
-- table (which reads the datum through the operator class's reader) work as on
-- real[]; bad input gets a clear error; dimensions beyond pgvector's own index
-- limits are indexed; DROP EXTENSION vidx_pgvector and DROP EXTENSION vector
-- CASCADE behave and remove the indexes' sidecar files.
--
-- Needs pgvector installed (test/pgvector.sh), a superuser (COPY ... PROGRAM)
-- and peer authentication for the local socket, as in pg_virtualenv clusters.
\set schema vidx_t20
\ir ../pgtap_setup.sql
CREATE EXTENSION IF NOT EXISTS vector SCHEMA public;
CREATE EXTENSION IF NOT EXISTS vidx_pgvector SCHEMA public;

SELECT plan(50);

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

-- Runs SQL statements in a new session; returns its stdout and stderr lines.
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

-- ---------------------------------------------------------------- data
-- 4000 rows of 96 dimensions around 40 Gaussian centres, 20 queries; seeded.
SELECT setseed(0.2020);
CREATE TABLE centres AS
  SELECT c, array_agg((3 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()))::real ORDER BY j) AS v
  FROM generate_series(0, 39) c, generate_series(1, 96) j GROUP BY c;
CREATE TABLE raw AS
  SELECT i AS id, array_agg(c.v[j] + (sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()))::real ORDER BY j) AS v
  FROM generate_series(1, 4000) i JOIN centres c ON c.c = i % 40, generate_series(1, 96) j
  GROUP BY i;
CREATE TABLE items (id int PRIMARY KEY, v vector(96), h halfvec(96));
INSERT INTO items SELECT id, v::vector, v::halfvec FROM raw;
CREATE TABLE queries AS
  SELECT q AS id, array_agg(c.v[j] + (sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()))::real ORDER BY j)::vector(96) AS v
  FROM generate_series(1, 20) q JOIN centres c ON c.c = (q * 7) % 40, generate_series(1, 96) j
  GROUP BY q;
VACUUM ANALYZE items;

CREATE INDEX items_v_l2 ON items USING vidx (v);                  -- the default: vector_l2_ops
CREATE INDEX items_v_ip ON items USING vidx (v vector_ip_ops);
CREATE INDEX items_v_cos ON items USING vidx (v vector_cosine_ops);
CREATE INDEX items_h_l2 ON items USING vidx (h);                  -- the default: halfvec_l2_ops
CREATE INDEX items_h_ip ON items USING vidx (h halfvec_ip_ops);
CREATE INDEX items_h_cos ON items USING vidx (h halfvec_cosine_ops);

SELECT matches(plan_of('SELECT id FROM items ORDER BY v <-> ''[' || array_to_string(array_fill(1, ARRAY[96]), ',') || ']'' LIMIT 5'),
	'Index Scan using items_v_l2', 'an unchanged pgvector query (ORDER BY v <-> $1 LIMIT k) uses the vidx index');

-- Top-k of every query by pgvector's exact scan and by the index; returns the
-- number of queries whose id lists differ. col: v or h; op: <->, <#>, <=>.
CREATE FUNCTION mismatches(col text, op text, k int DEFAULT 10, filter text DEFAULT 'true')
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE q record; a int[]; b int[]; bad bigint := 0; typ text;
BEGIN
  typ := CASE col WHEN 'v' THEN 'vector' ELSE 'halfvec' END;
  FOR q IN SELECT id, v FROM queries ORDER BY id LOOP
    SET LOCAL enable_seqscan = on;
    SET LOCAL enable_indexscan = off;
    EXECUTE format('SELECT array_agg(id) FROM (SELECT id FROM items WHERE %s ORDER BY %I %s $1::%s, id LIMIT %s) s',
                   filter, col, op, typ, k) INTO b USING q.v;
    SET LOCAL enable_seqscan = off;
    SET LOCAL enable_indexscan = on;
    EXECUTE format('SELECT array_agg(id) FROM (SELECT id FROM items WHERE %s ORDER BY %I %s $1::%s LIMIT %s) s',
                   filter, col, op, typ, k) INTO a USING q.v;
    IF a IS DISTINCT FROM b THEN
      bad := bad + 1;
    END IF;
  END LOOP;
  RETURN bad;
END $$;

-- ---------------------------------------------------------------- exact at full probes
SET vidx.probes = 1000000;
SET vidx.rerank = 1000000;
SELECT is(mismatches('v', '<->'), 0::bigint, 'vector <->: index top-10 equals pgvector''s exact top-10 (20 queries)');
SELECT is(mismatches('v', '<#>'), 0::bigint, 'vector <#>: index top-10 equals pgvector''s exact top-10');
SELECT is(mismatches('v', '<=>'), 0::bigint, 'vector <=>: index top-10 equals pgvector''s exact top-10');
SELECT is(mismatches('h', '<->'), 0::bigint, 'halfvec <->: index top-10 equals pgvector''s exact top-10');
SELECT is(mismatches('h', '<#>'), 0::bigint, 'halfvec <#>: index top-10 equals pgvector''s exact top-10');
SELECT is(mismatches('h', '<=>'), 0::bigint, 'halfvec <=>: index top-10 equals pgvector''s exact top-10');
SELECT is(mismatches('v', '<->', 10, 'id % 10 = 3'), 0::bigint,
	'vector <-> with a filter (id % 10 = 3): top-10 equals the exact filtered top-10');
SELECT is(mismatches('h', '<=>', 100), 0::bigint, 'halfvec <=>: top-100 equals the exact top-100');

-- The distances pgvector's operator projects for the index's rows never decrease (within
-- float rounding: the index orders by its own double-precision evaluation).
SELECT is((SELECT count(*) FROM queries q, LATERAL (
		SELECT d, lag(d) OVER (ORDER BY o) AS prev FROM (
			SELECT row_number() OVER () AS o, d FROM (
				SELECT i.v <=> q.v AS d FROM items i ORDER BY i.v <=> q.v LIMIT 50) s0) s1) s
	WHERE d < prev - 1e-6 * abs(prev)), 0::bigint,
	'vector <=>: the projected pgvector distances of 20 x 50 rows never decrease');

-- ---------------------------------------------------------------- agreement with pgvector's HNSW
RESET vidx.probes;
RESET vidx.rerank;
-- One L2 index at a time answers the same query: HNSW first, then vidx.
SET enable_seqscan = off;
DROP INDEX items_v_l2;
CREATE INDEX items_v_hnsw ON items USING hnsw (v vector_l2_ops) WITH (m = 16, ef_construction = 64);
SET hnsw.ef_search = 100;
SELECT matches(plan_of('SELECT id FROM items ORDER BY v <-> (SELECT v FROM queries WHERE id = 1) LIMIT 10'),
	'Index Scan using items_v_hnsw', 'pgvector''s HNSW answers the query');
CREATE TABLE agree AS
  SELECT q.id, (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY v <-> q.v LIMIT 10) s) AS hnsw,
         NULL::int[] AS vidx, NULL::int[] AS exact
  FROM queries q;
DROP INDEX items_v_hnsw;
CREATE INDEX items_v_l2 ON items USING vidx (v);
UPDATE agree a SET vidx = (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY v <-> q.v LIMIT 10) s)
  FROM queries q WHERE q.id = a.id;
RESET enable_seqscan;
SET enable_indexscan = off;
UPDATE agree a SET exact = (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY v <-> q.v, id LIMIT 10) s)
  FROM queries q WHERE q.id = a.id;
RESET enable_indexscan;
CREATE FUNCTION overlap(a int[], b int[]) RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
	SELECT count(*)::numeric / cardinality(b) FROM unnest(a) x WHERE x = ANY (b)
$$;
SELECT cmp_ok((SELECT avg(overlap(hnsw, exact)) FROM agree), '>=', 0.95,
	'pgvector HNSW (m 16, ef_construction 64, ef_search 100): recall@10 >= 0.95');
SELECT cmp_ok((SELECT avg(overlap(vidx, exact)) FROM agree), '>=', 0.95,
	'vidx (default settings) on the same column: recall@10 >= 0.95');
SELECT cmp_ok((SELECT avg(overlap(vidx, hnsw)) FROM agree), '>=', 0.9,
	'pgvector HNSW and vidx agree on >= 90% of the top-10');

-- ---------------------------------------------------------------- functions, inserts, VACUUM
SELECT ok(vidx_verify('items_v_l2') AND vidx_verify('items_v_ip') AND vidx_verify('items_v_cos')
	AND vidx_verify('items_h_l2') AND vidx_verify('items_h_ip') AND vidx_verify('items_h_cos'),
	'the six indexes verify');
SELECT is((vidx_stats('items_h_cos')->>'dims')::int, 96, 'vidx_stats: dims of a halfvec index');
SELECT cmp_ok((SELECT index_pages FROM vidx_prewarm('items_h_l2')), '>', 0::bigint, 'vidx_prewarm reads a halfvec index');

-- vidx_search takes real[] queries whatever the column type.
SET vidx.probes = 1000000;
SET vidx.rerank = 1000000;
SELECT is((SELECT count(*) FROM queries q WHERE
		(SELECT array_agg(i.id ORDER BY s.distance, i.id) FROM vidx_search('items_v_l2', q.v::real[], 10) s
		 JOIN items i ON i.ctid = s.row_tid)
		IS DISTINCT FROM
		(SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY v <-> q.v, id LIMIT 10) e)), 0::bigint,
	'vidx_search (real[] queries) on a vector index: the exact top-10 at full probes');
SELECT is((SELECT count(*) FROM queries q WHERE
		(SELECT array_agg(i.id ORDER BY s.distance, i.id) FROM vidx_search('items_h_ip', q.v::real[], 10) s
		 JOIN items i ON i.ctid = s.row_tid)
		IS DISTINCT FROM
		(SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY h <#> q.v::halfvec, id LIMIT 10) e)), 0::bigint,
	'vidx_search on a halfvec <#> index: the exact top-10 at full probes');

-- vidx_recall reads a vector or halfvec column through the reader too; at
-- full probes (still set) the index is exact.
SELECT is((SELECT recall FROM vidx_recall('items_v_l2', 20)), 1::float8,
	'vidx_recall on a vector index: recall 1 at full probes');
SELECT is((SELECT recall FROM vidx_recall('items_h_cos', 20)), 1::float8,
	'vidx_recall on a halfvec index: recall 1 at full probes');
RESET vidx.probes;
RESET vidx.rerank;
SET vidx.target_recall = 0.95;
SELECT is((SELECT count(*) FROM (SELECT id FROM items ORDER BY v <-> (SELECT v FROM items WHERE id = 3) LIMIT 10) s),
	10::bigint, 'vidx.target_recall: a vector index answers');
RESET vidx.target_recall;
SET vidx.probes = 1000000;
SET vidx.rerank = 1000000;

-- Inserts (through the reader), deletes, VACUUM.
-- (new vectors near stored ones, but not near-ties: rows whose distances differ only
-- in float rounding may come in either order, see README "For pgvector users")
INSERT INTO items SELECT id + 4000, w::vector, w::halfvec
  FROM (SELECT id, (SELECT array_agg((x + 0.3 * sin(id * 7 + o))::real ORDER BY o) FROM unnest(v::real[]) WITH ORDINALITY u(x, o)) AS w
        FROM items WHERE id <= 600) s;
UPDATE items SET v = (SELECT array_agg(x * 1.01)::vector FROM unnest(v::real[]) x) WHERE id % 97 = 0;
DELETE FROM items WHERE id % 5 = 0;
VACUUM items;
SELECT is(mismatches('v', '<->'), 0::bigint, 'after inserts, updates, deletes and VACUUM: vector <-> exact');
SELECT is(mismatches('h', '<=>'), 0::bigint, 'after inserts, deletes and VACUUM: halfvec <=> exact');
SELECT ok(vidx_verify('items_v_l2') AND vidx_verify('items_h_cos'), 'the indexes verify after VACUUM');
RESET vidx.probes;
RESET vidx.rerank;

-- Filtered iterative scan at default settings: a selective filter still gets LIMIT rows.
SELECT is((SELECT count(*) FROM (SELECT id FROM items WHERE id % 50 = 7
	ORDER BY v <-> (SELECT v FROM queries WHERE id = 1) LIMIT 10) s), 10::bigint,
	'a filter passing 2% of rows still returns 10 rows (iterative scan)');

-- ---------------------------------------------------------------- sidecar fallback
-- Without the sidecar a new session reads the vectors from the table through the
-- reader, with the same rows and a WARNING naming the index.
CREATE FUNCTION fresh_top(idxcol text, op text) RETURNS SETOF text LANGUAGE sql AS $$
	SELECT vidx_t20.fresh('SET enable_seqscan = off', 'SET vidx.probes = 4',
		format('SELECT q.id || ''|'' || array(SELECT t.id FROM vidx_t20.items t ORDER BY t.%s %s q.v::%s LIMIT 10)::text FROM vidx_t20.queries q ORDER BY q.id',
			idxcol, op, CASE idxcol WHEN 'v' THEN 'vector' ELSE 'halfvec' END))
$$;
CREATE TABLE healthy AS SELECT array(SELECT fresh_top('h', '<->')) AS h, array(SELECT fresh_top('v', '<=>')) AS v;
SELECT is((SELECT count(*) FROM sh('rm -f ' || shell_quote(sidecar_path('items_h_l2')) || ' ' || shell_quote(sidecar_path('items_v_cos')))),
	0::bigint, 'the sidecars of a halfvec and a vector index are deleted');
CREATE TABLE broken AS SELECT array(SELECT fresh_top('h', '<->')) AS h, array(SELECT fresh_top('v', '<=>')) AS v;
SELECT is((SELECT array(SELECT l FROM unnest(b.h) l WHERE l ~ '^[0-9]+\|') FROM broken b),
	(SELECT array(SELECT l FROM unnest(h.h) l WHERE l ~ '^[0-9]+\|') FROM healthy h),
	'halfvec index without its sidecar: the same rows (read from the table)');
SELECT is((SELECT array(SELECT l FROM unnest(b.v) l WHERE l ~ '^[0-9]+\|') FROM broken b),
	(SELECT array(SELECT l FROM unnest(h.v) l WHERE l ~ '^[0-9]+\|') FROM healthy h),
	'vector cosine index without its sidecar: the same rows');
SELECT is((SELECT count(*) FROM broken b, unnest(b.h) l WHERE l LIKE 'WARNING:%items_h_l2%'), 1::bigint,
	'one WARNING names the halfvec index');
SELECT is((SELECT count(*) FROM healthy h, unnest(h.h || h.v) l WHERE l !~ '^[0-9]+\|'), 0::bigint,
	'no other output with healthy sidecars');
REINDEX INDEX items_h_l2;
REINDEX INDEX items_v_cos;
SELECT ok(sidecar_exists(sidecar_path('items_h_l2')), 'REINDEX writes the sidecar again');

-- ---------------------------------------------------------------- bad input
SET enable_seqscan = off;
SELECT throws_like('SELECT id FROM items ORDER BY v <-> ''[1,2,3]'' LIMIT 1', '%dimensions%',
	'a query of other dimensions: an error');
SELECT throws_like('SELECT id FROM items ORDER BY h <#> ''[1,2,3]'' LIMIT 1', '%dimensions%',
	'a halfvec query of other dimensions: an error');
SELECT throws_ok('SELECT id FROM items ORDER BY v <=> ''[' || array_to_string(array_fill(0, ARRAY[96]), ',') || ']'' LIMIT 1',
	'22000', 'cosine distance is undefined for a zero vector', 'a zero query under cosine: vidx''s error');
SELECT throws_ok('INSERT INTO items (id, v) VALUES (-1, ''[' || array_to_string(array_fill(0, ARRAY[96]), ',') || ']'')',
	'22000', 'cosine distance is undefined for a zero vector', 'inserting a zero vector into a cosine index: vidx''s error');
SELECT throws_like('INSERT INTO items (id, v) VALUES (-1, ''[' || array_to_string(array_fill(1, ARRAY[95]), ',') || ',NaN]'')',
	'%NaN%', 'a NaN element: pgvector''s error (it cannot reach the index)');
SELECT throws_like('INSERT INTO items (id, h) VALUES (-1, ''[' || array_to_string(array_fill(1, ARRAY[95]), ',') || ',1e6]'')',
	'%out of range%', 'a halfvec element out of half range: pgvector''s error');
CREATE TABLE loose (id int, v vector);  -- no type modifier: the index checks dimensions
CREATE INDEX loose_v ON loose USING vidx (v vector_l2_ops);
INSERT INTO loose VALUES (1, '[1,2,3]');
SELECT throws_ok('INSERT INTO loose VALUES (2, ''[1,2,3,4]'')', '22000',
	'vector has 4 dimensions, but index "loose_v" has 3', 'an insert of other dimensions: vidx''s error');
SELECT is((SELECT count(*) FROM loose), 1::bigint, 'the failed insert changed nothing');
SELECT is((SELECT count(*) FROM items WHERE id = -1), 0::bigint, 'the failed inserts changed nothing');
RESET enable_seqscan;

-- ---------------------------------------------------------------- beyond pgvector's index limits
-- pgvector's HNSW and IVFFlat index vector up to 2,000 dimensions and halfvec up to 4,000.
CREATE TABLE wide (id int, v vector(3000), h halfvec(6000));
INSERT INTO wide SELECT i,
	(SELECT array_agg(sin(i * j * 0.001)::real) FROM generate_series(1, 3000) j)::vector,
	(SELECT array_agg(cos(i * j * 0.001)::real) FROM generate_series(1, 6000) j)::halfvec
	FROM generate_series(1, 60) i;
CREATE INDEX wide_v ON wide USING vidx (v);
CREATE INDEX wide_h ON wide USING vidx (h halfvec_cosine_ops);
SET enable_seqscan = off;
SELECT is((SELECT array_agg(id) FROM (SELECT w.id FROM wide w, wide q WHERE q.id = 17 ORDER BY w.v <-> q.v LIMIT 1) s),
	ARRAY[17], 'vector(3000): the nearest row of a stored vector is itself');
SELECT is((SELECT array_agg(id) FROM (SELECT w.id FROM wide w, wide q WHERE q.id = 33 ORDER BY w.h <=> q.h LIMIT 1) s),
	ARRAY[33], 'halfvec(6000): the nearest row of a stored vector is itself');
RESET enable_seqscan;

-- ---------------------------------------------------------------- DROP EXTENSION
CREATE TABLE paths AS SELECT sidecar_path('items_v_l2') AS v_l2, sidecar_path('items_h_cos') AS h_cos,
	sidecar_path('wide_v') AS wide;
SELECT throws_ok('DROP EXTENSION vidx_pgvector', '2BP01', NULL,
	'DROP EXTENSION vidx_pgvector refuses while vidx indexes use its operator classes');
SELECT throws_ok('DROP EXTENSION vidx', '2BP01', NULL, 'DROP EXTENSION vidx refuses while vidx_pgvector needs it');
DROP EXTENSION vidx_pgvector CASCADE;
SELECT is((SELECT count(*) FROM pg_index WHERE indrelid = 'items'::regclass), 1::bigint,
	'DROP EXTENSION vidx_pgvector CASCADE drops the vidx indexes on vector/halfvec (the primary key stays)');
SELECT ok(NOT sidecar_exists((SELECT v_l2 FROM paths)) AND NOT sidecar_exists((SELECT h_cos FROM paths))
	AND NOT sidecar_exists((SELECT wide FROM paths)), '... and removes their sidecar files');
CREATE EXTENSION vidx_pgvector SCHEMA public;
CREATE INDEX items_v_again ON items USING vidx (v vector_ip_ops);
UPDATE paths SET v_l2 = sidecar_path('items_v_again');
DROP EXTENSION vector CASCADE;
SELECT ok(NOT EXISTS (SELECT FROM pg_extension WHERE extname IN ('vector', 'vidx_pgvector')),
	'DROP EXTENSION vector CASCADE drops vidx_pgvector too');
SELECT ok(NOT sidecar_exists((SELECT v_l2 FROM paths)), '... and the sidecar of the vidx index on the dropped column');
CREATE TABLE plain AS SELECT id, v::real[] AS v FROM raw WHERE id <= 500;
CREATE INDEX plain_v ON plain USING vidx (v);
SELECT ok(vidx_verify('plain_v'), 'vidx still works on real[] afterwards');

SELECT * FROM finish();
DROP SCHEMA vidx_t20 CASCADE;
