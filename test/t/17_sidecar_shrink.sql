-- 17: the sidecar shrinking between the moment a backend reads its size and
-- the moment it reads its header (a race with a truncation) costs speed, not
-- the backend: the header is read with pread, which comes back short, so the
-- scan uses the table, returns the exact rows and says so in a WARNING. Had
-- the header been read from a mapping of the size read first, the backend
-- would die of SIGBUS. vidx.debug_sidecar_shrink truncates the file exactly
-- there.
\set schema vidx_t17
\ir ../pgtap_setup.sql

SELECT plan(5);

CREATE TABLE items (id int PRIMARY KEY, v real[]);
INSERT INTO items
  SELECT i, array_agg(sin(i * 0.53 + j * 0.7)::real ORDER BY j)
  FROM generate_series(1, 2000) i, generate_series(1, 32) j GROUP BY i;
CREATE INDEX items_vidx ON items USING vidx (v) WITH (lists = 10);
CREATE TABLE expected AS
  SELECT array_agg(id ORDER BY d, id) AS ids FROM (
    SELECT id, v <-> (SELECT v FROM items WHERE id = 11) AS d FROM items ORDER BY 2, 1 LIMIT 20) s;
SELECT pg_backend_pid() AS pid_before \gset
-- The file's path without vidx_stats, which would map the sidecar first.
SELECT current_setting('data_directory') || '/vidx/' ||
       CASE WHEN c.reltablespace = 0 THEN d.dattablespace ELSE c.reltablespace END
       || '_' || d.oid || '_' || pg_relation_filenode(c.oid) || '.vsc' AS path
FROM pg_class c, pg_database d
WHERE c.oid = 'items_vidx'::regclass AND d.datname = current_database() \gset

-- The first scan of this session maps the sidecar: the file is cut to 0 bytes
-- after its size was read.
SET vidx.debug_sidecar_shrink = on;
SET enable_seqscan = off;
SET vidx.probes = 10;
SET client_min_messages = warning;
CREATE TEMP TABLE got AS
  SELECT array_agg(id) AS ids FROM (
    SELECT id FROM items ORDER BY v <-> (SELECT v FROM items WHERE id = 11) LIMIT 20) s;
RESET vidx.debug_sidecar_shrink;
SELECT is((SELECT (pg_stat_file(:'path')).size), 0::bigint, 'the sidecar was cut to 0 bytes during the mapping');
SELECT is(pg_backend_pid(), :pid_before, 'the same backend still serves this session');
SELECT is((SELECT ids FROM got), (SELECT ids FROM expected), 'the scan returned the exact 20 rows from the table');
SELECT is(vidx_stats('items_vidx')->'sidecar'->>'state', 'the sidecar file is truncated', 'vidx_stats says the sidecar is truncated');
REINDEX INDEX items_vidx;
SELECT is(vidx_stats('items_vidx')->'sidecar'->>'state', 'ok', 'REINDEX makes a new sidecar');

SELECT * FROM finish();
DROP SCHEMA vidx_t17 CASCADE;
