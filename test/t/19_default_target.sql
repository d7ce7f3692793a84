-- 19: the default is a recall target. Left alone, a scan reads the leaves the
-- index's recall curve says recall@10 0.97 needs (vidx.target_recall's
-- default), where the old fixed default (10 probes) falls short on data with
-- small overlapping leaves; a vidx.probes that was set overrides the default
-- target, a target that was set overrides vidx.probes, and RESET, SET LOCAL
-- and rollbacks bring the default back.
\set schema vidx_t19
\ir ../pgtap_setup.sql

SELECT * FROM no_plan();

-- 40 overlapping Gaussian clusters of 16 dimensions, 12,000 rows in 400
-- leaves of about 30 (small leaves: a query's neighbours spread over many),
-- 100 held-out queries; seeded, no autovacuum (its merges change the tree).
SELECT setseed(0.19);
CREATE TABLE centres AS SELECT * FROM gaussian_centres(40, 16);
CREATE TABLE items WITH (autovacuum_enabled = false) AS SELECT * FROM gaussian_rows('centres', 12000, 7, 1.5);
CREATE TABLE queries AS SELECT * FROM gaussian_rows('centres', 100, 13, 1.5);
CREATE INDEX items_v ON items USING vidx (v) WITH (lists = 400);
CREATE TABLE qarr AS SELECT array_agg(v ORDER BY id) AS a FROM queries;

-- recall@10 and the mean probes of the scans, at the current settings
CREATE FUNCTION measured(OUT recall float8, OUT probes float8, OUT target text) LANGUAGE sql AS $$
  SELECT recall, (settings->>'probes_used')::float8, settings->>'vidx.target_recall'
  FROM vidx_recall('items_v', 0, 10, (SELECT a FROM qarr)) $$;

SELECT is(current_setting('vidx.target_recall'), '0.97', 'the default target is recall@10 0.97');
SELECT isnt((SELECT vidx_stats('items_v')->'calibration'), 'null'::jsonb, 'the build measured a recall curve');
SELECT ok((SELECT (vidx_stats('items_v')->'calibration'->>'target_probes')::float8 > 10),
          'at the default target the curve asks for more than 10 probes');

CREATE TABLE defaults AS SELECT * FROM measured();
SELECT cmp_ok((SELECT recall FROM defaults), '>=', 0.95::float8,
              'defaults: recall@10 >= 0.95 (' || (SELECT round(recall::numeric, 3) FROM defaults) || ')');
SELECT ok((SELECT probes > 10 FROM defaults), 'defaults: the scans read the curve''s probes');
SELECT is((SELECT target FROM defaults), '0.97', 'vidx_recall reports the target in effect');

-- a vidx.probes that was set wins over the default target
SET vidx.probes = 10;
CREATE TABLE fixed AS SELECT * FROM measured();
SELECT is((SELECT probes FROM fixed), 10::float8, 'SET vidx.probes = 10: the scans read 10 leaves');
SELECT cmp_ok((SELECT recall FROM fixed), '<', 0.95::float8,
              '... and fall short of 0.95 on this data (' || (SELECT round(recall::numeric, 3) FROM fixed) || ')');
SELECT is((SELECT target FROM fixed), '0', '... and vidx_recall reports no target in effect');
SELECT is((SELECT vidx_stats('items_v')->'calibration'->'target_probes'), 'null'::jsonb,
          '... and vidx_stats no target probes');
SET vidx.probes = 2;
SELECT is((SELECT probes FROM measured()), 2::float8, 'SET vidx.probes = 2: 2 leaves');
RESET vidx.probes;
SELECT is((SELECT probes FROM measured()), (SELECT probes FROM defaults), 'RESET vidx.probes: the default target again');

-- SET LOCAL, and a rollback, restore the default target
BEGIN;
SET LOCAL vidx.probes = 3;
SELECT is((SELECT probes FROM measured()), 3::float8, 'SET LOCAL vidx.probes = 3: 3 leaves');
COMMIT;
SELECT is((SELECT probes FROM measured()), (SELECT probes FROM defaults), '... and the default target after the transaction');
BEGIN;
SET vidx.probes = 4;
ROLLBACK;
SELECT is((SELECT probes FROM measured()), (SELECT probes FROM defaults), 'a SET vidx.probes rolled back leaves the default target');
SET vidx.probes = DEFAULT;
SELECT is((SELECT probes FROM measured()), (SELECT probes FROM defaults), 'SET vidx.probes = DEFAULT: the default target');

-- a target that was set wins over vidx.probes; 0 turns targets off
SET vidx.probes = 2;
SET vidx.target_recall = 0.97;
SELECT is((SELECT probes FROM measured()), (SELECT probes FROM defaults), 'a target that was set wins over vidx.probes');
SET vidx.target_recall = 0;
SELECT is((SELECT probes FROM measured()), 2::float8, 'vidx.target_recall = 0: vidx.probes decides');
RESET vidx.probes;
SELECT is((SELECT probes FROM measured()), 10::float8, '... and with vidx.probes at its default, 10 leaves');
RESET vidx.target_recall;
SELECT is((SELECT probes FROM measured()), (SELECT probes FROM defaults), 'RESET both: the default target');

-- set_config counts as set
SELECT set_config('vidx.probes', '5', false) IS NOT NULL AS set_by_function \gset
SELECT is((SELECT probes FROM measured()), 5::float8, 'set_config(vidx.probes): it wins over the default target too');
RESET vidx.probes;

-- an index that grew since its curve was measured reads the same share of
-- its leaves: the curve's probes scaled by the growth (no VACUUM here;
-- vidx_stats rounds them to 2 decimals)
CREATE TABLE grow_items WITH (autovacuum_enabled = false) AS SELECT id, v FROM items WHERE id <= 3000;
CREATE INDEX grow_items_v ON grow_items USING vidx (v) WITH (lists = 100);
CREATE TABLE grow_before AS
  SELECT (vidx_stats('grow_items_v')->'calibration'->>'target_probes')::float8 AS p,
         (vidx_stats('grow_items_v')->'calibration'->>'rows')::float8 AS calib_rows;
INSERT INTO grow_items SELECT id, v FROM items WHERE id > 3000;
SELECT ok((SELECT abs((vidx_stats('grow_items_v')->'calibration'->>'target_probes')::float8
                      - least(p * 12000 / calib_rows, (vidx_stats('grow_items_v')->>'leaves')::float8)) < 0.05
           FROM grow_before),
          '4x growth: the target probes are the curve''s times the growth (' ||
          (SELECT p FROM grow_before) || ' -> ' || (vidx_stats('grow_items_v')->'calibration'->>'target_probes') || ')');
SELECT cmp_ok((SELECT recall FROM vidx_recall('grow_items_v', 0, 10, (SELECT a FROM qarr))), '>=', 0.95::float8,
              '... and the grown index still has recall@10 >= 0.95 at the defaults');

-- an index without a curve (built empty) uses vidx.probes at the default target
CREATE TABLE empty_items (id int, v real[]);
CREATE INDEX empty_items_v ON empty_items USING vidx (v);
SELECT is((SELECT vidx_stats('empty_items_v')->'calibration'), 'null'::jsonb, 'an index built empty has no curve');
INSERT INTO empty_items SELECT id, v FROM items WHERE id <= 2000;
SELECT is((SELECT (settings->>'probes_used')::float8 FROM vidx_recall('empty_items_v', 0, 10, (SELECT a FROM qarr))),
          10::float8, '... and its scans read vidx.probes leaves at the default target');

SELECT * FROM finish();
DROP SCHEMA vidx_t19 CASCADE;
