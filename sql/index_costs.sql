-- Planner costs follow vidx.probes, vidx.rerank and the table size, and a
-- selective filter on another index wins over the vidx scan.
SET client_min_messages = warning;
CREATE TABLE cst (id int, v real[]);
INSERT INTO cst SELECT i, ARRAY[sin(i), cos(i), sin(i * 0.37), cos(i * 0.11)]::real[]
FROM generate_series(1, 20000) i;
CREATE INDEX cst_vidx ON cst USING vidx (v) WITH (lists = 100);
CREATE INDEX cst_id ON cst (id);
ANALYZE cst;

CREATE FUNCTION cst_plan(q text, OUT scan text, OUT startup float8, OUT total float8) AS $$
DECLARE p json;
BEGIN
  EXECUTE 'EXPLAIN (FORMAT JSON) ' || q INTO p;
  p := p->0->'Plan';
  WHILE p->>'Node Type' IN ('Limit', 'Sort') LOOP p := p->'Plans'->0; END LOOP;
  scan := coalesce(p->>'Index Name', p->>'Node Type');
  startup := (p->>'Startup Cost')::float8;
  total := (p->>'Total Cost')::float8;
END $$ LANGUAGE plpgsql;

-- k-NN uses the index.
SELECT scan FROM cst_plan('SELECT id FROM cst ORDER BY v <-> ''{0.1,0.2,0.3,0.4}'' LIMIT 10');
-- A filter that keeps 50 rows: the B-tree and a sort are cheaper.
SELECT scan FROM cst_plan('SELECT id FROM cst WHERE id < 50 ORDER BY v <-> ''{0.1,0.2,0.3,0.4}'' LIMIT 10');
-- No ORDER BY: never a vidx index, even with sequential scans off and a
-- partial one whose predicate the query implies (which the planner considers).
CREATE INDEX cst_vidx_even ON cst USING vidx (v) WITH (lists = 10) WHERE id % 2 = 0;
SET enable_seqscan = off;
SELECT scan NOT LIKE 'cst_vidx%' AS not_vidx FROM cst_plan('SELECT id, v FROM cst WHERE id % 2 = 0');
RESET enable_seqscan;
DROP INDEX cst_vidx_even;

-- More probes and a bigger re-scoring budget cost more.
CREATE TABLE cst_costs (setting text, startup float8);
INSERT INTO cst_costs SELECT 'probes 10', startup FROM cst_plan('SELECT id FROM cst ORDER BY v <-> ''{0.1,0.2,0.3,0.4}'' LIMIT 10');
SET vidx.probes = 40;
INSERT INTO cst_costs SELECT 'probes 40', startup FROM cst_plan('SELECT id FROM cst ORDER BY v <-> ''{0.1,0.2,0.3,0.4}'' LIMIT 10');
RESET vidx.probes;
SET vidx.rerank = 5000;
INSERT INTO cst_costs SELECT 'rerank 5000', startup FROM cst_plan('SELECT id FROM cst ORDER BY v <-> ''{0.1,0.2,0.3,0.4}'' LIMIT 10');
RESET vidx.rerank;
SELECT (SELECT startup FROM cst_costs WHERE setting = 'probes 40') > (SELECT startup FROM cst_costs WHERE setting = 'probes 10') AS probes_cost_more,
       (SELECT startup FROM cst_costs WHERE setting = 'rerank 5000') > (SELECT startup FROM cst_costs WHERE setting = 'probes 10') AS rerank_costs_more;

-- A bigger table costs more at the same settings.
INSERT INTO cst SELECT i, ARRAY[sin(i), cos(i), sin(i * 0.37), cos(i * 0.11)]::real[]
FROM generate_series(20001, 80000) i;
REINDEX INDEX cst_vidx;
ANALYZE cst;
SELECT startup > (SELECT startup FROM cst_costs WHERE setting = 'probes 10') AS bigger_costs_more
FROM cst_plan('SELECT id FROM cst ORDER BY v <-> ''{0.1,0.2,0.3,0.4}'' LIMIT 10');

DROP TABLE cst, cst_costs;
DROP FUNCTION cst_plan;
