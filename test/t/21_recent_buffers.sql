-- 21: a scan pins a chain page in the shared buffer it found it in last
-- time (ReadRecentBuffer) when that buffer still holds it. The answers must
-- not depend on it: after the index grows past the blocks the session's
-- cached tree knew, after VACUUM rewrites chains, after a REINDEX gives the
-- index new files, and for a temporary index (local buffers, always read
-- through the buffer table), a scan over every leaf returns the exact
-- answer. The pages it reads stay counted: pg_statio_user_indexes counts
-- every chain page of a scan that re-pins them as of one that looks them up.
\set schema vidx_t21
\ir ../pgtap_setup.sql

SELECT plan(9);

SELECT setseed(0.2121);
CREATE TABLE items AS
  SELECT i AS id, array_agg((random() * 2 - 1)::real ORDER BY j) AS v
  FROM generate_series(1, 4000) i, generate_series(1, 16) j GROUP BY i;
CREATE TABLE queries AS
  SELECT q AS id, array_agg((random() * 2 - 1)::real ORDER BY j) AS v
  FROM generate_series(1, 5) q, generate_series(1, 16) j GROUP BY q;
ALTER TABLE items ADD PRIMARY KEY (id);
ANALYZE items;
CREATE INDEX items_v ON items USING vidx (v vidx_l2_ops) WITH (lists = 20);

-- Every leaf read: the index must return the exact answer.
SET vidx.probes = 100000;

SELECT is(index_mismatches('items', '<->'), 0::bigint, 'every leaf read: the exact answer');
SELECT is(index_mismatches('items', '<->'), 0::bigint, 'again, re-pinning the pages the first scans found');

-- Growth: new chain pages past the blocks the cached tree version knew.
INSERT INTO items
  SELECT 4000 + i, array_agg((random() * 2 - 1)::real ORDER BY j)
  FROM generate_series(1, 4000) i, generate_series(1, 16) j GROUP BY i;
SELECT is(index_mismatches('items', '<->'), 0::bigint, 'after the index grew: the exact answer');

DELETE FROM items WHERE id % 3 = 0;
VACUUM items;
SELECT is(index_mismatches('items', '<->'), 0::bigint, 'after DELETE and VACUUM: the exact answer');

REINDEX INDEX items_v;
SELECT is(index_mismatches('items', '<->'), 0::bigint, 'after REINDEX (new files): the exact answer');

CREATE TEMP TABLE temp_items AS SELECT * FROM items;
CREATE INDEX temp_items_v ON temp_items USING vidx (v vidx_l2_ops) WITH (lists = 20);
SELECT is(index_mismatches('temp_items', '<->'), 0::bigint, 'a temporary index: the exact answer');
SELECT is(index_mismatches('temp_items', '<->'), 0::bigint, 'a temporary index, again');

-- Index blocks a scan of every leaf counts in pg_statio_user_indexes, once
-- the session's scans re-pin most chain pages (the first scans after a tree
-- is cached also count its tree pages).
CREATE TABLE statio (run int, hits bigint);
-- The index's counts as the stats system has them now (a fresh snapshot).
CREATE FUNCTION index_hits() RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_stat_clear_snapshot();
  RETURN (SELECT idx_blks_hit + idx_blks_read FROM pg_statio_user_indexes
          WHERE indexrelid = 'items_v'::regclass);
END $$;
-- One scan of every leaf; its counts reach the stats system when the
-- statement ends (a forced flush).
CREATE FUNCTION scan_all() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_stat_force_next_flush();
  SET LOCAL enable_seqscan = off;
  PERFORM id FROM items ORDER BY v <-> (SELECT v FROM queries WHERE id = 1) LIMIT 10;
END $$;
SELECT scan_all();
INSERT INTO statio SELECT 0, index_hits();
SELECT scan_all();
INSERT INTO statio SELECT 1, index_hits();
SELECT scan_all();
INSERT INTO statio SELECT 2, index_hits();
SELECT scan_all();
INSERT INTO statio SELECT 3, index_hits();
CREATE VIEW scan_hits AS
  SELECT run, hits - lag(hits) OVER (ORDER BY run) AS counted FROM statio;

SELECT cmp_ok((SELECT counted FROM scan_hits WHERE run = 3),
              '>=', (vidx_stats('items_v') ->> 'pages')::bigint
                    - (vidx_stats('items_v') ->> 'tree_pages')::bigint - 1,
              'a scan of every leaf, its pages mostly re-pinned, counts every posting page');
SELECT is((SELECT counted FROM scan_hits WHERE run = 3), (SELECT counted FROM scan_hits WHERE run = 2),
          'two such scans count as many index blocks');

SELECT * FROM finish();
DROP SCHEMA :"schema" CASCADE;
