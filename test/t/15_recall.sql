-- 15: vidx_recall() against a hand-computed exact answer, its bad inputs and
-- permissions; the recall calibration (vidx_stats, vidx_calibrate) and
-- vidx.target_recall landing in its band on a clustered table.
\set schema vidx_t15
\ir ../pgtap_setup.sql

SELECT * FROM no_plan();

-- 40 overlapping Gaussian clusters of 12 dimensions, 10,000 rows, 50
-- held-out queries; seeded, and no autovacuum (its merges would change the tree).
SELECT setseed(0.15);
CREATE TABLE centres AS SELECT * FROM gaussian_centres(40, 12);
CREATE TABLE items WITH (autovacuum_enabled = false) AS SELECT * FROM gaussian_rows('centres', 10000, 7, 1.5);
CREATE TABLE queries AS SELECT * FROM gaussian_rows('centres', 50, 13, 1.5);
ALTER TABLE items ADD PRIMARY KEY (id);
CREATE INDEX items_v ON items USING vidx (v) WITH (lists = 100);

-- ------------------------------------------------------------ hand-computed recall
-- recall@k of the index over the held-out queries, by exact and index scans.
CREATE FUNCTION hand_recall(k int) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE q record; kth float8; hit int := 0;
BEGIN
  FOR q IN SELECT id, v FROM queries ORDER BY id LOOP
    SET LOCAL enable_seqscan = on;
    SET LOCAL enable_indexscan = off;
    SELECT max(d) INTO kth FROM (SELECT v <-> q.v AS d FROM items ORDER BY v <-> q.v LIMIT k) s;
    SET LOCAL enable_seqscan = off;
    SET LOCAL enable_indexscan = on;
    hit := hit + (SELECT count(*) FROM (SELECT v <-> q.v AS d FROM items ORDER BY v <-> q.v LIMIT k) s
                  WHERE d <= kth * (1 + 1e-5));
  END LOOP;
  RETURN hit::float8 / (k * (SELECT count(*) FROM queries));
END $$;
CREATE TABLE qarr AS SELECT array_agg(v ORDER BY id) AS a FROM queries;

SET vidx.probes = 1;
-- (in FROM: "(vidx_recall(...)).*" in the select list calls it once per column,
-- and the latencies below would come from different runs)
CREATE TABLE r1 AS SELECT hand_recall(10) AS hand, r.* FROM vidx_recall('items_v', 0, 10, (SELECT a FROM qarr)) r;
SELECT cmp_ok((SELECT hand FROM r1), '<', 0.95::float8, 'probes 1: the hand-computed recall@10 is below 1 (' || (SELECT hand FROM r1) || ')');
SELECT is((SELECT round(recall::numeric, 6) FROM r1), (SELECT round(hand::numeric, 6) FROM r1),
          'probes 1: vidx_recall(query_vectors) equals the hand-computed recall@10');
SELECT ok((SELECT recall_low <= recall AND recall <= recall_high AND recall_high - recall_low < 0.2 FROM r1),
          'its 95% interval holds it and is narrower than 0.2');
SELECT is((SELECT nqueries FROM r1), 50, 'every row of query_vectors is a query');
SELECT is((SELECT settings->>'vidx.probes' FROM r1), '1', 'the settings used are reported');
SELECT is((SELECT settings->>'queries_from' FROM r1), 'query_vectors', '... and where the queries came from');
SELECT is((SELECT (settings->>'exact_distances')::bigint FROM r1), 50 * 10000::bigint, '... and the exact cost');
SELECT ok((SELECT mean_ms > 0 AND p99_ms >= mean_ms * 0.5 AND exact_ms > 0 FROM r1), 'latencies are reported');
SET vidx.probes = 3;
SELECT is((SELECT round(recall::numeric, 6) FROM vidx_recall('items_v', 0, 5, (SELECT a FROM qarr))),
          round(hand_recall(5)::numeric, 6), 'probes 3, k 5: the same');
SET vidx.probes = 1000;
SELECT is((SELECT recall FROM vidx_recall('items_v', 0, 10, (SELECT a FROM qarr))), 1::float8,
          'every leaf probed: recall 1');

-- sampled rows as queries: seeded (the same twice), each excluded from its own answer
SELECT is((SELECT recall FROM vidx_recall('items_v', 200)), 1::float8, 'table sample, every leaf: recall 1');
SET vidx.probes = 2;
SELECT is((SELECT recall FROM vidx_recall('items_v', 200)), (SELECT recall FROM vidx_recall('items_v', 200)),
          'the table sample is seeded: the same recall twice');
SELECT is((SELECT nqueries FROM vidx_recall('items_v', 200)), 200, 'queries rows sampled');
CREATE TABLE tiny (id int, v real[]);
INSERT INTO tiny VALUES (1, '{0,0}'), (2, '{1,0}'), (3, '{5,5}'), (4, NULL);
CREATE INDEX tiny_v ON tiny USING vidx (v);
SELECT is((SELECT nqueries || ' ' || nk || ' ' || recall FROM vidx_recall('tiny_v', 100, 10)), '3 2 1',
          'a 3-row table: 3 queries (NULL vectors are not rows of the index), k = 2 (the query''s own row is excluded)');

