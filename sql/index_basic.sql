-- vidx index: build, plans, exact agreement at full probes, inserts, NULLs,
-- the three operator classes, and the query-side array types.
SET client_min_messages = warning;
CREATE TABLE items (id int PRIMARY KEY, v real[]);
INSERT INTO items
  SELECT i, ARRAY[sin(i), cos(i * 0.7), sin(i * 1.3) + 0.5, cos(i * 0.11)]::real[]
  FROM generate_series(1, 2000) i;
CREATE INDEX items_v_idx ON items USING vidx (v) WITH (lists = 16);
ANALYZE items;

-- The planner picks the index for ORDER BY distance LIMIT, whatever the query array type.
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY v <-> '{0.1,0.2,0.3,0.4}' LIMIT 5;
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY v <-> ARRAY[0.1, 0.2, 0.3, 0.4] LIMIT 5;
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY v <-> ARRAY[0.1, 0.2, 0.3, 0.4]::float8[] LIMIT 5;
-- ... and not where it cannot serve the query: without ORDER BY (even with
-- sequential scans off, and a partial index whose predicate the query
-- implies, which makes the planner consider it), or ORDER BY an operator of
-- another operator class.
CREATE INDEX items_v_even ON items USING vidx (v) WITH (lists = 4) WHERE id % 2 = 0;
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT id, v FROM items WHERE id % 2 = 0;
RESET enable_seqscan;
DROP INDEX items_v_even;
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY v <#> '{0.1,0.2,0.3,0.4}' LIMIT 5;

-- With every leaf probed and enough reranking, the index returns the exact answer.
SET vidx.probes = 16;
SET vidx.rerank = 3000;
CREATE FUNCTION exact_ids(q real[], k int) RETURNS int[] LANGUAGE sql AS $$
  SELECT array_agg(id ORDER BY d, id) FROM (
    SELECT id, v <-> q AS d FROM items WHERE v IS NOT NULL ORDER BY v <-> q, id LIMIT k) s $$;
CREATE FUNCTION index_ids(q real[], k int) RETURNS int[] LANGUAGE plpgsql AS $$
DECLARE r int[];
BEGIN
  SET LOCAL enable_seqscan = off;
  SELECT array_agg(id) INTO r FROM (SELECT id FROM items ORDER BY v <-> q LIMIT k) s;
  RETURN r;
END $$;
SELECT count(*) AS queries, count(*) FILTER (WHERE exact_ids(q, 10) = index_ids(q, 10)) AS exact
FROM (SELECT ARRAY[sin(j * 3.1), cos(j), sin(j * 0.3), cos(j * 2.2)]::real[] AS q
      FROM generate_series(1, 20) j) qs;

-- Distances come out in order.
SET enable_seqscan = off;
SELECT bool_and(d >= lag_d) AS ordered FROM (
  SELECT d, lag(d, 1, 0::float8) OVER () AS lag_d
  FROM (SELECT v <-> '{0.1,0.2,0.3,0.4}' AS d FROM items ORDER BY v <-> '{0.1,0.2,0.3,0.4}' LIMIT 50) s) t;

-- The query side accepts double precision[] and numeric[] with the same answer.
SELECT (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY v <-> '{0.1,0.2,0.3,0.4}'::real[] LIMIT 5) a)
     = (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY v <-> ARRAY[0.1,0.2,0.3,0.4] LIMIT 5) b) AS numeric_same,
       (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY v <-> '{0.1,0.2,0.3,0.4}'::real[] LIMIT 5) a)
     = (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY v <-> '{0.1,0.2,0.3,0.4}'::float8[] LIMIT 5) b) AS float8_same;

-- Inserts are found; NULL vectors are not indexed; a NULL query returns rows.
INSERT INTO items VALUES (5001, '{10,10,10,10}'), (5002, NULL);
SELECT id FROM items ORDER BY v <-> '{10,10,10,10}' LIMIT 1;
SELECT count(*) FROM (SELECT id FROM items ORDER BY v <-> NULL::real[] LIMIT 7) s;
SELECT count(*) FROM (SELECT id FROM items ORDER BY v <-> '{0,0,0,0}' LIMIT 100000) s;

