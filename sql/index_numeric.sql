-- Vectors at the edges of float32. An element beyond 1e15 in absolute value
-- cannot be indexed: CREATE INDEX, REINDEX, INSERT and UPDATE refuse it with
-- a clear error and change nothing. Below it every vector is indexed and
-- found: at the limit, denormal-only, mixed magnitudes.
SET client_min_messages = warning;
CREATE TABLE num (id int PRIMARY KEY, v real[]);
INSERT INTO num SELECT i, ARRAY[sin(i), cos(i * 0.7), sin(i * 1.3) + 0.5]::real[]
  FROM generate_series(1, 2000) i;
INSERT INTO num VALUES (9999, '{3e38,3e38,3e38}');
CREATE TEMP TABLE sidecars AS SELECT count(*) AS n FROM pg_ls_dir('vidx', true, false);

-- The build fails cleanly: no index, no sidecar, the table stays writable.
CREATE INDEX num_l2 ON num USING vidx (v);
SELECT count(*) AS indexes FROM pg_class WHERE relname = 'num_l2';
SELECT (SELECT count(*) FROM pg_ls_dir('vidx', true, false)) - n AS new_sidecars FROM sidecars;
INSERT INTO num VALUES (2001, '{0.5,0.5,0.5}');
UPDATE num SET v = '{0.25,0.5,0.75}' WHERE id = 2001;
-- Without that row the build works.
DELETE FROM num WHERE id = 9999;
CREATE INDEX num_l2 ON num USING vidx (v);
SELECT vidx_verify('num_l2');

-- INSERT and UPDATE beyond the limit fail and change nothing.
CREATE TEMP TABLE before AS SELECT vidx_stats('num_l2') AS stats, (SELECT count(*) FROM num) AS n;
INSERT INTO num VALUES (9998, '{1e19,1e19,1e19}');
INSERT INTO num VALUES (9998, '{1,2,1.0000001e15}');
INSERT INTO num VALUES (9998, '[0:2]={1,-1e16,1}');
INSERT INTO num VALUES (9998, ARRAY[1, 2, 1e20]::float8[]);
UPDATE num SET v = '{0,0,-3.4e38}' WHERE id = 1;
SELECT vidx_stats('num_l2') = stats AS stats_unchanged, (SELECT count(*) FROM num) = n AS rows_unchanged,
       (SELECT v FROM num WHERE id = 1) = ARRAY[sin(1), cos(0.7), sin(1.3) + 0.5]::real[] AS row_unchanged
FROM before;
SELECT vidx_verify('num_l2');
-- Later inserts and queries work.
INSERT INTO num VALUES (2002, '{7,7,7}');
SET enable_seqscan = off;
SELECT id FROM num ORDER BY v <-> '{7,7,7}' LIMIT 1;
RESET enable_seqscan;

-- REINDEX fails the same way and keeps the old index. (A partial index whose
-- predicate function lies about being immutable lets the row in.)
CREATE TABLE numr (id int, v real[]);
INSERT INTO numr SELECT i, ARRAY[i, -i, 1]::real[] FROM generate_series(1, 200) i;
INSERT INTO numr VALUES (999, '{1,1e16,1}');
CREATE FUNCTION numr_in(id int) RETURNS bool LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  RETURN id <> 999 OR current_setting('vidx_test.include_all', true) = 'on';
END $$;
CREATE INDEX numr_v ON numr USING vidx (v) WHERE numr_in(id);
TRUNCATE sidecars;
INSERT INTO sidecars SELECT count(*) FROM pg_ls_dir('vidx', true, false);
SET vidx_test.include_all = on;
REINDEX INDEX numr_v;
RESET vidx_test.include_all;
SELECT (SELECT count(*) FROM pg_ls_dir('vidx', true, false)) - n AS new_sidecars FROM sidecars;
INSERT INTO numr VALUES (201, '{201,-201,1}');
SELECT vidx_verify('numr_v'), (vidx_stats('numr_v')->>'postings')::int AS postings;

-- Rows at the limit, denormal-only and of mixed magnitudes, inserted before
-- the build and after it, in L2, inner-product and cosine indexes.
CREATE TABLE edge (id int PRIMARY KEY, v real[]);
INSERT INTO edge SELECT i, ARRAY[sin(i), cos(i * 0.7), sin(i * 1.3) + 0.5]::real[]
  FROM generate_series(1, 2000) i;
