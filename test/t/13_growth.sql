-- 13: the tree grows with its table. An index created on an empty table, or
-- built on a tenth of its rows, splits its leaves as rows arrive: it ends with
-- about as many leaves as a fresh build, every row is found at full probes,
-- recall at the defaults is that of a REINDEX, vidx_verify is happy, and the
-- chains a split replaced are freed by VACUUM. A cursor opened before the
-- splits still returns every row of its snapshot, exactly once.
\set schema vidx_t13
\ir ../pgtap_setup.sql

SELECT plan(25);

-- 40 Gaussian clusters of 64 dimensions; rows are inserted in cluster-mixed order.
SELECT setseed(0.1313);
CREATE TABLE centres WITH (autovacuum_enabled = off) AS SELECT * FROM gaussian_centres(40, 64, 2);
CREATE TABLE source WITH (autovacuum_enabled = off) AS SELECT * FROM gaussian_rows('centres', 20000, 7);
CREATE TABLE queries WITH (autovacuum_enabled = off) AS SELECT * FROM gaussian_rows('centres', 50, 11);

-- recall@10 of the table's index at the defaults, against an exact scan
CREATE FUNCTION recall10(tbl text) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE q record; a int[]; b int[]; hit int := 0;
BEGIN
  FOR q IN SELECT id, v FROM queries LOOP
    SET LOCAL enable_seqscan = on;
    SET LOCAL enable_indexscan = off;
    EXECUTE format('SELECT array_agg(id) FROM (SELECT id FROM %I ORDER BY v <-> $1 LIMIT 10) s', tbl) INTO b USING q.v;
    SET LOCAL enable_seqscan = off;
    SET LOCAL enable_indexscan = on;
    EXECUTE format('SELECT array_agg(id) FROM (SELECT id FROM %I ORDER BY v <-> $1 LIMIT 10) s', tbl) INTO a USING q.v;
    hit := hit + (SELECT count(*) FROM unnest(a) x WHERE x = ANY (b));
  END LOOP;
  RETURN hit / 500.0;
END $$;

-- rows an exhaustive scan returns (all leaves), and distinct ones, over 3 queries
CREATE FUNCTION full_scan_rows(tbl text, OUT total bigint, OUT distinct_rows bigint) LANGUAGE plpgsql AS $$
DECLARE q record; t bigint; d bigint;
BEGIN
  total := 0; distinct_rows := 0;
  SET LOCAL enable_seqscan = off;
  SET LOCAL vidx.probes = 1000000;
  FOR q IN SELECT id, v FROM queries ORDER BY id LIMIT 3 LOOP
    EXECUTE format('SELECT count(*), count(DISTINCT id) FROM (SELECT id FROM %I ORDER BY v <-> $1 LIMIT 100000) s', tbl)
      INTO t, d USING q.v;
    total := total + t;
    distinct_rows := distinct_rows + d;
  END LOOP;
END $$;

-- recall@10 of the table's index as its history left it, its pages, then the
-- same after a REINDEX of the same rows (the comparison every section makes)
CREATE FUNCTION against_reindex(tbl text, OUT grown float8, OUT rebuilt float8,
                                OUT grown_pages bigint, OUT rebuilt_pages bigint)
LANGUAGE plpgsql AS $$
BEGIN
  grown := recall10(tbl);
  grown_pages := pg_relation_size(tbl || '_v') / 8192;
  EXECUTE format('REINDEX INDEX %I', tbl || '_v');
  rebuilt := recall10(tbl);
  rebuilt_pages := pg_relation_size(tbl || '_v') / 8192;
END $$;

-- ------------------------------------------------ from an empty table
CREATE TABLE empty_built (id int PRIMARY KEY, v real[]) WITH (autovacuum_enabled = off);
CREATE INDEX empty_built_v ON empty_built USING vidx (v);
-- twenty transactions: the chains a split replaces are freed and reused by later ones
SELECT format('INSERT INTO empty_built SELECT * FROM source WHERE id > %s AND id <= %s', i, i + 1000)
  FROM generate_series(0, 19000, 1000) i \gexec
SELECT cmp_ok((vidx_stats('empty_built_v')->>'leaves')::int, '>=', 70,
              'built empty, 20,000 rows inserted: at least 70 leaves (a build makes 141)');
SELECT cmp_ok((vidx_stats('empty_built_v')->'leaf_size'->>'max')::int, '<=', 300,
              'no leaf holds more than about twice the target size');
SELECT is((vidx_stats('empty_built_v')->>'unsplittable_leaves')::int, 0,
          'no split refused (those are for copies of one vector: t/22)');
SELECT ok((s->'leaf_size'->>'p10')::int <= (s->'leaf_size'->>'p50')::int
          AND (s->'leaf_size'->>'p50')::int <= (s->'leaf_size'->>'p90')::int
          AND (s->'leaf_size'->>'p50')::int BETWEEN (s->>'target_leaf_size')::int / 2
                                                AND 2 * (s->>'target_leaf_size')::int,
          format('leaf size percentiles: %s, target %s', s->'leaf_size', s->>'target_leaf_size'))
  FROM vidx_stats('empty_built_v') s;
SELECT ok(vidx_verify('empty_built_v'), 'vidx_verify: the grown index is consistent');
SELECT is(f.*, ROW(60000::bigint, 60000::bigint), 'every row found once at full probes')
  FROM full_scan_rows('empty_built') f;