-- bad input: a clear error, nothing changed
SELECT throws_ok($$ SELECT vidx_recall('items_v', 100, 0) $$, '22023', NULL, 'k = 0');
SELECT throws_ok($$ SELECT vidx_recall('items_v', 100, 1001) $$, '22023', NULL, 'k > 1000');
SELECT throws_ok($$ SELECT vidx_recall('items_v', 0) $$, '22023', NULL, 'queries = 0');
SELECT throws_ok($$ SELECT vidx_recall('items_v', 10001) $$, '22023', NULL, 'queries > 10000');
SELECT throws_ok($$ SELECT vidx_recall('items_v', NULL) $$, '22004', NULL, 'queries NULL');
SELECT throws_ok($$ SELECT vidx_recall('items_v', 1, 10, '{1,2,3}') $$, '22000', NULL, 'query_vectors of other dims');
SELECT throws_ok($$ SELECT vidx_recall('items_v', 1, 10, array_fill(1::real, ARRAY[2,12]) || array_fill('NaN'::real, ARRAY[1,12])) $$,
                 '22000', NULL, 'a NaN in query_vectors');
SELECT throws_ok($$ SELECT vidx_recall('items_v', 1, 10, array_fill(NULL::real, ARRAY[1,12])) $$, '22004', NULL, 'NULL elements');
SELECT throws_ok($$ SELECT vidx_recall('items_v', 1, 10, array_fill(1::real, ARRAY[1,1,12])) $$, '22000', NULL, '3-D query_vectors');
SELECT throws_ok($$ SELECT vidx_recall('items_pkey') $$, '42809', NULL, 'not a vidx index');
SELECT throws_ok($$ SELECT vidx_recall('items') $$, '42809', NULL, 'not an index');
SELECT is(vidx_recall(NULL), NULL, 'NULL index: NULL');

-- permissions and row-level security
CREATE ROLE vidx_t15_reader;
GRANT USAGE ON SCHEMA vidx_t15 TO vidx_t15_reader;
GRANT SELECT (id) ON items TO vidx_t15_reader;
SET ROLE vidx_t15_reader;
SELECT throws_ok($$ SELECT vidx_recall('items_v', 5) $$, '42501', NULL, 'no SELECT on the vector column: refused');
SELECT throws_ok($$ SELECT vidx_calibrate('items_v') $$, '42501', NULL, 'vidx_calibrate: owner only');
RESET ROLE;
GRANT SELECT (v) ON items TO vidx_t15_reader;
SET ROLE vidx_t15_reader;
SELECT lives_ok($$ SELECT vidx_recall('items_v', 5) $$, 'SELECT on the vector column: allowed');
RESET ROLE;
ALTER TABLE tiny ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON tiny TO vidx_t15_reader;
SET ROLE vidx_t15_reader;
SELECT throws_ok($$ SELECT vidx_recall('tiny_v') $$, '0A000', NULL, 'row-level security: refused, as vidx_search');
RESET ROLE;
DROP OWNED BY vidx_t15_reader;
DROP ROLE vidx_t15_reader;

-- ------------------------------------------------------------ calibration
RESET vidx.probes;
SELECT ok((vidx_stats('items_v')->'calibration'->>'queries')::int BETWEEN 48 AND 200
          AND (vidx_stats('items_v')->'calibration'->>'rows')::int = 10000
          AND (vidx_stats('items_v')->'calibration'->>'k')::int = 10,
          'the build measured the curve: 48 to 200 queries (its time budget) over the 10000 rows, k 10');
SELECT ok((SELECT bool_and(p > 0) AND min(r) >= 0 AND max(r) = 1
           FROM (SELECT jsonb_array_elements_text(vidx_stats('items_v')->'calibration'->'probes')::int AS p,
                        jsonb_array_elements_text(vidx_stats('items_v')->'calibration'->'recall')::float8 AS r) s),
          'the curve: probes > 0, recall in [0, 1], reaching 1');
SELECT ok((SELECT bool_and(r >= prev) FROM (SELECT r::float8 AS r, lag(r::float8, 1, 0::float8) OVER (ORDER BY n) AS prev
           FROM jsonb_array_elements_text(vidx_stats('items_v')->'calibration'->'recall') WITH ORDINALITY AS x(r, n)) s
          ), 'the curve never decreases');