-- Wrong dimensions, on insert and on query.
INSERT INTO items VALUES (5003, '{1,2,3}');
SELECT id FROM items ORDER BY v <-> '{1,2,3}' LIMIT 1;
SELECT vidx_verify('items_v_idx');
SELECT s->>'metric' AS metric, s->>'dims' AS dims, s->>'leaves' AS leaves, s->>'postings' AS postings,
       s->'sidecar'->>'state' AS sidecar
FROM vidx_stats('items_v_idx') s;

-- An index built on an empty table takes its dimensions from the first insert.
CREATE TABLE empty_items (id int, v real[]);
CREATE INDEX ON empty_items USING vidx (v);
SELECT count(*) FROM (SELECT id FROM empty_items ORDER BY v <-> '{1,2}' LIMIT 3) s;
INSERT INTO empty_items SELECT i, ARRAY[i, -i]::real[] FROM generate_series(1, 300) i;
SELECT id FROM empty_items ORDER BY v <-> '{7.2,-7.2}' LIMIT 3;
INSERT INTO empty_items VALUES (0, '{1,2,3}');
SELECT vidx_verify('empty_items_v_idx');

-- Inner product and cosine operator classes.
CREATE INDEX items_v_ip ON items USING vidx (v vidx_ip_ops) WITH (lists = 8);
CREATE INDEX items_v_cos ON items USING vidx (v vidx_cosine_ops) WITH (lists = 8);
SET vidx.probes = 8;
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY v <#> '{0.1,0.2,0.3,0.4}' LIMIT 5;
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY v <=> '{0.1,0.2,0.3,0.4}' LIMIT 5;
SELECT (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY v <#> '{0.1,0.2,0.3,0.4}' LIMIT 10) a)
     = (SELECT array_agg(id) FROM (SELECT id FROM items WHERE v IS NOT NULL
                                   ORDER BY (v <#> '{0.1,0.2,0.3,0.4}') + 0, id LIMIT 10) b) AS ip_exact,
       (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY v <=> '{0.1,0.2,0.3,0.4}' LIMIT 10) a)
     = (SELECT array_agg(id) FROM (SELECT id FROM items WHERE v IS NOT NULL
                                   ORDER BY (v <=> '{0.1,0.2,0.3,0.4}') + 0, id LIMIT 10) b) AS cosine_exact;
INSERT INTO items VALUES (6000, '{0,0,0,0}');
SELECT id FROM items ORDER BY v <=> '{0,0,0,0}' LIMIT 1;
SELECT vidx_verify('items_v_ip'), vidx_verify('items_v_cos');
RESET enable_seqscan;

-- Statistics are for the index's owner and for pg_read_all_stats and
-- pg_stat_scan_tables; vidx_verify is for the owner; the sweep for superusers.
CREATE ROLE regress_vidx_reader;
GRANT SELECT ON items TO regress_vidx_reader;
SET ROLE regress_vidx_reader;
SELECT count(*) FROM (SELECT id FROM items ORDER BY v <-> '{1,2,3,4}' LIMIT 5) s;
SELECT vidx_stats('items_v_ip');
SELECT vidx_verify('items_v_ip');
SELECT vidx_sweep_sidecars();
RESET ROLE;
GRANT pg_read_all_stats TO regress_vidx_reader;
SET ROLE regress_vidx_reader;
SELECT vidx_stats('items_v_ip')->>'metric' AS metric;
SELECT vidx_verify('items_v_ip');
RESET ROLE;
REVOKE pg_read_all_stats FROM regress_vidx_reader;
GRANT pg_stat_scan_tables TO regress_vidx_reader;
SET ROLE regress_vidx_reader;
SELECT vidx_stats('items_v_ip')->>'metric' AS metric;
RESET ROLE;
SELECT vidx_sweep_sidecars() >= 0 AS swept;

DROP TABLE items, empty_items;
DROP ROLE regress_vidx_reader;
DROP FUNCTION exact_ids(real[], int), index_ids(real[], int);
