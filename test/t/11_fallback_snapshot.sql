-- 11: when the sidecar cannot vouch for a row, the scan reads its vector from
-- the table with the scan's own snapshot. A deleted row whose TOASTed vector
-- VACUUM of the TOAST table has already removed (the row itself and its index
-- entry are still there until the table is vacuumed) is simply not seen; read
-- with a snapshot that sees every version, it made the query fail with
-- "missing chunk number 0 for toast value".
\set schema vidx_t11
\ir ../pgtap_setup.sql
SET client_min_messages = error;

SELECT plan(5);

-- 60 rows of 784 dimensions stored out of line, uncompressed.
CREATE TABLE items (id int PRIMARY KEY, v real[])
  WITH (autovacuum_enabled = off, toast.autovacuum_enabled = off);
ALTER TABLE items ALTER COLUMN v SET STORAGE EXTERNAL;
INSERT INTO items
  SELECT i, array_agg(sin(i * 0.731 + j * 1.913)::real ORDER BY j)
  FROM generate_series(1, 60) i, generate_series(1, 784) j GROUP BY i;
CREATE INDEX items_vidx ON items USING vidx (v) WITH (lists = 4);

-- Without its sidecar, every re-scored row is read from the table.
SELECT current_setting('data_directory') || '/' || (vidx_stats('items_vidx')->'sidecar'->>'file') AS path \gset
SELECT format('COPY (SELECT 1) TO PROGRAM %L', 'rm -f ' || :'path') \gexec

-- Delete half the rows; VACUUM only the TOAST table, which removes their vectors.
DELETE FROM items WHERE id % 2 = 0;
SELECT format('VACUUM %s', reltoastrelid::regclass) FROM pg_class WHERE oid = 'items'::regclass \gexec
SELECT is((SELECT count(*) FROM items), 30::bigint, 'half the rows are deleted');
SELECT ok((SELECT pg_relation_size(reltoastrelid) > 0 FROM pg_class WHERE oid = 'items'::regclass),
          'the TOAST table still holds the live vectors');

SET enable_seqscan = off;
SET vidx.probes = 1000;
SELECT lives_ok($$ SELECT id FROM items ORDER BY v <-> (SELECT v FROM items WHERE id = 1) LIMIT 60 $$,
                'a query over deleted rows whose vectors are gone does not fail');
SELECT is((SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY v <-> (SELECT v FROM items WHERE id = 1) LIMIT 60) s),
          (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY (v <-> (SELECT v FROM items WHERE id = 1)) + 0, id LIMIT 60) s),
          'it returns the live rows of an exact search, in order');
SELECT is((SELECT count(*) FROM (SELECT id FROM items ORDER BY v <-> (SELECT v FROM items WHERE id = 1)) s),
          30::bigint, 'every live row, and only those');

SELECT * FROM finish();
DROP SCHEMA vidx_t11 CASCADE;
