-- vidx_search: many queries in one call, the same rows as ORDER BY ... LIMIT; vidx_prewarm.
SET client_min_messages = warning;
CREATE TABLE bat (id int, v real[]);
INSERT INTO bat SELECT i, ARRAY[sin(i), cos(i), sin(i * 0.37), cos(i * 0.11)]::real[]
FROM generate_series(1, 5000) i;
CREATE INDEX bat_vidx ON bat USING vidx (v) WITH (lists = 20);
CREATE TABLE bat_q (qno int, q real[]);
INSERT INTO bat_q SELECT j, ARRAY[sin(j * 7.1), cos(j * 3.3), sin(j), cos(j * 0.5)]::real[]
FROM generate_series(1, 25) j;
SET enable_seqscan = off;

-- Every query of a batch returns the rows (and distances) of its own ORDER BY ... LIMIT 10.
WITH batch AS (
  SELECT s.query, t.id, s.distance
  FROM vidx_search('bat_vidx', (SELECT array_agg(q ORDER BY qno) FROM bat_q)::real[], 10) s
  JOIN bat t ON t.ctid = s.row_tid),
single AS (
  SELECT b.qno AS query, x.id, x.d AS distance
  FROM bat_q b CROSS JOIN LATERAL (SELECT id, v <-> b.q AS d FROM bat ORDER BY v <-> b.q LIMIT 10) x)
SELECT (SELECT count(*) FROM batch) AS batch_rows,
       (SELECT count(*) FROM (SELECT * FROM batch EXCEPT SELECT * FROM single) d) AS differ;

-- A one-dimensional array is one query; rows come nearest first.
SELECT query, distance = min(distance) OVER () AS nearest_first
FROM vidx_search('bat_vidx', '{0.1,0.9,0.2,0.3}', 3) LIMIT 1;

-- Rows deleted in the caller's snapshot are not returned; the next nearest take their place.
BEGIN;
CREATE TEMP TABLE bat_gone AS SELECT row_tid FROM vidx_search('bat_vidx', '{0.1,0.9,0.2,0.3}', 5);
DELETE FROM bat WHERE ctid IN (SELECT row_tid FROM bat_gone);
SELECT count(*) AS returned, count(*) FILTER (WHERE row_tid IN (SELECT row_tid FROM bat_gone)) AS deleted_seen
FROM vidx_search('bat_vidx', '{0.1,0.9,0.2,0.3}', 5);
ROLLBACK;

-- Bad input: clear errors.
SELECT * FROM vidx_search('bat_vidx', '{1,2}', 3);
SELECT * FROM vidx_search('bat_vidx', '{{{1,2,3,4}}}', 3);
SELECT * FROM vidx_search('bat_vidx', '{{1,2,3,4},{1,NULL,3,4}}', 3);
SELECT * FROM vidx_search('bat_vidx', '{{1,2,3,4},{1,NaN,3,4}}', 3);
SELECT * FROM vidx_search('bat_vidx', '{1,2,3,4}', 0);
SELECT * FROM vidx_search('bat', '{1,2,3,4}', 3);
CREATE INDEX bat_btree ON bat (id);
SELECT * FROM vidx_search('bat_btree', '{1,2,3,4}', 3);
SELECT count(*) FROM vidx_search('bat_vidx', NULL, 3);

-- vidx_prewarm reads every index page and the whole sidecar.
SELECT index_pages = pg_relation_size('bat_vidx') / current_setting('block_size')::int AS all_pages,
       sidecar_bytes > 5000 * 4 * 4 AS sidecar_read
FROM vidx_prewarm('bat_vidx');
SELECT * FROM vidx_prewarm('bat');
SELECT * FROM vidx_prewarm('bat_btree');

-- It needs SELECT on the table, and refuses tables with row-level security.
CREATE ROLE vidx_batch_reader;
SET ROLE vidx_batch_reader;
SELECT * FROM vidx_search('bat_vidx', '{1,2,3,4}', 3);
SELECT * FROM vidx_prewarm('bat_vidx');
RESET ROLE;
GRANT SELECT (v) ON bat TO vidx_batch_reader;
SET ROLE vidx_batch_reader;
SELECT count(*) FROM vidx_search('bat_vidx', '{1,2,3,4}', 3);
RESET ROLE;
ALTER TABLE bat ENABLE ROW LEVEL SECURITY;
SET ROLE vidx_batch_reader;
SELECT * FROM vidx_search('bat_vidx', '{1,2,3,4}', 3);
RESET ROLE;
ALTER TABLE bat DISABLE ROW LEVEL SECURITY;
REVOKE ALL ON bat FROM vidx_batch_reader;
DROP ROLE vidx_batch_reader;

DROP TABLE bat, bat_q;
