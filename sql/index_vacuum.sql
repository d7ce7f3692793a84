-- Deletes, VACUUM and space reuse.
SET client_min_messages = warning;
CREATE TABLE vac (id int, v real[]) WITH (autovacuum_enabled = off);
INSERT INTO vac SELECT i, ARRAY[sin(i), cos(i), i % 7]::real[] FROM generate_series(1, 5000) i;
CREATE INDEX vac_idx ON vac USING vidx (v) WITH (lists = 20);
SELECT (s->>'postings')::int AS postings FROM vidx_stats('vac_idx') s;
SELECT pg_relation_size('vac_idx') / current_setting('block_size')::int AS pages_before \gset

-- The deleted rows' postings stay until VACUUM removes them (index scans
-- hide the rows either way: MVCC).
DELETE FROM vac WHERE id % 2 = 0;
SELECT (s->>'postings')::int AS postings_before_vacuum FROM vidx_stats('vac_idx') s;
VACUUM vac;
SELECT (s->>'postings')::int AS postings FROM vidx_stats('vac_idx') s;
SELECT vidx_verify('vac_idx');
SET enable_seqscan = off;
SET vidx.probes = 20;
SELECT count(*) AS all_rows FROM (SELECT id FROM vac ORDER BY v <-> '{0,1,3}' LIMIT 100000) s;

-- New rows reuse the freed space: the index does not grow (but for the two
-- pages that listed the 2,500 freed sidecar slots). They also reuse the heap
-- line pointers that VACUUM freed, so a posting left behind would now point
-- at a new row: a scan would return that row twice.
INSERT INTO vac SELECT i, ARRAY[sin(i), cos(i), i % 7]::real[] FROM generate_series(5001, 7000) i;
SELECT pg_relation_size('vac_idx') / current_setting('block_size')::int <= :pages_before + 2 AS no_growth;
SELECT (s->>'postings')::int AS postings FROM vidx_stats('vac_idx') s;
SELECT count(*) AS rows, count(DISTINCT id) AS distinct_rows
FROM (SELECT id FROM vac ORDER BY v <-> '{0,1,3}' LIMIT 100000) s;
SELECT vidx_verify('vac_idx');

-- Everything deleted, then refilled.
DELETE FROM vac;
VACUUM vac;
SELECT (s->>'postings')::int AS postings FROM vidx_stats('vac_idx') s;
INSERT INTO vac SELECT i, ARRAY[i, 0, 0]::real[] FROM generate_series(1, 100) i;
SELECT id FROM vac ORDER BY v <-> '{42.2,0,0}' LIMIT 3;
SELECT vidx_verify('vac_idx');
RESET enable_seqscan;
DROP TABLE vac;
