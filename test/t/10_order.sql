-- 10: every ORDER BY ... LIMIT n answered by the index returns non-decreasing
-- distances, for any n (1 to 5,000), with or without a filter (selectivity
-- 0.1% to 50%), for each metric, at the default settings and at settings that
-- stress the scan (a small re-scoring budget, one probe, refinement codes).
-- PostgreSQL does not re-sort what an ordered index scan returns, so a row
-- out of order reaches the user as it is. Filtered and deep queries must also
-- keep finding rows: their recall against an exact search is checked.
-- Queries beyond the range the codes can represent (elements of 1e16 to 3e38)
-- are answered exactly, in order.
\set schema vidx_t10
\ir ../pgtap_setup.sql

SELECT plan(16);

-- 40 Gaussian clusters of 64 dimensions, 20,000 rows, seeded.
SELECT setseed(0.4242);
CREATE TABLE centres AS SELECT * FROM gaussian_centres(40, 64, 1.5);
CREATE TABLE items AS SELECT * FROM gaussian_rows('centres', 20000, 7);
ALTER TABLE items ADD PRIMARY KEY (id);
CREATE TABLE queries AS SELECT * FROM gaussian_rows('centres', 12, 13);
ANALYZE items;

CREATE INDEX items_l2 ON items USING vidx (v vidx_l2_ops);
CREATE INDEX items_ip ON items USING vidx (v vidx_ip_ops);
CREATE INDEX items_cos ON items USING vidx (v vidx_cosine_ops);

-- The distances one query returns, in the order they came.
CREATE FUNCTION scan_distances(op text, q real[], filter text, lim int) RETURNS float8[]
LANGUAGE plpgsql AS $$
DECLARE d float8[];
BEGIN
  SET LOCAL enable_seqscan = off;
  EXECUTE format('SELECT coalesce(array_agg(d), ''{}'') FROM (SELECT v %s $1 AS d FROM items WHERE %s ORDER BY v %s $1 LIMIT %s) s',
                 op, filter, op, lim) INTO d USING q;
  RETURN d;
END $$;

-- Steps back (a distance smaller than the one before it) in an array.
CREATE FUNCTION steps_back(d float8[]) RETURNS int LANGUAGE sql IMMUTABLE AS $$
  SELECT count(*)::int FROM generate_series(2, coalesce(array_length(d, 1), 0)) i WHERE d[i] < d[i - 1]
$$;

-- Every query x LIMIT x filter of a grid: total steps back, and the share of
-- the exact answer's rows the index returned (by distance: ties cannot hurt).
CREATE FUNCTION order_grid(op text, limits int[], filters text[],
                           OUT queries int, OUT steps bigint, OUT recall float8)
LANGUAGE plpgsql AS $$
DECLARE q record; lim int; f text; got float8[]; want float8[]; hit bigint := 0; total bigint := 0;
BEGIN
  queries := 0; steps := 0;
  FOR q IN SELECT id, v FROM queries ORDER BY id LOOP
    FOREACH lim IN ARRAY limits LOOP
      FOREACH f IN ARRAY filters LOOP
        got := scan_distances(op, q.v, f, lim);
        steps := steps + steps_back(got);
        queries := queries + 1;
        SET LOCAL enable_indexscan = off;
        SET LOCAL enable_seqscan = on;
        EXECUTE format('SELECT coalesce(array_agg(d), ''{}'') FROM (SELECT v %s $1 AS d FROM items WHERE %s ORDER BY 1 LIMIT %s) s',
                       op, f, lim) INTO want USING q.v;
        RESET enable_indexscan;
        -- rows of the exact answer at or below the index's last distance... counted by value
        SELECT hit + count(*) FILTER (WHERE w <= coalesce(got[array_length(got, 1)], -1e300)
                                        AND w = ANY (got)),
               total + count(*)
          INTO hit, total FROM unnest(want) w;
      END LOOP;
    END LOOP;
  END LOOP;
  recall := CASE WHEN total = 0 THEN 1 ELSE hit::float8 / total END;
END $$;

\set limits '''{1,2,10,50,200,1000,5000}'''
\set filters '''{true, "id % 1000 = 7", "id % 100 = 7", "id % 10 = 7", "id % 2 = 0"}'''

-- Defaults, L2: the whole grid.
CREATE TABLE grid AS SELECT * FROM order_grid('<->', :limits, :filters);
SELECT is(steps, 0::bigint, format('L2, defaults: %s queries (LIMIT 1-5000, filters 0.1%%-50%%) never step back', queries))
  FROM grid;
SELECT cmp_ok(recall, '>=', 0.97::float8, 'L2, defaults: the grid finds at least 97% of the exact rows')
  FROM grid;

-- The other metrics: a smaller grid.
SELECT is(steps, 0::bigint, 'inner product, defaults: no step back')
  FROM order_grid('<#>', '{1,10,200,5000}', '{true, "id % 1000 = 7", "id % 10 = 7"}');
SELECT is(steps, 0::bigint, 'cosine, defaults: no step back')
  FROM order_grid('<=>', '{1,10,200,5000}', '{true, "id % 1000 = 7", "id % 10 = 7"}');

-- A small re-scoring budget returns rows before the bounds settle them.
SET vidx.rerank = 5;
SELECT is(steps, 0::bigint, 'L2, vidx.rerank = 5: no step back')
  FROM order_grid('<->', '{10,50,1000,5000}', '{true, "id % 100 = 7", "id % 2 = 0"}');
SELECT is(steps, 0::bigint, 'cosine, vidx.rerank = 5: no step back')
  FROM order_grid('<=>', '{10,1000}', '{true, "id % 100 = 7"}');
RESET vidx.rerank;

