-- 23: a scan estimates a group of 256 or more postings of a leaf on
-- vidx.scan_threads threads, each writing the candidates of the postings it
-- estimated. The answers must not depend on the thread count: for each
-- metric, with and without refinement codes, at a few probes and at every
-- leaf, 2 and 4 threads return the rows (in order) that 1 thread does. The
-- leaves here hold about 1,000 postings of 96 dimensions (one group of a
-- few pages each), so the threads do engage: the backend has one thread
-- after the scans with one, and more after those with two (the builds
-- start none: vidx.build_threads = 1).
\set schema vidx_t23
\ir ../pgtap_setup.sql

SELECT plan(10);

SET vidx.build_threads = 1;
SELECT setseed(0.2323);
CREATE TABLE centres AS SELECT * FROM gaussian_centres(16, 96, 2);
CREATE TABLE items AS SELECT * FROM gaussian_rows('centres', 8000, 1);
CREATE TABLE queries AS SELECT * FROM gaussian_rows('centres', 20, 7);

CREATE INDEX items_l2 ON items USING vidx (v vidx_l2_ops) WITH (lists = 8);
CREATE INDEX items_ip ON items USING vidx (v vidx_ip_ops) WITH (lists = 8);
CREATE INDEX items_cos ON items USING vidx (v vidx_cosine_ops) WITH (lists = 8, refine_bits = 4);

-- The first 10 rows of every query through the index, under the session's settings.
CREATE FUNCTION answers(op text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE q record; got text[]; all_rows text := '';
BEGIN
	SET LOCAL enable_seqscan = off;
	FOR q IN SELECT id, v FROM queries ORDER BY id LOOP
		EXECUTE format('SELECT array_agg(id::text) FROM (SELECT id FROM items ORDER BY v %s $1 LIMIT 10) s', op)
			INTO got USING q.v;
		all_rows := all_rows || array_to_string(got, ',') || ';';
	END LOOP;
	RETURN all_rows;
END $$;

-- The backend's threads (its tasks in /proc).
CREATE FUNCTION backend_threads() RETURNS bigint LANGUAGE sql AS $$
	SELECT count(*) FROM pg_ls_dir('/proc/' || pg_backend_pid() || '/task')
$$;

CREATE TABLE runs (threads int, probes int, op text, rows text);
CREATE FUNCTION run_all(threads int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE p int; op text;
BEGIN
	PERFORM set_config('vidx.scan_threads', threads::text, true);
	FOREACH p IN ARRAY ARRAY[2, 1000] LOOP
		PERFORM set_config('vidx.probes', p::text, true);
		FOREACH op IN ARRAY ARRAY['<->', '<#>', '<=>'] LOOP
			INSERT INTO runs VALUES (threads, p, op, answers(op));
		END LOOP;
	END LOOP;
END $$;

SELECT run_all(1);
SELECT is(backend_threads(), 1::bigint, 'one scan thread: the backend runs alone');
SELECT run_all(2);
SELECT cmp_ok(backend_threads(), '>', 1::bigint, 'two scan threads: the backend started a worker');
SELECT run_all(4);

-- The metrics (of 3) whose answers with that many threads at those probes are those of one thread.
CREATE FUNCTION same_as_one_thread(n int, p int) RETURNS bigint LANGUAGE sql AS $$
	SELECT count(*) FROM runs a JOIN runs b USING (probes, op)
	WHERE a.threads = 1 AND b.threads = n AND a.probes = p AND a.rows = b.rows
$$;
-- Every run answered each of the 20 queries with 10 rows (9 commas each),
-- so the comparisons below compare full answers, not empty ones.
SELECT is((SELECT count(*) FROM runs
           WHERE length(rows) - length(replace(rows, ',', '')) <> 20 * 9
              OR length(rows) - length(replace(rows, ';', '')) <> 20),
          0::bigint, 'every run returned 10 rows for each of the 20 queries');
SELECT is(same_as_one_thread(2, 2), 3::bigint,
          'probes 2: 2 threads return what 1 does, for L2, inner product and cosine (refined)');
SELECT is(same_as_one_thread(4, 2), 3::bigint, 'probes 2: 4 threads return what 1 does');
SELECT is(same_as_one_thread(2, 1000), 3::bigint, 'every leaf: 2 threads return what 1 does');
SELECT is(same_as_one_thread(4, 1000), 3::bigint, 'every leaf: 4 threads return what 1 does');

-- And every leaf is the exact answer.
SET vidx.scan_threads = 2;
SET vidx.probes = 1000;
SELECT is(index_mismatches('items', '<->'), 0::bigint, 'two threads, every leaf, L2: the exact answer');
SELECT is(index_mismatches('items', '<#>'), 0::bigint, 'two threads, every leaf, inner product: the exact answer');
SELECT is(index_mismatches('items', '<=>'), 0::bigint, 'two threads, every leaf, cosine (refined): the exact answer');

SELECT * FROM finish();
DROP SCHEMA vidx_t23 CASCADE;