CREATE TABLE r_empty AS SELECT * FROM against_reindex('empty_built');
SELECT cmp_ok(grown, '>=', rebuilt - 0.02, format('recall@10 at the defaults: grown %s, REINDEX %s', grown, rebuilt))
  FROM r_empty;
SELECT cmp_ok(grown_pages, '<=', 2 * rebuilt_pages,
              format('freed pages are reused: grown %s pages, REINDEX %s', grown_pages, rebuilt_pages))
  FROM r_empty;

-- ------------------------------------------------ 10x growth after a build
CREATE TABLE grown10 (id int PRIMARY KEY, v real[]) WITH (autovacuum_enabled = off);
INSERT INTO grown10 SELECT * FROM source WHERE id <= 2000;
CREATE INDEX grown10_v ON grown10 USING vidx (v);
SELECT is((vidx_stats('grown10_v')->>'leaves')::int, 44, 'built on 2,000 rows: 44 leaves');
INSERT INTO grown10 SELECT * FROM source WHERE id > 2000;
SELECT cmp_ok((vidx_stats('grown10_v')->>'leaves')::int, '>=', 70, '10x growth: at least 70 leaves');
SELECT cmp_ok((vidx_stats('grown10_v')->>'splits')::int, '>', 0, 'leaves were split');
SELECT is((vidx_stats('grown10_v')->>'unsplittable_leaves')::int, 0, '10x growth: no split refused');
SELECT ok(vidx_verify('grown10_v'), 'vidx_verify after 10x growth');
SELECT is(f.*, ROW(60000::bigint, 60000::bigint), '10x growth: every row found once at full probes')
  FROM full_scan_rows('grown10') f;
SELECT cmp_ok(grown, '>=', rebuilt - 0.02, format('10x growth, recall@10: grown %s, REINDEX %s', grown, rebuilt))
  FROM against_reindex('grown10');

-- ------------------------------------------------ a cursor opened before the splits
CREATE TABLE cur (id int PRIMARY KEY, v real[]) WITH (autovacuum_enabled = off);
INSERT INTO cur SELECT * FROM source WHERE id <= 3000;
CREATE INDEX cur_v ON cur USING vidx (v);
BEGIN;
SET LOCAL enable_seqscan = off;
SET LOCAL vidx.probes = 1000000;
DECLARE c CURSOR FOR SELECT id FROM cur ORDER BY v <-> (SELECT v FROM queries WHERE id = 1);
CREATE TEMP TABLE seen (n serial, id int);
CREATE FUNCTION fetch_into_seen(k int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE r record; cr refcursor := 'c';
BEGIN
  FOR i IN 1 .. k LOOP
    FETCH cr INTO r;
    EXIT WHEN NOT FOUND;
    INSERT INTO seen (id) VALUES (r.id);
  END LOOP;
END $$;
SELECT fetch_into_seen(10);
-- in the same transaction, inserts that split leaves the cursor reads
INSERT INTO cur SELECT * FROM source WHERE id > 3000 AND id <= 12000;
SELECT fetch_into_seen(100000);
COMMIT;
SELECT cmp_ok((vidx_stats('cur_v')->>'splits')::int, '>', 0, 'the inserts split leaves under the cursor');
SELECT is((SELECT count(*) FROM seen), 3000::bigint, 'the cursor returned the 3,000 rows of its snapshot');
SELECT is((SELECT count(DISTINCT id) FROM seen), 3000::bigint, 'each exactly once');

-- ------------------------------------------------ VACUUM frees the replaced chains
SELECT txid_current() AS xid_after_splits \gset
-- (the first VACUUM may merge small leaves a lopsided split left: their chains go the second time)
VACUUM cur;
SELECT txid_current() \gset
VACUUM cur;
SELECT is((vidx_stats('cur_v')->>'replaced_awaiting_free')::int, 0, 'VACUUM freed every replaced chain');
SELECT ok(vidx_verify('cur_v'), 'vidx_verify after the chains were freed');

-- ------------------------------------------------ churn: half deleted, replaced by moved rows
CREATE TABLE churn (id int PRIMARY KEY, v real[]) WITH (autovacuum_enabled = off);
INSERT INTO churn SELECT * FROM source;
CREATE INDEX churn_v ON churn USING vidx (v);
SELECT (vidx_stats('churn_v')->>'leaves')::int AS leaves_built \gset
DELETE FROM churn WHERE id % 2 = 0;
VACUUM churn;
-- the deleted half comes back as rows of clusters moved away (every element + 4)
INSERT INTO churn SELECT id + 100000, array(SELECT x + 4 FROM unnest(v) x)::real[]
  FROM source WHERE id % 2 = 0;
VACUUM churn;
SELECT cmp_ok((vidx_stats('churn_v')->>'merges')::int, '>', 0, 'churn: VACUUM merged leaves');
SELECT cmp_ok((vidx_stats('churn_v')->>'leaves')::int, '<=', :leaves_built * 13 / 10,
              format('churn: at most 1.3x the leaves of the build (%s)', :leaves_built));
SELECT ok(vidx_verify('churn_v'), 'vidx_verify after churn');
SELECT is(f.*, ROW(60000::bigint, 60000::bigint), 'churn: every row found once at full probes')
  FROM full_scan_rows('churn') f;
SELECT cmp_ok(grown, '>=', rebuilt - 0.02, format('churn, recall@10: history %s, REINDEX %s', grown, rebuilt))
  FROM against_reindex('churn');

SELECT * FROM finish();
DROP SCHEMA vidx_t13 CASCADE;