-- One probe: every further row comes from later rounds.
SET vidx.probes = 1;
CREATE TABLE grid1 AS SELECT * FROM order_grid('<->', '{10,200,5000}', '{true, "id % 1000 = 7", "id % 10 = 7"}');
SELECT is(steps, 0::bigint, 'L2, vidx.probes = 1: no step back') FROM grid1;
SELECT cmp_ok(recall, '>=', 0.9::float8, 'L2, vidx.probes = 1: filtered and deep queries still find 90% of the exact rows')
  FROM grid1;
RESET vidx.probes;

-- Refinement codes change the bounds the scan works with.
CREATE INDEX items_l2_refined ON items USING vidx (v vidx_l2_ops) WITH (refine_bits = 4);
DROP INDEX items_l2;
SELECT is(steps, 0::bigint, 'L2, refine_bits = 4: no step back')
  FROM order_grid('<->', '{10,1000}', '{true, "id % 100 = 7"}');
DROP INDEX items_l2_refined;
CREATE INDEX items_l2 ON items USING vidx (v vidx_l2_ops);

-- A cursor read a row at a time (the executor asks for rows one by one).
BEGIN;
SET LOCAL enable_seqscan = off;
DECLARE c CURSOR FOR SELECT v <-> (SELECT v FROM queries WHERE id = 1) AS d FROM items
  WHERE id % 10 = 3 ORDER BY v <-> (SELECT v FROM queries WHERE id = 1);
CREATE TEMP TABLE fetched (n serial, d float8);
CREATE FUNCTION fetch_all(k int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE r record; cur refcursor := 'c';
BEGIN
  FOR i IN 1 .. k LOOP
    FETCH cur INTO r;
    EXIT WHEN NOT FOUND;
    INSERT INTO fetched (d) VALUES (r.d);
  END LOOP;
END $$;
SELECT fetch_all(3000);
COMMIT;
SELECT is((SELECT steps_back(array_agg(d ORDER BY n)) FROM fetched), 0,
          'a cursor over a 10% filter, 2,000 rows one FETCH at a time, never steps back');

-- vidx.probes covering every leaf is an exhaustive search: every row, in exact
-- order (the bounds then always hold; the probabilistic ones, on this uniform
-- data, let a row or two in ten thousand through late, to be skipped).
CREATE TABLE uni (id int PRIMARY KEY, v real[]);
SELECT setseed(0.25);
INSERT INTO uni SELECT i, ARRAY(SELECT (random() * 6 - 3 + 0 * i)::real FROM generate_series(1, 64))
  FROM generate_series(1, 40000) i;
CREATE INDEX uni_v ON uni USING vidx (v) WITH (lists = 100);
CREATE FUNCTION exhaustive_check(op text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE d float8[]; bad bigint := 0;
BEGIN
  SET LOCAL enable_seqscan = off;
  SET LOCAL vidx.probes = 100;
  FOR q IN 1 .. 3 LOOP
    EXECUTE format('SELECT array_agg(d) FROM (SELECT v %s (SELECT v FROM uni WHERE id = $1) AS d FROM uni ORDER BY v %s (SELECT v FROM uni WHERE id = $1) LIMIT 40000) s', op, op)
      INTO d USING q * 1000;
    IF array_length(d, 1) <> 40000 OR steps_back(d) > 0 THEN
      bad := bad + 1;
    END IF;
  END LOOP;
  RETURN bad;
END $$;
SELECT is(exhaustive_check('<->'), 0::bigint, 'L2, probes = every leaf: all 40,000 rows, in order, for 3 queries');
SELECT is(exhaustive_check('<#>'), 0::bigint, 'inner product, probes = every leaf: the same');
DROP TABLE uni;

-- Queries beyond what the codes can represent are answered exactly, in order.
CREATE TABLE big_queries (id int, v real[]);
INSERT INTO big_queries
  SELECT 1, array_agg(CASE WHEN j = 1 THEN 1e16 ELSE v[j] END ORDER BY j) FROM queries, generate_series(1, 64) j WHERE id = 1
  UNION ALL
  SELECT 2, array_agg(CASE WHEN j % 2 = 0 THEN 1e19 ELSE -1e19 END ORDER BY j) FROM generate_series(1, 64) j
  UNION ALL
  SELECT 3, array_agg(CASE WHEN j <= 3 THEN 3e38 ELSE 0.5 END ORDER BY j) FROM generate_series(1, 64) j;
CREATE FUNCTION big_query_check(op text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE q record; got float8[]; want float8[]; bad bigint := 0;
BEGIN
  FOR q IN SELECT id, v FROM big_queries ORDER BY id LOOP
    got := scan_distances(op, q.v, 'true', 50);
    SET LOCAL enable_indexscan = off;
    SET LOCAL enable_seqscan = on;
    EXECUTE format('SELECT array_agg(d) FROM (SELECT v %s $1 AS d FROM items ORDER BY 1 LIMIT 50) s', op)
      INTO want USING q.v;
    RESET enable_indexscan;
    IF got IS DISTINCT FROM want OR steps_back(got) > 0 THEN
      bad := bad + 1;
    END IF;
  END LOOP;
  RETURN bad;
END $$;
SELECT is(big_query_check('<->'), 0::bigint, 'L2: queries with elements of 1e16, 1e19 and 3e38 get the exact distances, in order');
SELECT is(big_query_check('<#>'), 0::bigint, 'inner product: the same');
SELECT is(big_query_check('<=>'), 0::bigint, 'cosine: the same');
SELECT is((SELECT count(*) FROM (SELECT id FROM items ORDER BY v <-> (SELECT v FROM big_queries WHERE id = 3) LIMIT 20000) s),
          20000::bigint, 'L2: a query of 3e38 elements returns every row');

SELECT * FROM finish();
DROP SCHEMA vidx_t10 CASCADE;