SET vidx.target_recall = 0;
SELECT is(vidx_stats('items_v')->'calibration'->'target_probes', 'null'::jsonb, 'target_probes null while vidx.target_recall is off');
RESET vidx.target_recall;
SELECT cmp_ok(vidx_calibrate('items_v'), '>', 1, 'vidx_calibrate measures it again');
SELECT is((vidx_stats('items_v')->'calibration'->>'queries')::int, 200, '... with 200 queries (no time budget)');
CREATE TABLE before AS SELECT vidx_stats('items_v')->'calibration' AS c;
SELECT pg_sleep(0.01);
SELECT cmp_ok(vidx_calibrate('items_v'), '>', 1, 'vidx_calibrate again');
SELECT is((SELECT c->'recall' FROM before), vidx_stats('items_v')->'calibration'->'recall', '... the same curve (seeded, same tree)');
SELECT cmp_ok((vidx_stats('items_v')->'calibration'->>'measured_at')::timestamptz, '>', (SELECT (c->>'measured_at')::timestamptz FROM before), '... measured again');
SELECT cmp_ok(vidx_calibrate('items_v', 500), '>', 1, 'vidx_calibrate(index, 500)');
SELECT is((vidx_stats('items_v')->'calibration'->>'queries')::int, 500, '... measures on 500 rows');
SELECT throws_ok($$ SELECT vidx_calibrate('items_v', 9) $$, '22023', NULL, 'vidx_calibrate: queries below 10 refused');
SELECT throws_ok($$ SELECT vidx_calibrate('items_v', 2001) $$, '22023', NULL, 'vidx_calibrate: queries above 2000 refused');
SELECT is((vidx_stats('items_v')->'calibration'->>'queries')::int, 500, '... and change nothing');
SELECT throws_ok($$ SELECT vidx_calibrate('items_pkey') $$, '42809', NULL, 'vidx_calibrate: not a vidx index');
SELECT is(vidx_calibrate(NULL), NULL, 'vidx_calibrate(NULL): NULL');
SELECT cmp_ok(vidx_calibrate('items_v'), '>', 1, 'vidx_calibrate back to the default size');
SELECT is(vidx_stats('items_v')->'calibration'->'recall', (SELECT c->'recall' FROM before), '... the same curve as before');
CREATE TABLE empty (v real[]);
CREATE INDEX empty_v ON empty USING vidx (v);
SELECT is(vidx_stats('empty_v')->'calibration', 'null'::jsonb, 'an empty index has no calibration');
SELECT is(vidx_calibrate('empty_v'), 0, 'vidx_calibrate of an empty index: nothing to measure');

-- vidx.target_recall
SELECT throws_ok($$ SET vidx.target_recall = 0.3 $$, '22023', NULL, 'target_recall 0.3: refused');
SELECT throws_ok($$ SET vidx.target_recall = 1 $$, '22023', NULL, 'target_recall 1: refused');
SELECT throws_ok($$ SET vidx.target_recall = -0.5 $$, '22023', NULL, 'target_recall -0.5: refused');
CREATE TABLE bands (target float8, probes float8, recall float8, low float8, high float8);
SET vidx.target_recall = 0.9;
INSERT INTO bands SELECT 0.9, (settings->>'probes_used')::float8, recall, recall_low, recall_high FROM vidx_recall('items_v', 500);
SET vidx.target_recall = 0.95;
INSERT INTO bands SELECT 0.95, (settings->>'probes_used')::float8, recall, recall_low, recall_high FROM vidx_recall('items_v', 500);
SELECT ok(abs((vidx_stats('items_v')->'calibration'->>'target_probes')::float8 - (SELECT probes FROM bands WHERE target = 0.95)) < 0.1,
          'vidx_stats: target_probes (fractional) is what the scans used on average: '
          || (vidx_stats('items_v')->'calibration'->>'target_probes') || ' and ' || (SELECT probes FROM bands WHERE target = 0.95));
SET vidx.target_recall = 0.99;
INSERT INTO bands SELECT 0.99, (settings->>'probes_used')::float8, recall, recall_low, recall_high FROM vidx_recall('items_v', 500);
RESET vidx.target_recall;
SELECT ok((SELECT bool_and(recall >= target - 0.015 AND recall <= LEAST(target + 0.03, 1)) FROM bands),
          'target_recall 0.9, 0.95, 0.99: measured recall@10 (500 sampled rows) in [target - 0.015, target + 0.03]: '
          || (SELECT string_agg(target || ' -> ' || round(recall::numeric, 3) || ' at ' || probes || ' probes', ', ' ORDER BY target) FROM bands));
SELECT ok((SELECT bool_and(p1.probes < p2.probes) FROM bands p1 JOIN bands p2 ON p2.target > p1.target),
          'a higher target reads more leaves');
SET vidx.target_recall = 0.95;
SELECT cmp_ok((SELECT recall FROM vidx_recall('items_v', 0, 10, (SELECT a FROM qarr))), '>=', 0.93::float8,
              'target 0.95 on the held-out queries: recall@10 >= 0.93');
RESET vidx.target_recall;

SELECT * FROM finish();
DROP SCHEMA vidx_t15 CASCADE;