INSERT INTO edge VALUES
  (3001, '{1e15,-1e15,1e15}'), (3002, '{1e-40,1e-40,1e-40}'), (3003, '{1e15,1e-30,-1e15}');
CREATE INDEX edge_l2 ON edge USING vidx (v vidx_l2_ops);
CREATE INDEX edge_ip ON edge USING vidx (v vidx_ip_ops);
CREATE INDEX edge_cos ON edge USING vidx (v vidx_cosine_ops);
INSERT INTO edge VALUES
  (3101, '{-1e15,1e15,-1e15}'), (3102, '{-2e-40,1e-40,3e-40}'), (3103, '{-1e15,1e-30,1e15}');
ANALYZE edge;
SELECT vidx_verify('edge_l2') AND vidx_verify('edge_ip') AND vidx_verify('edge_cos') AS verified;
SELECT id, v <-> v AS l2, v <#> v AS ip, v <=> v AS cos FROM edge WHERE id > 3000 ORDER BY id;

-- At the default settings each is its own nearest neighbour (L2, cosine);
-- under inner product the nearest is the row with the largest product,
-- the same as an exact search finds (below).
SET enable_seqscan = off;
EXPLAIN (COSTS OFF)
SELECT e.id, (SELECT id FROM edge ORDER BY v <-> e.v LIMIT 1) FROM edge e WHERE e.id > 3000;
EXPLAIN (COSTS OFF)
SELECT e.id, (SELECT id FROM edge ORDER BY v <#> e.v LIMIT 1) FROM edge e WHERE e.id > 3000;
EXPLAIN (COSTS OFF)
SELECT e.id, (SELECT id FROM edge ORDER BY v <=> e.v LIMIT 1) FROM edge e WHERE e.id > 3000;
SELECT e.id,
       (SELECT id FROM edge ORDER BY v <-> e.v LIMIT 1) AS l2,
       (SELECT id FROM edge ORDER BY v <#> e.v LIMIT 1) AS ip,
       (SELECT id FROM edge ORDER BY v <=> e.v LIMIT 1) AS cos
FROM edge e WHERE e.id > 3000 ORDER BY e.id;
-- The same by exact search.
SET enable_seqscan = on;
SET enable_indexscan = off;
SELECT e.id,
       (SELECT id FROM edge ORDER BY v <-> e.v LIMIT 1) AS l2,
       (SELECT id FROM edge ORDER BY v <#> e.v LIMIT 1) AS ip,
       (SELECT id FROM edge ORDER BY v <=> e.v LIMIT 1) AS cos
FROM edge e WHERE e.id > 3000 ORDER BY e.id;
RESET enable_indexscan;

-- At full probes and re-scoring every row comes back, in order.
SET enable_seqscan = off;
SET vidx.probes = 1000000;
SET vidx.rerank = 1000000;
CREATE FUNCTION edge_all(op text, q real[]) RETURNS TABLE (n bigint, ordered bool) LANGUAGE plpgsql AS $$
BEGIN
  RETURN QUERY EXECUTE format(
    'SELECT count(*), bool_and(d >= prev) FROM (SELECT d, lag(d, 1, ''-Infinity'') OVER () AS prev FROM
       (SELECT v %s $1 AS d FROM edge ORDER BY v %s $1 LIMIT 100000) s) t', op, op) USING q;
END $$;
SELECT op, q, (edge_all(op, q)).* FROM (VALUES ('<->'), ('<#>'), ('<=>')) o (op),
  (VALUES ('{0.1,0.2,0.3}'::real[]), ('{1e15,1e15,-1e15}'), ('{1e-40,-1e-40,1e-40}')) qs (q)
ORDER BY op, q::text;
RESET vidx.probes;
RESET vidx.rerank;

-- A rebuild of those rows works too.
REINDEX TABLE edge;
SELECT vidx_verify('edge_l2') AND vidx_verify('edge_ip') AND vidx_verify('edge_cos') AS verified;
SELECT e.id,
       (SELECT id FROM edge ORDER BY v <-> e.v LIMIT 1) AS l2,
       (SELECT id FROM edge ORDER BY v <#> e.v LIMIT 1) AS ip,
       (SELECT id FROM edge ORDER BY v <=> e.v LIMIT 1) AS cos
FROM edge e WHERE e.id > 3000 ORDER BY e.id;
RESET enable_seqscan;
DROP TABLE num, numr, edge;
DROP FUNCTION numr_in(int), edge_all(text, real[]);
