-- 16: a build that fails after the core has built its tree (a malloc'd blob
-- of about 8 MB here: 1,000 leaves x 2,000 dims) frees the blob: the backend's
-- private memory does not grow with each failed build. vidx.debug_build_error
-- raises the ERROR while the blob is copied into PostgreSQL memory. Before the
-- fix each failure kept ~8 MB for the backend's life.
\set schema vidx_t16
\ir ../pgtap_setup.sql

SELECT plan(4);

SELECT setseed(0.5);
CREATE TABLE w AS
  SELECT i AS id, ARRAY(SELECT random()::real FROM generate_series(1, 2000) WHERE i > 0) AS v
  FROM generate_series(1, 4000) i;

CREATE FUNCTION private_kb() RETURNS int LANGUAGE sql AS $$
  SELECT regexp_replace(pg_read_file('/proc/self/status'), '.*RssAnon:\s+(\d+) kB.*', '\1', 's')::int
$$;
-- Builds the index with the injected error; true if the ERROR came.
CREATE FUNCTION failed_build() RETURNS bool LANGUAGE plpgsql AS $$
BEGIN
  SET LOCAL vidx.debug_build_error = on;
  CREATE INDEX w_v ON w USING vidx (v) WITH (lists = 1000);
  RETURN false;
EXCEPTION WHEN OTHERS THEN
  RETURN SQLERRM LIKE '%error injected while copying the tree%';
END $$;

CREATE INDEX w_v ON w USING vidx (v) WITH (lists = 1000);
SELECT cmp_ok((vidx_stats('w_v')->>'tree_pages')::int, '>=', 900, 'the tree takes about 1,000 pages (8 MB)');
DROP INDEX w_v;

-- The first failure may keep allocator arenas; count from after it.
SELECT ok(failed_build(), 'a build with vidx.debug_build_error fails');
CREATE TABLE rss AS SELECT private_kb() AS before;
SELECT ok(failed_build() AND failed_build() AND failed_build(), 'three more builds fail the same way');
SELECT cmp_ok(private_kb() - (SELECT before FROM rss), '<', 4096,
              'three failed builds leave the backend''s private memory within 4 MB (a leak keeps 8 MB each)');

SELECT * FROM finish();
DROP SCHEMA vidx_t16 CASCADE;
